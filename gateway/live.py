"""The configuration the gateway serves, replaced whole and at once by a reload.

A request takes the current ``Live`` when it starts and keeps it to the end, so a reload never
changes the rules under a request in flight. A configuration that fails to load is refused and
the old one keeps serving. Connections whose settings did not change keep their breakers,
budgets and limits (``GuardRegistry``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from gateway.cancel import Canceller
from gateway.clock import Clock, SystemClock
from gateway.loader import Runtime
from gateway.metrics import Metrics
from gateway.problems import ConfigError, Problem
from gateway.redact import Redactor
from gateway.resilience import GuardRegistry
from gateway.routing import Callers
from gateway.spans import NoSpans, Spans
from gateway.store import Store
from gateway.upstream import Transport

# Settings read once when the server starts: a reload that changes them warns.
RESTART_ONLY = ("server", "logging", "tracing", "store")


@dataclass(frozen=True, slots=True)
class Live:
    runtime: Runtime
    callers: Callers
    canceller: Canceller

    @property
    def version(self) -> str:
        return self.runtime.version


class LiveConfig:
    """Holds the current ``Live`` and replaces it on reload."""

    def __init__(
        self,
        runtime: Runtime,
        log: FilteringBoundLogger,
        redactor: Redactor,
        store: Store,
        clock: Clock | None = None,
        loader: Callable[[], Runtime] | None = None,
        *,
        metrics: Metrics | None = None,
        spans: Spans | None = None,
    ) -> None:
        self.store = store  # one for the life of the process: a reload keeps it
        self._first = runtime
        self._log = log
        self._redactor = redactor
        self._clock = clock or SystemClock()
        self._loader = loader
        self.guards = GuardRegistry(self._clock.monotonic)  # kept across reloads
        self.metrics = metrics or Metrics()
        self._spans = spans or NoSpans()
        self._transport: Transport | None = None
        self._lock = asyncio.Lock()
        self._live: Live | None = None

    @property
    def current(self) -> Live:
        assert self._live is not None, "start() first"
        return self._live

    @property
    def first_runtime(self) -> Runtime:
        return self._first

    def start(self, transport: Transport) -> None:
        self._transport = transport
        self._live = self._build(self._first)

    async def reload(self) -> Live:
        """Load the configuration again and serve it; ``ConfigError`` leaves the old one."""
        if self._loader is None:
            raise ConfigError([Problem("", "", "this gateway was not started from a file")])
        async with self._lock:
            old = self.current
            try:
                runtime = await asyncio.to_thread(self._loader)
            except ConfigError as exc:
                self._log.error(
                    "config.reload_failed",
                    config_version=old.version,
                    problems=[str(p) for p in exc.problems],
                )
                raise
            self._redactor.add(runtime.secrets)
            self._live = self._build(runtime)
            self._log.info(
                "config.reloaded",
                config_version=runtime.version,
                previous_version=old.version,
                connections=sorted(runtime.targets),
            )
            changed = [
                key
                for key in RESTART_ONLY
                if getattr(runtime.config, key) != getattr(old.runtime.config, key)
            ]
            if changed:
                self._log.warning(
                    "config.restart_needed",
                    config_version=runtime.version,
                    sections=changed,
                    message="these sections take effect at the next start",
                )
            return self._live

    def _build(self, runtime: Runtime) -> Live:
        assert self._transport is not None
        canceller = Canceller(
            runtime,
            self._transport,
            self._log,
            self._clock,
            store=self.store,
            guards=self.guards,
            metrics=self.metrics,
            spans=self._spans,
        )
        return Live(runtime, Callers(runtime.config.callers), canceller)
