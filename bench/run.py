"""The benchmark, in one command: ``python -m bench.run`` (``make bench``).

Starts the StateSet emulation (bench/upstream.py), then for each scenario measures the upstream
directly, the baseline translator (bench/baseline.py) and ``cancel-gateway serve`` with its
default settings, each in front of the emulation, with ``wrk``; then soaks the gateway with 5,000
connections against a 100 ms upstream, sampling its RSS. Every server is a fresh process group
on a free loopback port, stopped after its run (and on Ctrl-C or any error). Writes
bench/RESULTS.md; with ``--profile``, also where the gateway's time goes (bench/pyspy.py).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.measure import Bench, run_scenario
from bench.processes import ROOT, Children
from bench.report import Run, report
from bench.scenarios import SCENARIOS, Result

RESULTS = ROOT / "bench" / "RESULTS.md"


def options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each")
    parser.add_argument("--quick", action="store_true", help="3 s runs after 1 s of warm-up")
    parser.add_argument(
        "--soak-duration", type=float, help="seconds of the soak (default 60; 10 with --quick)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on the gateway's c64 row (its raw output is kept)",
    )
    names = [s.name for s in SCENARIOS]
    parser.add_argument("--only", action="append", choices=names, help="repeatable")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    parser.add_argument("--keep", action="store_true", help="keep the logs, configs and ledgers")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    if args.soak_duration is None:
        args.soak_duration = 10.0 if args.quick else 60.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = options(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk (make bench does it)", file=sys.stderr)
        return 2
    if args.profile and not shutil.which("py-spy", path=Path(sys.executable).parent):
        print("py-spy is missing: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    # 5,000 connections in and as many out: more descriptors than a default shell allows.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Ctrl-C, and a stop from outside, stop the children (in their own sessions) and exit,
    # even when started in the background where SIGINT is ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)

    scenarios = [s for s in SCENARIOS if not args.only or s.name in args.only]
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    work = Path(tempfile.mkdtemp(prefix="cancel-gateway-bench-"))
    profiles = Path(tempfile.mkdtemp(prefix="cancel-gateway-profile-")) if args.profile else None
    bench = Bench(Children(), work, args.duration, args.warmup, args.soak_duration, profiles)
    results: list[Result] = []
    try:
        for scenario in scenarios:
            results += run_scenario(bench, scenario)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        bench.children.stop_all()
        if args.keep:
            print(f"logs, configs and ledgers kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    given = " ".join(sys.argv[1:] if argv is None else argv)
    run = Run(given, args.warmup, args.duration, args.soak_duration, load_before)
    text = report(results, bench.failed, run)
    args.out.write_text(text)
    print()
    print(text)
    print(f"written to {args.out}")
    for r in results:
        if r.profile:
            print(f"py-spy's raw profile of {r.scenario.name} {r.target}: {r.profile}")
    return 1 if bench.failed or any(r.unexpected for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
