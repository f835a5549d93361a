"""Nothing stays running after a crash (CONTRACT §10): real `cancel-gateway serve` processes
killed with SIGKILL mid-work, and another process (a restart, or a replica on the same store)
settling what they left, each cancellation exactly once.

A claim holds for the connection's timeout_s + 10 s, so each test waits a little over 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import BASE_CONFIG, Upstream
from tests.e2e.conftest import Answer, ServeFactory, call, store_yaml
from tests.services import REDIS_URL

pytestmark = pytest.mark.e2e

# StateSet's probe settles what a dead process left; its cancels answer late or never.
CANCEL = {"connection": "stateset-main", "reason": "customer request"}
CANCELLED = {"id": "x", "status": "cancelled", "cancelled_at": "2024-01-16T10:30:00Z"}
CLAIM_S = 0.5 + 10  # the connection's timeout_s + 10 s
SETTLE_WITHIN_S = CLAIM_S + 10


def config(tmp_path: Path, store: str) -> Path:
    """The standard connections with a 0.5 s budget, polling for due work every 0.2 s."""
    text = (
        store
        + "server:\n  work_poll_s: 0.2\n"
        + BASE_CONFIG.replace("timeout_s: 2", "timeout_s: 0.5")
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


async def final_in_ledger(
    session: aiohttp.ClientSession, url: str, count: int, timeout_s: float
) -> list[dict[str, Any]]:
    """The ledger's final cancellations, once there are ``count`` of them."""
    async with asyncio.timeout(timeout_s):
        while True:
            listed = await call(session, "GET", f"{url}/v1/cancellations?limit=200")
            final = [e for e in listed.body["items"] if e["status"] != "pending"]
            if len(final) >= count:
                return final
            await asyncio.sleep(0.2)


async def test_a_cancellation_killed_mid_request_is_settled_after_a_restart(
    serve: ServeFactory, upstream: Upstream, tmp_path: Path
):
    path = config(tmp_path, store_yaml(backend="sqlite", path="ledger.db"))
    hold = asyncio.Event()
    upstream.answer(200, CANCELLED, until=hold)  # reaches StateSet, the answer never comes
    upstream.probe_answers.append((200, CANCELLED))
    async with aiohttp.ClientSession() as session:
        first = await serve(path)
        url = await first.url()
        body = {**CANCEL, "id": "ASN-K1"}
        request = asyncio.create_task(
            call(session, "POST", f"{url}/v1/cancellations", body, key="k-crash-1")
        )
        await upstream.wait_for(1)
        await first.kill()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            await request
        killed_at = asyncio.get_running_loop().time()

        second = await serve(path)
        url = await second.url()
        [settled] = await final_in_ledger(session, url, 1, SETTLE_WITHIN_S)
        assert asyncio.get_running_loop().time() - killed_at < SETTLE_WITHIN_S
        assert settled["status"] == "cancelled"
        assert settled["resource_id"] == "ASN-K1"
        assert settled["upstream"]["probes"] == 1
        again = await call(session, "POST", f"{url}/v1/cancellations", body, key="k-crash-1")
        assert again.replayed
        assert again.body == settled
        events = await call(
            session, "GET", f"{url}/v1/cancellations/{settled['cancellation_id']}/events"
        )
        assert [e["type"] for e in events.body["events"]] == ["received", "probe", "settled"]
    hold.set()
    assert len(upstream.received) == 1  # settled by the probe: never sent again
    assert len(upstream.probes) == 1


@pytest.fixture(params=["redis", "postgres"])
def replicated_store(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return store_yaml(
            backend="redis", url=REDIS_URL, prefix=request.getfixturevalue("redis_prefix")
        )
    return store_yaml(backend="postgres", dsn=request.getfixturevalue("postgres_dsn"))


async def test_a_replica_settles_what_a_killed_one_held_each_exactly_once(
    replicated_store: str, serve: ServeFactory, upstream: Upstream, tmp_path: Path
):
    path = config(tmp_path, replicated_store)
    hold = asyncio.Event()
    count = 4
    for _ in range(count):
        upstream.answer(200, CANCELLED, until=hold)
    for _ in range(count):
        upstream.probe_answers.append((200, CANCELLED))
    doomed, survivor = await asyncio.gather(serve(path), serve(path))
    async with aiohttp.ClientSession() as session:
        doomed_url, survivor_url = await doomed.url(), await survivor.url()
        queued: list[Answer] = []
        for n in range(count):
            queued.append(
                await call(
                    session,
                    "POST",
                    f"{doomed_url}/v1/cancellations",
                    {**CANCEL, "id": f"ASN-R{n}"},
                    headers={"Prefer": "respond-async"},
                )
            )
        assert [q.status for q in queued] == [202] * count
        await upstream.wait_for(count)  # every cancel sent, none answered
        await doomed.kill()
        hold.set()  # what the survivor holds (if anything) is answered now

        final = await final_in_ledger(session, survivor_url, count, SETTLE_WITHIN_S)
        assert sorted(e["resource_id"] for e in final) == [f"ASN-R{n}" for n in range(count)]
        assert {e["status"] for e in final} == {"cancelled"}
        for answer in queued:
            found = await call(
                session,
                "GET",
                f"{survivor_url}/v1/cancellations/{answer.body['cancellation_id']}",
            )
            assert (found.status, found.body["status"]) == (200, "cancelled")
    settled = Counter(
        e["cancellation_id"]
        for process in (doomed, survivor)
        for e in process.events
        if e["event"] == "cancellation.settled"
    )
    assert sorted(settled.values()) == [1] * count
    assert len(upstream.received) == count  # none sent twice: the probes said cancelled
