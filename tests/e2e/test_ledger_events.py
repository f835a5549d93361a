"""What happened to a cancellation, end to end: `GET /v1/cancellations/{id}/events` lists,
in order, its receipt, each attempt, each status probe and its settling, to its caller only."""

from __future__ import annotations

import pytest

from tests.conftest import CANARIES, Gateway, GatewayFactory, Upstream

pytestmark = pytest.mark.e2e

LIMITED_KEY = "limited-caller-key-0123456789"
STATESET_OK = {"id": "asn_1", "status": "cancelled", "cancelled_at": "2024-01-01T00:00:00Z"}


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return await make_gateway(upstream_url=upstream.url)


async def events_of(gateway: Gateway, cancellation_id: str, key: str | None = None) -> object:
    kwargs = {"key": key} if key else {}
    return await gateway.request("GET", f"/v1/cancellations/{cancellation_id}/events", **kwargs)


async def test_each_attempt_and_probe_is_an_event_between_received_and_settled(
    gateway: Gateway, upstream: Upstream
):
    """A 502 (the ASN probed: not cancelled), then the repeat that cancels it."""
    upstream.answer(502, {"error": {"type": "api_error", "message": "bad gateway"}})
    upstream.answer(200, STATESET_OK)
    upstream.probe_answers.append((200, {"id": "asn_1", "status": "in_transit"}))
    done = await gateway.cancel({"connection": "stateset-main", "id": "asn_1", "reason": "r"})
    assert done.body["status"] == "cancelled", done.body
    result = await events_of(gateway, done.body["cancellation_id"])
    assert result.status == 200, result.body
    assert result.body["cancellation_id"] == done.body["cancellation_id"]
    events = result.body["events"]
    assert [e["type"] for e in events] == ["received", "attempt", "probe", "attempt", "settled"]
    first, probe, second, settled = events[1:]
    assert (first["method"], first["status"], first["error_code"]) == (
        "POST",
        502,
        "provider_error",
    )
    assert first["url"].endswith("/stateset/v1/asns/asn_1/cancel")
    assert first["latency_ms"] >= 0
    assert probe["result"] == "not_cancelled"
    assert (second["status"], second["error_code"]) == (200, None)
    assert (settled["status"], settled["error_code"]) == ("cancelled", None)
    times = [e["at"] for e in events]
    assert times == sorted(times)
    assert all(t.endswith("Z") for t in times)


async def test_a_refusal_before_sending_is_received_then_settled(gateway: Gateway):
    refused = await gateway.cancel({"connection": "stateset-main", "id": "asn_1"})  # no reason
    assert refused.status == 422
    events = (await events_of(gateway, refused.body["cancellation_id"])).body["events"]
    assert [(e["type"], e.get("error_code")) for e in events] == [
        ("received", None),
        ("settled", "invalid_request"),
    ]


async def test_another_callers_cancellation_has_no_events_to_show(
    gateway: Gateway, upstream: Upstream
):
    upstream.answer(200, STATESET_OK)
    done = await gateway.cancel({"connection": "stateset-main", "id": "asn_1", "reason": "r"})
    other = await events_of(gateway, done.body["cancellation_id"], key=LIMITED_KEY)
    assert (other.status, other.body["error"]["code"]) == (404, "not_found")
    unknown = await events_of(gateway, "cxl_00000000000000000000000000")
    assert unknown.status == 404
    malformed = await events_of(gateway, "not-an-id")
    assert malformed.status == 404


async def test_the_receipt_keeps_the_request_and_its_key_for_a_retry_sensitive_names_masked(
    gateway: Gateway, upstream: Upstream
):
    upstream.answer(400, {"error": {"type": "invalid_request_error", "message": "no"}})
    # A reason that holds the provider's credential is the caller's own text, shown back as
    # sent: masking it would tell the caller its guess was right.
    reason = f"x {CANARIES['STATESET_API_KEY']}"
    body = {"connection": "stateset-main", "id": "asn_1", "reason": reason}
    done = await gateway.cancel(body, headers={"Idempotency-Key": "retry-me-1"})
    assert done.body["status"] in ("rejected", "failed"), done.body
    received = (await events_of(gateway, done.body["cancellation_id"])).body["events"][0]
    assert received["type"] == "received"
    assert received["idempotency_key"] == "retry-me-1"
    assert received["request"] == body  # by name only: see tests/test_redact.py
    assert CANARIES["STATESET_API_KEY"] not in gateway.log_text


async def test_a_request_found_invalid_keeps_no_body(gateway: Gateway):
    refused = await gateway.cancel({"connection": "stateset-main", "id": "asn_1"})  # no reason
    received = (await events_of(gateway, refused.body["cancellation_id"])).body["events"][0]
    assert "request" not in received
