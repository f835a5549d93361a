"""What the gateway says of itself: its ``/metrics`` read before and after a measured run, for
what wrk cannot tell apart (a refusal `overloaded` from another non-2xx; the admitted answers'
own latency, which wrk mixes with the refusals')."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

ROUTE = "/v1/cancellations"
DURATION = "cancel_gateway_http_request_duration_seconds"


@dataclass(frozen=True)
class Scrape:
    overloaded: float  # refusals counted by the gateway
    admitted: dict[float, float]  # 200 answers on the cancellation route: le → cumulative count


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    overloaded, admitted = 0.0, dict[float, float]()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cancel_gateway_overloaded_total":
                overloaded += sample.value
            labels = sample.labels
            if (
                sample.name == f"{DURATION}_bucket"
                and labels.get("route") == ROUTE
                and labels.get("status") == "200"
            ):
                le = float(labels["le"])
                admitted[le] = admitted.get(le, 0.0) + sample.value
    return Scrape(overloaded, admitted)


def admitted_p99_ms(before: Scrape, after: Scrape) -> float | None:
    """The upper bound, in ms, of the histogram bucket that holds the 99th percentile of the
    answers admitted between the two scrapes (the gateway's own timing, from a request's
    arrival: a bucket's bound, so an overestimate up to the next bucket)."""
    counts = {le: after.admitted[le] - before.admitted.get(le, 0.0) for le in after.admitted}
    total = counts.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for le in sorted(counts):
        if counts[le] >= 0.99 * total:
            return le * 1000
    return None


def overloaded_between(before: Scrape, after: Scrape) -> int:
    return round(after.overloaded - before.overloaded)
