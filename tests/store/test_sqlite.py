"""The SQLite store's own mechanics: its schema, its background checkpoint and how it stops."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.store import Entry, StoreUnavailable
from gateway.store import sqlite as module
from gateway.store.sqlite import SqliteStore


class _HeldCheckpoint:
    """The checkpoint thread's connection, held inside its statement until released."""

    def __init__(self, real: sqlite3.Connection, started: Callable[[], None]) -> None:
        self.real = real
        self.started = started
        self.release = threading.Event()
        self.running = False
        self.closed_while_running = False

    def execute(self, sql: str, *args: Any) -> Any:
        self.running = True
        self.started()
        self.release.wait(5)
        try:
            return self.real.execute(sql, *args)
        finally:
            self.running = False

    def close(self) -> None:
        self.closed_while_running = self.running
        self.real.close()


async def test_close_waits_for_a_running_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing while the background thread checkpoints waits for its statement to end before
    closing its connection (closing under a running statement crashes the process)."""
    held: list[_HeldCheckpoint] = []
    connect = sqlite3.connect
    loop = asyncio.get_running_loop()
    checkpointing = asyncio.Event()

    def connecting(*args: Any, **kwargs: Any) -> Any:
        connection = connect(*args, **kwargs)
        if threading.current_thread() is threading.main_thread():
            return connection
        held.append(
            _HeldCheckpoint(connection, lambda: loop.call_soon_threadsafe(checkpointing.set))
        )
        return held[-1]

    monkeypatch.setattr(module, "CHECKPOINT_EVERY_S", 0.01)
    monkeypatch.setattr(module.sqlite3, "connect", connecting)
    store = SqliteStore(tmp_path / "ledger.db", 2.0)
    await store.open()
    async with asyncio.timeout(5):
        await checkpointing.wait()
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0.1)
    assert not closing.done()  # still waiting for the checkpoint
    held[0].release.set()
    async with asyncio.timeout(5):
        await closing
    assert not held[0].closed_while_running


def _entry(cancellation_id: str) -> Entry:
    return Entry(cancellation_id, "oms", "c", "p", "r", "id-1", "running", time.time())


async def test_a_write_waits_for_the_lock_another_process_holds_then_commits(tmp_path: Path):
    """Another connection holding the write lock (a worker sharing the file) delays a write,
    which is retried without blocking the loop and commits once the lock is free."""
    store = SqliteStore(tmp_path / "ledger.db", 2.0)
    await store.open()
    other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writing = asyncio.create_task(store.record(_entry("cxl_held")))
    ticks = 0
    while ticks < 20:  # the loop keeps turning while the write waits
        await asyncio.sleep(0.005)
        ticks += 1
    assert not writing.done()
    other.execute("COMMIT")
    async with asyncio.timeout(2):
        await writing
    assert await store.lookup("cxl_held", "oms") is not None
    other.close()
    await store.close()


async def test_a_write_fails_when_the_lock_stays_taken_past_the_timeout(tmp_path: Path):
    """A lock held longer than the store's timeout: store_unavailable, and the next write
    after its release commits."""
    store = SqliteStore(tmp_path / "ledger.db", 0.2)
    await store.open()
    other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        async with asyncio.timeout(5):  # not for ever: the lock is never released meanwhile
            await store.record(_entry("cxl_late"))
    assert time.monotonic() - started >= 0.2  # not before the timeout
    other.execute("ROLLBACK")
    await store.record(_entry("cxl_after"))
    assert await store.lookup("cxl_late", "oms") is None
    assert await store.lookup("cxl_after", "oms") is not None
    other.close()
    await store.close()


async def test_a_ledger_of_schema_1_is_migrated_and_keeps_its_rows(tmp_path: Path):
    """A file written by the first schema: its rows stay readable and completable, and the
    ledger index no query used is gone."""
    path = tmp_path / "ledger.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("CREATE TABLE cg_schema (version INTEGER NOT NULL)")
    for statement in module.MIGRATIONS[1]:
        old.execute(statement)
    old.execute("INSERT INTO cg_schema (version) VALUES (1)")
    old.execute(
        "INSERT INTO cg_cancellations (id, caller, connection, provider, resource, resource_id,"
        " status, created_at, error_code, attempts, completed_at, envelope) VALUES"
        " ('cxl_old', 'oms', 'c', 'p', 'r', 'id-1', 'running', 1.0, NULL, 0, NULL, NULL)"
    )
    old.close()
    store = SqliteStore(path, 2.0)
    await store.open()
    running = await store.lookup("cxl_old", "oms")
    assert running is not None
    assert running.status == "running"
    await store.record(running._replace(status="cancelled", attempts=1, envelope=b"{}"))
    done = await store.lookup("cxl_old", "oms")
    await store.close()
    assert done == running._replace(status="cancelled", attempts=1, envelope=b"{}")
    check = sqlite3.connect(path)
    versions = [row[0] for row in check.execute("SELECT version FROM cg_schema ORDER BY version")]
    indexes = {row[0] for row in check.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    check.close()
    assert versions == [1, 2, 3, 4, 5, 6]
    assert "cg_cancellations_caller" not in indexes
    assert "cg_idempotency_expires" in indexes


async def test_a_completion_updates_the_running_row_in_place(tmp_path: Path):
    """One row per cancellation, whatever number of writes: the first, running, becomes the
    final one, created_at and caller kept."""
    store = SqliteStore(tmp_path / "ledger.db", 2.0)
    await store.open()
    first = _entry("cxl_one")
    await store.begin(first, None, time.time())
    final = first._replace(status="failed", error_code="provider_error", attempts=3)
    await store.complete(final, None, "", None, time.time())
    found = await store.lookup("cxl_one", "oms")
    await store.close()
    assert found == final
    check = sqlite3.connect(tmp_path / "ledger.db")
    (count,) = check.execute("SELECT COUNT(*) FROM cg_cancellations").fetchone()
    check.close()
    assert count == 1
