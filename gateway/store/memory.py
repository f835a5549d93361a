"""An in-process store: for tests and the demo. Nothing survives the process."""

from __future__ import annotations

from gateway.store.base import (
    PENDING,
    RELEASE,
    BeginAnswer,
    Claimed,
    Entry,
    KeyClaim,
    KeyRow,
    LedgerQuery,
    RefreshLease,
    RefreshRow,
    StoredReply,
    decide,
    lease_rule,
    settle,
)


class MemoryStore:
    name = "memory"

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], KeyRow] = {}
        self._ledger: dict[str, Entry] = {}
        self._refresh: dict[str, RefreshRow] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._holders: dict[str, str] = {}  # cancellation id → who leased its due step

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def begin(self, entry: Entry, claim: KeyClaim | None, now: float) -> BeginAnswer:
        # No await between reading and writing: atomic on one event loop.
        token = ""
        if claim is not None:
            found = self._keys.get((claim.caller, claim.key))
            decided = decide(found, claim, entry.cancellation_id, now)
            if not isinstance(decided, KeyRow):
                return decided
            self._keys[(claim.caller, claim.key)] = decided
            token = decided.token
        self._write(entry)
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
        if holder is not None and self._holders.get(entry.cancellation_id) != holder:
            return False
        self._write(entry)
        if claim is None:
            return True
        settled = settle(self._keys.get((claim.caller, claim.key)), token, reply, claim.ttl_s, now)
        if settled == RELEASE:
            del self._keys[(claim.caller, claim.key)]
        elif isinstance(settled, KeyRow):
            self._keys[(claim.caller, claim.key)] = settled
        return True

    async def take_due(self, holder: str, now: float, lease_s: float, limit: int) -> list[Entry]:
        due = sorted(
            (e for e in self._ledger.values() if e.due_at is not None and e.due_at <= now),
            key=lambda e: e.due_at or 0.0,
        )[: max(limit, 0)]
        taken = [e._replace(due_at=now + lease_s, taken=e.taken + 1) for e in due]
        for entry in taken:
            self._ledger[entry.cancellation_id] = entry
            self._holders[entry.cancellation_id] = holder
        return taken

    async def pending_summary(self) -> tuple[int, float | None]:
        made = [e.created_at for e in self._ledger.values() if e.status == PENDING]
        return len(made), min(made, default=None)

    async def record(self, entry: Entry) -> None:
        self._write(entry)

    def _write(self, entry: Entry) -> None:
        """A write of the row ends any lease on its step (the step written replaces it)."""
        self._ledger[entry.cancellation_id] = entry._replace(taken=0)
        self._holders.pop(entry.cancellation_id, None)

    async def lookup(self, cancellation_id: str, caller: str) -> Entry | None:
        entry = self._ledger.get(cancellation_id)
        return entry if entry is not None and entry.caller == caller else None

    async def lease_refresh(
        self, name: str, holder: str, now: float, lease_s: float
    ) -> RefreshLease:
        current, until = self._leases.get(name, (None, 0.0))
        if not lease_rule(holder, current, until, now):
            return RefreshLease(False, self._refresh.get(name), until)
        self._leases[name] = (holder, now + lease_s)
        return RefreshLease(True, self._refresh.get(name), now + lease_s)

    async def save_refresh(self, name: str, holder: str, row: RefreshRow | None) -> bool:
        current, _ = self._leases.get(name, (None, 0.0))
        if current != holder:
            return False
        del self._leases[name]
        if row is not None:
            self._refresh[name] = row
        return True

    async def list_entries(self, query: LedgerQuery) -> list[Entry]:
        found = (entry for entry in self._ledger.values() if query.matches(entry))
        return sorted(found, key=lambda entry: entry.cancellation_id, reverse=True)[: query.limit]
