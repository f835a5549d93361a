"""Rate-limit hints, end to end: a GraphQL shop that says "throttled" inside HTTP 200 and how
long to wait in a header (milliseconds), against a loopback server. The gateway waits as told
and repeats within the budget, or answers rate_limited with the wait when it does not fit."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "shpat-not-real-0123456789"
CONFIG = """
providers: [throttled-shop.yaml]
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  shop:
    provider: throttled-shop
    base_url: ${UPSTREAM}
    credentials: {access_token: shpat-not-real-0123456789}
    timeout_s: 3
"""
THROTTLED = {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]}


@dataclass
class Shop:
    throttle: list[int] = field(default_factory=list)  # the waits (ms) of the next answers
    variables: list[dict[str, str]] = field(default_factory=list)

    async def graphql(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Shopify-Access-Token") != TOKEN:
            return web.json_response({"errors": "[API] Invalid API key"}, status=401)
        body = await request.json()
        assert "orderCancel(orderId: $orderId" in body["query"]
        self.variables.append(body["variables"])
        if self.throttle:
            wait = self.throttle.pop(0)
            return web.json_response(THROTTLED, headers={"X-Rate-Limit-Time-Reset-Ms": str(wait)})
        if body["variables"]["orderId"].endswith("/fulfilled"):
            error = {"code": "CANNOT_CANCEL_ORDER", "message": "the order is fulfilled"}
            data = {"orderCancel": {"job": None, "orderCancelUserErrors": [error]}}
            return web.json_response({"data": data})
        job = {"id": "gid://shopify/Job/7"}
        return web.json_response(
            {"data": {"orderCancel": {"job": job, "orderCancelUserErrors": []}}}
        )


@pytest.fixture
async def shop(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> tuple[Shop, str]:
    fake = Shop()
    app = web.Application()
    app.router.add_post("/admin/api/2025-01/graphql.json", fake.graphql)
    server = await aiohttp_server(app)
    return fake, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, shop: tuple[Shop, str], tmp_path: Path) -> Gateway:
    shutil.copy(FIXTURES / "throttled-shop.yaml", tmp_path / "throttled-shop.yaml")
    return await make_gateway(CONFIG, upstream_url=shop[1])


async def test_a_throttle_inside_a_200_is_waited_out_as_the_header_says(
    gateway: Gateway, shop: tuple[Shop, str]
):
    fake, _ = shop
    fake.throttle = [1000]
    result = await gateway.cancel({"connection": "shop", "id": "820982911946154508"})
    assert (result.status, result.body["status"]) == (200, "cancelled"), result.body
    assert result.body["upstream"]["attempts"] == 2
    assert result.body["upstream"]["latency_ms"] >= 1000  # the wait the header asked for
    [retry] = gateway.events("upstream.retry")
    assert (retry["reason"], retry["delay_ms"]) == ("rate_limited", 1000.0)
    assert fake.variables[0] == {
        "orderId": "gid://shopify/Order/820982911946154508",
        "reason": "CUSTOMER",
    }


async def test_a_wait_past_the_budget_is_answered_with_it(gateway: Gateway, shop: tuple[Shop, str]):
    fake, _ = shop
    fake.throttle = [20000]
    result = await gateway.cancel({"connection": "shop", "id": "1"})
    assert result.status == 429, result.body
    error = result.body["error"]
    assert (error["code"], error["retry_after_s"], error["provider_code"]) == (
        "rate_limited",
        20,
        "THROTTLED",
    )
    assert result.headers["Retry-After"] == "20"
    assert "past the budget" in error["message"]
    assert len(fake.variables) == 1


async def test_a_user_error_inside_a_200_is_the_outcome(gateway: Gateway, shop: tuple[Shop, str]):
    result = await gateway.cancel({"connection": "shop", "id": "fulfilled"})
    assert (result.status, result.body["error"]["code"]) == (409, "not_cancellable")
    assert result.body["error"]["provider_code"] == "CANNOT_CANCEL_ORDER"
