"""Logging setup: JSON lines (default) or human-readable text, with levels per module.

Called once by the CLI; nothing configures logging at import time.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from typing import Any, Final

import msgspec

_STANDARD: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


@functools.lru_cache(maxsize=4)
def _utc_second(whole: int) -> str:
    # Lines within one second share this prefix: format it once, not per line.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def iso_utc(created: float) -> str:
    """``2025-01-31T12:00:00.123Z``: the ``ts`` of every JSON log line."""
    return f"{_utc_second(int(created))}.{int(created % 1 * 1000):03d}Z"


def text_time(created: float) -> str:
    """The ``asctime`` of text log lines (local time, as logging.Formatter writes it)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) + f",{int(created % 1 * 1000):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={...}`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(doc, enc_hook=str).decode()


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """``level`` is ``info`` or ``info,pinnace.core=debug,uvicorn=warning``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif fmt == "text":
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    else:
        raise ValueError(f"log format must be json or text, not {fmt!r}")
    root = logging.getLogger()
    root.handlers[:] = [handler]
    default, *pairs = [p.strip() for p in level.split(",") if p.strip()] or ["info"]
    root.setLevel(_level(default))
    for pair in pairs:
        module, _, module_level = pair.partition("=")
        logging.getLogger(module.strip()).setLevel(_level(module_level))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def _level(name: str) -> int:
    value = logging.getLevelName(name.strip().upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {name!r}")
    return value
