"""Several replicas sharing one Redis (redis-py's asyncio client).

A claim is an optimistic transaction: ``WATCH`` the key, read it, apply ``decide``, and write
it in ``MULTI``/``EXEC``; if another replica wrote the key in between, ``EXEC`` fails and the
claim is read again. Keys and ledger rows carry Redis expiries, so nothing needs cleaning up.
A refresh token's hash has none: it is the only copy of a token the provider has rotated.

The ledger is listed through sorted sets of cancellation ids (one for all, one per caller), all
scored 0 so that they sort by id, that is by creation time. A set is kept as long as its newest
row; the ids of rows expired before it are dropped as listings meet them.

Steps due (``take_due``) are queued in a sorted set of cancellation ids scored by when each is
due, and the holder of each leased step kept in a key of its own; a Lua script takes steps and
leases them in one go, so two replicas never take the same one. A holder's write is a
transaction that watches its holder key: it lands only while the lease is still its own, in one
piece with the row. Neither has an expiry: a step must outlive any quiet spell, and the id of
a row expired meanwhile is dropped when it comes due.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError, WatchError

from gateway.models import cancellation_id_at
from gateway.store.base import (
    NOT_OURS,
    PENDING,
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
    lease_rule,
    settle,
)

T = TypeVar("T")
_MAX_RACES = 50  # a claim read again this often has met an implausible storm of writers
# A listing reads ids in pages of this many times its limit, and gives up (answering what it
# found, maybe fewer than the limit) after this many times its limit: filters other than the
# caller are applied to the rows read, so a rare match in a long ledger is not searched for ever.
_LIST_PAGE = 4
_LIST_SCAN = 50

# KEYS: the due set, the taken counts; ARGV: now, limit, the lease's end, the holder, the
# holder keys' prefix. The steps due, earliest first, each moved to the lease's end, marked as
# the holder's and counted: id, count, id, count, ...
_TAKE_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local taken = {}
for _, id in ipairs(ids) do
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    redis.call('SET', ARGV[5] .. id, ARGV[4])
    table.insert(taken, id)
    table.insert(taken, redis.call('HINCRBY', KEYS[2], id, 1))
end
return taken
"""


