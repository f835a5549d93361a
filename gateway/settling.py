"""Settling in the background (CONTRACT §10): every ``serve`` process takes the steps the store
says are due (``Store.take_due``, one holder at a time, under a lease) and works on them:

- ``recover`` — a cancellation whose process died while sending it (its claim ran out): the
  status probe asks what became of it; without one, it is sent again when that is safe and it
  was asynchronous, and otherwise it ends ``failed`` ``outcome_unknown``;
- ``send`` — an asynchronous cancellation, sent (and repeated when safe) like any other;
- ``probe`` — a pending one: probed until the provider says how it ended;
- ``webhook`` — a final envelope delivered to the caller's webhook (webhooks.py).

Whatever is not settled yet is written back as ``pending`` with its next step on a growing
schedule, until the connection's ``async.max_age_s`` ends it as ``outcome_unknown``. A step
is written only while its lease is still this process's: a process that stalled past its
lease learns that its work was taken over, and drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
import orjson
from structlog.typing import FilteringBoundLogger

from gateway.cancel import LEASE_MARGIN_S, Canceller, kept
from gateway.config import ServerConfig
from gateway.envelope import Reply
from gateway.errors import ErrorCode, GatewayError, Status, spec
from gateway.facts import Facts
from gateway.inbound import RequestInfo
from gateway.lines import send
from gateway.live import Live
from gateway.models import UpstreamInfo
from gateway.outbound import Outbound
from gateway.request import Prepared, parse_request
from gateway.routing import Caller
from gateway.send import ms
from gateway.services import Services
from gateway.store import Entry, KeyClaim, StoreUnavailable
from gateway.translate.classify import Outcome
from gateway.webhooks import Delivery, deliver, event_body, next_delay, secret_key
from gateway.work import Step

WEBHOOK_TIMEOUT_S = 15.0
MAX_TAKES = 10  # a step taken this often without finishing is abandoned (a bug, logged)
DRAIN_S = 10.0  # how long steps under way may finish when the process stops
SUMMARY_EVERY_S = 10.0  # how often the pending gauges are read from the store
Result = Outcome | GatewayError


class Settler:
    """One process's share of the background work."""

    def __init__(
        self, current: Callable[[], Live], services: Services, server: ServerConfig
    ) -> None:
        self._current = current
        self._services = services
        self._store = services.store
        self._clock = services.clock
        self._log = services.log
        self._poll_s = server.work_poll_s
        self._slots = server.work_concurrency
        self._drain_s = server.drain_timeout_s or DRAIN_S
        self._running: set[asyncio.Task[None]] = set()
        # Who holds a lease: this process, readable in the store, and which of its takes (a
        # step it took again after stalling past its lease is another holder).
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._takes = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        """Take due steps as long as the process serves: at once when this process queued
        one, else every ``work_poll_s`` (an indexed read of the few rows with a step)."""
        due = self._services.work_due.event
        summarized = -SUMMARY_EVERY_S
        try:
            while True:
                due.clear()
                taken = 0
                try:
                    if self._clock.monotonic() - summarized >= SUMMARY_EVERY_S:
                        summarized = self._clock.monotonic()
                        await self._summarize()
                    taken = await self._take()
                except Exception:  # a bug, or a row it cannot read: logged, and polled again
                    self._log.exception("work.failed", backend=self._store.name)
                if taken and len(self._running) < self._slots:
                    await asyncio.sleep(0)  # more may be due: take again after this turn
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(due.wait(), self._poll_s)
        finally:
            await self._drain()

    async def _drain(self) -> None:
        """On stopping: the steps under way get the drain timeout to finish (a step cut
        short is taken again by another process once its lease runs out)."""
        if self._running:
            _, unfinished = await asyncio.wait(self._running, timeout=self._drain_s)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _summarize(self) -> None:
        """The pending gauges: the same store-wide figures from every process."""
        try:
            count, oldest = await self._store.pending_summary()
        except StoreUnavailable:
            return  # said by the next step taken, or by /readyz
        now = self._clock.now().timestamp()
        self._services.metrics.pending_seen(count, 0.0 if oldest is None else now - oldest)

    async def _take(self) -> int:
        free = self._slots - len(self._running)
        if free <= 0:
            return 0
        live = self._current()
        now = self._clock.now().timestamp()
        holder = f"{self.holder}/{next(self._takes)}"
        try:
            taken = await self._store.take_due(holder, now, _lease_s(live.canceller), free)
        except StoreUnavailable as exc:
            self._log.warning("work.store_unavailable", backend=self._store.name, error=str(exc))
            return 0
        for entry in taken:
            task = asyncio.create_task(self._one(live, entry, holder))
            self._running.add(task)
            task.add_done_callback(self._finished)
        return len(taken)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._services.work_due.event.set()  # a slot is free: due steps may be waiting

    async def _one(self, live: Live, entry: Entry, holder: str) -> None:
        log = self._log.bind(cancellation_id=entry.cancellation_id, caller=entry.caller)
        try:
            step = Step.decode(entry.work) if entry.work is not None else None
            if step is None or entry.taken > MAX_TAKES:
                # Unreadable (written by another version), or taken again and again without
                # ever finishing (a bug): ended, so that it does not come back for ever.
                log.error("work.abandoned", taken=entry.taken, readable=step is not None)
                await self._abandon(live.canceller, entry, step, holder)
            elif step.kind == "webhook":
                await self._webhook(live.canceller, entry, step, holder, log)
            else:
                caller = live.callers.named(entry.caller)
                resumed = Resumed(live.canceller, self._services, entry, step, holder, self._log)
                await resumed.run(caller)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: the lease runs out and the step is taken again later
            log.exception("work.crashed")

    async def _abandon(
        self, canceller: Canceller, entry: Entry, step: Step | None, holder: str
    ) -> None:
        """A step that cannot go on: a final answer already given keeps it (a webhook is
        given up); anything else ends ``failed`` ``outcome_unknown``."""
        now = self._clock.now().timestamp()
        if entry.status not in ("running", "pending"):
            await self._end_step(entry, holder)
            return
        if step is None:
            step = Step("recover", None, "", "0" * 32, "01", None, now)
        resumed = Resumed(canceller, self._services, entry, step, holder, self._log)
        await resumed.abandon()

    async def _end_step(self, entry: Entry, holder: str) -> None:
        """The row as it is, with no step left: nothing more is done for it."""
        now = self._clock.now().timestamp()
        await self._store.complete(
            entry._replace(due_at=None, work=None), None, "", None, now, holder
        )

    async def _webhook(
        self,
        canceller: Canceller,
        entry: Entry,
        step: Step,
        holder: str,
        log: FilteringBoundLogger,
    ) -> None:
        """Deliver the final envelope; a failure waits for the schedule's next delivery."""
        webhook = canceller.webhooks.get(entry.caller)
        if webhook is None or entry.envelope is None:  # the caller's webhook was removed
            await self._end_step(entry, holder)
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        now = self._clock.now()
        webhook_id = f"msg_{entry.cancellation_id}"  # the same for every delivery of the event
        # The event happened when the cancellation settled: every delivery sends the same body.
        settled_at = datetime.fromtimestamp(entry.completed_at or now.timestamp(), UTC)
        body = event_body(entry.envelope, settled_at)
        key = secret_key(webhook.secret.get_secret_value())
        delivery = await deliver(
            self._session,
            webhook.url,
            body,
            webhook_id,
            key,
            int(now.timestamp()),
            WEBHOOK_TIMEOUT_S,
        )
        self._services.metrics.webhook_delivered(entry.caller, _webhook_result(delivery))
        events = orjson.loads(entry.events or b"[]")
        events.append(
            {
                "at": now.timestamp(),
                "type": "webhook",
                "status": delivery.status,
                "error": delivery.error,
                "latency_ms": delivery.latency_ms,
            }
        )
        after = None if delivery.ok else next_delay(webhook.retry_schedule_s, step.deliveries + 1)
        if delivery.ok:
            log.info("webhook.delivered", webhook_id=webhook_id, status=delivery.status)
        else:
            log.warning(
                "webhook.failed",
                webhook_id=webhook_id,
                status=delivery.status,
                error=delivery.error,
                retry_in_s=after,
            )
        later = step.then("webhook", deliveries=step.deliveries + 1)
        done = entry._replace(
            events=orjson.dumps(events),
            due_at=None if after is None else now.timestamp() + after,
            work=None if after is None else later.encode(),
        )
        written = await self._store.complete(done, None, "", None, now.timestamp(), holder)
        if written and done.due_at is not None:
            self._services.work_due.at(done.due_at, now.timestamp())


