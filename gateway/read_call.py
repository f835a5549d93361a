"""An attempt of a resource that reads before it cancels: the read, then the cancel made of
the values its answer gave (``read:`` in a definition, ``read_spec.py``)."""

from __future__ import annotations

from dataclasses import replace

from structlog.typing import FilteringBoundLogger

from gateway.errors import ErrorCode, GatewayError, Status
from gateway.outbound import Outbound, Tried
from gateway.probing import Exchange
from gateway.translate.build import Reader
from gateway.translate.classify import Outcome


async def read_then_cancel(
    exchange: Exchange,
    outbound: Outbound,
    reader: Reader,
    deadline: float,
    attempt: int,
    log: FilteringBoundLogger,
) -> Tried:
    """The read, then the cancel made of its values. An answer to the read other than the
    values ends the attempt (nothing else is sent); so does a value the cancel cannot carry
    (the provider's answer is at fault, not the caller's request)."""
    title = outbound.title
    try:
        read_request = reader.read()
    except GatewayError as exc:
        outcome = Outcome(Status.FAILED, ErrorCode.PROVIDER_MISCONFIGURED, exc.message)
        return Tried(outcome, final=True)
    reading = replace(outbound, reader=None, reading=True)
    read = await exchange(reading, deadline, attempt, log, read_request)
    values = read.outcome.provider_response
    if read.outcome.status is not Status.CANCELLED:
        return replace(read, sent=False)  # the read's refusal or failure, or "already"
    problem = None
    missing = reader.missing(values)
    if missing:
        problem = f"{title}: the read's answer lacks {', '.join(missing)}"
    else:
        try:
            cancel = reader.cancel(values)
        except GatewayError as exc:
            problem = f"{title}: the read's answer cannot make the cancel: {exc.message}"
    if problem is not None:
        outcome = Outcome(Status.FAILED, ErrorCode.PROVIDER_BAD_RESPONSE, problem)
        return replace(read, outcome=outcome, sent=False, final=True)
    tried = await exchange(replace(outbound, reader=None), deadline, attempt, log, cancel)
    read_spec = outbound.target.definition.resources[outbound.resource].read
    stale = read_spec is not None and read_spec.is_stale(tried.outcome.provider_code)
    return replace(tried, stale=stale)
