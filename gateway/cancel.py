"""One cancellation from start to finish: parse → route → build → send → classify → envelope.

Every cancellation logs ``cancellation.received`` and ``cancellation.completed``, whatever
happens in between (a bug included), so no record is lost.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from typing import Any, TypeVar

import orjson
from structlog.typing import FilteringBoundLogger

from gateway.envelope import (
    Reply,
    gateway_envelope,
    render_envelope,
    reply_headers,
)
from gateway.errors import ErrorCode, GatewayError, Status, invalid_request, spec
from gateway.facts import Facts
from gateway.inbound import Decoded, RequestInfo, check_idempotency_key, json_body
from gateway.lines import send
from gateway.loader import Runtime
from gateway.models import (
    CancelRequest,
    Preview,
    PreviewRequest,
    UpstreamInfo,
    new_cancellation_id,
)
from gateway.redact import cut
from gateway.request import (
    Prepared,
    callers_text,
    fingerprint,
    parse_request,
    upstream_idempotency_key,
)
from gateway.routing import Caller, route
from gateway.send import Sender, ms
from gateway.services import Services
from gateway.store import (
    Claimed,
    InProgress,
    KeyClaim,
    Replay,
    StoredReply,
    StoreUnavailable,
)
from gateway.translate.build import (
    Call,
    build_attempts,
    build_lines,
    build_reader,
    resolve_resource,
)
from gateway.translate.classify import MAX_PROVIDER_MESSAGE, Outcome
from gateway.work import delay_s, first_step

_T = TypeVar("_T")

LEASE_MARGIN_S = 10.0
# How long past the budget the answer may wait for the ledger's last write: the contract allows
# 0.5 s past it for everything after the send (CONTRACT §11); the rest is the answer's own.
ANSWER_MARGIN_S = 0.4
# A store operation ends within store.timeout_s, give or take the loop's turn.
STORE_TIMEOUT_SLACK_S = 0.1
DEFINITE = frozenset({Status.CANCELLED, Status.ALREADY_CANCELLED, Status.REJECTED})
# What a replay answers again: a definite outcome, or "pending" until the final one replaces it.
KEPT = DEFINITE | {Status.PENDING}


class _Replayed(Exception):
    """The store holds this request's final answer: it is answered again, nothing is sent."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay


