"""The model repository: scanning REPO, version policy, trust gate, load/unload/reload."""

from pinnace.repository.repository import ModelRepository
from pinnace.repository.state import ModelState
from pinnace.repository.version import ServedVersion

__all__ = ["ModelRepository", "ModelState", "ServedVersion"]
