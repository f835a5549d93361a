"""The RxUniverse simulator answers Cancel an Order as its document and NOTES.md say."""

from __future__ import annotations

import pytest

from gateway.simulate import JOURNAL_KEY, SimulatorKeys

from .conftest import Sim, SimFactory


def error(message: str, *details: str) -> dict[str, object]:
    return {"error": message, "details": list(details)}


async def test_success_is_the_order_with_an_empty_message(sim: Sim) -> None:
    answer = await sim.rxuniverse("72544", "customer request")
    assert answer.status == 200
    assert answer.json() == {
        "orderNumber": "72544",
        "trayNumber": "337178",
        "poNumber": "Example",
        "message": "",
    }


async def test_second_cancel_answers_order_already_completed(sim: Sim) -> None:
    assert (await sim.rxuniverse("72544")).status == 200
    again = await sim.rxuniverse("72544")
    assert again.status == 400
    assert again.json() == error("Order already completed")


@pytest.mark.parametrize("key", ["wrong", None])
async def test_bad_key_is_401(sim: Sim, key: str | None) -> None:
    answer = await sim.rxuniverse("72544", key=key)
    assert answer.status == 401
    assert answer.json() == error("Unauthorized")


async def test_no_configured_key_accepts_any_request(make_sim: SimFactory) -> None:
    sim = await make_sim(SimulatorKeys(rxuniverse=None))
    assert (await sim.rxuniverse("72544", key=None)).status == 200


async def test_key_header_name_is_configurable(make_sim: SimFactory) -> None:
    sim = await make_sim(SimulatorKeys(rxuniverse="lab-key", rxuniverse_header="X-Lab-Key"))
    path = "/rxuniverse/api/v2/orders/72544"
    assert (await sim.send("DELETE", path, headers={"x-api-key": "lab-key"})).status == 401
    assert (await sim.send("DELETE", path, headers={"X-Lab-Key": "lab-key"})).status == 200


async def test_wrong_verb_is_405_in_rxuniverse_shape(sim: Sim) -> None:
    answer = await sim.rxuniverse("72544", method="GET")
    assert answer.status == 405
    assert answer.json() == error("Method Not Allowed")


async def test_unknown_reason_code_is_rejected_for_any_id(sim: Sim) -> None:
    answer = await sim.rxuniverse("72544", "9999")
    assert answer.status == 400
    assert answer.json() == error("Delete reason code does not exist", "Provided: 9999")
    assert (await sim.rxuniverse("72544", "1")).status == 200  # nothing was cancelled before


@pytest.mark.parametrize(
    ("identifier", "reason", "status", "body"),
    [
        ("notfound-9999999", None, 404, error("No record found", "Provided: notfound-9999999")),
        ("jobtracker-1", None, 400, error("Job Tracker module required for cancel method")),
        ("noreasons-1", None, 400, error("The delete reasons file is empty")),
        ("badreason-1", "42", 400, error("Delete reason code does not exist", "Provided: 42")),
        ("badreason-2", None, 400, error("Delete reason code does not exist")),
        ("station-1", None, 400, error("Order has been through a non-cancel station")),
        ("already-1", None, 400, error("Order already completed")),
        ("unauthorized-1", None, 401, error("Unauthorized")),
        ("err500-1", None, 500, error("Internal Server Error")),
    ],
)
async def test_scenario_ids_give_the_documented_errors(
    sim: Sim, identifier: str, reason: str | None, status: int, body: object
) -> None:
    answer = await sim.rxuniverse(identifier, reason)
    assert answer.status == status
    assert answer.json() == body


async def test_warning_scenario_succeeds_with_a_message(sim: Sim) -> None:
    answer = await sim.rxuniverse("warning-1", "customer request")
    assert answer.status == 200
    assert "deleteReason was ignored" in answer.json()["message"]


async def test_identifier_is_one_percent_decoded_path_segment(sim: Sim) -> None:
    answer = await sim.rxuniverse("PO 7/a?b")
    assert answer.status == 200
    assert answer.json()["orderNumber"] == "PO 7/a?b"
    assert sim.app[JOURNAL_KEY].entries[-1].path == ("/rxuniverse/api/v2/orders/PO%207%2Fa%3Fb")
