"""A simulator made from any definition's examples: the gateway cancels through it before an
account exists, the id choosing the documented answer, tokens issued and required."""

from __future__ import annotations

import asyncio
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


async def test_an_expired_token_is_refused_once_and_the_gateway_fetches_another(gateway: Gateway):
    first = await gateway.cancel({"connection": "market", "id": "1", "reason": "r"})
    assert first.body["status"] == "cancelled", first.body
    expired = await gateway.cancel({"connection": "market", "id": "token-expired", "reason": "r"})
    assert expired.body["status"] == "cancelled", expired.body
    assert expired.body["upstream"]["attempts"] == 2  # refused, then sent with a new token
    retried = [e for e in gateway.events("upstream.retry") if e["reason"] == "token_refused"]
    assert len(retried) == 1


# A provider that answers a cancel as a job, settled by reading the order (made up).
JOBS = """
name: jobs-shop
credentials: {key: {}}
auth: {header: X-Key, value: "{credentials.key}"}
resources:
  order:
    method: POST
    path: /orders/{id}/cancel
    pending: {status: [202]}
    probe:
      path: /orders/{id}
      cancelled: "state == 'cancelled'"
      pending: "state == 'cancelling'"
      not_cancelled: "state == 'open'"
examples:
  answers:
    - {name: accepted, status: 202, body: {job: J1}, expect: {status: pending}}
    - {name: refused, status: 409, body: {}, expect: {status: rejected, code: not_cancellable}}
    - {name: open, probe: true, status: 200, body: {state: open},
       expect: {status: not_cancelled}}
    - {name: done, probe: true, status: 200, body: {state: cancelled},
       expect: {status: cancelled}}
"""


async def test_a_pending_answer_is_settled_by_the_simulated_probe(
    make_gateway: GatewayFactory,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    tmp_path: Path,
):
    jobs = ProviderDefinition.model_validate(yaml.safe_load(JOBS))
    simulator = await aiohttp_server(create_simulator_app(definitions=[jobs]))
    (tmp_path / "jobs.yaml").write_text(JOBS)
    url = str(simulator.make_url("")).rstrip("/")
    config = (
        "providers: [jobs.yaml]\ncallers:\n  - {name: oms, key: '${OMS_API_KEY}', "
        "connections: ['*']}\nconnections:\n  jobs:\n    provider: jobs-shop\n"
        "    base_url: ${SIM}/jobs-shop\n    credentials: {key: jobs-key-not-real}\n"
        "    async: {first_delay_s: 0.05, max_delay_s: 0.1}\n"
    )
    gateway = await make_gateway(config, env={"SIM": url})
    answered = await gateway.cancel({"connection": "jobs", "id": "O-1"})
    assert (answered.status, answered.body["status"]) == (202, "pending")
    found = await gateway.request("GET", answered.headers["Location"])
    async with asyncio.timeout(5):
        while found.status == 202:
            await asyncio.sleep(0.02)
            found = await gateway.request("GET", answered.headers["Location"])
    assert found.body["status"] == "cancelled"
    assert found.body["upstream"]["probes"] == 1
    refused = await gateway.cancel({"connection": "jobs", "id": "refused"})
    assert refused.body["error"]["code"] == "not_cancellable"
