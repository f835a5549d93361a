"""Sending one cancellation: attempts within the connection's budget, as the retry rules allow
(README, "Resilience"), each through the breaker, the rate limit and the bulkhead. Nothing is
sent while the breaker is open or the limits are full.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from structlog.typing import FilteringBoundLogger

from gateway.auth_schemes import TokenAuth
from gateway.errors import ErrorCode, GatewayError, Status, spec
from gateway.models import UpstreamInfo
from gateway.outbound import MIN_ATTEMPT_S, Outbound, Tried
from gateway.probing import USEFUL_ATTEMPT_S, kept_for_probe, probe, unknown
from gateway.read_call import read_then_cancel
from gateway.resilience import Guards, TokenBucket, backoff_s, retry_reason
from gateway.services import Services
from gateway.store import StoreUnavailable
from gateway.tokens import TokenFailure
from gateway.translate.classify import Outcome, classify
from gateway.translate.sign import sent_value, without_echo
from gateway.translate.wire import UpstreamRequest
from gateway.upstream import UpstreamFailure


async def _acquire(slots: asyncio.Semaphore, wait_s: float) -> bool:
    """A slot within ``wait_s`` seconds (none at all when ``wait_s`` is not positive)."""
    if not slots.locked():
        await slots.acquire()  # free: returns at once, no timer needed
        return True
    if wait_s <= 0:
        return False
    try:
        async with asyncio.timeout(max(wait_s, 0)):
            await slots.acquire()
    except TimeoutError:
        return False
    return True


# Hears each attempt and probe as an event of the cancellation (``GET …/{id}/events``).
Record = Callable[[dict[str, Any]], None]
SharedRate = Callable[[str, float, int, float], Awaitable[tuple[bool, float]]]


class Sender:
    def __init__(self, services: Services) -> None:
        self._transport = services.transport
        self._clock = services.clock
        self._guards = services.guards
        self._rand = services.rand
        self._metrics = services.metrics
        self._spans = services.spans
        self._tokens = services.tokens
        # A rate limit shared by replicas, when the store can keep one (Redis).
        self._shared_rate: SharedRate | None = getattr(services.store, "reserve_rate", None)

    async def send(
        self,
        outbound: Outbound,
        log: FilteringBoundLogger,
        progress: Callable[[UpstreamInfo], None],
        deadline: float | None = None,
        record: Record | None = None,
    ) -> Outcome | GatewayError:
        """The provider's final outcome, or the local guards' refusal when nothing could be
        sent; ``progress`` hears about every attempt that was made. The budget ends at
        ``deadline`` when one is given (the lines of one cancellation share theirs)."""
        connection, policy, request = outbound.target.name, outbound.policy, outbound.request
        guards = self._guards.get(connection, policy)
        retry_safe = outbound.target.definition.resources[outbound.resource].retry_safe
        first = self._clock.monotonic()
        deadline = first + policy.timeout_s if deadline is None else deadline
        guards.budget.record_request()
        outcome: Outcome | None = None
        attempts = probes = 0
        renewed = False  # a refused token is fetched again once
        while True:
            at, began = self._clock.now().timestamp(), self._clock.monotonic()
            tried = await self._attempt(outbound, guards, deadline, attempts + 1, log)
            if isinstance(tried, GatewayError):
                if outcome is None:
                    return tried
                # A retry refused by the breaker or the limits keeps the provider's last answer.
                return replace(outcome, note=f"not repeated: {tried.message}")
            attempts += 1
            outcome = tried.outcome
            if record is not None:
                took = ms(self._clock.monotonic() - began)
                record(tried.event(at, request, took))
            safe_now = retry_safe  # a probe that finds the object not cancelled makes it so
            if unknown(outbound, tried):
                probed = await self._probe(outbound, guards, deadline, attempts, log, record)
                found = None if probed is None else probed.probed
                probes += 0 if probed is None else 1  # counted when it may have gone out
                if found == "cancelled" and probed is not None:
                    outcome = probed
                elif found == "not_cancelled":
                    safe_now = True  # and, if no repeat follows, whoever goes on knows it
                    outcome = replace(outcome, probed="not_cancelled")
            progress(
                UpstreamInfo(
                    method=request.method,
                    url=tried.url or request.shown_url,
                    status=tried.status,
                    attempts=attempts,
                    latency_ms=ms(self._clock.monotonic() - first),
                    probes=probes,
                )
            )
            if outcome.probed == "cancelled":
                break  # settled by the probe: nothing is sent again
            refused = tried.outcome.code is ErrorCode.PROVIDER_AUTH_FAILED
            if refused and tried.cached_token is not None:
                # The provider no longer takes the cached token: the next request fetches
                # another, and this one is repeated once with it, when repeats are left.
                self._tokens.forget(outbound.target, tried.cached_token)
                if not renewed and attempts < policy.retry.max_attempts:
                    renewed = True
                    self._metrics.retried(connection, "token_refused")
                    log.info(
                        "upstream.retry", attempt=attempts, reason="token_refused", delay_ms=0.0
                    )
                    continue
            delay, note = self._retry_delay(
                outbound, tried, attempts, safe_now, deadline, guards, log
            )
            if delay is None:
                if note is not None:
                    outcome = replace(outcome, note=note)
                break
            await self._clock.sleep(delay)
        return outcome

    async def probe_once(
        self,
        outbound: Outbound,
        log: FilteringBoundLogger,
        record: Record,
        answer: Mapping[str, Any],
    ) -> Outcome | None:
        """One status probe in the background (settling.py), within the connection's
        budget and rate limit: its outcome (``probed`` says what it found), or None when none
        was made."""
        if outbound.reader is None:
            return None
        guards = self._guards.get(outbound.target.name, outbound.policy)
        deadline = self._clock.monotonic() + outbound.policy.timeout_s
        return await self._probe(outbound, guards, deadline, 1, log, record, answer)

    async def _probe(
        self,
        outbound: Outbound,
        guards: Guards,
        deadline: float,
        attempt: int,
        log: FilteringBoundLogger,
        record: Record | None,
        answer: Mapping[str, Any] | None = None,
    ) -> Outcome | None:
        """A status probe within the budget and the connection's rate limit, counted and
        recorded when it may have gone out: its outcome (``probed`` says what it found), or
        None when none was sent."""
        connection = outbound.target.name
        if not await self._probe_admitted(connection, guards, deadline):
            return None
        now = self._clock.monotonic
        probed = await probe(self._exchange, outbound, deadline, now, attempt, log, answer)
        if probed is None or not probed.sent:
            return None
        found = probed.outcome.probed or "unknown"
        self._metrics.probed(connection, found)
        if record is not None:
            record({"at": self._clock.now().timestamp(), "type": "probe", "result": found})
        return probed.outcome

    async def _reserve(
        self, connection: str, bucket: TokenBucket, max_wait_s: float
    ) -> tuple[bool, float]:
        """The connection's rate limit: shared by every process and replica when the store
        can share it (Redis), else this process's own bucket (and that one too when the
        shared one does not answer: a limit per process is better than none)."""
        shared = self._shared_rate
        if shared is not None:
            try:
                return await shared(connection, bucket.rate, bucket.burst, max_wait_s)
            except StoreUnavailable:
                pass
        return bucket.reserve(max_wait_s)

    async def _probe_admitted(self, connection: str, guards: Guards, deadline: float) -> bool:
        """A probe is a request like any: it waits for the connection's rate limit (within
        the budget), or is not made."""
        if guards.bucket is None:
            return True
        left = deadline - self._clock.monotonic()
        granted, wait = await self._reserve(connection, guards.bucket, left)
        if granted and wait > 0:
            await self._clock.sleep(wait)
        return granted

    async def _attempt(
        self,
        outbound: Outbound,
        guards: Guards,
        deadline: float,
        attempt: int,
        log: FilteringBoundLogger,
    ) -> Tried | GatewayError:
        """One attempt through the breaker, the rate limit and the bulkhead, in that order."""
        connection, limits = outbound.target.name, outbound.policy.limits
        admitted = guards.breaker.admit()
        self._metrics.breaker_seen(connection, guards.breaker.state)
        if not admitted:
            return self._refuse(
                connection,
                "breaker_open",
                attempt,
                log,
                GatewayError(
                    ErrorCode.PROVIDER_UNAVAILABLE,
                    f"{outbound.title} is failing: the circuit is open, nothing was sent",
                    retry_after_s=max(1.0, guards.breaker.retry_in_s()),
                ),
            )
        try:
            limit = deadline - self._clock.monotonic()
            if limits.max_wait_s is not None:
                limit = min(limit, limits.max_wait_s)
            if guards.bucket is not None:
                granted, wait = await self._reserve(connection, guards.bucket, limit)
                if not granted:
                    guards.breaker.abandon()
                    return self._refuse(
                        connection,
                        "rate_limit",
                        attempt,
                        log,
                        GatewayError(
                            ErrorCode.RATE_LIMITED,
                            f"the rate limit of {outbound.title} is reached, nothing was sent",
                            retry_after_s=max(1.0, wait),
                        ),
                    )
                if wait > 0:
                    await self._clock.sleep(wait)
                    limit -= wait
            if not await _acquire(guards.bulkhead, limit):
                guards.breaker.abandon()
                return self._refuse(
                    connection,
                    "concurrency",
                    attempt,
                    log,
                    GatewayError(
                        ErrorCode.PROVIDER_UNAVAILABLE,
                        f"{limits.concurrency} cancellations are already in flight "
                        f"to {outbound.title}, nothing was sent",
                    ),
                )
            try:
                tried = await self._exchange(outbound, deadline, attempt, log)
            finally:
                guards.bulkhead.release()
        except BaseException:
            guards.breaker.abandon()
            raise
        guards.breaker.record(failed=tried.failed)
        self._metrics.breaker_seen(connection, guards.breaker.state)
        return tried

    def _refuse(
        self,
        connection: str,
        reason: str,
        attempt: int,
        log: FilteringBoundLogger,
        refusal: GatewayError,
    ) -> GatewayError:
        self._metrics.refused(connection, reason)
        log.warning("upstream.refused", reason=reason, attempt=attempt)
        return refusal

    async def _exchange(
        self,
        outbound: Outbound,
        deadline: float,
        attempt: int,
        log: FilteringBoundLogger,
        request: UpstreamRequest | None = None,
    ) -> Tried:
        """Send once and classify the answer (after the read, for a resource that makes one:
        an answer other than the values ends the attempt, and nothing else is sent)."""
        target, policy = outbound.target, outbound.policy
        reader = outbound.reader
        if reader is not None and reader.reads and not (outbound.reading or outbound.probing):
            return await read_then_cancel(self._exchange, outbound, reader, deadline, attempt, log)
        if deadline - self._clock.monotonic() < MIN_ATTEMPT_S:  # a late line, a cancel after a read
            message = f"{outbound.title}: no time left in the budget, nothing was sent"
            outcome = Outcome(Status.FAILED, ErrorCode.PROVIDER_TIMEOUT, message)
            return Tried(outcome, sent=False, final=True)
        request = request or outbound.for_attempt(attempt)
        cached_token = None
        if isinstance(target.definition.auth, TokenAuth):
            try:
                request, cached_token = await self._tokens.authorize(target, request, deadline)
            except TokenFailure as failure:
                return self._without_token(outbound, failure, attempt, log)
        provider = target.definition.name
        started = self._clock.monotonic()
        timeout = deadline - started
        if policy.attempt_timeout_s is not None:
            timeout = min(timeout, policy.attempt_timeout_s)
        kept = kept_for_probe(outbound)  # an answer lost now may still be settled in time
        if kept and deadline - started - kept >= MIN_ATTEMPT_S:
            timeout = min(timeout, deadline - started - kept)
        span = self._spans.attempt(
            number=attempt,
            provider=provider,
            connection=target.name,
            method=request.method,
            url=request.shown_url,
        )
        if span.traceparent is not None:
            request = request.with_header("traceparent", span.traceparent)
        log.info("upstream.request", method=request.method, url=request.shown_url, attempt=attempt)
        try:
            response = await self._transport(request, timeout, policy.connect_timeout_s)
        except UpstreamFailure as failure:
            latency = self._clock.monotonic() - started
            log.warning(
                "upstream.error",
                code=failure.code.value,
                message=str(failure),
                sent=failure.sent,
                latency_ms=ms(latency),
                attempt=attempt,
            )
            outcome = Outcome(
                spec(failure.code).status,
                failure.code,
                f"{outbound.title}: {failure.message}",
                detail=failure.detail or None,
            )
            timed_out = failure.code is ErrorCode.PROVIDER_TIMEOUT
            self._metrics.attempt_finished(
                target.name, provider, None, "timeout" if timed_out else "error", latency
            )
            span.finish(http_status=None, outcome=outcome.status.value, code=failure.code.value)
            unreadable = failure.code is ErrorCode.PROVIDER_BAD_RESPONSE
            shown = request.shown_url
            return Tried(outcome, sent=failure.sent, unreadable=unreadable, failed=True, url=shown)
        except BaseException:
            span.finish(http_status=None, outcome="abandoned", code=None)
            raise
        latency = self._clock.monotonic() - started
        log.info(
            "upstream.response", status=response.status, latency_ms=ms(latency), attempt=attempt
        )
        outcome = classify(
            target.definition,
            outbound.resource,
            response,
            self._clock.now(),
            outbound.reading,
            outbound.probing,
        )
        signature = target.definition.signature
        if signature is not None:  # a secret made for this request: no redactor knows it
            sent = sent_value(signature, request)
            outcome = without_echo(outcome, [sent]) if sent else outcome
        if not outbound.probing:  # a probe has its own count (probed)
            self._metrics.attempt_finished(target.name, provider, response.status, None, latency)
        code = outcome.code.value if outcome.code else None
        span.finish(http_status=response.status, outcome=outcome.status.value, code=code)
        failed = response.status >= 500
        shown = request.shown_url
        return Tried(
            outcome, response.status, True, failed=failed, cached_token=cached_token, url=shown
        )

    def _without_token(
        self, outbound: Outbound, failure: TokenFailure, attempt: int, log: FilteringBoundLogger
    ) -> Tried:
        """No token, so the cancellation was not sent: the token endpoint's answer is the
        outcome. A refusal (4xx) is final; a failure may be repeated like one never sent."""
        log.warning(
            "upstream.token_failed",
            code=failure.code.value,
            status=failure.status,
            message=failure.message,
            attempt=attempt,
        )
        outcome = Outcome(
            spec(failure.code).status,
            failure.code,
            f"{outbound.title}: {failure.message}",
            provider_status=failure.status,
        )
        final = failure.final or failure.code in (
            ErrorCode.PROVIDER_AUTH_FAILED,
            ErrorCode.PROVIDER_MISCONFIGURED,
        )
        return Tried(outcome, sent=False, failed=not final, final=final)

    def _retry_delay(
        self,
        outbound: Outbound,
        tried: Tried,
        attempts: int,
        retry_safe: bool,
        deadline: float,
        guards: Guards,
        log: FilteringBoundLogger,
    ) -> tuple[float | None, str | None]:
        """Seconds to wait before the next attempt, or None when this outcome is final; and,
        when a repeat the rules allow is not made, why (for the envelope's message)."""
        if tried.final:
            return None, None
        if tried.status == 429 or tried.outcome.code is ErrorCode.RATE_LIMITED:
            reason = "rate_limited"  # a 429, or a throttle inside a 200: nothing was applied
        elif tried.stale:
            reason = "stale_read"  # not applied: read again, then cancel
        else:
            found = retry_reason(
                status=tried.status,
                sent=tried.sent,
                retry_safe=retry_safe or not tried.sent,  # a read's answer: nothing was sent
                unreadable=tried.unreadable,
            )
            if found is None:  # the usual end: an answer that is final
                return None, None
            reason = found
        retry = outbound.policy.retry
        if attempts >= retry.max_attempts:
            return None, f"not repeated: retry.max_attempts ({attempts}) reached"
        # A provider's Retry-After (a 429's, a 503's) is its word on when to come back.
        given = tried.outcome.retry_after_s
        delay = given if given is not None else backoff_s(attempts, retry, self._rand)
        # A repeat of a resource with a probe must leave its probe's share too, and be worth
        # sending (an attempt with a few milliseconds could only end unknown).
        kept = kept_for_probe(outbound)
        needed = delay + (kept + USEFUL_ATTEMPT_S if kept else 0.0)
        if needed >= deadline - self._clock.monotonic():
            if given is not None:
                return (
                    None,
                    f"not repeated: the provider asked to wait {given:g} s, past the budget",
                )
            return None, "not repeated: the next attempt would not fit in the budget"
        if not guards.budget.try_retry():
            self._metrics.retry_budget_exhausted(outbound.target.name)
            log.warning("upstream.retry_budget_exhausted", attempt=attempts)
            return None, "not repeated: the connection's retry budget is spent"
        self._metrics.retried(outbound.target.name, reason)
        log.info("upstream.retry", attempt=attempts, reason=reason, delay_ms=ms(delay))
        return delay, None


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
