"""The Canceller on a fake transport, a fake clock and an in-memory store that fails on demand:
the envelope, the refusals before sending, the Idempotency-Key claim and replay, the ledger
when the store fails, a crash, the log events and the redaction of what providers echo."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.errors import ErrorCode, GatewayError
from gateway.inbound import Decoded, RequestInfo
from gateway.models import CANCELLATION_ID
from gateway.translate.classify import format_time
from gateway.translate.wire import UpstreamRequest, UpstreamResponse
from tests.conftest import CANARIES
from tests.fakes import (
    START,
    UPSTREAM,
    FlakyStore,
    Kit,
    as_body,
    make_kit,
    request_info,
    response,
)

RX_CANCEL = {"connection": "rxuniverse-lab", "id": "72544"}
RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
STATESET_CANCEL = {"connection": "stateset-main", "id": "asn_1", "reason": "r"}
STATESET_OK = {
    "status": "cancelled",
    "asn_number": "ASN-1",
    "cancelled_at": "2023-12-01T08:00:00Z",  # not the fake clock's day: whose time is whose
}
KEY = "order-72544-cancel"


@dataclass
class Answer:
    http_status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        result: dict[str, Any] = orjson.loads(self.raw)
        return result

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = self.body["error"]
        return error

    @property
    def replayed(self) -> bool:
        return self.headers.get("Idempotent-Replayed") == "true"


async def cancel(
    kit: Kit,
    body: Any,
    *,
    key: str | None = None,
    caller: str = "oms",
    info: RequestInfo | None = None,
    request_id: str = "req-test-1",
) -> Answer:
    """One cancellation as the API makes it (``body`` JSON-encoded unless it is bytes)."""
    raw = body if isinstance(body, bytes) else as_body(body)
    info = info or request_info(key, request_id)
    reply = await kit.canceller().cancel(kit.caller(caller), raw, info)
    return Answer(reply.http_status, reply.headers, reply.body)


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return make_kit(tmp_path)


# --- the envelope -------------------------------------------------------------------------


async def test_a_confirmed_cancellation_answers_200_with_the_providers_facts(kit: Kit):
    def answer(request: UpstreamRequest, timeout_s: float, connect_s: float) -> UpstreamResponse:
        kit.clock.advance(0.25)
        return response(200, STATESET_OK)

    kit.transport.answer(answer)
    info = request_info()
    result = await cancel(kit, STATESET_CANCEL, info=info)
    assert result.http_status == 200
    assert result.headers == {"X-Request-ID": "req-test-1"}
    body = result.body
    assert CANCELLATION_ID.fullmatch(body.pop("cancellation_id"))
    url = f"{UPSTREAM}/stateset/v1/asns/asn_1/cancel"
    assert body == {
        "status": "cancelled",
        "connection": "stateset-main",
        "provider": "stateset",
        "resource": "asn",
        "resource_id": "asn_1",
        "cancelled_at": "2023-12-01T08:00:00Z",  # the provider's
        "provider_response": {"asn_number": "ASN-1"},
        "error": None,
        "upstream": {
            "method": "POST",
            "url": url,
            "status": 200,
            "attempts": 1,
            "latency_ms": 250.0,
            "probes": 0,
        },
        "request_id": "req-test-1",
        "trace_id": info.trace.trace_id,
        "items": None,  # no lines were named
    }


async def test_what_is_sent_is_the_providers_request_with_its_credential(kit: Kit):
    kit.transport.answer(response(200, STATESET_OK))
    result = await cancel(kit, STATESET_CANCEL)
    [sent] = kit.transport.sent
    assert (sent.method, sent.url) == ("POST", f"{UPSTREAM}/stateset/v1/asns/asn_1/cancel")
    assert sent.header("Authorization") == f"Bearer {CANARIES['STATESET_API_KEY']}"
    # Without a caller's key, the provider's key is the cancellation's: the same on a repeat.
    assert sent.header("Idempotency-Key") == result.body["cancellation_id"]
    assert sent.json() == {"reason": "r", "cancelled_by": "oms", "notify_supplier": True}
    # The connection's budget (2 s), less what is kept for a status probe (0.5 s at least).
    assert sent.timeout_s == 1.5


async def test_without_a_provider_time_cancelled_at_is_the_gateways_clock(kit: Kit):
    def answer(request: UpstreamRequest, timeout_s: float, connect_s: float) -> UpstreamResponse:
        kit.clock.advance(1.5)
        return response(200, RX_OK)

    kit.transport.answer(answer)
    result = await cancel(kit, RX_CANCEL)
    cancelled_at = result.body["cancelled_at"]
    assert cancelled_at.endswith("Z")
    assert datetime.fromisoformat(cancelled_at) == START + timedelta(seconds=1.5)


async def test_an_already_cancelled_object_without_a_provider_time_has_no_cancelled_at(kit: Kit):
    """When it was cancelled is unknown: the gateway's time would be a guess."""
    kit.transport.answer(response(400, {"error": "Order already completed"}))
    result = await cancel(kit, RX_CANCEL)
    assert result.http_status == 200
    assert (result.body["status"], result.body["cancelled_at"]) == ("already_cancelled", None)
    assert result.body["error"] is None


