"""The DataPlane: every protocol operation, once, for REST and gRPC alike.

Transports decode a request, call one method here and encode what it returns. Nothing in this
module knows HTTP or gRPC; errors are :class:`~pinnace.errors.PinnaceError` subclasses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from pinnace import __version__
from pinnace.core.batcher import Batcher
from pinnace.core.stats import (
    CURRENT_RECORD,
    InferenceObserver,
    InferenceStats,
    ModelStats,
    PayloadSink,
    RequestRecord,
)
from pinnace.core.validation import SignatureCheck
from pinnace.errors import InvalidInputError, ModelNotReadyError
from pinnace.protocol.datatypes import datatype_of
from pinnace.protocol.types import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    RepositoryEntry,
    ServerMetadata,
    Tensor,
)
from pinnace.repository import ModelRepository, ModelState, ServedVersion
from pinnace.repository.version import Arrays, Scheduler

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "schedule_policy"]


class DataPlane:
    """The protocol operations over one repository."""

    def __init__(
        self,
        repository: ModelRepository,
        *,
        server_name: str = "pinnace",
        strict_readiness: bool = True,
        observer: InferenceObserver | None = None,
        payloads: PayloadSink | None = None,
    ) -> None:
        self.repository = repository
        self.strict_readiness = strict_readiness
        self.server_name = server_name
        self.shutting_down = False
        self._plans: dict[int, _Plan] = {}
        """Per served version (by id, checked by identity): what its requests need."""
        self._new_record = observer.record_factory if observer is not None else None
        self._payloads = payloads

    # -- health and metadata ----------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return not self.shutting_down and self.repository.ready(strict=self.strict_readiness)

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name=self.server_name, version=__version__, extensions=EXTENSIONS)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        try:
            served = self.repository.get(name, version)
        except ModelNotReadyError:
            return False
        return served.state is ModelState.READY

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        served = self.repository.get(name, version)
        m = served.manifest
        versions = [str(v.version) for v in self.repository.served_versions() if v.name == name]
        parameters: dict[str, Any] = {"description": m.description} if m.description else {}
        parameters.update(served.runtime.metadata_parameters())
        return ModelMetadata(
            name=name,
            versions=sorted(versions, key=int) if version is None else [served.version_str],
            platform=served.runtime.platform,
            inputs=[t.spec() for t in m.inputs],
            outputs=[t.spec() for t in m.outputs],
            parameters=parameters or None,
        )

    def model_stats(self, name: str | None = None, version: str | None = None) -> list[ModelStats]:
        if name is None:
            served = self.repository.served_versions()
        elif version is None:
            self.repository.get(name)
            served = [v for v in self.repository.served_versions() if v.name == name]
        else:
            served = [self.repository.get(name, version)]
        return [v.scheduler.stats for v in served if v.scheduler is not None]

    # -- inference --------------------------------------------------------------------------

    async def infer(self, name: str, version: str | None, request: InferRequest) -> InferResponse:
        inference = self.start(name, version, request)
        try:
            arrays = await inference.future
        except BaseException:
            self.failed(inference)
            raise
        return self.finish(inference, arrays)

    def start(self, name: str, version: str | None, request: InferRequest) -> Inference:
        """Check a request and queue it; :attr:`Inference.future` holds its outputs.

        :meth:`infer` in two halves for a caller that waits without a task (the REST
        listener's protocol): it hands the future's outcome to :meth:`finish` or
        :meth:`failed`. Both halves run in the request's own context, which keeps its record.
        """
        served = self.repository.get(name, version)
        plan = self._plans.get(id(served))
        if plan is None or plan.served is not served:
            plan = self._plan(served)
        if served.state is not ModelState.READY:
            raise ModelNotReadyError(f"model {name!r} version {served.version} is not ready")
        started = time.perf_counter()
        record = None
        if self._new_record is not None:
            # Kept in the request's context: the batcher fills it in, the transport's listener
            # reads it once the response is sent.
            record = self._new_record(name, plan.version, request.id)
            CURRENT_RECORD.set(record)
        try:
            checked = plan.check.check(request)
            params = request.parameters
            timeout_s = plan.timeout_s(params) if params else plan.default_timeout_s
            future = plan.scheduler.submit(
                checked.inputs, checked.outputs, rows=checked.rows, key=checked.key, timeout_s=timeout_s
            )
        except BaseException:
            plan.stats.fail.add(time.perf_counter() - started)
            raise
        return Inference(name, plan, request, record, started, future)

    def failed(self, inference: Inference) -> None:
        """The inference's future failed (or was cancelled)."""
        inference.plan.stats.fail.add(time.perf_counter() - inference.started)

    def finish(self, inference: Inference, arrays: Arrays) -> InferResponse:
        """The response to a request whose outputs arrived."""
        plan, request = inference.plan, inference.request
        types = plan.output_types
        outputs = []
        for out, arr in arrays.items():  # a loop, not a comprehension: no extra frame per request
            outputs.append(Tensor(out, types.get(out) or datatype_of(arr.dtype), arr))
        response = InferResponse(inference.name, outputs, plan.version, request.id)
        plan.stats.success.add(time.perf_counter() - inference.started)
        if plan.payload_log is not None and self._payloads is not None:
            self._payloads.offer(
                inference.name, plan.version, plan.payload_log.sample, request, response, inference.record
            )
        return response

    def _plan(self, served: ServedVersion) -> _Plan:
        if served.scheduler is None:  # not loaded yet, or unloaded
            raise ModelNotReadyError(f"model {served.name!r} version {served.version} is not ready")
        plan = self._plans[id(served)] = _Plan(served, served.scheduler)
        return plan

    # -- repository extension ---------------------------------------------------------------

    def repository_index(self) -> list[RepositoryEntry]:
        return self.repository.index()

    async def load_model(self, name: str) -> None:
        await self.repository.load(name)
        self._forget_stale_plans()

    async def unload_model(self, name: str) -> None:
        await self.repository.unload(name)
        self._forget_stale_plans()

    def _forget_stale_plans(self) -> None:
        live = {id(v) for v in self.repository.served_versions()}
        for key in [k for k in self._plans if k not in live]:
            del self._plans[key]


def scheduler_factory(
    observer: InferenceObserver | None = None,
) -> Callable[[ServedVersion], Batcher]:
    """Builds the batcher (and its thread pool) for each version the repository loads."""

    def make(served: ServedVersion) -> Batcher:
        m = served.manifest
        executor = ThreadPoolExecutor(
            max_workers=m.instances, thread_name_prefix=f"pinnace-{m.name}-{served.version}"
        )
        runtime = served.runtime
        return Batcher(
            runtime.predict,
            executor,
            instances=m.instances,
            max_batch_size=m.batching.max_batch_size,
            max_queue_delay_s=m.batching.max_queue_delay_us / 1e6,
            max_queue_size=m.batching.max_queue_size,
            stats=ModelStats(name=m.name, version=served.version_str),
            observer=observer,
            # User code (custom Python, pickles) may block for any time: never on the loop.
            inline_when_fast=not type(runtime).runs_code(m),
        )

    return make


class Inference(msgspec.Struct, gc=False):
    """A request the data plane has queued: what :meth:`DataPlane.finish` needs of it."""

    name: str
    plan: _Plan
    request: InferRequest
    record: RequestRecord | None
    started: float
    future: asyncio.Future[Arrays]


class _Plan:
    """Everything a request on one served version needs, looked up once per version."""

    __slots__ = (
        "check", "default_timeout_s", "max_timeout_s", "output_types", "payload_log",
        "scheduler", "served", "stats", "version",
    )

    def __init__(self, served: ServedVersion, scheduler: Scheduler) -> None:
        self.served = served
        self.version = served.version_str
        self.scheduler = scheduler
        self.stats: InferenceStats = scheduler.stats.inference_stats
        self.check = SignatureCheck(served.manifest)
        self.output_types = self.check.output_types
        self.payload_log = served.manifest.payload_log
        b = served.manifest.batching
        self.max_timeout_s = b.max_timeout_ms / 1000
        self.default_timeout_s = (b.default_timeout_ms or b.max_timeout_ms) / 1000

    def timeout_s(self, params: dict[str, Any]) -> float:
        """The deadline for a request with these (non-empty) parameters."""
        if "timeout" not in params:
            return self.default_timeout_s
        asked = params["timeout"]
        # V2 "timeout" is in microseconds (Triton's convention); it may only shorten the maximum.
        # `not asked > 0` refuses NaN too; the cap comes before the division, which an integer
        # past a float's range would overflow.
        if isinstance(asked, bool) or not isinstance(asked, int | float) or not asked > 0:
            raise InvalidInputError("parameter 'timeout' must be a positive number of microseconds")
        return min(asked, self.max_timeout_s * 1e6) / 1e6
