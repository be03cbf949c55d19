"""The model repository: which models exist under REPO, and their loaded versions.

Loading runs in a worker thread so the event loop keeps serving. A (re)load builds every new
version completely — hash check, trust gate, load, warmup — before it swaps them in; the old
versions are then drained (their queued and running requests finish) and unloaded. A failed
load leaves the model UNAVAILABLE with its reason; a failed *re*load leaves the old versions
serving. Models are independent: one failing never stops another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pinnace.errors import (
    ManifestError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
    PinnaceError,
)
from pinnace.manifest.discover import has_model_config, read_model_config
from pinnace.manifest.schema import MODEL_NAME_RE, Manifest, VersionPolicy
from pinnace.protocol.datatypes import dtype_of
from pinnace.protocol.types import RepositoryEntry
from pinnace.repository.integrity import verify_version
from pinnace.repository.paths import model_dir
from pinnace.repository.state import ModelState
from pinnace.repository.version import SchedulerFactory, ServedVersion
from pinnace.runtimes.base import Runtime
from pinnace.runtimes.registry import runtime_class

log = logging.getLogger(__name__)

LoadListener = Callable[[str, str, float, bool], None]
"""Told of every version load: (model, version, seconds, succeeded)."""


class _Model:
    """Everything the repository knows about one model name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = ModelState.UNKNOWN
        self.reason = ""
        self.versions: dict[int, ServedVersion] = {}
        self.failed: dict[int, str] = {}
        self.lock = asyncio.Lock()


