"""The budget holds when the store does not answer (CONTRACT §11): every answer comes within the
connection's `timeout_s` plus 0.5 s of the request's arrival, store included. A real Redis of
the test's own holds every write (`CLIENT PAUSE … WRITE`) while reads go on: the gateway answers
in time, and what it could not write yet is written once the store answers again."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis

from tests.conftest import Gateway, GatewayFactory, Result, Upstream
from tests.e2e.test_idempotency import RX_CANCEL, RX_OK, config, store_yaml
from tests.services import PrivateRedis

pytestmark = pytest.mark.e2e

PAUSE_MS = 20_000  # far past the budget (2 s): only the gateway's own bound can answer in time


async def _pause_writes(server: PrivateRedis) -> redis.Redis:
    client = redis.Redis.from_url(server.url)
    await client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
    return client


async def _unpause(client: redis.Redis) -> None:
    await client.execute_command("CLIENT", "UNPAUSE")
    await client.aclose()


def _gateway_config(server: PrivateRedis) -> str:
    # The store's own timeout longer than the pause: only the budget bounds the wait.
    return config(store_yaml(backend="redis", url=server.url, timeout_s=30))


async def test_a_store_that_holds_the_first_write_is_answered_within_the_budget_nothing_sent(
    private_redis: PrivateRedis, make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(_gateway_config(private_redis), upstream_url=upstream.url)
    upstream.always(200, RX_OK)
    client = await _pause_writes(private_redis)
    try:
        # Bounded by the test, not by a timing assertion: without the budget's bound the answer
        # would wait for the pause (20 s) and this would fail.
        async with asyncio.timeout(10):
            answer = await gateway.cancel(RX_CANCEL)
    finally:
        await _unpause(client)
    assert answer.status == 503, answer.body
    assert answer.body["error"]["code"] == "store_unavailable"
    assert upstream.received == []  # nothing sent without its record
    assert gateway.events("store.unavailable")


async def _answered_with_the_last_write_held(
    server: PrivateRedis, make_gateway: GatewayFactory, upstream: Upstream
) -> tuple[Gateway, redis.Redis, Result]:
    """A cancellation recorded and sent, then its provider's answer released while the store
    holds every write: the gateway, the client holding them, and the answer."""
    gateway = await make_gateway(_gateway_config(server), upstream_url=upstream.url)
    release = asyncio.Event()
    upstream.answer(200, RX_OK, until=release)
    running = asyncio.create_task(gateway.cancel(RX_CANCEL))
    await upstream.wait_for(1)  # recorded as running, and sent
    client = await _pause_writes(server)
    release.set()
    async with asyncio.timeout(10):  # without the bound: the pause's 20 s
        answer = await running
    assert answer.status == 200, answer.body
    assert answer.body["status"] == "cancelled"
    assert gateway.events("ledger.write_late")
    return gateway, client, answer


async def test_a_store_that_holds_the_last_write_still_answers_in_time_and_writes_it_later(
    private_redis: PrivateRedis, make_gateway: GatewayFactory, upstream: Upstream
):
    gateway, client, answer = await _answered_with_the_last_write_held(
        private_redis, make_gateway, upstream
    )
    try:
        # Answered while the store still holds the write: the ledger (read, which goes on)
        # still has the cancellation running.
        cancellation_id = answer.body["cancellation_id"]
        meanwhile = await gateway.request("GET", f"/v1/cancellations/{cancellation_id}")
        assert meanwhile.status == 409, meanwhile.body
        assert meanwhile.body["error"]["message"].endswith("is still running")
    finally:
        await _unpause(client)
    for _ in range(100):  # the write lands once the store answers: nothing is lost
        after = await gateway.request("GET", f"/v1/cancellations/{cancellation_id}")
        if after.status == 200:
            break
        await asyncio.sleep(0.05)
    assert after.body["status"] == "cancelled", after.body
    assert len(upstream.received) == 1


async def test_a_late_write_that_fails_in_the_end_logs_the_answer_in_full(
    private_redis: PrivateRedis, make_gateway: GatewayFactory, upstream: Upstream
):
    gateway, client, answer = await _answered_with_the_last_write_held(
        private_redis, make_gateway, upstream
    )
    private_redis.stop()  # the held write is lost with the server
    await client.aclose()
    for _ in range(100):
        if gateway.events("ledger.write_failed"):
            break
        await asyncio.sleep(0.05)
    [failed] = gateway.events("ledger.write_failed")
    assert failed["envelope"]["cancellation_id"] == answer.body["cancellation_id"]
    assert failed["envelope"]["status"] == "cancelled"
