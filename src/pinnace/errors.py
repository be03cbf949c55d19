"""The error tree of pinnace.

Every error we raise derives from :class:`PinnaceError` and carries a transport-neutral
:class:`ErrorKind`. The REST and gRPC layers each own exactly one table that maps a kind to
their status code, so the core never speaks HTTP or gRPC::

    PinnaceError
    ├── InvalidInputError          INVALID_ARGUMENT   bad request data, shapes, datatypes
    ├── PayloadTooLargeError       TOO_LARGE          body or tensor over a configured cap
    ├── ModelNotFoundError         NOT_FOUND          unknown model or version
    ├── ModelNotReadyError         UNAVAILABLE        known, but not loaded (with its reason)
    ├── ServerBusyError            UNAVAILABLE        queue full; carries retry_after
    ├── DeadlineExceededError      DEADLINE_EXCEEDED  the request's timeout passed
    ├── UnauthenticatedError       UNAUTHENTICATED    missing or wrong credentials
    ├── PermissionDeniedError      PERMISSION_DENIED  credentials lack the scope
    ├── RateLimitedError           RATE_LIMITED       quota exhausted; carries retry_after
    ├── UpstreamError              UPSTREAM           the gateway's upstream failed
    ├── ManifestError              INVALID_ARGUMENT   model.yaml is wrong (names key and file)
    ├── ModelLoadError             FAILED_PRECONDITION  a model failed to load (its files are wrong)
    │   └── TrustError             FAILED_PRECONDITION  code-executing artifact not trusted/hashed
    └── InternalError              INTERNAL           our own fault
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """What went wrong, independent of the transport that reports it."""

    INVALID_ARGUMENT = "invalid_argument"
    TOO_LARGE = "too_large"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    RATE_LIMITED = "rate_limited"
    UPSTREAM = "upstream"
    FAILED_PRECONDITION = "failed_precondition"
    INTERNAL = "internal"


class PinnaceError(Exception):
    """Root of every error pinnace raises on purpose.

    ``message`` is safe to show to a client: it never carries paths or tracebacks.
    ``retry_after`` (seconds), when set, becomes a ``Retry-After`` hint.
    """

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidInputError(PinnaceError):
    kind = ErrorKind.INVALID_ARGUMENT


class PayloadTooLargeError(PinnaceError):
    kind = ErrorKind.TOO_LARGE


class ModelNotFoundError(PinnaceError):
    kind = ErrorKind.NOT_FOUND


class ModelNotReadyError(PinnaceError):
    kind = ErrorKind.UNAVAILABLE


class ServerBusyError(PinnaceError):
    kind = ErrorKind.UNAVAILABLE


class DeadlineExceededError(PinnaceError):
    kind = ErrorKind.DEADLINE_EXCEEDED


class UnauthenticatedError(PinnaceError):
    kind = ErrorKind.UNAUTHENTICATED


class PermissionDeniedError(PinnaceError):
    kind = ErrorKind.PERMISSION_DENIED


class RateLimitedError(PinnaceError):
    kind = ErrorKind.RATE_LIMITED


class UpstreamError(PinnaceError):
    kind = ErrorKind.UPSTREAM


class ManifestError(PinnaceError):
    kind = ErrorKind.INVALID_ARGUMENT


class ModelLoadError(PinnaceError):
    kind = ErrorKind.FAILED_PRECONDITION


class TrustError(ModelLoadError):
    """A code-executing artifact was refused: not marked trusted, or its hash did not match."""


class InternalError(PinnaceError):
    kind = ErrorKind.INTERNAL