async def test_a_provider_refusal_is_its_error_with_its_code(kit: Kit):
    kit.transport.answer(response(404, {"error": "No record found"}))
    result = await cancel(kit, RX_CANCEL)
    assert result.http_status == 404
    assert result.body["status"] == "rejected"
    error = result.error
    assert (error["code"], error["source"], error["provider_status"]) == (
        "not_found",
        "provider",
        404,
    )
    assert error["provider_code"] == "No record found"
    assert result.body["upstream"]["status"] == 404


async def test_a_decoded_item_is_cancelled_like_a_body(kit: Kit):
    """A batch's item arrives already decoded: the same cancellation, logged without a size."""
    kit.transport.answer(response(200, RX_OK))
    reply = await kit.canceller().cancel(kit.caller(), Decoded(RX_CANCEL), request_info())
    assert orjson.loads(reply.body)["status"] == "cancelled"
    [received] = kit.events("cancellation.received")
    assert received["resource_id"] == "72544"


# --- refused before sending ---------------------------------------------------------------


async def test_invalid_input_is_one_422_with_every_problem_and_nothing_is_sent(kit: Kit):
    body = {"connection": "shipper-main", "id": "S" * 51, "reason": "r" * 600, "params": {"x": 1}}
    result = await cancel(kit, body)
    assert result.http_status == 422
    error = result.error
    assert (error["code"], error["source"], error["retryable"]) == (
        "invalid_request",
        "gateway",
        False,
    )
    problems = {f["loc"]: f["message"] for f in error["fields"]}
    assert set(problems) == {"reason", "params.x", "id"}  # the provider's limit on id too
    assert "50 characters" in problems["id"]
    assert result.body["upstream"] is None
    assert kit.transport.sent == []
    assert kit.store.calls == ["record"]  # in the ledger, never claimed


async def test_an_unknown_field_is_refused_though_the_rest_would_be_sent(kit: Kit):
    result = await cancel(kit, {**RX_CANCEL, "colour": "red"})
    assert result.http_status == 422
    assert [f["loc"] for f in result.error["fields"]] == ["colour"]
    assert result.body["provider"] == "rxuniverse"  # routed: the envelope says as much
    assert kit.transport.sent == []


@pytest.mark.parametrize("raw", [b"{", b"", b"[1]", b'{"connection": NaN}'])
async def test_a_body_that_is_not_a_json_object_is_refused(kit: Kit, raw: bytes):
    result = await cancel(kit, raw)
    assert result.http_status == 422
    assert result.error["fields"][0]["loc"] == "body"
    assert kit.transport.sent == []
    [received] = kit.events("cancellation.received")
    assert received["body_bytes"] == len(raw)
    assert len(kit.events("cancellation.completed")) == 1


async def test_an_invalid_idempotency_key_is_refused(kit: Kit):
    result = await cancel(kit, RX_CANCEL, key="k" * 256)
    assert result.http_status == 422
    assert result.error["fields"][0]["loc"] == "headers.Idempotency-Key"
    assert kit.transport.sent == []


