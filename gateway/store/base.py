"""What every store keeps, and the one rule for claiming an idempotency key.

A store holds two things: idempotency keys (``(caller, key)`` → the request's fingerprint and,
once final, the reply to replay) and the ledger (one row per cancellation). The backends differ
only in how they make a claim atomic; ``decide`` is the rule they all apply.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, NamedTuple, Protocol

import orjson


class StoreUnavailable(Exception):
    """The store did not answer (in time); nothing may be sent."""


class KeyState(enum.Enum):
    RUNNING = "running"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class StoredReply:
    """A final answer, replayed byte for byte."""

    http_status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """What a request with an ``Idempotency-Key`` asks of the store."""

    caller: str
    key: str
    fingerprint: str  # SHA-256 of the canonical JSON of the request body
    lease_s: float  # how long the claim holds while the request runs
    ttl_s: float  # how long the key lives
    # Who holds the claim once it is taken: made here, so that whoever finishes the
    # cancellation later (another process, after a crash) can say it is the holder.
    token: str = field(default_factory=lambda: secrets.token_hex(16))


@dataclass(frozen=True, slots=True)
class KeyRow:
    caller: str
    key: str
    fingerprint: str
    token: str  # who holds the claim: only its holder may finish it
    state: KeyState
    lease_until: float  # unix seconds
    expires_at: float
    cancellation_id: str
    reply: StoredReply | None = None


class Entry(NamedTuple):
    """One cancellation in the ledger. ``envelope`` is the JSON answered, once there is one.

    A row, made twice per cancellation: a named tuple is built in one call, where a frozen
    dataclass sets its twelve fields one by one (about seven times slower)."""

    cancellation_id: str
    caller: str
    connection: str | None
    provider: str | None
    resource: str | None
    resource_id: str | None
    status: str  # "running", then the envelope's status
    created_at: float
    error_code: str | None = None
    attempts: int = 0
    completed_at: float | None = None
    envelope: bytes | None = None
    events: bytes | None = None  # what happened to it, a JSON list (GET …/{id}/events)
    # Its next step, while it has one (a pending cancellation to send or probe, a running one
    # to recover if its process dies, a webhook to deliver): when it is due (unix seconds),
    # and what it is (JSON, gateway/settling.py). Any process sharing the store may take it.
    due_at: float | None = None
    work: bytes | None = None
    # How often its step was taken since it was written (by ``take_due``): more than once
    # means that a holder lost it (died, or stalled past its lease) and may have acted on it.
    taken: int = 0


# What ``begin`` answers.
@dataclass(frozen=True, slots=True)
class Claimed:
    token: str  # empty without an idempotency key


@dataclass(frozen=True, slots=True)
class Replay:
    reply: StoredReply
    cancellation_id: str


@dataclass(frozen=True, slots=True)
class InProgress:
    retry_after_s: float


@dataclass(frozen=True, slots=True)
class Conflict:
    pass


BeginAnswer = Claimed | Replay | InProgress | Conflict


@dataclass(frozen=True, slots=True)
class LedgerQuery:
    """Which ledger rows ``list_entries`` answers: final ones (with an envelope) only, newest
    first by cancellation id (ids sort by creation time), at most ``limit``."""

    caller: str | None  # None: every caller's (an admin's view)
    connection: str | None = None
    resource_id: str | None = None
    status: str | None = None
    since: float | None = None  # created_at >= since (unix seconds)
    until: float | None = None  # created_at < until
    before: str | None = None  # the cursor: only ids below this one
    limit: int = 50

    def matches(self, entry: Entry) -> bool:
        """The rule every backend applies (in SQL, or in code as the memory store does)."""
        return (
            entry.envelope is not None
            and (self.caller is None or entry.caller == self.caller)
            and (self.connection is None or entry.connection == self.connection)
            and (self.resource_id is None or entry.resource_id == self.resource_id)
            and (self.status is None or entry.status == self.status)
            and (self.since is None or entry.created_at >= self.since)
            and (self.until is None or entry.created_at < self.until)
            and (self.before is None or entry.cancellation_id < self.before)
        )


def ledger_conditions(query: LedgerQuery, id_column: str = "id") -> list[tuple[str, Any]]:
    """``LedgerQuery.matches`` as SQL: each condition (its placeholder still to write) with
    its value, for the filters given; ``envelope IS NOT NULL`` is the caller's to add."""
    given = (
        ("caller =", query.caller),
        ("connection =", query.connection),
        ("resource_id =", query.resource_id),
        ("status =", query.status),
        ("created_at >=", query.since),
        ("created_at <", query.until),
        (f"{id_column} <", query.before),
    )
    return [(condition, value) for condition, value in given if value is not None]


@dataclass(frozen=True, slots=True)
class RefreshRow:
    """A connection's newest refresh token (a provider that rotates them spends each once),
    and ``seed``: the SHA-256 (hex) of the configured refresh token the chain descends from, so
    that a credential the operator replaces starts a new chain."""

    value: str = field(repr=False)
    seed: str


@dataclass(frozen=True, slots=True)
class RefreshLease:
    """What ``lease_refresh`` answers: whether the lease is now the asker's (``held``), the
    stored token either way, and until when the lease holds (unix seconds)."""

    held: bool
    row: RefreshRow | None
    until: float


def lease_rule(holder: str, current: str | None, until: float, now: float) -> bool:
    """The lease rule every backend applies: free, run out, or already the asker's."""
    return current is None or current == holder or until <= now


