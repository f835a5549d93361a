"""The Sender on a fake transport and a fake clock: which attempts are made, when, and what
stops them (the retry rules, the deadline, the retry budget, the breaker, the rate limit and
the bulkhead). Nothing here opens a socket or sleeps."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.errors import ErrorCode, GatewayError, Status
from gateway.models import UpstreamInfo
from gateway.outbound import Outbound
from gateway.send import Sender
from gateway.translate.classify import Outcome
from gateway.translate.wire import UpstreamRequest, UpstreamResponse
from gateway.upstream import UpstreamFailure
from tests.fakes import (
    PLAIN_CONFIG,
    PLAIN_FILES,
    UPSTREAM,
    Kit,
    make_kit,
    response,
)

RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
RX_503 = {"error": "Service Unavailable"}
SHOPLAZZA_OK = {"procurement": {"state": 4, "updated_at": "2024-05-21T09:59:29Z"}}
PLAIN_OK: dict[str, Any] = {}


def refused(sent: bool = False) -> UpstreamFailure:
    """A failure before any answer: refused (never sent) or a read timeout (may be sent)."""
    if sent:
        return UpstreamFailure(ErrorCode.PROVIDER_TIMEOUT, "no answer in time", sent=True)
    return UpstreamFailure(ErrorCode.PROVIDER_ERROR, "the connection was refused", sent=False)


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    """BASE_CONFIG plus `plain`, a POST that is not safe to repeat; jitter fixed at 1."""
    return make_kit(tmp_path, PLAIN_CONFIG, files=PLAIN_FILES)


def outbound(kit: Kit, connection: str = "rxuniverse-lab", **settings: Any) -> Outbound:
    """One cancellation to ``connection``, its policy changed by ``settings``: a mapping for
    ``retry``/``breaker``/``limits`` updates those settings, any other value replaces one."""
    target = kit.runtime.targets[connection]
    resource = next(iter(target.definition.resources))
    policy = kit.runtime.policies[connection]
    changes = {
        name: getattr(policy, name).model_copy(update=value) if isinstance(value, dict) else value
        for name, value in settings.items()
    }
    method = target.definition.resources[resource].method
    request = UpstreamRequest(method, f"{UPSTREAM}/{connection}/72544", (("Accept", "*/*"),))
    return Outbound(target, resource, replace(policy, **changes), request)


class Run:
    """One ``send`` and the progress it reported."""

    def __init__(self, kit: Kit) -> None:
        self.sender = Sender(kit.services)
        self.kit = kit
        self.progress: list[UpstreamInfo] = []

    async def send(self, out: Outbound) -> Outcome | GatewayError:
        return await self.sender.send(out, self.kit.services.log, self.progress.append)


async def send(kit: Kit, out: Outbound) -> Outcome | GatewayError:
    return await Run(kit).send(out)


def outcome(result: Outcome | GatewayError) -> Outcome:
    assert isinstance(result, Outcome), result
    return result


def refusal(result: Outcome | GatewayError) -> GatewayError:
    assert isinstance(result, GatewayError), result
    return result


def retries(kit: Kit) -> list[tuple[int, str]]:
    return [(e["attempt"], e["reason"]) for e in kit.events("upstream.retry")]


# --- the retry rules, as applied ----------------------------------------------------------


async def test_a_request_never_sent_is_repeated_even_when_the_operation_is_not_safe(kit: Kit):
    kit.transport.answer(refused(sent=False), response(200, PLAIN_OK))
    result = outcome(await send(kit, outbound(kit, "plain")))
    assert result.status is Status.CANCELLED
    assert len(kit.transport.sent) == 2
    assert retries(kit) == [(1, "not_sent")]


async def test_no_answer_is_repeated_where_the_operation_is_safe(kit: Kit):
    kit.transport.answer(refused(sent=True), response(200, RX_OK))
    result = outcome(await send(kit, outbound(kit)))
    assert result.status is Status.CANCELLED
    assert retries(kit) == [(1, "no_answer")]


async def test_no_answer_is_not_repeated_when_the_operation_is_not_safe(kit: Kit):
    kit.transport.answer(refused(sent=True))
    result = outcome(await send(kit, outbound(kit, "plain")))
    assert result.code is ErrorCode.PROVIDER_TIMEOUT
    assert len(kit.transport.sent) == 1
    assert retries(kit) == []
    assert result.note is None  # the rules forbid it: nothing to explain


async def test_an_unreadable_answer_is_not_repeated(kit: Kit):
    """Too large or not HTTP: repeating would get the same answer."""
    bad = UpstreamFailure(ErrorCode.PROVIDER_BAD_RESPONSE, "the answer is not valid HTTP", True)
    kit.transport.answer(bad)
    result = outcome(await send(kit, outbound(kit)))
    assert result.code is ErrorCode.PROVIDER_BAD_RESPONSE
    assert len(kit.transport.sent) == 1


@pytest.mark.parametrize("status", [408, 502, 503, 504])
async def test_a_transient_answer_is_repeated_where_safe(kit: Kit, status: int):
    kit.transport.answer(response(status, RX_503), response(200, RX_OK))
    run = Run(kit)
    result = outcome(await run.send(outbound(kit)))
    assert result.status is Status.CANCELLED
    assert retries(kit) == [(1, f"answered_{status}")]
    assert [p.status for p in run.progress] == [status, 200]


@pytest.mark.parametrize("status", [408, 502, 503, 504])
async def test_a_transient_answer_to_an_unsafe_operation_is_final(kit: Kit, status: int):
    """The POST was sent: repeating it could cancel twice."""
    kit.transport.answer(response(status, {"message": "busy"}))
    result = outcome(await send(kit, outbound(kit, "plain")))
    assert result.provider_status == status
    assert len(kit.transport.sent) == 1
    assert retries(kit) == []


async def test_a_500_is_not_repeated(kit: Kit):
    """Only 408, 502, 503 and 504 say "not now"; a 500 may have done the work."""
    kit.transport.answer(response(500, RX_503))
    result = outcome(await send(kit, outbound(kit)))
    assert result.code is ErrorCode.PROVIDER_ERROR
    assert len(kit.transport.sent) == 1


@pytest.mark.parametrize("connection", ["rxuniverse-lab", "plain"])
async def test_a_429_is_repeated_for_every_operation(kit: Kit, connection: str):
    """A 429 says nothing was done: even a POST that is not safe to repeat goes again."""
    kit.transport.answer(response(429, {"error": "slow down"}), response(200, RX_OK))
    result = outcome(await send(kit, outbound(kit, connection)))
    assert result.status is Status.CANCELLED
    assert retries(kit) == [(1, "rate_limited")]
    assert kit.clock.sleeps == [0.1]  # no Retry-After: the backoff


async def test_max_attempts_ends_the_repeats_and_says_so(kit: Kit):
    kit.transport.default = response(503, RX_503)
    run = Run(kit)
    result = outcome(await run.send(outbound(kit, retry={"max_attempts": 3})))
    assert result.code is ErrorCode.PROVIDER_ERROR
    assert len(kit.transport.sent) == 3
    assert [p.attempts for p in run.progress] == [1, 2, 3]
    assert result.note == "not repeated: retry.max_attempts (3) reached"


async def test_one_attempt_allowed_is_one_attempt(kit: Kit):
    kit.transport.default = response(503, RX_503)
    result = outcome(await send(kit, outbound(kit, retry={"max_attempts": 1})))
    assert len(kit.transport.sent) == 1
    assert result.note == "not repeated: retry.max_attempts (1) reached"


# --- when the next attempt goes -----------------------------------------------------------


async def test_backoff_doubles_from_the_base_times_the_jitter(tmp_path: Path):
    kit = make_kit(tmp_path, jitter=0.5)
    kit.transport.default = response(503, RX_503)
    await send(kit, outbound(kit, retry={"max_attempts": 4, "backoff_base_s": 0.2}))
    assert kit.clock.sleeps == [0.1, 0.2, 0.4]
    assert [e["delay_ms"] for e in kit.events("upstream.retry")] == [100.0, 200.0, 400.0]


async def test_backoff_is_capped_at_backoff_max(kit: Kit):
    kit.transport.default = response(503, RX_503)
    settings = {"max_attempts": 4, "backoff_base_s": 0.3, "backoff_max_s": 0.5}
    await send(kit, outbound(kit, timeout_s=5.0, retry=settings))
    assert kit.clock.sleeps == [0.3, 0.5, 0.5]


async def test_a_backoff_that_does_not_fit_in_the_budget_is_not_waited(kit: Kit):
    """The first attempt took 0.95 s of a 1 s budget: no 0.1 s wait, the answer comes now, and
    says why it was not repeated."""

    def slow(request: UpstreamRequest, timeout_s: float, connect_s: float) -> UpstreamResponse:
        kit.clock.advance(0.95)
        return response(503, RX_503)

    kit.transport.answer(slow)
    result = outcome(await send(kit, outbound(kit, timeout_s=1.0)))
    assert kit.clock.sleeps == []
    assert len(kit.transport.sent) == 1
    assert result.code is ErrorCode.PROVIDER_ERROR
    assert result.note == "not repeated: the next attempt would not fit in the budget"


@pytest.mark.parametrize(("status", "reason"), [(429, "rate_limited"), (503, "answered_503")])
async def test_retry_after_is_the_delay(kit: Kit, status: int, reason: str):
    """A 429's or a 503's Retry-After is the provider's word on when to come back."""
    busy = response(status, {"error": "busy"}, headers={"Retry-After": "1"})
    kit.transport.answer(busy, response(200, RX_OK))
    result = outcome(await send(kit, outbound(kit)))
    assert result.status is Status.CANCELLED
    assert kit.clock.sleeps == [1.0]
    [retry] = kit.events("upstream.retry")
    assert (retry["reason"], retry["delay_ms"]) == (reason, 1000.0)


