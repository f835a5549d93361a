"""Every store backend against its real engine, held to the same contract: atomic claims,
replays, conflicts, release of failed outcomes, leases, TTLs, per-caller scope, the ledger, and
the refresh-token lease."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest

from gateway.config import StoreConfig
from gateway.models import cancellation_id_at
from gateway.store import (
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
    create_store,
    postgres,
    redis,
    sqlite,
)
from tests.services import REDIS_URL, free_port
from tests.store.conftest import SHARED_ENGINES, StoreFactory

NOW = 1_700_000_000.0
REPLY = StoredReply(200, (("Retry-After", "3"),), b'{"status": "cancelled", "x": "\\u00e9"}')
TOKEN = RefreshRow("rt-1", "seed-1")


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


@pytest.mark.parametrize("make_store", SHARED_ENGINES, indirect=True)
async def test_two_stores_on_one_engine_share_claims(make_store: StoreFactory):
    """What two replicas see (the memory store is one process's own: not shared)."""
    one, two = await make_store(), await make_store()
    results = await asyncio.gather(
        *(store.begin(entry(), claim(), NOW) for store in (one, two) * 10)
    )
    assert sum(isinstance(r, Claimed) for r in results) == 1


async def test_a_refresh_lease_refuses_others_until_it_runs_out(make_store: StoreFactory):
    store = await make_store()
    assert await store.lease_refresh("shop", "a", NOW, 30) == RefreshLease(True, None, NOW + 30)
    refused = RefreshLease(False, None, NOW + 30)
    assert await store.lease_refresh("shop", "b", NOW + 29, 30) == refused
    assert await store.lease_refresh("shop", "b", NOW + 30, 30) == RefreshLease(
        True, None, NOW + 60
    )
    # The first holder, late: its token must not replace what the new holder will save.
    assert not await store.save_refresh("shop", "a", RefreshRow("rt-late", "seed-1"))
    assert await store.lease_refresh("shop", "c", NOW + 31, 30) == RefreshLease(
        False, None, NOW + 60
    )


async def test_saving_a_refresh_token_keeps_it_and_releases_the_lease(make_store: StoreFactory):
    store = await make_store()
    assert not await store.save_refresh("shop", "a", TOKEN)  # nobody leased: nothing written
    assert (await store.lease_refresh("shop", "a", NOW, 30)).row is None
    assert await store.save_refresh("shop", "a", TOKEN)
    assert await store.lease_refresh("shop", "b", NOW, 30) == RefreshLease(True, TOKEN, NOW + 30)
    assert not await store.save_refresh("shop", "a", RefreshRow("rt-stale", "seed-1"))
    # That refusal left b's lease and the token as they were.
    assert await store.lease_refresh("shop", "c", NOW, 30) == RefreshLease(False, TOKEN, NOW + 30)
    assert await store.save_refresh("shop", "b", None)  # no new token: released, the old kept
    assert await store.lease_refresh("shop", "c", NOW, 30) == RefreshLease(True, TOKEN, NOW + 30)


@pytest.mark.parametrize("make_store", SHARED_ENGINES, indirect=True)
async def test_replicas_share_one_refresh_lease_and_the_token_outlives_them(
    make_store: StoreFactory,
):
    one, two = await make_store(), await make_store()
    assert (await one.lease_refresh("shop", "a", NOW, 30)).held
    assert await two.lease_refresh("shop", "b", NOW + 1, 30) == RefreshLease(False, None, NOW + 30)
    assert not await two.save_refresh("shop", "b", RefreshRow("rt-b", "seed-1"))
    assert await one.save_refresh("shop", "a", TOKEN)
    assert await two.lease_refresh("shop", "b", NOW + 1, 30) == RefreshLease(True, TOKEN, NOW + 31)
    await one.close()
    await two.close()
    reopened = await make_store()
    # Both the token and the lease held when the replicas stopped.
    assert await reopened.lease_refresh("shop", "c", NOW + 2, 30) == RefreshLease(
        False, TOKEN, NOW + 31
    )
    assert await reopened.lease_refresh("shop", "c", NOW + 31, 30) == RefreshLease(
        True, TOKEN, NOW + 61
    )


async def test_twenty_concurrent_refresh_leases_give_exactly_one(make_store: StoreFactory):
    stores = [await make_store()]
    if stores[0].name != "memory":  # two replicas on one engine
        stores.append(await make_store())
    for now in (NOW, NOW + 30):  # a first lease, then a lease that ran out
        results = await asyncio.gather(
            *(stores[i % len(stores)].lease_refresh("shop", f"h{i}", now, 30) for i in range(20))
        )
        assert sum(result.held for result in results) == 1
        assert {result.until for result in results} == {now + 30}


async def test_refresh_tokens_of_two_names_are_independent_and_kept_whole(
    make_store: StoreFactory,
):
    store = await make_store()
    long = RefreshRow("é—🔑\u2028\"'" + "x" * 994, "0" * 64)
    assert len(long.value) == 1000
    assert (await store.lease_refresh("one", "a", NOW, 30)).held
    assert (await store.lease_refresh("two", "b", NOW, 30)).held
    assert await store.save_refresh("one", "a", long)
    assert await store.lease_refresh("two", "c", NOW, 30) == RefreshLease(False, None, NOW + 30)
    assert await store.save_refresh("two", "b", TOKEN)
    assert (await store.lease_refresh("one", "c", NOW, 30)).row == long
    assert (await store.lease_refresh("two", "c", NOW, 30)).row == TOKEN


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


async def test_a_sqlite_file_of_schema_2_is_migrated_and_leases(tmp_path: Path):
    path = tmp_path / "ledger.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("CREATE TABLE cg_schema (version INTEGER NOT NULL)")
    for version in (1, 2):
        for statement in sqlite.MIGRATIONS[version]:
            old.execute(statement)
        old.execute("INSERT INTO cg_schema (version) VALUES (?)", (version,))
    old.close()
    store = sqlite.SqliteStore(path, 2.0)
    await store.open()
    assert (await store.lease_refresh("shop", "a", NOW, 30)).held
    assert await store.save_refresh("shop", "a", TOKEN)
    assert await store.lease_refresh("shop", "b", NOW, 30) == RefreshLease(True, TOKEN, NOW + 30)
    await store.close()
    check = sqlite3.connect(path)
    versions = [row[0] for row in check.execute("SELECT version FROM cg_schema ORDER BY version")]
    indexes = {row[0] for row in check.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    check.close()
    assert versions == [1, 2, 3, 4, 5, 6]
    assert "cg_cancellations_caller_id" in indexes


async def test_a_postgres_schema_1_is_migrated_and_leases(postgres_dsn: str):
    old = await asyncpg.connect(postgres_dsn)
    await old.execute("CREATE TABLE cg_schema (version INTEGER NOT NULL)")
    for statement in postgres.MIGRATIONS[1]:
        await old.execute(statement)
    await old.execute("INSERT INTO cg_schema (version) VALUES (1)")
    store = postgres.PostgresStore(postgres_dsn, 5)
    await store.open()
    assert (await store.lease_refresh("shop", "a", NOW, 30)).held
    assert await store.save_refresh("shop", "a", TOKEN)
    assert await store.lease_refresh("shop", "b", NOW, 30) == RefreshLease(True, TOKEN, NOW + 30)
    await store.close()
    versions = [row[0] for row in await old.fetch("SELECT version FROM cg_schema ORDER BY 1")]
    indexes = {row[0] for row in await old.fetch("SELECT indexname FROM pg_indexes")}
    await old.close()
    assert versions == [1, 2, 3, 4, 5]
    assert "cg_cancellations_caller_id" in indexes


# The ledger listed: ids in creation order; (caller, connection, resource_id, status, created_at).
# Cancellation ids as the gateway makes them (they sort by the time they were made), made
# now: the Redis index drops ids older than its ledger's rows can be.
LNOW = float(int(time.time()))  # the ledger's rows are made now, a second apart
C = {n: cancellation_id_at(int((LNOW + n - 1) * 1000)) for n in range(1, 10)}
LEDGER = {
    C[1]: ("oms", "conn-a", "r1", "cancelled", LNOW),
    C[2]: ("wms", "conn-a", "r2", "failed", LNOW + 1),
    C[3]: ("oms", "conn-b", "r1", "failed", LNOW + 2),
    C[4]: ("oms", "conn-a", "r3", "cancelled", LNOW + 3),
    C[5]: ("wms", "conn-b", "r1", "cancelled", LNOW + 4),
    C[6]: ("oms", "conn-b", "r2", "cancelled", LNOW + 5),
    C[7]: ("oms", "conn-a", "r1", "rejected", LNOW + 6),
}
FINAL = sorted(LEDGER, reverse=True)


def ledger_row(cancellation_id: str) -> Entry:
    caller, connection, resource_id, status, created_at = LEDGER[cancellation_id]
    return entry(caller, cancellation_id)._replace(
        connection=connection,
        resource_id=resource_id,
        status=status,
        created_at=created_at,
        attempts=1,
        completed_at=created_at + 0.5,
        envelope=b'{"status":"%s"}' % status.encode(),
    )


async def fill_ledger(store: Store) -> None:
    """Every way a row is written (begin then complete, with and without a key, record), and
    a cancellation still running, which no listing shows."""
    for n, cancellation_id in enumerate(LEDGER):
        final = ledger_row(cancellation_id)
        running = final._replace(status="running", attempts=0, completed_at=None, envelope=None)
        if final.status == "rejected":
            await store.record(final)
        elif n % 2:
            key = claim(key=cancellation_id, caller=final.caller)
            begun = await store.begin(running, key, final.created_at)
            assert isinstance(begun, Claimed)
            await store.complete(final, key, begun.token, REPLY, final.created_at)
        else:
            assert await store.begin(running, None, final.created_at) == Claimed("")
            await store.complete(final, None, "", None, final.created_at)
    assert await store.begin(entry("oms", C[8])._replace(created_at=LNOW + 7), None, LNOW + 7)


async def listed(store: Store, **query: object) -> list[str]:
    caller = query.pop("caller", None)
    found = await store.list_entries(LedgerQuery(caller, **query))  # type: ignore[arg-type]
    return [e.cancellation_id for e in found]


async def test_the_ledger_lists_final_rows_newest_first_each_caller_its_own(
    make_store: StoreFactory,
):
    store = await make_store()
    await fill_ledger(store)
    assert await store.list_entries(LedgerQuery("oms")) == [
        ledger_row(i) for i in (C[7], C[6], C[4], C[3], C[1])
    ]
    assert await listed(store, caller="wms") == [C[5], C[2]]
    assert await listed(store) == FINAL  # every caller's; never the running cxl_08
    assert await listed(store, caller="nobody") == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"caller": "oms", "connection": "conn-a"}, [C[7], C[4], C[1]]),
        ({"resource_id": "r1"}, [C[7], C[5], C[3], C[1]]),
        ({"status": "failed"}, [C[3], C[2]]),
        ({"since": LNOW + 2}, [C[7], C[6], C[5], C[4], C[3]]),
        ({"until": LNOW + 2}, [C[2], C[1]]),
        ({"since": LNOW + 2, "until": LNOW + 5}, [C[5], C[4], C[3]]),
        ({"until": LNOW}, []),
        ({"since": LNOW + 6}, [C[7]]),
        ({"before": C[5]}, [C[4], C[3], C[2], C[1]]),
        ({"before": C[1]}, []),
        ({"limit": 3}, [C[7], C[6], C[5]]),
        ({"limit": 0}, []),
        ({"caller": "oms", "connection": "conn-b", "status": "cancelled"}, [C[6]]),
        ({"caller": "oms", "resource_id": "r1", "since": LNOW + 1}, [C[7], C[3]]),
        ({"connection": "conn-a", "until": LNOW + 6, "before": C[4], "limit": 1}, [C[2]]),
        ({"caller": "wms", "status": "rejected"}, []),
    ],
)
async def test_the_ledger_filters_alone_and_combined(
    make_store: StoreFactory, query: dict[str, object], expected: list[str]
):
    store = await make_store()
    await fill_ledger(store)
    assert await listed(store, **query) == expected
    # The same rule as ``LedgerQuery.matches``.
    rule = LedgerQuery(**{"caller": None, **query})  # type: ignore[arg-type]
    assert [i for i in FINAL if rule.matches(ledger_row(i))][: rule.limit] == expected


