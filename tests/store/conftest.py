"""The store tests' shared fixture: stores of each backend on its real engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.config import StoreConfig
from gateway.store import Store, create_store
from tests.services import REDIS_URL

BACKENDS = ["memory", "sqlite", "redis", "postgres"]
SHARED_ENGINES = ["sqlite", "redis", "postgres"]  # a memory store is one process's own

StoreFactory = Callable[..., Awaitable[Store]]


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens stores of one backend on its real engine (a fresh namespace per test)."""
    backend: str = request.param
    settings: dict[str, object] = {"backend": backend, "timeout_s": 5}
    if backend == "redis":
        settings |= {"url": REDIS_URL, "prefix": request.getfixturevalue("redis_prefix")}
    if backend == "postgres":
        settings["dsn"] = request.getfixturevalue("postgres_dsn")
    opened: list[Store] = []

    async def factory() -> Store:
        store = create_store(StoreConfig.model_validate(settings), tmp_path)
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()
