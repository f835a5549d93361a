"""Request ids and W3C Trace Context (``traceparent``): continue the caller's trace or start one."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
REQUEST_ID = re.compile(r"^[!-~]{1,200}$")  # printable ASCII, no space (also the API's)
# W3C tracestate: at most 32 comma-separated members of printable ASCII; 512 characters is
# the length the recommendation asks every vendor to pass on at least.
_TRACESTATE = re.compile(r"^[\x20-\x7e]{1,512}$")


@dataclass(frozen=True, slots=True)
class Trace:
    trace_id: str
    span_id: str  # this gateway's span
    parent_id: str | None  # the caller's span, when it sent a valid traceparent
    flags: str
    state: str | None = None  # the caller's tracestate, passed on with the trace

    def child_traceparent(self) -> str:
        """A ``traceparent`` for an upstream call: same trace, a new span of its own."""
        return f"00-{self.trace_id}-{new_span_id()}-{self.flags}"


def new_span_id() -> str:
    return os.urandom(8).hex()


def trace_from(header: str | None, tracestate: str | None = None) -> Trace:
    """Continue a valid ``traceparent`` and its ``tracestate``; start a new trace when it is
    absent or invalid (a ``tracestate`` without its trace means nothing, and is dropped)."""
    match = _TRACEPARENT.fullmatch((header or "").strip())
    if match:
        version, trace_id, parent_id, flags, rest = match.groups()
        valid = (
            version != "ff"
            and (version != "00" or rest is None)
            and trace_id != "0" * 32
            and parent_id != "0" * 16
        )
        if valid:
            state = (tracestate or "").strip()
            kept = state if _TRACESTATE.fullmatch(state) and state.count(",") < 32 else None
            return Trace(trace_id, new_span_id(), parent_id, flags, kept)
    return Trace(os.urandom(16).hex(), new_span_id(), None, "01")


def request_id_from(header: str | None) -> str:
    """The caller's ``X-Request-ID`` when it is printable ASCII of sane length, else a new one."""
    if header and REQUEST_ID.fullmatch(header):
        return header
    return os.urandom(16).hex()
