"""The gateway's policies as plain objects: budget, backoff, quotas, keys, canary, shadow
comparison, and a pool's picking, breaker and outlier ejection."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from pinnace.errors import PermissionDeniedError, RateLimitedError, UnauthenticatedError
from pinnace.gateway import upstream as upstream_module
from pinnace.gateway.auth import KeyRing, hash_key, new_key
from pinnace.gateway.client import Response
from pinnace.gateway.config import PoolConfig, Quota, parse_config
from pinnace.gateway.metrics import GatewayMetrics
from pinnace.gateway.quotas import QuotaState
from pinnace.gateway.resilience import RetryBudget, backoff
from pinnace.gateway.traffic import Canary, Target, compare
from pinnace.gateway.upstream import BreakerOpenError, NoUpstreamError, Pool


def _pool(n: int = 3, **policy: object) -> Pool:
    import msgspec

    raw = {"upstreams": [f"127.0.0.1:{9000 + i}" for i in range(n)], **policy}
    raw["upstreams"] = [{"address": a} for a in raw["upstreams"]]  # type: ignore[union-attr]
    pool = Pool("p", msgspec.convert(raw, PoolConfig), GatewayMetrics(CollectorRegistry()))
    for up in pool.members.values():
        up.healthy = True
        up.ready = frozenset({("m", None)})
        up.ready_known = None
    pool.changed()
    return pool


def test_retry_budget_allows_the_floor_plus_the_share() -> None:
    budget = RetryBudget(percent=20, min_per_s=0)
    for _ in range(100):
        budget.record_request()
    assert sum(budget.try_spend() for _ in range(50)) == 20
    floor = RetryBudget(percent=0, min_per_s=1)
    assert sum(floor.try_spend() for _ in range(50)) == 10  # 1/s over the 10 s window


def test_backoff_is_jittered_and_capped() -> None:
    delays = [backoff(n, 0.01, 0.05) for n in range(20) for _ in range(20)]
    assert all(0 <= d <= 0.05 for d in delays)
    assert len(set(delays)) > 100


def test_token_bucket_and_concurrency_quota() -> None:
    q = QuotaState(Quota(rate_per_s=2, burst=3))
    for _ in range(3):
        q.acquire("k")
        q.release()
    with pytest.raises(RateLimitedError) as info:
        q.acquire("k")
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 0.5
    c = QuotaState(Quota(max_concurrency=1))
    c.acquire("k")
    with pytest.raises(RateLimitedError):
        c.acquire("k")
    c.release()
    c.acquire("k")


def test_keys_scopes_and_models() -> None:
    key, digest = new_key()
    assert hash_key(key) == digest
    config = parse_config(f"""
pools: {{p: {{upstreams: ["127.0.0.1:1"]}}}}
routes: [{{name: r, models: ["*"], pool: p}}]
keys:
  - {{name: user, sha256: "{digest}", models: [m]}}
  - {{name: boss, sha256: "{hash_key('boss-key')}", scopes: [infer, admin]}}