async def test_an_unknown_connection_is_404(kit: Kit):
    result = await cancel(kit, {**RX_CANCEL, "connection": "nowhere"})
    assert (result.http_status, result.error["code"]) == (404, "unknown_connection")
    assert kit.transport.sent == []


async def test_a_connection_outside_the_callers_patterns_is_403(kit: Kit):
    """The permission is checked first: the caller does not learn whether it exists."""
    for connection in ("rxuniverse-lab", "nowhere"):
        result = await cancel(kit, {**RX_CANCEL, "connection": connection}, caller="limited")
        assert (result.http_status, result.error["code"]) == (403, "forbidden")
        assert result.body["provider"] is None
    assert kit.transport.sent == []


# --- the Idempotency-Key ------------------------------------------------------------------


async def test_the_first_request_with_a_key_is_sent_and_not_marked_replayed(kit: Kit):
    kit.transport.answer(response(200, RX_OK))
    result = await cancel(kit, RX_CANCEL, key=KEY)
    assert result.body["status"] == "cancelled"
    assert not result.replayed
    assert len(kit.transport.sent) == 1


async def test_a_definite_answer_is_replayed_byte_for_byte_and_sent_once(kit: Kit):
    kit.transport.answer(response(200, RX_OK))
    first = await cancel(kit, RX_CANCEL, key=KEY, request_id="req-1")
    kit.clock.advance(60)
    second = await cancel(kit, RX_CANCEL, key=KEY, request_id="req-2")
    assert second.raw == first.raw
    assert second.http_status == first.http_status
    assert second.replayed
    assert len(kit.transport.sent) == 1
    [replay] = kit.events("cancellation.replayed")
    assert replay["original_cancellation_id"] == first.body["cancellation_id"]
    completed = kit.events("cancellation.completed")[-1]
    assert (completed["replayed"], completed["status"]) == (True, "cancelled")
    assert (
        kit.services.metrics.registry.get_sample_value("cancel_gateway_idempotent_replays_total")
        == 1
    )


async def test_a_definite_refusal_is_replayed_too(kit: Kit):
    kit.transport.answer(response(404, {"error": "No record found"}))
    first = await cancel(kit, RX_CANCEL, key=KEY)
    second = await cancel(kit, RX_CANCEL, key=KEY)
    assert (second.raw, second.replayed) == (first.raw, True)
    assert len(kit.transport.sent) == 1


async def test_the_same_json_in_another_order_is_the_same_request(kit: Kit):
    kit.transport.answer(response(200, RX_OK))
    await cancel(kit, b'{"connection": "rxuniverse-lab", "id": "72544"}', key=KEY)
    again = await cancel(kit, b'{"id":"72544","connection":"rxuniverse-lab"}', key=KEY)
    assert again.replayed


async def test_the_same_key_with_another_request_is_a_conflict(kit: Kit):
    kit.transport.answer(response(200, RX_OK))
    await cancel(kit, RX_CANCEL, key=KEY)
    other = await cancel(kit, {**RX_CANCEL, "id": "72545"}, key=KEY)
    assert (other.http_status, other.error["code"]) == (422, "idempotency_conflict")
    assert other.error["fields"] == [
        {"loc": "headers.Idempotency-Key", "message": "already used with a different body"}
    ]
    assert not other.replayed
    assert len(kit.transport.sent) == 1


async def test_keys_belong_to_their_caller(kit: Kit):
    shipper = {"connection": "shipper-main", "id": "SO-1", "reason": "r"}
    kit.transport.default = response(200, {"metadata": {"http_status_code": 200}})
    await cancel(kit, shipper, key=KEY)
    other = await cancel(kit, shipper, key=KEY, caller="limited")
    assert not other.replayed
    assert len(kit.transport.sent) == 2


