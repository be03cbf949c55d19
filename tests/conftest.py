"""Shared fixtures: model repositories built in the test session from the real libraries."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.models import write_python_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models"


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    """A private copy of the example repository (iris ONNX, iris-sklearn, mlp)."""
    repo = tmp_path / "models"
    shutil.copytree(EXAMPLES, repo)
    return repo


@pytest.fixture
def python_model() -> Callable[..., Path]:
    """Writes a trusted, hashed custom Python model into a repository."""
    return write_python_model
