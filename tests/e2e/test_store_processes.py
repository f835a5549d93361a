"""The store across real `cancel-gateway serve` processes: an SQLite file outlives a process
killed with SIGKILL, and two processes sharing one store never both send for one key."""

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

from tests.conftest import BASE_CONFIG, CALLER_KEY, CANARIES, Upstream
from tests.services import REDIS_URL, free_port

pytestmark = pytest.mark.e2e

RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
RX_CANCEL = {"connection": "rxuniverse-lab", "id": "72544"}
KEY = "order-72544-cancel"
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
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None, key: str | None = None
) -> Answer:
    headers = {"Authorization": f"Bearer {CALLER_KEY}"}
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


def write_config(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(store + BASE_CONFIG)
    return path


async def test_sqlite_replays_after_the_process_is_killed_and_started_again(
    serve: ServeFactory, upstream: Upstream, tmp_path: Path
):
    """SQLite outlives SIGKILL: a new process on the file replays the answer, nothing re-sent."""
    config = write_config(tmp_path, store_yaml(backend="sqlite", path="ledger.db"))
    upstream.always(200, RX_OK)
    async with aiohttp.ClientSession() as session:
        first_process = await serve(config)
        url = await first_process.url()
        first = await call(session, "POST", f"{url}/v1/cancellations", RX_CANCEL, key=KEY)
        assert first.status == 200, first.body
        assert not first.replayed
        assert await first_process.kill() == -signal.SIGKILL
        assert not any(e["event"] == "gateway.stopped" for e in first_process.events)

        second_process = await serve(config)
        url = await second_process.url()
        again = await call(session, "POST", f"{url}/v1/cancellations", RX_CANCEL, key=KEY)
        assert again.replayed
        assert (again.status, again.raw) == (first.status, first.raw)
        found = await call(
            session, "GET", f"{url}/v1/cancellations/{first.body['cancellation_id']}"
        )
        assert found.status == 200, found.body
        assert found.raw == first.raw
    assert len(upstream.received) == 1


@pytest.fixture(params=["redis", "postgres", "sqlite"])
def shared_store(request: pytest.FixtureRequest) -> str:
    """A store section two processes can share, in a namespace of this test's own."""
    if request.param == "redis":
        return store_yaml(
            backend="redis", url=REDIS_URL, prefix=request.getfixturevalue("redis_prefix")
        )
    if request.param == "postgres":
        return store_yaml(backend="postgres", dsn=request.getfixturevalue("postgres_dsn"))
    return store_yaml(backend="sqlite", path="shared.db")


async def test_two_processes_sharing_a_store_send_once_for_one_key(
    shared_store: str, serve: ServeFactory, upstream: Upstream, tmp_path: Path
):
    """Two processes on one store, 20 concurrent requests with one key: one upstream call."""
    config = write_config(tmp_path, shared_store)
    upstream.answer(200, RX_OK, delay_s=0.5)
    upstream.always(200, RX_OK)
    processes = await asyncio.gather(serve(config), serve(config))
    urls = [await process.url() for process in processes]
    assert urls[0] != urls[1]
    assert len({e["pid"] for p in processes for e in p.events if "pid" in e}) == 2
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(
            *(
                call(session, "POST", f"{urls[n % 2]}/v1/cancellations", RX_CANCEL, key=KEY)
                for n in range(20)
            )
        )
        assert len(upstream.received) == 1
        [sent] = [a for a in answers if a.status == 200 and not a.replayed]
        assert sent.body["status"] == "cancelled"
        refused = [a for a in answers if a is not sent and not a.replayed]
        assert refused, "no request overlapped the one in flight: the test proved nothing"
        for answer in refused:
            assert answer.status == 409, answer.body
            assert answer.body["error"]["code"] == "idempotency_in_progress"
            assert int(answer.headers["Retry-After"]) >= 1
        for answer in answers:
            if answer.replayed:
                assert (answer.status, answer.raw) == (sent.status, sent.raw)
        # Afterwards both processes replay the one answer.
        for url in urls:
            again = await call(session, "POST", f"{url}/v1/cancellations", RX_CANCEL, key=KEY)
            assert again.replayed
            assert again.raw == sent.raw
    assert len(upstream.received) == 1