class Resumed:
    """One background step of a cancellation: what is known of it so far, taken up again."""

    def __init__(
        self,
        canceller: Canceller,
        services: Services,
        entry: Entry,
        step: Step,
        holder: str,
        log: FilteringBoundLogger,
    ) -> None:
        self._canceller = canceller
        self._services = services
        self._clock = services.clock
        self._entry = entry
        self._step = step
        self._holder = holder
        self._log = log.bind(
            cancellation_id=entry.cancellation_id,
            caller=entry.caller,
            request_id=step.request_id,
            trace_id=step.trace_id,
        )
        self._info: RequestInfo = step.info()
        events = orjson.loads(entry.events or b"[]")
        # What the row knows, for an answer given before the request is prepared again.
        self._facts = facts = Facts(
            entry.cancellation_id,
            entry.caller,
            entry.created_at,
            connection=entry.connection,
            provider=entry.provider,
            resource=entry.resource,
            resource_id=entry.resource_id,
            events=events,
            step=step,
        )
        facts.running = True
        facts.token = step.token or ""
        if isinstance(step.request, dict) and step.request.get("items") is not None:
            facts.items = parse_request(step.request)[0].items
        shown = orjson.loads(entry.envelope).get("upstream") if entry.envelope else None
        self._before = UpstreamInfo.model_validate(shown) if shown else None
        self._prepared: tuple[Prepared, Outbound] | None = None
        runtime = canceller.runtime
        if step.key is not None and step.fingerprint is not None and step.token is not None:
            self._facts.claim = KeyClaim(
                entry.caller,
                step.key,
                step.fingerprint,
                lease_s=LEASE_MARGIN_S,  # not used: the claim is only settled from here
                ttl_s=runtime.config.store.key_ttl_s,
                token=step.token,
            )

    async def abandon(self) -> None:
        await self._final(_unknown("the gateway could not go on settling it"))

    async def run(self, caller: Caller | None) -> None:
        step, facts, now = self._step, self._facts, self._clock.now().timestamp()
        if now >= step.expires_at:
            await self._final(_unknown("the provider did not settle it within async.max_age_s"))
            return
        lost = self._entry.taken > 1
        try:
            if caller is None:
                raise GatewayError(ErrorCode.FORBIDDEN, f"caller {facts.caller!r} is gone")
            prepared = self._canceller.prepare(caller, step.request, self._info, facts)
        except GatewayError as exc:  # the configuration changed under it
            if step.kind == "send" and not step.pending and not lost:
                await self._final(exc)  # never sent: the refusal is the answer
            else:
                await self._final(_unknown(f"it can no longer be settled: {exc.message}"))
            return
        policy = self._canceller.runtime.policies[prepared.target.name]
        outbound = prepared.outbound(policy)
        self._prepared = prepared, outbound
        probe = prepared.target.definition.resources[prepared.resource].probe
        if probe is not None and not _can_probe(outbound, step):
            probe = None  # it names what an answer gave, and no answer came
        retry_safe = prepared.target.definition.resources[prepared.resource].retry_safe
        repeatable = retry_safe and (step.asynchronous or step.pending)
        # A send taken before by a process that died (or stalled past its lease) may have
        # gone out: the probe asks first, when there is one.
        if step.kind == "send" and (not lost or (probe is None and retry_safe)):
            result = await self._send(outbound, prepared)
            await self._after_send(result, probe is not None, retry_safe)
            return
        if probe is None:  # a recovery without a probe
            if repeatable:
                await self._again("send", _unknown("sent again: the gateway stopped sending it"))
            else:
                await self._final(_unknown("the gateway stopped while sending it"))
            return
        found = await self._canceller.sender.probe_once(
            outbound, self._log, facts.record, step.answer
        )
        self._count_probe(outbound, found)
        await self._after_probe(found)

    async def _send(self, outbound: Outbound, prepared: Prepared) -> Result:
        facts = self._facts
        base = facts.upstream or self._before

        def progress(upstream: UpstreamInfo) -> None:
            facts.upstream = _added(base, upstream)

        result, facts.lines = await send(
            self._canceller.sender,
            outbound,
            prepared,
            self._log,
            progress,
            self._clock.monotonic,
            facts.record,
        )
        return result

    def _count_probe(self, outbound: Outbound, found: Outcome | None) -> None:
        """The envelope's ``upstream`` after a probe: the cancel's figures, one probe more."""
        probed = UpstreamInfo(
            method=outbound.request.method,
            url=outbound.request.shown_url,
            status=None,
            attempts=0,
            latency_ms=0.0,
            probes=1 if found is not None else 0,
        )
        self._facts.upstream = _added(self._facts.upstream or self._before, probed)

    async def _after_send(self, result: Result, has_probe: bool, retry_safe: bool) -> None:
        if isinstance(result, GatewayError):  # refused here (breaker, limits): nothing sent
            if spec(result.code).retryable:
                await self._again("send", result)
            else:
                await self._final(result)
            return
        if result.status is Status.FAILED:
            # Refused (429), or not applied as a probe found: sending it again is safe.
            not_applied = result.code is ErrorCode.RATE_LIMITED or result.probed == "not_cancelled"
            if not_applied or (retry_safe and result.retryable):
                await self._again("send", result)
                return
            if has_probe and result.retryable:
                await self._again("probe", result)
                return
        if result.status is Status.PENDING:
            await self._again("probe", result)
            return
        await self._final(result)

    async def _after_probe(self, found: Outcome | None) -> None:
        said = found.probed if found is not None else None
        step = self._step
        if found is not None and said in ("cancelled", "not_found"):
            await self._final(found)
        elif said == "not_cancelled" and not (step.asynchronous or step.pending):
            # Answered to nobody (its process died): the caller, who got no answer, asks
            # again; a repeat from here could cross theirs.
            await self._final(
                _unknown("the gateway stopped while sending it; it is not cancelled: ask again")
            )
        elif said == "not_cancelled" and self._prepared is not None:
            # Not applied: sent again at once, while the probe's word still holds.
            prepared, outbound = self._prepared
            result = await self._send(outbound, prepared)
            await self._after_send(result, True, False)
        else:  # pending, or no answer that says: asked again later
            await self._again("probe", _unknown("the provider has not said how it ended"))

    async def _again(self, kind: str, result: Result) -> None:
        """Not settled yet: written back as pending, with its next step on the schedule."""
        step, facts = self._step, self._facts
        facts.upstream = facts.upstream or self._before
        now = self._clock.now().timestamp()
        if now >= step.expires_at:
            await self._final(_unknown("the provider did not settle it within async.max_age_s"))
            return
        wait = self._canceller.wait_before(facts.connection, step.tries + 1)
        answer = result.provider_response if isinstance(result, Outcome) else {}
        after = step.then(
            "probe" if kind == "probe" else "send",
            tries=step.tries + 1,
            pending=True,
            answer=answer or step.answer,
        )
        facts.record({"at": now, "type": "scheduled", "step": after.kind, "due": now + wait})
        pending = Outcome(Status.PENDING)
        reply = self._canceller.reply(facts, pending, self._info)
        entry = self._entry_of(pending, reply.body, None, now + wait, after.encode())
        written = await self._write(entry, reply)
        if written and self._entry.status != Status.PENDING.value:
            self._log.info(
                "cancellation.pending",
                connection=facts.connection,
                resource_id=facts.resource_id,
                reason=result.code.value if result.code else None,
            )
        self._log.info("work.scheduled", step=after.kind, delay_ms=ms(wait))

    async def _final(self, result: Result) -> None:
        facts = self._facts
        now = self._clock.now().timestamp()
        facts.record(
            {
                "at": now,
                "type": "settled",
                "status": result.status.value,
                "error_code": result.code.value if result.code else None,
            }
        )
        facts.upstream = facts.upstream or self._before
        reply = self._canceller.reply(facts, result, self._info)
        due_at, work = self._canceller.next_step(facts, result, now)
        entry = self._entry_of(result, reply.body, now, due_at, work)
        if not await self._write(entry, reply):
            return
        settle_s = now - self._entry.created_at
        self._services.metrics.settled(facts.connection, result.status.value, settle_s)
        self._log.info(
            "cancellation.settled",
            status=result.status.value,
            error_code=result.code.value if result.code else None,
            connection=facts.connection,
            resource_id=facts.resource_id,
            settle_s=round(settle_s, 3),
        )

    def _entry_of(
        self,
        result: Result,
        envelope: bytes,
        completed_at: float | None,
        due_at: float | None,
        work: bytes | None,
    ) -> Entry:
        upstream = self._facts.upstream
        attempts = upstream.attempts if upstream else self._entry.attempts
        return self._facts.entry(
            result.status.value,
            error_code=result.code.value if result.code else None,
            attempts=attempts,
            completed_at=completed_at,
            envelope=envelope,
            due_at=due_at,
            work=work,
        )

    async def _write(self, entry: Entry, reply: Reply) -> bool:
        """Written only while this process still holds the step's lease."""
        stored = kept(reply)
        now = self._clock.now().timestamp()
        try:
            written = await self._services.store.complete(
                entry, self._facts.claim, self._facts.token, stored, now, self._holder
            )
        except StoreUnavailable as exc:
            self._log.warning("work.store_unavailable", error=str(exc))
            return False
        if not written:
            self._log.info("work.taken_over")
        elif entry.due_at is not None:
            self._services.work_due.at(entry.due_at, now)
        return written


