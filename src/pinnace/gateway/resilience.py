"""Retry budget and backoff: the parts of retrying that keep retries from becoming a storm.

The budget follows Finagle's and Envoy's idea: retries may add at most ``percent`` of the
route's request rate (plus a small floor so that a quiet route can still retry), counted over a
sliding window of one-second buckets. When an upstream dies under load, the first failures
retry; a fleet-wide outage cannot multiply the load by the number of attempts.
"""

from __future__ import annotations

import random
import time

WINDOW_S = 10


class RetryBudget:
    """Allows a retry while retries in the last WINDOW_S seconds stay under the budget."""

    __slots__ = ("_buckets", "_epoch", "_min_per_s", "_ratio")

    def __init__(self, percent: float, min_per_s: float) -> None:
        self._ratio = percent / 100.0
        self._min_per_s = min_per_s
        # [requests, retries] per second, in a ring of WINDOW_S buckets.
        self._buckets = [[0, 0] for _ in range(WINDOW_S)]
        self._epoch = 0

    def _bucket(self) -> list[int]:
        now = int(time.monotonic())
        if now != self._epoch:
            # Clear the buckets of the seconds that passed since the last call.
            for s in range(max(self._epoch + 1, now - WINDOW_S + 1), now + 1):
                self._buckets[s % WINDOW_S] = [0, 0]
            self._epoch = now
        return self._buckets[now % WINDOW_S]

    def record_request(self) -> None:
        self._bucket()[0] += 1

    def try_spend(self) -> bool:
        """True (and the retry counted) when the budget allows one more retry."""
        current = self._bucket()
        requests = sum(b[0] for b in self._buckets)
        retries = sum(b[1] for b in self._buckets)
        if retries >= self._min_per_s * WINDOW_S + self._ratio * requests:
            return False
        current[1] += 1
        return True


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter (AWS architecture blog): U(0, min(cap, base·2ⁿ))."""
    return random.random() * min(cap, base * (1 << min(attempt, 16)))
