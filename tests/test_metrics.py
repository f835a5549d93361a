"""The gateway's metrics as a scrape shows them: each ``Metrics`` method, read back from the
Prometheus text that ``exposition()`` renders, with no server."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.config import BreakerSettings, LimitSettings, RetrySettings
from gateway.metrics import LATENCY_BUCKETS, REQUEST_BUCKETS, Metrics
from gateway.resilience import BreakerState, CircuitBreaker, Guards, Policy

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: bytes) -> Samples:
    """Every sample of a scrape, by name and labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """One sample's value, None when the scrape has no such sample."""
    return samples(metrics.exposition()).get((name, frozenset(labels.items())))


def names(metrics: Metrics, name: str) -> list[dict[str, str]]:
    """The label sets of every sample called ``name``."""
    return [dict(labels) for (n, labels) in samples(metrics.exposition()) if n == name]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def policy(failures: int = 1, open_s: float = 5.0) -> Policy:
    return Policy(
        timeout_s=10.0,
        connect_timeout_s=3.0,
        attempt_timeout_s=None,
        retry=RetrySettings(),
        breaker=BreakerSettings(failures=failures, open_s=open_s),
        limits=LimitSettings(),
    )


def test_http_answers_are_counted_by_method_route_and_status():
    """http_answered adds one to the sample with its method (lower case, as every label value
    of the gateway), route and status as labels."""
    metrics = Metrics()
    metrics.http_answered("POST", "/v1/cancellations", 200)
    metrics.http_answered("POST", "/v1/cancellations", 200)
    metrics.http_answered("GET", "unmatched", 404)
    name = "cancel_gateway_http_requests_total"
    assert value(metrics, name, method="post", route="/v1/cancellations", status="200") == 2
    assert value(metrics, name, method="get", route="unmatched", status="404") == 1
    assert value(metrics, name, method="get", route="/v1/cancellations", status="200") is None
    assert names(metrics, name) == [
        {"method": "post", "route": "/v1/cancellations", "status": "200"},
        {"method": "get", "route": "unmatched", "status": "404"},
    ]


def test_answer_durations_fill_a_histogram_by_method_route_and_status():
    """An answer's duration lands in cancel_gateway_http_request_duration_seconds, from 1 ms
    to 30 s buckets; an answer without one (a request that was never parsed) is only
    counted."""
    metrics = Metrics()
    metrics.http_answered("POST", "/v1/cancellations", 200, 0.0008)
    metrics.http_answered("POST", "/v1/cancellations", 200, 0.3)
    metrics.http_answered("POST", "/v1/cancellations", 200, 12.0)
    metrics.http_answered("GET", "unparsed", 400)
    name = "cancel_gateway_http_request_duration_seconds"
    labels = {"method": "post", "route": "/v1/cancellations", "status": "200"}
    buckets = {
        found["le"]: value(metrics, name + "_bucket", **found)
        for found in names(metrics, name + "_bucket")
    }
    assert len(buckets) == len(REQUEST_BUCKETS) + 1
    assert (REQUEST_BUCKETS[0], REQUEST_BUCKETS[-1]) == (0.001, 30.0)
    assert (buckets["0.001"], buckets["0.25"], buckets["0.5"], buckets["10.0"]) == (1, 1, 2, 2)
    assert (buckets["30.0"], buckets["+Inf"]) == (3, 3)
    assert value(metrics, name + "_count", **labels) == 3
    assert abs((value(metrics, name + "_sum", **labels) or 0) - 12.3008) < 1e-9
    assert [found["route"] for found in names(metrics, name + "_count")] == ["/v1/cancellations"]
    http = "cancel_gateway_http_requests_total"
    assert value(metrics, http, method="get", route="unparsed", status="400") == 1


def test_no_created_series_is_exposed():
    """Counters and histograms come without prometheus-client's `_created` series."""
    metrics = Metrics()
    metrics.http_answered("GET", "/healthz", 200, 0.001)
    metrics.replayed()
    metrics.attempt_finished("rx", "rxuniverse", 200, None, 0.01)
    text = metrics.exposition().decode()
    assert "cancel_gateway_http_requests_total{" in text
    assert "_created" not in text


