"""The durable work queue kept in the ledger rows, on every backend against its real engine:
due steps are taken once and leased, a lease that runs out lets another holder take the step,
only the holder may write what it took, any other write ends the lease, and the queue outlives
the store's processes and the migrations that added it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

import asyncpg
import orjson
import pytest

from gateway.store import (
    Claimed,
    Entry,
    InProgress,
    KeyClaim,
    Replay,
    Store,
    postgres,
    redis,
    sqlite,
)
from tests.services import REDIS_URL
from tests.store.conftest import SHARED_ENGINES, StoreFactory
from tests.store.test_backends import NOW, REPLY, claim, entry

LEASE_S = 30.0
SEND = b'{"step":"send"}'
PROBE = b'{"step":"probe"}'


def due(at: float, work: bytes = SEND, **more: object) -> Entry:
    """A cancellation with a step due ``at``."""
    return entry(**more)._replace(due_at=at, work=work)


def settled(step: Entry, **more: object) -> Entry:
    """The row a holder writes once ``step`` is done: final, with no step left."""
    return step._replace(
        status="cancelled",
        attempts=1,
        completed_at=NOW + 1,
        envelope=b'{"status":"cancelled"}',
        due_at=None,
        work=None,
    )._replace(**more)


async def replicas(make_store: StoreFactory) -> list[Store]:
    """Two stores on one engine (two processes), or the memory store alone."""
    stores = [await make_store()]
    if stores[0].name != "memory":
        stores.append(await make_store())
    return stores


def ids(entries: list[Entry]) -> set[str]:
    return {e.cancellation_id for e in entries}


async def test_due_steps_are_taken_once_leased_to_their_taker(make_store: StoreFactory):
    store = await make_store()
    late, later, last = due(NOW - 10), due(NOW - 5, PROBE), due(NOW - 1)
    assert await store.begin(late, None, NOW - 10) == Claimed("")
    assert isinstance(await store.begin(later, claim(), NOW - 5), Claimed)
    await store.record(last)
    await store.record(entry())  # no step: never taken
    first = await store.take_due("a", NOW, LEASE_S, 2)
    assert ids(first) == ids([late, later])  # the earliest first
    assert {e.cancellation_id: e for e in first} == {
        e.cancellation_id: e._replace(due_at=NOW + LEASE_S, taken=1) for e in (late, later)
    }
    assert await store.take_due("a", NOW, LEASE_S, 10) == [
        last._replace(due_at=NOW + LEASE_S, taken=1)
    ]
    assert await store.take_due("b", NOW, LEASE_S, 10) == []
    assert await store.take_due("b", NOW + LEASE_S - 1, LEASE_S, 10) == []
    # The row read back holds the lease's end as its due time.
    found = await store.lookup(later.cancellation_id, "oms")
    assert found == later._replace(due_at=NOW + LEASE_S, taken=1)
    assert await store.take_due("b", NOW, LEASE_S, 0) == []


async def test_a_step_not_yet_due_is_not_taken(make_store: StoreFactory):
    store = await make_store()
    soon = due(NOW + 10)
    await store.record(soon)
    assert await store.take_due("a", NOW, LEASE_S, 10) == []
    assert await store.take_due("a", NOW + 9.999, LEASE_S, 10) == []
    taken = await store.take_due("a", NOW + 10, LEASE_S, 10)  # due at its time exactly
    assert taken == [soon._replace(due_at=NOW + 10 + LEASE_S, taken=1)]


async def test_twenty_concurrent_takers_take_every_step_exactly_once(make_store: StoreFactory):
    stores = await replicas(make_store)
    steps = [due(NOW - n) for n in range(30)]
    for step in steps:
        await stores[0].record(step)
    results = await asyncio.gather(
        *(stores[i % len(stores)].take_due(f"h{i}", NOW, LEASE_S, 2) for i in range(20))
    )
    taken = Counter(e.cancellation_id for found in results for e in found)
    assert taken == Counter(ids(steps))  # 20 takers of up to 2 each: all 30, each once
    assert await stores[0].take_due("late", NOW, LEASE_S, 100) == []
    # Each holder, and only that holder, may write what it took.
    for i, found in enumerate(results):
        for step in found:
            other = f"h{(i + 1) % 20}"
            assert not await stores[0].complete(settled(step), None, "", None, NOW, holder=other)
            assert await stores[-1].complete(settled(step), None, "", None, NOW, holder=f"h{i}")


async def test_a_lease_that_runs_out_lets_another_holder_take_the_step(make_store: StoreFactory):
    one, two = (await replicas(make_store) * 2)[:2]
    step = due(NOW - 1)
    await one.record(step)
    assert ids(await one.take_due("a", NOW, LEASE_S, 10)) == {step.cancellation_id}
    assert await two.take_due("b", NOW + LEASE_S - 0.5, LEASE_S, 10) == []
    retaken = await two.take_due("b", NOW + LEASE_S, LEASE_S, 10)
    assert retaken == [step._replace(due_at=NOW + 2 * LEASE_S, taken=2)]
    # The first holder, late: the step is no longer its own to write.
    assert not await one.complete(settled(step), None, "", None, NOW + LEASE_S + 1, holder="a")
    assert await one.lookup(step.cancellation_id, "oms") == retaken[0]
    assert await two.complete(settled(step), None, "", None, NOW + LEASE_S + 1, holder="b")
    assert await one.lookup(step.cancellation_id, "oms") == settled(step)


async def test_a_lease_run_out_but_taken_by_nobody_is_still_its_holders(
    make_store: StoreFactory,
):
    store = await make_store()
    step = due(NOW - 1)
    await store.record(step)
    assert await store.take_due("a", NOW, LEASE_S, 10)
    assert await store.complete(settled(step), None, "", None, NOW + 2 * LEASE_S, holder="a")
    assert await store.lookup(step.cancellation_id, "oms") == settled(step)


async def test_the_wrong_holder_writes_nothing(make_store: StoreFactory):
    store = await make_store()
    step, untaken = due(NOW - 1), due(NOW + 100)
    await store.record(step)
    await store.record(untaken)
    [taken] = await store.take_due("a", NOW, LEASE_S, 10)
    assert not await store.complete(settled(step), None, "", None, NOW, holder="b")
    assert await store.lookup(step.cancellation_id, "oms") == taken
    # A step nobody took is nobody's to write.
    assert not await store.complete(settled(untaken), None, "", None, NOW, holder="a")
    assert await store.lookup(untaken.cancellation_id, "oms") == untaken
    # The refusal left a's lease as it was.
    assert await store.complete(settled(step), None, "", None, NOW, holder="a")


async def test_the_holder_settles_the_step_and_it_is_never_taken_again(make_store: StoreFactory):
    store = await make_store()
    step = due(NOW - 1)
    await store.record(step)
    assert await store.take_due("a", NOW, LEASE_S, 10)
    assert await store.complete(settled(step), None, "", None, NOW, holder="a")
    assert await store.lookup(step.cancellation_id, "oms") == settled(step)
    assert await store.take_due("b", NOW + 10_000, LEASE_S, 10) == []
    # Its lease ended with the write: writing again as its holder is refused.
    assert not await store.complete(settled(step), None, "", None, NOW, holder="a")


async def test_the_holder_may_leave_a_next_step(make_store: StoreFactory):
    store = await make_store()
    step = due(NOW - 1)
    await store.record(step)
    assert await store.take_due("a", NOW, LEASE_S, 10)
    probe = step._replace(attempts=1, due_at=NOW + 60, work=PROBE)
    assert await store.complete(probe, None, "", None, NOW, holder="a")
    assert await store.take_due("b", NOW + 59, LEASE_S, 10) == []
    assert await store.take_due("b", NOW + 60, LEASE_S, 10) == [
        probe._replace(due_at=NOW + 60 + LEASE_S, taken=1)
    ]
    assert not await store.complete(settled(step), None, "", None, NOW + 61, holder="a")
    assert await store.complete(settled(step), None, "", None, NOW + 61, holder="b")


@pytest.mark.parametrize("write", ["complete", "record"])
async def test_a_write_without_holder_ends_the_lease(make_store: StoreFactory, write: str):
    """The synchronous path writes the row as it is: the worker that took its step, late,
    must not write over it. (``begin`` only ever writes a new row: nothing holds it.)"""
    store = await make_store()
    step = due(NOW - 1)
    await store.begin(step, None, NOW - 1)
    assert await store.take_due("worker", NOW, LEASE_S, 10)
    answered = settled(step, status="failed")
    if write == "complete":
        assert await store.complete(answered, None, "", None, NOW + 1)
    else:
        await store.record(answered)
    assert not await store.complete(settled(step), None, "", None, NOW + 2, holder="worker")
    assert await store.lookup(step.cancellation_id, "oms") == answered
    assert await store.take_due("other", NOW + 10_000, LEASE_S, 10) == []


async def test_a_write_without_holder_keeps_the_step_it_writes(make_store: StoreFactory):
    store = await make_store()
    step = due(NOW - 1)
    await store.record(step)
    assert await store.take_due("worker", NOW, LEASE_S, 10)
    again = step._replace(due_at=NOW + 5, work=PROBE)
    assert await store.complete(again, None, "", None, NOW + 1)
    assert await store.take_due("other", NOW + 5, LEASE_S, 10) == [
        again._replace(due_at=NOW + 5 + LEASE_S, taken=1)
    ]


async def test_a_worker_settles_the_key_of_the_request_it_takes_over(make_store: StoreFactory):
    """A request whose process died: its step (recover) comes due, another process takes it
    and finishes the cancellation holding the claim's token, and the key then replays."""
    request, worker = (await replicas(make_store) * 2)[:2]
    key = KeyClaim("oms", "k-1", "f-1", lease_s=LEASE_S, ttl_s=3600)
    running = due(NOW + LEASE_S, b'{"step":"recover"}')
    assert await request.begin(running, key, NOW) == Claimed(key.token)
    assert isinstance(await request.begin(entry(), claim(), NOW + 1), InProgress)
    [taken] = await worker.take_due("w", NOW + LEASE_S, LEASE_S, 10)
    assert taken.work == b'{"step":"recover"}'
    final = settled(running)
    assert await worker.complete(final, key, key.token, REPLY, NOW + LEASE_S + 1, holder="w")
    assert await request.begin(entry(), claim(), NOW + LEASE_S + 2) == Replay(
        REPLY, running.cancellation_id
    )
    assert await request.lookup(running.cancellation_id, "oms") == final


