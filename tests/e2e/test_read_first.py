"""A resource that reads before it cancels (commercetools' shape: the update names the version
it applies to), end to end against a loopback server that versions its orders, refuses a stale
version, issues OAuth2 tokens and expires them on demand."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent / "fixtures"
CLIENT_ID, CLIENT_SECRET = "ct-client-not-real", "ct-secret-not-real"
PROJECT = "shop-eu"

CONFIG = """
providers: [versioned-shop.yaml]
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  shop:
    provider: versioned-shop
    base_url: ${UPSTREAM}
    credentials: {client_id: ct-client-not-real, client_secret: ct-secret-not-real}
    params: {project_key: shop-eu, auth_host: "${UPSTREAM}"}
    timeout_s: 5
    retry: {backoff_base_s: 0.01, backoff_max_s: 0.02}
"""


def error(status: int, code: str, message: str) -> web.Response:
    body = {"statusCode": status, "message": message, "errors": [{"code": code}]}
    return web.json_response(body, status=status)


@dataclass
class Shop:
    """Orders with versions; `changes` more updates land between a read and the cancel."""

    url: str = ""
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    issued: int = 0
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    changes: int = 0  # concurrent updates to make after the next reads
    read_failures: int = 0  # reads answered 503 first

    async def token(self, request: web.Request) -> web.Response:
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        form = dict(await request.post())
        wanted = {"grant_type": "client_credentials", "scope": f"manage_orders:{PROJECT}"}
        if request.headers.get("Authorization") != f"Basic {basic}" or form != wanted:
            return web.json_response({"error": "invalid_client"}, status=401)
        self.issued += 1
        token = f"ct-token-{self.issued}-not-real"
        self.tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": 172800})

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "").removeprefix("Bearer ") in self.tokens

    async def read(self, request: web.Request) -> web.Response:
        order_id = request.match_info["id"]
        self.calls.append(("GET", order_id, None))
        if not self._authorized(request):
            return error(401, "invalid_token", "invalid_token")
        if self.read_failures:
            self.read_failures -= 1
            return error(503, "ServiceUnavailable", "try again")
        order = self.orders.get(order_id)
        if order is None:
            return error(
                404, "ResourceNotFound", f"The Resource with ID '{order_id}' was not found."
            )
        answer = dict(order)
        if self.changes:  # someone else updates the order right after this read
            self.changes -= 1
            order["version"] += 1
        return web.json_response(answer)

    async def update(self, request: web.Request) -> web.Response:
        order_id = request.match_info["id"]
        body = await request.json()
        self.calls.append(("POST", order_id, body))
        if not self._authorized(request):
            return error(401, "invalid_token", "invalid_token")
        order = self.orders[order_id]
        if body["version"] != order["version"]:
            body409 = {
                "statusCode": 409,
                "message": f"Object {order_id} has a different version than expected.",
                "errors": [{"code": "ConcurrentModification", "currentVersion": order["version"]}],
            }
            return web.json_response(body409, status=409)
        order.update(orderState="Cancelled", version=order["version"] + 1)
        return web.json_response(order)


@pytest.fixture
async def shop(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Shop:
    fake = Shop(orders={"o-1": {"id": "o-1", "version": 3, "orderState": "Open"}})
    app = web.Application()
    app.router.add_post("/oauth/token", fake.token)
    app.router.add_get(f"/{PROJECT}/orders/{{id}}", fake.read)
    app.router.add_post(f"/{PROJECT}/orders/{{id}}", fake.update)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, shop: Shop, tmp_path: Path) -> Gateway:
    shutil.copy(FIXTURES / "versioned-shop.yaml", tmp_path / "versioned-shop.yaml")
    return await make_gateway(CONFIG, upstream_url=shop.url)


async def test_the_cancel_names_the_version_the_read_gave(gateway: Gateway, shop: Shop):
    result = await gateway.cancel({"connection": "shop", "id": "o-1"})
    assert (result.status, result.body["status"]) == (200, "cancelled"), result.body
    assert result.body["provider_response"] == {"version": 4}
    assert shop.calls == [
        ("GET", "o-1", None),
        (
            "POST",
            "o-1",
            {"version": 3, "actions": [{"action": "changeOrderState", "orderState": "Cancelled"}]},
        ),
    ]
    assert result.body["upstream"]["method"] == "POST"


async def test_an_order_already_cancelled_is_read_so_and_nothing_is_sent(
    gateway: Gateway, shop: Shop
):
    shop.orders["o-1"]["orderState"] = "Cancelled"
    result = await gateway.cancel({"connection": "shop", "id": "o-1"})
    assert (result.status, result.body["status"]) == (200, "already_cancelled"), result.body
    assert [method for method, _, _ in shop.calls] == ["GET"]


async def test_an_unknown_order_is_not_found_at_the_read(gateway: Gateway, shop: Shop):
    result = await gateway.cancel({"connection": "shop", "id": "o-404"})
    assert (result.status, result.body["error"]["code"]) == (404, "not_found"), result.body
    assert result.body["error"]["provider_code"] == "ResourceNotFound"
    assert [method for method, _, _ in shop.calls] == ["GET"]


async def test_an_order_changed_in_between_is_read_again(gateway: Gateway, shop: Shop):
    """The provider answers 409 ConcurrentModification: the cancel was not applied, so the
    attempt is repeated, read included, even though the POST is not safe to repeat blindly."""
    shop.changes = 1
    result = await gateway.cancel({"connection": "shop", "id": "o-1"})
    assert (result.status, result.body["status"]) == (200, "cancelled"), result.body
    assert result.body["upstream"]["attempts"] == 2
    posted = [body["version"] for method, _, body in shop.calls if method == "POST"]
    assert posted == [3, 4]
    assert [r["reason"] for r in gateway.events("upstream.retry")] == ["stale_read"]


async def test_a_read_that_fails_is_repeated_like_a_request_never_sent(
    gateway: Gateway, shop: Shop
):
    shop.read_failures = 1
    result = await gateway.cancel({"connection": "shop", "id": "o-1"})
    assert (result.status, result.body["status"]) == (200, "cancelled"), result.body
    assert [method for method, _, _ in shop.calls] == ["GET", "GET", "POST"]


async def test_an_expired_token_at_the_read_is_renewed_once(gateway: Gateway, shop: Shop):
    assert (await gateway.cancel({"connection": "shop", "id": "o-1"})).status == 200
    shop.orders["o-2"] = {"id": "o-2", "version": 1, "orderState": "Open"}
    shop.tokens.clear()  # every token issued so far expires
    result = await gateway.cancel({"connection": "shop", "id": "o-2"})
    assert (result.status, result.body["status"]) == (200, "cancelled"), result.body
    assert shop.issued == 2
    assert "ct-token-2-not-real" not in gateway.log_text
