"""Idempotency keys and the cancellation ledger, behind one small interface (``Store``).

Backends: ``memory`` (tests, the demo), ``sqlite`` (the embedded default), ``redis`` and
``postgres`` (several replicas sharing state). Drivers are imported only when their backend is
chosen, so the default install needs neither Redis nor PostgreSQL client libraries.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import StoreConfig
from gateway.store.base import (
    BeginAnswer,
    Claimed,
    Conflict,
    Entry,
    InProgress,
    KeyClaim,
    LedgerQuery,
    RefreshLease,
    RefreshRow,
    Replay,
    Store,
    StoredReply,
    StoreUnavailable,
)

__all__ = [
    "BeginAnswer",
    "Claimed",
    "Conflict",
    "Entry",
    "InProgress",
    "KeyClaim",
    "LedgerQuery",
    "RefreshLease",
    "RefreshRow",
    "Replay",
    "Store",
    "StoreUnavailable",
    "StoredReply",
    "create_store",
]


def create_store(config: StoreConfig, base: Path) -> Store:
    """The configured backend, not yet opened; ``base`` is the config file's folder."""
    if config.backend == "memory":
        from gateway.store.memory import MemoryStore

        return MemoryStore()
    if config.backend == "sqlite":
        from gateway.store.sqlite import SqliteStore

        return SqliteStore(base / config.path, config.timeout_s)
    if config.backend == "redis":
        from gateway.store.redis import RedisStore

        assert config.url is not None
        return RedisStore(
            config.url.get_secret_value(), config.prefix, config.timeout_s, config.ledger_ttl_s
        )
    from gateway.store.postgres import PostgresStore

    assert config.dsn is not None
    return PostgresStore(config.dsn.get_secret_value(), config.timeout_s)
