"""Listing the ledger page by page while cancellations keep arriving, on every backend: a walk
that began before them sees each older row exactly once (no duplicate, no gap), and new rows
only ever appear above its first page."""

from __future__ import annotations

import asyncio
import time

from gateway.models import new_cancellation_id
from gateway.store import Entry, LedgerQuery, Store
from tests.store.conftest import StoreFactory

ENVELOPE = b'{"status":"cancelled"}'


def final(n: int) -> Entry:
    return Entry(
        new_cancellation_id(),
        "oms",
        "stateset-main",
        "stateset",
        "asn",
        f"asn_{n}",
        "cancelled",
        time.time(),
        envelope=ENVELOPE,
        completed_at=time.time(),
    )


async def walk(store: Store, limit: int) -> list[str]:
    """Every id, newest first, through the cursor, a page at a time."""
    seen: list[str] = []
    before = None
    while True:
        page = await store.list_entries(LedgerQuery(caller="oms", before=before, limit=limit))
        seen += [e.cancellation_id for e in page]
        if len(page) < limit:
            return seen
        before = page[-1].cancellation_id
        await asyncio.sleep(0)  # let the writers in between pages


async def test_pages_have_no_duplicates_or_gaps_under_concurrent_inserts(
    make_store: StoreFactory,
):
    store = await make_store()
    existing = []
    for n in range(60):
        entry = final(n)
        await store.record(entry)
        existing.append(entry.cancellation_id)
    await asyncio.sleep(0.002)  # ids made from here on sort above every existing one

    async def arriving() -> list[str]:
        made = []
        for n in range(60, 120):
            entry = final(n)
            await store.record(entry)
            made.append(entry.cancellation_id)
            await asyncio.sleep(0)
        return made

    seen, added = await asyncio.gather(walk(store, 7), arriving())
    assert len(seen) == len(set(seen))  # no duplicate
    older = [i for i in seen if i in set(existing)]
    assert older == sorted(existing, reverse=True)  # every older row, once, in order: no gap
    newer = set(seen) - set(existing)
    assert newer <= set(added)
    # A new row is seen only before the first older one (it sorts above every older row).
    first_older = seen.index(max(existing))
    assert all(i not in newer for i in seen[first_older:])
    assert sorted(await walk(store, 50)) == sorted(existing + added)
