"""The management listener: the repository extension (index, load, unload), token-guarded.

It listens on its own port, loopback by default, so that exposing the data port never exposes
model loading.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import msgspec

from pinnace.core.dataplane import DataPlane
from pinnace.errors import (
    InvalidInputError,
    ModelNotFoundError,
    PinnaceError,
    UnauthenticatedError,
)
from pinnace.server.rest.errors import retry_after_header, status_of
from pinnace.server.rest.http import Scope, header, read_body, respond, respond_error, respond_json
from pinnace.serving import ClientGone

log = logging.getLogger(__name__)

_MAX_BODY = 64 * 1024


class ManagementApp:
    """ASGI app for the management listener."""

    def __init__(self, dataplane: DataPlane, token: str) -> None:
        self.dataplane = dataplane
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await self._handle(scope, receive, send)
        except PinnaceError as exc:
            extra = retry_after_header(exc)
            if exc.kind.value == "unauthenticated":
                extra.append((b"www-authenticate", b"Bearer"))
            await respond_error(send, status_of(exc), exc.message, extra)
        except ClientGone:
            pass
        except Exception:
            log.exception("unhandled management error")
            await respond_error(send, 500, "internal server error")

    async def _handle(self, scope: Scope, receive: Any, send: Any) -> None:
        parts = scope["path"].strip("/").split("/")
        if parts[:2] == ["v2", "health"]:
            await respond(send, 200, b"")
            return
        self._authorize(scope)
        if parts[:2] != ["v2", "repository"]:
            raise ModelNotFoundError(f"no route for {scope['path'][:100]!r}")
        if scope["method"] != "POST":
            await respond_error(send, 405, "use POST", [(b"allow", b"POST")])
            return
        body = await read_body(scope, receive, _MAX_BODY)
        params = _parameters(body)
        if parts[2:] == ["index"]:
            rows = self.dataplane.repository_index()
            if params.get("ready"):
                rows = [r for r in rows if r.state == "READY"]
            await respond_json(send, 200, rows)
            return
        if len(parts) == 5 and parts[2] == "models" and parts[4] in ("load", "unload"):
            name = parts[3]
            if parts[4] == "load":
                unsupported = sorted(k for k in params.get("parameters", {}) if k != "unload_dependents")
                if unsupported:
                    raise InvalidInputError(
                        f"load parameters {unsupported} are not supported; edit model.yaml and load again"
                    )
                await self.dataplane.load_model(name)
            else:
                await self.dataplane.unload_model(name)
            await respond(send, 200, b"")
            return
        raise ModelNotFoundError(f"no route for {scope['path'][:100]!r}")

    def _authorize(self, scope: Scope) -> None:
        given = header(scope, b"authorization")
        if given is None:
            raise UnauthenticatedError("the management API needs 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given, self._expected):
            raise UnauthenticatedError("wrong management token")


def _parameters(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = msgspec.json.decode(body)
    except (ValueError, RecursionError):  # msgspec.DecodeError, or UnicodeDecodeError
        raise InvalidInputError("malformed JSON body") from None
    if not isinstance(value, dict):
        raise InvalidInputError("the body must be a JSON object")
    return value
