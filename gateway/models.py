"""The API's own shapes: the canonical cancel request and the envelope every answer uses."""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
)

from gateway.errors import ErrorCode, Source, Status

# Control characters (C0, DEL, C1): refused in every line of text a request gives, and in
# credentials; free text (notes) may hold tab, line feed and carriage return.
# Written once in the \uXXXX syntax both Python's re and ECMA-262 (JSON Schema, the OpenAPI
# document) read.
_CONTROL = r"\u0000-\u001f\u007f-\u009f"
_CONTROL_BUT_WHITESPACE = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f"
CONTROL = re.compile(f"[{_CONTROL}]")
CONTROL_BUT_WHITESPACE = re.compile(f"[{_CONTROL_BUT_WHITESPACE}]")
NO_CONTROL_PATTERN = f"^[^{_CONTROL}]*$"
TEXT_PATTERN = f"^[^{_CONTROL_BUT_WHITESPACE}]*$"
MAX_IDEMPOTENCY_KEY = 255  # characters of an Idempotency-Key
MAX_BATCH = 100  # items of one batch
MAX_BATCH_KEY = MAX_IDEMPOTENCY_KEY - 5  # a batch's key: item i uses key#i, "#99" included
CANCELLATION_ID = re.compile(r"cxl_[0-9a-z]{26}")  # what new_cancellation_id makes
# JSON numbers past a double's range are refused with the body (no Infinity).
_LARGEST_DOUBLE = sys.float_info.max


def _no_control(value: str) -> str:
    if CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _text(value: str) -> str:
    if CONTROL_BUT_WHITESPACE.search(value):
        raise ValueError(
            "must not contain control characters other than tab, line feed and carriage return"
        )
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


Line = Annotated[
    str, AfterValidator(_no_control), Field(json_schema_extra={"pattern": NO_CONTROL_PATTERN})
]
ParamValue = Annotated[
    str | bool | int | float,
    PlainValidator(_param_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": NO_CONTROL_PATTERN},
                {"type": "number", "minimum": -_LARGEST_DOUBLE, "maximum": _LARGEST_DOUBLE},
                {"type": "boolean"},
            ]
        }
    ),
]


def _keys_in_property_names(schema: dict[str, Any]) -> None:
    """pydantic documents a key pattern as ``patternProperties``, which leaves every key that
    does not match unchecked: the pattern belongs with the keys' other rules."""
    ((pattern, values),) = schema.pop("patternProperties").items()
    schema["propertyNames"]["pattern"] = pattern
    schema["additionalProperties"] = values


MAX_ITEMS = 500  # lines of one request


def _whole(value: object) -> object:
    """A JSON number that is whole (``2.0``) is an integer, as JSON Schema counts them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


class LineItem(BaseModel):
    """One line of the object to cancel."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: Annotated[
        str,
        Field(min_length=1, max_length=128),
        AfterValidator(_identifier),
        Field(json_schema_extra={"pattern": NO_CONTROL_PATTERN, "not": {"enum": [".", ".."]}}),
    ] = Field(description="The provider's identifier of the line.")
    quantity: Annotated[int, Field(ge=1, le=1_000_000_000), BeforeValidator(_whole)] | None = Field(
        default=None, description="How many of the line's units to cancel; all when absent."
    )


