"""What is measured (the scenarios and their targets: which servers, how many connections, how
slow an upstream) and what one measurement gives (a :class:`Result`, one row of the report).
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class Scenario:
    name: str
    connections: int
    delay_ms: int  # the upstream's answer delay
    targets: tuple[str, ...]  # direct | baseline | a name of servers.GATEWAYS
    soak: bool = False  # measured for --soak-duration, RSS sampled every second
    # The measured time split into this many rounds, the targets taking turns within each:
    # a machine that slows down for a minute then slows every row alike.
    rounds: int = 1
    # Refusals are what the scenario measures (a budget that runs out, a rate limit): its
    # non-2xx answers are counted by status, not failures of the run.
    refusals: bool = False
    # Warmed up before the measured run; without, the measured run starts with the first
    # request wrk sends (what happens as the load arrives is what is measured).
    warmup: bool = True


SCENARIOS = (
    Scenario(
        "c64",
        64,
        0,
        (
            "direct",
            "baseline",
            "gateway",
            "gateway-token",  # right after the row they are compared with, in each round
            "gateway-signed",
            "gateway-w2",
            "gateway-no-logs",
        ),
        rounds=3,
    ),
    Scenario("c1", 1, 0, ("direct", "baseline", "gateway")),
    Scenario("c256-20ms", 256, 20, ("direct", "baseline", "gateway")),
    Scenario("c256-100ms", 256, 100, ("direct", "baseline", "gateway")),
    Scenario("c1000-20ms", 1000, 20, ("direct", "gateway", "gateway-w2")),
    # The soak's load against the upstream emulation alone, and through the baseline: what
    # this machine and wrk reach with no gateway at all, the floor under the soak's figures.
    Scenario("c5000-100ms", 5000, 100, ("direct", "baseline")),
    Scenario("soak", 5000, 100, ("gateway",), soak=True),
    # An upstream slower than the budget (timeout_s 5) under 3,000 connections: timeouts, then
    # the breaker's refusals; every answer within the budget plus 0.5 s (CONTRACT §11).
    Scenario("c3000-slow", 3000, 6000, ("gateway-budget",), refusals=True, warmup=False),
    # Two processes on one Redis, a provider limit of 2 requests/s: at most 2/s sent in all.
    Scenario("c8-limit", 8, 0, ("gateway-shared",), refusals=True),
)
PROFILED = ("c64", "gateway")  # the row --profile records


@dataclass(frozen=True)
class Result:
    scenario: Scenario
    target: str
    requests: int
    seconds: float  # measured
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float  # the longest answer (the highest of the rounds')
    non_2xx: int
    socket_errors_by_kind: dict[str, int]  # wrk's: {"connect": 12, "timeout": 3}
    rss_mib: float  # peak (VmHWM), summed over the server's process tree
    cpu_ms_per_request: float  # user + system of the server's process tree
    system_share: float  # of that CPU time, the part spent in the kernel
    processes: int
    note: str = ""
    rss_samples: tuple[tuple[float, float], ...] = ()  # soak: (seconds, MiB) every second
    profile: Path | None = None  # --profile: py-spy's raw output
    rounds: int = 1
    round_cpu: tuple[float, ...] = ()  # CPU ms/request of each round, in order
    round_rps: tuple[float, ...] = ()  # req/s of each round, in order
    # The gateway's own counts (its /metrics): refusals `overloaded` among the non-2xx, and
    # the admitted answers' p99 (a bucket's bound); None for the other targets.
    overloaded: int | None = None
    admitted_p99_ms: float | None = None
    # The gateway's answers to the cancellation route by HTTP status (its /metrics), for the
    # scenarios whose refusals are measured; empty for the others.
    statuses: dict[str, int] = field(default_factory=dict)
    refused_p50_ms: float | None = None  # their refusals' (503) median, a bucket's bound

    @property
    def ok_rps(self) -> float:
        """2xx answers per second."""
        return (self.requests - self.non_2xx) / self.seconds if self.seconds else 0.0

    @property
    def unexpected(self) -> int:
        """The non-2xx answers that fail the run: none where refusals are measured, and
        never the refusals ``overloaded`` the gateway counted (an answer CONTRACT §11 allows
        under overload; counted in a window a little wider than wrk's: never below none)."""
        if self.scenario.refusals:
            return 0
        return max(0, self.non_2xx - (self.overloaded or 0))

    @property
    def socket_errors(self) -> int:
        return sum(self.socket_errors_by_kind.values())

    @property
    def socket_error_kinds(self) -> str:
        """``connect 12, timeout 3``, as the report says them."""
        return ", ".join(f"{kind} {n}" for kind, n in self.socket_errors_by_kind.items())


def combined(rounds: Sequence[Result]) -> Result:
    """One row from a target's rounds: requests, time and CPU added up, latency percentiles the
    median of the rounds' (wrk's histograms are not kept), the peaks the highest."""
    first = rounds[0]
    if len(rounds) == 1:
        return first
    requests, seconds = sum(r.requests for r in rounds), sum(r.seconds for r in rounds)
    cpu = [r.cpu_ms_per_request * r.requests for r in rounds]
    kinds, statuses = collections.Counter[str](), collections.Counter[str]()
    for r in rounds:
        kinds.update(r.socket_errors_by_kind)
        statuses.update(r.statuses)
    return replace(
        first,
        requests=requests,
        seconds=seconds,
        rps=requests / seconds if seconds else 0.0,
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
        mean_ms=sum(r.mean_ms * r.requests for r in rounds) / requests if requests else 0.0,
        max_ms=max(r.max_ms for r in rounds),
        non_2xx=sum(r.non_2xx for r in rounds),
        overloaded=None
        if any(r.overloaded is None for r in rounds)
        else sum(r.overloaded or 0 for r in rounds),
        admitted_p99_ms=None
        if any(r.admitted_p99_ms is None for r in rounds)
        else statistics.median(r.admitted_p99_ms or 0.0 for r in rounds),
        socket_errors_by_kind=dict(kinds),
        rss_mib=max(r.rss_mib for r in rounds),
        cpu_ms_per_request=sum(cpu) / requests if requests else float("nan"),
        system_share=sum(r.system_share * c for r, c in zip(rounds, cpu, strict=True)) / sum(cpu)
        if sum(cpu)
        else 0.0,
        processes=max(r.processes for r in rounds),
        note="; ".join(
            f"round {n}: {r.note}" if len(rounds) > 1 else r.note
            for n, r in enumerate(rounds, 1)
            if r.note
        ),
        profile=next((r.profile for r in rounds if r.profile), None),
        rounds=len(rounds),
        round_cpu=tuple(r.cpu_ms_per_request for r in rounds),
        round_rps=tuple(r.rps for r in rounds),
        statuses=dict(statuses),
    )


def rss_slope(r: Result) -> float | None:
    """MiB per minute: a least-squares fit of the RSS sampled over the second half of the run
    (the first half's growth is the process warming up, not a leak)."""
    half = r.rss_samples[-1][0] / 2 if r.rss_samples else 0.0
    late = [(t, mib) for t, mib in r.rss_samples if t >= half]
    if len(late) < 3:
        return None
    times, mibs = zip(*late, strict=True)
    return statistics.linear_regression(times, mibs).slope * 60