class ModelRepository:
    """Models under ``root``, loaded and served through schedulers made by ``make_scheduler``."""

    def __init__(
        self,
        root: Path,
        make_scheduler: SchedulerFactory,
        *,
        drain_grace_s: float = 30.0,
        on_load: LoadListener | None = None,
    ) -> None:
        self.root = root.resolve()
        self._make_scheduler = make_scheduler
        self._drain_grace_s = drain_grace_s
        self._on_load = on_load
        self._models: dict[str, _Model] = {}
        self._initial_load_done = False

    # -- discovery and state ----------------------------------------------------------------

    def discover(self) -> list[str]:
        """Names of the model folders under the root, in order; unusable names are skipped."""
        names = []
        for path in sorted(self.root.iterdir()):
            if not path.is_dir() or path.name.startswith("."):
                continue
            if not MODEL_NAME_RE.match(path.name):
                log.warning("skipping folder %r: not a valid model name", path.name)
                continue
            if has_model_config(path):
                names.append(path.name)
                self._models.setdefault(path.name, _Model(path.name))
        return names

    def ready(self, *, strict: bool = True) -> bool:
        """Whether the startup load has finished and, when ``strict``, every model is READY."""
        if not self._initial_load_done:
            return False
        return not strict or all(m.state is ModelState.READY for m in self._models.values())

    def index(self) -> list[RepositoryEntry]:
        """One row per version (and one per model with no version), for the index API."""
        self.discover()
        rows: list[RepositoryEntry] = []
        for name in sorted(self._models):
            model = self._models[name]
            for number, served in sorted(model.versions.items()):
                rows.append(RepositoryEntry(name, str(number), served.state.value))
            for number, reason in sorted(model.failed.items()):
                rows.append(RepositoryEntry(name, str(number), ModelState.UNAVAILABLE.value, reason))
            if not model.versions and not model.failed:
                rows.append(RepositoryEntry(name, "", model.state.value, model.reason))
        return rows

    def names(self) -> list[str]:
        return sorted(self._models)

    def get(self, name: str, version: str | None = None) -> ServedVersion:
        """The served version to run a request on; the newest ready one when none is named."""
        model = self._models.get(name)
        if model is None:
            model_dir(self.root, name)  # uniform error for names that could never exist
            raise ModelNotFoundError(f"unknown model {name!r}")
        if version is None or version == "":
            if not model.versions:
                raise ModelNotReadyError(_not_ready(model))
            return model.versions[max(model.versions)]
        number = _parse_version(version)
        served = model.versions.get(number)
        if served is None:
            if number in model.failed:
                raise ModelNotReadyError(f"model {name!r} version {number} is unavailable: {model.failed[number]}")
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}")
        return served

    def state_of(self, name: str) -> tuple[ModelState, str]:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFoundError(f"unknown model {name!r}")
        return model.state, model.reason

    def served_versions(self) -> list[ServedVersion]:
        return [v for m in self._models.values() for v in m.versions.values()]

    # -- load, reload, unload ---------------------------------------------------------------

    async def load_all(self) -> None:
        """Load every discovered model; failures are recorded, never raised."""
        names = self.discover()
        await asyncio.gather(*(self._load_quietly(name) for name in names))
        self._initial_load_done = True

    async def _load_quietly(self, name: str) -> None:
        # A failure is recorded as UNAVAILABLE with its reason and logged by load().
        with contextlib.suppress(PinnaceError):
            await self.load(name)

    async def load(self, name: str) -> None:
        """Load or reload ``name``. Raises the reason when no new version could be loaded."""
        directory = model_dir(self.root, name)
        if not directory.is_dir() or not has_model_config(directory):
            raise ModelNotFoundError(f"unknown model {name!r}")
        model = self._models.setdefault(name, _Model(name))
        async with model.lock:
            reloading = bool(model.versions)
            if not reloading:
                model.state = ModelState.LOADING
            try:
                manifest = read_model_config(directory)
                if manifest.name != name:
                    raise ManifestError(
                        f"{name}/model.yaml: key 'name': {manifest.name!r} differs from its folder {name!r}"
                    )
                loaded, failed = await self._load_versions(manifest, directory)
            except PinnaceError as exc:
                self._record_failure(model, exc.message, reloading)
                raise
            if not loaded:
                reason = "; ".join(f"version {v}: {e.message}" for v, e in sorted(failed.items()))
                self._record_failure(model, reason or "no version folders", reloading)
                # Keep the error's class (a TrustError stays one) when one version failed.
                cls = type(next(iter(failed.values()))) if len(failed) == 1 else ModelLoadError
                raise cls(f"model {name!r} could not be loaded: {reason or 'no version folders'}")
            old = model.versions
            model.versions = {served.version: served for served in loaded}
            model.failed = {v: e.message for v, e in failed.items()}
            model.state = ModelState.READY
            model.reason = ""
            log.info("model %s ready (versions %s)", name, sorted(model.versions))
        await self._retire([v for k, v in old.items() if model.versions.get(k) is not v])

    async def unload(self, name: str) -> None:
        """Stop serving ``name``: new requests are refused, in-flight ones finish first."""
        model = self._models.get(name)
        if model is None:
            model_dir(self.root, name)
            raise ModelNotFoundError(f"unknown model {name!r}")
        async with model.lock:
            old = model.versions
            model.versions = {}
            model.failed = {}
            model.state = ModelState.UNLOADING
            await self._retire(list(old.values()))
            model.state = ModelState.UNAVAILABLE
            model.reason = "unloaded"

    async def unload_all(self) -> None:
        await asyncio.gather(*(self.unload(name) for name in list(self._models)))

    def _record_failure(self, model: _Model, reason: str, reloading: bool) -> None:
        if reloading:
            log.error("reload of %s failed, previous versions keep serving: %s", model.name, reason)
            model.reason = f"reload failed: {reason}"
        else:
            log.error("model %s unavailable: %s", model.name, reason)
            model.state = ModelState.UNAVAILABLE
            model.reason = reason

    async def _load_versions(
        self, manifest: Manifest, directory: Path
    ) -> tuple[list[ServedVersion], dict[int, PinnaceError]]:
        wanted, missing = select_versions(manifest, directory)
        failed: dict[int, PinnaceError] = {
            v: ModelLoadError("version folder not found") for v in missing
        }
        loaded: list[ServedVersion] = []
        for number in wanted:
            version_dir = directory if manifest.unversioned else directory / str(number)
            started = time.monotonic()
            try:
                served = await asyncio.to_thread(_load_version, manifest, directory, version_dir, number)
            except PinnaceError as exc:
                failed[number] = exc
                self._notify(manifest.name, number, time.monotonic() - started, ok=False)
                continue
            except Exception as exc:  # a framework's own failure while loading
                log.exception("loading %s version %d failed", manifest.name, number)
                failed[number] = ModelLoadError(f"load failed: {type(exc).__name__}")
                self._notify(manifest.name, number, time.monotonic() - started, ok=False)
                continue
            served.load_seconds = time.monotonic() - started
            served.loaded_at = time.time()
            served.scheduler = self._make_scheduler(served)
            served.state = ModelState.READY
            loaded.append(served)
            self._notify(manifest.name, number, served.load_seconds, ok=True)
        return loaded, failed

    def _notify(self, name: str, version: int, seconds: float, *, ok: bool) -> None:
        if self._on_load is not None:
            self._on_load(name, str(version), seconds, ok)

    async def _retire(self, versions: list[ServedVersion]) -> None:
        for served in versions:
            served.state = ModelState.UNLOADING
        await asyncio.gather(*(self._drain_and_unload(v) for v in versions))

    async def _drain_and_unload(self, served: ServedVersion) -> None:
        if served.scheduler is not None:
            await served.scheduler.close(self._drain_grace_s)
        try:
            await asyncio.to_thread(served.runtime.unload)
        except Exception:
            log.exception("unloading %s version %s failed", served.name, served.version)
        served.state = ModelState.UNAVAILABLE


