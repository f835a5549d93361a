"""Webhooks end to end (CONTRACT §10): the gateway on a loopback port, a real upstream, and a
caller's receiver that verifies each delivery with the standardwebhooks package."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from tests.conftest import GatewayFactory, Upstream
from tests.e2e.test_async import ASYNC, SHIPPED, SHIPPER, settled

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + base64.b64encode(b"webhook-test-key-0123456789abcdef").decode()

CONFIG = """
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
    webhook:
      url: ${RECEIVER}/hooks
      secret: ${WEBHOOK_SECRET}
      retry_schedule_s: [0.1, 0.1, 0.1]
      all: <ALL>
connections:
  shipper-main:
    provider: shipper
    base_url: ${UPSTREAM}/shipper
    credentials:
      api_key: ${SHIPPER_API_KEY}
    params: {warehouse_id: WH-TGR04}
    async: {first_delay_s: 0.05, max_delay_s: 0.1}
"""


class Receiver:
    """A caller's webhook endpoint: answers as told (200 once the list runs out)."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()

    async def hook(self, request: web.Request) -> web.Response:
        self.deliveries.append((dict(request.headers), await request.read()))
        self.arrived.set()
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.deliveries) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> tuple[Receiver, str]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", found.hook)
    server = await aiohttp_server(app)
    return found, str(server.make_url("")).rstrip("/")


async def start(
    make_gateway: GatewayFactory,
    upstream: Upstream,
    receiver_url: str,
    all_: bool = False,
    store: str = "",
) -> Any:
    config = store + CONFIG.replace("<ALL>", "true" if all_ else "false")
    env = {"RECEIVER": receiver_url, "WEBHOOK_SECRET": SECRET}
    return await make_gateway(config, upstream_url=upstream.url, env=env)


async def test_a_pending_cancellation_s_final_envelope_is_delivered_signed(
    make_gateway: GatewayFactory, upstream: Upstream, receiver: tuple[Receiver, str]
):
    hooks, url = receiver
    gateway = await start(make_gateway, upstream, url)
    upstream.always(200, SHIPPED)
    answered = await gateway.cancel({**SHIPPER, "id": "ORD-W1"}, headers=ASYNC)
    final = await settled(gateway, answered.headers["Location"])
    await hooks.wait_for(1)

    headers, body = hooks.deliveries[0]
    event = Webhook(SECRET).verify(body, headers)  # raises on a bad signature
    assert event["type"] == "cancellation.settled"
    assert event["data"] == final.body
    assert headers["webhook-id"].startswith("msg_")
    tampered = body.replace(b"cancelled", b"rejected!")
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(SECRET).verify(tampered, headers)
    assert SECRET not in gateway.log_text
    assert [line["cancellation_id"] for line in gateway.events("webhook.delivered")] == [
        answered.body["cancellation_id"]
    ]


async def test_a_failed_delivery_is_retried_with_the_same_id_and_a_2xx_ends_it(
    make_gateway: GatewayFactory, upstream: Upstream, receiver: tuple[Receiver, str], store: str
):
    hooks, url = receiver
    hooks.statuses = [500]
    gateway = await start(make_gateway, upstream, url, store=store)
    upstream.always(200, SHIPPED)
    answered = await gateway.cancel({**SHIPPER, "id": "ORD-W2"}, headers=ASYNC)
    await hooks.wait_for(2)
    await asyncio.sleep(0.4)  # longer than the schedule's next wait: nothing more comes
    assert len(hooks.deliveries) == 2
    (first, first_body), (second, second_body) = hooks.deliveries
    assert first["webhook-id"] == second["webhook-id"]
    assert first_body == second_body
    Webhook(SECRET).verify(second_body, second)

    cid = answered.body["cancellation_id"]
    events = (await gateway.request("GET", f"/v1/cancellations/{cid}/events")).body["events"]
    webhooks = [e for e in events if e["type"] == "webhook"]
    assert [(e["status"], e["error"]) for e in webhooks] == [(500, None), (200, None)]
    assert len(gateway.events("webhook.failed")) == 1
    metrics = (await gateway.session.get(gateway.url + "/metrics")).content
    text = (await metrics.read()).decode()
    assert 'cancel_gateway_webhook_deliveries_total{caller="oms",result="http_error"} 1.0' in text
    assert 'cancel_gateway_webhook_deliveries_total{caller="oms",result="delivered"} 1.0' in text


async def test_a_cancellation_answered_at_once_is_delivered_only_with_all(
    make_gateway: GatewayFactory, upstream: Upstream, receiver: tuple[Receiver, str]
):
    hooks, url = receiver
    gateway = await start(make_gateway, upstream, url)
    upstream.always(200, SHIPPED)
    answered = await gateway.cancel({**SHIPPER, "id": "ORD-W3"})
    assert answered.status == 200
    await asyncio.sleep(0.3)
    assert hooks.deliveries == []

    every = await start(make_gateway, upstream, url, all_=True)
    answered = await every.cancel({**SHIPPER, "id": "ORD-W4"})
    await hooks.wait_for(1)
    event = orjson.loads(hooks.deliveries[0][1])
    assert event["data"]["cancellation_id"] == answered.body["cancellation_id"]
    assert event["data"] == answered.body
