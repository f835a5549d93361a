"""A cancellation of single lines (a request's ``items``): the lines' requests sent (one per
line, a few at a time, sharing the cancellation's budget), and their outcomes combined into the
envelope's as CONTRACT §11 says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from structlog.typing import FilteringBoundLogger

from gateway.envelope import decision_error, provider_error
from gateway.errors import GatewayError, Status
from gateway.models import LineError, LineItem, LineOutcome, UpstreamInfo
from gateway.outbound import Outbound
from gateway.redact import AnswerRedactor
from gateway.request import Prepared
from gateway.send import Record, Sender, ms
from gateway.translate.build import LineAttempts
from gateway.translate.classify import Outcome

Result = Outcome | GatewayError
DONE = frozenset({Status.CANCELLED, Status.ALREADY_CANCELLED})


async def send(
    sender: Sender,
    outbound: Outbound,
    prepared: Prepared,
    log: FilteringBoundLogger,
    progress: Callable[[UpstreamInfo], None],
    monotonic: Callable[[], float],
    record: Record | None = None,
    deadline: float | None = None,
) -> tuple[Result, list[Result]]:
    """The cancellation's outcome, and each line's when the request names lines: the one
    request's outcome for each, or each line's own when every line is a request. ``record``
    hears each attempt and probe. The budget ends at ``deadline`` when one is given (the
    request's arrival plus the connection's timeout_s), else timeout_s from now."""
    items = prepared.request.items
    if prepared.lines is None:
        result = await sender.send(outbound, log, progress, deadline, record)
        return result, [result] * len(items or ())
    lines = prepared.target.definition.resources[prepared.resource].items
    assert items is not None
    assert lines is not None
    results = await send_lines(
        sender,
        outbound,
        prepared.lines,
        lines.concurrency,
        log,
        progress,
        monotonic,
        record,
        deadline,
    )
    return combined(items, results), results


async def send_lines(
    sender: Sender,
    outbound: Outbound,
    lines: Sequence[LineAttempts],
    concurrency: int,
    log: FilteringBoundLogger,
    progress: Callable[[UpstreamInfo], None],
    monotonic: Callable[[], float],
    record: Record | None = None,
    deadline: float | None = None,
) -> list[Result]:
    """Each line's outcome, in the request's order: each line its own request with its own
    attempts and classification, at most ``concurrency`` in flight, all within the one budget
    of the cancellation. ``progress`` hears the lines' attempts summed up."""
    started = monotonic()
    if deadline is None:
        deadline = started + outbound.policy.timeout_s
    slots = asyncio.Semaphore(concurrency)
    seen: dict[int, UpstreamInfo] = {}

    def heard(index: int, info: UpstreamInfo) -> None:
        seen[index] = info
        first = seen[min(seen)]
        progress(
            UpstreamInfo(
                method=first.method,
                url=first.url,
                status=info.status,
                attempts=sum(i.attempts for i in seen.values()),
                latency_ms=ms(monotonic() - started),
                probes=sum(i.probes for i in seen.values()),
            )
        )

    async def one(index: int, attempts: LineAttempts) -> Result:
        request, rebuild, reader = attempts
        async with slots:
            line_log = log.bind(line=index)
            line = replace(outbound, request=request, rebuild=rebuild, reader=reader)

            def recorded(event: dict[str, Any]) -> None:
                if record is not None:
                    record({**event, "line": index})

            return await sender.send(line, line_log, lambda i: heard(index, i), deadline, recorded)

    # Every line runs to its end, whatever another's does: none is left running unseen.
    ended = await asyncio.gather(*(one(n, a) for n, a in enumerate(lines)), return_exceptions=True)
    for result in ended:
        if isinstance(result, BaseException) and not isinstance(result, GatewayError):
            raise result  # a bug: the cancellation answers internal_error, the lines are done
    return [r for r in ended if isinstance(r, Outcome | GatewayError)]


def combined(items: Sequence[LineItem], results: Sequence[Result]) -> Result:
    """The cancellation's outcome from its lines' (CONTRACT §11): every line cancelled or
    already cancelled is ``cancelled`` (``already_cancelled`` when every line was); else the
    first refused line's outcome; else the first pending line's; else the first failed line's
    (repeating is safe: a line already cancelled answers so)."""
    if all(r.status in DONE for r in results):
        if all(r.status is Status.ALREADY_CANCELLED for r in results):
            return Outcome(Status.ALREADY_CANCELLED)
        times = [r.cancelled_at for r in results if isinstance(r, Outcome) and r.cancelled_at]
        return Outcome(Status.CANCELLED, cancelled_at=max(times) if times else None)
    for wanted in (Status.REJECTED, Status.PENDING, Status.FAILED):
        for item, result in zip(items, results, strict=True):
            if result.status is wanted:
                return _named(item, result)
    raise AssertionError(f"a line ended {results!r}")  # every status is handled above


def _named(item: LineItem, result: Result) -> Result:
    """``result`` with its message saying which line it is."""
    message = f"line {item.id!r}: {result.message}"
    if isinstance(result, GatewayError):
        return GatewayError(
            result.code, message, retry_after_s=result.retry_after_s, fields=result.fields
        )
    return replace(result, message=message)


def line_outcomes(
    items: Sequence[LineItem], results: Sequence[Result], answer: AnswerRedactor
) -> list[LineOutcome]:
    """The envelope's ``items``: each line's status and error, its provider text redacted and
    cut as the envelope's own ``error`` is."""
    found = []
    for item, result in zip(items, results, strict=True):
        error = None
        if result.code is not None:
            body = (
                decision_error(result)
                if isinstance(result, GatewayError)
                else provider_error(result, answer)
            )
            assert body is not None
            code, provider_code = body.code, body.provider_code
            error = LineError(code=code, provider_code=provider_code, message=body.message)
        found.append(LineOutcome(id=item.id, status=result.status, error=error))
    return found
