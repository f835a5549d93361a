"""Answers: the envelope of the contract (§5) as bytes, with its headers.

Providers may echo what they were sent, credentials included: what came from the provider (its
message and code, redacted then cut to their length; the values of ``provider_response``,
redacted) goes into an envelope through ``provider_error`` and ``AnswerRedactor``. The
gateway's own fields (ids, status, codes, timestamps, the URL it built) are never rewritten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import orjson
from pydantic_core import PydanticSerializationError

from gateway.errors import ErrorCode, GatewayError, Source, spec
from gateway.models import Envelope, ErrorBody, FieldProblem
from gateway.redact import AnswerRedactor, cut
from gateway.translate.classify import MAX_PROVIDER_MESSAGE, Outcome


@dataclass(slots=True)
class Reply:
    http_status: int
    body: bytes  # the envelope, serialised with every secret removed
    headers: dict[str, str] = field(default_factory=dict)
    status: str = ""  # the envelope's status, known without reading ``body`` again


_SERIALIZER = Envelope.__pydantic_serializer__


def render_envelope(envelope: Envelope) -> bytes:
    """The envelope as JSON, in one call of pydantic's serializer. Its provider text was
    redacted when it was made (``provider_error``, ``AnswerRedactor.clean``)."""
    try:
        # The serializer's own bytes: model_dump_json() would decode them to text first.
        return _SERIALIZER.to_json(envelope)
    except PydanticSerializationError:  # a value JSON cannot hold: written as its text
        return orjson.dumps(envelope.model_dump(mode="json"), default=str)


def provider_error(outcome: Outcome, answer: AnswerRedactor) -> ErrorBody | None:
    """The envelope's ``error`` for an outcome: the gateway's message, then the provider's
    text and code, each redacted before it is cut, so a cut never leaves part of a secret."""
    if outcome.code is None:
        return None
    message = outcome.message
    if outcome.detail:
        message = f"{message}: {cut(answer.text(outcome.detail), MAX_PROVIDER_MESSAGE)}"
    if outcome.note:
        message = f"{message} ({outcome.note})"
    code = outcome.provider_code
    return error_body(
        outcome.code,
        message,
        Source.PROVIDER,
        provider_code=None if code is None else cut(answer.text(code), MAX_PROVIDER_MESSAGE),
        provider_status=outcome.provider_status,
        retry_after_s=outcome.retry_after_s,
    )


def decision_error(exc: GatewayError) -> ErrorBody:
    """The envelope's ``error`` for a decision the gateway took alone."""
    return error_body(
        exc.code,
        exc.message,
        Source.GATEWAY,
        retry_after_s=exc.retry_after_s,
        fields=exc.fields,
    )


def gateway_envelope(exc: GatewayError, request_id: str, trace_id: str) -> Envelope:
    """The envelope of a decision taken before any cancellation began (auth, routing, HTTP)."""
    return Envelope(
        status=exc.status, error=decision_error(exc), request_id=request_id, trace_id=trace_id
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
