"""Several replicas sharing one PostgreSQL (asyncpg, one pool per process).

A claim is one transaction: ``INSERT … ON CONFLICT DO NOTHING`` takes a free key at once;
otherwise the row is read ``FOR UPDATE`` (other claimers of that key wait), ``decide`` is
applied and the row rewritten. The schema is created and migrated on start, under an
advisory lock so replicas starting together do not race.

Due steps are taken ``FOR UPDATE SKIP LOCKED``: replicas taking at once each lease other rows,
none waiting for another, and a holder's write locks its row before checking the lease is its.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

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

SCHEMA_VERSION = 5
Conn = asyncpg.Connection | PoolConnectionProxy
_MIGRATION_LOCK = 0x63616E63  # an arbitrary advisory lock id for this schema
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE cg_idempotency (
            caller TEXT NOT NULL,
            key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            token TEXT NOT NULL,
            state TEXT NOT NULL,
            lease_until DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            cancellation_id TEXT NOT NULL,
            http_status INTEGER,
            headers JSONB,
            body BYTEA,
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
            created_at DOUBLE PRECISION NOT NULL,
            completed_at DOUBLE PRECISION,
            envelope BYTEA
        )""",
        "CREATE INDEX cg_cancellations_caller ON cg_cancellations (caller, created_at)",
        "CREATE INDEX cg_idempotency_expires ON cg_idempotency (expires_at)",
    ],
    # Rotating refresh tokens, and the lease under which one process at a time spends them.
    2: [
        """CREATE TABLE cg_refresh_tokens (
            name TEXT PRIMARY KEY,
            value TEXT,
            seed TEXT,
            holder TEXT,
            lease_until DOUBLE PRECISION NOT NULL DEFAULT 0
        )"""
    ],
    # The ledger is listed by caller, newest first: (caller, id) answers that in index order
    # (ids sort by creation time). Ids compare byte by byte ("C"), as ``LedgerQuery`` and the
    # other backends compare them, whatever the database's collation.
    3: [
        "CREATE INDEX IF NOT EXISTS cg_cancellations_caller_id"
        ' ON cg_cancellations (caller, id COLLATE "C")'
    ],
    # What happened to each cancellation, for GET /v1/cancellations/{id}/events.
    4: ["ALTER TABLE cg_cancellations ADD COLUMN IF NOT EXISTS events BYTEA"],
    # A cancellation's next step and its lease (gateway/settling.py): the rows with one are
    # few (pending, running, a webhook to deliver), so the index holds only those.
    5: [
        "ALTER TABLE cg_cancellations ADD COLUMN IF NOT EXISTS due_at DOUBLE PRECISION",
        "ALTER TABLE cg_cancellations ADD COLUMN IF NOT EXISTS work BYTEA",
        "ALTER TABLE cg_cancellations ADD COLUMN IF NOT EXISTS holder TEXT",
        "ALTER TABLE cg_cancellations ADD COLUMN IF NOT EXISTS taken INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX IF NOT EXISTS cg_cancellations_due ON cg_cancellations (due_at)"
        " WHERE due_at IS NOT NULL",
    ],
}
_UPSERT_ENTRY = """INSERT INTO cg_cancellations
    (id, caller, connection, provider, resource, resource_id, status, error_code, attempts,
     created_at, completed_at, envelope, events, due_at, work)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
    ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, error_code = EXCLUDED.error_code,
    attempts = EXCLUDED.attempts, completed_at = EXCLUDED.completed_at,
    envelope = EXCLUDED.envelope, connection = EXCLUDED.connection,
    provider = EXCLUDED.provider, resource = EXCLUDED.resource, events = EXCLUDED.events,
    due_at = EXCLUDED.due_at, work = EXCLUDED.work, holder = NULL, taken = 0"""
