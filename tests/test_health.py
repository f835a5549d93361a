"""The console's per-connection window: outcomes by minute, kept for 15 minutes; latency
percentiles read from a logarithmic histogram; limit refusals, unmapped errors and what is in
flight."""

from __future__ import annotations

import random
import statistics

import pytest

from gateway.health import MINUTE_S, WINDOW_MINUTES, ConnectionHealth, percentile


class Now:
    def __init__(self) -> None:
        self.value = 1_700_000_000.0  # a minute's start plus 20 s

    def __call__(self) -> float:
        return self.value


def test_outcomes_are_counted_by_minute_and_every_minute_of_the_window_is_listed() -> None:
    now = Now()
    health = ConnectionHealth(now)
    health.outcome("a", "cancelled")
    health.outcome("a", "cancelled")
    now.value += MINUTE_S
    health.outcome("a", "failed")
    health.outcome("b", "rejected")
    window = health.window("a")
    assert len(window.minutes) == WINDOW_MINUTES
    starts = [start for start, _ in window.minutes]
    assert starts == sorted(starts)
    assert starts[-1] == now.value // MINUTE_S * MINUTE_S
    assert [counts for _, counts in window.minutes][-2:] == [{"cancelled": 2}, {"failed": 1}]
    assert all(counts == {} for _, counts in window.minutes[:-2])
    assert [counts for _, counts in health.window("b").minutes][-1] == {"rejected": 1}


def test_minutes_older_than_the_window_are_left_out() -> None:
    now = Now()
    health = ConnectionHealth(now)
    health.outcome("a", "cancelled")
    health.rate_limited("a")
    health.unmapped("a")
    now.value += (WINDOW_MINUTES - 1) * MINUTE_S
    assert health.window("a").minutes[0][1] == {"cancelled": 1}  # the oldest minute kept
    assert (health.window("a").rate_limited, health.window("a").unmapped) == (1, 1)
    now.value += MINUTE_S
    window = health.window("a")
    assert all(counts == {} for _, counts in window.minutes)
    assert (window.rate_limited, window.unmapped) == (0, 0)


def test_latency_percentiles_come_within_a_tenth_of_the_samples_own() -> None:
    rng = random.Random(7)
    samples_ms = [rng.lognormvariate(3.5, 0.8) for _ in range(5_000)]  # 33 ms median
    health = ConnectionHealth(Now())
    for sample in samples_ms:
        health.latency("a", sample / 1000)
    window = health.window("a")
    cuts = statistics.quantiles(samples_ms, n=100)
    assert window.p50_ms == pytest.approx(cuts[49], rel=0.1)
    assert window.p95_ms == pytest.approx(cuts[94], rel=0.1)


def test_a_connection_never_seen_has_an_empty_window() -> None:
    window = ConnectionHealth(Now()).window("unseen")
    assert (window.p50_ms, window.p95_ms, window.in_flight) == (None, None, 0)
    assert percentile([], 0.5) is None


def test_in_flight_counts_what_entered_and_has_not_left() -> None:
    health = ConnectionHealth(Now())
    for _ in range(3):
        health.entered("a")
    health.left("a")
    assert health.window("a").in_flight == 2
    health.left("a")
    health.left("a")
    assert health.window("a").in_flight == 0


def test_one_latency_repeated_is_read_back_within_the_buckets_width() -> None:
    health = ConnectionHealth(Now())
    for _ in range(20):
        health.latency("a", 0.1)
    window = health.window("a")
    assert window.p50_ms == pytest.approx(100, rel=0.1)
    assert window.p95_ms == pytest.approx(100, rel=0.1)