""")
    ring = KeyRing(config)
    user = ring.authenticate(b"Bearer " + key.encode(), None)
    assert user.name == "user"
    user.check_model("m")
    with pytest.raises(PermissionDeniedError):
        user.check_model("other")
    with pytest.raises(PermissionDeniedError):
        user.check_admin()
    ring.authenticate(None, b"boss-key").check_admin()
    for auth, api_key in [(None, None), (b"Bearer nope", None), (b"Basic x", None)]:
        with pytest.raises(UnauthenticatedError):
            ring.authenticate(auth, api_key)


def test_canary_weights_and_stickiness() -> None:
    pool = _pool()
    a, b = Target("m", "1", pool), Target("m", "2", pool)
    canary = Canary([(a, 80), (b, 20)], sticky=None)
    counts = Counter(canary.choose(None).version for _ in range(20000))
    assert abs(counts["2"] / 20000 - 0.2) < 0.02
    sticky = Canary([(a, 50), (b, 50)], sticky="header:x-user")
    assert sticky.header == b"x-user"
    for user in (b"u1", b"u2", b"u3", b"u4"):
        assert len({sticky.choose(user).version for _ in range(20)}) == 1


def _resp(body: bytes, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
          ) -> Response:
    return Response(status, headers or [], body)


def test_shadow_comparison() -> None:
    out = b'{"model_name":"%s","outputs":[{"name":"y","datatype":"FP32","shape":[2],"data":%s}]}'
    same, diff = compare(_resp(out % (b"a", b"[1.0, 2.0]")), _resp(out % (b"b", b"[1.0, 2.0]")),
                         1e-5, 1e-6)
    assert same and diff == 0.0
    same, diff = compare(_resp(out % (b"a", b"[1.0, 2.0]")), _resp(out % (b"a", b"[1.0, 2.5]")),
                         1e-5, 1e-6)
    assert not same and diff == pytest.approx(0.5)
    assert compare(_resp(b"{}"), _resp(b"{}", status=500), 0, 0) == (False, None)
    header = b'{"outputs":[{"name":"y","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}'
    h = [(b"inference-header-content-length", str(len(header)).encode())]
    assert compare(_resp(header + b"\x00\x00\x80?", headers=h),
                   _resp(header + b"\x00\x00\x80?", headers=h), 0, 0)[0]
    assert not compare(_resp(header + b"\x00\x00\x80?", headers=h),
                       _resp(header + b"\x00\x00\x00@", headers=h), 0, 0)[0]


def test_pool_picks_least_loaded_and_respects_the_breaker() -> None:
    pool = _pool(2, breaker={"max_pending": 2})
    a, b = pool.members.values()
    a.outstanding = 1
    assert {pool.pick(("m", None)) for _ in range(20)} == {b}
    a.outstanding = b.outstanding = 2
    with pytest.raises(BreakerOpenError):
        pool.pick(("m", None))
    a.outstanding = b.outstanding = 0
    with pytest.raises(NoUpstreamError):
        pool.pick(("other", None))
    assert pool.pick(("m", None), exclude=(a,)) is b
    assert pool.pick(("m", None), exclude=(a, b)) in (a, b)


class _Clock:
    """The pool's clock, moved by the test: ejection windows are exact, whatever the host does."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_outlier_ejection_caps_and_readmission(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(upstream_module, "time", clock)
    pool = _pool(3, outlier={"consecutive_failures": 3, "base_ejection_s": 0.05})
    a, b, _ = pool.members.values()
    for _ in range(3):
        pool.record_failure(a)
    assert a.is_ejected(clock.now)
    for _ in range(3):
        pool.record_failure(b)  # 10% of 3 is 0, but one may always go: a already is
    assert not b.is_ejected(clock.now)
    clock.now += 0.04
    assert a not in {pool.pick(("m", None)) for _ in range(30)}
    clock.now += 0.02
    assert a in {pool.pick(("m", None)) for _ in range(60)}  # readmitted
    clock.now += 0.01  # less than a base period in: the multiplier has not decayed
    for _ in range(3):
        pool.record_failure(a)
    assert a.times_ejected == 2  # the second ejection lasts twice as long
    clock.now += 0.09
    assert a.is_ejected(clock.now)
    clock.now += 0.02
    assert not a.is_ejected(clock.now)
    pool.record_success(b)
    assert b.consecutive_failures == 0


def test_round_robin_and_weighted_balancers() -> None:
    rr = _pool(3, balancer="round_robin")
    picks = [rr.pick(("m", None)).address for _ in range(30)]
    assert Counter(picks) == dict.fromkeys(rr.members, 10)
    weighted = _pool(2, balancer="weighted")
    heavy, light = weighted.members.values()
    heavy.weight, light.weight = 3, 1
    counts = Counter(weighted.pick(("m", None)) for _ in range(8000))
    assert abs(counts[heavy] / 8000 - 0.75) < 0.03
