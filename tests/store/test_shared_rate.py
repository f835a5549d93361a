"""A connection's rate limit shared by every process on one Redis (GCRA on Redis's clock): a
second store object stands for a second process; both draw from the one limit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.store import redis
from tests.services import REDIS_URL


@pytest.fixture
async def replicas(redis_prefix: str) -> AsyncIterator[list[redis.RedisStore]]:
    stores = [redis.RedisStore(REDIS_URL, redis_prefix, 5, ledger_ttl_s=60) for _ in range(2)]
    for store in stores:
        await store.open()
    yield stores
    for store in stores:
        await store.close()


async def test_two_processes_share_one_limit(replicas: list[redis.RedisStore]):
    one, two = replicas
    # 2 a second, a burst of 2: two at once, then one every half second, whoever asks.
    assert await one.reserve_rate("shop", 2, 2, 5) == (True, 0.0)
    assert await two.reserve_rate("shop", 2, 2, 5) == (True, 0.0)
    granted, wait = await one.reserve_rate("shop", 2, 2, 5)
    assert granted
    assert 0.4 < wait <= 0.5
    granted, wait = await two.reserve_rate("shop", 2, 2, 5)
    assert granted
    assert 0.9 < wait <= 1.0


async def test_a_wait_longer_than_allowed_takes_nothing(replicas: list[redis.RedisStore]):
    one, two = replicas
    for _ in range(2):
        assert (await one.reserve_rate("slow", 1, 2, 0))[0]
    refused, wait = await two.reserve_rate("slow", 1, 2, 0.5)
    assert not refused
    assert 0.9 < wait <= 1.0
    # Nothing was taken: the next one waits no longer than the refused one would have.
    granted, again = await one.reserve_rate("slow", 1, 2, 2)
    assert granted
    assert again <= wait


async def test_each_connection_has_its_own_limit(replicas: list[redis.RedisStore]):
    one, _ = replicas
    for _ in range(2):
        assert await one.reserve_rate("a", 1, 2, 0) == (True, 0.0)
    assert await one.reserve_rate("b", 1, 2, 0) == (True, 0.0)
