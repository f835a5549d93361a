"""Admission control end to end: a gateway at its limit of cancellations in flight answers
one more at once with 503 `overloaded`, keeps its health and metrics endpoints answering, and
admits again as soon as a slot frees."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import BASE_CONFIG, GatewayFactory, Upstream

pytestmark = pytest.mark.e2e

TWO = BASE_CONFIG.replace("callers:", "server: {max_in_flight: 2}\ncallers:", 1)
CANCEL = {"connection": "stateset-main", "reason": "r"}
OK = {"id": "x", "status": "cancelled", "cancelled_at": "2024-01-01T00:00:00Z"}


async def test_beyond_the_limit_answers_overloaded_at_once_and_health_still_answers(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(TWO, upstream_url=upstream.url)
    hold = asyncio.Event()
    upstream.answer(200, OK, until=hold)
    upstream.answer(200, OK, until=hold)
    upstream.always(200, OK)
    held = [asyncio.create_task(gateway.cancel({**CANCEL, "id": f"A-{n}"})) for n in range(2)]
    await upstream.wait_for(2)

    refused = await asyncio.gather(*(gateway.cancel({**CANCEL, "id": f"B-{n}"}) for n in range(4)))
    assert {r.status for r in refused} == {503}
    assert {r.body["error"]["code"] for r in refused} == {"overloaded"}
    assert {r.headers["Retry-After"] for r in refused} == {"1"}
    assert len(upstream.received) == 2  # none of them sent
    for path in ("/healthz", "/readyz"):
        assert (await gateway.request("GET", path, key=None)).status == 200
    batch = await gateway.request(
        "POST", "/v1/cancellations/batch", json={"items": [{**CANCEL, "id": "C-1"}]}
    )
    assert (batch.status, batch.body["error"]["code"]) == (503, "overloaded")  # refused whole
    unauthenticated = await gateway.cancel({**CANCEL, "id": "E-1"}, key=None)
    assert unauthenticated.status == 503  # refused before anything else, the key included
    assert "X-Config-Version" in unauthenticated.headers
    refusals = [e for e in gateway.logs if e.get("status") == 503]
    assert refusals == []  # no line each: counted in the metrics instead
    metrics = (await gateway.session.get(gateway.url + "/metrics")).content
    text = (await metrics.read()).decode()
    assert "cancel_gateway_overloaded_total 6.0" in text

    hold.set()
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
    admitted = await gateway.cancel({**CANCEL, "id": "D-1"})
    assert admitted.status == 200
    listed = await gateway.request("GET", "/v1/cancellations")
    assert sorted(e["resource_id"] for e in listed.body["items"]) == ["A-0", "A-1", "D-1"]