# Up to $4 entries whose step is due, earliest first, leased to $2 until $1. Rows another
# transaction has locked (taking or writing them) are skipped, not waited for.
_TAKE_DUE = (
    "UPDATE cg_cancellations SET due_at = $1, holder = $2, taken = taken + 1"  # noqa: S608
    " WHERE id IN"
    " (SELECT id FROM cg_cancellations WHERE due_at IS NOT NULL AND due_at <= $3"
    " ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED)"
    f" RETURNING {ENTRY_COLUMNS}"
)
_KEY_COLUMNS = """caller, key, fingerprint, token, state, lease_until, expires_at,
    cancellation_id, http_status, headers, body"""
_INSERT_KEY = (
    f"INSERT INTO cg_idempotency ({_KEY_COLUMNS})"  # noqa: S608 - constant columns
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    " ON CONFLICT DO NOTHING RETURNING token"
)
_REWRITE_KEY = """UPDATE cg_idempotency SET fingerprint = $3, token = $4, state = $5,
    lease_until = $6, expires_at = $7, cancellation_id = $8, http_status = $9, headers = $10,
    body = $11 WHERE caller = $1 AND key = $2"""


class PostgresStore:
    name = "postgres"

    def __init__(self, dsn: str, timeout_s: float) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        async with self._guard():
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=10, command_timeout=self._timeout_s
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await _migrate(conn)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    async def begin(self, entry: Entry, claim: KeyClaim | None, now: float) -> BeginAnswer:
        async with self._connection() as conn, conn.transaction():
            token = ""
            if claim is not None:
                fresh = decide(None, claim, entry.cancellation_id, now)
                assert isinstance(fresh, KeyRow)
                token = await conn.fetchval(_INSERT_KEY, *key_values(fresh))
                if token is None:  # the key exists: decide under the row lock
                    found = await _key_row(conn, claim)
                    decided = decide(found, claim, entry.cancellation_id, now)
                    if not isinstance(decided, KeyRow):
                        return decided
                    await conn.execute(_REWRITE_KEY, *key_values(decided))
                    token = decided.token
            await conn.execute(_UPSERT_ENTRY, *entry_values(entry))
            return Claimed(token)

    async def complete(
        self,
        entry: Entry,
        claim: KeyClaim | None,
        token: str,
        reply: StoredReply | None,
        now: float,
        holder: str | None = None,
    ) -> bool:
        async with self._connection() as conn, conn.transaction():
            if holder is not None:
                # The row stays locked until the write: a take_due meanwhile skips it.
                current = await conn.fetchrow(
                    "SELECT holder FROM cg_cancellations WHERE id = $1 FOR UPDATE",
                    entry.cancellation_id,
                )
                if current is None or current["holder"] != holder:
                    return False
            await conn.execute(_UPSERT_ENTRY, *entry_values(entry))
            if claim is None:
                return True
            settled = settle(await _key_row(conn, claim), token, reply, claim.ttl_s, now)
            if settled == RELEASE:
                await conn.execute(
                    "DELETE FROM cg_idempotency WHERE caller = $1 AND key = $2",
                    claim.caller,
                    claim.key,
                )
            elif isinstance(settled, KeyRow):
                await conn.execute(_REWRITE_KEY, *key_values(settled))
            return True

    async def take_due(self, holder: str, now: float, lease_s: float, limit: int) -> list[Entry]:
        async with self._connection() as conn:
            rows = await conn.fetch(_TAKE_DUE, now + lease_s, holder, now, max(limit, 0))
        return [Entry(*row) for row in rows]

    async def record(self, entry: Entry) -> None:
        async with self._connection() as conn:
            await conn.execute(_UPSERT_ENTRY, *entry_values(entry))

    async def lookup(self, cancellation_id: str, caller: str) -> Entry | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {ENTRY_COLUMNS} FROM cg_cancellations"  # noqa: S608 - constant columns
                " WHERE id = $1 AND caller = $2",
                cancellation_id,
                caller,
            )
        return None if row is None else Entry(*row)

    async def list_entries(self, query: LedgerQuery) -> list[Entry]:
        where, params = _ledger_filter(query)
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {ENTRY_COLUMNS} FROM cg_cancellations"  # noqa: S608 - constant columns
                f' WHERE {where} ORDER BY id COLLATE "C" DESC LIMIT ${len(params) + 1}',
                *params,
                max(query.limit, 0),
            )
        return [Entry(*row) for row in rows]

    async def pending_summary(self) -> tuple[int, float | None]:
        async with self._connection() as conn:
            row = await conn.fetchrow(PENDING_SUMMARY)
        assert row is not None  # an aggregate always answers one row
        return row[0], row[1]

    async def lease_refresh(
        self, name: str, holder: str, now: float, lease_s: float
    ) -> RefreshLease:
        async with self._connection() as conn, conn.transaction():
            # The row exists before it is locked, so that first leases too wait for each other.
            await conn.execute(
                "INSERT INTO cg_refresh_tokens (name) VALUES ($1) ON CONFLICT DO NOTHING", name
            )
            found = await conn.fetchrow(
                "SELECT value, seed, holder, lease_until FROM cg_refresh_tokens"
                " WHERE name = $1 FOR UPDATE",
                name,
            )
            assert found is not None
            row = None if found["value"] is None else RefreshRow(found["value"], found["seed"])
            if not lease_rule(holder, found["holder"], found["lease_until"], now):
                return RefreshLease(False, row, found["lease_until"])
            await conn.execute(
                "UPDATE cg_refresh_tokens SET holder = $2, lease_until = $3 WHERE name = $1",
                name,
                holder,
                now + lease_s,
            )
            return RefreshLease(True, row, now + lease_s)

    async def save_refresh(self, name: str, holder: str, row: RefreshRow | None) -> bool:
        value, seed = (None, None) if row is None else (row.value, row.seed)
        async with self._connection() as conn:
            # No row given (NULLs): the stored one is kept. Only the holder matches.
            saved = await conn.fetchval(
                "UPDATE cg_refresh_tokens SET value = COALESCE($3, value),"
                " seed = COALESCE($4, seed), holder = NULL, lease_until = 0"
                " WHERE name = $1 AND holder = $2 RETURNING TRUE",
                name,
                holder,
                value,
                seed,
            )
        return saved is True

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        async with self._guard():
            if self._pool is None:  # the first start failed: try again now
                await self.open()
            assert self._pool is not None
            async with self._pool.acquire() as conn:
                yield conn

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._timeout_s):
                yield
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}") from None