# KEYS: the limit's key; ARGV: seconds per request, burst, the longest wait. GCRA: the key holds
# the theoretical arrival time of the next request (seconds, Redis's own clock, so every
# replica reads one time). A request may go once TAT - burst * interval has passed; one that
# would wait longer than the longest wait takes nothing. Answers {granted, wait}.
_RESERVE_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
local wait = tat + interval - burst * interval - now
if wait < 0 then wait = 0 end
if wait > tonumber(ARGV[3]) then return {0, tostring(wait)} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.ceil((next_tat - now) * 1000) + 1000)
return {1, tostring(wait)}
"""


class RedisStore:
    name = "redis"

    def __init__(self, url: str, prefix: str, timeout_s: float, ledger_ttl_s: float) -> None:
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._ledger_ttl_ms = int(ledger_ttl_s * 1000)
        self._take_due = self._client.register_script(_TAKE_DUE)
        self._reserve_rate = self._client.register_script(_RESERVE_RATE)

    async def open(self) -> None:
        await self.ping()

    async def close(self) -> None:
        await self._client.aclose()

    async def ping(self) -> None:
        async with self._guard():
            await self._client.ping()

    async def begin(self, entry: Entry, claim: KeyClaim | None, now: float) -> BeginAnswer:
        async with self._guard():
            if claim is None:
                await self._write_entry(self._client, entry, new=True)
                return Claimed("")
            key = self._key_name(claim)

            async def attempt(pipe: Any) -> BeginAnswer:
                found = _key_row(claim, await pipe.hgetall(key))
                decided = decide(found, claim, entry.cancellation_id, now)
                if not isinstance(decided, KeyRow):
                    await pipe.unwatch()
                    return decided
                pipe.multi()
                _write_key(pipe, key, decided, now)
                await self._write_entry(pipe, entry, new=True)
                await pipe.execute()
                return Claimed(decided.token)

            return await self._watching([key], attempt)

    async def complete(
        self,
        entry: Entry,
        claim: KeyClaim | None,
        token: str,
        reply: StoredReply | None,
        now: float,
        holder: str | None = None,
    ) -> bool:
        async with self._guard():
            if holder is not None:
                return await self._write_held(entry, holder, claim, token, reply, now)
            await self._write_entry(self._client, entry, indexed=True)
            if claim is None:
                return True
            key = self._key_name(claim)

            async def attempt(pipe: Any) -> None:
                found = _key_row(claim, await pipe.hgetall(key))
                settled = settle(found, token, reply, claim.ttl_s, now)
                if settled == NOT_OURS:
                    await pipe.unwatch()
                    return
                pipe.multi()
                _queue_settled(pipe, key, settled, now)
                await pipe.execute()

            await self._watching([key], attempt)
            return True

    async def take_due(self, holder: str, now: float, lease_s: float, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        until = now + lease_s
        async with self._guard():
            answered = cast(
                list[Any],
                await self._take_due(
                    keys=[self._due_name(), self._taken_name()],
                    args=[repr(now), limit, repr(until), holder, self._holder_name("")],
                ),
            )
            if not answered:
                return []
            ids: list[bytes] = answered[0::2]
            counts = dict(zip(ids, answered[1::2], strict=True))
            rows = await self._client.mget([self._entry_name(i.decode()) for i in ids])
            expired = [i for i, raw in zip(ids, rows, strict=True) if raw is None]
            if expired:  # rows the ledger forgot: their steps go with them
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.zrem(self._due_name(), *expired)
                    pipe.zrem(self._pending_name(), *expired)
                    pipe.hdel(self._taken_name(), *expired)
                    pipe.delete(*(self._holder_name(i.decode()) for i in expired))
                    await pipe.execute()
        return [
            _entry(raw)._replace(due_at=until, taken=int(counts[i]))
            for i, raw in zip(ids, rows, strict=True)
            if raw is not None
        ]

    async def record(self, entry: Entry) -> None:
        async with self._guard():
            await self._write_entry(self._client, entry)

    async def lookup(self, cancellation_id: str, caller: str) -> Entry | None:
        async with self._guard():
            raw = await self._client.get(self._entry_name(cancellation_id))
            if raw is None:
                return None
            entry = _entry(raw)
            if entry.caller != caller:
                return None
            return (await self._leased([entry]))[0]

    async def list_entries(self, query: LedgerQuery) -> list[Entry]:
        index = self._index_name(query.caller)
        page = max(query.limit, 0) * _LIST_PAGE
        budget = max(query.limit, 0) * _LIST_SCAN
        # Walked down from below the cursor by moving the (exclusive) bound, not by offset: ids
        # added or dropped meanwhile shift nothing.
        upper = b"+" if query.before is None else b"(" + query.before.encode()
        lower = b"-"
        # A time range bounds the ids walked (ids sort by the time they were made: a second
        # of margin each side for a creation time taken a moment apart from the id's).
        if query.until is not None:
            until = b"(" + cancellation_id_at(int((query.until + 1) * 1000)).encode()
            upper = min(upper, until) if query.before is not None else until
        if query.since is not None:
            lower = b"[" + cancellation_id_at(int((query.since - 1) * 1000)).encode()
        found: list[Entry] = []
        async with self._guard():
            while len(found) < query.limit and budget > 0:
                # The client answers bytes (it does not decode responses).
                ids = cast(
                    list[bytes],
                    await self._client.zrevrangebylex(
                        index, upper, lower, start=0, num=min(page, budget)
                    ),
                )
                if not ids:
                    break
                budget -= len(ids)
                upper = b"(" + ids[-1]
                rows = await self._client.mget([self._entry_name(i.decode()) for i in ids])
                expired = [i for i, raw in zip(ids, rows, strict=True) if raw is None]
                if expired:
                    await self._client.zrem(index, *expired)
                entries = (_entry(raw) for raw in rows if raw is not None)
                found.extend(await self._leased([e for e in entries if query.matches(e)]))
        return found[: query.limit]

    async def pending_summary(self) -> tuple[int, float | None]:
        async with self._guard(), self._client.pipeline(transaction=False) as pipe:
            pipe.zcard(self._pending_name())
            pipe.zrange(self._pending_name(), 0, 0, withscores=True)
            count, oldest = await pipe.execute()
        return count, oldest[0][1] if oldest else None

    async def reserve_rate(
        self, name: str, rate_per_s: float, burst: int, max_wait_s: float
    ) -> tuple[bool, float]:
        """A connection's rate limit shared by every process on this Redis (GCRA): (granted,
        wait), as a process's own token bucket answers."""
        async with self._guard():
            granted, wait = await self._reserve_rate(
                keys=[f"{self._prefix}rate:{name}"],
                args=[repr(1.0 / rate_per_s), burst, repr(max(max_wait_s, 0.0))],
            )
        return granted == 1, float(wait)

    async def lease_refresh(
        self, name: str, holder: str, now: float, lease_s: float
    ) -> RefreshLease:
        key = self._refresh_name(name)

        async def attempt(pipe: Any) -> RefreshLease:
            found = {k.decode(): v.decode() for k, v in (await pipe.hgetall(key)).items()}
            row = RefreshRow(found["value"], found["seed"]) if "value" in found else None
            until = float(found.get("lease_until", 0.0))
            if not lease_rule(holder, found.get("holder"), until, now):
                await pipe.unwatch()
                return RefreshLease(False, row, until)
            pipe.multi()
            pipe.hset(key, mapping={"holder": holder, "lease_until": repr(now + lease_s)})
            await pipe.execute()
            return RefreshLease(True, row, now + lease_s)

        async with self._guard():
            return await self._watching([key], attempt)

    async def save_refresh(self, name: str, holder: str, row: RefreshRow | None) -> bool:
        key = self._refresh_name(name)

        async def attempt(pipe: Any) -> bool:
            current = await pipe.hget(key, "holder")
            if current is None or current.decode() != holder:
                await pipe.unwatch()
                return False
            pipe.multi()
            if row is not None:
                pipe.hset(key, mapping={"value": row.value, "seed": row.seed})
            pipe.hdel(key, "holder", "lease_until")
            await pipe.execute()
            return True

        async with self._guard():
            return await self._watching([key], attempt)

    # --- helpers ------------------------------------------------------------------------------

    def _key_name(self, claim: KeyClaim) -> str:
        # Hashed: callers' keys may hold any printable characters, and their length is theirs.
        digest = hashlib.sha256(f"{claim.caller}\n{claim.key}".encode()).hexdigest()
        return f"{self._prefix}idem:{digest}"

    def _refresh_name(self, name: str) -> str:
        return f"{self._prefix}refresh:{name}"  # a connection's name, from the config

    def _entry_name(self, cancellation_id: str) -> str:
        return f"{self._prefix}cxl:{cancellation_id}"

    def _due_name(self) -> str:
        """The sorted set of cancellation ids with a step, scored by when it is due."""
        return f"{self._prefix}due"

    def _taken_name(self) -> str:
        """The hash of how often each step was taken since its row was written."""
        return f"{self._prefix}taken"

    def _pending_name(self) -> str:
        """The sorted set of pending cancellations' ids, scored by when each was made."""
        return f"{self._prefix}pending"

    def _holder_name(self, cancellation_id: str) -> str:
        """Who holds the lease on a cancellation's step, while one does."""
        return f"{self._prefix}holder:{cancellation_id}"

    async def _write_held(
        self,
        entry: Entry,
        holder: str,
        claim: KeyClaim | None,
        token: str,
        reply: StoredReply | None,
        now: float,
    ) -> bool:
        """Write ``entry`` (and settle its key) only while ``holder`` holds its step's lease,
        in one transaction: it fails if the lease changes hands, or the key changes, between
        the check and the write."""
        held = self._holder_name(entry.cancellation_id)
        key = self._key_name(claim) if claim is not None else None

        async def attempt(pipe: Any) -> bool:
            current = await pipe.get(held)
            if current is None or current.decode() != holder:
                await pipe.unwatch()
                return False
            settled: KeyRow | str = NOT_OURS
            if claim is not None and key is not None:
                found = _key_row(claim, await pipe.hgetall(key))
                settled = settle(found, token, reply, claim.ttl_s, now)
            pipe.multi()
            self._queue_entry(pipe, entry, indexed=True)
            if key is not None and settled != NOT_OURS:
                _queue_settled(pipe, key, settled, now)
            await pipe.execute()
            return True

        return await self._watching([held] if key is None else [held, key], attempt)

    async def _leased(self, entries: list[Entry]) -> list[Entry]:
        """``entries`` with their steps' due times and taken counts as the due set and the
        taken hash hold them. A row keeps what it was written with; a lease (``take_due``)
        changes only those, so that taking a step rewrites no row another replica may be
        writing."""
        queued = [e for e in entries if e.due_at is not None]
        if not queued:
            return entries
        async with self._client.pipeline(transaction=False) as pipe:
            for e in queued:
                pipe.zscore(self._due_name(), e.cancellation_id)
                pipe.hget(self._taken_name(), e.cancellation_id)
            found = await pipe.execute()
        leases = {
            e.cancellation_id: (score, int(taken or 0))
            for e, score, taken in zip(queued, found[0::2], found[1::2], strict=True)
        }
        return [
            e._replace(due_at=leases[e.cancellation_id][0], taken=leases[e.cancellation_id][1])
            if e.cancellation_id in leases
            else e
            for e in entries
        ]

    def _index_name(self, caller: str | None) -> str:
        """The sorted set of a caller's cancellation ids, or of everyone's."""
        return f"{self._prefix}ledger" if caller is None else f"{self._prefix}ledger:{caller}"

    async def _write_entry(
        self, target: Any, entry: Entry, *, new: bool = False, indexed: bool = False
    ) -> None:
        """Write a ledger row and index it, in ``target``'s transaction, or in one of its own
        when ``target`` is the client (one round trip)."""
        if target is self._client:
            async with self._client.pipeline(transaction=True) as pipe:
                self._queue_entry(pipe, entry, new=new, indexed=indexed)
                await pipe.execute()
        else:
            self._queue_entry(target, entry, new=new, indexed=indexed)

    def _queue_entry(
        self, pipe: Any, entry: Entry, *, new: bool = False, indexed: bool = False
    ) -> None:
        """The commands that write ``entry``. A ``new`` row (``begin``) has no lease, count or
        pending mark to clear; an ``indexed`` one (``complete``: ``begin`` wrote it) is in the
        ledger's indexes already. Each command left out is one less on the path every
        cancellation takes."""
        data = {
            "cancellation_id": entry.cancellation_id,
            "caller": entry.caller,
            "connection": entry.connection,
            "provider": entry.provider,
            "resource": entry.resource,
            "resource_id": entry.resource_id,
            "status": entry.status,
            "created_at": entry.created_at,
            "error_code": entry.error_code,
            "attempts": entry.attempts,
            "completed_at": entry.completed_at,
            "envelope": entry.envelope.hex() if entry.envelope is not None else None,
            "events": entry.events.hex() if entry.events is not None else None,
            "due_at": entry.due_at,
            "work": entry.work.hex() if entry.work is not None else None,
        }
        pipe.set(
            self._entry_name(entry.cancellation_id), orjson.dumps(data), px=self._ledger_ttl_ms
        )
        # The row's step replaces any it had: queued (or not) as written, and any lease on the
        # old one ended, so its holder can no longer write over this row.
        if entry.due_at is not None:
            pipe.zadd(self._due_name(), {entry.cancellation_id: entry.due_at})
        else:
            pipe.zrem(self._due_name(), entry.cancellation_id)
        if not new:
            pipe.delete(self._holder_name(entry.cancellation_id))
            pipe.hdel(self._taken_name(), entry.cancellation_id)
        if entry.status == PENDING:  # scored by creation: the oldest is the first
            pipe.zadd(self._pending_name(), {entry.cancellation_id: entry.created_at})
        elif not new:
            pipe.zrem(self._pending_name(), entry.cancellation_id)
        if indexed:
            return
        # Ids older than the ledger's rows can be are dropped as new ones come, so the index
        # holds about what the ledger holds (a listing also drops the dead ids it meets).
        expired = "(" + cancellation_id_at(int(time.time() * 1000) - self._ledger_ttl_ms)
        for index in (self._index_name(None), self._index_name(entry.caller)):
            pipe.zadd(index, {entry.cancellation_id: 0})
            pipe.zremrangebylex(index, "-", expired)
            pipe.pexpire(index, self._ledger_ttl_ms)  # it outlives no row it lists

    async def _watching(self, keys: list[str], attempt: Callable[[Any], Awaitable[T]]) -> T:
        async with self._client.pipeline(transaction=True) as pipe:
            for _ in range(_MAX_RACES):
                try:
                    await pipe.watch(*keys)
                    return await attempt(pipe)
                except WatchError:
                    await pipe.reset()  # type: ignore[no-untyped-call]
                    continue
        raise StoreUnavailable("redis: too many concurrent writers for one key")

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._timeout_s):
                yield
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from None


