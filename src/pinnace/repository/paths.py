"""Safe paths inside the repository: every name is checked before any I/O touches it."""

from __future__ import annotations

from pathlib import Path

from pinnace.errors import ModelNotFoundError
from pinnace.manifest.schema import MODEL_NAME_RE


def model_dir(root: Path, name: str) -> Path:
    """The folder of model ``name`` under ``root``; refuses names that could escape it."""
    if not MODEL_NAME_RE.match(name):
        raise ModelNotFoundError(f"unknown model {_printable(name)!r}")
    candidate = (root / name).resolve()
    if candidate.parent != root.resolve():
        raise ModelNotFoundError(f"unknown model {_printable(name)!r}")
    return candidate


def inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (symlinks resolved) lies inside ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _printable(name: str) -> str:
    # Echo at most a short, printable prefix of what the client sent.
    shown = "".join(ch if ch.isprintable() else "?" for ch in name[:64])
    return shown + ("…" if len(name) > 64 else "")
