"""What is known about one cancellation as it goes (``Facts``), and the envelope made of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from gateway.envelope import decision_error, provider_error
from gateway.errors import GatewayError, Status
from gateway.inbound import RequestInfo
from gateway.lines import line_outcomes
from gateway.models import Envelope, ErrorBody, LineItem, UpstreamInfo
from gateway.redact import AnswerRedactor
from gateway.store import Entry, KeyClaim
from gateway.translate.classify import Outcome, format_time
from gateway.work import Step


@dataclass(slots=True)
class Facts:
    """What is known so far; each step adds to it, and the envelope is made from it."""

    cancellation_id: str
    caller: str
    created_at: float  # unix seconds
    connection: str | None = None
    provider: str | None = None
    resource: str | None = None
    resource_id: str | None = None
    upstream: UpstreamInfo | None = None
    claim: KeyClaim | None = None
    callers_text: tuple[str, ...] = ()  # the caller's own strings: see Redactor.answer
    token: str = ""
    running: bool = False  # recorded as running in the store: complete() must follow
    items: Sequence[LineItem] | None = None  # the lines asked for, and each one's outcome
    lines: Sequence[Outcome | GatewayError] = ()
    events: list[dict[str, Any]] = field(default_factory=list)
    step: Step | None = None  # what any process needs to go on with it (work.py)
    # When the answer is due: the budget's end (the services' monotonic clock), None unknown.
    deadline: float | None = None
    in_flight: str | None = None  # the connection it is counted in flight on (health.py)

    def entry(self, status: str, **more: Any) -> Entry:
        return Entry(
            self.cancellation_id,
            self.caller,
            self.connection,
            self.provider,
            self.resource,
            self.resource_id,
            status,
            self.created_at,
            **more,
            events=orjson.dumps(self.events),
        )

    def record(self, event: dict[str, Any]) -> None:
        """What happened, in order (CONTRACT §10, ``GET /v1/cancellations/{id}/events``)."""
        self.events.append(event)

    def envelope(
        self,
        result: Outcome | GatewayError,
        answer: AnswerRedactor,
        now: datetime,
        info: RequestInfo,
    ) -> Envelope:
        """The envelope of ``result``: the provider's text redacted by ``answer``; every line
        named, those never sent sharing the cancellation's end."""
        cancelled_at = provider_response = items = None
        if self.items is not None:
            lines = self.lines or [result] * len(self.items)
            items = line_outcomes(self.items, lines, answer)
        error: ErrorBody | None
        if isinstance(result, GatewayError):
            error = decision_error(result)
        else:
            error = provider_error(result, answer)
            if result.status in (Status.CANCELLED, Status.ALREADY_CANCELLED, Status.PENDING):
                provider_response = answer.clean(result.provider_response)
                # The gateway's time stands in for the provider's only for a cancellation it
                # saw happen: when an already cancelled object was cancelled is unknown.
                cancelled_at = result.cancelled_at
                if cancelled_at is None and result.status is Status.CANCELLED:
                    cancelled_at = format_time(now)
        return Envelope(
            cancellation_id=self.cancellation_id,
            status=result.status,
            connection=self.connection,
            provider=self.provider,
            resource=self.resource,
            resource_id=self.resource_id,
            cancelled_at=cancelled_at,
            provider_response=provider_response,
            error=error,
            upstream=self.upstream,
            request_id=info.request_id,
            trace_id=info.trace.trace_id,
            items=items,
        )
