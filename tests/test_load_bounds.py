"""What holds under load (CONTRACT §11): beyond ``server.max_in_flight`` cancellations in
flight, one more is answered 503 ``overloaded`` at once, with nothing recorded or sent; and a
cancellation's budget counts from the request's arrival, time queued in the process included."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import orjson

from tests.fakes import BASE_CONFIG, Kit, make_kit, response
from tests.test_cancel import STATESET_CANCEL, STATESET_OK, cancel, request_info
from tests.test_metrics import value

SHIPPER_CANCEL = {"connection": "shipper-main", "id": "SO-1", "reason": "r"}
SHIPPED = {"metadata": {"http_status_code": 200}}
ONE_AT_A_TIME = BASE_CONFIG.replace("callers:", "server: {max_in_flight: 1}\ncallers:", 1)


def kit_of(tmp_path: Path) -> Kit:
    return make_kit(tmp_path, ONE_AT_A_TIME)


async def test_one_over_the_limit_is_refused_at_once_and_nothing_is_recorded(tmp_path: Path):
    kit = kit_of(tmp_path)
    arrived, release = kit.transport.hold(response(200, STATESET_OK))
    first = asyncio.create_task(cancel(kit, STATESET_CANCEL))
    await arrived.wait()

    refused = await cancel(kit, STATESET_CANCEL, key="k-over", request_id="req-over")
    assert refused.http_status == 503
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["X-Request-ID"] == "req-over"
    assert refused.body["status"] == "failed"
    assert refused.body["cancellation_id"] is None  # none was made
    error = refused.body["error"]
    assert (error["code"], error["source"], error["retryable"]) == ("overloaded", "gateway", True)
    assert len(kit.transport.sent) == 1  # nothing sent for it
    assert len(kit.store.begun) == 1  # nothing recorded, the key not claimed
    assert value(kit.services.metrics, "cancel_gateway_overloaded_total") == 1

    release.set()
    assert (await first).http_status == 200
    kit.transport.answer(response(200, STATESET_OK))
    again = await cancel(kit, STATESET_CANCEL, key="k-over")  # the key was never claimed
    assert again.http_status == 200
    assert not again.replayed


async def test_a_refused_cancellation_leaves_its_slot_to_the_next(tmp_path: Path):
    """Refusals, failures and bugs alike give the slot back: the count never drifts."""
    kit = kit_of(tmp_path)
    kit.transport.answer(RuntimeError("a bug in the transport"), response(200, STATESET_OK))
    crashed = await cancel(kit, STATESET_CANCEL)
    assert crashed.body["error"]["code"] == "internal_error"
    invalid = await cancel(kit, {"connection": "stateset-main"})
    assert invalid.http_status == 422
    assert (await cancel(kit, STATESET_CANCEL)).http_status == 200
    assert kit.services.admission.in_flight == 0


async def test_an_overloaded_answer_is_an_envelope_the_client_can_read(tmp_path: Path):
    kit = kit_of(tmp_path)
    kit.services.admission.in_flight = 1  # as if one were in flight
    refused = await cancel(kit, b"not even json")
    assert refused.http_status == 503
    assert orjson.loads(refused.raw)["error"]["code"] == "overloaded"
    assert kit.transport.sent == []
    kit.services.admission.in_flight = 0


async def test_the_budget_counts_from_the_requests_arrival(tmp_path: Path):
    """A request that waited 0.5 s in the process before its cancellation began has what is
    left of its 2 s budget: its one attempt may take 1.5 s, no more."""
    kit = make_kit(tmp_path)
    kit.transport.answer(response(200, SHIPPED))
    waited = replace(request_info(), arrived=kit.clock.monotonic() - 0.5)
    await cancel(kit, SHIPPER_CANCEL, info=waited)
    [sent] = kit.transport.sent
    assert sent.timeout_s == 2 - 0.5


async def test_a_request_whose_budget_was_spent_waiting_is_not_sent(tmp_path: Path):
    kit = make_kit(tmp_path)
    late = replace(request_info(), arrived=kit.clock.monotonic() - 2)
    result = await cancel(kit, SHIPPER_CANCEL, info=late)
    assert kit.transport.sent == []
    assert result.body["status"] == "failed"
    assert result.body["error"]["code"] == "provider_timeout"