async def test_a_retry_after_past_the_budget_is_answered_at_once_and_says_so(kit: Kit):
    kit.transport.answer(response(429, {"error": "busy"}, headers={"Retry-After": "30"}))
    result = outcome(await send(kit, outbound(kit)))
    assert kit.clock.sleeps == []
    assert len(kit.transport.sent) == 1
    assert (result.code, result.retry_after_s) == (ErrorCode.RATE_LIMITED, 30)
    assert result.note == "not repeated: the provider asked to wait 30 s, past the budget"


async def test_each_attempt_gets_what_is_left_of_the_budget(kit: Kit):
    """Without attempt_timeout_s, an attempt may use the rest of timeout_s; the connect
    timeout is the connection's."""

    def slow(request: UpstreamRequest, timeout_s: float, connect_s: float) -> UpstreamResponse:
        kit.clock.advance(0.5)
        return response(503, RX_503)

    kit.transport.answer(slow, response(200, RX_OK))
    await send(kit, outbound(kit, timeout_s=2.0, connect_timeout_s=0.7))
    first, second = kit.transport.sent
    assert first.timeout_s == pytest.approx(2.0)
    assert second.timeout_s == pytest.approx(2.0 - 0.5 - 0.1)  # the attempt, then the backoff
    assert (first.connect_timeout_s, second.connect_timeout_s) == (0.7, 0.7)


