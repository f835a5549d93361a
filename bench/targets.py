"""The figures the report ends with, derived from the measured rows, and the targets the
gateway is held to, each a :class:`Target` on one figure: met, not met, or unknown when a row
it needs was not measured. The baseline's figures stand beside the gateway's, without targets:
where the baseline misses a target too, the machine is the limit, not the gateway's work.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.scenarios import Result, rss_slope


class Comparison(enum.StrEnum):
    AT_LEAST = "≥"
    AT_MOST = "≤"
    EQUAL = "="


@dataclass(frozen=True)
class Figure:
    name: str  # what a Target refers to
    label: str  # as the report says it, unit included
    value: float | None  # None: a row it needs was not measured


@dataclass(frozen=True)
class Target:
    figure: str  # a Figure's name
    comparison: Comparison
    limit: float

    def met(self, figures: Mapping[str, float | None]) -> bool | None:
        """Whether the measured figure meets the target; None when it was not measured."""
        value = figures.get(self.figure)
        if value is None:
            return None
        match self.comparison:
            case Comparison.AT_LEAST:
                return value >= self.limit
            case Comparison.AT_MOST:
                return value <= self.limit
            case Comparison.EQUAL:
                return value == self.limit

    def __str__(self) -> str:
        return f"{self.comparison} {self.limit:g}"


TARGETS = (
    Target("gateway/baseline rps c64", Comparison.AT_LEAST, 1),
    Target("gateway cpu c64", Comparison.AT_MOST, 0.17),
    # A cached token, or a signature, adds at most 5 % to a cancellation's CPU.
    Target("token cpu c64", Comparison.AT_MOST, 5),
    Target("signature cpu c64", Comparison.AT_MOST, 5),
    Target("gateway added p50 c1", Comparison.AT_MOST, 0.5),
    Target("workers rps c64", Comparison.AT_LEAST, 1.4),
    Target("gateway/direct rps c256-20ms", Comparison.AT_LEAST, 0.45),
    Target("soak added p99", Comparison.AT_MOST, 40),
    Target("soak errors", Comparison.EQUAL, 0),
    # Every answer 200 or `overloaded`, and those admitted within 250 ms (CONTRACT §11).
    Target("soak admitted p99", Comparison.AT_MOST, 250),
    # "RSS flat over the soak": a leak of 100 bytes per request at 500 req/s is ~3 MiB/min.
    Target("soak rss slope", Comparison.AT_MOST, 1),
    # Against the baseline in the same run: what the gateway's work costs beyond a minimal
    # translator's.
    Target("cpu ratio c64", Comparison.AT_MOST, 1.5),
    Target("added p50 over baseline c1", Comparison.AT_MOST, 0.3),
    Target("p99 ratio c256-100ms", Comparison.AT_MOST, 1.0),
    Target("workers rps c64 lowest round", Comparison.AT_LEAST, 1.4),
    # Every answer within timeout_s (5) + 0.5 s of its arrival, also at 3,000 connections.
    Target("longest answer c3000-slow", Comparison.AT_MOST, 5500),
    # Two processes on one Redis send at most the provider's 2 requests/s between them.
    Target("sent per s c8-limit", Comparison.AT_MOST, 2),
)


class _Rows:
    """The measured rows by (scenario, target), and the figures made of them."""

    def __init__(self, results: Sequence[Result]) -> None:
        self._rows = {(r.scenario.name, r.target): r for r in results}

    def get(self, scenario: str, target: str) -> Result | None:
        return self._rows.get((scenario, target))

    def rps(self, scenario: str, target: str, over: str) -> float | None:
        return self.ratio(scenario, "rps", target, over)

    def added_p50(self, target: str) -> float | None:
        """p50 ms beyond the upstream's own, one connection."""
        return self.p50_over("c1", target, "direct")

    def cpu(self, target: str) -> float | None:
        row = self.get("c64", target)
        return row.cpu_ms_per_request if row else None

    def added_share(self, target: str) -> float | None:
        """How much more CPU per request ``target`` spends than the gateway, in percent: the
        median of the rounds' ratios (each round measures the two one after the other, so a
        minute when the machine is slow weighs on both), or of the whole rows without rounds."""
        mine, plain = self.get("c64", target), self.get("c64", "gateway")
        if mine is None or plain is None or not plain.cpu_ms_per_request:
            return None
        pairs = list(zip(mine.round_cpu, plain.round_cpu, strict=False))
        if len(mine.round_cpu) == len(plain.round_cpu) and pairs and all(p for _, p in pairs):
            return statistics.median((m / p - 1) * 100 for m, p in pairs)
        return (mine.cpu_ms_per_request / plain.cpu_ms_per_request - 1) * 100

    def cost(self, without: str) -> float | None:
        """CPU ms/request the feature ``without`` leaves out costs the gateway, 64 connections."""
        mine, less = self.cpu("gateway"), self.cpu(without)
        return mine - less if mine is not None and less is not None else None

    def added_p99(self, scenario: str, target: str) -> float | None:
        """p99 ms beyond the upstream's delay."""
        row = self.get(scenario, target)
        return row.p99_ms - row.scenario.delay_ms if row else None

    def errors(self, scenario: str, target: str) -> int | None:
        """Non-2xx answers but the refusals `overloaded` (an answer CONTRACT §11 allows under
        overload), plus socket errors. The gateway counts its refusals between two scrapes,
        a little wider than wrk's window: never below none."""
        row = self.get(scenario, target)
        return None if row is None else row.unexpected + row.socket_errors

    def admitted_p99(self, scenario: str, target: str) -> float | None:
        row = self.get(scenario, target)
        return row.admitted_p99_ms if row else None

    def ratio(self, scenario: str, field: str, target: str, over: str) -> float | None:
        """``target``'s figure ``field`` (a Result attribute) over ``over``'s."""
        mine, theirs = self.get(scenario, target), self.get(scenario, over)
        if mine is None or theirs is None or not getattr(theirs, field):
            return None
        return float(getattr(mine, field)) / float(getattr(theirs, field))

    def lowest_round(self, scenario: str, target: str, over: str) -> float | None:
        """The lowest of the rounds' req/s ratios (each round measures both)."""
        mine, theirs = self.get(scenario, target), self.get(scenario, over)
        if mine is None or theirs is None:
            return None
        pairs = list(zip(mine.round_rps, theirs.round_rps, strict=False))
        if not pairs or len(mine.round_rps) != len(theirs.round_rps):
            return mine.rps / theirs.rps if theirs.rps else None
        return min(m / t for m, t in pairs if t) if all(t for _, t in pairs) else None

    def longest(self, scenario: str, target: str) -> float | None:
        row = self.get(scenario, target)
        return row.max_ms if row else None

    def p50_over(self, scenario: str, target: str, over: str) -> float | None:
        """``target``'s p50 minus ``over``'s, ms."""
        mine, theirs = self.get(scenario, target), self.get(scenario, over)
        return mine.p50_ms - theirs.p50_ms if mine and theirs else None

    def p50(self, scenario: str, target: str) -> float | None:
        row = self.get(scenario, target)
        return row.p50_ms if row else None

    def sent_per_s(self, scenario: str, target: str) -> float | None:
        """Cancellations sent per second: each 200 is one request sent and answered (the
        upstream answers every request it gets), the refusals were not sent. The gateway's own
        count when it was scraped (a request that waited for its turn is counted when answered,
        which can fall after wrk's window), else wrk's 2xx."""
        row = self.get(scenario, target)
        if row is None:
            return None
        if row.statuses and row.seconds:
            return row.statuses.get("200", 0) / row.seconds
        return row.ok_rps

    def slope(self, scenario: str, target: str) -> float | None:
        row = self.get(scenario, target)
        return rss_slope(row) if row else None