def decide(
    found: KeyRow | None, claim: KeyClaim, cancellation_id: str, now: float
) -> KeyRow | BeginAnswer:
    """The claim rule. A ``KeyRow`` result is the row to write: the claim succeeded."""
    if found is not None and found.expires_at > now:
        if found.fingerprint != claim.fingerprint:
            return Conflict()
        if found.state is KeyState.DONE and found.reply is not None:
            return Replay(found.reply, found.cancellation_id)
        if found.lease_until > now:
            return InProgress(found.lease_until - now)
        # A claim whose holder died mid-request (its lease ran out) is taken over.
    return KeyRow(
        claim.caller,
        claim.key,
        claim.fingerprint,
        claim.token,
        KeyState.RUNNING,
        now + claim.lease_s,
        now + claim.ttl_s,
        cancellation_id,
    )


PENDING: Final = "pending"  # the status of a cancellation not settled yet
RELEASE: Final = "release"
NOT_OURS: Final = "not ours"


def settle(
    found: KeyRow | None, token: str, reply: StoredReply | None, ttl_s: float, now: float
) -> KeyRow | Literal["release", "not ours"]:
    """The completion rule, beside ``decide``'s claim rule. A claim taken over after its lease
    ran out holds another token: not ours to finish. A failed outcome (no ``reply``) releases
    the key, so the caller's retry tries again; a definite one is the row to keep for replays."""
    if found is None or found.token != token:
        return NOT_OURS
    if reply is None:
        return RELEASE
    return replace(found, state=KeyState.DONE, reply=reply, expires_at=now + ttl_s)


def key_values(row: KeyRow) -> tuple[Any, ...]:
    """A key row as SQL parameters, in the schema's column order."""
    reply = row.reply
    return (
        row.caller,
        row.key,
        row.fingerprint,
        row.token,
        row.state.value,
        row.lease_until,
        row.expires_at,
        row.cancellation_id,
        reply.http_status if reply else None,
        orjson.dumps(reply.headers).decode() if reply else None,
        reply.body if reply else None,
    )


def entry_values(entry: Entry) -> tuple[Any, ...]:
    """A ledger row as SQL parameters, in the schema's column order."""
    return (
        entry.cancellation_id,
        entry.caller,
        entry.connection,
        entry.provider,
        entry.resource,
        entry.resource_id,
        entry.status,
        entry.error_code,
        entry.attempts,
        entry.created_at,
        entry.completed_at,
        entry.envelope,
        entry.events,
        entry.due_at,
        entry.work,
    )


# Pending rows always have a step: an index on due_at (where there is one) finds them.
PENDING_SUMMARY = (
    "SELECT COUNT(*), MIN(created_at) FROM cg_cancellations"
    " WHERE due_at IS NOT NULL AND status = 'pending'"
)

# Ledger columns in ``Entry``'s field order, for reading rows back.
ENTRY_COLUMNS = (
    "id, caller, connection, provider, resource, resource_id, status, created_at, error_code,"
    " attempts, completed_at, envelope, events, due_at, work, taken"
)


class Store(Protocol):
    """The interface every backend implements. Every method raises ``StoreUnavailable`` when
    the store does not answer."""

    name: str

    async def open(self) -> None:
        """Connect, and create or migrate the schema."""

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def begin(self, entry: Entry, claim: KeyClaim | None, now: float) -> BeginAnswer:
        """Before sending: claim the key (when there is one) and record the cancellation as
        running, atomically. Anything but ``Claimed`` means: do not send."""

    async def complete(
        self,
        entry: Entry,
        claim: KeyClaim | None,
        token: str,
        reply: StoredReply | None,
        now: float,
        holder: str | None = None,
    ) -> bool:
        """After answering: record the outcome (and the entry's next step, or none); with a
        key, keep ``reply`` for replays, or release the key when ``reply`` is None (a failed
        outcome may be tried again). With ``holder`` (a step taken by ``take_due``), only while
        that holder still holds the entry's lease: False, writing nothing, when it does not."""

    async def take_due(self, holder: str, now: float, lease_s: float, limit: int) -> list[Entry]:
        """Up to ``limit`` entries whose step is due (``due_at <= now``), earliest first, each
        leased to ``holder`` for ``lease_s`` atomically: its ``due_at`` moves to ``now +
        lease_s``, so that no other process takes it meanwhile and, if ``holder`` dies, another
        takes it once the lease has run out."""

    async def record(self, entry: Entry) -> None:
        """A cancellation that ended before anything could be sent (refused input)."""

    async def lookup(self, cancellation_id: str, caller: str) -> Entry | None:
        """The ledger row, only for the caller that made it."""

    async def list_entries(self, query: LedgerQuery) -> list[Entry]:
        """The final ledger rows ``query`` matches, newest first (cancellation id descending),
        at most ``query.limit``."""

    async def pending_summary(self) -> tuple[int, float | None]:
        """How many cancellations are pending, and when the oldest of them was made (None
        when none is): the gauges of ``/metrics``."""

    async def lease_refresh(
        self, name: str, holder: str, now: float, lease_s: float
    ) -> RefreshLease:
        """Before spending connection ``name``'s refresh token: take its lease for ``lease_s``
        unless another holder has it (``lease_rule``), atomically, and answer the stored token.
        One holder at a time, across every process sharing the store, so a single-use token is
        spent once."""

    async def save_refresh(self, name: str, holder: str, row: RefreshRow | None) -> bool:
        """After the token request: store ``row`` (when given) and release the lease, only if
        ``holder`` still holds it (compare-and-set); False, writing nothing, when it does not."""
