"""One cancellation from start to finish: parse → route → build → send → classify → envelope.

Every cancellation logs ``cancellation.received`` and ``cancellation.completed``, whatever
happens in between (a bug included), so no record is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError
from structlog.typing import FilteringBoundLogger

from gateway.clock import Clock, SystemClock
from gateway.errors import ErrorCode, GatewayError, Source, Status, spec
from gateway.loader import Runtime
from gateway.logging import Redactor
from gateway.models import (
    CancelRequest,
    Envelope,
    ErrorBody,
    FieldProblem,
    UpstreamInfo,
    new_cancellation_id,
)
from gateway.resilience import GuardRegistry, Guards, Policy, backoff_s, full_jitter, retry_reason
from gateway.routing import Caller, route
from gateway.store import (
    Claimed,
    Entry,
    InProgress,
    KeyClaim,
    Replay,
    Store,
    StoredReply,
    StoreUnavailable,
)
from gateway.store.memory import MemoryStore
from gateway.tracing import Trace
from gateway.translate.build import Call, Target, build_request, resolve_resource
from gateway.translate.classify import Outcome, classify, format_time
from gateway.translate.wire import UpstreamRequest
from gateway.upstream import Transport, UpstreamFailure

_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
LEASE_MARGIN_S = 10.0
DEFINITE = frozenset({Status.CANCELLED, Status.ALREADY_CANCELLED, Status.REJECTED})


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the HTTP layer learned about the request before the cancellation starts."""

    request_id: str
    trace: Trace
    idempotency_key: str | None = None


@dataclass(slots=True)
class Reply:
    http_status: int
    body: bytes  # the envelope, serialised with every secret removed
    headers: dict[str, str] = field(default_factory=dict)


def render_envelope(envelope: Envelope, redactor: Redactor) -> bytes:
    """The envelope as JSON. Providers may echo what they were sent, credentials included, in
    their messages: every string passes the same redaction as the logs."""
    return orjson.dumps(redactor.clean(envelope.model_dump(mode="json")))


@dataclass(slots=True)
class _Facts:
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
    token: str = ""
    begun: bool = False  # recorded as running in the store: complete() must follow

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
        )


