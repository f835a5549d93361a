"""Pending and asynchronous cancellations, settled in the background (CONTRACT §10), end to end:
the real gateway on a loopback port, real upstream servers, the memory store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import BASE_CONFIG, Gateway, GatewayFactory, Result, Upstream

pytestmark = pytest.mark.e2e

ASYNC = {"Prefer": "respond-async"}
SHIPPER = {"connection": "shipper-main", "reason": "customer request"}
SHIPPED = {"metadata": {"http_status_code": 200}}  # Shipper's cancel, done
# Background repeats and probes come quickly here: the schedule starts at 50 ms.
FAST = "    async: {first_delay_s: 0.05, max_delay_s: 0.1}\n"


def fast(config: str, *connections: str) -> str:
    """``config`` with a quick background schedule on each of ``connections``."""
    for name in connections:
        config = config.replace(f"  {name}:\n", f"  {name}:\n{FAST}", 1)
    return config


async def settled(gateway: Gateway, location: str, timeout_s: float = 5.0) -> Result:
    """GET the cancellation until it is no longer pending."""
    async with asyncio.timeout(timeout_s):
        while True:
            found = await gateway.request("GET", location)
            if found.status != 202:
                return found
            await asyncio.sleep(0.02)


async def test_an_asynchronous_cancel_is_answered_pending_at_once_then_settled(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(fast(BASE_CONFIG, "shipper-main"), upstream_url=upstream.url)
    upstream.answer(200, SHIPPED, delay_s=0.3)  # longer than the 202 takes
    answered = await gateway.cancel({**SHIPPER, "id": "ORD-1"}, headers=ASYNC)
    assert answered.status == 202
    assert answered.body["status"] == "pending"
    assert answered.body["error"] is None
    cid = answered.body["cancellation_id"]
    assert answered.headers["Location"] == f"/v1/cancellations/{cid}"
    assert answered.headers["Preference-Applied"] == "respond-async"

    final = await settled(gateway, answered.headers["Location"])
    assert final.status == 200
    assert final.body["status"] == "cancelled"
    assert final.body["request_id"] == answered.body["request_id"]
    assert len(upstream.received) == 1
    events = (await gateway.request("GET", f"/v1/cancellations/{cid}/events")).body["events"]
    assert [e["type"] for e in events] == ["received", "scheduled", "attempt", "settled"]
    assert [line["cancellation_id"] for line in gateway.events("cancellation.settled")] == [cid]


async def test_an_asynchronous_cancel_goes_through_three_503s_to_cancelled(
    make_gateway: GatewayFactory, upstream: Upstream, store: str
):
    config = store + fast(BASE_CONFIG, "shipper-main").replace(
        "    params: {warehouse_id: WH-TGR04}\n",
        "    params: {warehouse_id: WH-TGR04}\n    retry: {max_attempts: 1}\n",
    )
    gateway = await make_gateway(config, upstream_url=upstream.url)
    for _ in range(3):
        upstream.answer(503, {"error": "busy"})
    upstream.always(200, SHIPPED)
    answered = await gateway.cancel({**SHIPPER, "id": "ORD-2"}, headers=ASYNC)
    assert answered.status == 202

    final = await settled(gateway, answered.headers["Location"])
    assert final.body["status"] == "cancelled"
    assert final.body["upstream"]["attempts"] == 4
    assert len(upstream.received) == 4
    cid = answered.body["cancellation_id"]
    events = (await gateway.request("GET", f"/v1/cancellations/{cid}/events")).body["events"]
    assert [e["type"] for e in events] == [
        "received",
        "scheduled",
        *["attempt", "scheduled"] * 3,
        "attempt",
        "settled",
    ]
    assert [e["status"] for e in events if e["type"] == "attempt"] == [503, 503, 503, 200]


async def test_a_key_replays_pending_while_it_is_pending_and_the_final_envelope_after(
    make_gateway: GatewayFactory, upstream: Upstream, store: str
):
    config = store + fast(BASE_CONFIG, "shipper-main")
    gateway = await make_gateway(config, upstream_url=upstream.url)
    hold = asyncio.Event()
    upstream.answer(200, SHIPPED, until=hold)
    body = {**SHIPPER, "id": "ORD-3"}
    headers = {**ASYNC, "Idempotency-Key": "k-async-3"}
    first = await gateway.cancel(body, headers=headers)
    assert first.status == 202
    await upstream.wait_for(1)

    again = await gateway.cancel(body, headers=headers)
    assert again.status == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.body["cancellation_id"] == first.body["cancellation_id"]
    assert again.body["status"] == "pending"

    hold.set()
    await settled(gateway, first.headers["Location"])
    last = await gateway.cancel(body, headers={"Idempotency-Key": "k-async-3"})
    assert last.status == 200
    assert last.headers["Idempotent-Replayed"] == "true"
    assert last.body["status"] == "cancelled"
    assert len(upstream.received) == 1


async def test_refusals_are_answered_at_once_and_nothing_is_queued(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(upstream_url=upstream.url)
    refused = await gateway.cancel({"connection": "shipper-main"}, headers=ASYNC)
    assert refused.status == 422
    assert refused.body["error"]["code"] == "invalid_request"
    assert "Preference-Applied" not in refused.headers
    forbidden = await gateway.cancel(
        {"connection": "stateset-main", "id": "A"},
        headers=ASYNC,
        key="limited-caller-key-0123456789",
    )
    assert forbidden.status == 403
    await asyncio.sleep(0.2)
    assert upstream.received == []


async def test_an_asynchronous_batch_queues_every_valid_item(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(fast(BASE_CONFIG, "shipper-main"), upstream_url=upstream.url)
    upstream.always(200, SHIPPED)
    items = [
        {**SHIPPER, "id": "ORD-B1"},
        {"connection": "shipper-main", "reason": "customer request"},
        {**SHIPPER, "id": "ORD-B2"},
    ]
    answered = await gateway.request(
        "POST", "/v1/cancellations/batch", json={"items": items}, headers=ASYNC
    )
    assert answered.status == 200
    assert [i["status"] for i in answered.body["items"]] == ["pending", "rejected", "pending"]
    assert answered.body["counts"]["pending"] == 2
    for item in (answered.body["items"][0], answered.body["items"][2]):
        final = await settled(gateway, f"/v1/cancellations/{item['cancellation_id']}")
        assert final.body["status"] == "cancelled"
    ordered = sorted(r.json()["data"]["cancellation"]["order_no"] for r in upstream.received)
    assert ordered == ["ORD-B1", "ORD-B2"]


async def test_max_age_ends_an_unsettled_cancellation_as_outcome_unknown(
    make_gateway: GatewayFactory, upstream: Upstream
):
    config = BASE_CONFIG.replace(
        "  shipper-main:\n",
        "  shipper-main:\n    async: {first_delay_s: 0.05, max_delay_s: 0.1, max_age_s: 0.6}\n",
    )
    gateway = await make_gateway(config, upstream_url=upstream.url)
    upstream.always(503, {"error": "down for maintenance"})
    answered = await gateway.cancel({**SHIPPER, "id": "ORD-4"}, headers=ASYNC)

    final = await settled(gateway, answered.headers["Location"])
    assert final.status == 200
    assert final.body["status"] == "failed"
    assert final.body["error"]["code"] == "outcome_unknown"
    assert final.body["error"]["retryable"] is True
    assert final.body["error"]["source"] == "provider"
    assert len(upstream.received) >= 2  # repeated on the schedule until the age ran out


# A provider that accepts a cancellation as a job and finishes it later.
JOBS_PROVIDER = """
name: jobs-shop
title: Jobs Shop
credentials:
  key: {description: "API key"}
