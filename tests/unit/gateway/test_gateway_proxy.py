"""The gateway in-process against fake upstreams: forwarding, retries, deadlines, discovery."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.gateway.fakes import FakeUpstream, serving

BODY = b'{"inputs": []}'


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def _config(routes: str, upstreams: str = "[{A}]", pool_extra: str = "") -> str:
    return f"""
pools:
  p:
    upstreams: {upstreams}
    health_check: {{interval_s: 0.2, timeout_s: 0.5}}
    discovery: {{interval_s: 0.2}}
{pool_extra}
routes:
{routes}
access_log: false
"""


def test_forwards_headers_ids_and_binary_bodies_untouched(tmp_path: Path) -> None:
    up = FakeUpstream("a")

    async def go() -> None:
        config = _config("  - {name: r, models: [m], pool: p}")
        async with serving(config, tmp_path, up) as (url, _), httpx.AsyncClient(base_url=url) as c:
            trace = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
            r = await c.post("/v2/models/m/infer", content=BODY,
                             headers={"traceparent": trace, "x-request-id": "abc",
                                      "authorization": "Bearer secret", "x-custom": "yes"})
            assert r.status_code == 200
            assert r.headers["x-request-id"] == "abc"
            seen = up.requests[-1]["headers"]
            assert seen["traceparent"] == trace
            assert seen["x-request-id"] == "abc"
            assert seen["x-custom"] == "yes"
            assert "authorization" not in seen  # the gateway's credentials stop here

            r = await c.post("/v2/models/m/infer", content=BODY)
            generated = r.headers["x-request-id"]
            assert len(generated) >= 16
            assert up.requests[-1]["headers"]["x-request-id"] == generated

            # The binary extension: header length and raw bytes pass both ways unchanged.
            raw = b'{"inputs":[]}' + bytes(range(256))
            r = await c.post("/v2/models/m/infer", content=raw,
                             headers={"inference-header-content-length": "13",
                                      "content-type": "application/octet-stream"})
            assert r.content == raw
            assert r.headers["inference-header-content-length"] == "13"
            assert up.requests[-1]["body"] == raw

            # HEAD goes upstream as GET; the answer comes back without a body.
            r = await c.head("/v2/models/m")
            assert (r.status_code, r.content) == (404, b"")

            # Keep-alive: many requests, few upstream connections.
            for _ in range(20):
                await c.post("/v2/models/m/infer", content=BODY)
            assert len(up.clients) <= 2

    run(go())


def test_idempotent_routes_retry_elsewhere_and_others_pass_errors_through(
    tmp_path: Path,
) -> None:
    bad, good = FakeUpstream("bad", status=503), FakeUpstream("good")

    async def go() -> None:
        config = _config(
            "  - {name: safe, models: [m], pool: p, idempotent: true,"
            " retry: {attempts: 3, backoff_base_s: 0}}\n"
            "  - {name: unsafe, models: [n], pool: p}",
            upstreams="[{A}, {B}]",
            pool_extra="    outlier: {enabled: false}",  # keep "bad" in play for this test
        )
        bad.ready_models.add("n")
        good.ready_models.add("n")
        async with serving(config, tmp_path, bad, good) as (url, app), \
                httpx.AsyncClient(base_url=url) as c:
            for _ in range(10):
                r = await c.post("/v2/models/m/infer", content=BODY)
                assert r.status_code == 200
                assert r.json()["upstream"] == "good"
            unsafe = {(await c.post("/v2/models/n/infer", content=BODY)).status_code
                      for _ in range(30)}
            assert unsafe == {200, 503}  # the 503 of "bad" is the caller's answer
            text = (await c.get("/metrics")).text
            assert 'pinnace_gateway_retries_total{reason="503",route="safe"}' in text
            assert app.state.routes["unsafe"].name == "unsafe"

    run(go())


class _EarlyTimersLoop(asyncio.SelectorEventLoop):
    """Timers fire 5 ms before their time, as uvloop's (a millisecond clock cached per loop
    turn) can by up to 1 ms: a deadline must not be judged by reading the clock afterwards."""

    def call_at(self, when: float, callback: Any, *args: Any,
                context: Any = None) -> asyncio.TimerHandle:
        return super().call_at(when - 0.005, callback, *args, context=context)


@pytest.mark.parametrize("early_timers", [False, True], ids=["exact-timers", "early-timers"])
def test_deadline_gives_504_and_static_fallback_when_asked(
    tmp_path: Path, early_timers: bool
) -> None:
    slow = FakeUpstream("slow", models=("m", "n"), delay=1.0)

    async def go() -> None:
        config = _config(
            "  - {name: plain, models: [m], pool: p, deadline_s: 0.2}\n"
            "  - name: degrade\n    models: [n]\n    pool: p\n    deadline_s: 0.2\n"
            "    fallback: {response: {status: 200, body: {outputs: []}}}"
        )
        async with serving(config, tmp_path, slow) as (url, _), \
                httpx.AsyncClient(base_url=url) as c:
            r = await c.post("/v2/models/m/infer", content=BODY)
            assert r.status_code == 504
            assert "deadline" in r.json()["error"]
            r = await c.post("/v2/models/n/infer", content=BODY)
            assert r.status_code == 200
            assert r.headers["pinnace-degraded"] == "static"

    with asyncio.Runner(loop_factory=_EarlyTimersLoop if early_timers else None) as runner:
        runner.run(go())


@pytest.mark.parametrize("early_timers", [False, True], ids=["exact-timers", "early-timers"])
def test_a_backoff_that_reaches_the_deadline_ends_in_504_not_one_more_try(
    tmp_path: Path, early_timers: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = FakeUpstream("failing", status=503)
    monkeypatch.setattr("pinnace.gateway.proxy.backoff", lambda *_: 1.0)  # past the deadline

    async def go() -> None:
        config = _config(
            "  - {name: r, models: [m], pool: p, idempotent: true, deadline_s: 0.2,"
            " retry: {attempts: 5}}",
            pool_extra="    outlier: {enabled: false}",
        )
        async with serving(config, tmp_path, failing) as (url, _), \
                httpx.AsyncClient(base_url=url) as c:
            r = await c.post("/v2/models/m/infer", content=BODY)
            assert r.status_code == 504
            assert "deadline" in r.json()["error"]
            assert len(failing.requests) == 1

    with asyncio.Runner(loop_factory=_EarlyTimersLoop if early_timers else None) as runner:
        runner.run(go())


def test_model_aware_routing_and_dns_discovery(tmp_path: Path) -> None:
    a, b = FakeUpstream("a", models=("m",)), FakeUpstream("b", models=("n",))

    async def go() -> None:
        # b is found through DNS ("localhost" resolves to 127.0.0.1 with b's port).
        pool_extra = f"    dns: {{name: localhost, port: {b.port}, interval_s: 0.5}}"
        config = _config("  - {name: all, models: ['*'], pool: p}", pool_extra=pool_extra)
        async with serving(config, tmp_path, a, b) as (url, app), \
                httpx.AsyncClient(base_url=url) as c:
            assert set(app.state.pools["p"].members) == {a.address, b.address}
            for _ in range(10):
                assert (await c.post("/v2/models/m/infer", content=BODY)).json()["upstream"] == "a"
                assert (await c.post("/v2/models/n/infer", content=BODY)).json()["upstream"] == "b"
            # A model moves: discovery notices, routing follows.
            a.ready_models.discard("m")
            b.ready_models.add("m")
            for _ in range(100):
                await asyncio.sleep(0.05)
                if (await c.post("/v2/models/m/infer", content=BODY)).json()["upstream"] == "b":
                    break
            got = {(await c.post("/v2/models/m/infer", content=BODY)).json()["upstream"]
                   for _ in range(10)}
            assert got == {"b"}

    run(go())
