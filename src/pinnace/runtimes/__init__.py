"""Runtimes: one module per model format behind the small contract in :mod:`.base`."""

from pinnace.runtimes.base import Runtime
from pinnace.runtimes.registry import available_runtimes, runtime_class

__all__ = ["Runtime", "available_runtimes", "runtime_class"]
