"""RESULTS.md: the machine, the rows, the soak, the figures against their targets, where the
gateway's time goes (``--profile``), the errors and what the gateway logged."""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import pyspy, targets
from bench.scenarios import Result, rss_slope


@dataclass(frozen=True)
class Run:
    """How the results were measured, as the report's first paragraph says."""

    options: str  # the command line's options, "" for none
    warmup_s: float
    duration_s: float
    soak_s: float
    load_before: str  # /proc/loadavg's three figures before the first row


def machine(load_before: str) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (x.split(":", 1)[1].strip() for x in cpuinfo.splitlines() if "model name" in x), "?"
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    memory_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2
    wrk_path = shutil.which("wrk") or "wrk"
    version = subprocess.run(  # noqa: S603 - our own argv
        [wrk_path, "-v"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return [
        f"- CPUs: {len(os.sched_getaffinity(0))} (`nproc`), {model}",
        f"- memory: {memory_gib:.1f} GiB; kernel {platform.release()}",
        f"- Python {platform.python_version()}, aiohttp {importlib.metadata.version('aiohttp')}, "
        f"uvloop {'yes' if importlib.util.find_spec('uvloop') else 'no'} "
        "(upstream and baseline; the gateway uses whatever loop it chooses)",
        f"- load generator: {version[0].split(' [')[0] if version else 'wrk'}, 1 thread (`-t1`)",
        f"- load average before the run (1, 5, 15 min): {load_before}; anything else running "
        "takes CPU from the servers measured",
    ]


def table(results: Sequence[Result]) -> list[str]:
    rows = [
        "| scenario | target | req/s | p50 ms | p99 ms | longest ms | non-2xx | socket errors "
        "| peak RSS MiB | CPU ms/req | of it kernel | processes |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if r.scenario.soak:
            continue
        flag = " **FAIL**" if r.unexpected else ""
        rows.append(
            f"| {r.scenario.name} | {r.target} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.max_ms:.0f} | {r.non_2xx}{flag} | {r.socket_errors} | {r.rss_mib:.1f} "
            f"| {r.cpu_ms_per_request:.3f} | {r.system_share:.0%} | {r.processes} |"
        )
    return rows


def soak_table(results: Sequence[Result]) -> list[str]:
    """The soak's row, or nothing when the soak was not measured."""
    rows = [
        "| req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | in flight | non-2xx "
        "| of them overloaded | admitted p99 ms (gateway) "
        "| socket errors | RSS MiB: start | peak | end | slope, MiB/min | CPU ms/req |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if not r.scenario.soak or not r.rss_samples:
            continue
        delay, mibs, slope = r.scenario.delay_ms, [m for _, m in r.rss_samples], rss_slope(r)
        kinds = f" ({r.socket_error_kinds})" if r.socket_errors else ""
        rows.append(
            f"| {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.p50_ms - delay:.2f} "
            f"| {r.p99_ms - delay:.2f} | {r.rps * r.mean_ms / 1000:,.0f} | {r.non_2xx} "
            f"| {'?' if r.overloaded is None else r.overloaded} "
            f"| {'?' if r.admitted_p99_ms is None else f'≤ {r.admitted_p99_ms:g}'} "
            f"| {r.socket_errors}{kinds} | {mibs[0]:.1f} | {max(mibs):.1f} | {mibs[-1]:.1f} "
            f"| {'?' if slope is None else f'{slope:+.2f}'} | {r.cpu_ms_per_request:.3f} |"
        )
    return rows if len(rows) > 2 else []


def refusals_table(results: Sequence[Result]) -> list[str]:
    """The scenarios that measure refusals: the gateway's answers by HTTP status."""
    rows = [
        "| scenario | target | answers | 2xx per s | answered by the gateway, by HTTP status "
        "| of them overloaded | refusals' p50 ms (gateway) | longest ms |",
        "|---|---|--:|--:|---|--:|--:|--:|",
    ]
    for r in results:
        if not r.scenario.refusals:
            continue
        said = ", ".join(f"{status}: {n:,}" for status, n in r.statuses.items()) or "?"
        rows.append(
            f"| {r.scenario.name} | {r.target} | {r.requests:,} | {r.ok_rps:.2f} | {said} "
            f"| {'?' if r.overloaded is None else f'{r.overloaded:,}'} "
            f"| {'?' if r.refused_p50_ms is None else f'≤ {r.refused_p50_ms:g}'} "
            f"| {r.max_ms:.0f} |"
        )
    return rows if len(rows) > 2 else []


def interleaved(results: Sequence[Result]) -> str:
    """What the report says of the scenarios measured in rounds."""
    scenarios = {r.scenario.name: r.rounds for r in results if r.rounds > 1}
    said = [f"{name} in {n} rounds" for name, n in scenarios.items()]
    if not said:
        return ""
    return (
        f"The rows of {', '.join(said)}: that time split into turns, the targets measured one "
        "after the other in each, every turn after its own start and warm-up; a row adds its "
        "turns' requests, seconds and CPU up, and its p50 and p99 are the medians of theirs. "
    )


def report(results: Sequence[Result], failed: Sequence[str], run: Run) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    notes = [f"- {r.scenario.name} {r.target}: {r.note}" for r in results if r.note]
    soak = soak_table(results)
    flagged = [r for r in results if r.unexpected or r.socket_errors]
    warnings = [
        f"- **{r.scenario.name} {r.target}: {r.non_2xx} non-2xx answers, "
        f"{r.socket_errors} socket errors** {r.socket_error_kinds}".rstrip()
        for r in flagged
    ] + [f"- **not measured: {row}**" for row in failed]
    parts = [
        "# Benchmark results",
        "",
        f"Written by `python -m bench.run` ({run.options or 'no options'}) on {when}: "
        f"{run.warmup_s:g} s of warm-up, then {run.duration_s:g} s measured per row"
        f"{f' ({run.soak_s:g} s for the soak)' if soak else ''}. "
        f"{interleaved(results)}See bench/README.md for how to read it.",
        "",
        "## Machine",
        "",
        *machine(run.load_before),
        "",
        "wrk, the upstream emulation and the server under test share the machine's cores: wrk "
        "alone keeps about one of two busy, so a server gets roughly the other one (and shares "
        "it with the upstream emulation).",
        "",
        "## Results",
        "",
        "`direct` is the upstream emulation alone; `baseline` is bench/baseline.py; `gateway` is "
        "`cancel-gateway serve` with one worker, `gateway-w2` with `--workers 2`; "
        "`gateway-no-logs` logs warnings and errors only, without the access log, to tell what "
        "the logs cost; `gateway-token` fetches an OAuth2 token from the upstream and sends it "
        "(cached), `gateway-signed` signs each request with HMAC-SHA256, to tell what each "
        "costs. Scenario "
        "`cN` is N connections against an immediate upstream, `cN-20ms` and `cN-100ms` against "
        "one that answers after 20 or 100 ms; `gateway-budget` and `gateway-shared` are told of "
        "under Refusals. RSS and CPU are of the server's whole process tree (upstream "
        "excluded, except for `direct`).",
        "",
        *table(results),
        "",
    ]
    if soak:
        parts += [
            "## Soak",
            "",
            f"`cancel-gateway serve` (one worker), 5,000 connections for {run.soak_s:g} s "
            "against an upstream that answers after 100 ms. *Added* is p50 or p99 minus those "
            "100 ms; *in flight* is req/s times wrk's mean latency (Little's law): requests being "
            "answered at any moment, short of 5,000 when connections wait to be accepted. RSS "
            "is `VmRSS` of the gateway, sampled every second of the measured run; the slope is "
            "a least-squares fit over its second half.",
            "",
            *soak,
            "",
        ]
    refusals = refusals_table(results)
    if refusals:
        parts += [
            "## Refusals",
            "",
            "`c3000-slow`: 3,000 connections against an upstream slower than the connection's "
            "budget (`timeout_s: 5`; it answers after 6 s), the breaker and limits as they come, "
            "measured from wrk's first request (no warm-up): every answer must come within 5.5 s "
            "of its arrival, the breaker's refusals at once. wrk sends again at once on a "
            "connection refused `overloaded`, which the gateway reads again only after a second "
            "(`server.overload_hold_s`): that second is in wrk's latencies, not in the "
            "gateway's own (from a request's arrival). `c8-limit`: `serve --workers 2` (two "
            "processes, as two replicas would be) on one Redis, the connection "
            "limited to 2 requests/s: the answers 200 per second are the requests sent (as the "
            "gateway counts them), the others (if any) refusals `rate_limited`.",
            "",
            *refusals,
            "",
        ]
    parts += ["## Against the targets", "", *targets.lines(targets.figures(results)), ""]
    for r in results:
        if r.profile is not None:
            what = f"the gateway during the measured {r.scenario.name} run ({r.rps:,.0f} req/s)"
            section = pyspy.section(pyspy.read(r.profile), r.profile, what)
            parts += ["## Where the time goes", "", *section, ""]
    if warnings:
        parts += ["## Errors", "", *warnings, ""]
    if notes:
        parts += ["## Gateway logs", "", *notes, ""]
    return "\n".join(parts)
