"""Prometheus metrics, through ``prometheus-client``: one registry per app, updated where
things happen, exposed at ``GET /metrics``.

With ``--workers N`` every process writes its samples to files in one folder (the client's
multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR``, set by the CLI before the workers start), and
whichever worker answers a scrape adds up all of them, so a scrape sees the whole server.

Labels are bounded by the configuration: a connection name is a label only once the request
was routed to a configured connection, never as the caller typed it. The gateway's own label
values are snake_case words (``not_sent``, ``breaker_open``, ``other``), HTTP methods included
(``post``, as Prometheus's own Go client writes them); names that come from elsewhere (routes,
connections, providers, versions) are kept as they are.

Besides the gateway's metrics a scrape has the process's (``process_*``: CPU, memory, file
descriptors, start time) and Python's (``python_info``). With several workers, each worker's
process metrics are read from ``/proc`` when a scrape comes, labelled with its ``pid``: one
worker's figures under the server's name would change with whichever worker answered.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.health import ConnectionHealth
from gateway.resilience import BreakerState, Guards

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Upstream latency, seconds: loopback answers to a provider at the edge of its budget.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The API's answers, seconds: a refusal in a millisecond to a cancellation at its budget's end.
REQUEST_BUCKETS = (0.001, 0.0025, *LATENCY_BUCKETS)
_METHODS = {m: m.lower() for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}
BUILD_INFO = "cancel_gateway_build_info"
# prometheus-client names a process's sample files <kind>_<pid>.db: a release that renames them
# fails tests/e2e/test_workers_metrics.py (no worker's process metrics any more).
_PID = re.compile(r"_(\d+)\.db$")
BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class _Children:
    """A labelled metric's children, looked up once per set of label values: the client
    checks the values and takes a lock on every ``labels()`` call, several per request."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._by_values: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._by_values.get(values)
        if child is None:
            child = self._by_values[values] = self._metric.labels(*values)
        return child