async def test_paging_with_the_last_id_walks_every_final_row_once(make_store: StoreFactory):
    store = await make_store()
    await fill_ledger(store)
    for caller, everything in (
        (None, FINAL),
        ("oms", [C[7], C[6], C[4], C[3], C[1]]),
    ):
        pages: list[list[str]] = []
        before = None
        while page := await listed(store, caller=caller, before=before, limit=2):
            pages.append(page)
            before = page[-1]
        assert [i for page in pages for i in page] == everything
        assert [len(page) for page in pages[:-1]] == [2] * (len(pages) - 1)


async def test_a_row_added_while_paging_shows_on_a_new_listing_only(make_store: StoreFactory):
    store = await make_store()
    await fill_ledger(store)
    seen = await listed(store, limit=2)
    assert seen == [C[7], C[6]]
    newer = ledger_row(C[7])._replace(cancellation_id=C[9], created_at=LNOW + 9)
    await store.record(newer)
    while page := await listed(store, before=seen[-1], limit=2):
        seen += page
    assert seen == FINAL
    assert await listed(store, limit=2) == [C[9], C[7]]


async def test_redis_forgets_the_ids_of_expired_ledger_rows(redis_prefix: str):
    store = redis.RedisStore(REDIS_URL, redis_prefix, 5, ledger_ttl_s=0.2)
    await store.open()
    one = _id_now(0)
    await store.record(ledger_row(C[1])._replace(cancellation_id=one))
    await asyncio.sleep(0.3)
    two, three = _id_now(0), _id_now(1)  # made after the first row expired
    await store.record(ledger_row(C[2])._replace(cancellation_id=two))
    await store.record(ledger_row(C[3])._replace(cancellation_id=three))
    assert await listed(store) == [three, two]
    # Writing drops the ids older than the ledger's rows can be.
    index = await store._client.zrange(redis_prefix + "ledger", 0, -1)
    assert index == [two.encode(), three.encode()]
    await asyncio.sleep(0.3)
    assert await listed(store) == []
    await store.close()


