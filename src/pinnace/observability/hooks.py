"""The listener interface the transports report finished requests to (metrics, access log)."""

from __future__ import annotations

from typing import Any, Protocol


class RequestListener(Protocol):
    """Told once per finished request. ``route`` is a template, never the raw path.

    Transports call it from the task that served the request, after the response was sent:
    the server's listener reads what the data plane measured from that task's
    :data:`pinnace.core.stats.CURRENT_RECORD`. ``status`` is the HTTP status for REST and the
    gRPC status code number (``grpc.StatusCode.X.value[0]``, 0 = OK) for gRPC; ``model`` and
    ``version`` are as the client sent them (the listener decides what may become a label).
    """

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
