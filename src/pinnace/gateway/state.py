"""The live state built from a config: pools, routes and keys, ready for the hot path.

A reload builds a new :class:`State` and swaps it in with one assignment; requests in flight
keep the state they started with. Pools are carried over by name (their upstreams, connections,
ejections and readiness survive) and apply the new policy in place; quota buckets carry over
by key name while the quota is unchanged.
"""

from __future__ import annotations

import msgspec

from pinnace.gateway.auth import KeyRing
from pinnace.gateway.config import WILDCARD, GatewayConfig, RouteConfig, parse_size
from pinnace.gateway.config import Target as TargetConfig
from pinnace.gateway.metrics import GatewayMetrics
from pinnace.gateway.resilience import RetryBudget
from pinnace.gateway.traffic import Canary, ShadowMirror, Target
from pinnace.gateway.upstream import ModelKey, Pool


class Route:
    """One configured route, resolved against the pools."""

    __slots__ = (
        "budget", "canary", "config", "deadline", "fallback_on", "fallback_static",
        "fallback_target", "idempotent", "max_body", "name", "pool", "retry", "shadow",
        "wildcard",
    )

    def __init__(
        self,
        config: RouteConfig,
        pools: dict[str, Pool],
        default_max_body: int,
        metrics: GatewayMetrics,
    ) -> None:
        self.config = config
        self.name = config.name
        self.pool = pools[config.pool]
        self.wildcard = WILDCARD in config.models
        self.deadline = config.deadline_s
        self.idempotent = config.idempotent
        self.retry = config.retry
        self.budget = RetryBudget(config.retry.budget_percent, config.retry.min_per_s)
        self.max_body = (
            parse_size(config.max_body_bytes) if config.max_body_bytes is not None
            else default_max_body
        )

        def resolve(t: TargetConfig) -> Target:
            return Target(t.model, t.version, pools[t.pool or config.pool])

        split = config.split
        self.canary = (
            Canary([(resolve(t), t.weight) for t in split.targets], split.sticky)
            if split is not None else None
        )
        sh = config.shadow
        self.shadow = (
            ShadowMirror(
                config.name, resolve(sh.target), sh.percent, sh.max_in_flight, sh.timeout_s,
                sh.rtol, sh.atol, metrics,
            )
            if sh is not None else None
        )
        fb = config.fallback
        self.fallback_on: frozenset[str] = frozenset(fb.when) if fb is not None else frozenset()
        self.fallback_target: Target | None = None
        self.fallback_static: tuple[int, bytes] | None = None
        if fb is not None and fb.model is not None:
            self.fallback_target = resolve(
                TargetConfig(model=fb.model, version=fb.version, pool=fb.pool)
            )
        elif fb is not None and fb.response is not None:
            self.fallback_static = (fb.response.status, msgspec.json.encode(fb.response.body))

    def watched(self) -> dict[Pool, set[ModelKey]]:
        """The (pool, model key) pairs this route needs readiness for."""
        out: dict[Pool, set[ModelKey]] = {}
        for m in self.config.models:
            if m != WILDCARD:
                out.setdefault(self.pool, set()).add((m, None))
        targets = list(self.canary.targets) if self.canary is not None else []
        if self.shadow is not None:
            targets.append(self.shadow.target)
        if self.fallback_target is not None:
            targets.append(self.fallback_target)
        for t in targets:
            out.setdefault(t.pool, set()).add(t.key)
        return out


class State:
    """Everything a request needs, from one config."""

    def __init__(
        self,
        config: GatewayConfig,
        metrics: GatewayMetrics,
        previous: State | None = None,
    ) -> None:
        self.config = config
        old_pools = previous.pools if previous is not None else {}
        self.pools: dict[str, Pool] = {}
        for name, pc in config.pools.items():
            pool = old_pools.get(name)
            if pool is None:
                pool = Pool(name, pc, metrics)
            elif pool.config != pc:
                pool.apply(pc)
            self.pools[name] = pool
        max_body = parse_size(config.limits.max_body_bytes)
        self.routes: dict[str, Route] = {}
        self.by_model: dict[str, Route] = {}
        self.wildcard: Route | None = None
        for rc in config.routes:
            route = Route(rc, self.pools, max_body, metrics)
            self.routes[route.name] = route
            for m in rc.models:
                if m == WILDCARD:
                    self.wildcard = route
                else:
                    self.by_model[m] = route
        self.default = self.wildcard or self.routes[config.routes[0].name]
        """The route for requests that name no model (``GET /v2``)."""
        for pool in self.pools.values():
            pool.watched.clear()
        for route in self.routes.values():
            for pool, keys in route.watched().items():
                pool.watched.update(keys)
        for pool in self.pools.values():
            pool.changed()
        self.keys: KeyRing = KeyRing(config, previous.keys if previous is not None else None)
        self.max_body = max_body

    def route_for(self, model: str) -> Route | None:
        return self.by_model.get(model, self.wildcard)

    def retired_pools(self, previous: State) -> list[Pool]:
        return [p for name, p in previous.pools.items() if self.pools.get(name) is not p]