def _added(before: UpstreamInfo | None, now: UpstreamInfo) -> UpstreamInfo:
    """``upstream`` counts every attempt and probe made for the cancellation, in every step:
    ``now``'s figures added to those known ``before``."""
    if before is None:
        return now
    return now.model_copy(
        update={
            "attempts": before.attempts + now.attempts,
            "probes": before.probes + now.probes,
            "status": now.status if now.status is not None else before.status,
            "latency_ms": now.latency_ms or before.latency_ms,
        }
    )


def _can_probe(outbound: Outbound, step: Step) -> bool:
    """Can the probe be built with what is known (a probe may name the answer's values)?"""
    if outbound.reader is None:
        return False
    try:
        outbound.reader.probe(step.answer)
    except GatewayError:
        return False
    return True


def _unknown(message: str) -> Outcome:
    """The provider's part is unknown (CONTRACT §10): source ``provider``, retryable."""
    return Outcome(Status.FAILED, ErrorCode.OUTCOME_UNKNOWN, message)


def _lease_s(canceller: Canceller) -> float:
    """How long a step is this process's: longer than any connection's budget (a send or a
    probe) and than a webhook delivery, by the margin a claim has (CONTRACT §10)."""
    longest = [c.timeout_s for c in canceller.runtime.config.connections.values()]
    if canceller.webhooks:
        longest.append(WEBHOOK_TIMEOUT_S)
    return max(longest, default=WEBHOOK_TIMEOUT_S) + LEASE_MARGIN_S


def _webhook_result(delivery: Delivery) -> str:
    if delivery.ok:
        return "delivered"
    return "http_error" if delivery.status is not None else (delivery.error or "error")
