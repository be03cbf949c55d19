"""The data listener: the Open Inference Protocol v2 REST API as a raw ASGI app.

Routing is a split of the path and a match on segment count, not a framework router, because
every layer on the hot path costs throughput. Handlers decode, call the data plane, encode.
``scope["path"]`` is already percent-decoded, so ``%2e%2e`` arrives as ``..`` and is refused
by the model-name check like any other bad name.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import httptools
import msgspec

from pinnace.core.dataplane import DataPlane
from pinnace.errors import InvalidInputError, ModelNotFoundError, PinnaceError
from pinnace.observability.hooks import RequestListener
from pinnace.protocol.json_codec import decode_request, encode_response
from pinnace.server.rest.errors import retry_after_header, status_of
from pinnace.server.rest.http import (
    JSON,
    OCTETS,
    Headers,
    Scope,
    header,
    integer_header,
    respond,
    respond_error,
    respond_json,
    response_messages,
)
from pinnace.serving import ClientGone, first_message, refuse_declared, rest_of_body, whole_body

log = logging.getLogger(__name__)

MetricsHandler = Callable[[], tuple[bytes, bytes]]
"""Returns (content type, body) for ``GET /metrics``."""

HEADER_LENGTH = b"inference-header-content-length"
_ROUTE_CACHE_SIZE = 1024


class DirectTarget(NamedTuple):
    """An inference route, as the request target named it."""

    route: str
    model: str
    version: str
    path: str
    raw_path: bytes
    query_string: bytes


class RestApp:
    """ASGI app for the data listener."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        max_body_bytes: int,
        max_elements: int,
        metrics: MetricsHandler | None = None,
        listener: RequestListener | None = None,
        sagemaker: bool = False,
    ) -> None:
        self.dataplane = dataplane
        self.max_body_bytes = max_body_bytes
        self.max_elements = max_elements
        self._metrics = metrics
        self._listener = listener
        self._sagemaker = sagemaker
        # Which process answered GET /v2: tells the processes of `serve --workers N` apart.
        self._worker: Headers = [(b"pinnace-worker", str(os.getpid()).encode())]
        self._routes: dict[tuple[str, str], tuple[str, str, str, Handler]] = {}
        """Routes already worked out, by (method, path): clients repeat the same few paths."""
        self._infer_handler: Handler = self._infer
        """One bound method for every inference route, so that :meth:`direct_target` can tell
        them apart by identity."""
        self._targets: dict[bytes, DirectTarget | None] = {}
        """:meth:`direct_target`'s answers, by request target."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        route, model, version = "unknown", "", ""
        status = 500
        try:
            route, model, version, handler = self._find(scope["method"], scope["path"])
            status = await handler(scope, receive, send, model, version)
        except PinnaceError as exc:
            status = status_of(exc)
            await respond_error(send, status, exc.message, retry_after_header(exc))
        except ClientGone:
            status = 499
        except Exception:
            log.exception("unhandled error on %s", route)
            await respond_error(send, 500, "internal server error")
        self.finished(route, model, version, status, started, scope)

    def finished(
        self, route: str, model: str, version: str, status: int, started: float, scope: Scope
    ) -> None:
        """Tell the request listener (metrics, access log) how a request ended."""
        if self._listener is not None:
            self._listener.request_finished(
                "rest", route, model, version, status, time.perf_counter() - started, scope
            )

    # -- routing ----------------------------------------------------------------------------

    def direct_target(self, url: bytes) -> DirectTarget | None:
        """Where ``POST url`` goes when it is an inference request, else None.

        The listener's protocol serves these without the ASGI cycle (see
        :mod:`pinnace.server.rest.direct`); every other request, including a path that would
        be an error, goes through ASGI as before. Worked out once per request target.
        """
        try:
            return self._targets[url]
        except KeyError:
            pass
        parsed = httptools.parse_url(url)
        path = parsed.path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        target = None
        try:
            route, model, version, handler = self._find("POST", path)
        except PinnaceError:
            pass
        else:
            if handler is self._infer_handler:
                target = DirectTarget(route, model, version, path, parsed.path, parsed.query or b"")
        if len(self._targets) >= _ROUTE_CACHE_SIZE:
            self._targets.clear()
        self._targets[url] = target
        return target

    def _find(self, method: str, path: str) -> tuple[str, str, str, Handler]:
        key = (method, path)
        found = self._routes.get(key)
        if found is None:
            found = self._route(method, path)
            if len(self._routes) >= _ROUTE_CACHE_SIZE:
                self._routes.clear()  # arbitrary paths from clients never grow it unbounded
            self._routes[key] = found
        return found

    def _route(self, method: str, path: str) -> tuple[str, str, str, Handler]:
        parts = path.strip("/").split("/")
        n = len(parts)
        if parts[0] == "v2":
            if n >= 3 and parts[1] == "models":
                if n == 3 and parts[2] == "stats":
                    return _only("GET", method, "/v2/models/stats", "", "", self._all_stats)
                model = parts[2]
                if n >= 5 and parts[3] == "versions":
                    version, rest = parts[4], parts[5:]
                    if not version:  # "versions//infer": not the default version
                        raise ModelNotFoundError(f"model {model!r} has no version ''")
                    base = "/v2/models/{model}/versions/{version}"
                else:
                    version, rest = "", parts[3:]
                    base = "/v2/models/{model}"
                return self._model_route(method, base, model, version, rest)
            if n == 1:
                return _only("GET", method, "/v2", "", "", self._server_metadata)
            if n == 3 and parts[1] == "health" and parts[2] in ("live", "ready"):
                handler = self._live if parts[2] == "live" else self._ready
                return _only("GET", method, f"/v2/health/{parts[2]}", "", "", handler)
            if n >= 2 and parts[1] == "repository":
                raise ModelNotFoundError("the repository API is served on the management listener")
        elif n == 1:
            if parts[0] == "metrics" and self._metrics is not None:
                return _only("GET", method, "/metrics", "", "", self._metrics_route)
            if self._sagemaker and parts[0] == "ping":
                return _only("GET", method, "/ping", "", "", self._ready)
            if self._sagemaker and parts[0] == "invocations":
                return _only("POST", method, "/invocations", "", "", self._invocations)
        raise ModelNotFoundError(f"no route for {path[:100]!r}")

    def _model_route(
        self, method: str, base: str, model: str, version: str, rest: list[str]
    ) -> tuple[str, str, str, Handler]:
        action = rest[0] if len(rest) == 1 else ("" if not rest else None)
        if action == "infer":
            return _only("POST", method, base + "/infer", model, version, self._infer_handler)
        if action == "":
            return _only("GET", method, base, model, version, self._model_metadata)
        if action == "ready":
            return _only("GET", method, base + "/ready", model, version, self._model_ready)
        if action == "stats":
            return _only("GET", method, base + "/stats", model, version, self._model_stats)
        if action == "config":
            return _only("GET", method, base + "/config", model, version, self._model_config)
        raise ModelNotFoundError(f"no route for model action {'/'.join(rest)[:50]!r}")

    # -- handlers: each returns the status it sent ------------------------------------------

    async def _infer(self, scope: Scope, receive: Any, send: Any, model: str, version: str) -> int:
        content_length, json_length = inference_lengths(scope["headers"])
        # read_body and respond, written out: two coroutines less on every inference request
        # (about 1 µs of CPU each time, measured in-process).
        cap = self.max_body_bytes
        refuse_declared(content_length, cap)
        message = await first_message(receive)
        body = whole_body(message, cap)
        if body is None:
            body = await rest_of_body(receive, message, cap)
        request = decode_request(body, json_length, max_elements=self.max_elements)
        response = await self.dataplane.infer(model, version or None, request)
        payload, json_length = encode_response(response, request)
        if json_length is None:
            start, end = response_messages(200, payload, JSON)
        else:
            extra: Headers = [(HEADER_LENGTH, str(json_length).encode())]
            start, end = response_messages(200, payload, OCTETS, extra)
        await send(start)
        await send(end)
        return 200

    async def _invocations(self, scope: Scope, receive: Any, send: Any, _m: str, _v: str) -> int:
        target = header(scope, b"x-amzn-sagemaker-target-model")
        names = self.dataplane.repository.names()
        if target is not None:
            model = target.decode("latin-1").removesuffix(".tar.gz")
        elif len(names) == 1:
            model = names[0]
        else:
            raise InvalidInputError(
                "several models are served; name one in X-Amzn-SageMaker-Target-Model"
            )
        return await self._infer(scope, receive, send, model, "")

    async def _live(self, scope: Scope, receive: Any, send: Any, _m: str, _v: str) -> int:
        status = 200 if self.dataplane.live() else 503
        await respond(send, status, b"", JSON)
        return status

    async def _ready(self, scope: Scope, receive: Any, send: Any, _m: str, _v: str) -> int:
        status = 200 if self.dataplane.ready() else 503
        await respond(send, status, b"", JSON)
        return status

    async def _server_metadata(self, scope: Scope, receive: Any, send: Any, _m: str, _v: str) -> int:
        await respond_json(send, 200, self.dataplane.server_metadata(), self._worker)
        return 200

    async def _model_metadata(self, scope: Scope, receive: Any, send: Any, model: str, version: str) -> int:
        await respond_json(send, 200, self.dataplane.model_metadata(model, version or None))
        return 200

    async def _model_ready(self, scope: Scope, receive: Any, send: Any, model: str, version: str) -> int:
        status = 200 if self.dataplane.model_ready(model, version or None) else 503
        await respond(send, status, b"", JSON)
        return status

    async def _model_config(self, scope: Scope, receive: Any, send: Any, model: str, version: str) -> int:
        manifest = self.dataplane.repository.get(model, version or None).manifest
        await respond_json(send, 200, msgspec.to_builtins(manifest))
        return 200

    async def _model_stats(self, scope: Scope, receive: Any, send: Any, model: str, version: str) -> int:
        stats = self.dataplane.model_stats(model, version or None)
        await respond_json(send, 200, {"model_stats": stats})
        return 200

    async def _all_stats(self, scope: Scope, receive: Any, send: Any, _m: str, _v: str) -> int:
        await respond_json(send, 200, {"model_stats": self.dataplane.model_stats()})
        return 200

    async def _metrics_route(self, scope: Scope, receive: Any, send: Any, _m: str, _v: str) -> int:
        assert self._metrics is not None
        content_type, body = self._metrics()
        await respond(send, 200, body, content_type)
        return 200


Handler = Callable[[Scope, Any, Any, str, str], Awaitable[int]]


def inference_lengths(headers: Headers) -> tuple[int | None, int | None]:
    """(Content-Length, Inference-Header-Content-Length) of a request, None where absent; one
    pass over the headers for both."""
    content_length = json_length = None
    for name, value in headers:
        if name == b"content-length":
            content_length = integer_header(value, "Content-Length")
        elif name == HEADER_LENGTH:
            json_length = integer_header(value, "Inference-Header-Content-Length")
    return content_length, json_length


def _only(
    allowed: str, method: str, route: str, model: str, version: str, handler: Handler
) -> tuple[str, str, str, Handler]:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        return route, model, version, _method_not_allowed(allowed)
    return route, model, version, handler


def _method_not_allowed(allowed: str) -> Handler:
    async def handler(scope: Scope, receive: Any, send: Any, _m: str, _v: str) -> int:
        await respond_error(
            send, 405, f"method {scope['method']} not allowed; use {allowed}", [(b"allow", allowed.encode())]
        )
        return 405

    return handler
