"""The journal records every request, in memory as sent and over HTTP with credentials masked."""

from __future__ import annotations

from gateway.simulate import JOURNAL_KEY

from .conftest import SHIPPER_PATH, Sim, SimFactory


async def test_each_request_is_recorded_as_received(sim: Sim) -> None:
    await sim.rxuniverse("72544", "customer request")
    await sim.shipper("SO-1")
    entries = sim.app[JOURNAL_KEY].entries
    assert [e.provider for e in entries] == ["rxuniverse", "shipper"]
    rx, shipper = entries
    assert rx.method == "DELETE"
    assert rx.path == "/rxuniverse/api/v2/orders/72544?deleteReason=customer%20request"
    assert rx.headers["x-api-key"] == "sim-rxuniverse-key"
    assert rx.body == ""
    assert shipper.path == SHIPPER_PATH
    assert '"order_no":"SO-1"' in shipper.body


async def test_refused_and_unknown_requests_are_recorded_too(sim: Sim) -> None:
    await sim.stateset("asn_1", key="wrong")
    await sim.send("GET", "/elsewhere")
    assert [(e.provider, e.path) for e in sim.app[JOURNAL_KEY]] == [
        ("stateset", "/stateset/v1/asns/asn_1/cancel"),
        (None, "/elsewhere"),
    ]


async def test_http_journal_masks_credentials(sim: Sim) -> None:
    await sim.stateset("asn_1")
    await sim.shoplazza("1")
    await sim.rxuniverse("2")
    await sim.shipper("3")
    answer = await sim.send("GET", "/_journal")
    assert answer.status == 200
    entries = answer.json()
    assert len(entries) == 4  # the journal's own requests are not recorded
    secrets = ("sim-stateset-key", "sim-shoplazza-token", "sim-rxuniverse-key", "sim-shipper-key")
    assert not any(secret.encode() in answer.raw for secret in secrets)
    assert entries[0]["headers"]["Authorization"] == "***"
    assert entries[1]["headers"]["Access-Token"] == "***"
    assert entries[0]["body"].startswith("{")
    assert sim.app[JOURNAL_KEY].entries[0].headers["Authorization"] == "Bearer sim-stateset-key"


async def test_http_journal_filters_by_provider(sim: Sim) -> None:
    await sim.stateset("asn_1")
    await sim.shipper("3")
    entries = (await sim.send("GET", "/_journal?provider=shipper")).json()
    assert [e["provider"] for e in entries] == ["shipper"]


async def test_delete_clears_the_journal(sim: Sim) -> None:
    await sim.stateset("asn_1")
    assert (await sim.send("DELETE", "/_journal")).status == 204
    assert (await sim.send("GET", "/_journal")).json() == []
    assert len(sim.app[JOURNAL_KEY]) == 0


async def test_two_apps_share_nothing(make_sim: SimFactory) -> None:
    one, two = await make_sim(), await make_sim()
    await one.stateset("asn_1")
    assert (await two.stateset("asn_1")).status == 200
    assert len(two.app[JOURNAL_KEY]) == 1
