"""A cancellation's next step as the store keeps it (``Entry.work``, due at ``Entry.due_at``):
everything a process needs to take the cancellation up where another left it, with no memory
of its own. The kinds:

- ``recover``: a cancellation being sent; due when its claim expires, so that it is settled if
  the process sending it dies (CONTRACT §10, "After a crash"). Answered, it leaves the queue.
- ``send``: an asynchronous cancellation (``Prefer: respond-async``) to send, or to send again.
- ``probe``: a pending cancellation whose state the status probe asks for.
- ``webhook``: a final envelope to deliver to the caller's webhook.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

from gateway.config import AsyncSettings
from gateway.inbound import RequestInfo
from gateway.tracing import Trace, new_span_id

Kind = Literal["recover", "send", "probe", "webhook"]


@dataclass(frozen=True, slots=True)
class Step:
    kind: Kind
    request: Any  # the caller's request as it was decoded
    request_id: str
    trace_id: str
    trace_flags: str
    trace_state: str | None
    expires_at: float  # created + the connection's async.max_age_s: then outcome_unknown
    key: str | None = None  # the Idempotency-Key, the request's fingerprint, the claim's token
    fingerprint: str | None = None
    token: str | None = None
    asynchronous: bool = False  # asked for with Prefer: respond-async
    pending: bool = False  # answered pending once: its final outcome goes to the webhook
    tries: int = 0  # sends and probes made in the background: the schedule's position
    answer: dict[str, Any] = field(default_factory=dict)  # the pending answer's values
    deliveries: int = 0  # webhook deliveries that failed

    def encode(self) -> bytes:
        # orjson writes a dataclass itself: about 1 µs, where asdict's deep copy costs 19.
        return orjson.dumps(self)

    @classmethod
    def decode(cls, raw: bytes) -> Step | None:
        """The step, or None when it cannot be read (written by another version: what this
        one does not know is left out, what it needs must be there)."""
        try:
            data = orjson.loads(raw)
            return cls(**{k: v for k, v in data.items() if k in _FIELDS})
        except (orjson.JSONDecodeError, TypeError, AttributeError):
            return None

    def then(self, kind: Kind, **changes: Any) -> Step:
        return replace(self, kind=kind, **changes)

    def info(self) -> RequestInfo:
        """The request's ids again, a new span of the same trace for this step."""
        trace = Trace(self.trace_id, new_span_id(), None, self.trace_flags, self.trace_state)
        return RequestInfo(self.request_id, trace, self.key, self.asynchronous)


_FIELDS = frozenset(Step.__dataclass_fields__)


def first_step(
    kind: Kind,
    request: Any,
    info: RequestInfo,
    expires_at: float,
    key: tuple[str, str] | None,
) -> Step:
    """The step a new cancellation starts with; ``key``: its fingerprint and claim token."""
    trace = info.trace
    return Step(
        kind,
        request,
        info.request_id,
        trace.trace_id,
        trace.flags,
        trace.state,
        expires_at,
        info.idempotency_key,
        key[0] if key else None,
        key[1] if key else None,
        asynchronous=info.asynchronous,
        pending=info.asynchronous,
    )


def delay_s(settings: AsyncSettings, tries: int, rand: float) -> float:
    """The wait before the next background send or probe: doubling from ``first_delay_s`` up
    to ``max_delay_s``, each wait drawn between half and all of it (``rand`` in [0, 1)), so
    that cancellations that failed together do not come back together."""
    ceiling = min(settings.max_delay_s, settings.first_delay_s * 2.0 ** min(tries, 60))
    return ceiling * (0.5 + rand / 2)


class DueWork:
    """Wakes this process's settler when a step this process queued falls due, so that it
    need not wait for its next poll of the store (steps other processes queue are found by
    that poll)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def at(self, due_at: float, now: float) -> None:
        """Wake the settler at ``due_at`` (unix seconds; ``now`` is the same clock's)."""
        if due_at <= now:
            self.event.set()
        else:
            asyncio.get_running_loop().call_later(due_at - now, self.event.set)
