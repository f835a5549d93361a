"""What the HTTP layer reads from a request before the core sees it: its ids, its trace and
its Idempotency-Key (``RequestInfo``), and its body as strict JSON."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import ErrorCode, GatewayError
from gateway.models import MAX_IDEMPOTENCY_KEY
from gateway.tracing import Trace

_IDEMPOTENCY_KEY = re.compile(rf"^[\x20-\x7e]{{1,{MAX_IDEMPOTENCY_KEY}}}$")


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the HTTP layer learned about the request before the cancellation starts."""

    request_id: str
    trace: Trace
    idempotency_key: str | None = None
    asynchronous: bool = False  # Prefer: respond-async (CONTRACT §10)
    # When the request arrived (the services' monotonic clock): the budget counts from here,
    # time queued in the process included (CONTRACT §11). None: from when it is sent.
    arrived: float | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    """A request body that is already JSON (an item of a batch)."""

    value: Any


def json_body(body: bytes) -> Any:
    """A request body as JSON, strictly (no NaN/Infinity), or ``invalid_request``."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"the body is not valid JSON: {exc}",
            fields=[("body", "not valid JSON")],
        ) from None


def check_idempotency_key(value: str | None) -> str | None:
    if value is not None and not _IDEMPOTENCY_KEY.fullmatch(value):
        rule = f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"Idempotency-Key {rule}",
            fields=[("headers.Idempotency-Key", rule)],
        )
    return value