def _key_row(claim: KeyClaim, raw: dict[bytes, bytes]) -> KeyRow | None:
    if not raw:
        return None
    field = {k.decode(): v for k, v in raw.items()}
    reply = None
    if b"http_status" in raw:
        reply = StoredReply(
            int(field["http_status"]),
            tuple(tuple(pair) for pair in orjson.loads(field["headers"])),
            field["body"],
        )
    return KeyRow(
        claim.caller,
        claim.key,
        field["fingerprint"].decode(),
        field["token"].decode(),
        KeyState(field["state"].decode()),
        float(field["lease_until"]),
        float(field["expires_at"]),
        field["cancellation_id"].decode(),
        reply,
    )


def _queue_settled(pipe: Any, key: str, settled: KeyRow | str, now: float) -> None:
    """A key's completion (``settle``): the row kept for replays, or the key released."""
    if isinstance(settled, KeyRow):
        _write_key(pipe, key, settled, now)
    else:
        pipe.delete(key)


def _write_key(pipe: Any, key: str, row: KeyRow, now: float) -> None:
    mapping: dict[str, Any] = {
        "fingerprint": row.fingerprint,
        "token": row.token,
        "state": row.state.value,
        "lease_until": repr(row.lease_until),
        "expires_at": repr(row.expires_at),
        "cancellation_id": row.cancellation_id,
    }
    pipe.delete(key)
    if row.reply is not None:
        mapping["http_status"] = str(row.reply.http_status)
        mapping["headers"] = orjson.dumps(row.reply.headers)
        mapping["body"] = row.reply.body
    pipe.hset(key, mapping=mapping)
    # Redis forgets the key a little after the gateway stops honouring it.
    pipe.pexpire(key, max(1, int((row.expires_at - now) * 1000) + 60_000))


def _entry(raw: bytes | str) -> Entry:
    """A ledger row as ``_queue_entry`` stored it (the envelope in hex)."""
    data = orjson.loads(raw)
    # Absent from rows written before events, then steps, were kept.
    return Entry(
        **{
            **data,
            "envelope": _unhex(data["envelope"]),
            "events": _unhex(data.get("events")),
            "due_at": data.get("due_at"),
            "work": _unhex(data.get("work")),
        }
    )


def _unhex(value: str | None) -> bytes | None:
    return bytes.fromhex(value) if value is not None else None
