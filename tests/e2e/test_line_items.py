"""Cancelling single lines (`items`), end to end against a loopback server: a marketplace
that takes every line in one request (Walmart's shape, with its OAuth2 token), and a warehouse
that cancels one line per call, whose lines' outcomes combine into the envelope."""

from __future__ import annotations

import asyncio
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
CLIENT_ID, CLIENT_SECRET = "client-id-not-real", "client-secret-not-real"
API_KEY = "warehouse-key-not-real"

CONFIG = """
providers: [line-market.yaml, line-warehouse.yaml, query-key.yaml]
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  market:
    provider: line-market
    base_url: ${UPSTREAM}
    credentials: {client_id: client-id-not-real, client_secret: client-secret-not-real}
    params: {token_host: "${UPSTREAM}"}
    timeout_s: 5
  warehouse:
    provider: line-warehouse
    base_url: ${UPSTREAM}
    credentials: {api_key: warehouse-key-not-real}
    timeout_s: 5
    retry: {backoff_base_s: 0.01, backoff_max_s: 0.02}
  whole:
    provider: query-key
    base_url: ${UPSTREAM}
    credentials: {api_key: whole-orders-key-not-real}
"""


@dataclass
class Upstream:
    """The marketplace and the warehouse. Warehouse lines: `open-*` cancel, `done-*` are
    already cancelled, `shipped-*` cannot be, `flaky-*` answer 503 `fails` times first, and
    anything else is unknown. Every line sleeps 50 ms, so that concurrency shows."""

    url: str = ""
    tokens: list[str] = field(default_factory=list)
    market_bodies: list[Any] = field(default_factory=list)
    line_calls: list[tuple[str, str, Any]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    fails: int = 0

    async def token(self, request: web.Request) -> web.Response:
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {basic}":
            return web.json_response({"error": "invalid_client"}, status=401)
        token = f"market-token-{len(self.tokens) + 1}-not-real"
        self.tokens.append(token)
        return web.json_response({"access_token": token, "expires_in": 900})

    async def market_cancel(self, request: web.Request) -> web.Response:
        if request.headers.get("WM_SEC.ACCESS_TOKEN") not in self.tokens:
            error = {"code": "UNAUTHORIZED.GMP_GATEWAY_API", "description": "Unauthorized"}
            return web.json_response({"errors": {"error": [error]}}, status=401)
        body = await request.json()
        self.market_bodies.append(body)
        order = request.match_info["id"]
        if order.startswith("shipped"):
            error = {"code": "INVALID_REQUEST_CONTENT.GMP_ORDER_API", "description": "shipped"}
            return web.json_response({"errors": {"error": [error]}}, status=400)
        return web.json_response({"order": {"purchaseOrderId": order}})

    async def line_cancel(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Api-Key") != API_KEY:
            return web.json_response({"error": {"code": "UNAUTHORIZED"}}, status=401)
        line = request.match_info["line"]
        self.line_calls.append((request.match_info["id"], line, await request.json()))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.in_flight -= 1
        if line.startswith("open"):
            return web.json_response({"line": {"status": "cancelled"}})
        if line.startswith("done"):
            error = {"code": "LINE_ALREADY_CANCELLED", "message": "already cancelled"}
            return web.json_response({"error": error}, status=409)
        if line.startswith("shipped"):
            error = {"code": "LINE_SHIPPED", "message": "the line has shipped"}
            return web.json_response({"error": error}, status=409)
        if line.startswith("flaky") and self.fails:
            self.fails -= 1
            return web.json_response({"error": {"code": "BUSY"}}, status=503)
        if line.startswith("flaky"):
            return web.json_response({"line": {"status": "cancelled"}})
        error = {"code": "LINE_NOT_FOUND", "message": "no such line"}
        return web.json_response({"error": error}, status=404)


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Upstream:
    fake = Upstream()
    app = web.Application()
    app.router.add_post("/v3/token", fake.token)
    app.router.add_post("/v3/orders/{id}/cancel", fake.market_cancel)
    app.router.add_post("/v1/orders/{id}/lines/{line}/cancel", fake.line_cancel)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path) -> Gateway:
    for name in ("line-market.yaml", "line-warehouse.yaml", "query-key.yaml"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    return await make_gateway(CONFIG, upstream_url=upstream.url)


def lines(*ids: str, quantity: int | None = None) -> list[dict[str, Any]]:
    return [{"id": i} | ({"quantity": quantity} if quantity else {}) for i in ids]


async def test_the_marketplace_gets_every_line_in_one_request(gateway: Gateway, upstream: Upstream):
    result = await gateway.cancel(
        {"connection": "market", "id": "1796277083022", "items": lines("1", "3", quantity=2)}
    )
    assert (result.status, result.body["status"]) == (200, "cancelled"), result.body
    assert result.body["items"] == [
        {"id": "1", "status": "cancelled", "error": None},
        {"id": "3", "status": "cancelled", "error": None},
    ]
    [body] = upstream.market_bodies
    sent = body["orderCancellation"]["orderLines"]["orderLine"]
    assert [line["lineNumber"] for line in sent] == ["1", "3"]
    status = sent[1]["orderLineStatuses"]["orderLineStatus"][0]
    assert status["statusQuantity"] == {"unitOfMeasurement": "EACH", "amount": "2"}
    assert status["cancellationReason"] == "CUSTOMER_REQUESTED_SELLER_TO_CANCEL"


async def test_a_refused_request_refuses_each_of_its_lines(gateway: Gateway, upstream: Upstream):
    result = await gateway.cancel(
        {"connection": "market", "id": "shipped-7", "items": lines("1", "2", quantity=1)}
    )
    assert (result.status, result.body["error"]["code"]) == (409, "not_cancellable")
    assert [i["status"] for i in result.body["items"]] == ["rejected", "rejected"]
    assert result.body["items"][0]["error"]["provider_code"] == (
        "INVALID_REQUEST_CONTENT.GMP_ORDER_API"
    )


async def test_the_marketplaces_rules_for_lines_are_checked_before_sending(
    gateway: Gateway, upstream: Upstream
):
    """Quantities are required there, and so are lines; ids must be unique anywhere."""
    no_quantity = await gateway.cancel(
        {"connection": "market", "id": "1", "items": [{"id": "1", "quantity": 1}, {"id": "2"}]}
    )
    assert no_quantity.status == 422
    fields = {f["loc"]: f["message"] for f in no_quantity.body["error"]["fields"]}
    assert fields == {"items.1.quantity": "is required by this provider"}
    whole = await gateway.cancel({"connection": "market", "id": "1"})
    assert whole.status == 422
    assert whole.body["error"]["fields"][0]["loc"] == "items"
    twice = await gateway.cancel(
        {"connection": "market", "id": "1", "items": lines("1", "1", quantity=1)}
    )
    assert twice.status == 422
    assert twice.body["error"]["fields"][0]["loc"] == "items.1.id"
    assert upstream.market_bodies == []


async def test_a_provider_without_lines_refuses_items(gateway: Gateway, upstream: Upstream):
    result = await gateway.cancel({"connection": "whole", "id": "o-1", "items": lines("1")})
    assert result.status == 422
    error = result.body["error"]
    assert (error["code"], error["fields"][0]["loc"]) == ("invalid_request", "items")
    assert "whole objects only" in error["fields"][0]["message"]
    [line] = result.body["items"]  # the line the request named shares the refusal
    assert (line["id"], line["status"], line["error"]["code"]) == (
        "1",
        "rejected",
        "invalid_request",
    )


async def test_one_request_per_line_two_at_a_time(gateway: Gateway, upstream: Upstream):
    result = await gateway.cancel(
        {
            "connection": "warehouse",
            "id": "SO-1",
            "items": lines("open-1", "open-2", "open-3", "done-4", quantity=1),
        }
    )
    assert (result.status, result.body["status"]) == (200, "cancelled"), result.body
    assert [(i["id"], i["status"]) for i in result.body["items"]] == [
        ("open-1", "cancelled"),
        ("open-2", "cancelled"),
        ("open-3", "cancelled"),
        ("done-4", "already_cancelled"),
    ]
    assert sorted(line for _, line, _ in upstream.line_calls) == [
        "done-4",
        "open-1",
        "open-2",
        "open-3",
    ]
    assert all(body == {"quantity": 1} for _, _, body in upstream.line_calls)
    assert upstream.most_in_flight == 2  # the definition's concurrency
    assert result.body["upstream"]["attempts"] == 4
    path = f"/v1/cancellations/{result.body['cancellation_id']}/events"
    events = (await gateway.request("GET", path)).body["events"]
    attempts = [e for e in events if e["type"] == "attempt"]
    assert sorted(e["line"] for e in attempts) == [0, 1, 2, 3]  # each line's own attempt


async def test_every_line_already_cancelled_is_already_cancelled(
    gateway: Gateway, upstream: Upstream
):
    result = await gateway.cancel(
        {"connection": "warehouse", "id": "SO-1", "items": lines("done-1", "done-2")}
    )
    assert (result.status, result.body["status"]) == (200, "already_cancelled"), result.body


async def test_a_refused_line_makes_the_cancellation_rejected_with_its_error(
    gateway: Gateway, upstream: Upstream
):
    result = await gateway.cancel(
        {"connection": "warehouse", "id": "SO-1", "items": lines("open-1", "shipped-2", "x-3")}
    )
    assert (result.status, result.body["status"]) == (409, "rejected"), result.body
    error = result.body["error"]
    assert (error["code"], error["provider_code"]) == ("not_cancellable", "LINE_SHIPPED")
    assert error["message"].startswith("line 'shipped-2': ")
    assert result.body["items"] == [
        {"id": "open-1", "status": "cancelled", "error": None},
        {
            "id": "shipped-2",
            "status": "rejected",
            "error": {
                "code": "not_cancellable",
                "provider_code": "LINE_SHIPPED",
                "message": result.body["items"][1]["error"]["message"],
            },
        },
        {
            "id": "x-3",
            "status": "rejected",
            "error": {
                "code": "not_found",
                "provider_code": "LINE_NOT_FOUND",
                "message": result.body["items"][2]["error"]["message"],
            },
        },
    ]
    assert "the line has shipped" in result.body["items"][1]["error"]["message"]


async def test_a_failed_line_fails_the_cancellation_and_a_repeat_finishes_it(
    gateway: Gateway, upstream: Upstream
):
    """A line that keeps failing (503 past the repeats) fails the cancellation, the others are
    cancelled; the caller's repeat finds them already cancelled and the last one done."""
    upstream.fails = 3  # the three attempts the connection allows
    request = {"connection": "warehouse", "id": "SO-1", "items": lines("open-1", "flaky-2")}
    first = await gateway.cancel(request)
    assert (first.status, first.body["status"]) == (502, "failed"), first.body
    assert first.body["error"]["code"] == "provider_error"
    assert [i["status"] for i in first.body["items"]] == ["cancelled", "failed"]
    assert first.body["upstream"]["attempts"] == 4
    second = await gateway.cancel(request)
    assert (second.status, second.body["status"]) == (200, "cancelled"), second.body


async def test_a_batch_and_a_preview_take_lines_too(gateway: Gateway, upstream: Upstream):
    preview = await gateway.request(
        "POST",
        "/v1/cancellations?dry_run=true",
        json={"connection": "warehouse", "id": "SO-1", "items": lines("open-1", "open-2")},
    )
    assert preview.status == 200, preview.body
    assert preview.body["upstream_request"]["url"].endswith("/v1/orders/SO-1/lines/open-1/cancel")
    assert upstream.line_calls == []
