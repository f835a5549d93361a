"""Emulations of the four built-in providers, served together by ``cancel-gateway simulate``.

Each provider lives under its own path prefix (``/stateset``, ``/shipper``,
``/shoplazza/{shop_domain}``, ``/rxuniverse``) and answers as its document describes: the
verb, the auth header, the body shape, the success body and every documented error. The
object id chooses a scenario (see ``scenarios.py`` and the README's "Simulators" section).
"""

from gateway.simulate.app import create_simulator_app
from gateway.simulate.scenarios import TABLE, Scenario
from gateway.simulate.state import (
    CLOCK_KEY,
    JOURNAL_KEY,
    KEYS_KEY,
    SIMULATED,
    STATE_KEY,
    Journal,
    JournalEntry,
    SimulatorKeys,
    SimulatorState,
)

__all__ = [
    "CLOCK_KEY",
    "JOURNAL_KEY",
    "KEYS_KEY",
    "SIMULATED",
    "STATE_KEY",
    "TABLE",
    "Journal",
    "JournalEntry",
    "Scenario",
    "SimulatorKeys",
    "SimulatorState",
    "create_simulator_app",
]
