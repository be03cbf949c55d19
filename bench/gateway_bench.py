"""The gateway scenario: iris direct, through ``pinnace gateway``, and through nginx, in one run.

    python bench/gateway_bench.py [--duration 10] [--rounds 3] [--connections 64]

Starts one ``pinnace serve`` (iris only), one gateway in front of it, and nginx configured as a
plain reverse proxy (keep-alive upstream, no access log) in front of the same server; then runs
wrk against each in turn, round after round (interleaved, so that drift hits all three alike),
at ``--connections`` and at 1 connection (the unloaded latency a proxy adds). Prints a
Markdown table and writes it with the raw figures to bench/results/. Installs nginx and wrk
from Debian packages when they are missing (as root). Sends traffic only to 127.0.0.1, and
stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
IRIS = ROOT / "examples" / "models" / "iris"
RESULTS = ROOT / "bench" / "results"
BODY = ('{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],'
        '"data":[5.1,3.5,1.4,0.2]}]}')
LUA = f"""
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root}/nginx-body;
  proxy_temp_path {root}/nginx-proxy;
  upstream pinnace {{ server 127.0.0.1:{upstream}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://pinnace;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
GATEWAY_CONF = """
pools:
  bench:
    upstreams: ["127.0.0.1:{upstream}"]
    health_check: {{interval_s: 2}}
    breaker: {{max_pending: 4096}}
routes:
  - {{name: iris, models: [iris], pool: bench, idempotent: true}}
access_log: {access_log}
reload: {{watch: false}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_tools() -> None:
    missing = [t for t in ("wrk", "nginx") if shutil.which(t) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"missing {missing}: install wrk and nginx (Debian: apt-get install wrk nginx)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=300)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk", "nginx-light"], check=True,
                   env=env, timeout=600)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.post(url, content=BODY, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} not ready after {timeout}s")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu is not None else argv


def wrk(url: str, script: Path, connections: int, duration: float,
        cpu: str | None = None) -> dict[str, float]:
    out = subprocess.run(
        pinned(cpu, ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script), url]),
        capture_output=True, text=True, check=True, timeout=duration + 30,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out)
        result[f"p{pct}_ms"] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin: by default the server gets CPU 0 to itself and the "
                        "proxy and wrk share CPU 1 (the design's one core for the server)")
    parser.add_argument("--access-log", action="store_true",
                        help="keep the gateway's JSON access log on (nginx's stays off)")
    args = parser.parse_args()
    ensure_tools()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    server_cpu, other_cpu = ("0", "1") if pin else (None, None)

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="pinnace-gw-bench-") as tmp:
        root = Path(tmp)
        shutil.copytree(IRIS, root / "models" / "iris")
        script = root / "post.lua"
        script.write_text(LUA)
        server_port, gateway_port, nginx_port = free_port(), free_port(), free_port()
        (root / "gateway.yaml").write_text(GATEWAY_CONF.format(
            upstream=server_port, access_log=str(args.access_log).lower()))
        (root / "nginx.conf").write_text(NGINX_CONF.format(
            root=root, upstream=server_port, port=nginx_port))
        log = (root / "processes.log").open("wb")
        try:
            procs.append(subprocess.Popen(pinned(server_cpu, [
                sys.executable, "-m", "pinnace", "serve", str(root / "models"),
                "--http-port", str(server_port), "--grpc-port", "0", "--management-port", "0",
                "--grpc-management-port", "0", "--log-level", "warning"]),
                stdout=log, stderr=subprocess.STDOUT))
            procs.append(subprocess.Popen(pinned(other_cpu, [
                sys.executable, "-m", "pinnace", "gateway", str(root / "gateway.yaml"),
                "--port", str(gateway_port)]), stdout=log, stderr=subprocess.STDOUT))
            procs.append(subprocess.Popen(pinned(other_cpu, [
                "nginx", "-c", str(root / "nginx.conf")]), stdout=log, stderr=subprocess.STDOUT))
            targets = {
                "direct": f"http://127.0.0.1:{server_port}/v2/models/iris/infer",
                "gateway": f"http://127.0.0.1:{gateway_port}/v2/models/iris/infer",
                "nginx": f"http://127.0.0.1:{nginx_port}/v2/models/iris/infer",
            }
            for name, proc in zip(targets, procs, strict=True):
                wait_ready(targets[name], proc)
            for url in targets.values():  # warm up connections, caches and the batcher
                wrk(url, script, args.connections, 2, other_cpu)
            runs: dict[str, list[dict[str, float]]] = {f"{n}@{c}": [] for n in targets
                                                       for c in (args.connections, 1)}
            for _ in range(args.rounds):
                for name, url in targets.items():
                    for c in (args.connections, 1):
                        runs[f"{name}@{c}"].append(
                            wrk(url, script, c, args.duration, other_cpu))
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    nginx = "nginx" in proc.args  # type: ignore[operator]
                    proc.send_signal(signal.SIGQUIT if nginx else signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()
            RESULTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / "processes.log", RESULTS / "gateway-processes.log")
    report(runs, args, pin)


def report(runs: dict[str, list[dict[str, float]]], args: argparse.Namespace, pin: bool) -> None:
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    c = args.connections
    direct, direct1 = med[f"direct@{c}"], med["direct@1"]
    lines = [
        f"iris, one row, JSON; wrk -t1 -c{c} -d{args.duration:g}s, median of {args.rounds} "
        f"interleaved rounds; {platform.node()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; gateway access log {'on' if args.access_log else 'off'}; "
        f"{'server on CPU 0, proxy and wrk on CPU 1' if pin else 'unpinned'}",
        "",
        f"| path | req/s @{c} | vs direct | p50 @{c} (ms) | p99 @{c} (ms) | p50 @1 (ms) "
        "| p50 added @1 (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("direct", "gateway", "nginx"):
        m, m1 = med[f"{name}@{c}"], med[f"{name}@1"]
        lines.append(
            f"| {name} | {m['rps']:.0f} | {m['rps'] / direct['rps']:.0%} | {m['p50_ms']:.2f} | "
            f"{m['p99_ms']:.2f} | {m1['p50_ms']:.3f} | {m1['p50_ms'] - direct1['p50_ms']:+.3f} |"
        )
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"gateway-{stamp}.md").write_text(text + "\n")
    (RESULTS / f"gateway-{stamp}.json").write_text(json.dumps(
        {"args": vars(args), "runs": runs, "median": med}, indent=2) + "\n")
    errors = sum(r["non_2xx"] for v in runs.values() for r in v)
    if errors:
        print(f"warning: {errors:.0f} non-2xx responses during the runs", file=sys.stderr)


if __name__ == "__main__":
    main()
