"""The in-process floor: the same request path as the server, without HTTP.

    taskset -c 0 python bench/inprocess.py REPO BODY[:HEADER_LENGTH] ... --seconds 3

For each body, two loops timed with ``time.perf_counter``, one request at a time:

- ``dataplane``: decode → ``DataPlane.infer`` (signature check, batcher, executor thread,
  runtime) → encode: exactly what the REST handler runs after reading the body;
- ``direct``: decode → signature check → ``runtime.predict`` on this thread → encode: the
  codec and model cost alone, with no batcher or thread hop.

Prints one JSON object: ``{body: {variant: {"mean_us", "p50_us", "p99_us", "rps"}}}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import uvloop

from pinnace.core.validation import SignatureCheck
from pinnace.observability.setup import build_observability
from pinnace.protocol.datatypes import datatype_of
from pinnace.protocol.json_codec import decode_request, encode_response
from pinnace.protocol.types import InferResponse, Tensor
from pinnace.server.app import build_dataplane
from pinnace.settings import ServerSettings

MAX_ELEMENTS = 64 * 1024 * 1024


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("repository", type=Path)
    parser.add_argument("bodies", nargs="+", help="MODEL=PATH[:HEADER_LENGTH]")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    settings = ServerSettings(repository=args.repository)
    dataplane = build_dataplane(settings, build_observability(settings))
    await dataplane.repository.load_all()
    results: dict[str, Any] = {}
    for spec in args.bodies:
        model, _, rest = spec.partition("=")
        path, _, length = rest.partition(":")
        body = Path(path).read_bytes()
        header_length = int(length) if length else None
        results[Path(path).stem] = {
            "dataplane": await _timed(_via_dataplane(dataplane, model, body, header_length), args.seconds),
            "direct": await _timed(_direct(dataplane, model, body, header_length), args.seconds),
        }
    await dataplane.repository.unload_all()
    sys.stdout.write(msgspec.json.encode(results).decode() + "\n")


def _via_dataplane(
    dataplane: Any, model: str, body: bytes, header_length: int | None
) -> Callable[[], Awaitable[bytes]]:
    async def once() -> bytes:
        request = decode_request(body, header_length, max_elements=MAX_ELEMENTS)
        response = await dataplane.infer(model, None, request)
        payload, _ = encode_response(response, request)
        return payload

    return once


def _direct(
    dataplane: Any, model: str, body: bytes, header_length: int | None
) -> Callable[[], Awaitable[bytes]]:
    served = dataplane.repository.get(model)
    check = SignatureCheck(served.manifest)
    specs = {t.name: t.datatype for t in served.manifest.outputs}

    async def once() -> bytes:
        request = decode_request(body, header_length, max_elements=MAX_ELEMENTS)
        checked = check.check(request)
        arrays = served.runtime.predict(checked.inputs, checked.outputs)
        outputs = [
            Tensor(name=name, datatype=specs.get(name) or datatype_of(a.dtype), data=a)
            for name, a in arrays.items()
        ]
        response = InferResponse(model_name=model, model_version="1", outputs=outputs)
        payload, _ = encode_response(response, request)
        return payload

    return once


async def _timed(once: Callable[[], Awaitable[bytes]], seconds: float) -> dict[str, float]:
    for _ in range(20):  # warm caches and lazily built state
        await once()
    latencies: list[float] = []
    clock = time.perf_counter
    started = clock()
    end = started + seconds
    now = started
    while now < end:
        await once()
        after = clock()
        latencies.append(after - now)
        now = after
    elapsed = now - started
    us = np.array(latencies) * 1e6
    return {
        "mean_us": float(us.mean()),
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "rps": len(latencies) / elapsed,
    }


if __name__ == "__main__":
    uvloop.run(main())
