"""The Shipper simulator answers Cancel Sales Order B2C as its document shows."""

from __future__ import annotations

import re

import pytest

from gateway.simulate import STATE_KEY

from .conftest import NOW, Sim, shipper_body

PATH = "/v3/fulfillment/outbound/oms/cancel"
UNIX_NOW = int(NOW.timestamp())
INVALID = {
    "metadata": {
        "path": PATH,
        "http_status_code": 400,
        "http_status": "Bad Request",
        "errors": [{"code": 810, "message": "Invalid Input. Please Validate Your Input."}],
        "timestamp": UNIX_NOW,
    }
}


def failure(status: int, phrase: str, code: int, message: str) -> dict[str, object]:
    errors = [{"code": code, "message": message}]
    return {
        "metadata": {
            "path": PATH,
            "http_status_code": status,
            "http_status": phrase,
            "errors": errors,
            "timestamp": UNIX_NOW,
        }
    }


async def test_success_is_the_documented_metadata(sim: Sim) -> None:
    answer = await sim.shipper("KZFILN0HRC9RDXJTZBJS")
    assert answer.status == 200
    assert answer.json() == {
        "metadata": {
            "path": PATH,
            "http_status_code": 200,
            "http_status": "OK",
            "timestamp": UNIX_NOW,
        }
    }


async def test_second_cancel_succeeds_again(sim: Sim) -> None:
    """Shipper documents no 'already cancelled' answer."""
    assert (await sim.shipper("SO-2")).status == 200
    again = await sim.shipper("SO-2")
    assert again.status == 200
    assert again.json()["metadata"]["http_status_code"] == 200
    assert sim.app[STATE_KEY].is_cancelled("shipper", "SO-2")


@pytest.mark.parametrize("key", ["wrong", None])
async def test_bad_key_is_the_documented_401(sim: Sim, key: str | None) -> None:
    answer = await sim.shipper(key=key)
    assert answer.status == 401
    metadata = answer.json()["metadata"]
    assert metadata["path"] == PATH
    assert metadata["status_code"] == 401
    assert metadata["status"] == "Unauthorized"
    assert metadata["message"] == f"PATCH {PATH} [401] Unauthorized"
    assert metadata["error"] == {
        "code": 802,
        "message": "Unauthorized Access. You are not authorized to access this resource.",
    }
    assert metadata["timestamp"] == "2024-01-16T10:30:00Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", metadata["timestamp"])


async def test_wrong_verb_is_405_in_shipper_shape(sim: Sim) -> None:
    answer = await sim.shipper(method="POST")
    assert answer.status == 405
    assert answer.json()["metadata"]["http_status_code"] == 405
    assert answer.json()["metadata"]["http_status"] == "Method Not Allowed"


@pytest.mark.parametrize(
    "body",
    [
        shipper_body(order_no="x" * 51),
        shipper_body(cancel_reason="x" * 51),
        shipper_body(warehouse_id="x" * 21),
        shipper_body(order_no=""),
        shipper_body(cancel_reason=None),
        shipper_body(warehouse_id=7),
        {"data": {"cancellation": {"order_no": "SO-1", "cancel_reason": "r"}}},
        {"data": {}},
        {"cancellation": shipper_body()["data"]["cancellation"]},
        [],
        b"not json",
        b"",
    ],
)
async def test_missing_or_over_long_field_is_the_documented_810(sim: Sim, body: object) -> None:
    answer = await sim.shipper(body=body)
    assert answer.status == 400
    assert answer.json() == INVALID


async def test_fields_at_their_limits_are_accepted(sim: Sim) -> None:
    body = shipper_body("x" * 50, "y" * 50, "z" * 20)
    assert (await sim.shipper(body=body)).status == 200


@pytest.mark.parametrize(
    ("order_no", "status", "expected"),
    [
        (
            "notfound-1",
            400,
            failure(400, "Bad Request", 3012, "Order Doesn't Exist in WMS and OMS."),
        ),
        ("allocated-1", 400, failure(400, "Bad Request", 811, "Sales Order already allocated")),
        ("badid-1", 400, INVALID),
        ("err500-1", 500, failure(500, "Internal Server Error", 803, "Internal Server error.")),
    ],
)
async def test_scenario_ids_give_shipper_errors(
    sim: Sim, order_no: str, status: int, expected: dict[str, object]
) -> None:
    answer = await sim.shipper(order_no)
    assert answer.status == status
    assert answer.json() == expected


async def test_unauthorized_scenario_is_the_documented_401(sim: Sim) -> None:
    answer = await sim.shipper("unauthorized-1")
    assert answer.status == 401
    assert answer.json()["metadata"]["error"]["code"] == 802


async def test_already_scenario_succeeds(sim: Sim) -> None:
    assert (await sim.shipper("already-1")).status == 200


async def test_unknown_path_is_404_in_shipper_shape(sim: Sim) -> None:
    answer = await sim.send("PATCH", "/shipper/v3/fulfillment/outbound/oms/uncancel")
    assert answer.status == 404
    assert answer.json()["metadata"]["path"] == "/v3/fulfillment/outbound/oms/uncancel"
