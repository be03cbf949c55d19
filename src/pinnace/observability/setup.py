"""Builds the observability a server process uses, from its settings, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from pinnace.core.stats import InferenceObserver, NullObserver
from pinnace.observability.hooks import RequestListener
from pinnace.repository.repository import LoadListener
from pinnace.server.rest.app import MetricsHandler
from pinnace.settings import ServerSettings


@dataclass
class Observability:
    """What the server hands to its parts: each optional, each cheap when absent."""

    observer: InferenceObserver = field(default_factory=NullObserver)
    listener: RequestListener | None = None
    metrics: MetricsHandler | None = None
    on_load: LoadListener | None = None


def build_observability(settings: ServerSettings) -> Observability:
    return Observability()
