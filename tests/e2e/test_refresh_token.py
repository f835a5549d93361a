"""A provider whose access token comes from a single-use refresh token that rotates on every
refresh (Shopee's shape), with signed refresh and cancel calls and the token in the query,
end to end against a loopback server that spends each refresh token once. The newest refresh
token lives in the store: a restart continues the chain, and two gateways sharing the store
never spend the same token."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
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
PARTNER_ID, SHOP_ID = "2001887", "60001"
PARTNER_KEY = "partner-key-not-real-0123456789"
FIRST_REFRESH = "refresh-0-not-real"

CONFIG = """
providers: [rotating-shop.yaml]
store: ${STORE}
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  shop:
    provider: rotating-shop
    base_url: ${SHOP}
    credentials: {partner_key: "${PARTNER_KEY}", refresh_token: "${REFRESH}"}
    params: {host: "${SHOP}", partner_id: "2001887", shop_id: "60001"}
    timeout_s: 5
"""


def sign(*parts: str) -> str:
    """The documented recipe, written out: HMAC-SHA256 under the partner key, lowercase hex."""
    return hmac.new(PARTNER_KEY.encode(), "".join(parts).encode(), hashlib.sha256).hexdigest()


@dataclass
class Shop:
    """Spends each refresh token once (a spent one is refused with 403), checks every
    signature by the recipe above, and accepts the access tokens it issued."""

    url: str = ""
    refresh: str = FIRST_REFRESH  # the one refresh token that works now
    spent: list[str] = field(default_factory=list)
    access: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)  # the access token of each cancel
    slow_refresh_s: float = 0.0

    async def refresh_token(self, request: web.Request) -> web.Response:
        query = request.query
        body = await request.json()
        expected = sign(PARTNER_ID, request.path, query["timestamp"])
        if query["partner_id"] != PARTNER_ID or query.get("sign") != expected:
            return web.json_response({"error": "error_sign", "message": "Wrong sign."}, status=403)
        if self.slow_refresh_s:
            await asyncio.sleep(self.slow_refresh_s)
        given = body["refresh_token"]
        if given != self.refresh or body["shop_id"] != SHOP_ID:
            self.refused.append(given)
            return web.json_response(
                {"error": "error_auth", "message": "Invalid refresh_token"}, status=403
            )
        self.spent.append(given)
        n = len(self.spent)
        self.refresh = f"refresh-{n}-not-real"
        access = f"access-{n}-not-real"
        self.access.add(access)
        answer = {"access_token": access, "refresh_token": self.refresh, "expire_in": 14400}
        return web.json_response({"error": "", "message": "", **answer})

    async def cancel(self, request: web.Request) -> web.Response:
        query = request.query
        token = query.get("access_token", "")
        expected = sign(PARTNER_ID, request.path, query["timestamp"], token, SHOP_ID)
        if query.get("sign") != expected:
            return web.json_response({"error": "error_sign", "message": "Wrong sign."})
        if token not in self.access:
            return web.json_response({"error": "invalid_access_token", "message": "Invalid."})
        self.cancels.append(token)
        order = (await request.json())["order_sn"]
        if order.startswith("shipped"):
            return web.json_response({"error": "error_status", "message": "cannot cancel"})
        return web.json_response({"error": "", "message": "", "response": {"update_time": 1}})

    def expire_access_tokens(self) -> None:
        self.access.clear()


@pytest.fixture
async def shop(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Shop:
    fake = Shop()
    app = web.Application()
    app.router.add_post("/api/v2/auth/access_token/get", fake.refresh_token)
    app.router.add_post("/api/v2/order/cancel_order", fake.cancel)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
def start(
    make_gateway: GatewayFactory, shop: Shop, tmp_path: Path
) -> Callable[..., Awaitable[Gateway]]:
    shutil.copy(FIXTURES / "rotating-shop.yaml", tmp_path / "rotating-shop.yaml")

    async def started(store: str = "{backend: sqlite}", refresh: str = FIRST_REFRESH) -> Gateway:
        env = {"SHOP": shop.url, "PARTNER_KEY": PARTNER_KEY, "REFRESH": refresh}
        return await make_gateway(CONFIG.replace("${STORE}", store), env=env)

    return started


async def test_the_refresh_token_is_spent_once_and_every_call_is_signed(
    start: Callable[..., Awaitable[Gateway]], shop: Shop
):
    gateway = await start()
    for n in range(3):
        result = await gateway.cancel({"connection": "shop", "id": f"2212{n}"})
        assert (result.status, result.body["status"]) == (200, "cancelled"), result.body
    assert shop.spent == [FIRST_REFRESH]  # one refresh served the three cancels
    assert shop.cancels == ["access-1-not-real"] * 3
    shipped = await gateway.cancel({"connection": "shop", "id": "shipped-1"})
    assert (shipped.status, shipped.body["error"]["code"]) == (409, "not_cancellable")
    for secret in (FIRST_REFRESH, "refresh-1-not-real", "access-1-not-real", PARTNER_KEY):
        assert secret not in gateway.log_text
        assert secret not in str(shipped.body)


async def test_an_expired_access_token_spends_the_newest_refresh_token(
    start: Callable[..., Awaitable[Gateway]], shop: Shop
):
    """The provider says so inside a 200; the gateway refreshes once (with the token the last
    refresh answered, not the configured one) and repeats the cancel."""
    gateway = await start()
    assert (await gateway.cancel({"connection": "shop", "id": "1"})).status == 200
    shop.expire_access_tokens()
    result = await gateway.cancel({"connection": "shop", "id": "2"})
    assert (result.status, result.body["upstream"]["attempts"]) == (200, 2), result.body
    assert shop.spent == [FIRST_REFRESH, "refresh-1-not-real"]
    assert shop.refused == []


async def test_a_restart_continues_the_chain_from_the_store(
    start: Callable[..., Awaitable[Gateway]], shop: Shop
):
    first = await start()
    assert (await first.cancel({"connection": "shop", "id": "1"})).status == 200
    shop.expire_access_tokens()
    restarted = await start()  # a new process: no token cached, the same SQLite file
    result = await restarted.cancel({"connection": "shop", "id": "2"})
    assert (result.status, result.body["status"]) == (200, "cancelled"), result.body
    assert shop.spent == [FIRST_REFRESH, "refresh-1-not-real"]
    assert shop.refused == []  # the configured token, already spent, was not tried


async def test_a_replaced_credential_starts_a_new_chain(
    start: Callable[..., Awaitable[Gateway]], shop: Shop
):
    """The operator re-authorised the shop and configured its new refresh token: the stored
    chain of the old one is not used."""
    first = await start()
    assert (await first.cancel({"connection": "shop", "id": "1"})).status == 200
    shop.refresh = "refresh-reauthorised-not-real"
    shop.expire_access_tokens()
    second = await start(refresh="refresh-reauthorised-not-real")
    result = await second.cancel({"connection": "shop", "id": "2"})
    assert result.status == 200, result.body
    assert shop.spent[-1] == "refresh-reauthorised-not-real"
    assert shop.refused == []


async def test_two_gateways_sharing_redis_never_spend_one_token_twice(
    start: Callable[..., Awaitable[Gateway]], shop: Shop, redis_prefix: str
):
    """Two replicas need a token at the same moment: the lease in the store lets one refresh
    while the other waits, then the other spends the token the first one was given."""
    from tests.services import REDIS_URL

    store = f"{{backend: redis, url: '{REDIS_URL}', prefix: '{redis_prefix}'}}"
    one, two = await start(store=store), await start(store=store)
    shop.slow_refresh_s = 0.2
    results = await asyncio.gather(
        *(g.cancel({"connection": "shop", "id": f"o-{n}"}) for n in range(4) for g in (one, two))
    )
    assert [r.status for r in results] == [200] * 8, [r.body for r in results]
    assert shop.refused == []
    assert shop.spent == [FIRST_REFRESH, "refresh-1-not-real"]


async def test_a_wrong_partner_key_is_refused_at_the_token_endpoint(
    make_gateway: GatewayFactory, shop: Shop, tmp_path: Path
):
    shutil.copy(FIXTURES / "rotating-shop.yaml", tmp_path / "rotating-shop.yaml")
    env = {
        "SHOP": shop.url,
        "PARTNER_KEY": "another-partner-key-not-real",
        "REFRESH": FIRST_REFRESH,
    }
    gateway = await make_gateway(CONFIG.replace("${STORE}", "{backend: memory}"), env=env)
    result = await gateway.cancel({"connection": "shop", "id": "1"})
    assert result.status == 502, result.body
    error = result.body["error"]
    assert (error["code"], error["provider_status"]) == ("provider_auth_failed", 403)
    assert shop.spent == []
    assert shop.cancels == []
