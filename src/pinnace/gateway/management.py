"""Management requests (repository, logging, trace, shared memory) from ``admin`` keys.

They are never forwarded for other callers. For admins, a repository request is sent to every
upstream of the pools concerned — on the management listener with the pool's token when the
pool configures one — because a model is loaded on each server separately. The answers are
merged: the repository index becomes one list, and any failure is what the caller sees.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

import msgspec

from pinnace.errors import ModelNotFoundError
from pinnace.gateway.client import ConnectionPool, Response, UpstreamFailure
from pinnace.gateway.config import management_token
from pinnace.gateway.proxy import Call, Reply, reply_from
from pinnace.gateway.state import State
from pinnace.gateway.upstream import Pool

_PREFIXES: Final = (
    "/v2/repository", "/v2/logging", "/v2/trace", "/v2/systemsharedmemory",
    "/v2/cudasharedmemory",
)
_MODEL_OP = re.compile(r"^/v2/repository/models/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})/(load|unload)$")
_MODEL_TRACE = re.compile(r"^/v2/models/[^/]+(?:/versions/[^/]+)?/trace(?:/.*)?$")


def is_management(path: str) -> bool:
    return path.startswith(_PREFIXES) or _MODEL_TRACE.match(path) is not None


async def handle(state: State, path: str, call: Call, timeout: float = 30.0) -> Reply:
    m = _MODEL_OP.match(path)
    if m is not None:
        route = state.route_for(m.group(1))
        if route is None:
            raise ModelNotFoundError(f"no route for model {m.group(1)!r}")
        pools: list[Pool] = [route.pool]
    else:
        pools = list(state.pools.values())
    sends = []
    seen: set[str] = set()
    for pool in pools:
        for up in list(pool.members.values()):
            if up.address not in seen:
                seen.add(up.address)
                port = pool.management_port(up) or up.port
                sends.append(_send(pool, up.host, port, path, call, timeout))
    if not sends:
        raise ModelNotFoundError("no upstream to manage")
    results = await asyncio.gather(*sends)
    for address, resp in results:
        if resp is None:
            return Reply(502, [(b"content-type", b"application/json")],
                         b'{"error":"an upstream could not be reached"}', "upstream_error", address)
    answered = [(a, r) for a, r in results if r is not None]
    # A 404 means "not in that server's repository": an error only when every server says so.
    found = [(a, r) for a, r in answered if r.status != 404] or answered
    for address, resp in found:
        if resp.status >= 300:
            return reply_from(resp, address)
    if path == "/v2/repository/index":
        return _merged_index([r for _, r in found])
    return reply_from(found[0][1], found[0][0])


async def _send(
    pool: Pool, host: str, port: int, path: str, call: Call, timeout: float
) -> tuple[str, Response | None]:
    headers = list(call.headers)
    mgmt = pool.config.management
    if mgmt is not None:
        token = management_token(mgmt)
        if token:
            headers.append((b"authorization", b"Bearer " + token.encode()))
    conns = ConnectionPool(host, port, max_idle=0)
    try:
        return f"{host}:{port}", await conns.request(
            call.method, path.encode(), headers, call.body, timeout
        )
    except UpstreamFailure:
        return f"{host}:{port}", None
    finally:
        conns.close()


def _merged_index(responses: list[Response]) -> Reply:
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for resp in responses:
        try:
            entries = msgspec.json.decode(resp.body)
        except ValueError:  # msgspec.DecodeError, or UnicodeDecodeError for a string not UTF-8
            continue
        for e in entries if isinstance(entries, list) else []:
            if not isinstance(e, dict) or "name" not in e:
                continue
            k = (str(e["name"]), str(e.get("version", "")))
            # READY anywhere is READY through the gateway.
            if k not in merged or e.get("state") == "READY":
                merged[k] = e
    body = msgspec.json.encode([merged[k] for k in sorted(merged)])
    return Reply(200, [(b"content-type", b"application/json")], body, "ok")
