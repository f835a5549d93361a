"""The gateway's error vocabulary: every code of the contract, in one table.

Each code fixes the envelope's ``status``, the HTTP status and whether the caller may usefully
retry. The tree, by envelope status::

    rejected  (a definite no: do not repeat the same request)
    ├── invalid_request        422   the request is invalid (gateway) or the provider says so
    ├── unauthorized           401   missing or wrong caller key
    ├── forbidden              403   the caller may not use that connection
    ├── unknown_connection     404
    ├── not_found              404   the provider has no such object
    ├── not_cancellable        409   the object's state forbids it (received, allocated, ...)
    ├── provider_rejected      422   any other 4xx the provider definition does not classify
    ├── idempotency_conflict   422   same Idempotency-Key, different request
    ├── payload_too_large      413
    ├── unknown_endpoint       404
    └── method_not_allowed     405
    failed    (transient or unknown outcome: retrying with the same Idempotency-Key is safe)
    ├── provider_auth_failed   502   the provider refused the gateway's credentials
    ├── provider_misconfigured 502   the provider account is not set up for cancelling
    ├── provider_error         502   provider 5xx, connection refused or reset
    ├── provider_bad_response  502   unparseable or unexpected answer, redirect, oversized body
    ├── provider_unavailable   503   circuit open or local limits full
    ├── provider_timeout       504   no answer within the budget (it may have happened)
    ├── rate_limited           429
    ├── idempotency_in_progress 409
    ├── store_unavailable      503
    └── internal_error         500   a bug, logged with the request id

``retryable`` says whether repeating the request later, unchanged, can succeed without anybody
changing configuration: a provider that refuses our credentials will refuse them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    CANCELLED = "cancelled"
    ALREADY_CANCELLED = "already_cancelled"
    REJECTED = "rejected"
    FAILED = "failed"
    # Not settled yet (HTTP 202): the provider finishes it later, or the gateway is still
    # working on it; it always ends in one of the four words above (CONTRACT §10).
    PENDING = "pending"


class Source(StrEnum):
    GATEWAY = "gateway"
    PROVIDER = "provider"


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    UNKNOWN_CONNECTION = "unknown_connection"
    NOT_FOUND = "not_found"
    NOT_CANCELLABLE = "not_cancellable"
    PROVIDER_REJECTED = "provider_rejected"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_ENDPOINT = "unknown_endpoint"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PROVIDER_AUTH_FAILED = "provider_auth_failed"
    PROVIDER_MISCONFIGURED = "provider_misconfigured"
    PROVIDER_ERROR = "provider_error"
    PROVIDER_BAD_RESPONSE = "provider_bad_response"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_TIMEOUT = "provider_timeout"
    RATE_LIMITED = "rate_limited"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    STORE_UNAVAILABLE = "store_unavailable"
    INTERNAL_ERROR = "internal_error"
    OUTCOME_UNKNOWN = "outcome_unknown"
    OVERLOADED = "overloaded"


@dataclass(frozen=True, slots=True)
class CodeSpec:
    status: Status
    http_status: int
    retryable: bool


_R, _F = Status.REJECTED, Status.FAILED

SPECS: dict[ErrorCode, CodeSpec] = {
    ErrorCode.INVALID_REQUEST: CodeSpec(_R, 422, False),
    ErrorCode.UNAUTHORIZED: CodeSpec(_R, 401, False),
    ErrorCode.FORBIDDEN: CodeSpec(_R, 403, False),
    ErrorCode.UNKNOWN_CONNECTION: CodeSpec(_R, 404, False),
    ErrorCode.NOT_FOUND: CodeSpec(_R, 404, False),
    ErrorCode.NOT_CANCELLABLE: CodeSpec(_R, 409, False),
    ErrorCode.PROVIDER_REJECTED: CodeSpec(_R, 422, False),
    ErrorCode.IDEMPOTENCY_CONFLICT: CodeSpec(_R, 422, False),
    ErrorCode.PAYLOAD_TOO_LARGE: CodeSpec(_R, 413, False),
    ErrorCode.UNKNOWN_ENDPOINT: CodeSpec(_R, 404, False),
    ErrorCode.METHOD_NOT_ALLOWED: CodeSpec(_R, 405, False),
    ErrorCode.PROVIDER_AUTH_FAILED: CodeSpec(_F, 502, False),
    ErrorCode.PROVIDER_MISCONFIGURED: CodeSpec(_F, 502, False),
    ErrorCode.PROVIDER_ERROR: CodeSpec(_F, 502, True),
    ErrorCode.PROVIDER_BAD_RESPONSE: CodeSpec(_F, 502, True),
    ErrorCode.PROVIDER_UNAVAILABLE: CodeSpec(_F, 503, True),
    ErrorCode.PROVIDER_TIMEOUT: CodeSpec(_F, 504, True),
    ErrorCode.RATE_LIMITED: CodeSpec(_F, 429, True),
    ErrorCode.IDEMPOTENCY_IN_PROGRESS: CodeSpec(_F, 409, True),
    ErrorCode.STORE_UNAVAILABLE: CodeSpec(_F, 503, True),
    ErrorCode.INTERNAL_ERROR: CodeSpec(_F, 500, False),
    ErrorCode.OUTCOME_UNKNOWN: CodeSpec(_F, 504, True),
    ErrorCode.OVERLOADED: CodeSpec(_F, 503, True),
}


def spec(code: ErrorCode) -> CodeSpec:
    return SPECS[code]


class GatewayError(Exception):
    """A decision the gateway takes alone, carried to the envelope by the error middleware."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        fields: list[tuple[str, str]] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or []
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> Status:
        return SPECS[self.code].status


def invalid_request(*problems: tuple[str, str]) -> GatewayError:
    """``invalid_request`` for what the caller can fix: every problem as ``(loc, message)``,
    in ``fields`` and summed up in the message."""
    summary = "; ".join(f"{loc}: {message}" for loc, message in problems)
    return GatewayError(
        ErrorCode.INVALID_REQUEST, f"invalid request: {summary}", fields=list(problems)
    )