def test_build_info_names_the_version_and_the_config_version_served():
    """cancel_gateway_build_info is 1 for the gateway's version and the configuration served;
    serving another replaces it, and there is none before a configuration is served."""
    metrics = Metrics()
    name = "cancel_gateway_build_info"
    assert names(metrics, name) == []
    metrics.config_served("aaaa11112222")
    assert names(metrics, name) == [{"version": __version__, "config_version": "aaaa11112222"}]
    assert value(metrics, name, version=__version__, config_version="aaaa11112222") == 1
    metrics.config_served("bbbb33334444")
    metrics.config_served("bbbb33334444")
    assert names(metrics, name) == [{"version": __version__, "config_version": "bbbb33334444"}]
    assert value(metrics, name, version=__version__, config_version="bbbb33334444") == 1


def test_the_process_and_the_platform_are_described():
    """A scrape has this process's CPU, memory, file descriptors and start time, and
    python_info naming the interpreter."""
    found = samples(Metrics().exposition())
    own = {name: v for (name, labels), v in found.items() if not labels}
    assert own["process_cpu_seconds_total"] > 0
    assert own["process_resident_memory_bytes"] > 1_000_000
    assert own["process_open_fds"] >= 3
    assert own["process_max_fds"] >= own["process_open_fds"]
    assert 0 < time.time() - own["process_start_time_seconds"] < 24 * 3600
    [info] = [dict(labels) for (name, labels) in found if name == "python_info"]
    assert info["version"] == platform.python_version()
    assert info["implementation"] == platform.python_implementation()


def test_with_workers_the_process_metrics_are_each_live_workers_own(tmp_path: Path):
    """In multiprocess mode (a metrics folder), a scrape reports the process metrics of every
    process that wrote samples there and shares this one's parent, labelled with its pid; a
    process that is gone, or no sibling, is left out."""
    # prometheus-client names a process's sample files <kind>_<pid>.db.
    for pid in (os.getpid(), 1, 4_194_304):  # this process, init (no sibling), no process
        MmapedDict(str(tmp_path / f"counter_{pid}.db")).close()
    found = samples(Metrics(str(tmp_path)).exposition())
    cpu = {dict(labels)["pid"] for (name, labels) in found if name == "process_cpu_seconds_total"}
    assert cpu == {str(os.getpid())}
    rss = found[("process_resident_memory_bytes", frozenset({("pid", str(os.getpid()))}))]
    assert rss > 1_000_000
    assert sum(1 for (name, _) in found if name == "python_info") == 1


def test_cancellations_are_counted_with_empty_labels_for_what_is_unknown():
    """cancellation_completed labels connection/provider/status/error_code; None becomes ''."""
    metrics = Metrics()
    metrics.cancellation_completed("rx", "rxuniverse", "cancelled", None)
    metrics.cancellation_completed("rx", "rxuniverse", "rejected", "not_found")
    metrics.cancellation_completed("rx", "rxuniverse", "rejected", "not_found")
    metrics.cancellation_completed(None, None, "rejected", "unknown_connection")
    name = "cancel_gateway_cancellations_total"
    assert (
        value(
            metrics, name, connection="rx", provider="rxuniverse", status="cancelled", error_code=""
        )
        == 1
    )
    assert (
        value(
            metrics,
            name,
            connection="rx",
            provider="rxuniverse",
            status="rejected",
            error_code="not_found",
        )
        == 2
    )
    assert (
        value(
            metrics,
            name,
            connection="",
            provider="",
            status="rejected",
            error_code="unknown_connection",
        )
        == 1
    )
    assert len(names(metrics, name)) == 3


def test_replays_are_counted():
    """replayed adds one to cancel_gateway_idempotent_replays_total, which starts at 0."""
    metrics = Metrics()
    assert value(metrics, "cancel_gateway_idempotent_replays_total") == 0
    metrics.replayed()
    metrics.replayed()
    assert value(metrics, "cancel_gateway_idempotent_replays_total") == 2


def test_attempts_are_counted_by_the_class_of_their_answer_or_failure():
    """attempt_finished: an HTTP status counts as its class (2xx, 4xx, 5xx), no answer as
    timeout or error."""
    metrics = Metrics()
    for status in (200, 204, 404, 503, 302):
        metrics.attempt_finished("rx", "rxuniverse", status, None, 0.01)
    metrics.attempt_finished("rx", "rxuniverse", None, "timeout", 1.0)
    metrics.attempt_finished("rx", "rxuniverse", None, "error", 0.001)
    metrics.attempt_finished("rx", "rxuniverse", None, None, 0.001)
    name = "cancel_gateway_upstream_attempts_total"
    found = {labels["result"]: value(metrics, name, **labels) for labels in names(metrics, name)}
    assert found == {"2xx": 2, "3xx": 1, "4xx": 1, "5xx": 1, "timeout": 1, "error": 2}
    assert all(
        labels["connection"] == "rx" and labels["provider"] == "rxuniverse"
        for labels in names(metrics, name)
    )


