"""What one simulator app holds: the keys it accepts, what was cancelled, scenario counters,
StateSet idempotency records and the journal of every request received.

Everything lives on the app under typed keys; nothing is kept at module level, so two apps
(or two tests) never share state unless they are given the same ``SimulatorState``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.simulate.replies import Reply

SIMULATED = ("stateset", "shipper", "shoplazza", "rxuniverse")

# Header values GET /_journal shows as "***" (the journal in memory keeps them as sent).
MASKED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "access-token", "cookie"}
)


@dataclass(frozen=True)
class SimulatorKeys:
    """The credential each simulated provider accepts.

    The defaults are demo values printed in gateway/demo.yaml, not secrets. An empty or
    ``None`` RxUniverse key means the simulated lab asks for none (its auth is optional).
    """

    stateset: str = "sim-stateset-key"
    shipper: str = "sim-shipper-key"
    shoplazza: str = "sim-shoplazza-token"
    rxuniverse: str | None = "sim-rxuniverse-key"
    rxuniverse_header: str = "x-api-key"


@dataclass(frozen=True)
class JournalEntry:
    provider: str | None  # None for paths outside the four prefixes
    method: str
    path: str  # the raw path with its query, as received
    headers: dict[str, str]
    body: str

    def public(self, masked: frozenset[str] = MASKED_HEADERS) -> dict[str, Any]:
        """The entry as GET /_journal shows it: credentials masked."""
        headers = {
            name: "***" if name.lower() in masked else value for name, value in self.headers.items()
        }
        return {
            "provider": self.provider,
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "body": self.body,
        }


class Journal:
    """Every request received, in order."""

    def __init__(self) -> None:
        self.entries: list[JournalEntry] = []

    def record(self, entry: JournalEntry) -> None:
        self.entries.append(entry)

    def clear(self) -> None:
        self.entries.clear()

    def of(self, provider: str) -> list[JournalEntry]:
        return [entry for entry in self.entries if entry.provider == provider]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[JournalEntry]:
        return iter(self.entries)


@dataclass
class SimulatorState:
    """Per-provider memory of the simulated objects.

    ``cancelled`` maps (provider, id) to the time of the first successful cancel; seed it to
    make an object "already cancelled" from the start.
    """

    cancelled: dict[tuple[str, str], datetime] = field(default_factory=dict)
    calls: dict[tuple[str, str, str], int] = field(default_factory=dict)
    idempotent: dict[tuple[str, str], Reply | None] = field(default_factory=dict)
    requests: int = 0

    def is_cancelled(self, provider: str, object_id: str) -> bool:
        return (provider, object_id) in self.cancelled

    def cancel(self, provider: str, object_id: str, now: datetime) -> datetime:
        """Mark the object cancelled; return when it was first cancelled."""
        return self.cancelled.setdefault((provider, object_id), now)

    def count(self, provider: str, object_id: str, scenario: str) -> int:
        """Count one more call of ``scenario`` for this object; return the running total."""
        key = (provider, object_id, scenario)
        self.calls[key] = self.calls.get(key, 0) + 1
        return self.calls[key]

    def next_request_id(self, provider: str) -> str:
        self.requests += 1
        return f"sim-{provider}-{self.requests:06d}"


Clock = Callable[[], datetime]

KEYS_KEY = web.AppKey("simulate.keys", SimulatorKeys)
STATE_KEY = web.AppKey("simulate.state", SimulatorState)
JOURNAL_KEY = web.AppKey("simulate.journal", Journal)
CLOCK_KEY: web.AppKey[Clock] = web.AppKey("simulate.clock")
