"""The API's own shapes: the canonical cancel request and the envelope every answer uses."""

from __future__ import annotations

import os
import re
import time
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
)

from gateway.errors import ErrorCode, Source, Status

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _text(value: str) -> str:
    if _CONTROL_BUT_WHITESPACE.search(value):
        raise ValueError("must not contain control characters other than tab and newline")
    return value


def _identifier(value: str) -> str:
    _no_control(value)
    if value in (".", ".."):
        raise ValueError("'.' and '..' are not identifiers")
    return value


def _param_value(value: object) -> str | bool | int | float:
    if isinstance(value, str):
        return _no_control(value)
    if isinstance(value, bool | int | float):
        return value
    raise ValueError("must be a string, a number or a boolean")


Line = Annotated[str, AfterValidator(_no_control)]
ParamValue = Annotated[str | bool | int | float, PlainValidator(_param_value)]


class CancelRequest(BaseModel):
    """``POST /v1/cancellations``: what the caller wants cancelled, in the gateway's words."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    connection: Annotated[Line, Field(min_length=1, max_length=200)]
    resource: Annotated[Line, Field(min_length=1, max_length=64)] | None = None
    id: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_identifier)]
    reason: Annotated[Line, Field(max_length=500)] | None = None
    requested_by: Annotated[Line, Field(max_length=200)] | None = None
    notify: bool | None = None
    notes: Annotated[str, Field(max_length=2000), AfterValidator(_text)] | None = None
    params: dict[Annotated[Line, Field(min_length=1, max_length=64)], ParamValue] = Field(
        default_factory=dict
    )


class FieldProblem(BaseModel):
    loc: str
    message: str


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str
    source: Source
    provider_code: str | None = None
    provider_status: int | None = None
    retryable: bool
    retry_after_s: float | None = None
    fields: list[FieldProblem] = Field(default_factory=list)


class UpstreamInfo(BaseModel):
    method: str
    url: str
    status: int | None = None
    attempts: int
    latency_ms: float


class Envelope(BaseModel):
    """The one shape of every answer of the API, success or error."""

    cancellation_id: str | None = None
    status: Status
    connection: str | None = None
    provider: str | None = None
    resource: str | None = None
    resource_id: str | None = None
    cancelled_at: str | None = None
    provider_response: dict[str, object] | None = None
    error: ErrorBody | None = None
    upstream: UpstreamInfo | None = None
    request_id: str | None = None
    trace_id: str | None = None


class PreviewRequest(BaseModel):
    method: str
    url: str
    headers: dict[str, str]  # credentials masked
    body: object | None = None


class Preview(BaseModel):
    """``POST /v1/cancellations?dry_run=true``: what would be sent, after every check the real
    cancellation makes; nothing is sent and nothing is recorded."""

    dry_run: bool = True
    connection: str
    provider: str
    resource: str
    resource_id: str
    upstream_request: PreviewRequest
    request_id: str
    trace_id: str


class BatchRequest(BaseModel):
    """``POST /v1/cancellations/batch``. Each item is checked as a cancellation of its own: an
    item that is not valid gets its own ``invalid_request`` envelope, the others go on."""

    model_config = ConfigDict(extra="forbid")

    items: list[object] = Field(
        min_length=1,
        max_length=100,
        description="Each a CancelRequest, checked one by one: an invalid item is answered "
        "with its own invalid_request envelope and does not stop the others.",
    )


class BatchResponse(BaseModel):
    items: list[Envelope]  # in the order of the request
    counts: dict[Status, int]
    request_id: str
    trace_id: str


class ParamInfo(BaseModel):
    type: str
    required: bool
    per_request: bool
    description: str | None = None


class ConnectionInfo(BaseModel):
    name: str
    provider: str
    resources: list[str]
    params: dict[str, ParamInfo]


class Connections(BaseModel):
    """``GET /v1/connections``: what this caller may use; never a secret."""

    connections: list[ConnectionInfo]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str  # ready | unavailable
    config_version: str
    store: str


class Reloaded(BaseModel):
    status: str
    config_version: str
    previous_version: str


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = tuple(high + low for high in _CROCKFORD for low in _CROCKFORD)  # 10 bits -> 2 chars


def new_cancellation_id() -> str:
    """``cxl_`` and 26 Crockford base32 characters: 48 bits of milliseconds, then 80 random
    bits, so ids sort by creation time (the ULID layout)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    # 26 characters of 5 bits hold 130 bits: the value's 128, two zero bits first; encoded
    # ten bits (two characters) at a time, from the top.
    return "cxl_" + "".join([_PAIRS[value >> shift & 0x3FF] for shift in range(120, -1, -10)])
