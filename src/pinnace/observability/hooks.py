"""The listener interface the transports report finished requests to (metrics, access log)."""

from __future__ import annotations

from typing import Any, Protocol


class RequestListener(Protocol):
    """Told once per finished request. ``route`` is a template, never the raw path."""

    def request_finished(
        self,
        protocol: str,
        route: str,
        model: str,
        version: str,
        status: int,
        seconds: float,
        scope: dict[str, Any] | None,
    ) -> None: ...