def figures(results: Sequence[Result]) -> list[Figure]:
    """Every figure, in the report's order, from the rows that were measured."""
    rows = _Rows(results)
    no_gateway = "no gateway, the soak's load"
    return [
        Figure(
            "gateway/baseline rps c64",
            "gateway / baseline req/s, 64 connections",
            rows.rps("c64", "gateway", "baseline"),
        ),
        Figure("gateway cpu c64", "gateway CPU ms/request, 64 connections", rows.cpu("gateway")),
        Figure("baseline cpu c64", "baseline CPU ms/request, 64 connections", rows.cpu("baseline")),
        Figure(
            "logs cpu c64",
            "of the gateway's, the logs' CPU ms/request",
            rows.cost("gateway-no-logs"),
        ),
        Figure(
            "token cpu c64",
            "a cached OAuth2 token's added CPU per request, %, 64 connections",
            rows.added_share("gateway-token"),
        ),
        Figure(
            "signature cpu c64",
            "an HMAC-SHA256 signature's added CPU per request, %, 64 connections",
            rows.added_share("gateway-signed"),
        ),
        Figure(
            "gateway added p50 c1", "gateway added p50 ms, 1 connection", rows.added_p50("gateway")
        ),
        Figure(
            "baseline added p50 c1",
            "baseline added p50 ms, 1 connection",
            rows.added_p50("baseline"),
        ),
        Figure(
            "workers rps c64",
            "--workers 2 / 1 worker req/s, 64 connections",
            rows.rps("c64", "gateway-w2", "gateway"),
        ),
        Figure(
            "gateway/direct rps c256-20ms",
            "gateway / direct req/s, 256 conn., 20 ms",
            rows.rps("c256-20ms", "gateway", "direct"),
        ),
        Figure(
            "baseline/direct rps c256-20ms",
            "baseline / direct req/s, 256 conn., 20 ms",
            rows.rps("c256-20ms", "baseline", "direct"),
        ),
        Figure(
            "gateway/direct rps c1000-20ms",
            "gateway / direct req/s, 1,000 conn., 20 ms",
            rows.rps("c1000-20ms", "gateway", "direct"),
        ),
        Figure(
            "workers rps c1000-20ms",
            "--workers 2 / 1 worker req/s, 1,000 conn., 20 ms",
            rows.rps("c1000-20ms", "gateway-w2", "gateway"),
        ),
        Figure(
            "soak added p99",
            "soak: added p99 ms, 5,000 conn., 100 ms",
            rows.added_p99("soak", "gateway"),
        ),
        Figure(
            "soak errors",
            "soak: errors (non-2xx other than overloaded, and socket errors)",
            rows.errors("soak", "gateway"),
        ),
        Figure(
            "soak admitted p99",
            "soak: admitted p99 ms, by the gateway's histogram (a bucket's bound)",
            rows.admitted_p99("soak", "gateway"),
        ),
        Figure(
            "soak rss slope",
            "soak: RSS slope over the 2nd half, MiB/min (flat)",
            rows.slope("soak", "gateway"),
        ),
        Figure(
            "cpu ratio c64",
            "gateway CPU per request / baseline's, 64 connections",
            rows.ratio("c64", "cpu_ms_per_request", "gateway", "baseline"),
        ),
        Figure(
            "added p50 over baseline c1",
            "gateway p50 minus baseline p50, ms, 1 connection",
            rows.p50_over("c1", "gateway", "baseline"),
        ),
        Figure(
            "p99 ratio c256-100ms",
            "gateway p99 / baseline p99, 256 conn., 100 ms",
            rows.ratio("c256-100ms", "p99_ms", "gateway", "baseline"),
        ),
        Figure(
            "workers rps c64 lowest round",
            "--workers 2 / 1 worker req/s, 64 connections, the lowest round",
            rows.lowest_round("c64", "gateway-w2", "gateway"),
        ),
        Figure(
            "longest answer c3000-slow",
            "longest answer ms, 3,000 conn., upstream slower than the 5 s budget",
            rows.longest("c3000-slow", "gateway-budget"),
        ),
        Figure(
            "p50 c3000-slow",
            "p50 ms there (most answers: the breaker's refusals)",
            rows.p50("c3000-slow", "gateway-budget"),
        ),
        Figure(
            "sent per s c8-limit",
            "two processes on one Redis, a limit of 2/s: sent per s in all",
            rows.sent_per_s("c8-limit", "gateway-shared"),
        ),
        Figure(
            "direct added p99 c5000-100ms",
            f"{no_gateway} on the upstream alone: added p99 ms",
            rows.added_p99("c5000-100ms", "direct"),
        ),
        Figure(
            "direct errors c5000-100ms",
            f"{no_gateway} on the upstream alone: errors",
            rows.errors("c5000-100ms", "direct"),
        ),
        Figure(
            "baseline added p99 c5000-100ms",
            f"{no_gateway} through the baseline: added p99 ms",
            rows.added_p99("c5000-100ms", "baseline"),
        ),
        Figure(
            "baseline errors c5000-100ms",
            f"{no_gateway} through the baseline: errors",
            rows.errors("c5000-100ms", "baseline"),
        ),
    ]


def lines(measured: Sequence[Figure], targets: Sequence[Target] = TARGETS) -> list[str]:
    """One line per figure: its value, then each target on it with its verdict."""
    values = {f.name: f.value for f in measured}
    out = []
    for f in measured:
        if f.value is None:
            out.append(f"- {f.label}: not measured")
            continue
        shown = f"{f.value:,.0f}" if abs(f.value) >= 1000 else f"{f.value:.3g}"
        line = f"- {f.label}: **{shown}**"
        for target in (t for t in targets if t.figure == f.name):
            line += f" (target {target}: {'met' if target.met(values) else 'not met'})"
        out.append(line)
    return out