def test_attempt_latency_fills_the_histogram_of_its_connection():
    """Each attempt's latency lands in the connection's histogram: cumulative buckets, count
    and sum."""
    metrics = Metrics()
    metrics.attempt_finished("rx", "rxuniverse", 200, None, 0.003)
    metrics.attempt_finished("rx", "rxuniverse", 200, None, 0.03)
    metrics.attempt_finished("rx", "rxuniverse", None, "timeout", 3.0)
    metrics.attempt_finished("other", "shipper", 200, None, 0.2)
    name = "cancel_gateway_upstream_latency_seconds"
    buckets = {
        labels["le"]: value(metrics, name + "_bucket", **labels)
        for labels in names(metrics, name + "_bucket")
        if labels["connection"] == "rx"
    }
    assert len(buckets) == len(LATENCY_BUCKETS) + 1  # and +Inf
    assert buckets["0.005"] == 1
    assert buckets["0.025"] == 1
    assert buckets["0.05"] == 2
    assert buckets["2.5"] == 2
    assert buckets["5.0"] == 3
    assert buckets["+Inf"] == 3
    assert value(metrics, name + "_count", connection="rx") == 3
    assert abs((value(metrics, name + "_sum", connection="rx") or 0) - 3.033) < 1e-9
    assert value(metrics, name + "_count", connection="other") == 1


def test_retries_budget_refusals_and_unmapped_errors_are_counted_by_their_labels():
    """retried (by reason), retry_budget_exhausted, refused (by reason) and unmapped_error (by
    provider status, '' without one) each count under their own labels."""
    metrics = Metrics()
    metrics.retried("rx", "answered_503")
    metrics.retried("rx", "answered_503")
    metrics.retried("rx", "not_sent")
    metrics.retry_budget_exhausted("rx")
    metrics.refused("rx", "breaker_open")
    metrics.refused("rx", "rate_limit")
    metrics.refused("rx", "breaker_open")
    metrics.unmapped_error("rx", "rxuniverse", 418)
    metrics.unmapped_error("rx", "rxuniverse", None)
    retries = "cancel_gateway_upstream_retries_total"
    assert value(metrics, retries, connection="rx", reason="answered_503") == 2
    assert value(metrics, retries, connection="rx", reason="not_sent") == 1
    assert value(metrics, "cancel_gateway_retry_budget_exhausted_total", connection="rx") == 1
    refusals = "cancel_gateway_upstream_refusals_total"
    assert value(metrics, refusals, connection="rx", reason="breaker_open") == 2
    assert value(metrics, refusals, connection="rx", reason="rate_limit") == 1
    assert value(metrics, refusals, connection="rx", reason="concurrency") is None
    unmapped = "cancel_gateway_unmapped_errors_total"
    assert (
        value(metrics, unmapped, connection="rx", provider="rxuniverse", provider_status="418") == 1
    )
    assert value(metrics, unmapped, connection="rx", provider="rxuniverse", provider_status="") == 1


def test_breaker_state_values_are_0_closed_1_half_open_2_open():
    """breaker_seen sets the connection's gauge to 0, 1 or 2 by state."""
    metrics = Metrics()
    name = "cancel_gateway_breaker_state"
    metrics.breaker_seen("a", BreakerState.CLOSED)
    metrics.breaker_seen("b", BreakerState.HALF_OPEN)
    metrics.breaker_seen("c", BreakerState.OPEN)
    assert value(metrics, name, connection="a") == 0
    assert value(metrics, name, connection="b") == 1
    assert value(metrics, name, connection="c") == 2
    metrics.breaker_seen("c", BreakerState.CLOSED)
    assert value(metrics, name, connection="c") == 0


