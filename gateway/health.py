"""What the operator console shows of each connection (``GET /v1/connections/health``): the
last 15 minutes' outcomes minute by minute, the upstream latency's p50 and p95, the refusals of
its rate limit, the provider errors no rule of its definition reads, and the cancellations in
flight now. Kept in this process's memory, in one-minute buckets: with ``--workers``, each
worker answers for the requests it served.

Latencies go into a histogram of logarithmic buckets (each bound 10 % above the one before,
from 0.5 ms to 2 minutes; one more for anything slower), so a minute holds a fixed 132 counters
whatever the load; a percentile is read by interpolating inside its bucket, so it is off by at
most the bucket's width: 10 %.
"""

from __future__ import annotations

import bisect
import collections
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MINUTE_S = 60
WINDOW_MINUTES = 15
_SMALLEST_MS, _RATIO = 0.5, 1.1
_BOUNDS_MS: tuple[float, ...] = tuple(
    _SMALLEST_MS * _RATIO**k for k in range(math.ceil(math.log(240_000) / math.log(_RATIO)) + 1)
)  # the upper bound of each bucket; a last bucket holds everything beyond


@dataclass
class _Minute:
    start: int  # unix minute
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    latency: list[int] = field(default_factory=lambda: [0] * (len(_BOUNDS_MS) + 1))
    rate_limited: int = 0
    unmapped: int = 0


@dataclass(frozen=True)
class ConnectionWindow:
    """One connection's last 15 minutes, oldest minute first (every minute, empty ones too)."""

    minutes: list[tuple[int, dict[str, int]]]  # (unix seconds of the minute's start, outcomes)
    p50_ms: float | None
    p95_ms: float | None
    rate_limited: int
    unmapped: int
    in_flight: int

    @property
    def outcomes(self) -> dict[str, int]:
        """The window's outcomes, by status."""
        totals: collections.Counter[str] = collections.Counter()
        for _, outcomes in self.minutes:
            totals.update(outcomes)
        return dict(totals)


class ConnectionHealth:
    """The window of every connection that saw a cancellation, and what is in flight now."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._minutes: dict[str, collections.deque[_Minute]] = {}
        self._in_flight: collections.Counter[str] = collections.Counter()

    def _current(self, connection: str) -> _Minute:
        minute = int(self._now() // MINUTE_S)
        kept = self._minutes.get(connection)
        if kept is None:
            kept = self._minutes[connection] = collections.deque(maxlen=WINDOW_MINUTES)
        if not kept or kept[-1].start != minute:
            kept.append(_Minute(minute))
        return kept[-1]

    def outcome(self, connection: str, status: str) -> None:
        self._current(connection).outcomes[status] += 1

    def latency(self, connection: str, seconds: float) -> None:
        buckets = self._current(connection).latency
        buckets[bisect.bisect_left(_BOUNDS_MS, seconds * 1000)] += 1

    def rate_limited(self, connection: str) -> None:
        self._current(connection).rate_limited += 1

    def unmapped(self, connection: str) -> None:
        self._current(connection).unmapped += 1

    def entered(self, connection: str) -> None:
        self._in_flight[connection] += 1

    def left(self, connection: str) -> None:
        self._in_flight[connection] -= 1
        if self._in_flight[connection] <= 0:
            del self._in_flight[connection]

    def window(self, connection: str) -> ConnectionWindow:
        last = int(self._now() // MINUTE_S)
        first = last - WINDOW_MINUTES + 1
        kept = {m.start: m for m in self._minutes.get(connection, ()) if m.start >= first}
        seen = list(kept.values())
        latency = [sum(counts) for counts in zip(*(m.latency for m in seen), strict=True)]
        return ConnectionWindow(
            minutes=[
                (start * MINUTE_S, dict(kept[start].outcomes) if start in kept else {})
                for start in range(first, last + 1)
            ],
            p50_ms=percentile(latency, 0.5),
            p95_ms=percentile(latency, 0.95),
            rate_limited=sum(m.rate_limited for m in seen),
            unmapped=sum(m.unmapped for m in seen),
            in_flight=self._in_flight.get(connection, 0),
        )


def percentile(counts: Iterable[int], q: float) -> float | None:
    """The ``q`` quantile of a latency histogram, in ms, interpolated inside its bucket; None
    for an empty one."""
    counts = list(counts)
    total = sum(counts)
    if total == 0:
        return None
    rank, below = q * total, 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            low = _BOUNDS_MS[index - 1] if index > 0 else 0.0
            high = _BOUNDS_MS[index] if index < len(_BOUNDS_MS) else _BOUNDS_MS[-1]
            return round(low + (high - low) * (rank - below) / count, 1)
        below += count
    return _BOUNDS_MS[-1]
