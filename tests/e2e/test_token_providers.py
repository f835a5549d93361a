"""Providers whose token is fetched before the call (OAuth2 client credentials, a session
login), end to end against a loopback server that issues, checks and expires tokens."""

from __future__ import annotations

import asyncio
import base64
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
CLIENT_ID, CLIENT_SECRET = "client-id-not-real", "client-secret-not-real"
USERNAME, PASSWORD = "admin-user-not-real", "admin-password-not-real"

CONFIG = """
providers: [oauth-market.yaml, session-shop.yaml]
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  market:
    provider: oauth-market
    base_url: ${MARKET}
    credentials: {client_id: client-id-not-real, client_secret: client-secret-not-real}
    params: {token_host: "${MARKET}"}
    timeout_s: 5
  shop:
    provider: session-shop
    base_url: ${MARKET}
    credentials: {username: admin-user-not-real, password: admin-password-not-real}
    params: {shop_url: "${MARKET}"}
    timeout_s: 5
"""


@dataclass
class Market:
    """Issues tokens (OAuth2 with Basic client auth, or a login answering a bare string),
    accepts only the newest one, and cancels orders: `locked-*` answers `false`."""

    url: str = ""
    issued: list[str] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    cancels: list[dict[str, str]] = field(default_factory=list)
    refuse_tokens: int = 0  # the next token requests answer 401
    fail_tokens: int = 0  # ... or 503
    slow_token_s: float = 0.0

    def _issue(self) -> str:
        token = f"token-{len(self.issued) + 1}-not-real"
        self.issued.append(token)
        return token

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append(dict(request.headers))
        form = dict(await request.post())
        if self.slow_token_s:
            await asyncio.sleep(self.slow_token_s)
        if self.refuse_tokens:
            self.refuse_tokens -= 1
            return web.json_response({"error": "invalid_client"}, status=401)
        if self.fail_tokens:
            self.fail_tokens -= 1
            return web.json_response({"error": "down"}, status=503)
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {basic}" or form != {
            "grant_type": "client_credentials"
        }:
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response(
            {"access_token": self._issue(), "token_type": "Bearer", "expires_in": 900}
        )

    async def login(self, request: web.Request) -> web.Response:
        self.token_requests.append(dict(request.headers))
        if await request.json() != {"username": USERNAME, "password": PASSWORD}:
            return web.json_response({"message": "bad login"}, status=401)
        return web.json_response(self._issue())  # the token, a bare JSON string

    def _valid(self, token: str | None) -> bool:
        return bool(self.issued) and token == self.issued[-1]

    async def cancel_order(self, request: web.Request) -> web.Response:
        self.cancels.append(dict(request.headers))
        if not self._valid(request.headers.get("WM_SEC.ACCESS_TOKEN")):
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401)
        return web.json_response({"order": {"status": "Cancelled"}})

    async def cancel_shop(self, request: web.Request) -> web.Response:
        self.cancels.append(dict(request.headers))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not self._valid(token):
            return web.json_response({"message": "unauthorized"}, status=401)
        return web.json_response(not request.match_info["id"].startswith("locked"))


@pytest.fixture
async def market(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Market:
    fake = Market()
    app = web.Application()
    app.router.add_post("/v3/token", fake.token)
    app.router.add_post("/v3/orders/{id}/cancel", fake.cancel_order)
    app.router.add_post("/rest/V1/integration/admin/token", fake.login)
    app.router.add_post("/rest/V1/orders/{id}/cancel", fake.cancel_shop)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, market: Market, tmp_path: Path) -> Gateway:
    for name in ("oauth-market.yaml", "session-shop.yaml"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    return await make_gateway(CONFIG, env={"MARKET": market.url})


async def test_a_client_credentials_token_is_fetched_once_and_reused(
    gateway: Gateway, market: Market
):
    """The first cancellation fetches a token (Basic client auth, form grant, a correlation
    id); the next ones reuse it; the token never shows in an answer or a log."""
    for n in range(3):
        result = await gateway.cancel({"connection": "market", "id": f"o-{n}"})
        assert result.status == 200, result.body
        assert result.body["status"] == "cancelled"
    assert len(market.token_requests) == 1
    assert market.token_requests[0]["WM_SVC.NAME"] == "Cancel Gateway"
    assert len(market.token_requests[0]["WM_QOS.CORRELATION_ID"]) == 36
    assert [c["WM_SEC.ACCESS_TOKEN"] for c in market.cancels] == ["token-1-not-real"] * 3
    ids = {c["WM_QOS.CORRELATION_ID"] for c in market.cancels}
    assert len(ids) == 3  # a UUID per request
    for secret in ("token-1-not-real", CLIENT_SECRET):
        assert secret not in gateway.log_text


async def test_concurrent_requests_share_one_token_fetch(gateway: Gateway, market: Market):
    market.slow_token_s = 0.2
    results = await asyncio.gather(
        *(gateway.cancel({"connection": "market", "id": f"o-{n}"}) for n in range(5))
    )
    assert [r.status for r in results] == [200] * 5
    assert len(market.token_requests) == 1


async def test_a_refused_token_is_fetched_again_once_and_the_attempt_repeated(
    gateway: Gateway, market: Market
):
    """The provider stops accepting the cached token (a newer one was issued elsewhere): 401,
    a new token, the cancel repeated and done."""
    assert (await gateway.cancel({"connection": "market", "id": "o-1"})).status == 200
    market._issue()  # another client's token makes ours stale
    result = await gateway.cancel({"connection": "market", "id": "o-2"})
    assert result.status == 200, result.body
    assert result.body["upstream"]["attempts"] == 2
    assert len(market.token_requests) == 2
    retry = gateway.events("upstream.retry")
    assert [r["reason"] for r in retry] == ["token_refused"]


@pytest.mark.parametrize(
    ("refuse", "fail", "code", "http", "status"),
    [(1, 0, "provider_auth_failed", 502, 401), (0, 5, "provider_error", 502, 503)],
)
async def test_a_token_endpoint_failure_is_the_answer(
    gateway: Gateway, market: Market, refuse: int, fail: int, code: str, http: int, status: int
):
    """No token, no cancel sent: a refusal is provider_auth_failed at once; a 5xx is
    provider_error after the repeats; the token endpoint's status is in the envelope."""
    market.refuse_tokens, market.fail_tokens = refuse, fail
    result = await gateway.cancel({"connection": "market", "id": "o-1"})
    assert result.status == http, result.body
    error = result.body["error"]
    assert (error["code"], error["provider_status"], error["source"]) == (code, status, "provider")
    assert market.cancels == []
    assert len(market.token_requests) == (1 if refuse else 3)


async def test_a_session_login_token_is_a_bare_string_and_false_is_not_cancellable(
    gateway: Gateway, market: Market
):
    ok = await gateway.cancel({"connection": "shop", "id": "100"})
    assert (ok.status, ok.body["status"]) == (200, "cancelled")
    locked = await gateway.cancel({"connection": "shop", "id": "locked-1"})
    assert (locked.status, locked.body["error"]["code"]) == (409, "not_cancellable")
    assert len(market.token_requests) == 1
    assert market.cancels[0]["Authorization"] == "Bearer token-1-not-real"
    assert "token-1-not-real" not in gateway.log_text