async def _migrate(conn: Conn) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS cg_schema (version INTEGER NOT NULL)")
    current = await conn.fetchval("SELECT MAX(version) FROM cg_schema") or 0
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version]:
            await conn.execute(statement)
        await conn.execute("INSERT INTO cg_schema (version) VALUES ($1)", version)


def _ledger_filter(query: LedgerQuery) -> tuple[str, list[Any]]:
    """``LedgerQuery.matches`` as a WHERE clause and its parameters ($1, $2, …); ids compare
    byte by byte (COLLATE "C"), as every other backend orders them."""
    conditions = ledger_conditions(query, id_column='id COLLATE "C"')
    where = ["envelope IS NOT NULL"]
    where += [f"{condition} ${n}" for n, (condition, _) in enumerate(conditions, 1)]
    return " AND ".join(where), [value for _, value in conditions]


async def _key_row(conn: Conn, claim: KeyClaim) -> KeyRow | None:
    row = await conn.fetchrow(
        f"SELECT {_KEY_COLUMNS} FROM cg_idempotency"  # noqa: S608 - constant columns
        " WHERE caller = $1 AND key = $2 FOR UPDATE",
        claim.caller,
        claim.key,
    )
    if row is None:
        return None
    reply = None
    if row["http_status"] is not None:
        headers = orjson.loads(row["headers"])
        reply = StoredReply(row["http_status"], tuple(tuple(h) for h in headers), row["body"])
    return KeyRow(
        claim.caller,
        claim.key,
        row["fingerprint"],
        row["token"],
        KeyState(row["state"]),
        row["lease_until"],
        row["expires_at"],
        row["cancellation_id"],
        reply,
    )