async def test_attempt_timeout_bounds_each_attempt_and_leaves_room_for_another(kit: Kit):
    def hangs(request: UpstreamRequest, timeout_s: float, connect_s: float) -> UpstreamResponse:
        kit.clock.advance(timeout_s)  # the transport gives up when told to
        raise UpstreamFailure(ErrorCode.PROVIDER_TIMEOUT, "no answer in time", sent=True)

    kit.transport.answer(hangs, response(200, RX_OK))
    run = Run(kit)
    result = outcome(await run.send(outbound(kit, timeout_s=2.0, attempt_timeout_s=0.3)))
    assert result.status is Status.CANCELLED
    assert [s.timeout_s for s in kit.transport.sent] == [0.3, 0.3]
    assert retries(kit) == [(1, "no_answer")]
    assert run.progress[-1].latency_ms == 400.0  # 0.3 s attempt, 0.1 s backoff, instant answer


async def test_an_attempt_built_anew_is_sent_and_reported_as_built(kit: Kit):
    """A request rebuilt for each attempt (a fresh timestamp): each attempt sends its own, and
    progress reports the URL of the attempt it describes."""
    urls = iter(f"{UPSTREAM}/rxuniverse-lab/72544?t={n}" for n in (2, 3))
    out = outbound(kit)
    out = replace(out, rebuild=lambda: replace(out.request, url=next(urls)))
    kit.transport.answer(response(503, RX_503), response(503, RX_503), response(200, RX_OK))
    run = Run(kit)
    await run.send(out)
    sent = [request.url for request in kit.transport.sent]
    assert sent == [
        out.request.url,
        f"{UPSTREAM}/rxuniverse-lab/72544?t=2",
        f"{UPSTREAM}/rxuniverse-lab/72544?t=3",
    ]
    assert [p.url for p in run.progress] == sent