auth:
  header: X-Key
  value: "{credentials.key}"
resources:
  order:
    method: POST
    path: /orders/{id}/cancel
    pending: {status: [202]}
    extract:
      provider_response: {job_id: job.id}
    probe:
      path: /jobs/{answer.job_id}
      cancelled: "status == 'done'"
      pending: "status == 'running'"
      not_cancelled: "status == 'failed'"
  parcel:                     # not safe to repeat, with a status read
    method: POST
    path: /parcels/{id}/cancel
    success: {when: "state == 'cancelled'"}
    probe:
      path: /parcels/{id}
      cancelled: "state == 'cancelled'"
      not_cancelled: "state == 'open'"
"""

JOBS_CONFIG = """
providers: [jobs.yaml]
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  jobs:
    provider: jobs-shop
    base_url: ${UPSTREAM}
    credentials: {key: jobs-shop-key-0123}
    async: {first_delay_s: 0.05, max_delay_s: 0.1}
"""


class JobsShop:
    """Cancels as a job: 202 with its id, then ``running`` for a while, then ``done``."""

    def __init__(self, running_for: int) -> None:
        self.running_for = running_for
        self.cancels = 0
        self.probes: list[str] = []

    async def cancel(self, request: web.Request) -> web.Response:
        self.cancels += 1
        return web.json_response({"job": {"id": f"J-{request.match_info['id']}"}}, status=202)

    async def job(self, request: web.Request) -> web.Response:
        self.probes.append(request.path)
        done = len(self.probes) > self.running_for
        return web.json_response({"status": "done" if done else "running"})


@pytest.fixture
async def jobs_shop(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> tuple[JobsShop, str]:
    shop = JobsShop(running_for=2)
    app = web.Application()
    app.router.add_post("/orders/{id}/cancel", shop.cancel)
    app.router.add_get("/jobs/{job}", shop.job)
    server = await aiohttp_server(app)
    return shop, str(server.make_url("")).rstrip("/")


async def test_a_pending_answer_is_settled_by_probing_the_job_it_named(
    make_gateway: GatewayFactory, jobs_shop: tuple[JobsShop, str], tmp_path: Any, store: str
):
    shop, url = jobs_shop
    (tmp_path / "jobs.yaml").write_text(JOBS_PROVIDER)
    gateway = await make_gateway(store + JOBS_CONFIG, upstream_url=url)
    answered = await gateway.cancel({"connection": "jobs", "resource": "order", "id": "O-9"})
    assert answered.status == 202
    assert answered.body["status"] == "pending"
    assert answered.body["provider_response"] == {"job_id": "J-O-9"}
    assert "Preference-Applied" not in answered.headers

    final = await settled(gateway, answered.headers["Location"])
    assert final.body["status"] == "cancelled"
    assert shop.cancels == 1
    assert shop.probes == ["/jobs/J-O-9"] * 3
    cid = answered.body["cancellation_id"]
    events = (await gateway.request("GET", f"/v1/cancellations/{cid}/events")).body["events"]
    assert [e["result"] for e in events if e["type"] == "probe"] == [
        "pending",
        "pending",
        "cancelled",
    ]
    pending_lines = gateway.events("cancellation.pending")
    assert [line["cancellation_id"] for line in pending_lines] == [cid]


async def test_a_cancel_that_may_have_been_applied_is_probed_before_it_is_repeated(
    make_gateway: GatewayFactory,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    tmp_path: Any,
):
    """Not safe to repeat: after a 503 the probe says the order is still open, and only then
    is the cancel sent again."""
    seen: list[str] = []

    async def cancel(request: web.Request) -> web.Response:
        seen.append("cancel")
        if seen.count("cancel") == 1:
            return web.json_response({"error": "busy"}, status=503)
        return web.json_response({"state": "cancelled"})

    async def read(request: web.Request) -> web.Response:
        seen.append("probe")
        return web.json_response({"state": "open"})

    app = web.Application()
    app.router.add_post("/parcels/{id}/cancel", cancel)
    app.router.add_get("/parcels/{id}", read)
    server = await aiohttp_server(app)
    (tmp_path / "jobs.yaml").write_text(JOBS_PROVIDER)
    config = JOBS_CONFIG.replace("    async:", "    retry: {max_attempts: 1}\n    async:")
    gateway = await make_gateway(config, upstream_url=str(server.make_url("")).rstrip("/"))
    parcel = {"connection": "jobs", "resource": "parcel", "id": "P-1"}
    answered = await gateway.cancel(parcel, headers=ASYNC)

    final = await settled(gateway, answered.headers["Location"])
    assert final.body["status"] == "cancelled"
    assert seen == ["cancel", "probe", "cancel"]