def test_exposition_refreshes_breaker_states_from_the_guards():
    """A scrape reads each breaker's state as the next request would find it: closed 0, open
    2, and open with its wait over 1 (half open) though no request came to notice it."""
    clock = Clock()
    guards = Guards.create(policy(failures=1, open_s=5.0), clock)
    other = Guards.create(policy(), clock)
    metrics = Metrics()
    name = "cancel_gateway_breaker_state"

    def scrape() -> Samples:
        return samples(metrics.exposition([("rx", guards), ("calm", other)]))

    key = (name, frozenset({("connection", "rx")}))
    assert scrape()[key] == 0
    assert guards.breaker.admit()
    guards.breaker.record(failed=True)
    assert scrape()[key] == 2
    clock.t += 4.9
    assert scrape()[key] == 2
    clock.t += 0.2
    assert guards.breaker.state is BreakerState.OPEN  # nothing noticed the wait is over
    assert scrape()[key] == 1
    assert guards.breaker.admit()  # the probe
    guards.breaker.record(failed=False)
    assert scrape()[key] == 0
    assert scrape()[(name, frozenset({("connection", "calm")}))] == 0


def test_circuit_breaker_effective_state_with_an_injected_clock():
    """CircuitBreaker.effective_state: OPEN while its wait runs, HALF_OPEN once it is over."""
    clock = Clock()
    breaker = CircuitBreaker(BreakerSettings(failures=2, open_s=1.0), clock)
    breaker.record(failed=True)
    assert breaker.effective_state() is BreakerState.CLOSED
    breaker.record(failed=True)
    assert breaker.effective_state() is BreakerState.OPEN
    clock.t += 1.0
    assert breaker.effective_state() is BreakerState.HALF_OPEN


def test_two_instances_do_not_share_values():
    """Each Metrics has its own registry: what one counts, the other does not show."""
    first, second = Metrics(), Metrics()
    first.http_answered("GET", "/healthz", 200)
    first.replayed()
    first.cancellation_completed("rx", "rxuniverse", "cancelled", None)
    first.breaker_seen("rx", BreakerState.OPEN)
    first.config_served("aaaa11112222")
    assert value(first, "cancel_gateway_idempotent_replays_total") == 1
    assert value(second, "cancel_gateway_idempotent_replays_total") == 0
    assert names(second, "cancel_gateway_http_requests_total") == []
    assert names(second, "cancel_gateway_cancellations_total") == []
    assert names(second, "cancel_gateway_breaker_state") == []
    assert names(second, "cancel_gateway_build_info") == []
    second.http_answered("GET", "/healthz", 200)
    assert (
        value(
            first,
            "cancel_gateway_http_requests_total",
            method="get",
            route="/healthz",
            status="200",
        )
        == 1
    )


def test_exposition_declares_every_family_with_its_type():
    """The scrape declares each metric of the gateway, the process's and the platform's with
    the Prometheus type it has."""
    families = text_string_to_metric_families(Metrics().exposition().decode())
    types = {f.name: f.type for f in families}
    assert types == {
        "cancel_gateway_http_requests": "counter",
        "cancel_gateway_http_request_duration_seconds": "histogram",
        "cancel_gateway_build_info": "gauge",
        "cancel_gateway_cancellations": "counter",
        "cancel_gateway_idempotent_replays": "counter",
        "cancel_gateway_upstream_attempts": "counter",
        "cancel_gateway_upstream_latency_seconds": "histogram",
        "cancel_gateway_upstream_retries": "counter",
        "cancel_gateway_retry_budget_exhausted": "counter",
        "cancel_gateway_upstream_probes": "counter",
        "cancel_gateway_upstream_refusals": "counter",
        "cancel_gateway_breaker_state": "gauge",
        "cancel_gateway_unmapped_errors": "counter",
        "cancel_gateway_pending_cancellations": "gauge",
        "cancel_gateway_oldest_pending_age_seconds": "gauge",
        "cancel_gateway_settle_seconds": "histogram",
        "cancel_gateway_webhook_deliveries": "counter",
        "cancel_gateway_overloaded": "counter",
        "process_cpu_seconds": "counter",
        "process_virtual_memory_bytes": "gauge",
        "process_resident_memory_bytes": "gauge",
        "process_start_time_seconds": "gauge",
        "process_open_fds": "gauge",
        "process_max_fds": "gauge",
        "python_info": "gauge",
    }


def test_a_method_a_client_made_up_is_counted_as_other() -> None:
    """Any token is a valid HTTP method: made-up ones share one series, not one each."""
    metrics = Metrics()
    for method in ("BREW", "FOO1", "FOO2", "post"):
        metrics.http_answered(method, "unmatched", 405)
    metrics.http_answered("POST", "/v1/cancellations", 200)
    text = metrics.exposition().decode()
    assert 'method="other",route="unmatched",status="405"} 4.0' in text
    assert "BREW" not in text
    assert 'method="post",route="/v1/cancellations",status="200"} 1.0' in text
