"""Every store backend against its real engine, held to the same contract: atomic claims,
replays, conflicts, release of failed outcomes, leases, TTLs, per-caller scope and the ledger."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.config import StoreConfig
from gateway.store import (
    Claimed,
    Conflict,
    Entry,
    InProgress,
    KeyClaim,
    Replay,
    Store,
    StoredReply,
    StoreUnavailable,
    create_store,
)
from tests.services import REDIS_URL, free_port

BACKENDS = ["memory", "sqlite", "redis", "postgres"]
NOW = 1_700_000_000.0
REPLY = StoredReply(200, (("Retry-After", "3"),), b'{"status": "cancelled", "x": "\\u00e9"}')

StoreFactory = Callable[..., Awaitable[Store]]


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens stores of one backend on its real engine (a fresh namespace per test)."""
    backend: str = request.param
    settings: dict[str, object] = {"backend": backend, "timeout_s": 5}
    if backend == "redis":
        settings |= {"url": REDIS_URL, "prefix": request.getfixturevalue("redis_prefix")}
    if backend == "postgres":
        settings["dsn"] = request.getfixturevalue("postgres_dsn")
    opened: list[Store] = []

    async def factory() -> Store:
        store = create_store(StoreConfig.model_validate(settings), tmp_path)
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


def entry(caller: str = "oms", cancellation_id: str | None = None, **more: object) -> Entry:
    return Entry(
        cancellation_id or "cxl_" + secrets.token_hex(13),
        caller,
        "stateset-main",
        "stateset",
        "asn",
        "asn_1",
        str(more.pop("status", "running")),
        NOW,
        **more,  # type: ignore[arg-type]
    )


def claim(key: str = "k-1", fingerprint: str = "f-1", caller: str = "oms") -> KeyClaim:
    return KeyClaim(caller, key, fingerprint, lease_s=30, ttl_s=3600)


async def test_without_a_key_the_cancellation_is_only_recorded(make_store: StoreFactory):
    store = await make_store()
    running = entry()
    assert await store.begin(running, None, NOW) == Claimed("")
    found = await store.lookup(running.cancellation_id, "oms")
    assert found is not None
    assert (found.status, found.envelope) == ("running", None)
    done = entry(
        cancellation_id=running.cancellation_id,
        status="cancelled",
        attempts=2,
        completed_at=NOW + 1,
        envelope=b'{"status":"cancelled"}',
    )
    await store.complete(done, None, "", None, NOW + 1)
    assert await store.lookup(running.cancellation_id, "oms") == done
    assert await store.lookup(running.cancellation_id, "someone-else") is None
    assert await store.lookup("cxl_unknown", "oms") is None


async def test_record_keeps_what_never_began(make_store: StoreFactory):
    store = await make_store()
    refused = entry(status="rejected", error_code="invalid_request", envelope=b"{}")
    await store.record(refused)
    assert await store.lookup(refused.cancellation_id, "oms") == refused


async def test_a_final_answer_is_replayed_byte_for_byte(make_store: StoreFactory):
    store = await make_store()
    first = entry()
    begun = await store.begin(first, claim(), NOW)
    assert isinstance(begun, Claimed)
    assert begun.token
    await store.complete(first, claim(), begun.token, REPLY, NOW + 1)
    again = await store.begin(entry(), claim(), NOW + 2)
    assert again == Replay(REPLY, first.cancellation_id)


async def test_a_running_claim_answers_in_progress_with_its_remaining_lease(
    make_store: StoreFactory,
):
    store = await make_store()
    assert isinstance(await store.begin(entry(), claim(), NOW), Claimed)
    second = await store.begin(entry(), claim(), NOW + 10)
    assert isinstance(second, InProgress)
    assert second.retry_after_s == pytest.approx(20)


async def test_the_same_key_with_another_request_is_a_conflict(make_store: StoreFactory):
    store = await make_store()
    first = entry()
    begun = await store.begin(first, claim(), NOW)
    assert isinstance(begun, Claimed)
    assert await store.begin(entry(), claim(fingerprint="f-2"), NOW + 1) == Conflict()
    await store.complete(first, claim(), begun.token, REPLY, NOW + 1)
    assert await store.begin(entry(), claim(fingerprint="f-2"), NOW + 2) == Conflict()


async def test_a_failed_outcome_releases_the_key(make_store: StoreFactory):
    store = await make_store()
    first = entry()
    begun = await store.begin(first, claim(), NOW)
    assert isinstance(begun, Claimed)
    await store.complete(first, claim(), begun.token, None, NOW + 1)
    assert isinstance(await store.begin(entry(), claim(), NOW + 2), Claimed)