class _Replayed(Exception):
    """The store holds this request's final answer: it is answered again, nothing is sent."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay


@dataclass(frozen=True, slots=True)
class _Tried:
    """How one attempt ended: an outcome from the provider, or a local refusal (nothing sent)."""

    outcome: Outcome
    status: int | None = None  # the provider's HTTP status, None without an answer
    sent: bool = False  # may the request have reached the provider?
    answered: bool = False  # an answer came that could not be read (too large, not HTTP)
    failed: bool = False  # counts against the breaker: no answer, or a 5xx
    refused: Outcome | None = None

    @classmethod
    def refusal(cls, code: ErrorCode, message: str, retry_after_s: float | None = None) -> _Tried:
        refused = Outcome(
            spec(code).status, code, message, retry_after_s=retry_after_s, source=Source.GATEWAY
        )
        return cls(refused, refused=refused)


async def _acquire(slots: asyncio.Semaphore, wait_s: float) -> bool:
    """A slot within ``wait_s`` seconds (none at all when ``wait_s`` is not positive)."""
    if slots.locked() and wait_s <= 0:
        return False
    try:
        async with asyncio.timeout(max(wait_s, 0)):
            await slots.acquire()
    except TimeoutError:
        return False
    return True


class Canceller:
    def __init__(
        self,
        runtime: Runtime,
        transport: Transport,
        log: FilteringBoundLogger,
        clock: Clock | None = None,
        *,
        store: Store | None = None,
        guards: GuardRegistry | None = None,
        rand: Callable[[], float] = full_jitter,
    ) -> None:
        self._runtime = runtime
        self._store: Store = store or MemoryStore()
        self._key_ttl_s = runtime.config.store.key_ttl_s
        self._transport = transport
        self._log = log
        self._clock = clock or SystemClock()
        self._redactor = Redactor(runtime.secrets)
        self._guards = guards or GuardRegistry(self._clock.monotonic)
        self._rand = rand

    async def cancel(self, caller: Caller, body: bytes, info: RequestInfo) -> Reply:
        started = self._clock.monotonic()
        facts = _Facts(new_cancellation_id(), caller.name, self._clock.now().timestamp())
        log = self._log.bind(cancellation_id=facts.cancellation_id, caller=caller.name)
        try:
            outcome = await self._run(caller, body, info, facts, log)
        except _Replayed as replayed:
            return self._replay(replayed.replay, log)
        except GatewayError as exc:
            outcome = gateway_outcome(exc)
        except Exception:
            log.exception("cancellation.crashed")
            outcome = gateway_outcome(
                GatewayError(
                    ErrorCode.INTERNAL_ERROR, f"internal error (request {info.request_id})"
                )
            )
        reply = self._reply(facts, outcome, info)
        await self._settle(facts, outcome, reply, log)
        log.info(
            "cancellation.completed",
            status=outcome.status.value,
            error_code=outcome.code.value if outcome.code else None,
            http_status=reply.http_status,
            connection=facts.connection,
            provider=facts.provider,
            resource_id=facts.resource_id,
            duration_ms=_ms(self._clock.monotonic() - started),
        )
        return reply

    async def _run(
        self,
        caller: Caller,
        body: bytes,
        info: RequestInfo,
        facts: _Facts,
        log: FilteringBoundLogger,
    ) -> Outcome:
        try:
            check_idempotency_key(info.idempotency_key)
            request, canonical = parse_request(body)
        except GatewayError:
            log.info("cancellation.received", body_bytes=len(body))
            raise
        facts.connection, facts.resource_id = request.connection, request.id
        log.info(
            "cancellation.received",
            connection=request.connection,
            resource=request.resource,
            resource_id=request.id,
            with_idempotency_key=info.idempotency_key is not None,
        )
        target = route(self._runtime.targets, caller, request.connection)
        facts.provider = target.definition.name
        facts.resource = resolve_resource(target.definition, request.resource)
        call = Call(
            cancellation_id=facts.cancellation_id,
            caller=caller.name,
            idempotency_key=upstream_idempotency_key(caller.name, info, facts.cancellation_id),
            request_id=info.request_id,
            traceparent=info.trace.child_traceparent(),
        )
        upstream = build_request(target, facts.resource, request, call)
        if info.idempotency_key is not None:
            facts.claim = KeyClaim(
                caller.name,
                info.idempotency_key,
                hashlib.sha256(canonical).hexdigest(),
                # Longer than the request can run, so a live claim is never taken over.
                lease_s=self._runtime.policies[target.name].timeout_s + LEASE_MARGIN_S,
                ttl_s=self._key_ttl_s,
            )
        await self._begin(facts, log)
        return await self._send(target, facts, upstream, log)

    async def _begin(self, facts: _Facts, log: FilteringBoundLogger) -> None:
        """Claim the key and record the cancellation as running, or say why not to send."""
        try:
            begun = await self._store.begin(
                facts.entry("running"), facts.claim, self._clock.now().timestamp()
            )
        except StoreUnavailable as exc:
            log.error("store.unavailable", backend=self._store.name, error=str(exc))
            raise GatewayError(
                ErrorCode.STORE_UNAVAILABLE,
                "the idempotency store does not answer; nothing was sent",
                retry_after_s=1,
            ) from None
        if isinstance(begun, Claimed):
            facts.begun, facts.token = True, begun.token
        elif isinstance(begun, Replay):
            raise _Replayed(begun)
        elif isinstance(begun, InProgress):
            raise GatewayError(
                ErrorCode.IDEMPOTENCY_IN_PROGRESS,
                "a request with this Idempotency-Key is still running",
                retry_after_s=max(1, math.ceil(begun.retry_after_s)),
            )
        else:
            raise GatewayError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "this Idempotency-Key was used with a different request",
                fields=[("headers.Idempotency-Key", "already used with a different body")],
            )

    async def _settle(
        self, facts: _Facts, outcome: Outcome, reply: Reply, log: FilteringBoundLogger
    ) -> None:
        """Record the outcome; a definite one is kept for replays, a failed one releases the
        key. The answer stands even when this fails: it is logged in full instead."""
        entry = facts.entry(
            outcome.status.value,
            error_code=outcome.code.value if outcome.code else None,
            attempts=facts.upstream.attempts if facts.upstream else 0,
            completed_at=self._clock.now().timestamp(),
            envelope=reply.body,
        )
        try:
            if not facts.begun:
                await self._store.record(entry)
                return
            stored = None
            if outcome.status in DEFINITE:
                headers = tuple((k, v) for k, v in reply.headers.items() if k != "X-Request-ID")
                stored = StoredReply(reply.http_status, headers, reply.body)
            await self._store.complete(
                entry, facts.claim, facts.token, stored, self._clock.now().timestamp()
            )
        except StoreUnavailable as exc:
            log.error(
                "ledger.write_failed",
                backend=self._store.name,
                error=str(exc),
                envelope=orjson.loads(reply.body),
            )

    def _replay(self, replay: Replay, log: FilteringBoundLogger) -> Reply:
        stored = replay.reply
        log.info(
            "cancellation.replayed",
            original_cancellation_id=replay.cancellation_id,
            http_status=stored.http_status,
        )
        headers = dict(stored.headers)
        headers["Idempotent-Replayed"] = "true"
        return Reply(stored.http_status, stored.body, headers)

    async def _send(
        self,
        target: Target,
        facts: _Facts,
        request: UpstreamRequest,
        log: FilteringBoundLogger,
    ) -> Outcome:
        """Attempts within the connection's budget, as the retry rules allow (README,
        "Resilience"). Nothing is sent while the breaker is open or the limits are full."""
        assert facts.resource is not None
        policy = self._runtime.policies[target.name]
        guards = self._guards.get(target.name, policy)
        retry_safe = target.definition.resources[facts.resource].retry_safe
        first = self._clock.monotonic()
        deadline = first + policy.timeout_s
        guards.budget.record_request()
        outcome: Outcome | None = None
        attempts = 0
        while True:
            tried = await self._attempt(
                target, facts.resource, guards, policy, request, deadline, attempts + 1, log
            )
            if tried.refused is not None:
                # A retry refused by the breaker or the limits keeps the provider's last answer.
                outcome = outcome or tried.refused
                break
            attempts += 1
            outcome = tried.outcome
            facts.upstream = UpstreamInfo(
                method=request.method,
                url=request.url,
                status=tried.status,
                attempts=attempts,
                latency_ms=_ms(self._clock.monotonic() - first),
            )
            delay = self._retry_delay(tried, attempts, policy, retry_safe, deadline, guards, log)
            if delay is None:
                break
            await self._clock.sleep(delay)
        return outcome

    async def _attempt(
        self,
        target: Target,
        resource: str,
        guards: Guards,
        policy: Policy,
        request: UpstreamRequest,
        deadline: float,
        attempt: int,
        log: FilteringBoundLogger,
    ) -> _Tried:
        """One attempt through the breaker, the rate limit and the bulkhead, in that order."""
        title = target.definition.title or target.definition.name
        if not guards.breaker.admit():
            guards.count_rejection("breaker_open")
            wait = guards.breaker.retry_in_s()
            log.warning("upstream.refused", reason="breaker_open", attempt=attempt)
            return _Tried.refusal(
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"{title} is failing: the circuit is open, nothing was sent",
                retry_after_s=max(1.0, wait),
            )
        try:
            limit = deadline - self._clock.monotonic()
            if policy.limits.max_wait_s is not None:
                limit = min(limit, policy.limits.max_wait_s)
            if guards.bucket is not None:
                granted, wait = guards.bucket.reserve(limit)
                if not granted:
                    guards.breaker.abandon()
                    guards.count_rejection("rate_limit")
                    log.warning("upstream.refused", reason="rate_limit", attempt=attempt)
                    return _Tried.refusal(
                        ErrorCode.RATE_LIMITED,
                        f"the rate limit of {title} is reached, nothing was sent",
                        retry_after_s=max(1.0, wait),
                    )
                if wait > 0:
                    await self._clock.sleep(wait)
                    limit -= wait
            if not await _acquire(guards.bulkhead, limit):
                guards.breaker.abandon()
                guards.count_rejection("concurrency")
                log.warning("upstream.refused", reason="concurrency", attempt=attempt)
                return _Tried.refusal(
                    ErrorCode.PROVIDER_UNAVAILABLE,
                    f"{policy.limits.concurrency} cancellations are already in flight "
                    f"to {title}, nothing was sent",
                )
            try:
                tried = await self._exchange(
                    target, resource, policy, request, deadline, attempt, log
                )
            finally:
                guards.bulkhead.release()
        except BaseException:
            guards.breaker.abandon()
            raise
        guards.breaker.record(failed=tried.failed)
        return tried

    async def _exchange(
        self,
        target: Target,
        resource: str,
        policy: Policy,
        request: UpstreamRequest,
        deadline: float,
        attempt: int,
        log: FilteringBoundLogger,
    ) -> _Tried:
        """Send once and classify the answer."""
        started = self._clock.monotonic()
        timeout = deadline - started
        if policy.attempt_timeout_s is not None:
            timeout = min(timeout, policy.attempt_timeout_s)
        log.info("upstream.request", method=request.method, url=request.url, attempt=attempt)
        try:
            response = await self._transport(request, timeout, policy.connect_timeout_s)
        except UpstreamFailure as failure:
            log.warning(
                "upstream.error",
                code=failure.code.value,
                message=failure.message,
                sent=failure.sent,
                latency_ms=_ms(self._clock.monotonic() - started),
                attempt=attempt,
            )
            title = target.definition.title or target.definition.name
            outcome = Outcome(
                spec(failure.code).status, failure.code, f"{title}: {failure.message}"
            )
            answered = failure.code is ErrorCode.PROVIDER_BAD_RESPONSE
            return _Tried(outcome, sent=failure.sent, answered=answered, failed=True)
        latency = _ms(self._clock.monotonic() - started)
        log.info("upstream.response", status=response.status, latency_ms=latency, attempt=attempt)
        outcome = classify(target.definition, resource, response, self._clock.now())
        return _Tried(outcome, status=response.status, sent=True, failed=response.status >= 500)

    def _retry_delay(
        self,
        tried: _Tried,
        attempts: int,
        policy: Policy,
        retry_safe: bool,
        deadline: float,
        guards: Guards,
        log: FilteringBoundLogger,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when this outcome is final."""
        if attempts >= policy.retry.max_attempts:
            return None
        if tried.status == 429:
            reason: str | None = "rate limited"
            given = tried.outcome.retry_after_s
            delay = given if given is not None else backoff_s(attempts, policy.retry, self._rand)
        else:
            reason = retry_reason(
                status=tried.status, sent=tried.sent, retry_safe=retry_safe, answered=tried.answered
            )
            delay = backoff_s(attempts, policy.retry, self._rand)
        if reason is None or delay >= deadline - self._clock.monotonic():
            return None
        if not guards.budget.try_retry():
            log.warning("upstream.retry_budget_exhausted", attempt=attempts)
            return None
        log.info("upstream.retry", attempt=attempts, reason=reason, delay_ms=_ms(delay))
        return delay

    def _reply(self, facts: _Facts, outcome: Outcome, info: RequestInfo) -> Reply:
        succeeded = outcome.status in (Status.CANCELLED, Status.ALREADY_CANCELLED)
        error = None
        if outcome.code is not None:
            error = error_body(
                outcome.code,
                outcome.message,
                outcome.source,
                provider_code=outcome.provider_code,
                provider_status=outcome.provider_status,
                retry_after_s=outcome.retry_after_s,
                fields=outcome.fields,
            )
        envelope = Envelope(
            cancellation_id=facts.cancellation_id,
            status=outcome.status,
            connection=facts.connection,
            provider=facts.provider,
            resource=facts.resource,
            resource_id=facts.resource_id,
            cancelled_at=(outcome.cancelled_at or format_time(self._clock.now()))
            if succeeded
            else None,
            provider_response=outcome.provider_response if succeeded else None,
            error=error,
            upstream=facts.upstream,
            request_id=info.request_id,
            trace_id=info.trace.trace_id,
        )
        http_status = 200 if outcome.code is None else spec(outcome.code).http_status
        return Reply(
            http_status,
            render_envelope(envelope, self._redactor),
            reply_headers(info.request_id, outcome.retry_after_s),
        )


