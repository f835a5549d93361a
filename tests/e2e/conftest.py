"""Real `cancel-gateway serve` processes for the end-to-end tests that need them: started on
free loopback ports, their JSON events read as they come, killed with SIGKILL at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import CALLER_KEY, CANARIES, Upstream
from tests.services import REDIS_URL, free_port

START_TIMEOUT_S = 8.0


def _command() -> list[str]:
    """The console script, from the interpreter's own environment."""
    script = Path(sys.executable).with_name("cancel-gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def store_yaml(**settings: Any) -> str:
    lines = "".join(
        f"  {name}: {orjson.dumps(value).decode()}\n" for name, value in settings.items()
    )
    return "store:\n" + lines


class Served:
    """One `cancel-gateway serve` process; its stdout is read all along (JSON events), so a
    full pipe never blocks it."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: Path) -> None:
        self.process = process
        self.stderr = stderr
        self.events: list[dict[str, Any]] = []
        self.started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            with contextlib.suppress(orjson.JSONDecodeError):
                event = orjson.loads(line)
                self.events.append(event)
                if event.get("event") == "gateway.started" and not self.started.done():
                    self.started.set_result(event["urls"][0])
        if not self.started.done():
            self.started.set_exception(
                AssertionError(f"the gateway exited before starting: {self.stderr.read_text()}")
            )

    async def url(self) -> str:
        async with asyncio.timeout(START_TIMEOUT_S):
            return await asyncio.shield(self.started)

    async def kill(self) -> int:
        """SIGKILL: no shutdown of any kind, as a crash or an OOM kill."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(5):
            code = await self.process.wait()
            await self._reader
        return code


ServeFactory = Callable[[Path], Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path, upstream: Upstream) -> AsyncIterator[ServeFactory]:
    """Starts `cancel-gateway serve` processes on free loopback ports; kills them all after."""
    env = {**os.environ, "OMS_API_KEY": CALLER_KEY, "UPSTREAM": upstream.url, **CANARIES}
    running: list[Served] = []

    async def factory(config: Path) -> Served:
        stderr = tmp_path / f"stderr-{len(running)}.txt"
        with stderr.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                *_command(), "serve", "--config", str(config),
                "--host", "127.0.0.1", "--port", str(free_port()),
                env=env, stdout=asyncio.subprocess.PIPE, stderr=sink,
            )  # fmt: skip
        served = Served(process, stderr)
        running.append(served)
        await served.url()
        return served

    try:
        yield factory
    finally:
        for served in running:
            with contextlib.suppress(ProcessLookupError):
                await served.kill()
        for served in running:  # a start that failed has been reported: do not warn again
            if served.started.done():
                served.started.exception()
            else:
                served.started.cancel()


@dataclass
class Answer:
    status: int
    headers: Any
    raw: bytes

    @property
    def body(self) -> Any:
        return orjson.loads(self.raw)

    @property
    def replayed(self) -> bool:
        return self.headers.get("Idempotent-Replayed") == "true"


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    headers = {**(headers or {}), "Authorization": f"Bearer {CALLER_KEY}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    data = None if body is None else orjson.dumps(body)
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with (
        asyncio.timeout(5),
        session.request(method, url, data=data, headers=headers) as resp,
    ):
        return Answer(resp.status, resp.headers, await resp.read())


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    """The store section of a gateway, on each real backend (SQLite beside the config)."""
    if request.param == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        return f"store: {{backend: redis, url: '{REDIS_URL}', prefix: '{prefix}'}}\n"
    if request.param == "postgres":
        return f"store: {{backend: postgres, dsn: '{request.getfixturevalue('postgres_dsn')}'}}\n"
    return "store: {backend: sqlite, path: ledger.db}\n"
