"""Logging setup: JSON or text lines, levels per module."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from pinnace.observability.logging import JsonFormatter, configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    touched = ["pinnace.core", "pinnace.access"]
    levels = {name: logging.getLogger(name).level for name in touched}
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def test_levels_are_set_per_module(restore_logging: None) -> None:
    configure_logging("warning,pinnace.core=debug, pinnace.access=error", "json")
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("pinnace.core.batcher").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("pinnace.access").isEnabledFor(logging.INFO)
    assert not logging.getLogger("pinnace.repository").isEnabledFor(logging.INFO)


def test_bad_levels_and_formats_are_refused(restore_logging: None) -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("info,pinnace=loud")
    with pytest.raises(ValueError, match="json or text"):
        configure_logging("info", "xml")


def test_json_lines_carry_extras_but_not_uvicorns_colour_copy() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("pinnace.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("loaded %s", "iris", extra={"model": "iris", "color_message": "\x1b[1m"})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{"))
    assert first["message"] == "loaded iris" and first["model"] == "iris"
    assert first["level"] == "warning" and first["logger"] == "pinnace.test.json"
    assert first["ts"].endswith("Z") and "color_message" not in first
    assert "RuntimeError: boom" in second["exception"]