class Metrics:
    """Every metric of the gateway. Methods are named after what happened."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        # A counter's creation time doubles every series and no query here needs it. The
        # switch is the client's, for the whole process: every Metrics turns it off alike.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self._breaker_states: dict[str, BreakerState] = {}
        # The same events, kept for the console by connection and minute (GET
        # /v1/connections/health): what a scrape cannot give a page without Prometheus.
        self.health = ConnectionHealth()
        self._served: tuple[str, str] | None = None
        self.registry = registry = CollectorRegistry()
        self._http = Counter(
            "cancel_gateway_http_requests",
            "Answers of the API, by method, route and HTTP status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self._http_duration = Histogram(
            "cancel_gateway_http_request_duration_seconds",
            "Time from a request's arrival to its answer, by method, route and HTTP status.",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._build = Gauge(
            BUILD_INFO,
            "Always 1: the gateway's version and the configuration version it serves (with "
            "several workers, every version one of them serves).",
            ["version", "config_version"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._cancellations = Counter(
            "cancel_gateway_cancellations",
            "Cancellations answered, by connection, provider, envelope status and error code "
            "(empty when routing did not get that far, or when it succeeded).",
            ["connection", "provider", "status", "error_code"],
            registry=registry,
        )
        self._replays = Counter(
            "cancel_gateway_idempotent_replays",
            "Answers replayed from the store for a repeated Idempotency-Key.",
            registry=registry,
        )
        self._attempts = Counter(
            "cancel_gateway_upstream_attempts",
            "Requests sent to providers, by the class of their answer: 2xx, 3xx, 4xx, 5xx, "
            "or timeout / error when none came.",
            ["connection", "provider", "result"],
            registry=registry,
        )
        self._latency = Histogram(
            "cancel_gateway_upstream_latency_seconds",
            "Time from sending one attempt to its answer or failure.",
            ["connection"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._retries = Counter(
            "cancel_gateway_upstream_retries",
            "Attempts repeated, by reason (not_sent, no_answer, answered_503, rate_limited, ...).",
            ["connection", "reason"],
            registry=registry,
        )
        self._probes = Counter(
            "cancel_gateway_upstream_probes",
            "Status probes after an unknown outcome, by what they found (cancelled, "
            "not_cancelled, not_found, pending, unknown).",
            ["connection", "result"],
            registry=registry,
        )
        self._budget_exhausted = Counter(
            "cancel_gateway_retry_budget_exhausted",
            "Retries refused because the connection's retry budget was spent.",
            ["connection"],
            registry=registry,
        )
        self._refusals = Counter(
            "cancel_gateway_upstream_refusals",
            "Attempts not sent because of a local guard: breaker_open, rate_limit, concurrency.",
            ["connection", "reason"],
            registry=registry,
        )
        self._breaker = Gauge(
            "cancel_gateway_breaker_state",
            "Circuit breaker per connection: 0 closed, 1 half open (a probe may go), 2 open.",
            ["connection"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._unmapped = Counter(
            "cancel_gateway_unmapped_errors",
            "Provider errors that no rule of the provider's definition matched, decided by the "
            "generic table: a definition that needs a new rule.",
            ["connection", "provider", "provider_status"],
            registry=registry,
        )
        self._pending = Gauge(
            "cancel_gateway_pending_cancellations",
            "Cancellations not settled yet (pending), in the whole store.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._oldest_pending = Gauge(
            "cancel_gateway_oldest_pending_age_seconds",
            "Age of the oldest pending cancellation in the store (0 when there is none).",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._settle_time = Histogram(
            "cancel_gateway_settle_seconds",
            "From a cancellation's request to its final outcome, for those settled in the "
            "background (pending, asynchronous, recovered after a crash).",
            ["connection", "status"],
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400),
            registry=registry,
        )
        self._overloaded = Counter(
            "cancel_gateway_overloaded",
            "Cancellations refused at once because the process had server.max_in_flight in "
            "flight (503 overloaded).",
            registry=registry,
        )
        self._webhooks = Counter(
            "cancel_gateway_webhook_deliveries",
            "Webhook deliveries by result (delivered, http_error, timeout, connection_error).",
            ["caller", "result"],
            registry=registry,
        )

        # The children of the metrics every request touches.
        self._http_child = _Children(self._http)
        self._http_duration_child = _Children(self._http_duration)
        self._cancellations_child = _Children(self._cancellations)
        self._attempts_child = _Children(self._attempts)
        self._latency_child = _Children(self._latency)

        if multiprocess_dir is None:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            self._exposed = registry
        else:
            self._exposed = CollectorRegistry()
            _Served(self._exposed, path=multiprocess_dir)  # type: ignore[no-untyped-call]
            _WorkerProcesses(multiprocess_dir, self._exposed)
            PlatformCollector(registry=self._exposed)

    def http_answered(
        self, method: str, route: str, status: int, duration_s: float | None = None
    ) -> None:
        """One answer of the API; ``duration_s`` when its arrival is known."""
        # Any token is a valid method: one a client made up must not become a series.
        labels = (_METHODS.get(method, "other"), route, str(status))
        self._http_child(*labels).inc()
        if duration_s is not None:
            self._http_duration_child(*labels).observe(duration_s)

    def config_served(self, config_version: str) -> None:
        """The configuration this process serves from now on (at start, after a reload)."""
        served = (__version__, config_version)
        if served == self._served:
            return
        if self._served is not None:
            # With several workers a removed series stays in this process's file with its
            # last value: 0 there, and a scrape leaves out the versions nobody serves.
            self._build.labels(*self._served).set(0)
            self._build.remove(*self._served)
        self._build.labels(*served).set(1)
        self._served = served

    def cancellation_completed(
        self, connection: str | None, provider: str | None, status: str, error_code: str | None
    ) -> None:
        self._cancellations_child(connection or "", provider or "", status, error_code or "").inc()
        if connection:
            self.health.outcome(connection, status)

    def replayed(self) -> None:
        self._replays.inc()

    def attempt_finished(
        self,
        connection: str,
        provider: str,
        http_status: int | None,
        failure: str | None,
        latency_s: float,
    ) -> None:
        """One attempt ended: ``http_status`` when an answer came, else ``failure``."""
        result = f"{http_status // 100}xx" if http_status is not None else failure or "error"
        self._attempts_child(connection, provider, result).inc()
        self._latency_child(connection).observe(latency_s)
        self.health.latency(connection, latency_s)

    def retried(self, connection: str, reason: str) -> None:
        self._retries.labels(connection, reason).inc()

    def probed(self, connection: str, result: str) -> None:
        self._probes.labels(connection, result).inc()

    def retry_budget_exhausted(self, connection: str) -> None:
        self._budget_exhausted.labels(connection).inc()

    def refused(self, connection: str, reason: str) -> None:
        self._refusals.labels(connection, reason).inc()
        if reason == "rate_limit":
            self.health.rate_limited(connection)

    def breaker_seen(self, connection: str, state: BreakerState) -> None:
        """Called around every attempt: the gauge is written only when the state changed."""
        if self._breaker_states.get(connection) is not state:
            self._breaker_states[connection] = state
            self._breaker.labels(connection).set(BREAKER_VALUES[state])

    def pending_seen(self, count: int, oldest_age_s: float) -> None:
        self._pending.set(count)
        self._oldest_pending.set(oldest_age_s)

    def settled(self, connection: str | None, status: str, settle_s: float) -> None:
        self._settle_time.labels(connection or "", status).observe(max(settle_s, 0.0))

    def overloaded(self) -> None:
        self._overloaded.inc()

    def webhook_delivered(self, caller: str, result: str) -> None:
        self._webhooks.labels(caller, result).inc()

    def unmapped_error(self, connection: str, provider: str, provider_status: int | None) -> None:
        status = "" if provider_status is None else str(provider_status)
        self._unmapped.labels(connection, provider, status).inc()
        self.health.unmapped(connection)

    def exposition(self, guards: Iterable[tuple[str, Guards]] = ()) -> bytes:
        """The text format; ``guards`` refreshes the breaker states first (an open breaker
        whose wait is over is half open, though no request has come to notice it)."""
        for name, guard in guards:
            self.breaker_seen(name, guard.breaker.effective_state())
        return generate_latest(self._exposed)


class _Served(MultiProcessCollector):
    """Every worker's samples, without the build information of versions no longer served."""

    def collect(self) -> Iterator[Metric]:
        for metric in super().collect():  # type: ignore[no-untyped-call]
            if metric.name == BUILD_INFO:
                metric.samples = [sample for sample in metric.samples if sample.value]
            yield metric


class _WorkerProcesses(Collector):
    """The process metrics of every worker alive, each labelled with its pid. The workers are
    the processes that wrote samples to the folder and share this worker's parent; the
    parent, which only starts them and passes signals on, is not among them."""

    def __init__(self, folder: str, registry: CollectorRegistry) -> None:
        self._folder = folder
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in self._workers():
            for found in _process(pid).collect():
                family = families.setdefault(
                    found.name, Metric(found.name, found.documentation, found.type)
                )
                for sample in found.samples:
                    labels = {**sample.labels, "pid": str(pid)}
                    family.add_sample(sample.name, labels, sample.value)
        yield from families.values()

    def _workers(self) -> list[int]:
        pids = set()
        for name in os.listdir(self._folder):
            match = _PID.search(name)
            if match is not None:
                pids.add(int(match.group(1)))
        parent = os.getppid()
        return sorted(pid for pid in pids if _parent_of(pid) == parent)


def _process(pid: int) -> ProcessCollector:
    return ProcessCollector(pid=lambda: pid, registry=None)


def _parent_of(pid: int) -> int | None:
    """The parent's pid, from ``/proc/<pid>/stat``; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
