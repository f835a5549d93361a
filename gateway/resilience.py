"""What protects a provider, and the gateway, from too many or too hopeless attempts.

One ``Guards`` per connection holds the state: a circuit breaker, a retry budget, a bulkhead
(concurrency cap) and an optional token bucket. All of it is in memory, per process, and
driven by an injectable monotonic clock so tests never wait for real time.

The retry rules themselves are in ``retry_reason``: what may be repeated depends on whether
the request may have reached the provider and on whether the operation is safe to repeat.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import BreakerSettings, ConnectionConfig, LimitSettings, RetrySettings
from gateway.definition import ProviderDefinition

Now = Callable[[], float]

# Answers that say "not now" rather than "no": repeated only where repeating is safe.
TRANSIENT_STATUSES = frozenset({408, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Policy:
    """One connection's resolved settings: its own, else its provider's, else the defaults."""

    timeout_s: float
    connect_timeout_s: float
    attempt_timeout_s: float | None
    retry: RetrySettings
    breaker: BreakerSettings
    limits: LimitSettings

    @classmethod
    def of(cls, connection: ConnectionConfig, definition: ProviderDefinition) -> Policy:
        limits = connection.limits
        if limits.rate_per_s is None and definition.rate_limit is not None:
            rate = definition.rate_limit
            burst = limits.burst or rate.burst
            limits = limits.model_copy(update={"rate_per_s": rate.per_s, "burst": burst})
        return cls(
            connection.timeout_s,
            connection.connect_timeout_s,
            connection.attempt_timeout_s,
            connection.retry,
            connection.breaker,
            limits,
        )


def retry_reason(
    *, status: int | None, sent: bool, retry_safe: bool, unreadable: bool = False
) -> str | None:
    """Why another attempt may follow this one, or None when it must not.

    ``status`` is the provider's HTTP status, None when no usable answer came: then ``sent``
    says whether the request may have reached the provider, and ``unreadable`` that an answer
    came but could not be read (too large, not HTTP), which repeating will not change. 429 is
    the caller's (Retry-After).
    """
    if status is None:
        if not sent:
            return "not_sent"  # refused, DNS, connect timeout: safe for every verb
        return "no_answer" if retry_safe and not unreadable else None
    if status in TRANSIENT_STATUSES and retry_safe:
        return f"answered_{status}"
    return None


def backoff_s(attempt: int, settings: RetrySettings, rand: Callable[[], float]) -> float:
    """Exponential backoff with full jitter before attempt ``attempt + 1``."""
    ceiling = min(settings.backoff_max_s, settings.backoff_base_s * 2.0 ** (attempt - 1))
    return ceiling * rand()


class RetryBudget:
    """Retries may be at most ``ratio`` of the requests seen in a sliding window (but at least
    ``minimum`` per window), so an outage does not multiply the load on a provider."""

    def __init__(self, settings: RetrySettings, now: Now) -> None:
        self._ratio = settings.budget_ratio
        self._minimum = settings.budget_min_retries
        self._window = settings.budget_window_s
        self._now = now
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        for times in (self._requests, self._retries):
            while times and times[0] <= now - self._window:
                times.popleft()

    def record_request(self) -> None:
        self._requests.append(self._now())

    def try_retry(self) -> bool:
        """Take one retry from the budget; False when there is none left."""
        now = self._now()
        self._trim(now)
        allowed = max(self._minimum, int(self._ratio * len(self._requests)))
        if len(self._retries) >= allowed:
            return False
        self._retries.append(now)
        return True


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failures`` consecutive failed attempts; while open, nothing is sent. When
    the wait is over exactly one probe goes through: its success closes the breaker, its
    failure reopens it with twice the wait (up to ``max_open_s``)."""

    def __init__(self, settings: BreakerSettings, now: Now) -> None:
        self._settings = settings
        self._now = now
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._wait_s = settings.open_s
        self._opened_at = 0.0
        self._probing = False

    def retry_in_s(self) -> float:
        """Seconds until a probe may go, while open."""
        return max(0.0, self._opened_at + self._wait_s - self._now())

    def effective_state(self) -> BreakerState:
        """The state as the next request would find it: open with its wait over is half open."""
        if self.state is BreakerState.OPEN and self.retry_in_s() <= 0:
            return BreakerState.HALF_OPEN
        return self.state

    def admit(self) -> bool:
        """May an attempt be sent now? In half-open state, True means: you are the probe."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self.retry_in_s() > 0:
                return False
            self.state = BreakerState.HALF_OPEN
        if self._probing:
            return False
        self._probing = True
        return True

    def record(self, *, failed: bool) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._probing = False
            if failed:
                self._open(min(self._wait_s * 2, self._settings.max_open_s))
            else:
                self._close()
            return
        if not failed:
            self._failures = 0
            return
        self._failures += 1
        if self.state is BreakerState.CLOSED and self._failures >= self._settings.failures:
            self._open(self._settings.open_s)

    def abandon(self) -> None:
        """An admitted attempt ended without an outcome (the caller went away): if it was the
        probe, let another one go."""
        if self.state is BreakerState.HALF_OPEN:
            self._probing = False

    def _open(self, wait_s: float) -> None:
        self.state = BreakerState.OPEN
        self._wait_s = wait_s
        self._opened_at = self._now()

    def _close(self) -> None:
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._wait_s = self._settings.open_s


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved. A token taken ahead of time leaves
    the level negative: the wait of every later request grows, so order is kept."""

    def __init__(self, rate: float, burst: int, now: Now) -> None:
        self.rate, self.burst = rate, burst  # what a limit shared by replicas applies too
        self._rate = rate
        self._burst = float(burst)
        self._now = now
        self._level = float(burst)
        self._at = now()

    def reserve(self, max_wait_s: float) -> tuple[bool, float]:
        """(granted, wait): take a token that will be there within ``max_wait_s`` and return
        how long to wait for it; or take nothing and say how long it would have been."""
        now = self._now()
        self._level = min(self._burst, self._level + (now - self._at) * self._rate)
        self._at = now
        wait = max(0.0, (1.0 - self._level) / self._rate)
        if wait > max_wait_s:
            return False, wait
        self._level -= 1.0
        return True, wait


@dataclass
class Guards:
    """Everything that protects one connection."""

    breaker: CircuitBreaker
    budget: RetryBudget
    bulkhead: asyncio.Semaphore
    bucket: TokenBucket | None

    @classmethod
    def create(cls, policy: Policy, now: Now) -> Guards:
        limits = policy.limits
        bucket = None
        if limits.rate_per_s:
            burst = limits.burst or max(1, int(limits.rate_per_s))
            bucket = TokenBucket(limits.rate_per_s, burst, now)
        return cls(
            CircuitBreaker(policy.breaker, now),
            RetryBudget(policy.retry, now),
            asyncio.Semaphore(limits.concurrency),
            bucket,
        )


def full_jitter() -> float:
    return random.random()  # noqa: S311 - jitter, not a secret


class GuardRegistry:
    """The guards of every connection, kept across configuration reloads: a connection whose
    settings did not change keeps its breaker, budget and limits."""

    def __init__(self, now: Now) -> None:
        self._now = now
        self._by_name: dict[str, tuple[Policy, Guards]] = {}

    def get(self, connection: str, policy: Policy) -> Guards:
        found = self._by_name.get(connection)
        if found is not None and found[0] == policy:
            return found[1]
        guards = Guards.create(policy, self._now)
        self._by_name[connection] = (policy, guards)
        return guards

    def items(self) -> list[tuple[str, Guards]]:
        return [(name, guards) for name, (_, guards) in sorted(self._by_name.items())]