async def test_keys_are_scoped_to_the_caller(make_store: StoreFactory):
    store = await make_store()
    assert isinstance(await store.begin(entry(), claim(caller="oms"), NOW), Claimed)
    assert isinstance(await store.begin(entry("wms"), claim(caller="wms"), NOW), Claimed)


async def test_keys_expire_after_their_ttl(make_store: StoreFactory):
    store = await make_store()
    first = entry()
    begun = await store.begin(first, claim(), NOW)
    assert isinstance(begun, Claimed)
    await store.complete(first, claim(), begun.token, REPLY, NOW)
    assert isinstance(await store.begin(entry(), claim(), NOW + 3599), Replay)
    assert isinstance(await store.begin(entry(), claim(), NOW + 3601), Claimed)


async def test_an_expired_lease_is_taken_over_and_its_old_holder_cannot_finish(
    make_store: StoreFactory,
):
    store = await make_store()
    crashed = entry()
    old = await store.begin(crashed, claim(), NOW)
    assert isinstance(old, Claimed)
    retry = entry()
    new = await store.begin(retry, claim(), NOW + 31)
    assert isinstance(new, Claimed)
    assert new.token != old.token
    # The first holder wakes up late: its answer must not replace the new holder's claim.
    await store.complete(crashed, claim(), old.token, REPLY, NOW + 32)
    assert isinstance(await store.begin(entry(), claim(), NOW + 33), InProgress)
    other = StoredReply(200, (), b"{}")
    await store.complete(retry, claim(), new.token, other, NOW + 34)
    assert await store.begin(entry(), claim(), NOW + 35) == Replay(other, retry.cancellation_id)


async def test_twenty_concurrent_claims_of_one_key_give_exactly_one(make_store: StoreFactory):
    store = await make_store()
    results = await asyncio.gather(*(store.begin(entry(), claim(), NOW) for _ in range(20)))
    claimed = [r for r in results if isinstance(r, Claimed)]
    assert len(claimed) == 1
    assert all(isinstance(r, InProgress) for r in results if not isinstance(r, Claimed))


@pytest.mark.parametrize("make_store", ["sqlite", "redis", "postgres"], indirect=True)
async def test_two_stores_on_one_engine_share_claims(make_store: StoreFactory):
    """What two replicas see (the memory store is one process's own: not shared)."""
    one, two = await make_store(), await make_store()
    results = await asyncio.gather(
        *(store.begin(entry(), claim(), NOW) for store in (one, two) * 10)
    )
    assert sum(isinstance(r, Claimed) for r in results) == 1


async def test_ping_answers(make_store: StoreFactory):
    store = await make_store()
    await store.ping()


async def test_sqlite_keeps_everything_across_a_restart(tmp_path: Path):
    config = StoreConfig(backend="sqlite", path="ledger.db")
    store = create_store(config, tmp_path)
    await store.open()
    first = entry()
    begun = await store.begin(first, claim(), NOW)
    assert isinstance(begun, Claimed)
    await store.complete(first, claim(), begun.token, REPLY, NOW)
    await store.close()
    reopened = create_store(config, tmp_path)
    await reopened.open()  # the schema is there: migrating again changes nothing
    assert await reopened.begin(entry(), claim(), NOW + 1) == Replay(REPLY, first.cancellation_id)
    await reopened.close()


@pytest.mark.parametrize(
    "settings",
    [
        {"backend": "redis", "url": "redis://127.0.0.1:{port}/0"},
        {"backend": "postgres", "dsn": "postgresql://postgres@127.0.0.1:{port}/test"},
    ],
    ids=["redis", "postgres"],
)
@pytest.mark.socket
async def test_an_unreachable_server_is_store_unavailable(settings: dict[str, str], tmp_path: Path):
    port = free_port()  # nothing listens there
    values = {k: v.format(port=port) for k, v in settings.items()}
    store = create_store(StoreConfig.model_validate({**values, "timeout_s": 1}), tmp_path)
    with pytest.raises(StoreUnavailable):
        await store.open()
    with pytest.raises(StoreUnavailable):
        await store.begin(entry(), claim(), NOW)
    with pytest.raises(StoreUnavailable):
        await store.ping()
    await store.close()


async def test_an_unwritable_sqlite_file_is_store_unavailable(tmp_path: Path):
    (tmp_path / "file").write_text("not a folder")
    store = create_store(StoreConfig(backend="sqlite", path="file/ledger.db"), tmp_path)
    with pytest.raises(StoreUnavailable):
        await store.open()
    with pytest.raises(StoreUnavailable):
        await store.begin(entry(), None, NOW)
    await store.close()
