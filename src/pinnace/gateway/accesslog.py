"""The JSON access log: one line per request, written in batches.

Why not the ``logging`` module: a handler writes and flushes every record, one system call per
request, which cost the gateway most of its throughput in the benchmark. Lines are encoded with
msgspec into a buffer that is written whole when it passes ``max_buffer`` bytes and at least
every ``interval_s`` by :meth:`AccessLog.run`, so a quiet gateway still logs promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import msgspec

_encode = msgspec.json.Encoder().encode


class AccessEntry(msgspec.Struct, omit_defaults=True):
    ts: float
    request_id: str
    method: str
    path: str
    status: int
    duration_ms: float
    outcome: str
    route: str = ""
    key: str = ""
    upstream: str = ""
    degraded: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    client: str = ""


class AccessLog:
    """Buffers encoded entries and writes them to ``fd`` (stderr by default)."""

    def __init__(self, fd: int = 2, max_buffer: int = 64 * 1024, interval_s: float = 0.2) -> None:
        self.fd = fd
        self.max_buffer = max_buffer
        self.interval_s = interval_s
        self._buffer = bytearray()

    def write(self, entry: AccessEntry) -> None:
        self._buffer += _encode(entry)
        self._buffer += b"\n"
        if len(self._buffer) >= self.max_buffer:
            self.flush()

    def flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        view = memoryview(data)
        with contextlib.suppress(OSError):  # a closed stderr must not fail requests
            while view:
                view = view[os.write(self.fd, view):]

    async def run(self) -> None:
        """Flush every ``interval_s`` until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                if self._buffer:
                    self.flush()
        finally:
            self.flush()


def now() -> float:
    return round(time.time(), 6)
