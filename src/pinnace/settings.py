"""Server settings. The CLI fills them from options, each also read from ``PINNACE_<NAME>``."""

from __future__ import annotations

from pathlib import Path

import msgspec


class ServerSettings(msgspec.Struct, kw_only=True):
    """Everything ``pinnace serve`` can be told."""

    repository: Path
    """The model repository folder (``REPO/<model>/model.yaml``, or Triton/MLServer layouts)."""
    host: str = "127.0.0.1"
    """Address of the data listener (REST inference, health, metadata, metrics)."""
    http_port: int = 8000
    """Port of the data listener."""
    grpc_port: int | None = 8001
    """Port of the gRPC listener; None turns gRPC off."""
    management_host: str = "127.0.0.1"
    """Address of the management listener (repository load/unload). Loopback by default."""
    management_port: int | None = 8002
    """Port of the management listener; None turns it off."""
    grpc_management_port: int | None = 8003
    """Port of the gRPC management listener (repository RPCs) on management_host; None: off."""
    management_token: str | None = None
    """Bearer token the management API requires; a random one is made (and logged) if unset."""
    max_body_bytes: int = 64 * 1024 * 1024
    """Largest request body (JSON or binary) accepted; larger ones get 413 while streaming."""
    max_elements: int = 64 * 1024 * 1024
    """Largest tensor accepted, in elements, checked before anything is allocated."""
    grpc_max_message_bytes: int = 64 * 1024 * 1024
    """Largest gRPC message received or sent."""
    workers: int = 1
    """Server processes sharing the data port (SO_REUSEPORT); each loads its own models."""
    graceful_timeout_s: float = 30.0
    """On SIGTERM, how long in-flight requests may take before the process exits."""
    shutdown_delay_s: float = 0.0
    """On SIGTERM, how long to keep serving (readiness already failing) before the listeners
    close, so that load balancers see readiness fail and stop sending first."""
    strict_readiness: bool = True
    """Ready only when every model in the repository is ready (Triton's default)."""
    log_format: str = "json"
    """``json`` (one object per line) or ``text`` (for people)."""
    log_level: str = "info"
    """Root log level; ``module=level`` pairs after a comma set levels per module."""
    access_log: bool = True
    """One log line per request (logger ``pinnace.access``), written off the event loop."""
    payload_log: str | None = None
    """Where models that opt in (``payload_log`` in model.yaml) log sampled requests and
    responses: a directory (``<model>.jsonl`` files) or an ``http(s)://`` URL; None: nowhere."""
    payload_log_max_bytes: int = 100 * 1024 * 1024
    """Size at which a payload log file is rotated."""
    payload_log_backups: int = 5
    """Rotated payload log files kept per model (``<model>.jsonl.1`` … ``.N``)."""
    tracing: str = "off"
    """Where OpenTelemetry spans go: ``off``, ``console``, or ``otlp`` (OTEL_EXPORTER_* env)."""
    sagemaker: bool = False
    """Also answer the SageMaker contract (``GET /ping``, ``POST /invocations``)."""