async def test_a_worker_refused_settles_no_key(make_store: StoreFactory):
    store = await make_store()
    key = KeyClaim("oms", "k-1", "f-1", lease_s=LEASE_S, ttl_s=3600)
    running = due(NOW - 1)
    assert await store.begin(running, key, NOW - 1) == Claimed(key.token)
    assert not await store.complete(settled(running), key, key.token, REPLY, NOW, holder="w")
    assert isinstance(await store.begin(entry(), claim(), NOW), InProgress)


@pytest.mark.parametrize("make_store", SHARED_ENGINES, indirect=True)
async def test_due_steps_and_leases_outlive_the_store(make_store: StoreFactory):
    first = await make_store()
    leased, waiting = due(NOW - 2), due(NOW - 1, PROBE)
    await first.record(leased)
    await first.record(waiting)
    assert ids(await first.take_due("a", NOW, LEASE_S, 1)) == {leased.cancellation_id}
    await first.close()
    reopened = await make_store()
    assert await reopened.take_due("b", NOW, LEASE_S, 10) == [
        waiting._replace(due_at=NOW + LEASE_S, taken=1)
    ]
    assert await reopened.complete(settled(leased), None, "", None, NOW, holder="a")
    assert await reopened.take_due("c", NOW + 10_000, LEASE_S, 10) == [
        waiting._replace(due_at=NOW + 10_000 + LEASE_S, taken=2)
    ]


