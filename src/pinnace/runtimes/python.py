"""Custom Python models: ``model.py`` in the version folder defines a class.

The class (``Model`` unless ``options.class_name`` says otherwise) follows a small contract::

    class Model:
        def setup(self, version_dir: pathlib.Path) -> None: ...        # optional
        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
        def teardown(self) -> None: ...                                 # optional

Importing the module runs its code, so the repository admits it only when trusted and hashed.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from pinnace.errors import InvalidInputError, ModelLoadError
from pinnace.runtimes.base import Arrays, Runtime


class PythonRuntime(Runtime):
    """Runs a user's class; ``options.class_name`` picks it (default ``Model``)."""

    format: ClassVar[str] = "python"
    platform: ClassVar[str] = "python"
    default_model_file: ClassVar[str] = "model.py"
    runs_code_on_load: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._module_name = f"pinnace_user_model_{self.manifest.name}_{self.version_dir.name}"

    def load(self) -> None:
        path = self._require_file()
        spec = importlib.util.spec_from_file_location(self._module_name, path)
        if spec is None or spec.loader is None:
            raise ModelLoadError(f"{path.name!r} is not an importable Python file")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ModelLoadError(f"{path.name!r} failed to import: {type(exc).__name__}: {exc}") from exc
        class_name = str(self.manifest.options.get("class_name", "Model"))
        cls = getattr(module, class_name, None)
        if cls is None or not hasattr(cls, "predict"):
            raise ModelLoadError(f"{path.name!r} defines no class {class_name!r} with predict()")
        model = cls()
        setup = getattr(model, "setup", None)
        if setup is not None:
            try:
                setup(self.version_dir)
            except Exception as exc:
                raise ModelLoadError(f"{class_name}.setup failed: {type(exc).__name__}: {exc}") from exc
        self._model = model

    def predict(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        produced = self._model.predict(inputs)
        if not isinstance(produced, dict):
            raise InvalidInputError("the model's predict() must return a dict of arrays")
        missing = [name for name in outputs if name not in produced]
        if missing:
            raise InvalidInputError(f"the model produced no output named {missing[0]!r}")
        return {name: np.asarray(produced[name]) for name in outputs}

    def unload(self) -> None:
        teardown = getattr(self._model, "teardown", None)
        if teardown is not None:
            teardown()
        self._model = None
        sys.modules.pop(self._module_name, None)
