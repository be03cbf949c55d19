"""gRPC against REST on one ``pinnace serve``: iris and MLP, 1 and 64 concurrent streams.

    .venv/bin/python bench/grpc_bench.py [--duration 5] [--rounds 3] [--models iris,mlp]
                                         [--concurrency 1,64] [--native]

Starts ``pinnace serve`` over a temporary repository (the example iris, and an MLP
256→512→512→10 built here) pinned to CPU 0 — REST and gRPC in the same process, same models,
same batcher — and drives it from CPU 1, loopback only; it stops by itself.

Clients. The default clients are asyncio loops of the same shape, so that their own cost is
alike: gRPC through ``grpc.aio`` (one channel, N concurrent calls multiplexed as HTTP/2
streams, the request serialised once, bytes in and out), REST through a raw HTTP/1.1
keep-alive client (N connections, the V2 JSON body built once). ``--native`` adds the same
scenarios driven by C load generators, ``h2load`` for gRPC (one connection, N streams) and
``wrk`` for REST (N connections), whose own cost is small enough that the server is the limit.

Scenarios: ``infer`` (one row per request) and ``floor`` (the lightest call of each transport:
the ``ServerLive`` RPC and ``GET /v2/health/live``), so that the transport's own ceiling shows.
Each scenario warms up for 1 s and counts ``duration`` seconds; REST and gRPC alternate, and
``rounds`` repetitions give the median (the machine may be shared). The server's CPU use is
shown too: near 100 % means the server, not the client, is the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
from tritonclient.grpc import service_pb2

ROOT = Path(__file__).resolve().parent.parent
WIDTH = {"iris": 4, "mlp": 256}
WARMUP_S = 1.0
SERVER_LOG = Path(tempfile.gettempdir()) / "pinnace-grpc-bench-server.log"
SERVICE = "/inference.GRPCInferenceService/"


@dataclass
class Result:
    """One run of one scenario; ``latency_us`` holds p50 and p99, or the mean (native)."""

    rps: float
    latency_us: dict[str, float]
    server_cpu: float
    errors: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    client: str  # "asyncio" or "native"
    target: str  # a model name, or "floor"
    concurrency: int
    runs: dict[str, list[Result]] = field(default_factory=lambda: {"rest": [], "grpc": []})

    def median(self, protocol: str) -> Result:
        runs = sorted(self.runs[protocol], key=lambda r: r.rps)
        return runs[len(runs) // 2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def row(model: str) -> np.ndarray:
    return np.random.default_rng(0).random((1, WIDTH[model]), dtype=np.float32)


def grpc_message(target: str) -> tuple[str, bytes]:
    """(RPC name, serialised request) for a scenario."""
    if target == "floor":
        return "ServerLive", b""
    x = row(target)
    body = service_pb2.ModelInferRequest(
        model_name=target,
        inputs=[{"name": "input", "datatype": "FP32", "shape": list(x.shape)}],
        raw_input_contents=[x.tobytes()],
    ).SerializeToString()
    return "ModelInfer", body


def rest_message(port: int, target: str) -> tuple[str, bytes]:
    """(path, JSON body or b"" for a GET) for a scenario."""
    if target == "floor":
        return "/v2/health/live", b""
    x = row(target)
    tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    return f"/v2/models/{target}/infer", json.dumps({"inputs": [tensor]}).encode()


# -- asyncio clients -------------------------------------------------------------------------

Call = Callable[[], Awaitable[None]]


def grpc_call(channel: grpc.aio.Channel, target: str) -> Call:
    rpc, body = grpc_message(target)
    # Bytes in, bytes out: the client spends nothing on protobuf per call.
    method = channel.unary_unary(SERVICE + rpc)

    async def call() -> None:
        await method(body)

    return call


class HttpConnection:
    """One HTTP/1.1 keep-alive connection that sends a fixed request and reads the answer."""

    def __init__(self, port: int, target: str) -> None:
        path, body = rest_message(port, target)
        verb = "POST" if body else "GET"
        head = f"{verb} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.request = (head + "\r\n").encode() + body
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self) -> None:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{head.split(b' ', 2)[1].decode()} {body[:200].decode(errors='replace')}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def drive(calls: list[Call], duration: float) -> tuple[int, list[float], list[str]]:
    """Each call in its own loop: warm up, then count ``duration`` seconds.

    Returns (completed, latencies, errors): a failed call is counted as an error, not timed.
    """
    latencies: list[float] = []
    errors: list[str] = []
    window = [float("inf"), float("inf")]  # [start counting, stop]

    async def worker(call: Call) -> None:
        while time.perf_counter() < window[1]:
            t0 = time.perf_counter()
            try:
                await call()
            except (OSError, RuntimeError, grpc.aio.AioRpcError, asyncio.IncompleteReadError) as exc:
                if t0 >= window[0]:
                    errors.append(str(exc)[:200])
                continue
            t1 = time.perf_counter()
            if window[0] <= t0 and t1 < window[1]:
                latencies.append(t1 - t0)

    tasks = [asyncio.create_task(worker(c)) for c in calls]
    await asyncio.sleep(WARMUP_S)
    window[0] = time.perf_counter()
    window[1] = window[0] + duration
    await asyncio.gather(*tasks)
    return len(latencies), latencies, errors


async def run_asyncio(protocol: str, target: str, concurrency: int, ports: dict[str, int], duration: float) -> Result:
    latency: dict[str, float] = {}
    if protocol == "grpc":
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
            count, latencies, errors = await drive([grpc_call(channel, target)] * concurrency, duration)
    else:
        connections = [HttpConnection(ports["http"], target) for _ in range(concurrency)]
        count, latencies, errors = await drive([c.call for c in connections], duration)
        for c in connections:
            c.close()
    ordered = sorted(latencies)
    if ordered:
        latency = {
            q: ordered[min(len(ordered) - 1, int(f * len(ordered)))] * 1e6 for q, f in (("p50", 0.5), ("p99", 0.99))
        }
    return Result(count / duration, latency, 0.0, errors)


# -- native clients (h2load, wrk) ------------------------------------------------------------


def run_native(protocol: str, target: str, concurrency: int, ports: dict[str, int], duration: float) -> Result:
    pin = ["taskset", "-c", "1"] if _can_pin() else []
    with tempfile.NamedTemporaryFile(suffix=".body") as body_file:
        if protocol == "grpc":
            rpc, body = grpc_message(target)
            # gRPC framing: uncompressed flag, 4-byte big-endian length, message.
            body_file.write(b"\0" + len(body).to_bytes(4, "big") + body)
            body_file.flush()
            args = [
                *pin, "h2load", "-t", "1", "-c", "1", "-m", str(concurrency), "-D", str(int(duration)),
                "--warm-up-time", str(int(WARMUP_S)), "-d", body_file.name,
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                f"http://127.0.0.1:{ports['grpc']}{SERVICE}{rpc}",
            ]  # fmt: skip
            out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
            rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
            mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out).group(1)  # type: ignore[union-attr]
            failed = re.search(r"(\d+) failed, (\d+) errored", out)
            bad = int(failed.group(1)) + int(failed.group(2)) if failed else 0
            return Result(rps, {"mean": _us(mean)}, 0.0, [f"{bad} failed streams"] if bad else [])
        path, body = rest_message(ports["http"], target)
        body_file.write(body)
        body_file.flush()
        env = {**os.environ, "BENCH_BODY": body_file.name if body else ""}
        url = f"http://127.0.0.1:{ports['http']}{path}"
        script = str(ROOT / "bench" / "wrk" / "post.lua")
        subprocess.run([*pin, "wrk", "-t", "1", "-c", str(concurrency), "-d", "1", "-s", script, url],
                       check=True, capture_output=True, env=env)  # fmt: skip
        args = [*pin, "wrk", "-t", "1", "-c", str(concurrency), "-d", str(int(duration)), "-s", script, url]
        out = subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout
        summary = json.loads(out.strip().splitlines()[-1])
        bad = summary["status_errors"]
        rps = (summary["requests"] - bad) / (summary["duration_us"] / 1e6)
        return Result(rps, {"mean": summary["mean_us"]}, 0.0, [f"{bad} non-2xx answers"] if bad else [])


def _us(text: str) -> float:
    """h2load's durations: ``720us``, ``29.06ms``, ``1.5s``."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1.0, "ms": 1e3, "s": 1e6}[unit]


