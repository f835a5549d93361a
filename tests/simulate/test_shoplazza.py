"""The Shoplazza simulator answers Cancel Procurement as its document shows."""

from __future__ import annotations

import pytest

from .conftest import NOW, Sim, SimFactory

PROCUREMENT = "382451985837728044"
DOCUMENTED = {
    "procurement": {
        "id": "382451985837728044",
        "procurement_sn": "00000002",
        "supplier_id": "382453603865993516",
        "location_id": "190035786870033452",
        "note": "teest note",
        "state": 4,
        "pending_quantity": 0,
        "received_quantity": 0,
        "rejected_quantity": 0,
        "transfer_quantity": 0,
        "created_by": "",
        "created_at": "2024-05-21T08:47:39Z",
        "updated_at": "2024-01-16T10:30:00Z",
    }
}


async def test_success_is_the_documented_procurement_in_state_4(sim: Sim) -> None:
    answer = await sim.shoplazza(PROCUREMENT)
    assert answer.status == 200
    assert answer.json() == DOCUMENTED
    assert answer.headers["Request-Id"].startswith("sim-shoplazza-")


async def test_any_store_and_version_is_served(sim: Sim) -> None:
    answer = await sim.shoplazza("p-1", shop="other-shop", version="2024-07")
    assert answer.json()["procurement"]["id"] == "p-1"


async def test_second_cancel_answers_state_4_with_the_first_updated_at(
    make_sim: SimFactory,
) -> None:
    times = iter([NOW, NOW.replace(hour=11), NOW.replace(hour=12)])
    sim = await make_sim(clock=lambda: next(times))
    first = await sim.shoplazza(PROCUREMENT)
    again = await sim.shoplazza(PROCUREMENT)
    assert again.status == 200
    assert again.json() == first.json()
    assert again.json()["procurement"]["updated_at"] == "2024-01-16T10:30:00Z"


async def test_body_is_ignored(sim: Sim) -> None:
    path = f"/shoplazza/demo-shop/openapi/2022-01/procurements/{PROCUREMENT}/cancel"
    answer = await sim.send(
        "PATCH", path, headers={"Access-Token": "sim-shoplazza-token"}, data=b"{junk"
    )
    assert answer.status == 200


@pytest.mark.parametrize("key", ["wrong", None])
async def test_bad_token_is_store_is_not_active(sim: Sim, key: str | None) -> None:
    answer = await sim.shoplazza(PROCUREMENT, key=key)
    assert answer.status == 401
    assert answer.json() == {"error": "store is not active"}


async def test_bearer_header_is_not_the_token(sim: Sim) -> None:
    """The document's curl example shows Bearer; its table and the platform say Access-Token."""
    path = f"/shoplazza/demo-shop/openapi/2022-01/procurements/{PROCUREMENT}/cancel"
    answer = await sim.send("PATCH", path, headers={"Authorization": "Bearer sim-shoplazza-token"})
    assert answer.status == 401


async def test_wrong_verb_is_405_in_shoplazza_shape(sim: Sim) -> None:
    answer = await sim.shoplazza(PROCUREMENT, method="POST")
    assert answer.status == 405
    assert answer.json() == {"errors": ["Method Not Allowed"]}


@pytest.mark.parametrize(
    ("procurement_id", "status", "body"),
    [
        ("notfound-1", 404, {"errors": ["Procurement not found"]}),
        ("badid-1", 400, {"errors": ["invalid procurement_id"]}),
        ("inactive-1", 401, {"error": "store is not active"}),
        ("unauthorized-1", 401, {"error": "store is not active"}),
        ("noscope-1", 403, {"errors": ["Forbidden"]}),
        ("nosupplier-1", 400, {"error": "Supplier not found"}),
        ("nocontext-1", 400, {"errors": ["No Context"]}),
        ("err500-1", 500, {"errors": ["Internal Server Error"]}),
    ],
)
async def test_scenario_ids_give_shoplazza_errors(
    sim: Sim, procurement_id: str, status: int, body: object
) -> None:
    answer = await sim.shoplazza(procurement_id)
    assert answer.status == status
    assert answer.json() == body


async def test_already_scenario_answers_state_4(sim: Sim) -> None:
    answer = await sim.shoplazza("already-1")
    assert answer.status == 200
    assert answer.json()["procurement"]["state"] == 4


async def test_unknown_path_is_404_in_shoplazza_shape(sim: Sim) -> None:
    answer = await sim.send("PATCH", "/shoplazza/demo-shop/openapi/2022-01/orders/1/cancel")
    assert answer.status == 404
    assert answer.json() == {"errors": ["Not Found"]}
