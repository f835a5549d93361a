"""The machine's Redis and PostgreSQL, for the store tests, and a private Redis a test may stop.

Outside CI a test whose service does not answer is skipped, saying why; with ``CI=true`` it
fails instead (``.ci/run`` starts the services first). Every test gets its own namespace: a
Redis key prefix, a PostgreSQL schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import redis as sync_redis

T = TypeVar("T")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable(service: str, why: str) -> None:
    message = f"{service} does not answer ({why})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; .ci/run starts it, see README 'Development'")
    pytest.skip(message)


def _in_a_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a loop of its own: fixtures set up from inside a test's running loop
    (``request.getfixturevalue``) cannot use that loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the machine's Redis; its keys are removed after."""
    client = sync_redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except (sync_redis.RedisError, OSError) as exc:
        client.close()
        unavailable("Redis at " + REDIS_URL, str(exc))
    prefix = f"cgtest:{secrets.token_hex(6)}:"
    yield prefix
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A DSN whose search_path is a schema of this test's own, dropped after."""
    schema = f"cgtest_{secrets.token_hex(6)}"

    async def run(statement: str) -> None:
        conn = await asyncpg.connect(POSTGRES_DSN, timeout=3)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    try:
        _in_a_thread(run(f"CREATE SCHEMA {schema}"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        unavailable("PostgreSQL at " + POSTGRES_DSN, str(exc))
    separator = "&" if "?" in POSTGRES_DSN else "?"
    yield f"{POSTGRES_DSN}{separator}search_path={schema}"
    _in_a_thread(run(f"DROP SCHEMA {schema} CASCADE"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrivateRedis:
    """A redis-server of the test's own, on its own port, which the test may stop and start."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                str(shutil.which("redis-server")),
                "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # A bounded poll: the server tells no one it listens (its log goes nowhere; parsing it
        # would be more fragile), and a connection it accepts is the readiness that matters.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.02)
        raise AssertionError("the private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server", "not installed")
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()