async def test_a_request_still_running_answers_409_with_retry_after(kit: Kit):
    arrived, release = kit.transport.hold(response(200, RX_OK))
    first = asyncio.create_task(cancel(kit, RX_CANCEL, key=KEY))
    await arrived.wait()
    kit.clock.advance(0.4)
    second = await cancel(kit, RX_CANCEL, key=KEY)
    assert (second.http_status, second.error["code"]) == (409, "idempotency_in_progress")
    # The claim lasts the connection's budget (2 s) plus 10 s: 11.6 s are left.
    assert second.headers["Retry-After"] == "12"
    assert second.body["upstream"] is None
    release.set()
    assert (await first).body["status"] == "cancelled"
    assert len(kit.transport.sent) == 1


async def test_a_claim_whose_lease_ran_out_is_taken_over(kit: Kit):
    """Its holder is presumed dead: the next request is sent, and the holder's late answer
    does not replace the new one's."""
    arrived, release = kit.transport.hold(response(200, RX_OK))
    first = asyncio.create_task(cancel(kit, RX_CANCEL, key=KEY, request_id="req-1"))
    await arrived.wait()
    kit.clock.advance(12.0)  # the lease: timeout_s 2 + 10
    kit.transport.answer(response(400, {"error": "Order already completed"}))
    takeover = await cancel(kit, RX_CANCEL, key=KEY, request_id="req-2")
    assert takeover.body["status"] == "already_cancelled"
    assert not takeover.replayed
    release.set()
    late = await first
    assert late.body["status"] == "cancelled"
    replay = await cancel(kit, RX_CANCEL, key=KEY, request_id="req-3")
    assert (replay.raw, replay.replayed) == (takeover.raw, True)
    assert len(kit.transport.sent) == 2


async def test_a_failed_outcome_releases_the_key_so_a_retry_sends_again(kit: Kit):
    kit.transport.answer(response(500, {"error": "Internal"}), response(200, RX_OK))
    failed = await cancel(kit, RX_CANCEL, key=KEY)
    assert (failed.body["status"], failed.error["retryable"]) == ("failed", True)
    again = await cancel(kit, RX_CANCEL, key=KEY)
    assert again.body["status"] == "cancelled"
    assert not again.replayed
    assert len(kit.transport.sent) == 2


async def test_a_key_expires_after_its_ttl(kit: Kit):
    kit.transport.default = response(200, RX_OK)
    await cancel(kit, RX_CANCEL, key=KEY)
    kit.clock.advance(kit.runtime.config.store.key_ttl_s)
    again = await cancel(kit, RX_CANCEL, key=KEY)
    assert not again.replayed
    assert len(kit.transport.sent) == 2


# --- the store ----------------------------------------------------------------------------


async def test_a_store_that_fails_before_sending_answers_503_and_sends_nothing(tmp_path: Path):
    kit = make_kit(tmp_path, store=FlakyStore(failing={"begin"}))
    result = await cancel(kit, RX_CANCEL, key=KEY)
    assert (result.http_status, result.error["code"]) == (503, "store_unavailable")
    assert (result.error["source"], result.headers["Retry-After"]) == ("gateway", "1")
    assert "nothing was sent" in result.error["message"]
    assert kit.transport.sent == []
    [event] = kit.events("store.unavailable")
    assert event["backend"] == "flaky-memory"
    entry = await kit.store.inner.lookup(result.body["cancellation_id"], "oms")
    assert entry is not None
    assert entry.status == "failed"  # the refusal is in the ledger


async def test_a_store_down_altogether_still_answers_and_logs_the_envelope(tmp_path: Path):
    kit = make_kit(tmp_path, store=FlakyStore(failing={"begin", "record"}))
    result = await cancel(kit, RX_CANCEL)
    assert result.http_status == 503
    [lost] = kit.events("ledger.write_failed")
    assert lost["envelope"] == result.body


async def test_a_store_that_fails_after_sending_leaves_the_answer_standing(tmp_path: Path):
    kit = make_kit(tmp_path, store=FlakyStore(failing={"complete"}))
    kit.transport.answer(response(200, RX_OK))
    result = await cancel(kit, RX_CANCEL, key=KEY)
    assert (result.http_status, result.body["status"]) == (200, "cancelled")
    [lost] = kit.events("ledger.write_failed")
    assert lost["envelope"] == result.body  # the record is in the log instead
    assert kit.events("cancellation.completed")[0]["status"] == "cancelled"