def select_versions(manifest: Manifest, directory: Path) -> tuple[list[int], list[int]]:
    """(versions to load, versions the policy names that have no folder)."""
    if manifest.unversioned:
        return [1], []
    present = sorted(
        int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0
    )
    policy: VersionPolicy = manifest.version_policy
    if policy.all:
        return present, []
    if policy.specific is not None:
        wanted = sorted(set(policy.specific))
        return [v for v in wanted if v in present], [v for v in wanted if v not in present]
    latest = policy.latest or 1
    return present[-latest:], []


_FIRST_LOADS = threading.Lock()
_INITIALISED: set[str] = set()
"""Runtimes that have loaded a model in this process: their frameworks are imported."""


def _load_version(manifest: Manifest, directory: Path, version_dir: Path, number: int) -> ServedVersion:
    """Runs in a worker thread: verify, load and warm up one version."""
    cls = runtime_class(manifest.runtime)
    verify_version(manifest, directory, version_dir, runs_code_on_load=cls.runs_code(manifest))
    if manifest.runtime in _INITIALISED:
        return _load_runtime(cls, manifest, version_dir, number)
    # Models load in parallel threads, and a runtime's first load imports its framework and
    # initialises its native libraries (torch, TensorFlow, OpenVINO...). Two of those at once
    # can deadlock the process (concurrent dlopen and static initialisers; TensorFlow and
    # torch are known to hang each other), so first loads take turns.
    with _FIRST_LOADS:
        served = _load_runtime(cls, manifest, version_dir, number)
        _INITIALISED.add(manifest.runtime)
        return served


def _load_runtime(cls: type[Runtime], manifest: Manifest, version_dir: Path, number: int) -> ServedVersion:
    runtime = cls(manifest, version_dir)
    runtime.load()
    if manifest.warmup and manifest.inputs:
        try:
            runtime.predict(warmup_inputs(manifest), [o.name for o in manifest.outputs])
        except Exception as exc:
            runtime.unload()
            detail = exc.message if isinstance(exc, PinnaceError) else type(exc).__name__
            raise ModelLoadError(
                f"warmup failed; does the manifest signature match the model? ({detail})"
            ) from exc
    return ServedVersion(manifest, number, version_dir, runtime)


def warmup_inputs(manifest: Manifest) -> dict[str, np.ndarray]:
    """One request of zeros shaped by the signature (variable dimensions become 1)."""
    inputs = {}
    for spec in manifest.inputs:
        if spec.optional:
            continue
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            inputs[spec.name] = np.full(shape, b"", dtype=object)
        else:
            inputs[spec.name] = np.zeros(shape, dtype=dtype_of(spec.datatype))
    return inputs


def _parse_version(version: str) -> int:
    if not version.isdigit() or int(version) < 1 or len(version) > 18:
        raise ModelNotFoundError(f"unknown version {version[:20]!r}; versions are positive integers")
    return int(version)


def _not_ready(model: _Model) -> str:
    reason = f": {model.reason}" if model.reason else ""
    return f"model {model.name!r} is {model.state.value.lower()}{reason}"
