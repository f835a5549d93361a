"""The embedded default: one SQLite file in WAL mode through aiosqlite.

A claim is one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock), so it is atomic across
the coroutines of this process and across the processes of ``--workers N`` sharing the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
import orjson

from gateway.store.base import (
    ENTRY_COLUMNS,
    Begun,
    Claimed,
    Entry,
    KeyClaim,
    KeyRow,
    KeyState,
    StoredReply,
    StoreUnavailable,
    decide,
    entry_values,
    finished,
    key_values,
)

SCHEMA_VERSION = 1
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE cg_idempotency (
            caller TEXT NOT NULL,
            key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            token TEXT NOT NULL,
            state TEXT NOT NULL,
            lease_until REAL NOT NULL,
            expires_at REAL NOT NULL,
            cancellation_id TEXT NOT NULL,
            http_status INTEGER,
            headers TEXT,
            body BLOB,
            PRIMARY KEY (caller, key)
        )""",
        """CREATE TABLE cg_cancellations (
            id TEXT PRIMARY KEY,
            caller TEXT NOT NULL,
            connection TEXT,
            provider TEXT,
            resource TEXT,
            resource_id TEXT,
            status TEXT NOT NULL,
            error_code TEXT,
            attempts INTEGER NOT NULL,
            created_at REAL NOT NULL,
            completed_at REAL,
            envelope BLOB
        )""",
        "CREATE INDEX cg_cancellations_caller ON cg_cancellations (caller, created_at)",
        "CREATE INDEX cg_idempotency_expires ON cg_idempotency (expires_at)",
    ],
}
_UPSERT_ENTRY = """INSERT OR REPLACE INTO cg_cancellations
    (id, caller, connection, provider, resource, resource_id, status, error_code, attempts,
     created_at, completed_at, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_UPSERT_KEY = """INSERT OR REPLACE INTO cg_idempotency
    (caller, key, fingerprint, token, state, lease_until, expires_at, cancellation_id,
     http_status, headers, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: Path, timeout_s: float) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one transaction at a time on the one connection

    async def open(self) -> None:
        async with asyncio.timeout(self._timeout_s * 5), self._lock:
            await self._connect()

    async def _connect(self) -> None:
        """Open the file and bring its schema up to date (under the lock)."""
        if self._db is not None:
            return
        db: aiosqlite.Connection | None = None
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(self._path, isolation_level=None)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute(f"PRAGMA busy_timeout={int(self._timeout_s * 1000)}")
            await db.execute("BEGIN IMMEDIATE")
            await _migrate(db)
            await db.execute("COMMIT")
        except (OSError, sqlite3.Error) as exc:
            if db is not None:
                await db.close()
            raise StoreUnavailable(f"sqlite {self._path}: {exc}") from None
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> None:
        async with self._transaction(write=False) as tx:
            await tx.execute("SELECT 1")

    async def begin(self, entry: Entry, claim: KeyClaim | None, now: float) -> Begun:
        async with self._transaction() as tx:
            token = ""
            if claim is not None:
                found = await _key_row(tx, claim)
                decided = decide(found, claim, entry.cancellation_id, now)
                if not isinstance(decided, KeyRow):
                    return decided
                await tx.execute(_UPSERT_KEY, key_values(decided))
                token = decided.token
            await tx.execute(_UPSERT_ENTRY, entry_values(entry))
            return Claimed(token)

    async def complete(
        self,
        entry: Entry,
        claim: KeyClaim | None,
        token: str,
        reply: StoredReply | None,
        now: float,
    ) -> None:
        async with self._transaction() as tx:
            await tx.execute(_UPSERT_ENTRY, entry_values(entry))
            if claim is None:
                return
            found = await _key_row(tx, claim)
            if found is None or found.token != token:
                return  # taken over after its lease ran out: not ours to finish
            if reply is None:
                await tx.execute(
                    "DELETE FROM cg_idempotency WHERE caller = ? AND key = ?",
                    (claim.caller, claim.key),
                )
            else:
                await tx.execute(_UPSERT_KEY, key_values(finished(found, reply, claim.ttl_s, now)))

    async def record(self, entry: Entry) -> None:
        async with self._transaction() as tx:
            await tx.execute(_UPSERT_ENTRY, entry_values(entry))

    async def lookup(self, cancellation_id: str, caller: str) -> Entry | None:
        async with self._transaction(write=False) as tx:
            cursor = await tx.execute(
                f"SELECT {ENTRY_COLUMNS} FROM cg_cancellations"  # noqa: S608 - constant columns
                " WHERE id = ? AND caller = ?",
                (cancellation_id, caller),
            )
            row = await cursor.fetchone()
        return None if row is None else Entry(*row)

    @asynccontextmanager
    async def _transaction(self, write: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction, within the store's timeout; any failure is ``StoreUnavailable``."""
        try:
            async with asyncio.timeout(self._timeout_s), self._lock:
                await self._connect()  # again, if the first start failed
                db = self._db
                assert db is not None
                await db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                except BaseException:
                    await db.execute("ROLLBACK")
                    raise
                await db.execute("COMMIT")
        except (TimeoutError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"sqlite {self._path}: {exc or 'timed out'}") from None


async def _migrate(db: aiosqlite.Connection) -> None:
    await db.execute("CREATE TABLE IF NOT EXISTS cg_schema (version INTEGER NOT NULL)")
    cursor = await db.execute("SELECT MAX(version) FROM cg_schema")
    row = await cursor.fetchone()
    current = (row[0] if row else None) or 0
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version]:
            await db.execute(statement)
        await db.execute("INSERT INTO cg_schema (version) VALUES (?)", (version,))


async def _key_row(db: aiosqlite.Connection, claim: KeyClaim) -> KeyRow | None:
    cursor = await db.execute(
        "SELECT fingerprint, token, state, lease_until, expires_at, cancellation_id,"
        " http_status, headers, body FROM cg_idempotency WHERE caller = ? AND key = ?",
        (claim.caller, claim.key),
    )
    row = await cursor.fetchone()
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