async def test_a_bug_in_the_ledger_write_after_sending_leaves_the_answer_standing(
    tmp_path: Path,
):
    kit = make_kit(tmp_path, store=FlakyStore(failing={"complete"}, fault=TypeError))
    kit.transport.answer(response(200, RX_OK))
    result = await cancel(kit, RX_CANCEL, key=KEY)
    assert (result.http_status, result.body["status"]) == (200, "cancelled")
    assert len(kit.events("cancellation.completed")) == 1


async def test_a_crash_is_500_logged_with_its_traceback_and_kept_in_the_ledger(kit: Kit):
    kit.transport.answer(RuntimeError("boom: a bug"))
    result = await cancel(kit, RX_CANCEL, key=KEY)
    assert (result.http_status, result.error["code"]) == (500, "internal_error")
    assert result.error["message"] == "internal error (request req-test-1)"
    assert b"boom" not in result.raw
    [crash] = kit.events("cancellation.crashed")
    assert "boom: a bug" in crash["exception"]
    [completed] = kit.events("cancellation.completed")
    assert completed["error_code"] == "internal_error"
    entry = await kit.store.inner.lookup(result.body["cancellation_id"], "oms")
    assert entry is not None
    assert (entry.status, entry.error_code, entry.envelope) == (
        "failed",
        "internal_error",
        result.raw,
    )
    kit.transport.answer(response(200, RX_OK))  # the key was released: a retry is sent
    assert (await cancel(kit, RX_CANCEL, key=KEY)).body["status"] == "cancelled"


# --- the log ------------------------------------------------------------------------------


async def test_a_cancellation_logs_received_request_response_completed(kit: Kit):
    def answer(request: UpstreamRequest, timeout_s: float, connect_s: float) -> UpstreamResponse:
        kit.clock.advance(0.125)
        return response(200, RX_OK)

    kit.transport.answer(answer)
    result = await cancel(kit, RX_CANCEL, key=KEY)
    assert kit.event_names == [
        "cancellation.received",
        "upstream.request",
        "upstream.response",
        "cancellation.completed",
    ]
    received, request, answered, completed = kit.logs
    cancellation_id = result.body["cancellation_id"]
    assert {line["cancellation_id"] for line in kit.logs} == {cancellation_id}
    assert {line["caller"] for line in kit.logs} == {"oms"}
    assert received["connection"] == "rxuniverse-lab"
    assert (received["resource"], received["resource_id"]) == ("order", "72544")
    assert received["with_idempotency_key"] is True
    assert (request["method"], request["url"], request["attempt"]) == (
        "DELETE",
        kit.transport.sent[0].url,
        1,
    )
    assert (answered["status"], answered["latency_ms"]) == (200, 125.0)
    assert (completed["status"], completed["error_code"], completed["http_status"]) == (
        "cancelled",
        None,
        200,
    )
    assert (completed["provider"], completed["duration_ms"]) == ("rxuniverse", 125.0)


async def test_the_completed_line_carries_the_providers_code(kit: Kit):
    kit.transport.answer(response(404, {"error": "No record found"}))
    await cancel(kit, RX_CANCEL)
    [completed] = kit.events("cancellation.completed")
    assert (completed["error_code"], completed["provider_code"]) == ("not_found", "No record found")


# --- what providers echo ------------------------------------------------------------------


async def test_a_credential_echoed_by_the_provider_is_redacted(kit: Kit):
    secret = CANARIES["RXUNIVERSE_API_KEY"]
    kit.transport.answer(response(400, {"error": f"bad key {secret}"}))
    result = await cancel(kit, RX_CANCEL)
    assert secret not in result.raw.decode()
    assert "bad key [REDACTED]" in result.error["message"]
    assert result.error["provider_code"] == "bad key [REDACTED]"
    assert secret not in kit.stream.getvalue()


