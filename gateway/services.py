"""The long-lived services of one gateway process, built once and shared by every
configuration it serves: a reload swaps the configuration, never these.

``build_services`` is the one place their defaults are applied (the configured store, the
system clock, a logger and redactor for the configuration's secrets, spans as configured).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from structlog.typing import FilteringBoundLogger

from gateway.clock import Clock, SystemClock
from gateway.loader import Runtime
from gateway.logging import make_logger
from gateway.metrics import Metrics
from gateway.redact import Redactor
from gateway.resilience import GuardRegistry, full_jitter
from gateway.spans import NoSpans, OtelSpans, Spans
from gateway.store import Store, create_store
from gateway.tokens import Tokens
from gateway.upstream import Transport
from gateway.work import DueWork

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


@dataclass(frozen=True, slots=True)
class Services:
    log: FilteringBoundLogger
    redactor: Redactor  # the log's: a reload adds its new secrets to it
    store: Store
    transport: Transport
    clock: Clock
    metrics: Metrics
    spans: Spans
    guards: GuardRegistry  # breakers, budgets and limits, kept across reloads
    tokens: Tokens  # fetched tokens, per connection, kept across reloads
    rand: Callable[[], float]  # the backoff's jitter
    # The cancellations this process works on now, and how many it takes (server.max_in_flight).
    admission: Admission
    # Wakes this process's settler when a step it queued falls due (settling.py).
    work_due: DueWork = field(default_factory=DueWork)


class Admission:
    """Admission control (CONTRACT §11): at most ``limit`` cancellations in flight in this
    process; one more is refused at once (``overloaded``), before the store is touched."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @property
    def full(self) -> bool:
        return self.in_flight >= self.limit

    def enter(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1


def build_services(
    runtime: Runtime,
    transport: Transport,
    *,
    log: FilteringBoundLogger | None = None,
    redactor: Redactor | None = None,
    clock: Clock | None = None,
    store: Store | None = None,
    metrics: Metrics | None = None,
    tracer_provider: TracerProvider | None = None,
    rand: Callable[[], float] = full_jitter,
) -> Services:
    """Every service, each given one or the default for ``runtime``."""
    redactor = redactor or Redactor(runtime.secrets)
    clock = clock or SystemClock()
    spans: Spans = NoSpans() if tracer_provider is None else OtelSpans(tracer_provider)
    if store is None:
        store = create_store(runtime.config.store, runtime.path.parent)
    return Services(
        log=log or make_logger(level=runtime.config.logging.level, redactor=redactor),
        redactor=redactor,
        store=store,
        transport=transport,
        clock=clock,
        metrics=metrics or Metrics(),
        spans=spans,
        guards=GuardRegistry(clock.monotonic),
        tokens=Tokens(transport, clock, redactor, store),
        rand=rand,
        admission=Admission(runtime.config.server.max_in_flight),
    )