async def test_a_listing_drops_the_expired_ids_it_meets(redis_prefix: str):
    """Ids whose rows expired are dropped from the index by the listing that meets them."""
    store = redis.RedisStore(REDIS_URL, redis_prefix, 5, ledger_ttl_s=0.2)
    await store.open()
    await store.record(ledger_row(C[1])._replace(cancellation_id=_id_now(0)))
    await asyncio.sleep(0.3)
    assert await listed(store) == []
    assert await store._client.zrange(redis_prefix + "ledger", 0, -1) == []
    await store.close()


def _id_now(offset_ms: int) -> str:
    """A cancellation id of now (plus ``offset_ms``), as the gateway makes them."""
    return cancellation_id_at(int(time.time() * 1000) + offset_ms)


async def test_a_redis_listing_reads_a_bounded_number_of_ids(redis_prefix: str):
    """A filter that matches nothing recent stops the walk, answering what it found."""
    store = redis.RedisStore(REDIS_URL, redis_prefix, 5, ledger_ttl_s=60)
    await store.open()
    first = _id_now(0)
    await store.record(ledger_row(C[1])._replace(cancellation_id=first))
    for n in range(1, 1 + redis._LIST_SCAN):
        await store.record(ledger_row(C[2])._replace(cancellation_id=_id_now(n)))
    # Fifty failed rows are newer than the one cancelled: beyond the bound of a listing of one.
    assert await listed(store, status="cancelled", limit=1) == []
    assert await listed(store, status="cancelled", limit=2) == [first]
    assert await listed(store, caller="oms", limit=1) == [first]  # the caller's own set
    await store.close()


async def test_a_cancellations_events_are_kept_with_its_row(make_store: StoreFactory):
    """Written at the start (received) and at the end (every event), read back whole."""
    store = await make_store()
    started = entry()._replace(events=b'[{"type":"received"}]')
    assert await store.begin(started, None, NOW) == Claimed("")
    found = await store.lookup(started.cancellation_id, "oms")
    assert found is not None
    assert found.events == b'[{"type":"received"}]'
    events = b'[{"type":"received"},{"type":"attempt","status":200},{"type":"settled"}]'
    final = started._replace(status="cancelled", envelope=b"{}", events=events)
    await store.complete(final, None, "", None, NOW)
    assert await store.lookup(started.cancellation_id, "oms") == final