async def test_a_credential_in_the_providers_response_fields_is_redacted(kit: Kit):
    echo = {**STATESET_OK, "asn_number": CANARIES["STATESET_API_KEY"]}
    kit.transport.answer(response(200, echo))
    result = await cancel(kit, STATESET_CANCEL)
    assert result.body["provider_response"] == {"asn_number": "[REDACTED]"}


@pytest.mark.parametrize(
    "guess",
    [CANARIES["STATESET_API_KEY"], CANARIES["SHIPPER_API_KEY"], "sk_test_CANARY_stateset_7f3b"],
)
async def test_the_echo_of_the_callers_value_is_masked_like_a_secret(kit: Kit, guess: str):
    """Right guess of a credential or wrong one, echoed beside the credential itself: the answer
    is the same, so it is no oracle."""
    secret = CANARIES["STATESET_API_KEY"]
    kit.transport.answer(
        response(401, {"error": {"code": "X", "message": f"notes {guess}, key {secret}"}})
    )
    result = await cancel(kit, {**STATESET_CANCEL, "notes": guess})
    assert result.error["message"].endswith("notes [REDACTED], key [REDACTED]")
    assert secret not in kit.stream.getvalue()


# --- preview ------------------------------------------------------------------------------


async def test_a_preview_shows_the_request_and_sends_and_records_nothing(kit: Kit):
    preview = kit.canceller().preview(kit.caller(), as_body(STATESET_CANCEL), request_info())
    assert (preview.connection, preview.provider, preview.resource) == (
        "stateset-main",
        "stateset",
        "asn",
    )
    request = preview.upstream_request
    assert (request.method, request.url) == ("POST", f"{UPSTREAM}/stateset/v1/asns/asn_1/cancel")
    assert request.headers["Authorization"] == "[REDACTED]"
    assert request.body == {"reason": "r", "cancelled_by": "oms", "notify_supplier": True}
    assert kit.transport.sent == []
    assert kit.store.calls == []
    assert kit.logs == []


async def test_a_preview_of_an_invalid_request_is_refused_like_the_request(kit: Kit):
    with pytest.raises(GatewayError) as refused:
        kit.canceller().preview(
            kit.caller(), as_body({"connection": "shipper-main"}), request_info()
        )
    assert refused.value.code is ErrorCode.INVALID_REQUEST
    assert {loc for loc, _ in refused.value.fields} >= {"id"}
    assert kit.transport.sent == []


async def test_a_preview_shows_the_callers_value_as_sent(kit: Kit):
    """Even when it equals a credential: whether it is one is never shown."""
    guess = CANARIES["STATESET_API_KEY"]
    body = as_body({**STATESET_CANCEL, "notes": guess})
    preview = kit.canceller().preview(kit.caller(), body, request_info())
    sent = preview.upstream_request.body
    assert isinstance(sent, dict)
    assert sent["notes"] == guess


# --- answers the envelope cannot hold as they are -------------------------------------------


async def test_a_provider_value_nested_too_deep_is_left_out_not_a_500(kit: Kit):
    """A confirmed cancellation whose selected field is nested 300 levels (JSON accepts it, an
    envelope cannot hold it): answered cancelled, the field left out, completed logged."""
    deep = '{"a":' * 300 + "1" + "}" * 300
    body = b'{"status": "cancelled", "asn_number": ' + deep.encode() + b', "supplier_id": "s"}'
    kit.transport.answer(UpstreamResponse(200, {"content-type": "application/json"}, body))
    result = await cancel(kit, STATESET_CANCEL)
    assert (result.http_status, result.body["status"]) == (200, "cancelled")
    assert result.body["provider_response"] == {"supplier_id": "s"}
    [completed] = kit.events("cancellation.completed")
    assert completed["status"] == "cancelled"


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_a_provider_time_past_the_calendar_is_the_gateways(kit: Kit, moment: str):
    """A cancelled_at that UTC cannot hold is no time at all: the gateway's stands in."""
    kit.transport.answer(response(200, {**STATESET_OK, "cancelled_at": moment}))
    result = await cancel(kit, STATESET_CANCEL)
    assert (result.http_status, result.body["status"]) == (200, "cancelled")
    assert result.body["cancelled_at"] == format_time(kit.clock.now())
