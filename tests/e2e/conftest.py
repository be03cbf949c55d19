"""e2e fixtures: one real server over a private copy of the example repository, per module."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.models import ADD_MUL, ADD_MUL_SIGNATURE, write_python_model
from tests.servers import ServerProcess, running_server


@pytest.fixture(scope="module")
def served_examples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The example models plus ``addmul`` (two inputs, two outputs), served for a module."""
    repo = tmp_path_factory.mktemp("served") / "models"
    shutil.copytree(EXAMPLES, repo)
    write_python_model(repo, "addmul", ADD_MUL, **ADD_MUL_SIGNATURE, batching={"max_batch_size": 16})
    with running_server(repo, grpc=False) as server:
        yield server


@pytest.fixture
def fresh_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    shutil.copytree(EXAMPLES, repo)
    return repo
