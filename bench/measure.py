"""One scenario, measured: a fresh upstream emulation for the scenario, a fresh server for each
row (each round of a row), probed once, warmed up with wrk, then measured with wrk while
``/proc`` gives the server's CPU time and memory (and py-spy, with ``--profile``, its stacks).
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import pyspy, scrape, servers, wrk
from bench.processes import (
    CLK_TCK,
    Children,
    cpu_ticks,
    memory_kib,
    process_tree,
    rss_sampled,
)
from bench.scenarios import PROFILED, Result, Scenario, combined


@dataclass(frozen=True)
class Bench:
    children: Children
    work: Path  # logs, configs and ledgers, one folder per measurement
    duration_s: float
    warmup_s: float
    soak_s: float
    profiles: Path | None  # --profile: where py-spy writes (kept after the run)
    failed: list[str] = field(default_factory=list)  # rows that could not be measured


def run_scenario(bench: Bench, scenario: Scenario) -> list[Result]:
    """One upstream emulation with the scenario's delay, each target measured in front of it,
    in turns when the scenario has rounds. A row that fails is printed and listed in
    ``bench.failed``; the others still run."""
    rounds: dict[str, list[Result]] = {target: [] for target in scenario.targets}
    log = bench.work / scenario.name / "upstream.log"
    log.parent.mkdir()
    with servers.upstream(scenario.delay_ms, bench.children, log) as upstream:
        for round_, target in itertools.product(range(scenario.rounds), scenario.targets):
            turn = f" (round {round_ + 1} of {scenario.rounds})" if scenario.rounds > 1 else ""
            print(f"{scenario.name} {target}{turn} ...", end=" ", flush=True)
            try:
                result = measure(bench, scenario, target, upstream, round_)
            except (RuntimeError, OSError) as exc:
                print(f"FAILED: {exc}", flush=True)
                bench.failed.append(f"{scenario.name} {target}{turn}: {str(exc).splitlines()[0]}")
                continue
            rounds[target].append(result)
            print(f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms", flush=True)
    return [combined(measured) for measured in rounds.values() if measured]


def measure(
    bench: Bench, scenario: Scenario, target: str, upstream: servers.Server, round_: int = 0
) -> Result:
    """One row (one round of it); an error carries the tail of the server's log."""
    folder = bench.work / scenario.name / target / f"round-{round_ + 1}"
    folder.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        if target == "direct":
            server, log = upstream, bench.work / scenario.name / "upstream.log"
        else:
            server = stack.enter_context(
                servers.server(target, upstream[1], bench.children, folder)
            )
            log = folder / "server.log"
        try:
            result = load(bench, scenario, target, server, folder, round_)
        except (RuntimeError, OSError) as exc:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{exc}\n{tail}") from None
    return replace(result, note=servers.log_note(log)) if target.startswith("gateway") else result


def load(
    bench: Bench,
    scenario: Scenario,
    target: str,
    server: servers.Server,
    folder: Path,
    round_: int = 0,
) -> Result:
    """Probe, warm up, measure: wrk's figures of the measured run, the CPU time the server's
    tree used in it, its peak RSS and number of processes after it, its RSS every second (soak
    only) and py-spy's profile of it (the profiled row with --profile: each round's samples
    added to one file, as py-spy's raw format allows)."""
    process, port = server
    request = servers.request_for(target, port)
    servers.probe(port, request, refusals=scenario.refusals)
    script = wrk.write_script(folder, request)
    if scenario.warmup:
        wrk.run(request, script, scenario.connections, bench.warmup_s, bench.children)
    duration = bench.soak_s if scenario.soak else bench.duration_s / scenario.rounds
    profile = None
    if bench.profiles and (scenario.name, target) == PROFILED:
        profile = bench.profiles / f"{scenario.name}-{target}.raw"
        this_round = profile.with_name(f"{profile.stem}-round-{round_ + 1}.raw")
    gateway = target.startswith("gateway")
    before = scrape.scrape(port) if gateway else None
    user, system = cpu_ticks(process_tree(process.pid))
    with contextlib.ExitStack() as during:
        samples = during.enter_context(rss_sampled(process.pid)) if scenario.soak else []
        if profile:
            during.enter_context(pyspy.profiled(bench.children, process.pid, duration, this_round))
        summary = wrk.run(request, script, scenario.connections, duration, bench.children)
    if profile:
        with profile.open("ab") as every_round:
            every_round.write(this_round.read_bytes())
    tree = process_tree(process.pid)  # the same processes, unless one died
    user_after, system_after = cpu_ticks(tree)
    user_ms = (user_after - user) * 1000 / CLK_TCK
    system_ms = (system_after - system) * 1000 / CLK_TCK
    if process.poll() is not None:
        raise RuntimeError(f"the server exited with code {process.returncode}")
    requests = summary.requests
    after = scrape.scrape(port) if gateway else None
    overloaded = admitted_p99 = refused_p50 = None
    statuses: dict[str, int] = {}
    if before is not None and after is not None:
        overloaded = scrape.overloaded_between(before, after)
        admitted_p99 = scrape.admitted_p99_ms(before, after)
        if scenario.refusals:
            statuses = scrape.statuses_between(before, after)
            refused_p50 = scrape.refused_p50_ms(before, after)
    return Result(
        scenario=scenario,
        target=target,
        requests=requests,
        seconds=summary.seconds,
        rps=requests / summary.seconds,
        p50_ms=summary.p50_ms,
        p99_ms=summary.p99_ms,
        mean_ms=summary.mean_ms,
        max_ms=summary.max_ms,
        non_2xx=summary.non_2xx,
        socket_errors_by_kind=summary.socket_errors,
        rss_mib=memory_kib(tree) / 1024,
        cpu_ms_per_request=(user_ms + system_ms) / requests if requests else float("nan"),
        system_share=system_ms / (user_ms + system_ms) if user_ms + system_ms else 0.0,
        processes=len(tree),
        rss_samples=tuple(samples),
        profile=profile,
        overloaded=overloaded,
        admitted_p99_ms=admitted_p99,
        statuses=statuses,
        refused_p50_ms=refused_p50,
    )
