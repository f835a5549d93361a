"""The canonical request: parsed from a decoded body with every problem at once, its
idempotency fingerprint, the caller's own text (for redaction without an oracle), the
idempotency key a provider is sent, and ``Prepared``: the request once routed and built."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.errors import invalid_request
from gateway.inbound import RequestInfo
from gateway.models import MAX_ITEMS, CancelRequest
from gateway.outbound import Outbound
from gateway.resilience import Policy
from gateway.targets import Target
from gateway.translate.build import LineAttempts, Reader
from gateway.translate.templates import scalar_text
from gateway.translate.wire import UpstreamRequest


@dataclass(frozen=True, slots=True)
class Prepared:
    """A valid, routed request and exactly what would be sent for it."""

    request: CancelRequest
    target: Target
    resource: str
    upstream: UpstreamRequest  # what the first attempt sends
    rebuild: Callable[[], UpstreamRequest] | None = None  # each later one, made anew
    # One request per line (a resource of ``items: {mode: each}``): each line's attempts.
    lines: Sequence[LineAttempts] | None = None
    reader: Reader | None = None  # the read before each attempt, for a resource that makes one

    def outbound(self, policy: Policy) -> Outbound:
        """On its way out, under the connection's ``policy``."""
        return Outbound(
            self.target, self.resource, policy, self.upstream, self.rebuild, self.reader
        )


def parse_request(data: Any) -> tuple[CancelRequest, list[tuple[str, str]]]:
    """The canonical request, strictly: a JSON object, no unknown fields. With problems, the
    request holds the fields that are valid (the others are None or empty), so that the
    provider's own checks can still run on those."""
    if not isinstance(data, dict):
        raise invalid_request(("body", "must be a JSON object"))
    try:
        return CancelRequest.model_validate(data), []
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
    problems = [(".".join(str(p) for p in e["loc"]) or "body", _message(e)) for e in errors]
    bad = {str(e["loc"][0]) for e in errors if e["loc"]}
    valid = {k: v for k, v in data.items() if k in CancelRequest.model_fields and k not in bad}
    partial = CancelRequest.model_construct(**{"connection": None, "id": None, **valid})
    return partial, problems


_LENGTHS = {
    "too_long": "at most {max_length}",
    "string_too_long": "at most {max_length}",
    "too_short": "at least {min_length}",
    "string_too_short": "at least {min_length}",
}


def _message(error: ErrorDetails) -> str:
    """Pydantic's message, said as the request's fields are: lengths in characters (every
    field of the request with a length is text; pydantic says "items" after a validator)."""
    length = _LENGTHS.get(error["type"])
    if error["loc"] == ("items",) and error["type"] in ("too_short", "too_long"):
        return f"must be a list of 1 to {MAX_ITEMS} lines"
    if length is not None and "ctx" in error:
        return f"must be {length.format(**error['ctx'])} characters"
    return error["msg"].removeprefix("Value error, ")


def fingerprint(data: Any) -> str:
    """The idempotency fingerprint of a valid request: SHA-256 of its canonical JSON (keys
    sorted), so the same request written in another order is the same request."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def callers_text(request: CancelRequest, info: RequestInfo) -> tuple[str, ...]:
    """Every string of the request that the caller chose: a provider may echo any of them, and
    its echo is masked like a secret (``Redactor.answer``), so that an answer never depends on
    whether one equals a secret."""
    fields = (request.connection, request.id, request.resource, request.reason)
    texts = [t for t in (*fields, request.requested_by, request.notes) if t]
    texts.extend(scalar_text(v) for v in request.params.values())
    texts.extend(item.id for item in request.items or ())
    trace = info.trace  # forwarded upstream: the caller's trace id, span and state
    texts.extend(t for t in (info.request_id, trace.trace_id, trace.parent_id, trace.state) if t)
    if info.idempotency_key is not None:
        texts.append(info.idempotency_key)
    return tuple(texts)


def upstream_idempotency_key(caller: str, info: RequestInfo, cancellation_id: str) -> str:
    """The key sent to providers that honour one: stable across attempts and, when the caller
    gave a key, across the caller's retries too. Derived, so one caller's key never collides
    with another's at the provider."""
    if info.idempotency_key is None:
        return cancellation_id
    digest = hashlib.sha256(f"{caller}\n{info.idempotency_key}".encode()).hexdigest()
    return f"cg-{digest[:40]}"