class CancelRequest(BaseModel):
    """``POST /v1/cancellations``: what the caller wants cancelled, in the gateway's words."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    connection: Annotated[Line, Field(min_length=1, max_length=200)] = Field(
        description="A configured connection's name."
    )
    resource: Annotated[Line, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="What kind of object: needed when the provider cancels several."
    )
    id: Annotated[
        str,
        Field(min_length=1, max_length=128),
        AfterValidator(_identifier),
        Field(json_schema_extra={"pattern": NO_CONTROL_PATTERN, "not": {"enum": [".", ".."]}}),
    ] = Field(description="The provider's identifier of the object; not '.' or '..'.")
    reason: Annotated[Line, Field(max_length=500)] | None = Field(
        default=None, description="Why it is cancelled."
    )
    requested_by: Annotated[Line, Field(max_length=200)] | None = Field(
        default=None, description="The user or system asking."
    )
    notify: bool | None = Field(
        default=None, description="Whether the provider should notify its counterpart."
    )
    notes: (
        Annotated[
            str,
            Field(max_length=2000),
            AfterValidator(_text),
            Field(json_schema_extra={"pattern": TEXT_PATTERN}),
        ]
        | None
    ) = Field(
        default=None,
        description="Free text; tab, line feed and carriage return are the only control "
        "characters it may hold.",
    )
    params: dict[Annotated[Line, Field(min_length=1, max_length=64)], ParamValue] = Field(
        default_factory=dict,
        description="Values the connection's provider takes per request (GET /v1/connections "
        "lists them): strings, numbers or booleans.",
        json_schema_extra=_keys_in_property_names,
    )
    items: Annotated[list[LineItem] | None, Field(min_length=1, max_length=MAX_ITEMS)] = Field(
        default=None,
        description="Cancel only these lines of the object; their ids must be unique. A "
        "provider that cannot cancel single lines refuses a request with items, and one that "
        "can checks the ids and its own limits (invalid_request).",
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


class LineError(BaseModel):
    code: ErrorCode
    provider_code: str | None = None
    message: str


class LineOutcome(BaseModel):
    """One line's own outcome, in an envelope's ``items``."""

    id: str
    status: Status
    error: LineError | None = None


class UpstreamInfo(BaseModel):
    method: str
    url: str
    status: int | None = None
    attempts: int
    latency_ms: float
    probes: int = 0  # status probes sent to settle an unknown outcome


class Envelope(BaseModel):
    """The one shape of every answer of the API, success or error."""

    cancellation_id: str | None = None
    status: Status
    connection: str | None = None
    provider: str | None = None
    resource: str | None = None
    resource_id: str | None = None
    cancelled_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None
    provider_response: dict[str, object] | None = None
    error: ErrorBody | None = None
    upstream: UpstreamInfo | None = None
    request_id: str | None = None
    trace_id: str | None = None
    items: list[LineOutcome] | None = None  # each line's outcome, for a request with items


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
        max_length=MAX_BATCH,
        description="Each a CancelRequest, checked one by one: an invalid item is answered "
        "with its own invalid_request envelope and does not stop the others.",
    )


class BatchResponse(BaseModel):
    items: list[Envelope]  # in the order of the request
    counts: dict[Status, int]
    request_id: str
    trace_id: str


class CancellationList(BaseModel):
    """``GET /v1/cancellations``: one page of answered cancellations (final or pending),
    newest first."""

    items: list[Envelope]
    next_cursor: str | None = Field(
        description="Give it as `cursor` for the next page; null on the last page."
    )


class Event(BaseModel):
    """One thing that happened to a cancellation; each type has its own fields besides these
    (received, once the request was found valid: request, the body as sent, the values of
    sensitive keys masked by name, and idempotency_key when one was given; an attempt: method, url,
    status, error_code, latency_ms; a probe: result; scheduled:
    step, due (unix seconds); settled: status, error_code; webhook: status, error,
    latency_ms; with lines, the line's index)."""

    model_config = ConfigDict(extra="allow")

    at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    type: Literal["received", "attempt", "probe", "scheduled", "settled", "webhook"]


class CancellationEvents(BaseModel):
    """``GET /v1/cancellations/{id}/events``: what happened to it, in order."""

    cancellation_id: str
    events: list[Event]


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


class MinuteOutcomes(BaseModel):
    start: str = Field(description="RFC 3339: the minute's first second, UTC")
    outcomes: dict[str, int] = Field(description="cancellations answered, by status")


class Latency(BaseModel):
    p50_ms: float | None = Field(description="upstream attempts' latency; null without one")
    p95_ms: float | None


class ConnectionHealthInfo(BaseModel):
    connection: str
    provider: str
    breaker: Literal["closed", "half_open", "open"]
    in_flight: int = Field(description="cancellations this process works on now")
    outcomes: dict[str, int] = Field(description="the window's cancellations, by status")
    minutes: list[MinuteOutcomes] = Field(description="every minute of the window, oldest first")
    latency: Latency
    rate_limited: int = Field(
        description="attempts the connection's own rate limit refused in the window"
    )
    unmapped_errors: int = Field(
        description="provider answers no rule of the definition reads (a rule to add)"
    )


class ConnectionsHealth(BaseModel):
    """``GET /v1/connections/health``: each connection this caller may use (every one for an
    admin), as this process saw it over the last ``window_s`` seconds."""

    window_s: int
    generated_at: str
    connections: list[ConnectionHealthInfo]


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


def cancellation_id_at(unix_ms: int) -> str:
    """The smallest id a cancellation made at that millisecond can have (its random bits
    zero): ids sort by time, so this bounds the ids of a time range."""
    value = max(unix_ms, 0) << 80
    return "cxl_" + "".join([_PAIRS[value >> shift & 0x3FF] for shift in range(120, -1, -10)])


def new_cancellation_id() -> str:
    """``cxl_`` and 26 Crockford base32 characters: 48 bits of milliseconds, then 80 random
    bits, so ids sort by creation time (the ULID layout)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    # 26 characters of 5 bits hold 130 bits: the value's 128, two zero bits first; encoded
    # ten bits (two characters) at a time, from the top.
    return "cxl_" + "".join([_PAIRS[value >> shift & 0x3FF] for shift in range(120, -1, -10)])
