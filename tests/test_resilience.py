"""The guards of a connection on a hand-driven clock: breaker, retry budget, token bucket, and
the rules that decide what may be repeated."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import (
    BreakerSettings,
    ConnectionConfig,
    LimitSettings,
    RetrySettings,
)
from gateway.definition import ProviderDefinition
from gateway.loader import load_providers
from gateway.problems import Problem
from gateway.resilience import (
    BreakerState,
    CircuitBreaker,
    GuardRegistry,
    Policy,
    RetryBudget,
    TokenBucket,
    backoff_s,
    retry_reason,
)


class Hands:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Hands:
    return Hands()


# --- what may be repeated --------------------------------------------------------------------


@pytest.mark.parametrize("retry_safe", [True, False])
def test_what_was_never_sent_is_repeated_for_every_operation(retry_safe: bool):
    assert retry_reason(status=None, sent=False, retry_safe=retry_safe) == "not_sent"


@pytest.mark.parametrize("status", [408, 502, 503, 504])
def test_transient_answers_are_repeated_only_where_safe(status: int):
    assert retry_reason(status=status, sent=True, retry_safe=True) == f"answered_{status}"
    assert retry_reason(status=status, sent=True, retry_safe=False) is None


def test_reset_or_read_timeout_is_repeated_only_where_safe():
    assert retry_reason(status=None, sent=True, retry_safe=True) == "no_answer"
    assert retry_reason(status=None, sent=True, retry_safe=False) is None


def test_an_unreadable_answer_is_not_repeated():
    assert retry_reason(status=None, sent=True, retry_safe=True, unreadable=True) is None


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 409, 422, 500, 501])
def test_definitive_answers_are_never_repeated(status: int):
    assert retry_reason(status=status, sent=True, retry_safe=True) is None


def test_backoff_doubles_up_to_its_ceiling_and_is_fully_jittered():
    settings = RetrySettings(backoff_base_s=0.1, backoff_max_s=0.3)
    assert [backoff_s(n, settings, lambda: 1.0) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]
    assert backoff_s(3, settings, lambda: 0.0) == 0.0
    assert backoff_s(2, settings, lambda: 0.5) == pytest.approx(0.1)


# --- retry budget ----------------------------------------------------------------------------


def test_budget_allows_the_minimum_even_with_few_requests(clock: Hands):
    budget = RetryBudget(RetrySettings(budget_ratio=0.2, budget_min_retries=3), clock)
    budget.record_request()
    assert [budget.try_retry() for _ in range(4)] == [True, True, True, False]


def test_budget_is_a_share_of_the_requests_in_the_window(clock: Hands):
    budget = RetryBudget(
        RetrySettings(budget_ratio=0.2, budget_min_retries=3, budget_window_s=10), clock
    )
    for _ in range(50):
        budget.record_request()
    granted = sum(budget.try_retry() for _ in range(20))
    assert granted == 10  # 20% of 50


def test_budget_window_slides(clock: Hands):
    budget = RetryBudget(RetrySettings(budget_min_retries=1, budget_window_s=10), clock)
    budget.record_request()
    assert budget.try_retry()
    assert not budget.try_retry()
    clock.t += 10.5  # the retry (and the request) left the window
    assert budget.try_retry()


# --- circuit breaker -------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only(clock: Hands):
    breaker = CircuitBreaker(BreakerSettings(failures=3, open_s=5), clock)
    for failed in (True, True, False, True, True):
        assert breaker.admit()
        breaker.record(failed=failed)
    assert breaker.state is BreakerState.CLOSED  # the success in between reset the count
    breaker.record(failed=True)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.admit()
    assert breaker.retry_in_s() == 5


def test_half_open_admits_exactly_one_probe_and_closes_on_its_success(clock: Hands):
    breaker = CircuitBreaker(BreakerSettings(failures=1, open_s=5), clock)
    breaker.record(failed=True)
    clock.t += 4.9
    assert not breaker.admit()
    clock.t += 0.2
    assert breaker.admit()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.admit()  # everyone else while it runs
    breaker.record(failed=False)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admit()
    assert breaker.admit()


def test_failed_probe_reopens_with_a_longer_wait_up_to_the_maximum(clock: Hands):
    breaker = CircuitBreaker(BreakerSettings(failures=1, open_s=2, max_open_s=5), clock)
    breaker.record(failed=True)
    waits = []
    for _ in range(3):
        clock.t += breaker.retry_in_s()
        assert breaker.admit()
        breaker.record(failed=True)
        waits.append(breaker.retry_in_s())
    assert waits == [4, 5, 5]
    clock.t += 5
    assert breaker.admit()
    breaker.record(failed=False)
    breaker.record(failed=True)  # after closing, the first wait is the short one again
    assert breaker.retry_in_s() == 2


def test_abandoned_probe_lets_another_go(clock: Hands):
    breaker = CircuitBreaker(BreakerSettings(failures=1, open_s=1), clock)
    breaker.record(failed=True)
    clock.t += 1
    assert breaker.admit()
    breaker.abandon()
    assert breaker.admit()


def test_breaker_settings_refuse_a_maximum_below_the_first_wait():
    with pytest.raises(ValueError, match="max_open_s must be at least open_s"):
        BreakerSettings(open_s=10, max_open_s=5)


# --- token bucket ----------------------------------------------------------------------------


def test_bucket_spends_its_burst_then_paces(clock: Hands):
    bucket = TokenBucket(rate=2, burst=2, now=clock)
    assert bucket.reserve(0) == (True, 0.0)
    assert bucket.reserve(0) == (True, 0.0)
    assert bucket.reserve(0) == (False, 0.5)
    granted, wait = bucket.reserve(1.0)
    assert granted
    assert wait == 0.5
    # The token taken ahead leaves the next one a whole interval later.
    assert bucket.reserve(0.9) == (False, 1.0)
    clock.t += 1.0
    assert bucket.reserve(0) == (True, 0.0)


def test_bucket_saves_no_more_than_its_burst(clock: Hands):
    bucket = TokenBucket(rate=2, burst=2, now=clock)
    clock.t += 60
    assert [bucket.reserve(0)[0] for _ in range(3)] == [True, True, False]


# --- settings resolved per connection --------------------------------------------------------


def _definitions() -> dict[str, ProviderDefinition]:
    problems: list[Problem] = []
    found = load_providers(Path("."), [], problems)
    assert not problems
    return found


def test_shoplazza_connections_default_to_two_requests_a_second():
    shoplazza = _definitions()["shoplazza"]
    policy = Policy.of(ConnectionConfig(provider="shoplazza"), shoplazza)
    assert (policy.limits.rate_per_s, policy.limits.burst) == (2, 2)
    own = ConnectionConfig(provider="shoplazza", limits=LimitSettings(rate_per_s=5))
    assert Policy.of(own, shoplazza).limits.rate_per_s == 5
    off = ConnectionConfig(provider="shoplazza", limits=LimitSettings(rate_per_s=0))
    assert Policy.of(off, shoplazza).limits.rate_per_s == 0


def test_other_providers_have_no_rate_limit_by_default():
    definitions = _definitions()
    for name in ("stateset", "shipper", "rxuniverse"):
        policy = Policy.of(ConnectionConfig(provider=name), definitions[name])
        assert policy.limits.rate_per_s is None
        assert policy.retry.max_attempts == 3
        assert policy.breaker.failures == 5
        assert policy.limits.concurrency >= 256


def test_registry_keeps_guards_while_settings_stay_the_same(clock: Hands):
    definition = _definitions()["stateset"]
    registry = GuardRegistry(clock)
    policy = Policy.of(ConnectionConfig(provider="stateset"), definition)
    guards = registry.get("main", policy)
    same = Policy.of(ConnectionConfig(provider="stateset"), definition)
    assert registry.get("main", same) is guards
    changed = Policy.of(
        ConnectionConfig(provider="stateset", breaker=BreakerSettings(failures=2)), definition
    )
    assert registry.get("main", changed) is not guards
