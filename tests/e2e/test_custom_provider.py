"""A fifth provider, defined by one YAML file beside the config, cancels end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import GatewayFactory, Upstream

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).parent / "fixtures" / "acme-freight.yaml"

CONFIG = """
providers: [acme-freight.yaml]
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  acme:
    provider: acme-freight
    base_url: ${UPSTREAM}/acme
    credentials:
      token: acme-token-not-real
"""


@pytest.fixture
async def acme(make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path):
    shutil.copy(FIXTURE, tmp_path / "acme-freight.yaml")
    return await make_gateway(CONFIG, upstream_url=upstream.url)


async def test_fifth_provider_cancels_with_its_own_dialect(acme, upstream: Upstream):
    """Verb, path, auth, nested body with literals and defaults all come from the file."""
    upstream.answer(202, {"result": {"state": "CANCELLED", "at": 1700000000, "ticket": "T-9"}})
    result = await acme.cancel(
        {
            "connection": "acme",
            "resource": "shipment",
            "id": "SHP/1",
            "reason": "customer changed mind",
            "params": {"priority": 2},
        }
    )
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert result.body["provider"] == "acme-freight"
    assert result.body["cancelled_at"] == "2023-11-14T22:13:20Z"
    assert result.body["provider_response"] == {"ticket": "T-9"}
    sent = upstream.received[0]
    assert (sent.method, sent.raw_path) == ("PUT", "/acme/v2/shipments/SHP%2F1/status")
    assert sent.headers["X-Acme-Token"] == "Token acme-token-not-real"
    assert sent.json() == {
        "status": "CANCELLED",
        "cancellation": {
            "reason": "customer changed mind",
            "by": "oms",
            "priority": 2,
            "tags": ["gateway", "acme"],
        },
    }


async def test_fifth_provider_error_rules_apply(acme, upstream: Upstream):
    upstream.answer(400, {"fault": {"code": "SHIPMENT_IN_TRANSIT", "text": "on the truck"}})
    result = await acme.cancel(
        {"connection": "acme", "resource": "shipment", "id": "1", "reason": "r"}
    )
    assert result.status == 409
    assert result.body["error"]["code"] == "not_cancellable"
    assert result.body["error"]["provider_code"] == "SHIPMENT_IN_TRANSIT"


async def test_fifth_provider_already_cancelled(acme, upstream: Upstream):
    upstream.answer(200, {"result": {"state": "WAS_CANCELLED"}})
    result = await acme.cancel(
        {"connection": "acme", "resource": "shipment", "id": "1", "reason": "r"}
    )
    assert result.body["status"] == "already_cancelled"


async def test_provider_with_several_resources_needs_one(acme, upstream: Upstream):
    """With two resources declared, a request without `resource` is refused."""
    result = await acme.cancel({"connection": "acme", "id": "1", "reason": "r"})
    assert result.status == 422
    assert result.body["error"]["fields"][0]["loc"] == "resource"
    assert upstream.received == []


async def test_second_resource_uses_its_own_verb_and_success_test(acme, upstream: Upstream):
    """The pickup resource DELETEs and accepts 204 with no body as success."""
    upstream.answer(204, body=b"", headers={})
    result = await acme.cancel({"connection": "acme", "resource": "pickup", "id": "P1"})
    assert result.body["status"] == "cancelled"
    assert (upstream.received[0].method, upstream.received[0].raw_path) == (
        "DELETE",
        "/acme/v2/pickups/P1",
    )