async def test_progress_hears_of_every_attempt(kit: Kit):
    def slow(request: UpstreamRequest, timeout_s: float, connect_s: float) -> UpstreamResponse:
        kit.clock.advance(0.05)
        return response(502, RX_503)

    kit.transport.answer(refused(sent=False), slow, response(200, RX_OK))
    run = Run(kit)
    out = outbound(kit)
    await run.send(out)
    assert [(p.attempts, p.status) for p in run.progress] == [(1, None), (2, 502), (3, 200)]
    assert {(p.method, p.url) for p in run.progress} == {("DELETE", out.request.url)}
    # Since the first attempt: backoffs of 0.1 and 0.2 s, and 0.05 s of the provider's time.
    assert [p.latency_ms for p in run.progress] == [0.0, 150.0, 350.0]


async def test_each_attempt_is_logged_with_its_number(kit: Kit):
    kit.transport.answer(refused(sent=True), response(200, RX_OK))
    await send(kit, outbound(kit))
    assert kit.event_names == [
        "upstream.request",
        "upstream.error",
        "upstream.retry",
        "upstream.request",
        "upstream.response",
    ]
    assert [e["attempt"] for e in kit.logs] == [1, 1, 1, 2, 2]
    error = kit.events("upstream.error")[0]
    assert (error["code"], error["sent"]) == ("provider_timeout", True)


# --- the retry budget ---------------------------------------------------------------------


async def test_a_spent_retry_budget_refuses_the_repeat_and_says_so(kit: Kit):
    kit.transport.default = response(503, RX_503)
    budget = {"budget_ratio": 0.0, "budget_min_retries": 1}
    first = outcome(await send(kit, outbound(kit, retry=budget)))
    second = outcome(await send(kit, outbound(kit, retry=budget)))
    assert len(kit.transport.sent) == 3  # the one retry the budget holds, then none
    assert first.note == "not repeated: the connection's retry budget is spent"
    assert second.note == "not repeated: the connection's retry budget is spent"
    assert [e["attempt"] for e in kit.events("upstream.retry_budget_exhausted")] == [2, 1]


async def test_the_retry_budget_refills_as_its_window_passes(kit: Kit):
    kit.transport.default = response(503, RX_503)
    budget = {"budget_ratio": 0.0, "budget_min_retries": 1, "budget_window_s": 10.0}
    await send(kit, outbound(kit, retry=budget))
    kit.clock.advance(10.0)
    kit.transport.sent.clear()
    await send(kit, outbound(kit, retry=budget))
    assert len(kit.transport.sent) == 2  # a retry again


# --- the circuit breaker ------------------------------------------------------------------

BREAKER = {"failures": 3, "open_s": 5.0, "max_open_s": 20.0}


def breaker_gauge(kit: Kit, connection: str = "rxuniverse-lab") -> float | None:
    return kit.services.metrics.registry.get_sample_value(
        "cancel_gateway_breaker_state", {"connection": connection}
    )


async def test_the_breaker_opens_after_consecutive_failures_and_refuses_without_sending(kit: Kit):
    kit.transport.default = response(503, RX_503)
    out = outbound(kit, retry={"max_attempts": 1}, breaker=BREAKER)
    for _ in range(3):
        assert outcome(await send(kit, out)).code is ErrorCode.PROVIDER_ERROR
    assert breaker_gauge(kit) == 2  # open
    run = Run(kit)
    error = refusal(await run.send(out))
    assert error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert error.retry_after_s == 5.0
    assert "circuit is open, nothing was sent" in error.message
    assert len(kit.transport.sent) == 3
    assert run.progress == []  # no attempt was made
    assert [e["reason"] for e in kit.events("upstream.refused")] == ["breaker_open"]