class Canceller:
    """Cancellations under one configuration (``runtime``), with the process's services."""

    def __init__(self, runtime: Runtime, services: Services) -> None:
        self._runtime = runtime
        self._store = services.store
        self._key_ttl_s = runtime.config.store.key_ttl_s
        self._store_timeout_s = runtime.config.store.timeout_s
        self._log = services.log
        self._clock = services.clock
        self._redactor = services.redactor
        self._metrics = services.metrics
        self._health = services.metrics.health
        self._rand = services.rand
        self._work_due = services.work_due
        self._admission = services.admission
        self.sender = Sender(services)
        self.webhooks = {c.name: c.webhook for c in runtime.config.callers if c.webhook}
        self._late_writes: set[asyncio.Future[object]] = set()  # answered before they ended

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    def prepare(self, caller: Caller, data: Any, info: RequestInfo, facts: Facts) -> Prepared:
        """Parse, route and build: everything short of sending. What is learnt on the way goes
        into ``facts``, so that a refusal's envelope says as much as is known. Every problem
        the caller can fix is reported at once, the provider's limits with the request's own."""
        check_idempotency_key(info.idempotency_key)
        request, problems = parse_request(data)
        facts.connection, facts.resource_id = request.connection, request.id
        facts.items = request.items  # each line answers, whatever ends the cancellation
        facts.callers_text = callers_text(request, info)
        try:
            prepared = self._build(caller, request, info, facts)
        except GatewayError as exc:
            if not problems:
                raise
            if exc.code is ErrorCode.INVALID_REQUEST:
                # What the provider's checks found about fields that were valid themselves.
                reported = {loc.split(".")[0] for loc, _ in problems}
                problems.extend(f for f in exc.fields if f[0].split(".")[0] not in reported)
            elif exc.code in (ErrorCode.UNKNOWN_CONNECTION, ErrorCode.FORBIDDEN):
                problems.append(("connection", exc.message))
            raise invalid_request(*problems) from None
        if problems:
            raise invalid_request(*problems)
        return prepared

    def _build(
        self, caller: Caller, request: CancelRequest, info: RequestInfo, facts: Facts
    ) -> Prepared:
        if request.connection is None or request.id is None:
            raise invalid_request()  # nothing to route or build: the parse said why
        target = route(self._runtime.targets, caller, request.connection)
        facts.provider = target.definition.name
        resource = facts.resource = resolve_resource(target.definition, request.resource)
        call = Call(
            cancellation_id=facts.cancellation_id,
            caller=caller.name,
            idempotency_key=upstream_idempotency_key(caller.name, info, facts.cancellation_id),
            request_id=info.request_id,
            traceparent=info.trace.child_traceparent(),
            tracestate=info.trace.state,
        )
        now = self._clock.now
        lines = build_lines(target, resource, request, call, now)
        if lines is not None:
            upstream, rebuild, reader = lines[0]  # what a preview shows first
        else:
            upstream, rebuild = build_attempts(target, resource, request, call, now)
            reader = build_reader(target, resource, request, call, now)
        return Prepared(request, target, resource, upstream, rebuild, lines, reader)

    def _new_facts(self, caller: Caller) -> Facts:
        """A new cancellation: its id and when it was asked for."""
        now = self._clock.now().timestamp()
        facts = Facts(new_cancellation_id(), caller.name, now)
        facts.record({"at": now, "type": "received"})  # unix seconds: written out when read
        return facts

    def preview(self, caller: Caller, body: bytes, info: RequestInfo) -> Preview:
        """What ``cancel`` would send, after the same checks; nothing is sent or recorded.
        The caller's values are shown as sent and the credential headers masked by name:
        nothing in a preview depends on whether a value equals a secret."""
        prepared = self.prepare(caller, json_body(body), info, self._new_facts(caller))
        upstream = prepared.upstream
        return Preview(
            connection=prepared.target.name,
            provider=prepared.target.definition.name,
            resource=prepared.resource,
            resource_id=prepared.request.id,
            upstream_request=PreviewRequest(
                method=upstream.method,
                url=upstream.shown_url,
                headers=upstream.shown_headers(),
                body=upstream.shown_body(),
            ),
            request_id=info.request_id,
            trace_id=info.trace.trace_id,
        )

    async def cancel(self, caller: Caller, body: bytes | Decoded, info: RequestInfo) -> Reply:
        """One cancellation from its request body (``Decoded`` when it is already JSON: an
        item of a batch), answered with its envelope whatever happens; ``overloaded`` at once
        when this process already works on ``server.max_in_flight`` of them."""
        if not self._admission.enter():
            self._metrics.overloaded()
            return overloaded_reply(info)
        try:
            return await self._cancel(caller, body, info)
        finally:
            self._admission.leave()

    async def _cancel(self, caller: Caller, body: bytes | Decoded, info: RequestInfo) -> Reply:
        started = self._clock.monotonic()
        facts = self._new_facts(caller)
        try:
            return await self._answer(caller, body, info, facts, started)
        finally:
            if facts.in_flight:  # routed: counted among its connection's cancellations
                self._health.left(facts.in_flight)

    async def _answer(
        self, caller: Caller, body: bytes | Decoded, info: RequestInfo, facts: Facts, started: float
    ) -> Reply:
        log = self._log.bind(cancellation_id=facts.cancellation_id, caller=caller.name)
        result: Outcome | GatewayError  # the provider's outcome, or the gateway's decision
        try:
            result = await self._run(caller, body, info, facts, log)
        except _Replayed as replayed:
            self._metrics.replayed()
            return self._replay(replayed.replay, facts, log, started)
        except GatewayError as exc:
            result = exc
        except Exception:
            result = _crashed(log, info)
        try:
            reply = self.reply(facts, result, info)
        except Exception:  # a bug: the answer is still an envelope, recorded and logged
            result = _crashed(log, info)
            reply = self.reply(facts, result, info)
        await self._settle(facts, result, reply, log)
        error_code = result.code.value if result.code else None
        routed = facts.connection if facts.provider else None
        self._metrics.cancellation_completed(
            routed, facts.provider, result.status.value, error_code
        )
        provider_code = None
        if isinstance(result, Outcome):
            provider_code = self._logged_code(result.provider_code)
            if result.unmapped and routed and facts.provider:
                self._metrics.unmapped_error(routed, facts.provider, result.provider_status)
        log.info(
            "cancellation.completed",
            status=result.status.value,
            error_code=error_code,
            http_status=reply.http_status,
            connection=facts.connection,
            provider=facts.provider,
            resource_id=facts.resource_id,
            provider_code=provider_code,
            duration_ms=ms(self._clock.monotonic() - started),
        )
        return reply

    def _logged_code(self, code: str | None) -> str | None:
        """The provider's code as a log line shows it: redacted of every secret, then cut."""
        return None if code is None else cut(self._redactor.text(code), MAX_PROVIDER_MESSAGE)

    async def _run(
        self,
        caller: Caller,
        body: bytes | Decoded,
        info: RequestInfo,
        facts: Facts,
        log: FilteringBoundLogger,
    ) -> Outcome | GatewayError:
        try:
            data = body.value if isinstance(body, Decoded) else json_body(body)
            prepared = self.prepare(caller, data, info, facts)
        finally:
            if facts.resource_id is None:
                size = None if isinstance(body, Decoded) else len(body)
                log.info("cancellation.received", body_bytes=size)
            else:
                log.info(
                    "cancellation.received",
                    connection=facts.connection,
                    resource=facts.resource,
                    resource_id=facts.resource_id,
                    with_idempotency_key=info.idempotency_key is not None,
                )
        facts.in_flight = prepared.target.name
        self._health.entered(facts.in_flight)
        # What a retry would send again (the console's "retry" curl): the request as sent,
        # the values of sensitive keys masked by their names (never by value: no oracle).
        facts.events[0]["request"] = self._redactor.masked_by_name(data)
        if info.idempotency_key is not None:
            facts.events[0]["idempotency_key"] = info.idempotency_key
        policy = self._runtime.policies[prepared.target.name]
        # Longer than the request can run, so a live claim is never taken over.
        lease_s = policy.timeout_s + LEASE_MARGIN_S
        if info.idempotency_key is not None:
            facts.claim = KeyClaim(
                caller.name,
                info.idempotency_key,
                fingerprint(data),
                lease_s=lease_s,
                ttl_s=self._key_ttl_s,
            )
        claim = facts.claim
        settling = self._runtime.config.connections[prepared.target.name].settling
        facts.step = first_step(
            "recover",
            data,
            info,
            facts.created_at + settling.max_age_s,
            (claim.fingerprint, claim.token) if claim is not None else None,
        )
        # The budget counts from the request's arrival: time spent before sending (reading the
        # body, the store, waiting for the loop) is the caller's time too (CONTRACT §11).
        if info.arrived is not None:
            facts.deadline = info.arrived + policy.timeout_s
        await self._begin(facts, lease_s, log)
        if info.asynchronous:  # recorded: it is sent in the background (settling.py)
            facts.step = facts.step.then("send")
            return Outcome(Status.PENDING)
        outbound = prepared.outbound(policy)

        def progress(upstream: UpstreamInfo) -> None:
            facts.upstream = upstream

        clock = self._clock.monotonic
        result, facts.lines = await send(
            self.sender, outbound, prepared, log, progress, clock, facts.record, facts.deadline
        )
        return result

    async def _begin(self, facts: Facts, lease_s: float, log: FilteringBoundLogger) -> None:
        """Claim the key and record the cancellation as running, or say why not to send. Its
        step (``recover``) falls due when the claim expires: if this process dies before
        the answer, another one settles it (settling.py)."""
        now = self._clock.now().timestamp()
        assert facts.step is not None
        running = facts.entry("running", due_at=now + lease_s, work=facts.step.encode())
        try:
            # Not past the budget: what has no record by then is not sent.
            answer = await self._by(facts.deadline, self._store.begin(running, facts.claim, now))
        except (StoreUnavailable, TimeoutError) as exc:
            error = str(exc) or "no answer within the cancellation's budget"
            log.error("store.unavailable", backend=self._store.name, error=error)
            raise GatewayError(
                ErrorCode.STORE_UNAVAILABLE,
                "the idempotency store does not answer; nothing was sent",
                retry_after_s=1,
            ) from None
        if isinstance(answer, Claimed):
            facts.running, facts.token = True, answer.token
        elif isinstance(answer, Replay):
            raise _Replayed(answer)
        elif isinstance(answer, InProgress):
            raise GatewayError(
                ErrorCode.IDEMPOTENCY_IN_PROGRESS,
                "a request with this Idempotency-Key is still running",
                retry_after_s=max(1, math.ceil(answer.retry_after_s)),
            )
        else:
            raise GatewayError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "this Idempotency-Key was used with a different request",
                fields=[("headers.Idempotency-Key", "already used with a different body")],
            )

    async def _settle(
        self,
        facts: Facts,
        result: Outcome | GatewayError,
        reply: Reply,
        log: FilteringBoundLogger,
    ) -> None:
        """Record the result; a definite one is kept for replays, a failed one releases the
        key. The answer stands even when this fails: it is logged in full instead."""
        now = self._clock.now().timestamp()
        code = result.code.value if result.code else None
        due_at, work = self.next_step(facts, result, now)
        if result.status is Status.PENDING and due_at is not None and facts.step is not None:
            facts.record({"at": now, "type": "scheduled", "step": facts.step.kind, "due": due_at})
            log.info(
                "cancellation.pending",
                connection=facts.connection,
                resource_id=facts.resource_id,
                asynchronous=facts.step.asynchronous,
            )
        else:
            facts.record(
                {"at": now, "type": "settled", "status": result.status.value, "error_code": code}
            )
        entry = facts.entry(
            result.status.value,
            error_code=result.code.value if result.code else None,
            attempts=facts.upstream.attempts if facts.upstream else 0,
            completed_at=None if result.status is Status.PENDING else now,
            envelope=reply.body,
            due_at=due_at,
            work=work,
        )
        write: Coroutine[Any, Any, object]
        if not facts.running:
            write = self._store.record(entry)
        else:
            stored = None
            if result.status in KEPT and facts.claim is not None:  # kept for a key's replays
                stored = kept(reply)
            write = self._store.complete(entry, facts.claim, facts.token, stored, now)
            if due_at is not None:
                self._work_due.at(due_at, now)
        await self._write_in_time(write, facts, reply, log)

    async def _write_in_time(
        self,
        write: Coroutine[Any, Any, object],
        facts: Facts,
        reply: Reply,
        log: FilteringBoundLogger,
    ) -> None:
        """Wait for the ledger's write of the answer until the budget (and the margin the
        contract gives it) is spent; a write still under way then goes on after the answer
        (``ledger.write_late``), and a write that fails is logged with the envelope in full:
        the answer stands either way."""
        left = None
        if facts.deadline is not None:
            left = self._seconds_until(facts.deadline + ANSWER_MARGIN_S)
        if left is None or left > self._store_timeout_s + STORE_TIMEOUT_SLACK_S:
            # The store's own timeout ends the write first: waited for as it is (the usual
            # case, and the cheapest: no task, no timer).
            try:
                await write
            except Exception as exc:
                self._write_failed(exc, reply, log)
            return
        task = asyncio.ensure_future(write)
        done, _ = await asyncio.wait({task}, timeout=left)
        if task in done:
            self._write_ended(task, reply, log)
            return
        log.warning("ledger.write_late", backend=self._store.name)
        self._late_writes.add(task)
        task.add_done_callback(self._late_writes.discard)
        task.add_done_callback(lambda ended: self._write_ended(ended, reply, log))

    def _write_ended(self, task: asyncio.Future[object], reply: Reply, log: Any) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self._write_failed(exc, reply, log)

    def _write_failed(self, exc: BaseException, reply: Reply, log: Any) -> None:
        bug = not isinstance(exc, StoreUnavailable)  # the store down, or a bug in it
        log.error(
            "ledger.write_failed",
            backend=self._store.name,
            error=str(exc),
            exc_info=exc if bug else False,
            envelope=orjson.loads(reply.body),
        )

    async def _by(self, deadline: float | None, call: Coroutine[Any, Any, _T]) -> _T:
        """The store's answer to ``call``, or TimeoutError at ``deadline`` (the services'
        monotonic clock). A deadline further than the store's own timeout needs no timer."""
        left = None if deadline is None else self._seconds_until(deadline)
        if left is None or left > self._store_timeout_s + STORE_TIMEOUT_SLACK_S:
            return await call
        async with asyncio.timeout(left):
            return await call

    def _seconds_until(self, deadline: float) -> float:
        return max(0.0, deadline - self._clock.monotonic())

    def next_step(
        self, facts: Facts, result: Outcome | GatewayError, now: float
    ) -> tuple[float | None, bytes | None]:
        """What is left to do once ``result`` is known, and when (``facts.step`` becomes it):
        a pending cancellation is sent (asynchronous) or probed; a final one of a caller with
        a webhook is delivered when it was pending, or always with ``all``; else nothing."""
        step = facts.step
        if step is None or not facts.running:
            return None, None
        due_at: float = now
        if result.status is Status.PENDING:
            if step.kind != "send":  # the provider's pending answer: probed on the schedule
                answered = result.provider_response if isinstance(result, Outcome) else {}
                due_at += self.wait_before(facts.connection, step.tries)
                step = step.then("probe", pending=True, answer=answered)
        else:
            webhook = self.webhooks.get(facts.caller)
            if webhook is None or not (step.pending or webhook.all):
                return None, None
            step = step.then("webhook")
        facts.step = step
        return due_at, step.encode()

    def wait_before(self, connection: str | None, tries: int) -> float:
        """The wait before a background send or probe, after ``tries`` of them, on the
        connection's schedule (work.py)."""
        settings = self._runtime.config.connections[connection or ""].settling
        return delay_s(settings, tries, self._rand())

    def _replay(
        self, replay: Replay, facts: Facts, log: FilteringBoundLogger, started: float
    ) -> Reply:
        """The stored answer again. It is logged as completed too, so that every request
        that reached the cancellation has its `cancellation.completed` line."""
        stored = replay.reply
        log.info(
            "cancellation.replayed",
            original_cancellation_id=replay.cancellation_id,
            http_status=stored.http_status,
        )
        envelope = orjson.loads(stored.body)
        log.info(
            "cancellation.completed",
            status=envelope["status"],
            error_code=(envelope["error"] or {}).get("code"),
            http_status=stored.http_status,
            connection=facts.connection,
            provider=facts.provider,
            resource_id=facts.resource_id,
            replayed=True,
            duration_ms=ms(self._clock.monotonic() - started),
        )
        headers = dict(stored.headers)
        headers["Idempotent-Replayed"] = "true"
        return Reply(stored.http_status, stored.body, headers, envelope["status"])

    def reply(self, facts: Facts, result: Outcome | GatewayError, info: RequestInfo) -> Reply:
        """The envelope of ``result`` and its HTTP status and headers; a pending one says
        where its final envelope will be (``Location``)."""
        answer = self._redactor.answer(facts.callers_text)
        envelope = facts.envelope(result, answer, self._clock.now(), info)
        http_status = 200 if result.code is None else spec(result.code).http_status
        headers = reply_headers(info.request_id, result.retry_after_s)
        if result.status is Status.PENDING:
            http_status = 202
            headers["Location"] = f"/v1/cancellations/{facts.cancellation_id}"
            if info.asynchronous:
                headers["Preference-Applied"] = "respond-async"
        return Reply(http_status, render_envelope(envelope), headers, result.status.value)


def kept(reply: Reply) -> StoredReply:
    """An answer as the store keeps it for replays: all but the request's own id."""
    headers = tuple((k, v) for k, v in reply.headers.items() if k != "X-Request-ID")
    return StoredReply(reply.http_status, headers, reply.body)


OVERLOADED = GatewayError(
    ErrorCode.OVERLOADED,
    "this gateway is at its limit of cancellations in flight; nothing was recorded or sent",
    retry_after_s=1,
)


def overloaded_reply(info: RequestInfo) -> Reply:
    """The refusal of a cancellation over the admission limit: no store, no log line."""
    envelope = gateway_envelope(OVERLOADED, info.request_id, info.trace.trace_id)
    headers = reply_headers(info.request_id, 1)
    return Reply(503, render_envelope(envelope), headers, OVERLOADED.status.value)


def _crashed(log: FilteringBoundLogger, info: RequestInfo) -> GatewayError:
    """A bug met while cancelling: logged with its traceback (called in the ``except``),
    answered as ``internal_error``."""
    log.exception("cancellation.crashed")
    return GatewayError(ErrorCode.INTERNAL_ERROR, f"internal error (request {info.request_id})")
