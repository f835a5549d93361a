"""What the gateway says of itself: its ``/metrics`` read before and after a measured run, for
what wrk cannot tell apart (a refusal `overloaded` from another non-2xx; the admitted answers'
own latency, which wrk mixes with the refusals')."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

ROUTE = "/v1/cancellations"
DURATION = "cancel_gateway_http_request_duration_seconds"
ANSWERS = "cancel_gateway_http_requests_total"


@dataclass(frozen=True)
class Scrape:
    overloaded: float  # refusals counted by the gateway
    # The cancellation route's answers by HTTP status: le → cumulative count (the histogram).
    durations: dict[str, dict[float, float]]
    statuses: dict[str, float]  # the cancellation route's answers by HTTP status


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    overloaded, statuses = 0.0, dict[str, float]()
    durations: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cancel_gateway_overloaded_total":
                overloaded += sample.value
            labels = sample.labels
            if sample.name == ANSWERS and labels.get("route") == ROUTE:
                status = labels["status"]
                statuses[status] = statuses.get(status, 0.0) + sample.value
            if sample.name == f"{DURATION}_bucket" and labels.get("route") == ROUTE:
                buckets = durations.setdefault(labels["status"], {})
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return Scrape(overloaded, durations, statuses)


def quantile_ms(before: Scrape, after: Scrape, status: str, q: float) -> float | None:
    """The upper bound, in ms, of the histogram bucket that holds the quantile ``q`` of the
    answers with ``status`` between the two scrapes (the gateway's own timing, from a
    request's arrival: a bucket's bound, so an overestimate up to the next bucket)."""
    now, then = after.durations.get(status, {}), before.durations.get(status, {})
    counts = {le: now[le] - then.get(le, 0.0) for le in now}
    total = counts.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for le in sorted(counts):
        if counts[le] >= q * total:
            return le * 1000
    return None


def admitted_p99_ms(before: Scrape, after: Scrape) -> float | None:
    """The 99th percentile of the answers 200 (admitted and cancelled)."""
    return quantile_ms(before, after, "200", 0.99)


def refused_p50_ms(before: Scrape, after: Scrape) -> float | None:
    """The median of the answers 503 (refusals: ``overloaded``, an open breaker)."""
    return quantile_ms(before, after, "503", 0.5)


def overloaded_between(before: Scrape, after: Scrape) -> int:
    return round(after.overloaded - before.overloaded)


def statuses_between(before: Scrape, after: Scrape) -> dict[str, int]:
    """The cancellation route's answers by HTTP status between the two scrapes, by status."""
    counts = {s: round(n - before.statuses.get(s, 0.0)) for s, n in after.statuses.items()}
    return {s: counts[s] for s in sorted(counts) if counts[s]}