async def test_a_success_between_failures_keeps_the_breaker_closed(kit: Kit):
    kit.transport.answer(*[response(503, RX_503)] * 2, response(200, RX_OK))
    kit.transport.answer(*[response(503, RX_503)] * 2, response(200, RX_OK))
    out = outbound(kit, retry={"max_attempts": 1}, breaker=BREAKER)
    results = [await send(kit, out) for _ in range(6)]
    assert all(isinstance(r, Outcome) for r in results)
    assert len(kit.transport.sent) == 6


async def test_the_breaker_probes_once_when_its_wait_is_over_and_reopens_for_longer(kit: Kit):
    kit.transport.default = response(503, RX_503)
    out = outbound(kit, retry={"max_attempts": 1}, breaker=BREAKER)
    for _ in range(3):
        await send(kit, out)
    kit.clock.advance(5.0)
    assert outcome(await send(kit, out)).code is ErrorCode.PROVIDER_ERROR  # the probe
    assert len(kit.transport.sent) == 4
    reopened = refusal(await send(kit, out))
    assert reopened.retry_after_s == 10.0  # the wait doubled
    kit.clock.advance(9.0)
    assert isinstance(await send(kit, out), GatewayError)
    kit.clock.advance(1.0)
    kit.transport.default = response(200, RX_OK)
    assert outcome(await send(kit, out)).status is Status.CANCELLED  # closes it
    assert breaker_gauge(kit) == 0
    assert outcome(await send(kit, out)).status is Status.CANCELLED
    assert len(kit.transport.sent) == 6


async def test_half_open_lets_exactly_one_probe_through(kit: Kit):
    out = outbound(kit, retry={"max_attempts": 1}, breaker=BREAKER)
    kit.transport.default = response(503, RX_503)
    for _ in range(3):
        await send(kit, out)
    kit.clock.advance(5.0)
    arrived, release = kit.transport.hold(response(200, RX_OK))
    probe = asyncio.create_task(send(kit, out))
    await arrived.wait()
    other = refusal(await send(kit, out))  # while the probe is out
    assert other.code is ErrorCode.PROVIDER_UNAVAILABLE
    release.set()
    assert outcome(await probe).status is Status.CANCELLED
    assert len(kit.transport.sent) == 4


async def test_a_repeat_refused_by_the_breaker_keeps_the_providers_answer(kit: Kit):
    """The request's own failures open the breaker: its last answer stands, with why no more
    attempts were made."""
    kit.transport.default = response(503, RX_503)
    breaker = {"failures": 2, "open_s": 5.0, "max_open_s": 20.0}
    result = outcome(await send(kit, outbound(kit, breaker=breaker)))
    assert len(kit.transport.sent) == 2
    assert (result.code, result.provider_status) == (ErrorCode.PROVIDER_ERROR, 503)
    assert result.note == (
        "not repeated: RxUniverse is failing: the circuit is open, nothing was sent"
    )


async def test_a_probe_that_crashes_lets_the_next_one_go(kit: Kit):
    """An attempt that ends without an outcome (a bug, a caller gone) frees the probe."""
    out = outbound(kit, retry={"max_attempts": 1}, breaker=BREAKER)
    kit.transport.default = response(503, RX_503)
    for _ in range(3):
        await send(kit, out)
    kit.clock.advance(5.0)
    kit.transport.answer(RuntimeError("a bug in the transport"))
    with pytest.raises(RuntimeError):
        await send(kit, out)
    kit.transport.answer(response(200, RX_OK))
    assert outcome(await send(kit, out)).status is Status.CANCELLED


# --- the local limits ---------------------------------------------------------------------


