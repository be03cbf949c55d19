"""Per-key quotas: a token bucket for rate and a counter for concurrency.

Both answer "how long until this would succeed" so that a 429 carries an honest
``Retry-After``. State lives in the process (the gateway is one process per replica; several
replicas each enforce their share).
"""

from __future__ import annotations

import time

from pinnace.errors import RateLimitedError
from pinnace.gateway.config import Quota


class QuotaState:
    """The live state of one quota; kept across config reloads while the quota is unchanged."""

    __slots__ = ("_burst", "_stamp", "_tokens", "config", "in_flight", "max_concurrency", "rate")

    def __init__(self, config: Quota) -> None:
        self.config = config
        self.rate = config.rate_per_s
        self._burst = float(config.burst or max(1.0, config.rate_per_s or 1.0))
        self._tokens = self._burst
        self._stamp = time.monotonic()
        self.max_concurrency = config.max_concurrency
        self.in_flight = 0

    def acquire(self, who: str) -> None:
        """Take one request's worth; raises RateLimitedError with a retry_after hint."""
        if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
            raise RateLimitedError(
                f"key {who!r} has {self.in_flight} requests in flight (limit "
                f"{self.max_concurrency})",
                retry_after=1.0,
            )
        if self.rate is not None:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < 1.0:
                raise RateLimitedError(
                    f"key {who!r} is over its rate of {self.rate:g} requests/s",
                    retry_after=(1.0 - self._tokens) / self.rate,
                )
            self._tokens -= 1.0
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
