"""The StateSet simulator answers Cancel ASN as its document shows."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from gateway.simulate import SimulatorState

from .conftest import NOW, STATESET_BODY, Sim, SimFactory

ASN = "asn_0901f083-aa1c-43c5-af5c-0a9d2fc64e30"


def error(type_: str, code: str, message: str) -> dict[str, object]:
    return {"error": {"type": type_, "code": code, "message": message}}


async def test_success_is_the_documented_asn_for_this_request(sim: Sim) -> None:
    answer = await sim.stateset(ASN)
    assert answer.status == 200
    body = answer.json()
    assert body["id"] == ASN
    assert body["object"] == "asn"
    assert body["status"] == "cancelled"
    assert body["cancelled_at"] == "2024-01-16T10:30:00Z"
    assert body["cancelled_by"] == STATESET_BODY["cancelled_by"]
    assert body["cancellation_reason"] == STATESET_BODY["reason"]
    assert body["notes"] == STATESET_BODY["notes"]
    assert body["asn_number"] == "ASN-2024-00001"
    assert body["purchase_order_id"] == "po_123456789"
    assert body["supplier_id"] == "sup_abc123"
    assert body["items_affected"] == [
        {"sku": "WBH-001", "quantity": 500},
        {"sku": "USB-C-001", "quantity": 1000},
    ]
    assert [n["type"] for n in body["notifications_sent"]] == ["email", "webhook"]
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["X-Request-Id"].startswith("sim-stateset-")


async def test_cancelled_at_is_the_current_utc_time(make_sim: SimFactory) -> None:
    sim = await make_sim(clock=lambda: datetime.now(UTC))
    body = (await sim.stateset("asn_now")).json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["cancelled_at"])
    stamp = datetime.strptime(body["cancelled_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - stamp) < timedelta(seconds=5)


async def test_notify_supplier_false_sends_no_notifications(sim: Sim) -> None:
    body = {"reason": "r", "cancelled_by": "me", "notify_supplier": False}
    answer = (await sim.stateset("asn_quiet", body)).json()
    assert answer["notifications_sent"] == []
    assert answer["notes"] is None


async def test_second_cancel_answers_already_cancelled(sim: Sim) -> None:
    assert (await sim.stateset(ASN)).status == 200
    again = await sim.stateset(ASN)
    assert again.status == 400
    assert again.json() == error(
        "invalid_status", "ASN_ALREADY_CANCELLED", "ASN has already been cancelled"
    )


async def test_seeded_state_makes_an_asn_already_cancelled(make_sim: SimFactory) -> None:
    state = SimulatorState()
    state.cancel("stateset", "asn_old", NOW)
    sim = await make_sim(state=state)
    assert (await sim.stateset("asn_old")).json()["error"]["code"] == "ASN_ALREADY_CANCELLED"


async def test_wrong_key_is_invalid_api_key(sim: Sim) -> None:
    answer = await sim.stateset(ASN, key="sk_test_wrong")
    assert answer.status == 401
    assert answer.json()["error"]["type"] == "authentication_error"
    assert answer.json()["error"]["code"] == "INVALID_API_KEY"


async def test_other_scheme_is_invalid_api_key(sim: Sim) -> None:
    answer = await sim.stateset(ASN, key=None, headers={"Authorization": "Basic c2ltLXN0YXRlc2V0"})
    assert answer.json()["error"]["code"] == "INVALID_API_KEY"


async def test_missing_header_is_missing_auth_header(sim: Sim) -> None:
    answer = await sim.stateset(ASN, key=None)
    assert answer.status == 401
    assert answer.json()["error"]["code"] == "MISSING_AUTH_HEADER"
    assert (await sim.stateset(ASN)).status == 200  # nothing was cancelled by the refusal


async def test_wrong_verb_is_405_in_stateset_shape(sim: Sim) -> None:
    answer = await sim.stateset(ASN, method="PUT")
    assert answer.status == 405
    assert answer.json()["error"]["code"] == "method_not_allowed"


async def test_unknown_path_is_404_in_stateset_shape(sim: Sim) -> None:
    answer = await sim.send("POST", "/stateset/v1/asns/x/uncancel")
    assert answer.status == 404
    assert answer.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"cancelled_by": "me"}, "parameter_missing", "reason"),
        ({"reason": "", "cancelled_by": "me"}, "parameter_missing", "reason"),
        ({"reason": "r"}, "parameter_missing", "cancelled_by"),
        ({"reason": 5, "cancelled_by": "me"}, "parameter_invalid", "reason"),
        (
            {"reason": "r", "cancelled_by": "me", "notify_supplier": "yes"},
            "parameter_invalid",
            "notify_supplier",
        ),
        ({"reason": "r", "cancelled_by": "me", "notes": 3}, "parameter_invalid", "notes"),
    ],
)
async def test_bad_body_is_400_naming_the_parameter(
    sim: Sim, body: dict[str, object], code: str, param: str
) -> None:
    answer = await sim.stateset(ASN, body)
    assert answer.status == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert answer.json()["error"]["code"] == code
    assert answer.json()["error"]["param"] == param


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1]", b"null"])
async def test_body_that_is_not_an_object_is_400(sim: Sim, raw: bytes) -> None:
    answer = await sim.stateset(ASN, raw)
    assert answer.status == 400
    assert answer.json()["error"]["code"] == "parameter_invalid"


async def test_idempotency_key_replays_the_first_success(sim: Sim) -> None:
    first = await sim.stateset(ASN, headers={"Idempotency-Key": "k1"})
    again = await sim.stateset(ASN, headers={"Idempotency-Key": "k1"})
    assert again.status == 200
    assert again.raw == first.raw
    assert again.headers["Idempotent-Replayed"] == "true"
    other_key = await sim.stateset(ASN, headers={"Idempotency-Key": "k2"})
    assert other_key.json()["error"]["code"] == "ASN_ALREADY_CANCELLED"


async def test_idempotency_key_in_flight_answers_409(sim: Sim) -> None:
    first = asyncio.create_task(sim.stateset("slow-1000", headers={"Idempotency-Key": "k"}))
    await sim.arrived(1)  # the first holds the key, a second from now on finds it taken
    second = await sim.stateset("slow-1000", headers={"Idempotency-Key": "k"})
    assert second.status == 409
    assert second.json()["error"]["code"] == "idempotency_key_in_use"
    assert (await first).status == 200


async def test_idempotency_key_of_a_failed_attempt_is_released(sim: Sim) -> None:
    assert (await sim.stateset("flaky503x1", headers={"Idempotency-Key": "k"})).status == 503
    assert (await sim.stateset("flaky503x1", headers={"Idempotency-Key": "k"})).status == 200


RECEIVED = error(
    "invalid_status", "ASN_ALREADY_RECEIVED", "Cannot cancel ASN that has already been received"
)


@pytest.mark.parametrize(
    ("asn_id", "status", "type_", "code"),
    [
        ("notfound-1", 404, "invalid_request_error", "not_found"),
        ("received-1", 400, "invalid_status", "ASN_ALREADY_RECEIVED"),
        ("received409-1", 409, "invalid_status", "ASN_ALREADY_RECEIVED"),
        ("badid-1", 400, "invalid_request_error", "parameter_invalid"),
        ("expired-1", 401, "authentication_error", "EXPIRED_API_KEY"),
        ("noscope-1", 403, "authentication_error", "INSUFFICIENT_PERMISSIONS"),
        ("lowercase-auth-1", 401, "authentication_error", "invalid_api_key"),
        ("lowercase-expired-1", 401, "authentication_error", "api_key_expired"),
        ("lowercase-noscope-1", 403, "authentication_error", "insufficient_permissions"),
        ("keyinuse-1", 409, "invalid_request_error", "idempotency_key_in_use"),
        ("unauthorized-1", 401, "authentication_error", "INVALID_API_KEY"),
        ("err500-1", 500, "api_error", "internal_error"),
        ("already-1", 400, "invalid_status", "ASN_ALREADY_CANCELLED"),
    ],
)
async def test_scenario_ids_give_stateset_errors(
    sim: Sim, asn_id: str, status: int, type_: str, code: str
) -> None:
    answer = await sim.stateset(asn_id)
    assert answer.status == status
    assert answer.json()["error"]["type"] == type_
    assert answer.json()["error"]["code"] == code


async def test_received_is_the_documented_body(sim: Sim) -> None:
    assert (await sim.stateset("received")).json() == RECEIVED


async def test_rate_limit_carries_stateset_headers(sim: Sim) -> None:
    answer = await sim.stateset("ratelimit-7")
    assert answer.status == 429
    assert answer.json()["error"]["code"] == "rate_limit_exceeded"
    assert answer.headers["Retry-After"] == "7"
    assert answer.headers["X-RateLimit-Limit"] == "100"
    assert answer.headers["X-RateLimit-Remaining"] == "0"
