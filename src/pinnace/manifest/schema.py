"""The ``model.yaml`` schema, as msgspec Structs so that decoding is validation.

Unknown keys are rejected (``forbid_unknown_fields``) so that a typo never silently falls back
to a default.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

import msgspec

from pinnace.protocol.types import TensorSpec

MANIFEST_FILE: Final = "model.yaml"

MODEL_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""Model names: also the folder name, a URL segment and a metrics label, so kept tame."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class TensorSignature(_Strict):
    """One input or output. ``shape`` includes the batch dimension when batching is on."""

    name: str
    datatype: str
    shape: list[int]
    allow_nan: bool = False
    """Accept NaN and Inf in this (floating-point) input; refused by default."""
    optional: bool = False
    """An input the client may leave out."""

    def spec(self) -> TensorSpec:
        return TensorSpec(name=self.name, datatype=self.datatype, shape=list(self.shape))


class Batching(_Strict):
    """Adaptive batching: a batch closes at ``max_batch_size`` or after ``max_queue_delay_us``."""

    max_batch_size: int = 0
    """0 turns batching off; > 0 means the first dimension of every tensor is the batch axis."""
    max_queue_delay_us: int = 500
    """How long the first request of a batch waits for company, in microseconds."""
    max_queue_size: int = 1024
    """Requests waiting beyond this are refused at once (503 with Retry-After)."""
    default_timeout_ms: int = 0
    """Per-request timeout when the request names none; 0 means max_timeout_ms."""
    max_timeout_ms: int = 60_000
    """The longest timeout a request may ask for with its ``timeout`` parameter."""


class VersionPolicy(_Strict):
    """Which numbered version folders are served: the newest N, all, or a list."""

    latest: int | None = None
    all: bool = False
    specific: list[int] | None = None


class Resources(_Strict):
    """What one instance of the model needs; used for Kubernetes requests and limits."""

    cpu: str = "1"
    memory: str = "512Mi"
    gpu: int = 0


class PayloadLog(_Strict):
    """Opt-in logging of requests and responses (for drift analysis and audits).

    Where records go is the server's choice (``pinnace serve --payload-log``); a model only
    says whether, and how often.
    """

    sample: Annotated[float, msgspec.Meta(gt=0, le=1)]
    """Share of successful requests logged with their responses, in (0, 1]. Required (no
    default) so that an opt-in is always explicit and survives ``dump_manifest``."""


class Manifest(_Strict):
    """``REPO/<name>/model.yaml``."""

    name: str
    runtime: str
    """Runtime (format) key: onnx, sklearn, python, torchscript, xgboost, lightgbm, keras, …"""
    description: str = ""
    author: str = ""
    license: str = ""
    tags: list[str] = msgspec.field(default_factory=list)
    model_file: str = ""
    """The artifact the runtime loads inside each version folder; empty means its default."""
    artifacts: dict[str, str] = msgspec.field(default_factory=dict)
    """sha256 of every artifact, keyed by path relative to the model folder ("1/model.onnx")."""
    trusted: bool = False
    """Allow artifacts that run code when loaded (pickle, joblib, custom Python)."""
    inputs: list[TensorSignature] = msgspec.field(default_factory=list)
    outputs: list[TensorSignature] = msgspec.field(default_factory=list)
    batching: Batching = msgspec.field(default_factory=Batching)
    version_policy: VersionPolicy = msgspec.field(default_factory=lambda: VersionPolicy(latest=1))
    instances: int = 1
    """Concurrent executions of the model (executor threads)."""
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    """Runtime-specific settings, e.g. onnx ``intra_op_threads`` or ``providers``."""
    warmup: bool = True
    """Run one request of zeros built from the signature before the model turns ready."""
    resources: Resources = msgspec.field(default_factory=Resources)
    payload_log: PayloadLog | None = None
    """Log a sampled share of this model's requests and responses; off when absent."""
    unversioned: bool = False
    """Artifacts lie directly in the model folder (MLServer layout); served as version 1."""

    @property
    def batched(self) -> bool:
        return self.batching.max_batch_size > 0
