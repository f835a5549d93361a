"""The embedded default: one SQLite file in WAL mode, written from the event loop.

A WAL commit without fsync (``synchronous=NORMAL``) is a copy into the page cache: a few
microseconds, cheaper than handing the statement to a thread and waking the loop again, which
is what a thread-per-connection driver costs per statement. So statements run on the loop, and
nothing here may wait: the busy timeout is zero, and a transaction that finds the write lock
taken (another worker sharing the file) is tried again a moment later; the WAL is checkpointed
(fsync included) by a background thread on a connection of its own.

Writes are committed in groups: every write queued during one turn of the loop goes into one
``BEGIN IMMEDIATE`` transaction (SQLite's write lock, so a claim is atomic across the workers
sharing the file), and each write returns only once its group is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.store.base import (
    ENTRY_COLUMNS,
    PENDING_SUMMARY,
    RELEASE,
    BeginAnswer,
    Claimed,
    Entry,
    KeyClaim,
    KeyRow,
    KeyState,
    LedgerQuery,
    RefreshLease,
    RefreshRow,
    StoredReply,
    StoreUnavailable,
    decide,
    entry_values,
    key_values,
    lease_rule,
    ledger_conditions,
    settle,
)
from gateway.store.sqlite_schema import MIGRATIONS, SCHEMA_VERSION

CHECKPOINT_EVERY_S = 1.0
RETRY_BUSY_S = (0.001, 0.05)  # first and longest wait for the write lock held by another process

# A completion updates its row in place (REPLACE would delete it and insert it again).
_UPSERT_ENTRY = """INSERT INTO cg_cancellations
    (id, caller, connection, provider, resource, resource_id, status, error_code, attempts,
     created_at, completed_at, envelope, events, due_at, work)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, error_code = excluded.error_code,
    attempts = excluded.attempts, completed_at = excluded.completed_at,
    envelope = excluded.envelope, connection = excluded.connection,
    provider = excluded.provider, resource = excluded.resource, events = excluded.events,
    due_at = excluded.due_at, work = excluded.work, holder = NULL, taken = 0"""
_UPSERT_KEY = """INSERT OR REPLACE INTO cg_idempotency
    (caller, key, fingerprint, token, state, lease_until, expires_at, cancellation_id,
     http_status, headers, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


_ANY_DUE = "SELECT 1 FROM cg_cancellations WHERE due_at IS NOT NULL AND due_at <= ? LIMIT 1"

Apply = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class _Write:
    """One write waiting for its group: a ledger row alone (written together with its
    neighbours in one statement), or a step that reads and writes (a claim)."""

    future: asyncio.Future[Any]
    deadline: float  # loop time: a write still waiting for the lock then fails
    row: tuple[Any, ...] | None = None
    apply: Apply | None = None


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: Path, timeout_s: float) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._db: sqlite3.Connection | None = None
        self._waiting: list[_Write] = []
        self._commit_at: asyncio.Handle | None = None  # the group commit to come
        self._busy_wait_s = RETRY_BUSY_S[0]
        self._checkpointer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._connected()

    def _connected(self) -> sqlite3.Connection:
        """The connection, opened (and the schema brought up to date) the first time, and again
        after a start that failed."""
        if self._db is not None:
            return self._db
        db: sqlite3.Connection | None = None
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job, off the loop
            # Waiting for another process is allowed only while the schema is made, at start.
            db.execute(f"PRAGMA busy_timeout={int(self._timeout_s * 1000)}")
            db.execute("BEGIN IMMEDIATE")
            _migrate(db)
            db.execute("COMMIT")
            db.execute("PRAGMA busy_timeout=0")
        except (OSError, sqlite3.Error) as exc:
            if db is not None:
                db.close()
            raise StoreUnavailable(f"sqlite {self._path}: {exc}") from None
        self._db = db
        self._checkpointer = asyncio.get_running_loop().create_task(self._checkpoint_often())
        return db

    async def close(self) -> None:
        if self._commit_at is not None:  # what waits is written before closing
            self._commit_at.cancel()
            self._commit()
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
        if self._db is not None:
            self._db.close()
            self._db = None

    async def ping(self) -> None:
        self._read("SELECT 1", ())

    async def begin(self, entry: Entry, claim: KeyClaim | None, now: float) -> BeginAnswer:
        if claim is None:
            await self._write(row=entry_values(entry))
            return Claimed("")

        def apply(db: sqlite3.Connection) -> BeginAnswer:
            found = _key_row(db, claim)
            decided = decide(found, claim, entry.cancellation_id, now)
            if not isinstance(decided, KeyRow):
                return decided
            db.execute(_UPSERT_KEY, key_values(decided))
            db.execute(_UPSERT_ENTRY, entry_values(entry))
            return Claimed(decided.token)

        answer: BeginAnswer = await self._write(apply=apply)
        return answer

    async def complete(
        self,
        entry: Entry,
        claim: KeyClaim | None,
        token: str,
        reply: StoredReply | None,
        now: float,
        holder: str | None = None,
    ) -> bool:
        if claim is None and holder is None:
            await self._write(row=entry_values(entry))
            return True

        def apply(db: sqlite3.Connection) -> bool:
            if holder is not None and not _holds(db, entry.cancellation_id, holder):
                return False
            db.execute(_UPSERT_ENTRY, entry_values(entry))
            if claim is None:
                return True
            settled = settle(_key_row(db, claim), token, reply, claim.ttl_s, now)
            if settled == RELEASE:
                db.execute(
                    "DELETE FROM cg_idempotency WHERE caller = ? AND key = ?",
                    (claim.caller, claim.key),
                )
            elif isinstance(settled, KeyRow):
                db.execute(_UPSERT_KEY, key_values(settled))
            return True

        written: bool = await self._write(apply=apply)
        return written

    async def take_due(self, holder: str, now: float, lease_s: float, limit: int) -> list[Entry]:
        # A read first (the partial index): an idle poll takes no write lock from the
        # processes sharing the file.
        if self._read(_ANY_DUE, (now,)) is None:
            return []

        def apply(db: sqlite3.Connection) -> list[Entry]:
            rows = db.execute(
                "UPDATE cg_cancellations SET due_at = ?, holder = ?, taken = taken + 1"  # noqa: S608
                " WHERE id IN"
                " (SELECT id FROM cg_cancellations WHERE due_at IS NOT NULL AND due_at <= ?"
                f" ORDER BY due_at LIMIT ?) RETURNING {ENTRY_COLUMNS}",
                (now + lease_s, holder, now, max(limit, 0)),
            ).fetchall()
            return [Entry(*row) for row in rows]

        taken: list[Entry] = await self._write(apply=apply)
        return taken

    async def record(self, entry: Entry) -> None:
        await self._write(row=entry_values(entry))

    async def lookup(self, cancellation_id: str, caller: str) -> Entry | None:
        row = self._read(
            f"SELECT {ENTRY_COLUMNS} FROM cg_cancellations"  # noqa: S608 - constant columns
            " WHERE id = ? AND caller = ?",
            (cancellation_id, caller),
        )
        return None if row is None else Entry(*row)

    async def list_entries(self, query: LedgerQuery) -> list[Entry]:
        where, params = _ledger_filter(query)
        rows = self._read_all(
            f"SELECT {ENTRY_COLUMNS} FROM cg_cancellations"  # noqa: S608 - constant columns
            f" WHERE {where} ORDER BY id DESC LIMIT ?",
            (*params, max(query.limit, 0)),
        )
        return [Entry(*row) for row in rows]

    async def pending_summary(self) -> tuple[int, float | None]:
        count, oldest = self._read(PENDING_SUMMARY, ())
        return count, oldest

    async def lease_refresh(
        self, name: str, holder: str, now: float, lease_s: float
    ) -> RefreshLease:
        def apply(db: sqlite3.Connection) -> RefreshLease:
            found: Any = db.execute(
                "SELECT value, seed, holder, lease_until FROM cg_refresh_tokens WHERE name = ?",
                (name,),
            ).fetchone() or (None, None, None, 0.0)  # no row yet: no token, no lease
            value, seed, current, until = found
            row = None if value is None else RefreshRow(value, seed)
            if not lease_rule(holder, current, until, now):
                return RefreshLease(False, row, until)
            db.execute(
                "INSERT INTO cg_refresh_tokens (name, holder, lease_until) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " lease_until = excluded.lease_until",
                (name, holder, now + lease_s),
            )
            return RefreshLease(True, row, now + lease_s)

        answer: RefreshLease = await self._write(apply=apply)
        return answer

    async def save_refresh(self, name: str, holder: str, row: RefreshRow | None) -> bool:
        value, seed = (None, None) if row is None else (row.value, row.seed)

        def apply(db: sqlite3.Connection) -> bool:
            # No row given (NULLs): the stored one is kept. Only the holder matches.
            cursor = db.execute(
                "UPDATE cg_refresh_tokens SET value = COALESCE(?, value),"
                " seed = COALESCE(?, seed), holder = NULL, lease_until = 0"
                " WHERE name = ? AND holder = ?",
                (value, seed, name, holder),
            )
            return cursor.rowcount == 1

        saved: bool = await self._write(apply=apply)
        return saved

    def _read(self, sql: str, params: tuple[Any, ...]) -> Any:
        try:
            row = self._connected().execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite {self._path}: {exc}") from None
        return row

    def _read_all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        try:
            rows = self._connected().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite {self._path}: {exc}") from None
        return rows

    async def _write(
        self, *, row: tuple[Any, ...] | None = None, apply: Apply | None = None
    ) -> Any:
        """Queue one write for this turn's group commit and wait until it is committed. A
        group is written at once when its turn comes; only a write lock held by another
        process makes it wait, and ``_commit`` fails it after the store's timeout."""
        loop = asyncio.get_running_loop()
        write = _Write(loop.create_future(), loop.time() + self._timeout_s, row, apply)
        self._waiting.append(write)
        if self._commit_at is None:
            self._commit_at = loop.call_soon(self._commit)
        return await write.future  # cancelled with its request: left out of the group

    def _commit(self) -> None:
        """Write every waiting write in one transaction; if another process holds the write
        lock, try again shortly, the waiting writes keeping their place."""
        self._commit_at = None
        group = [w for w in self._waiting if not w.future.done()]
        self._waiting = []
        if not group:
            return
        try:
            results = self._transaction(group)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                self._fail(group, StoreUnavailable(f"sqlite {self._path}: {exc}"))
                return
            loop = asyncio.get_running_loop()
            late = [w for w in group if w.deadline <= loop.time()]
            self._fail(late, StoreUnavailable(f"sqlite {self._path}: the write lock stays taken"))
            self._waiting[:0] = [w for w in group if w.deadline > loop.time()]
            self._commit_at = loop.call_later(self._busy_wait_s, self._commit)
            self._busy_wait_s = min(self._busy_wait_s * 2, RETRY_BUSY_S[1])
            return
        except StoreUnavailable as exc:
            self._fail(group, exc)
            return
        except Exception as exc:  # a bug: every writer of the group hears of it
            self._fail(group, exc)
            return
        self._busy_wait_s = RETRY_BUSY_S[0]
        for write, result in zip(group, results, strict=True):
            if not write.future.done():
                write.future.set_result(result)

    def _transaction(self, group: list[_Write]) -> list[Any]:
        db = self._connected()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            raise  # nothing begun, nothing to undo: _commit retries it if the lock was busy
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite {self._path}: {exc}") from None
        results: list[Any] = []
        try:
            rows: list[tuple[Any, ...]] = []
            for write in group:
                if write.apply is None:
                    assert write.row is not None
                    rows.append(write.row)
                    results.append(None)
                    continue
                if rows:  # in order: what came before this step is written before it
                    db.executemany(_UPSERT_ENTRY, rows)
                    rows = []
                results.append(write.apply(db))
            if rows:
                db.executemany(_UPSERT_ENTRY, rows)
            db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error) and not _busy(exc):
                raise StoreUnavailable(f"sqlite {self._path}: {exc}") from None
            raise
        return results

    @staticmethod
    def _fail(group: list[_Write], exc: Exception) -> None:
        for write in group:
            if not write.future.done():
                write.future.set_exception(exc)

    async def _checkpoint_often(self) -> None:
        """Move the WAL into the database file now and then, fsync included, off the loop.

        The thread's connection is closed only once no checkpoint runs on it: cancelling this
        task does not stop a thread, and closing a connection under a running statement
        crashes the process."""
        checkpointer: sqlite3.Connection | None = None

        def checkpoint() -> None:
            nonlocal checkpointer
            if checkpointer is None:
                checkpointer = sqlite3.connect(
                    self._path, isolation_level=None, check_same_thread=False
                )
            checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

        running: asyncio.Future[None] | None = None
        try:
            while True:
                await asyncio.sleep(CHECKPOINT_EVERY_S)
                running = asyncio.ensure_future(asyncio.to_thread(checkpoint))
                with contextlib.suppress(sqlite3.Error):
                    await asyncio.shield(running)
        finally:
            if running is not None:
                with contextlib.suppress(sqlite3.Error):
                    await running  # the thread's statement ends before its connection does
            if checkpointer is not None:
                checkpointer.close()


