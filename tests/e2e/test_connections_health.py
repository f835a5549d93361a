"""`GET /v1/connections/health` end to end: what the console shows of each connection after
real cancellations through a real upstream: outcomes by minute, latency, an open breaker, and
only the connections the caller may use (all of them for an admin)."""

from __future__ import annotations

import pytest

from tests.conftest import BASE_CONFIG, GatewayFactory, Upstream

pytestmark = pytest.mark.e2e

ADMIN_KEY = "ops-admin-key-0123456789"
LIMITED_KEY = "limited-caller-key-0123456789"  # BASE_CONFIG's caller of shipper-* only
CONFIG = BASE_CONFIG.replace(
    "callers:\n", f"callers:\n  - name: ops\n    key: {ADMIN_KEY}\n    admin: true\n", 1
)
STATESET = {"connection": "stateset-main", "reason": "r"}
STATESET_OK = {"id": "x", "status": "cancelled", "cancelled_at": "2024-01-01T00:00:00Z"}
SHIPPER = {"connection": "shipper-main", "reason": "customer request"}


async def test_each_connection_shows_its_outcomes_latency_and_breaker(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(CONFIG, upstream_url=upstream.url)
    upstream.answer(200, STATESET_OK)
    upstream.answer(200, STATESET_OK)
    for n in range(2):
        assert (await gateway.cancel({**STATESET, "id": f"asn-{n}"})).status == 200
    upstream.always(503, {"error": "down"})
    for n in range(3):  # three attempts each: the breaker opens after five failures
        await gateway.cancel({**SHIPPER, "id": f"SO-{n}"})

    answer = await gateway.request("GET", "/v1/connections/health")
    assert answer.status == 200, answer.body
    assert answer.body["window_s"] == 900
    by_name = {c["connection"]: c for c in answer.body["connections"]}
    assert set(by_name) == {"stateset-main", "shipper-main", "shoplazza-main", "rxuniverse-lab"}

    stateset = by_name["stateset-main"]
    assert stateset["provider"] == "stateset"
    assert stateset["outcomes"] == {"cancelled": 2}
    assert sum(m["outcomes"].get("cancelled", 0) for m in stateset["minutes"]) == 2
    assert len(stateset["minutes"]) == 15
    assert stateset["latency"]["p50_ms"] > 0
    assert stateset["latency"]["p95_ms"] >= stateset["latency"]["p50_ms"]
    assert (stateset["breaker"], stateset["in_flight"]) == ("closed", 0)

    shipper = by_name["shipper-main"]
    assert shipper["breaker"] == "open"
    assert shipper["outcomes"].get("failed") == 3
    untouched = by_name["rxuniverse-lab"]
    assert untouched["outcomes"] == {}
    assert untouched["latency"]["p50_ms"] is None


async def test_a_caller_sees_the_connections_it_may_use_and_an_admin_all(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(CONFIG, upstream_url=upstream.url)
    limited = await gateway.request("GET", "/v1/connections/health", key=LIMITED_KEY)
    assert [c["connection"] for c in limited.body["connections"]] == ["shipper-main"]
    admin = await gateway.request("GET", "/v1/connections/health", key=ADMIN_KEY)
    assert len(admin.body["connections"]) == 4
    anonymous = await gateway.request("GET", "/v1/connections/health", key=None)
    assert anonymous.status == 401