async def _migrated_and_working(store: Store, kept: Entry) -> None:
    """Opened on an older schema: the old row is read back as it was, and the due work of the
    new one is taken and completed."""
    await store.open()
    assert await store.lookup(kept.cancellation_id, "oms") == kept
    assert await store.take_due("a", NOW + 10_000, LEASE_S, 10) == []
    step = due(NOW - 1)
    await store.record(step)
    assert await store.take_due("a", NOW, LEASE_S, 10) == [
        step._replace(due_at=NOW + LEASE_S, taken=1)
    ]
    assert await store.complete(settled(step), None, "", None, NOW, holder="a")
    await store.close()


async def test_a_sqlite_file_of_schema_5_is_migrated_and_keeps_its_rows(tmp_path: Path):
    path = tmp_path / "ledger.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("CREATE TABLE cg_schema (version INTEGER NOT NULL)")
    for version in range(1, 6):
        for statement in sqlite.MIGRATIONS[version]:
            old.execute(statement)
        old.execute("INSERT INTO cg_schema (version) VALUES (?)", (version,))
    kept = settled(entry(), events=b'[{"type":"settled"}]')
    old.execute(
        "INSERT INTO cg_cancellations (id, caller, connection, provider, resource, resource_id,"
        " status, created_at, error_code, attempts, completed_at, envelope, events)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        kept[:13],  # every column but the step's, in ``Entry``'s order
    )
    old.close()
    await _migrated_and_working(sqlite.SqliteStore(path, 2.0), kept)
    check = sqlite3.connect(path)
    versions = [row[0] for row in check.execute("SELECT version FROM cg_schema ORDER BY version")]
    indexes = {row[0] for row in check.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    check.close()
    assert versions == [1, 2, 3, 4, 5, 6]
    assert "cg_cancellations_due" in indexes


async def test_a_postgres_schema_4_is_migrated_and_keeps_its_rows(postgres_dsn: str):
    old = await asyncpg.connect(postgres_dsn)
    await old.execute("CREATE TABLE cg_schema (version INTEGER NOT NULL)")
    for version in range(1, 5):
        for statement in postgres.MIGRATIONS[version]:
            await old.execute(statement)
        await old.execute("INSERT INTO cg_schema (version) VALUES ($1)", version)
    kept = settled(entry(), events=b'[{"type":"settled"}]')
    await old.execute(
        "INSERT INTO cg_cancellations (id, caller, connection, provider, resource, resource_id,"
        " status, created_at, error_code, attempts, completed_at, envelope, events)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        *kept[:13],
    )
    await _migrated_and_working(postgres.PostgresStore(postgres_dsn, 5), kept)
    versions = [row[0] for row in await old.fetch("SELECT version FROM cg_schema ORDER BY 1")]
    indexes = {row[0] for row in await old.fetch("SELECT indexname FROM pg_indexes")}
    await old.close()
    assert versions == [1, 2, 3, 4, 5]
    assert "cg_cancellations_due" in indexes


async def test_redis_reads_rows_written_before_steps_were_kept(redis_prefix: str):
    store = redis.RedisStore(REDIS_URL, redis_prefix, 5, ledger_ttl_s=60)
    await store.open()
    kept = settled(entry(), events=b"[]")
    row = {
        **kept._asdict(),
        "envelope": (kept.envelope or b"").hex(),
        "events": (kept.events or b"").hex(),
    }
    del row["due_at"], row["work"]
    await store._client.set(redis_prefix + "cxl:" + kept.cancellation_id, orjson.dumps(row))
    assert await store.lookup(kept.cancellation_id, "oms") == kept
    await store.close()


async def test_redis_drops_the_steps_of_expired_rows_when_they_come_due(redis_prefix: str):
    store = redis.RedisStore(REDIS_URL, redis_prefix, 5, ledger_ttl_s=0.2)
    await store.open()
    gone = due(NOW - 1)
    await store.record(gone)
    await asyncio.sleep(0.3)  # the row expires; its step stays queued
    kept = due(NOW - 1)
    await store.record(kept)
    assert await store.take_due("a", NOW, LEASE_S, 10) == [
        kept._replace(due_at=NOW + LEASE_S, taken=1)
    ]
    assert await store._client.zrange(redis_prefix + "due", 0, -1) == [
        kept.cancellation_id.encode()
    ]
    holders = await store._client.keys(redis_prefix + "holder:*")
    assert holders == [f"{redis_prefix}holder:{kept.cancellation_id}".encode()]
    await store.close()
