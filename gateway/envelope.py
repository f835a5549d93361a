"""Answers: the envelope of the contract (§5) as bytes, with its headers.

Providers may echo what they were sent, credentials included, in their messages: every string
of an envelope passes the same redaction as the logs before it leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydantic_core import PydanticSerializationError

from gateway.errors import ErrorCode, GatewayError, Source, spec
from gateway.models import Envelope, ErrorBody, FieldProblem
from gateway.redact import Redactor
from gateway.translate.classify import Outcome


@dataclass(slots=True)
class Reply:
    http_status: int
    body: bytes  # the envelope, serialised with every secret removed
    headers: dict[str, str] = field(default_factory=dict)


def render_envelope(envelope: Envelope, redactor: Redactor) -> bytes:
    """The envelope as JSON without a secret. Only ``provider_response`` can hold a key whose
    value is masked; when it holds none, pydantic serializes the envelope in one call and the
    bytes are searched for the secrets. Otherwise, or when one is found, it is cleaned first."""
    if redactor.plain(envelope.provider_response):
        try:
            data = envelope.model_dump_json().encode()
        except PydanticSerializationError:
            data = b""
        if data and not redactor.found_in(data):
            return data
    return redactor.dumps(envelope.model_dump(mode="json"))


def gateway_outcome(exc: GatewayError) -> Outcome:
    return Outcome(
        spec(exc.code).status,
        exc.code,
        exc.message,
        retry_after_s=exc.retry_after_s,
        source=Source.GATEWAY,
        fields=tuple(exc.fields),
    )


def gateway_envelope(exc: GatewayError, request_id: str, trace_id: str) -> Envelope:
    """The envelope of a decision taken before any cancellation began (auth, routing, HTTP)."""
    return Envelope(
        status=spec(exc.code).status,
        error=error_body(
            exc.code,
            exc.message,
            Source.GATEWAY,
            retry_after_s=exc.retry_after_s,
            fields=exc.fields,
        ),
        request_id=request_id,
        trace_id=trace_id,
    )


def error_body(
    code: ErrorCode,
    message: str,
    source: Source,
    *,
    provider_code: str | None = None,
    provider_status: int | None = None,
    retry_after_s: float | None = None,
    fields: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
) -> ErrorBody:
    return ErrorBody(
        code=code,
        message=message,
        source=source,
        provider_code=provider_code,
        provider_status=provider_status,
        retryable=spec(code).retryable,
        retry_after_s=retry_after_s,
        fields=[FieldProblem(loc=loc, message=text) for loc, text in fields],
    )


def reply_headers(request_id: str, retry_after_s: float | None) -> dict[str, str]:
    headers = {"X-Request-ID": request_id}
    if retry_after_s is not None:
        headers["Retry-After"] = str(math.ceil(retry_after_s))
    return headers
