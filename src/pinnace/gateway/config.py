"""The gateway's YAML configuration: schema, parsing and validation with errors that name the key.

The schema is a tree of msgspec Structs, so decoding is validation; unknown keys are refused so
that a typo never falls back to a default silently. Each policy is a small object with
defaults, in the spirit of httpx's ``Timeout``: a route or pool that says nothing gets a sane
policy, and a test can build one in a line. ``docs/gateway.md`` documents every field.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from pinnace.errors import InvalidInputError
from pinnace.manifest.loader import decode_yaml
from pinnace.manifest.schema import MODEL_NAME_RE

WILDCARD: Final = "*"
SCOPES: Final = frozenset({"infer", "admin"})
_SIZE_RE: Final = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_UNITS: Final = {
    None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30,
}
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
_ROUTE_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class GatewayConfigError(InvalidInputError):
    """The gateway configuration is wrong; the message names the file and the key."""


class _Policy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class HealthCheck(_Policy):
    """Active health checking: a GET to ``path`` on every upstream each ``interval_s``."""

    path: str = "/v2/health/ready"
    interval_s: float = 2.0
    timeout_s: float = 1.0
    unhealthy_threshold: int = 2
    """Consecutive failed checks before an upstream is marked unhealthy."""
    healthy_threshold: int = 1
    """Consecutive passed checks before an unhealthy upstream is marked healthy again."""


class OutlierDetection(_Policy):
    """Passive ejection on consecutive failures (Envoy's ``consecutive_5xx``)."""

    enabled: bool = True
    consecutive_failures: int = 5
    """Connect errors, resets, timeouts and 5xx answers in a row before an ejection."""
    base_ejection_s: float = 30.0
    """An ejection lasts this many seconds times the number of times the upstream was ejected."""
    max_ejection_percent: float = 10.0
    """At most this share of a pool is ejected at once, but always at least one upstream."""


class Breaker(_Policy):
    """Per-upstream circuit breaker on pending (in-flight) requests."""

    max_pending: int = 1024
    """An upstream at this many in-flight requests takes no more; when every candidate is full
    the request fails at once with 503 (or degrades to the route's fallback)."""


class ConnectionPolicy(_Policy):
    """Connection pooling to one upstream (HTTP/1.1 keep-alive)."""

    connect_timeout_s: float = 1.0
    idle_timeout_s: float = 4.0
    """Idle connections are closed after this; keep it below the upstream's keep-alive timeout
    (uvicorn's default is 5 s) so that the upstream never closes a connection we are reusing."""
    max_idle: int = 256
    max_response_bytes: int | str = "64MiB"


class Discovery(_Policy):
    """How the gateway learns which models (and versions) each upstream has ready."""

    model_aware: bool = True
    """Route a model only to upstreams that report it ready. Off: every healthy upstream."""
    interval_s: float = 2.0
    timeout_s: float = 1.0


class Dns(_Policy):
    """Upstreams from a DNS name, resolved every ``interval_s`` (a Kubernetes headless Service
    resolves to every ready pod's address)."""

    name: str
    port: int
    interval_s: float = 10.0
    family: Literal["ipv4", "ipv6", "any"] = "ipv4"


class Management(_Policy):
    """The upstreams' management listener (repository extension), on the same host.

    With it, discovery reads ``POST /v2/repository/index`` (one call lists every model and
    version); without it, discovery asks ``GET /v2/models/{m}/ready`` on the data listener.
    """

    port: int
    token: str = ""
    token_env: str = ""
    """Name of an environment variable holding the token, read when the config is loaded."""


class UpstreamSpec(_Policy):
    address: str
    """``host:port`` of an upstream's data (REST) listener."""
    weight: int = 1
    """Relative share under the ``weighted`` balancer."""
    management_port: int | None = None
    """This upstream's management port when it differs from the pool's ``management.port``."""


class PoolConfig(_Policy):
    upstreams: list[UpstreamSpec] = msgspec.field(default_factory=list)
    dns: Dns | None = None
    balancer: Literal["p2c", "round_robin", "weighted"] = "p2c"
    health_check: HealthCheck = msgspec.field(default_factory=HealthCheck)
    outlier: OutlierDetection = msgspec.field(default_factory=OutlierDetection)
    breaker: Breaker = msgspec.field(default_factory=Breaker)
    connection: ConnectionPolicy = msgspec.field(default_factory=ConnectionPolicy)
    discovery: Discovery = msgspec.field(default_factory=Discovery)
    management: Management | None = None


class RetryPolicy(_Policy):
    """Retries within the route's deadline.

    A try is retried when the request never reached the upstream (connect failure), or, on
    routes marked ``idempotent``, also after a reset, a timeout of the try or a status in
    ``on_status``. Backoff is exponential with full jitter; the budget caps retries at
    ``budget_percent`` of the route's requests over the last 10 s (plus ``min_per_s``).
    """

    attempts: int = 3
    """Tries in all, the first included."""
    backoff_base_s: float = 0.01
    backoff_max_s: float = 0.25
    per_try_timeout_s: float | None = None
    on_status: list[int] = msgspec.field(default_factory=lambda: [502, 503, 504])
    budget_percent: float = 20.0
    min_per_s: float = 5.0


class Target(_Policy):
    """A model (and optionally a version) on a pool; ``pool`` defaults to the route's."""

    model: str
    version: str | None = None
    pool: str | None = None
    weight: float = 1.0


class Split(_Policy):
    """Weighted canary: unversioned requests go to one of ``targets`` by weight."""

    targets: list[Target]
    sticky: str | None = None
    """``key`` (the API key's name) or ``header:NAME``: the same value always gets the same
    target. Unset: each request is drawn at random."""


class Shadow(_Policy):
    """Mirror a share of requests to a candidate; the caller only ever sees the primary."""

    target: Target
    percent: float = 100.0
    max_in_flight: int = 32
    """Mirrored requests in flight at once; beyond it a mirror is skipped (and counted)."""
    timeout_s: float = 5.0
    rtol: float = 1e-5
    atol: float = 1e-6


class StaticResponse(_Policy):
    status: int = 200
    body: Any = None
    """Sent as JSON."""


class Fallback(_Policy):
    """What to answer when the primary cannot: another (smaller) model or a fixed response."""

    model: str | None = None
    version: str | None = None
    pool: str | None = None
    response: StaticResponse | None = None
    deadline_s: float = 1.0
    """Time allowed for the fallback model, on top of the route's deadline."""
    when: list[Literal["down", "breaker", "deadline"]] = msgspec.field(
        default_factory=lambda: ["down", "breaker", "deadline"]
    )


class RouteConfig(_Policy):
    name: str
    models: list[str]
    """Model names this route serves; ``"*"`` matches any model no other route names."""
    pool: str
    deadline_s: float = 30.0
    """The whole request, retries included."""
    idempotent: bool = False
    """Inference without side effects may be retried after it was sent."""
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    split: Split | None = None
    shadow: Shadow | None = None
    fallback: Fallback | None = None
    max_body_bytes: int | str | None = None


class Quota(_Policy):
    rate_per_s: float | None = None
    """Token-bucket refill rate, requests per second."""
    burst: int | None = None
    """Bucket size; defaults to max(1, rate_per_s)."""
    max_concurrency: int | None = None


class KeyConfig(_Policy):
    name: str
    sha256: str
    """Hex sha256 of the key; the key itself is never stored. ``pinnace keygen`` prints a
    fresh key and its hash."""
    scopes: list[str] = msgspec.field(default_factory=lambda: ["infer"])
    models: list[str] = msgspec.field(default_factory=lambda: [WILDCARD])
    quota: Quota | None = None


class AuthConfig(_Policy):
    required: bool | None = None
    """Default: required when any key is configured."""
    anonymous_quota: Quota | None = None
    """Quota shared by all callers when auth is not required."""


class Limits(_Policy):
    max_body_bytes: int | str = "16MiB"


class ReloadConfig(_Policy):
    watch: bool = True
    """Poll the file and reload when it changes (SIGHUP always reloads)."""
    interval_s: float = 1.0


class GatewayConfig(_Policy):
    pools: dict[str, PoolConfig]
    routes: list[RouteConfig]
    keys: list[KeyConfig] = msgspec.field(default_factory=list)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    limits: Limits = msgspec.field(default_factory=Limits)
    access_log: bool = True
    reload: ReloadConfig = msgspec.field(default_factory=ReloadConfig)

    @property
    def auth_required(self) -> bool:
        return bool(self.keys) if self.auth.required is None else self.auth.required


def parse_size(value: int | str) -> int:
    """``1048576``, ``"1MiB"`` or ``"1MB"`` → bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"not a size: {value!r} (try 8MiB)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


def management_token(m: Management) -> str:
    if m.token_env:
        return os.environ.get(m.token_env, "")
    return m.token


def parse_config(text: str | bytes, *, source: str = "gateway.yaml") -> GatewayConfig:
    """Parse and validate config text; ``source`` names the file in error messages."""
    config = decode_yaml(
        text, GatewayConfig, source=source, error=GatewayConfigError, prepare=_expand_shorthands
    )
    _check(config, source)
    return config


def load_config(path: Path) -> GatewayConfig:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise GatewayConfigError(f"{path.name}: cannot be read ({exc.strerror})") from exc
    return parse_config(text, source=path.name)


def _expand_shorthands(raw: dict[str, Any]) -> None:
    # "127.0.0.1:8001" is the common case for an upstream; accept it beside the full mapping.
    pools = raw.get("pools")
    if isinstance(pools, dict):
        for pool in pools.values():
            ups = pool.get("upstreams") if isinstance(pool, dict) else None
            if isinstance(ups, list):
                pool["upstreams"] = [{"address": u} if isinstance(u, str) else u for u in ups]


def _check(c: GatewayConfig, source: str) -> None:  # noqa: PLR0915 - one flat list of rules
    def fail(key: str, why: str) -> None:
        raise GatewayConfigError(f"{source}: key {key!r}: {why}")

    def positive(key: str, value: float) -> None:
        if not value > 0:
            fail(key, "must be > 0")

    def size(key: str, value: int | str) -> None:
        try:
            if parse_size(value) <= 0:
                fail(key, "must be > 0")
        except ValueError as exc:
            fail(key, str(exc))

    def target(key: str, t: Target) -> None:
        if not MODEL_NAME_RE.match(t.model):
            fail(f"{key}.model", f"not a valid model name: {t.model!r}")
        if t.version is not None and not (t.version.isdigit() and int(t.version) > 0):
            fail(f"{key}.version", "versions are positive integers (as strings)")
        if t.pool is not None and t.pool not in c.pools:
            fail(f"{key}.pool", f"unknown pool {t.pool!r}")

    if not c.pools:
        fail("pools", "at least one pool is needed")
    for name, p in c.pools.items():
        k = f"pools.{name}"
        if not _ROUTE_NAME_RE.match(name):
            fail(k, "pool names are letters, digits, '_', '.', '-'")
        if not p.upstreams and p.dns is None:
            fail(k, "give upstreams, dns, or both")
        seen: set[str] = set()
        for i, u in enumerate(p.upstreams):
            try:
                split_address(u.address)
            except ValueError as exc:
                fail(f"{k}.upstreams[{i}].address", str(exc))
            if u.address in seen:
                fail(f"{k}.upstreams[{i}].address", f"duplicate {u.address!r}")
            seen.add(u.address)
            positive(f"{k}.upstreams[{i}].weight", u.weight)
        if p.dns is not None:
            positive(f"{k}.dns.interval_s", p.dns.interval_s)
            if not 0 < p.dns.port < 65536:
                fail(f"{k}.dns.port", "a TCP port, 1-65535")
        hc, od = p.health_check, p.outlier
        for fld in ("interval_s", "timeout_s"):
            positive(f"{k}.health_check.{fld}", getattr(hc, fld))
            positive(f"{k}.discovery.{fld}", getattr(p.discovery, fld))
        if not hc.path.startswith("/"):
            fail(f"{k}.health_check.path", "a path starting with '/'")
        if hc.unhealthy_threshold < 1 or hc.healthy_threshold < 1:
            fail(f"{k}.health_check", "thresholds are >= 1")
        if od.consecutive_failures < 1:
            fail(f"{k}.outlier.consecutive_failures", "must be >= 1")
        positive(f"{k}.outlier.base_ejection_s", od.base_ejection_s)
        if not 0 <= od.max_ejection_percent <= 100:
            fail(f"{k}.outlier.max_ejection_percent", "a percentage, 0-100")
        if p.breaker.max_pending < 1:
            fail(f"{k}.breaker.max_pending", "must be >= 1")
        positive(f"{k}.connection.connect_timeout_s", p.connection.connect_timeout_s)
        positive(f"{k}.connection.idle_timeout_s", p.connection.idle_timeout_s)
        size(f"{k}.connection.max_response_bytes", p.connection.max_response_bytes)
        if p.management is not None and not 0 < p.management.port < 65536:
            fail(f"{k}.management.port", "a TCP port, 1-65535")

    if not c.routes:
        fail("routes", "at least one route is needed")
    names: set[str] = set()
    models: dict[str, str] = {}
    for i, r in enumerate(c.routes):
        k = f"routes[{i}]"
        if not _ROUTE_NAME_RE.match(r.name):
            fail(f"{k}.name", "route names are letters, digits, '_', '.', '-'")
        if r.name in names:
            fail(f"{k}.name", f"duplicate route name {r.name!r}")
        names.add(r.name)
        if r.pool not in c.pools:
            fail(f"{k}.pool", f"unknown pool {r.pool!r} (pools: {', '.join(sorted(c.pools))})")
        if not r.models:
            fail(f"{k}.models", "name at least one model, or '*'")
        for m in r.models:
            if m != WILDCARD and not MODEL_NAME_RE.match(m):
                fail(f"{k}.models", f"not a valid model name: {m!r}")
            if m in models:
                fail(f"{k}.models", f"{m!r} is already routed by {models[m]!r}")
            models[m] = r.name
        positive(f"{k}.deadline_s", r.deadline_s)
        if r.max_body_bytes is not None:
            size(f"{k}.max_body_bytes", r.max_body_bytes)
        rp = r.retry
        if rp.attempts < 1:
            fail(f"{k}.retry.attempts", "must be >= 1 (1 means no retries)")
        if rp.backoff_base_s < 0 or rp.backoff_max_s < rp.backoff_base_s:
            fail(f"{k}.retry", "need 0 <= backoff_base_s <= backoff_max_s")
        if rp.per_try_timeout_s is not None:
            positive(f"{k}.retry.per_try_timeout_s", rp.per_try_timeout_s)
        if not 0 <= rp.budget_percent <= 100 or rp.min_per_s < 0:
            fail(f"{k}.retry", "budget_percent is 0-100 and min_per_s >= 0")
        if any(not 500 <= s <= 599 for s in rp.on_status):
            fail(f"{k}.retry.on_status", "only 5xx statuses are retried")
        if r.split is not None:
            if not r.split.targets:
                fail(f"{k}.split.targets", "at least one target")
            for j, t in enumerate(r.split.targets):
                target(f"{k}.split.targets[{j}]", t)
                if t.weight < 0:
                    fail(f"{k}.split.targets[{j}].weight", "must be >= 0")
            if sum(t.weight for t in r.split.targets) <= 0:
                fail(f"{k}.split.targets", "weights must not all be 0")
            st = r.split.sticky
            if st is not None and st != "key" and not (
                st.startswith("header:") and len(st) > len("header:")
            ):
                fail(f"{k}.split.sticky", "'key' or 'header:NAME'")
        if r.shadow is not None:
            target(f"{k}.shadow.target", r.shadow.target)
            if not 0 <= r.shadow.percent <= 100:
                fail(f"{k}.shadow.percent", "a percentage, 0-100")
            if r.shadow.max_in_flight < 1:
                fail(f"{k}.shadow.max_in_flight", "must be >= 1")
            positive(f"{k}.shadow.timeout_s", r.shadow.timeout_s)
        fb = r.fallback
        if fb is not None:
            if (fb.model is None) == (fb.response is None):
                fail(f"{k}.fallback", "give exactly one of model or response")
            if fb.model is not None:
                target(f"{k}.fallback", Target(model=fb.model, version=fb.version, pool=fb.pool))
            if fb.response is not None and not 100 <= fb.response.status <= 599:
                fail(f"{k}.fallback.response.status", "an HTTP status")
            positive(f"{k}.fallback.deadline_s", fb.deadline_s)

    hashes: set[str] = set()
    key_names: set[str] = set()
    for i, key in enumerate(c.keys):
        k = f"keys[{i}]"
        if not _ROUTE_NAME_RE.match(key.name):
            fail(f"{k}.name", "key names are letters, digits, '_', '.', '-'")
        if key.name in key_names:
            fail(f"{k}.name", f"duplicate key name {key.name!r}")
        key_names.add(key.name)
        if not _HEX64.match(key.sha256):
            fail(f"{k}.sha256", "64 lowercase hex digits (sha256 of the key)")
        if key.sha256 in hashes:
            fail(f"{k}.sha256", "two keys share this hash")
        hashes.add(key.sha256)
        for s in key.scopes:
            if s not in SCOPES:
                fail(f"{k}.scopes", f"unknown scope {s!r} (infer, admin)")
        for m in key.models:
            if m != WILDCARD and not MODEL_NAME_RE.match(m):
                fail(f"{k}.models", f"not a valid model name: {m!r}")
        if key.quota is not None:
            _check_quota(fail, f"{k}.quota", key.quota)
    if c.auth.anonymous_quota is not None:
        _check_quota(fail, "auth.anonymous_quota", c.auth.anonymous_quota)
    if c.auth.required and not c.keys:
        fail("auth.required", "auth is required but no keys are configured")
    size("limits.max_body_bytes", c.limits.max_body_bytes)
    positive("reload.interval_s", c.reload.interval_s)


def _check_quota(fail: Any, key: str, q: Quota) -> None:
    if q.rate_per_s is not None and not q.rate_per_s > 0:
        fail(f"{key}.rate_per_s", "must be > 0")
    if q.burst is not None and q.burst < 1:
        fail(f"{key}.burst", "must be >= 1")
    if q.max_concurrency is not None and q.max_concurrency < 1:
        fail(f"{key}.max_concurrency", "must be >= 1")
