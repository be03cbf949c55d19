"""In-process harness: the real repository, data plane and REST app, spoken to through httpx's
ASGI transport, with the observability under test handed in."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pinnace.core.dataplane import DataPlane, scheduler_factory
from pinnace.observability.setup import Observability
from pinnace.repository import ModelRepository
from pinnace.server.rest.app import RestApp
from tests.conftest import EXAMPLES


@dataclass
class InProcess:
    client: httpx.AsyncClient
    dataplane: DataPlane
    obs: Observability


@asynccontextmanager
async def in_process(repo: Path, obs: Observability) -> AsyncIterator[InProcess]:
    """Load ``repo`` and serve it in-process; closes ``obs`` (flushing its writers) on exit."""
    dataplane = DataPlane(
        ModelRepository(repo, scheduler_factory(obs.observer), on_load=obs.on_load),
        observer=obs.observer,
        payloads=obs.payloads,
    )
    obs.bind(dataplane)
    await dataplane.repository.load_all()
    app = obs.wrap(
        RestApp(
            dataplane,
            max_body_bytes=1 << 20,
            max_elements=1 << 20,
            metrics=obs.metrics,
            listener=obs.listener,
        )
    )
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://pinnace") as client:
            yield InProcess(client, dataplane, obs)
    finally:
        await dataplane.repository.unload_all()
        obs.close()


@pytest.fixture
def iris_repo(tmp_path: Path) -> Path:
    """A repository holding only the iris ONNX example (input FP32 [-1, 4], batching on)."""
    repo = tmp_path / "models"
    repo.mkdir()
    shutil.copytree(EXAMPLES / "iris", repo / "iris")
    return repo


def iris_body(rows: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [rows, 4], "data": [5.1, 3.5, 1.4, 0.2] * rows}
        ],
        **extra,
    }
