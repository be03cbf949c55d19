"""The Runtime contract: what every model format implements.

A runtime instance is one loaded model version. Its life is ``load`` → ``predict``… →
``unload``. ``predict`` runs in an executor thread, never on the event loop, and may be called
concurrently by up to ``manifest.instances`` threads; runtimes whose framework is not
thread-safe take a lock of their own.

The repository checks artifact hashes and the trust gate *before* ``load`` is called; a runtime
whose loading can run code declares ``runs_code_on_load = True`` so that gate applies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pinnace.errors import ModelLoadError
from pinnace.manifest.schema import Manifest, TensorSignature

Arrays = dict[str, np.ndarray]


class Runtime(ABC):
    """One loaded version of one model."""

    format: ClassVar[str]
    """Registry key, the manifest's ``runtime`` value."""
    platform: ClassVar[str]
    """The ``platform`` string of V2 model metadata (Triton's names where one exists)."""
    default_model_file: ClassVar[str]
    """The artifact loaded when the manifest names no ``model_file``."""
    model_file_candidates: ClassVar[tuple[str, ...]] = ()
    """Other names the artifact goes by (``model.h5`` beside ``model.keras``), tried in order
    before the default when the manifest names no ``model_file``."""
    runs_code_on_load: ClassVar[bool] = False
    """True when loading can execute arbitrary code (pickle, custom Python)."""

    @classmethod
    def runs_code(cls, manifest: Manifest) -> bool:
        """Whether loading ``manifest``'s artifacts can run code, so the trust gate applies.

        Formats that run code only in some modes (full torch pickles, Keras without safe mode)
        decide from the manifest's options.
        """
        return cls.runs_code_on_load

    def __init__(self, manifest: Manifest, version_dir: Path) -> None:
        self.manifest = manifest
        self.version_dir = version_dir

    @property
    def model_path(self) -> Path:
        if self.manifest.model_file:
            return self.version_dir / self.manifest.model_file
        for name in self.model_file_candidates:
            if (self.version_dir / name).exists():
                return self.version_dir / name
        return self.version_dir / self.default_model_file

    @abstractmethod
    def load(self) -> None:
        """Load the artifact; raise :class:`ModelLoadError` with a reason a user can act on."""

    @abstractmethod
    def predict(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        """Compute ``outputs`` (names from the signature) from ``inputs`` (keyed by input name)."""

    def unload(self) -> None:  # noqa: B027 - optional hook; most runtimes have nothing to free
        """Release what ``load`` took. Called once no request uses this instance any more."""

    def metadata_parameters(self) -> dict[str, Any]:
        """Extra facts for model metadata, e.g. the execution providers in use."""
        return {}

    @classmethod
    def inspect(cls, path: Path) -> tuple[list[TensorSignature], list[TensorSignature]] | None:
        """The signature declared by the artifact at ``path``, for ``pinnace init``.

        Formats that do not declare one return ``None``. May run code for formats that do so on
        load; callers gate it on trust as for ``load``.
        """
        return None

    def _require_file(self) -> Path:
        path = self.model_path
        if not path.exists():
            raise ModelLoadError(f"artifact {path.name!r} is missing from version {self.version_dir.name}")
        return path