# -- the repository ----------------------------------------------------------------------------


def build_repository(root: Path) -> Path:
    """The example iris, plus an MLP 256→512→512→10 (ReLU) built here with onnx.helper.

    The MLP is built rather than copied because the example's skl2onnx export answers
    (10·n, 1) for n rows, so batches larger than one fail; this one has the same layers.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pinnace.cli.init import with_hashes
    from pinnace.manifest import dump_manifest, parse_manifest

    repo = root / "models"
    shutil.copytree(ROOT / "examples" / "models" / "iris", repo / "iris")
    rng = np.random.default_rng(0)
    sizes = [256, 512, 512, 10]
    nodes, weights, last = [], [], "input"
    layers = list(itertools.pairwise(sizes))
    for i, (n_in, n_out) in enumerate(layers):
        scale = 1 / np.sqrt(n_in)
        weights += [
            numpy_helper.from_array((rng.standard_normal((n_in, n_out)) * scale).astype(np.float32), f"w{i}"),
            numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}"),
        ]
        hidden = i < len(layers) - 1
        out = f"h{i}" if hidden else "variable"
        nodes += [
            helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}" if hidden else out]),
        ]
        if hidden:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [out]))
        last = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 256])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 10])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (repo / "mlp" / "1").mkdir(parents=True)
    onnx.save(model, repo / "mlp" / "1" / "model.onnx")
    manifest = parse_manifest(
        "name: mlp\nruntime: onnx\n"
        "inputs: [{name: input, datatype: FP32, shape: [-1, 256]}]\n"
        "outputs: [{name: variable, datatype: FP32, shape: [-1, 10]}]\n"
        "batching: {max_batch_size: 64, max_queue_delay_us: 0}\n"
    )
    (repo / "mlp" / "model.yaml").write_text(dump_manifest(with_hashes(manifest, repo / "mlp")))
    return repo


# -- the server ------------------------------------------------------------------------------


def start_server(repo: Path, ports: dict[str, int]) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "pinnace", "serve", str(repo),
        "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
        "--management-port", "0", "--grpc-management-port", "0", "--log-level", "warning",
    ]  # fmt: skip
    if _can_pin():
        args = ["taskset", "-c", "0", *args]
    with SERVER_LOG.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited; see {SERVER_LOG}")
        try:
            if httpx.get(f"http://127.0.0.1:{ports['http']}/v2/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError("server not ready")


def _can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(scenarios: list[Scenario], rounds: int, duration: float, repo: Path) -> None:
    ports = {"http": free_port(), "grpc": free_port()}
    server = start_server(repo, ports)
    if _can_pin():
        os.sched_setaffinity(0, {1})
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    try:
        with runner:
            for round_ in range(rounds):
                for s in scenarios:
                    for protocol in ("rest", "grpc"):
                        cpu0, wall0 = cpu_seconds(server.pid), time.perf_counter()
                        if s.client == "native":
                            result = run_native(protocol, s.target, s.concurrency, ports, duration)
                        else:
                            result = runner.run(run_asyncio(protocol, s.target, s.concurrency, ports, duration))
                        result.server_cpu = (cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - wall0)
                        s.runs[protocol].append(result)
                        latency = "  ".join(f"{k} {v:,.0f} µs" for k, v in result.latency_us.items())
                        if result.errors:
                            latency += f"  ERRORS {len(result.errors)}: {result.errors[0]}"
                        print(f"round {round_ + 1} {s.client:7} {protocol:4} {s.target:5} c={s.concurrency:<3} "
                              f"{result.rps:8,.0f} req/s  {latency}  server cpu {result.server_cpu:.0%}",
                              file=sys.stderr)  # fmt: skip
    except Exception:
        print(f"failed; the server's log is {SERVER_LOG}", file=sys.stderr)
        raise
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def table(scenarios: list[Scenario]) -> str:
    lines = [
        "| client | scenario | streams | REST req/s | gRPC req/s | gRPC/REST | REST latency µs | gRPC latency µs "
        "| server CPU REST / gRPC |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in scenarios:
        rest, grpc_ = s.median("rest"), s.median("grpc")
        spread = max(_spread(s.runs["rest"]), _spread(s.runs["grpc"]))
        lines.append(
            f"| {s.client} | {s.target} | {s.concurrency} | {rest.rps:,.0f} | {grpc_.rps:,.0f} "
            f"| {grpc_.rps / rest.rps:.2f}{' ±' + format(spread, '.0%') if spread > 0.1 else ''} "
            f"| {_latency(rest)} | {_latency(grpc_)} | {rest.server_cpu:.0%} / {grpc_.server_cpu:.0%} |"
        )
    failures = [
        f"- {s.client} {protocol} {s.target} c={s.concurrency}: {len(r.errors)} errors, e.g. {r.errors[0]}"
        for s in scenarios
        for protocol, runs in s.runs.items()
        for r in runs
        if r.errors
    ]
    if failures:
        lines += ["", "Failed calls (not counted in req/s):", *failures]
    return "\n".join(lines)


def _spread(runs: list[Result]) -> float:
    rates = [r.rps for r in runs]
    return (max(rates) - min(rates)) / statistics.median(rates) if len(rates) > 1 else 0.0


def _latency(r: Result) -> str:
    if not r.latency_us:
        return "-"
    if "mean" in r.latency_us:
        return f"mean {r.latency_us['mean']:,.0f}"
    return f"{r.latency_us['p50']:,.0f} / {r.latency_us['p99']:,.0f}"


def machine() -> str:
    import onnxruntime

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    return (
        f"{cpu}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=5.0, help="counted seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions; the table shows medians")
    parser.add_argument("--models", default="iris,mlp")
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--native", action="store_true", help="also drive with h2load and wrk")
    args = parser.parse_args()
    targets = [*args.models.split(","), "floor"]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    clients = ["asyncio", "native"] if args.native else ["asyncio"]
    if args.native and not (shutil.which("h2load") and shutil.which("wrk")):
        sys.exit("--native needs h2load (apt-get install nghttp2-client) and wrk")
    scenarios = [Scenario(c, t, n) for c in clients for t in targets for n in concurrencies]
    with tempfile.TemporaryDirectory(prefix="pinnace-grpc-bench-") as tmp:
        measure(scenarios, args.rounds, args.duration, build_repository(Path(tmp)))
    print(f"\n{machine()}\n")
    print(table(scenarios))


if __name__ == "__main__":
    main()
