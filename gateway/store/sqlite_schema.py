"""The SQLite store's schema: each version's statements, applied in order at open."""

from __future__ import annotations

SCHEMA_VERSION = 6
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
    # No query reads ledger rows by caller, and the index made every first write of a
    # cancellation update a second B-tree.
    2: ["DROP INDEX IF EXISTS cg_cancellations_caller"],
    # Rotating refresh tokens, and the lease under which one process at a time spends them.
    3: [
        "CREATE TABLE cg_refresh_tokens (name TEXT PRIMARY KEY, value TEXT, seed TEXT,"
        " holder TEXT, lease_until REAL NOT NULL DEFAULT 0)"
    ],
    # The ledger is listed by caller, newest first: (caller, id) answers that in index order
    # (ids sort by creation time), where (caller, created_at), dropped by 2, needed a sort.
    4: ["CREATE INDEX IF NOT EXISTS cg_cancellations_caller_id ON cg_cancellations (caller, id)"],
    # What happened to each cancellation, for GET /v1/cancellations/{id}/events.
    5: ["ALTER TABLE cg_cancellations ADD COLUMN events BLOB"],
    # A cancellation's next step and its lease (gateway/settling.py): the rows with one are
    # few (pending, running, a webhook to deliver), so the index holds only those.
    6: [
        "ALTER TABLE cg_cancellations ADD COLUMN due_at REAL",
        "ALTER TABLE cg_cancellations ADD COLUMN work BLOB",
        "ALTER TABLE cg_cancellations ADD COLUMN holder TEXT",
        "ALTER TABLE cg_cancellations ADD COLUMN taken INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX IF NOT EXISTS cg_cancellations_due ON cg_cancellations (due_at)"
        " WHERE due_at IS NOT NULL",
    ],
}
