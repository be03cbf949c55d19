"""pinnace: fast, safe model serving over the Open Inference Protocol."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
