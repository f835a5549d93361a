"""Settling in the background on a fake transport and clock (CONTRACT §10): a pending answer
probed until final, a cancellation whose process died recovered once its claim expires, the
age limit, and a send a dead process may have made probed before it is made again."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config import AsyncSettings
from gateway.live import Live
from gateway.settling import Resumed, Settler
from gateway.store import Entry
from gateway.work import Step, delay_s
from tests.fakes import BASE_CONFIG, Kit, make_kit, response
from tests.test_cancel import cancel, request_info

JOBS = """
name: jobs
credentials: {token: {}}
auth: {header: X-Token, value: "{credentials.token}"}
resources:
  order:
    method: POST
    path: /orders/{id}/cancel
    pending: {status: [202]}
    success: {when: "state == 'cancelled'"}
    extract: {provider_response: {job: job_id}}
    probe:
      path: /jobs/{answer.job}
      cancelled: "state == 'done'"
      pending: "state == 'running'"
      not_cancelled: "state == 'failed'"
  parcel:
    method: POST
    path: /parcels/{id}/cancel
    success: {when: "state == 'cancelled'"}
    probe:
      path: /parcels/{id}
      cancelled: "state == 'cancelled'"
      not_cancelled: "state == 'open'"
"""
CONFIG = BASE_CONFIG.replace("callers:", "providers: [jobs.yaml]\ncallers:", 1) + (
    "  jobs:\n    provider: jobs\n    base_url: ${UPSTREAM}/j\n"
    "    credentials: {token: jobs-token-0123}\n    timeout_s: 5\n"
    "    async: {first_delay_s: 2, max_delay_s: 8, max_age_s: 60}\n"
)
REQUEST = {"connection": "jobs", "resource": "order", "id": "o-1"}
PARCEL = {"connection": "jobs", "resource": "parcel", "id": "p-1"}
HOLDER = "test-process"


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return make_kit(tmp_path, CONFIG, files={"jobs.yaml": JOBS})


def live(kit: Kit) -> Live:
    return Live(kit.runtime, kit.callers, kit.canceller())


async def due(kit: Kit) -> list[Entry]:
    """Take what is due now and run each step, as a settler would."""
    now = kit.clock.now().timestamp()
    taken = await kit.store.take_due(HOLDER, now, 15.0, 10)
    for entry in taken:
        assert entry.work is not None
        step = Step.decode(entry.work)
        assert step is not None
        resumed = Resumed(kit.canceller(), kit.services, entry, step, HOLDER, kit.services.log)
        await resumed.run(kit.caller(entry.caller))
    return taken


async def row(kit: Kit, cancellation_id: str) -> Entry:
    found = await kit.store.lookup(cancellation_id, "oms")
    assert found is not None
    return found


def paths(kit: Kit) -> list[str]:
    return [s.url.split("/j/", 1)[1] for s in kit.transport.sent]


async def test_a_pending_answer_is_probed_on_the_schedule_until_final(kit: Kit):
    kit.transport.answer(
        response(202, {"job_id": "J7"}),
        response(200, {"state": "running"}),
        response(200, {"state": "done"}),
    )
    answered = await cancel(kit, REQUEST, key="k-pending-1")
    assert answered.http_status == 202
    assert answered.body["status"] == "pending"
    assert answered.body["provider_response"] == {"job": "J7"}
    cid = answered.body["cancellation_id"]
    assert answered.headers["Location"] == f"/v1/cancellations/{cid}"
    assert "Preference-Applied" not in answered.headers

    assert await due(kit) == []  # the first probe waits first_delay_s (2 s, jitter 1.0)
    kit.clock.advance(2)
    assert len(await due(kit)) == 1
    assert (await row(kit, cid)).status == "pending"  # still running at the provider
    kit.clock.advance(3.9)
    assert await due(kit) == []  # the second wait doubled: 4 s
    kit.clock.advance(0.1)
    await due(kit)
    final = await row(kit, cid)
    assert final.status == "cancelled"
    assert (final.due_at, final.work) == (None, None)
    assert paths(kit) == ["orders/o-1/cancel", "jobs/J7", "jobs/J7"]
    replay = await cancel(kit, REQUEST, key="k-pending-1")
    assert replay.replayed
    assert replay.http_status == 200
    assert replay.body["status"] == "cancelled"
    assert replay.body["upstream"]["probes"] == 2
    [settled] = kit.events("cancellation.settled")
    assert settled["cancellation_id"] == cid
    assert settled["request_id"] == answered.body["request_id"]  # the request's, continued


async def test_a_cancellation_whose_process_died_is_probed_once_its_claim_expires(kit: Kit):
    arrived, _release = kit.transport.hold(response(200, {"state": "cancelled"}))
    sending = asyncio.create_task(cancel(kit, PARCEL, key="k-crash-1"))
    await arrived.wait()
    sending.cancel()  # the process dies with the request in flight: nothing more is written
    with pytest.raises(asyncio.CancelledError):
        await sending
    [running] = kit.store.begun
    assert (await row(kit, running.cancellation_id)).status == "running"

    kit.transport.answer(response(200, {"state": "cancelled"}))
    kit.clock.advance(5 + 10 - 0.1)
    assert await due(kit) == []  # the claim holds for timeout_s + 10 s
    kit.clock.advance(0.1)
    await due(kit)
    final = await row(kit, running.cancellation_id)
    assert final.status == "cancelled"
    assert paths(kit) == ["parcels/p-1/cancel", "parcels/p-1"]  # nothing sent again
    replay = await cancel(kit, PARCEL, key="k-crash-1")
    assert replay.replayed
    assert replay.body["status"] == "cancelled"


async def test_the_age_limit_ends_a_pending_cancellation_as_outcome_unknown(kit: Kit):
    kit.transport.answer(response(202, {"job_id": "J8"}))
    kit.transport.default = response(200, {"state": "running"})
    answered = await cancel(kit, REQUEST)
    cid = answered.body["cancellation_id"]
    for _ in range(20):
        kit.clock.advance(8)
        await due(kit)
    final = await row(kit, cid)
    assert final.status == "failed"
    assert final.error_code == "outcome_unknown"
    assert final.envelope is not None
    assert b'"source":"provider"' in final.envelope
    assert (final.due_at, final.work) == (None, None)


async def test_an_asynchronous_send_a_dead_process_took_is_probed_before_it_is_sent_again(
    kit: Kit,
):
    answered = await cancel(kit, PARCEL, info=replace(request_info(), asynchronous=True))
    assert answered.http_status == 202
    assert answered.headers["Preference-Applied"] == "respond-async"
    cid = answered.body["cancellation_id"]
    now = kit.clock.now().timestamp()
    # A process took the send and died with it: its lease runs out.
    assert len(await kit.store.take_due("dead-process", now, 15.0, 10)) == 1
    kit.clock.advance(15)
    kit.transport.answer(response(200, {"state": "open"}), response(200, {"state": "cancelled"}))
    await due(kit)
    # Probed first; not cancelled: sent again at once, while the probe's word holds.
    assert paths(kit) == ["parcels/p-1", "parcels/p-1/cancel"]
    final = await row(kit, cid)
    assert final.status == "cancelled"
    assert final.envelope is not None
    assert b'"attempts":1,' in final.envelope
    assert b'"probes":1' in final.envelope


async def test_a_step_taken_over_meanwhile_is_not_written(kit: Kit):
    kit.transport.answer(response(202, {"job_id": "J10"}))
    answered = await cancel(kit, REQUEST)
    cid = answered.body["cancellation_id"]
    kit.clock.advance(2)
    now = kit.clock.now().timestamp()
    [mine] = await kit.store.take_due("slow-process", now, 15.0, 10)
    kit.clock.advance(15)
    [theirs] = await kit.store.take_due("other-process", now + 15, 15.0, 10)

    async def stalled(request: Any, timeout_s: float, connect_s: float) -> Any:
        return response(200, {"state": "done"})

    kit.transport.answer(stalled)
    assert mine.work is not None
    step = Step.decode(mine.work)
    assert step is not None
    late = Resumed(kit.canceller(), kit.services, mine, step, "slow-process", kit.services.log)
    await late.run(kit.caller())
    assert (await row(kit, cid)).status == "pending"  # the late holder wrote nothing
    assert kit.events("work.taken_over")
    assert theirs.taken == 2


def test_the_schedule_doubles_up_to_its_longest_wait_with_jitter() -> None:
    settings = AsyncSettings(first_delay_s=1, max_delay_s=10)
    assert [delay_s(settings, n, 0.999999) for n in range(6)] == pytest.approx(
        [1, 2, 4, 8, 10, 10], rel=1e-5
    )
    assert delay_s(settings, 3, 0.0) == 4  # at least half of it


async def test_a_dead_request_found_not_cancelled_is_not_sent_again_by_the_gateway(kit: Kit):
    """Its caller got no answer and asks again: a repeat from the background could cross it."""
    arrived, _release = kit.transport.hold(response(200, {"state": "cancelled"}))
    sending = asyncio.create_task(cancel(kit, PARCEL))
    await arrived.wait()
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    kit.transport.answer(response(200, {"state": "open"}))
    kit.clock.advance(15)
    [taken] = await due(kit)
    final = await row(kit, taken.cancellation_id)
    assert (final.status, final.error_code) == ("failed", "outcome_unknown")
    assert paths(kit) == ["parcels/p-1/cancel", "parcels/p-1"]


async def test_an_answer_given_before_the_request_is_prepared_keeps_what_the_row_knew(kit: Kit):
    kit.transport.answer(response(202, {"job_id": "J11"}), response(200, {"state": "running"}))
    answered = await cancel(kit, REQUEST)
    kit.clock.advance(2)
    await due(kit)  # one probe: still running
    kit.clock.advance(60)  # past async.max_age_s
    await due(kit)
    final = await row(kit, answered.body["cancellation_id"])
    assert (final.connection, final.provider, final.resource_id) == ("jobs", "jobs", "o-1")
    assert final.envelope is not None
    envelope = orjson.loads(final.envelope)
    assert envelope["error"]["code"] == "outcome_unknown"
    assert (envelope["connection"], envelope["resource"]) == ("jobs", "order")
    assert envelope["upstream"]["probes"] == 1  # what the earlier steps did is kept


@pytest.mark.parametrize("work", [b'{"kind": "send", "from": "a later version"}', None])
async def test_a_step_that_cannot_go_on_is_ended_not_taken_for_ever(
    kit: Kit, work: bytes | None, tmp_path: Path
):
    settler = Settler(lambda: live(kit), kit.services, kit.runtime.config.server)
    answered = await cancel(kit, REQUEST, info=replace(request_info(), asynchronous=True))
    cid = answered.body["cancellation_id"]
    [queued] = await kit.store.take_due("someone", kit.clock.now().timestamp(), 15.0, 10)
    broken = queued._replace(work=work) if work is not None else queued._replace(taken=11)
    await settler._one(live(kit), broken, "someone")
    final = await row(kit, cid)
    assert (final.status, final.error_code) == ("failed", "outcome_unknown")
    assert (final.due_at, final.work) == (None, None)
    assert kit.events("work.abandoned")
    assert paths(kit) == []