async def test_the_rate_limit_refuses_what_cannot_wait(kit: Kit):
    """Shoplazza's definition allows 2 a second; with no wait allowed the third is refused."""
    kit.transport.default = response(200, SHOPLAZZA_OK)
    out = outbound(kit, "shoplazza-main", limits={"max_wait_s": 0.0})
    assert [outcome(await send(kit, out)).status for _ in range(2)] == [Status.CANCELLED] * 2
    run = Run(kit)
    error = refusal(await run.send(out))
    assert (error.code, error.retry_after_s) == (ErrorCode.RATE_LIMITED, 1.0)
    assert "nothing was sent" in error.message
    assert len(kit.transport.sent) == 2
    assert run.progress == []
    assert [e["reason"] for e in kit.events("upstream.refused")] == ["rate_limit"]


async def test_the_rate_limit_paces_what_fits_in_the_budget(kit: Kit):
    kit.transport.default = response(200, SHOPLAZZA_OK)
    out = outbound(kit, "shoplazza-main")
    for _ in range(4):
        assert outcome(await send(kit, out)).status is Status.CANCELLED
    assert kit.clock.sleeps == [0.5, 0.5]  # two at once, then one every half second


async def test_a_full_bulkhead_refuses_without_sending(kit: Kit):
    arrived, release = kit.transport.hold(response(200, RX_OK))
    out = outbound(kit, limits={"concurrency": 1, "max_wait_s": 0.0})
    first = asyncio.create_task(send(kit, out))
    await arrived.wait()
    error = refusal(await send(kit, out))
    assert error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert error.message == "1 cancellations are already in flight to RxUniverse, nothing was sent"
    assert [e["reason"] for e in kit.events("upstream.refused")] == ["concurrency"]
    release.set()
    assert outcome(await first).status is Status.CANCELLED
    kit.transport.answer(response(200, RX_OK))
    assert outcome(await send(kit, out)).status is Status.CANCELLED  # the slot is free again
    assert len(kit.transport.sent) == 2


async def test_a_full_bulkhead_is_waited_for_within_the_budget(kit: Kit):
    arrived, release = kit.transport.hold(response(200, RX_OK))
    kit.transport.answer(response(200, RX_OK))
    out = outbound(kit, limits={"concurrency": 1})
    first = asyncio.create_task(send(kit, out))
    await arrived.wait()
    second = asyncio.create_task(send(kit, out))
    await asyncio.sleep(0)  # one turn: the second runs until it waits for the slot
    assert len(kit.transport.sent) == 1
    release.set()
    results = [outcome(r).status for r in await asyncio.gather(first, second)]
    assert results == [Status.CANCELLED] * 2
    assert kit.events("upstream.refused") == []


async def test_a_crashed_attempt_gives_its_bulkhead_slot_back(kit: Kit):
    out = outbound(kit, limits={"concurrency": 1, "max_wait_s": 0.0})
    kit.transport.answer(RuntimeError("a bug"), response(200, RX_OK))
    with pytest.raises(RuntimeError):
        await send(kit, out)
    assert outcome(await send(kit, out)).status is Status.CANCELLED


async def test_the_guards_are_per_connection(kit: Kit):
    """An open breaker on one connection leaves the others alone."""
    kit.transport.default = response(503, RX_503)
    for _ in range(3):
        await send(kit, outbound(kit, retry={"max_attempts": 1}, breaker=BREAKER))
    kit.transport.default = response(200, SHOPLAZZA_OK)
    assert outcome(await send(kit, outbound(kit, "shoplazza-main"))).status is Status.CANCELLED


# --- tracing ------------------------------------------------------------------------------


async def test_with_tracing_each_attempt_carries_its_own_spans_traceparent(tmp_path: Path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    kit = make_kit(tmp_path, tracer_provider=provider)
    kit.transport.answer(response(503, RX_503), response(200, RX_OK))
    await send(kit, outbound(kit))
    spans = exporter.get_finished_spans()
    attributes = [dict(span.attributes or {}) for span in spans]
    assert [a["cancel_gateway.attempt"] for a in attributes] == [1, 2]
    assert [a["http.response.status_code"] for a in attributes] == [503, 200]
    for sent, span in zip(kit.transport.sent, spans, strict=True):
        ids = span.get_span_context()
        assert ids is not None
        traceparent = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"
        assert sent.header("traceparent") == traceparent
