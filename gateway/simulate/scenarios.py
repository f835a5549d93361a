"""Scenarios: the object id chooses how a simulated provider answers.

An id that starts with one of these words (case-insensitive) plays that scenario; any other
id is an ordinary object that cancels successfully once and then answers the provider's
"already" outcome. A scenario named for some providers only is an ordinary id on the others.
Counted scenarios count per provider and id, so ``flaky503-a`` and ``flaky503-b`` are
independent. A parameter that does not parse falls back to its default (``slow-x`` sleeps
2000 ms); the text after it is free (``slow-50-order7``).

The README's "Simulators" section holds the table, rendered from ``TABLE`` by
``markdown_table()``; a test keeps the two equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.simulate.state import SIMULATED

ALL = SIMULATED


@dataclass(frozen=True)
class Param:
    """A number written right after the scenario word, e.g. ``-<ms>`` or ``x<N>``."""

    lead: str  # "-" or "x"
    default: int
    low: int
    high: int
    choices: tuple[int, ...] = ()

    def read(self, rest: str) -> int:
        found = re.match(re.escape(self.lead) + r"(\d{1,9})", rest)
        if found is None:
            return self.default
        value = int(found.group(1))
        if self.choices:
            return value if value in self.choices else self.default
        return min(max(value, self.low), self.high)


@dataclass(frozen=True)
class Scenario:
    name: str  # the id prefix
    providers: tuple[str, ...]
    behaviour: str
    param: Param | None = None
    fault: bool = False  # played the same way for every provider (see faults.py)

    @property
    def pattern(self) -> str:
        if self.param is None:
            return self.name
        units = {"slow": "ms", "lostanswer": "ms", "ratelimit": "s", "flaky503": "N"}
        unit = {**units, "redirect": "code"}[self.name]
        return f"{self.name}[{self.param.lead}<{unit}>]"


@dataclass(frozen=True)
class Match:
    scenario: Scenario
    value: int | None

    @property
    def name(self) -> str:
        return self.scenario.name


SS, SH, SL, RX = SIMULATED

# First match wins: a name that starts another (received / received409) comes after it.
TABLE: tuple[Scenario, ...] = (
    Scenario(
        "notfound",
        ALL,
        'StateSet 404 `not_found`; Shipper 400 code 3012 "Order Doesn\'t Exist in WMS and OMS."; '
        'Shoplazza 404 `{"errors": ["Procurement not found"]}`; '
        'RxUniverse 404 `No record found` with details `["Provided: <id>"]`',
    ),
    Scenario(
        "already",
        ALL,
        "counts as cancelled before the first call: StateSet 400 `ASN_ALREADY_CANCELLED`, "
        "Shoplazza 200 in state 4, RxUniverse 400 `Order already completed`, Shipper success",
        fault=True,
    ),
    Scenario(
        "unauthorized",
        ALL,
        "the provider's 401 for a wrong credential: StateSet `INVALID_API_KEY`, Shipper 802, "
        "Shoplazza `store is not active`, RxUniverse `Unauthorized`",
        fault=True,
    ),
    Scenario(
        "err500",
        ALL,
        "500 in the provider's error shape (Shipper: the documented 803 body)",
        fault=True,
    ),
    Scenario("received409", (SS,), "409 `invalid_status` `ASN_ALREADY_RECEIVED`"),
    Scenario("received", (SS,), "400 `invalid_status` `ASN_ALREADY_RECEIVED` (documented body)"),
    Scenario(
        "badid",
        (SS, SH, SL),
        "StateSet 400 `invalid_request_error` `parameter_invalid`; Shipper 400 code 810; "
        'Shoplazza 400 `{"errors": ["invalid procurement_id"]}`',
    ),
    Scenario("expired", (SS,), "401 `authentication_error` `EXPIRED_API_KEY`"),
    Scenario(
        "noscope",
        (SS, SL),
        "StateSet 403 `authentication_error` `INSUFFICIENT_PERMISSIONS`; "
        'Shoplazza 403 `{"errors": ["Forbidden"]}` (the `write_product` scope is missing)',
    ),
    Scenario("lowercase-auth", (SS,), "401 `authentication_error` `invalid_api_key`"),
    Scenario("lowercase-expired", (SS,), "401 `authentication_error` `api_key_expired`"),
    Scenario("lowercase-noscope", (SS,), "403 `authentication_error` `insufficient_permissions`"),
    Scenario("keyinuse", (SS,), "409 `invalid_request_error` `idempotency_key_in_use`"),
    Scenario(
        "allocated",
        (SH,),
        '400 code 811 "Sales Order already allocated" (the document states the rule but not '
        "its code: 811 is the simulator's choice)",
    ),
    Scenario("inactive", (SL,), '401 `{"error": "store is not active"}`'),
    Scenario("nosupplier", (SL,), '400 `{"error": "Supplier not found"}` (status undocumented)'),
    Scenario("nocontext", (SL,), '400 `{"errors": ["No Context"]}` (status undocumented)'),
    Scenario("jobtracker", (RX,), "400 `Job Tracker module required for cancel method`"),
    Scenario("noreasons", (RX,), "400 `The delete reasons file is empty`"),
    Scenario(
        "badreason",
        (RX,),
        '400 `Delete reason code does not exist` with details `["Provided: <deleteReason>"]` '
        "(any id answers this when `deleteReason=9999`)",
    ),
    Scenario("station", (RX,), "400 `Order has been through a non-cancel station`"),
    Scenario("warning", (RX,), "200 success whose `message` carries a non-blocking warning"),
    Scenario(
        "slow",
        ALL,
        "sleeps `<ms>` milliseconds (default 2000, at most 60000), then answers as usual",
        Param("-", 2000, 0, 60000),
        fault=True,
    ),
    Scenario(
        "flaky503",
        ALL,
        "503 in the provider's shape for the first `N` calls (default 2, at most 100), "
        "then answers as usual",
        Param("x", 2, 0, 100),
        fault=True,
    ),
    Scenario("ratelimit-always", ALL, "429 with `Retry-After: 120` on every call", fault=True),
    Scenario(
        "ratelimit",
        ALL,
        "429 with `Retry-After: <s>` (default 1, at most 3600) on the first call, "
        "then answers as usual",
        Param("-", 1, 0, 3600),
        fault=True,
    ),
    Scenario(
        "lostanswer",
        ALL,
        "the cancel is applied, then its answer is held for `<ms>` milliseconds (default "
        "60000, at most 600000): a client times out not knowing it happened (a status probe "
        "finds it cancelled)",
        Param("-", 60000, 0, 600000),
        fault=True,
    ),
    Scenario(
        "lostreset",
        ALL,
        "the cancel is applied, then the connection is reset (TCP RST) instead of answered",
        fault=True,
    ),
    Scenario("reset", ALL, "the connection is reset (TCP RST), no HTTP answer", fault=True),
    Scenario("html", ALL, "502 with an HTML error page, `Content-Type: text/html`", fault=True),
    Scenario("nonjson", ALL, "200 with `text/plain` body `OK`", fault=True),
    Scenario(
        "empty",
        ALL,
        "200 with an empty body (`Content-Type: application/json`, `Content-Length: 0`)",
        fault=True,
    ),
    Scenario("oversized", ALL, "200 with a JSON object over 2 MiB", fault=True),
    Scenario(
        "redirect",
        ALL,
        "302 (or `<code>`: 301, 303, 307, 308) with `Location: /_redirected`, which answers "
        '200 `{"redirected": true}` and is journaled, so a client that follows it shows',
        Param("-", 302, 301, 308, (301, 302, 303, 307, 308)),
        fault=True,
    ),
)


def match(object_id: str) -> Match | None:
    """The scenario an id plays, if any."""
    lowered = object_id.lower()
    for scenario in TABLE:
        if lowered.startswith(scenario.name):
            rest = lowered[len(scenario.name) :]
            value = scenario.param.read(rest) if scenario.param else None
            return Match(scenario, value)
    return None


def markdown_table() -> str:
    """The scenario table of the README."""
    lines = ["| id starts with | provider(s) | behaviour |", "|---|---|---|"]
    for scenario in TABLE:
        providers = "all" if scenario.providers == ALL else ", ".join(scenario.providers)
        lines.append(f"| `{scenario.pattern}` | {providers} | {scenario.behaviour} |")
    return "\n".join(lines)
