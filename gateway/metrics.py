"""Prometheus metrics, through ``prometheus-client``: one registry per app, updated where
things happen, exposed at ``GET /metrics``.

With ``--workers N`` every process writes its samples to files in one folder (the client's
multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR``, set by the CLI before the workers start), and
whichever worker answers a scrape adds up all of them, so a scrape sees the whole server.

Labels are bounded by the configuration: a connection name is a label only once the request
was routed to a configured connection, never as the caller typed it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.resilience import BreakerState, Guards

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Upstream latency, seconds: loopback answers to a provider at the edge of its budget.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
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
        self._multiprocess_dir = multiprocess_dir
        self._breaker_states: dict[str, BreakerState] = {}
        self.registry = registry = CollectorRegistry()
        self._http = Counter(
            "cancel_gateway_http_requests",
            "Answers of the API, by method, route and HTTP status.",
            ["method", "route", "status"],
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

        # The children of the metrics every request touches.
        self._http_child = _Children(self._http)
        self._cancellations_child = _Children(self._cancellations)
        self._attempts_child = _Children(self._attempts)
        self._latency_child = _Children(self._latency)

    def http_answered(self, method: str, route: str, status: int) -> None:
        # Any token is a valid method: one a client made up must not become a series.
        method = method if method in _METHODS else "other"
        self._http_child(method, route, str(status)).inc()

    def cancellation_completed(
        self, connection: str | None, provider: str | None, status: str, error_code: str | None
    ) -> None:
        self._cancellations_child(connection or "", provider or "", status, error_code or "").inc()

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

    def retried(self, connection: str, reason: str) -> None:
        self._retries.labels(connection, reason).inc()

    def retry_budget_exhausted(self, connection: str) -> None:
        self._budget_exhausted.labels(connection).inc()

    def refused(self, connection: str, reason: str) -> None:
        self._refusals.labels(connection, reason).inc()

    def breaker_seen(self, connection: str, state: BreakerState) -> None:
        """Called around every attempt: the gauge is written only when the state changed."""
        if self._breaker_states.get(connection) is not state:
            self._breaker_states[connection] = state
            self._breaker.labels(connection).set(BREAKER_VALUES[state])

    def unmapped_error(self, connection: str, provider: str, provider_status: int | None) -> None:
        status = "" if provider_status is None else str(provider_status)
        self._unmapped.labels(connection, provider, status).inc()

    def exposition(self, guards: Iterable[tuple[str, Guards]] = ()) -> bytes:
        """The text format; ``guards`` refreshes the breaker states first (an open breaker
        whose wait is over is half open, though no request has come to notice it)."""
        for name, guard in guards:
            self.breaker_seen(name, guard.breaker.effective_state())
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