def parse_request(body: bytes) -> tuple[CancelRequest, bytes]:
    """The canonical request, strictly: JSON only (no NaN/Infinity), no unknown fields; and
    the body's canonical JSON (keys sorted), the idempotency fingerprint's input."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"the body is not valid JSON: {exc}",
            fields=[("body", "not valid JSON")],
        ) from None
    if not isinstance(data, dict):
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            "the body must be a JSON object",
            fields=[("body", "must be a JSON object")],
        )
    try:
        request = CancelRequest.model_validate(data)
    except ValidationError as exc:
        problems = [
            (".".join(str(p) for p in e["loc"]) or "body", e["msg"].removeprefix("Value error, "))
            for e in exc.errors(include_input=False, include_url=False)
        ]
        summary = "; ".join(f"{loc}: {message}" for loc, message in problems)
        raise GatewayError(
            ErrorCode.INVALID_REQUEST, f"invalid request: {summary}", fields=problems
        ) from None
    return request, orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def check_idempotency_key(value: str | None) -> str | None:
    if value is not None and not _IDEMPOTENCY_KEY.fullmatch(value):
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            fields=[("headers.Idempotency-Key", "must be 1 to 255 printable ASCII characters")],
        )
    return value


def upstream_idempotency_key(caller: str, info: RequestInfo, cancellation_id: str) -> str:
    """The key sent to providers that honour one: stable across attempts and, when the caller
    gave a key, across the caller's retries too. Derived, so one caller's key never collides
    with another's at the provider."""
    if info.idempotency_key is None:
        return cancellation_id
    digest = hashlib.sha256(f"{caller}\n{info.idempotency_key}".encode()).hexdigest()
    return f"cg-{digest[:40]}"


def gateway_outcome(exc: GatewayError) -> Outcome:
    return Outcome(
        spec(exc.code).status,
        exc.code,
        exc.message,
        retry_after_s=exc.retry_after_s,
        source=Source.GATEWAY,
        fields=tuple(exc.fields),
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


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
