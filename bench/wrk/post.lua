-- wrk script: POST one fixed body to one URL and print a JSON summary line.
--
-- The body comes from the file named by BENCH_BODY; BENCH_CONTENT_TYPE sets Content-Type and
-- BENCH_HEADER_LENGTH, when set, sends Inference-Header-Content-Length (the V2 binary tensor
-- extension). Read once at load time, so each request costs wrk no Lua work at all.

local path = os.getenv("BENCH_BODY")
if path and path ~= "" then
  local file = assert(io.open(path, "rb"))
  wrk.body = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
  local header_length = os.getenv("BENCH_HEADER_LENGTH")
  if header_length and header_length ~= "" then
    wrk.headers["Inference-Header-Content-Length"] = header_length
  end
end

-- One JSON line on stdout, after wrk's own report; bench/run.py parses the last such line.
-- wrk counts every non-2xx/3xx answer in errors.status.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\n{"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