def _busy(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_BUSY"


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS cg_schema (version INTEGER NOT NULL)")
    row = db.execute("SELECT MAX(version) FROM cg_schema").fetchone()
    current = (row[0] if row else None) or 0
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version]:
            db.execute(statement)
        db.execute("INSERT INTO cg_schema (version) VALUES (?)", (version,))


def _ledger_filter(query: LedgerQuery) -> tuple[str, tuple[Any, ...]]:
    """``LedgerQuery.matches`` as a WHERE clause and its parameters."""
    conditions = ledger_conditions(query)
    where = ["envelope IS NOT NULL", *(f"{condition} ?" for condition, _ in conditions)]
    return " AND ".join(where), tuple(value for _, value in conditions)


def _holds(db: sqlite3.Connection, cancellation_id: str, holder: str) -> bool:
    found = db.execute(
        "SELECT holder FROM cg_cancellations WHERE id = ?", (cancellation_id,)
    ).fetchone()
    return found is not None and found[0] == holder


def _key_row(db: sqlite3.Connection, claim: KeyClaim) -> KeyRow | None:
    row = db.execute(
        "SELECT fingerprint, token, state, lease_until, expires_at, cancellation_id,"
        " http_status, headers, body FROM cg_idempotency WHERE caller = ? AND key = ?",
        (claim.caller, claim.key),
    ).fetchone()
    if row is None:
        return None
    fingerprint, token, state, lease_until, expires_at, cancellation_id, status, headers, body = row
    reply = None
    if status is not None:
        reply = StoredReply(status, tuple(map(tuple, orjson.loads(headers))), bytes(body))
    return KeyRow(
        claim.caller,
        claim.key,
        fingerprint,
        token,
        KeyState(state),
        lease_until,
        expires_at,
        cancellation_id,
        reply,
    )
