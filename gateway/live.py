"""The configuration the gateway serves, replaced whole and at once by a reload.

A request takes the current ``Live`` when it starts and keeps it to the end, so a reload never
changes the rules under a request in flight. A configuration that fails to load is refused and
the old one keeps serving. The services (store, guards, metrics, ...) are the process's and
outlive every configuration: connections whose settings did not change keep their breakers,
budgets and limits (``GuardRegistry``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from gateway.cancel import Canceller
from gateway.loader import Runtime
from gateway.problems import ConfigError, Problem
from gateway.routing import Callers
from gateway.services import Services

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
    """Holds the current ``Live`` and replaces it on reload; ``cancel_gateway_build_info``
    names the version served from the moment it is."""

    def __init__(
        self,
        runtime: Runtime,
        services: Services,
        loader: Callable[[], Runtime] | None = None,
    ) -> None:
        self._services = services
        self._loader = loader
        self._lock = asyncio.Lock()
        self._live = self._build(runtime)

    @property
    def current(self) -> Live:
        return self._live

    async def reload(self) -> Live:
        """Load the configuration again and serve it; ``ConfigError`` leaves the old one."""
        if self._loader is None:
            raise ConfigError([Problem("", "", "this gateway was not started from a file")])
        log = self._services.log
        async with self._lock:
            old = self.current
            try:
                runtime = await asyncio.to_thread(self._loader)
            except ConfigError as exc:
                log.error(
                    "config.reload_failed",
                    config_version=old.version,
                    problems=[str(p) for p in exc.problems],
                )
                raise
            self._services.redactor.add(runtime.secrets)
            self._live = self._build(runtime)
            log.info(
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
                log.warning(
                    "config.restart_needed",
                    config_version=runtime.version,
                    sections=changed,
                    message="these sections take effect at the next start",
                )
            return self._live

    def _build(self, runtime: Runtime) -> Live:
        live = Live(runtime, Callers(runtime.config.callers), Canceller(runtime, self._services))
        self._services.metrics.config_served(live.version)
        return live
