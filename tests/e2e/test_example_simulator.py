"""A simulator made from any definition's examples: the gateway cancels through it before an
account exists, the id choosing the documented answer, tokens issued and required."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from gateway.definition import ProviderDefinition
from gateway.simulate import create_simulator_app
from tests.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = (
    "acme-freight",
    "session-shop",
    "oauth-market",
    "versioned-shop",
    "rotating-shop",
    "line-warehouse",
)
CONFIG = """
providers: [acme-freight.yaml, session-shop.yaml, oauth-market.yaml, versioned-shop.yaml,
            rotating-shop.yaml, line-warehouse.yaml]
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  acme:
    provider: acme-freight
    base_url: ${SIM}/acme-freight
    credentials: {token: acme-token-not-real}
  shop:
    provider: session-shop
    base_url: ${SIM}/session-shop
    credentials: {username: admin-user-not-real, password: admin-password-not-real}
    params: {shop_url: "${SIM}/session-shop"}
  market:
    provider: oauth-market
    base_url: ${SIM}/oauth-market
    credentials: {client_id: client-id-not-real, client_secret: client-secret-not-real}
    params: {token_host: "${SIM}/oauth-market"}
  versioned:
    provider: versioned-shop
    base_url: ${SIM}/versioned-shop
    credentials: {client_id: client-id-not-real, client_secret: client-secret-not-real}
    params: {project_key: demo, auth_host: "${SIM}/versioned-shop"}
  rotating:
    provider: rotating-shop
    base_url: ${SIM}/rotating-shop
    credentials: {partner_key: partner-key-not-real, refresh_token: refresh-token-not-real}
    params: {host: "${SIM}/rotating-shop", partner_id: "1", shop_id: "2"}
  warehouse:
    provider: line-warehouse
    base_url: ${SIM}/line-warehouse
    credentials: {api_key: warehouse-key-not-real}
"""


def definition(name: str) -> ProviderDefinition:
    return ProviderDefinition.model_validate(
        yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())
    )


@pytest.fixture
async def gateway(
    make_gateway: GatewayFactory,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    tmp_path: Path,
) -> Gateway:
    simulator = await aiohttp_server(
        create_simulator_app(definitions=[definition(name) for name in NAMES])
    )
    for name in NAMES:
        shutil.copy(FIXTURES / f"{name}.yaml", tmp_path / f"{name}.yaml")
    url = str(simulator.make_url("")).rstrip("/")
    return await make_gateway(CONFIG, env={"SIM": url})


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"resource": "shipment", "id": "S-1", "reason": "r"}, "cancelled", None),
        (
            {"resource": "shipment", "id": "already-cancelled", "reason": "r"},
            "already_cancelled",
            None,
        ),
        (
            {"resource": "shipment", "id": "in-transit", "reason": "r"},
            "rejected",
            "not_cancellable",
        ),
        ({"resource": "pickup", "id": "P-1"}, "cancelled", None),
    ],
)
async def test_the_id_chooses_the_documented_answer(
    gateway: Gateway, body: dict[str, str], status: str, code: str | None
):
    result = await gateway.cancel({"connection": "acme", **body})
    assert result.body["status"] == status, result.body
    assert (result.body["error"] or {}).get("code") == code


@pytest.mark.parametrize("connection", ["shop", "market"])
async def test_a_token_is_issued_by_the_simulator_and_required_by_it(
    gateway: Gateway, connection: str
):
    """The session login (a bare string) and the OAuth2 token endpoint both answer a token,
    and the simulated resources refuse a request without one."""
    ok = await gateway.cancel({"connection": connection, "id": "1", "reason": "r"})
    assert (ok.status, ok.body["status"]) == (200, "cancelled"), ok.body
    locked = await gateway.cancel({"connection": "shop", "id": "locked", "reason": "r"})
    assert locked.body["error"]["code"] == "not_cancellable"


async def test_a_simulated_resource_refuses_a_request_without_an_issued_token(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
):
    simulator = await aiohttp_server(create_simulator_app(definitions=[definition("oauth-market")]))
    url = simulator.make_url("/oauth-market/v3/orders/1/cancel")
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={}) as refused:
            assert refused.status == 401
        async with session.post(simulator.make_url("/oauth-market/v3/token")) as issued:
            token = (await issued.json())["access_token"]
        headers = {"WM_SEC.ACCESS_TOKEN": token}
        async with session.post(url, json={}, headers=headers) as accepted:
            assert accepted.status == 200


@pytest.mark.parametrize(
    ("connection", "body", "status", "code"),
    [
        ("versioned", {"id": "o-1"}, "cancelled", None),  # the read's first answer, then done
        ("versioned", {"id": "cancelled-order"}, "already_cancelled", None),  # seen at the read
        ("rotating", {"id": "2201"}, "cancelled", None),  # the token in the query, signed
        ("warehouse", {"id": "SO-1", "items": [{"id": "1"}, {"id": "2"}]}, "cancelled", None),
        ("warehouse", {"id": "shipped", "items": [{"id": "1"}]}, "rejected", "not_cancellable"),
    ],
)
async def test_reads_query_tokens_and_lines_are_simulated_too(
    gateway: Gateway, connection: str, body: dict[str, object], status: str, code: str | None
):
    result = await gateway.cancel({"connection": connection, **body})
    assert result.body["status"] == status, result.body
    assert (result.body["error"] or {}).get("code") == code
