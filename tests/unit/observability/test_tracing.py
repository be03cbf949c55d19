"""Tracing through the real REST app and batcher, seen with OpenTelemetry's in-memory exporter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pinnace.observability.setup import build_observability
from pinnace.observability.tracing import Tracing, make_exporter
from pinnace.settings import ServerSettings
from tests.unit.observability.conftest import in_process, iris_body

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def traceparent(trace_id: str = TRACE_ID, parent_id: str = PARENT_ID) -> str:
    return f"00-{trace_id}-{parent_id}-01"


def run_traced(repo: Path, *bodies_and_headers: tuple[dict[str, object], dict[str, str]]) -> list[ReadableSpan]:
    """Send the requests concurrently through a traced in-process server; its finished spans."""
    exporter = InMemorySpanExporter()
    obs = build_observability(
        ServerSettings(repository=repo, access_log=False), span_exporter=exporter
    )

    async def main() -> None:
        async with in_process(repo, obs) as server:
            replies = await asyncio.gather(
                *(
                    server.client.post("/v2/models/iris/infer", json=body, headers=headers)
                    for body, headers in bodies_and_headers
                )
            )
            assert [r.status_code for r in replies] == [200] * len(bodies_and_headers)

    asyncio.run(main())  # in_process closes obs: the batch processor exports everything
    return list(exporter.get_finished_spans())


def attr(span: ReadableSpan, key: str) -> object:
    return (span.attributes or {})[key]


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_a_request_gets_server_queue_batch_and_inference_spans_under_its_traceparent(
    iris_repo: Path,
) -> None:
    spans = run_traced(iris_repo, (iris_body(), {"traceparent": traceparent()}))

    (server,) = named(spans, "POST /v2/models/{model}/infer")
    assert server.kind is SpanKind.SERVER
    assert server.context.trace_id == int(TRACE_ID, 16)  # the caller's trace is continued
    assert server.parent is not None and server.parent.span_id == int(PARENT_ID, 16)
    assert attr(server, "http.route") == "/v2/models/{model}/infer"
    assert attr(server, "http.response.status_code") == 200

    (queue,) = named(spans, "pinnace.queue_wait")
    assert queue.parent is not None and queue.parent.span_id == server.context.span_id
    (batch,) = named(spans, "pinnace.batch")
    assert batch.context.trace_id == server.context.trace_id
    assert [link.context.span_id for link in batch.links] == [server.context.span_id]
    assert attr(batch, "pinnace.batch.rows") == 1
    (inference,) = named(spans, "pinnace.inference")
    assert inference.parent is not None and inference.parent.span_id == batch.context.span_id
    assert attr(inference, "pinnace.model") == "iris"
    assert batch.start_time is not None and inference.start_time is not None
    assert batch.end_time is not None and inference.end_time is not None
    assert batch.start_time <= inference.start_time <= inference.end_time <= batch.end_time


def test_one_batch_span_links_every_request_it_served(iris_repo: Path) -> None:
    # A batch closes when full: 4 rows with a long queue delay makes exactly one batch of 4.
    manifest = iris_repo / "iris" / "model.yaml"
    doc = yaml.safe_load(manifest.read_text())
    doc["batching"] = {"max_batch_size": 4, "max_queue_delay_us": 5_000_000}
    manifest.write_text(yaml.safe_dump(doc))
    trace_ids = [f"{i + 1:032x}" for i in range(4)]

    spans = run_traced(iris_repo, *((iris_body(), {"traceparent": traceparent(t)}) for t in trace_ids))

    servers = named(spans, "POST /v2/models/{model}/infer")
    assert sorted(f"{s.context.trace_id:032x}" for s in servers) == trace_ids
    (batch,) = named(spans, "pinnace.batch")
    assert attr(batch, "pinnace.batch.requests") == 4
    assert sorted(link.context.span_id for link in batch.links) == sorted(
        s.context.span_id for s in servers
    )
    queues = named(spans, "pinnace.queue_wait")
    assert sorted(q.context.trace_id for q in queues) == sorted(s.context.trace_id for s in servers)


def test_requests_without_traceparent_start_their_own_trace(iris_repo: Path) -> None:
    spans = run_traced(iris_repo, (iris_body(), {}))
    (server,) = named(spans, "POST /v2/models/{model}/infer")
    assert server.parent is None
    assert named(spans, "pinnace.batch")[0].context.trace_id == server.context.trace_id


def test_inject_propagates_the_current_span_to_outgoing_headers() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(exporter)
    outgoing: dict[str, str] = {}
    with tracing.server_span("ModelInfer", {"traceparent": traceparent()}) as span:
        tracing.inject(outgoing)
    tracing.close()
    version, trace_id, parent_id, _flags = outgoing["traceparent"].split("-")
    assert (version, trace_id) == ("00", TRACE_ID)
    assert int(parent_id, 16) == span.get_span_context().span_id
    (finished,) = exporter.get_finished_spans()
    assert finished.kind is SpanKind.SERVER


def test_tracing_off_never_imports_opentelemetry(tmp_path: Path) -> None:
    code = (
        "import sys, pathlib\n"
        "import pinnace.server.app\n"
        "from pinnace.observability.setup import build_observability\n"
        "from pinnace.settings import ServerSettings\n"
        "obs = build_observability(ServerSettings(repository=pathlib.Path('.')))\n"
        "assert obs.tracing is None\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
        "obs.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=60)


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def otlp_collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    received: list[tuple[str, bytes]] = []
    handler = type("Handler", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    server.shutdown()
    server.server_close()


def test_otlp_mode_posts_spans_to_the_configured_endpoint(
    otlp_collector: tuple[str, list[tuple[str, bytes]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    url, received = otlp_collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
    tracing = Tracing(make_exporter("otlp"))
    with tracing.server_span("ModelInfer", {}):
        pass
    tracing.close()
    assert [path for path, _ in received] == ["/v1/traces"]
    assert b"ModelInfer" in received[0][1]
