"""The store across real `cancel-gateway serve` processes: an SQLite file outlives a process
killed with SIGKILL, and two processes sharing one store never both send for one key."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import BASE_CONFIG, Upstream
from tests.e2e.conftest import ServeFactory, call, store_yaml
from tests.services import REDIS_URL

pytestmark = pytest.mark.e2e

RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
RX_CANCEL = {"connection": "rxuniverse-lab", "id": "72544"}
KEY = "order-72544-cancel"


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
