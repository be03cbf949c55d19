"""API keys: who is calling, what they may do (scopes) and which models they may use.

Keys are stored as the hex sha256 of the key; a presented key is hashed and looked up, so the
config never holds a usable secret. Keys are random and long (``new_key``), which is why a
plain hash is enough here (a password would need a slow hash).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

from pinnace.errors import PermissionDeniedError, UnauthenticatedError
from pinnace.gateway.config import WILDCARD, GatewayConfig, Quota
from pinnace.gateway.quotas import QuotaState

ANONYMOUS: Final = "anonymous"


class Principal:
    """An authenticated caller (or the anonymous one when auth is not required)."""

    __slots__ = ("admin", "infer", "models", "name", "quota")

    def __init__(
        self,
        name: str,
        scopes: frozenset[str],
        models: frozenset[str] | None,
        quota: QuotaState | None,
    ) -> None:
        self.name = name
        self.infer = "infer" in scopes
        self.admin = "admin" in scopes
        self.models = models
        """Allowed model names; ``None``: any."""
        self.quota = quota

    def check_model(self, model: str) -> None:
        if not self.infer:
            raise PermissionDeniedError(f"key {self.name!r} lacks the 'infer' scope")
        if self.models is not None and model not in self.models:
            raise PermissionDeniedError(f"key {self.name!r} may not use model {model!r}")

    def check_infer(self) -> None:
        if not self.infer:
            raise PermissionDeniedError(f"key {self.name!r} lacks the 'infer' scope")

    def check_admin(self) -> None:
        if not self.admin:
            raise PermissionDeniedError("management requests need a key with the 'admin' scope")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random key and its sha256 (the value for ``keys[].sha256``)."""
    key = "pk_" + secrets.token_urlsafe(32)
    return key, hash_key(key)


class KeyRing:
    """Looks up presented keys; quota state carries over from ``previous`` when unchanged."""

    def __init__(self, config: GatewayConfig, previous: KeyRing | None = None) -> None:
        old = previous.quotas if previous is not None else {}
        self.quotas: dict[str, QuotaState] = {}
        self.required = config.auth_required
        self._by_hash: dict[str, Principal] = {}
        for k in config.keys:
            quota = self._quota(k.name, k.quota, old)
            models = None if WILDCARD in k.models else frozenset(k.models)
            self._by_hash[k.sha256] = Principal(k.name, frozenset(k.scopes), models, quota)
        anon_quota = self._quota(ANONYMOUS, config.auth.anonymous_quota, old)
        self.anonymous = Principal(ANONYMOUS, frozenset({"infer"}), None, anon_quota)

    def _quota(
        self, name: str, config: Quota | None, old: dict[str, QuotaState]
    ) -> QuotaState | None:
        if config is None:
            return None
        state = old.get(name)
        if state is None or state.config != config:
            state = QuotaState(config)
        self.quotas[name] = state
        return state

    def authenticate(self, authorization: bytes | None, api_key: bytes | None) -> Principal:
        """The caller behind ``Authorization: Bearer …`` or ``x-api-key``."""
        presented: bytes | None = api_key
        if authorization is not None:
            scheme, _, token = authorization.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                presented = token.strip()
        if presented is None:
            if self.required:
                raise UnauthenticatedError("an API key is required")
            return self.anonymous
        principal = self._by_hash.get(hashlib.sha256(presented).hexdigest())
        if principal is None:
            if self.required:
                raise UnauthenticatedError("unknown API key")
            return self.anonymous  # auth is optional: an unknown key is no key
        return principal
