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
import collections
import contextlib
import datetime
import http.client
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from bench import pyspy

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
# Loopback-only values for processes this benchmark starts and stops: not secrets.
CALLER_KEY = "bench-caller-key-0123456789"
STATESET_KEY = "sk_test_bench_0123456789"
CONNECTION = "stateset-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    name: str
    connections: int
    delay_ms: int  # the upstream's answer delay
    targets: tuple[str, ...]  # direct | baseline | a name of GATEWAYS
    soak: bool = False  # measured for --soak-duration, RSS sampled every second
    # The measured time split into this many rounds, the targets taking turns within each:
    # a machine that slows down for a minute then slows every row alike.
    rounds: int = 1


SCENARIOS = (
    Scenario(
        "c64",
        64,
        0,
        ("direct", "baseline", "gateway", "gateway-w2", "gateway-no-logs"),
        rounds=3,
    ),
    Scenario("c1", 1, 0, ("direct", "baseline", "gateway")),
    Scenario("c256-20ms", 256, 20, ("direct", "baseline", "gateway")),
    Scenario("c1000-20ms", 1000, 20, ("direct", "gateway", "gateway-w2")),
    # The soak's load against the upstream emulation alone, and through the baseline: what
    # this machine and wrk reach with no gateway at all, the floor under the soak's figures.
    Scenario("c5000-100ms", 5000, 100, ("direct", "baseline")),
    Scenario("soak", 5000, 100, ("gateway",), soak=True),
)
PROFILED = ("c64", "gateway")  # the row --profile records


@dataclass(frozen=True)
class Gateway:
    """``cancel-gateway serve`` as measured: its workers, and whether the logs are on (the
    default). The row without them says, in the same run, what they cost. (The ledger has no
    such row: the memory store, the only other one without a server, keeps every entry in the
    process, growing all run long; it cost more than SQLite in both runs that measured it.)"""

    workers: int = 1
    logs: bool = True


GATEWAYS = {
    "gateway": Gateway(),
    "gateway-w2": Gateway(workers=2),
    "gateway-no-logs": Gateway(logs=False),  # warnings and errors only, no access log
}


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
    non_2xx: int
    socket_errors: int
    socket_error_kinds: str  # "connect 12, timeout 3"
    rss_mib: float  # peak (VmHWM), summed over the server's process tree
    cpu_ms_per_request: float  # user + system of the server's process tree
    system_share: float  # of that CPU time, the part spent in the kernel
    processes: int
    note: str = ""
    rss_samples: tuple[tuple[float, float], ...] = ()  # soak: (seconds, MiB) every second
    profile: Path | None = None  # --profile: py-spy's raw output
    rounds: int = 1


def combined(rounds: Sequence[Result]) -> Result:
    """One row from a target's rounds: requests, time and CPU added up, latency percentiles the
    median of the rounds' (wrk's histograms are not kept), the peaks the highest."""
    first = rounds[0]
    requests, seconds = sum(r.requests for r in rounds), sum(r.seconds for r in rounds)
    cpu = [r.cpu_ms_per_request * r.requests for r in rounds]
    kinds = collections.Counter[str]()
    for r in rounds:
        for kind in filter(None, r.socket_error_kinds.split(", ")):
            name, count = kind.rsplit(" ", 1)
            kinds[name] += int(count)
    return replace(
        first,
        requests=requests,
        seconds=seconds,
        rps=requests / seconds if seconds else 0.0,
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
        mean_ms=sum(r.mean_ms * r.requests for r in rounds) / requests if requests else 0.0,
        non_2xx=sum(r.non_2xx for r in rounds),
        socket_errors=sum(r.socket_errors for r in rounds),
        socket_error_kinds=", ".join(f"{k} {n}" for k, n in kinds.items()),
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
    )


# Processes: each child leads its own process group, so a stop reaches its workers too.


class Children:
    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: Sequence[str], *, env: dict[str, str], out: IO[bytes] | int
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(  # noqa: S603 - our own argv
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
        """SIGTERM to the group, SIGKILL after ``grace_s``."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # a worker that outlived its parent
            os.killpg(process.pid, signal.SIGKILL)
        if process in self._running:
            self._running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(self._running):
            self.stop(process, grace_s=5.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listeners(port: int) -> int:
    """Listening sockets on 127.0.0.1:port: one per ``--workers`` process (SO_REUSEPORT)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[1] == wanted and row[3] == "0A")


def process_tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def cpu_ticks(pids: Sequence[int]) -> tuple[int, int]:
    """User and system clock ticks used so far by these processes."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    return user, system


def memory_kib(pids: Sequence[int], what: str = "VmHWM") -> int:
    """``VmHWM`` (peak RSS) or ``VmRSS`` (RSS now), summed over these processes."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(f"{what}:"):
                    total += int(line.split()[1])
    return total


@contextlib.contextmanager
def rss_sampled(root: int) -> Iterator[list[tuple[float, float]]]:
    """(seconds since the start, MiB): the process tree's RSS, once a second, until the end."""
    samples: list[tuple[float, float]] = []
    stop, start = threading.Event(), time.monotonic()

    def sample() -> None:
        while True:
            rss = memory_kib(process_tree(root), "VmRSS") / 1024
            samples.append((time.monotonic() - start, rss))
            if stop.wait(1.0 - (time.monotonic() - start) % 1.0):
                return

    sampler = threading.Thread(target=sample, name="rss", daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        stop.set()
        sampler.join()


@contextlib.contextmanager
def profiled(children: Children, pid: int, duration_s: float, output: Path) -> Iterator[None]:
    """``py-spy record`` on ``pid`` for ``duration_s``, started on entry, awaited on exit."""
    py_spy = shutil.which("py-spy", path=Path(sys.executable).parent) or "py-spy"
    log = output.with_suffix(".log")
    with log.open("wb") as out:
        process = children.start(
            pyspy.command(py_spy, pid, duration_s, output), env=dict(os.environ), out=out
        )
    try:
        yield
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(duration_s + 30)
    finally:
        children.stop(process, grace_s=5.0)
    if process.returncode != 0 or not output.exists():
        raise RuntimeError(f"py-spy failed ({process.returncode}):\n{log.read_text()[-2000:]}")


# Requests: what wrk sends, and one probe of each server before it is measured.


def request_for(target: str, port: int) -> tuple[str, str, str, str]:
    """URL, path format, body format (``%d``: a number from 1 to 1,000) and bearer key."""
    if target == "direct":
        body = json.dumps({"reason": "bench", "cancelled_by": "bench", "notify_supplier": True})
        return f"http://127.0.0.1:{port}", "/v1/asns/asn_bench_%d/cancel", body, STATESET_KEY
    body = json.dumps({"connection": CONNECTION, "id": "asn_bench_%d", "reason": "bench"})
    return f"http://127.0.0.1:{port}", "/v1/cancellations", body, CALLER_KEY


LUA = """
local ring, n = {}, 0
init = function(args)
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer KEY"}
  for i = 1, 1000 do
    ring[i] = wrk.format("POST", string.format([[PATH]], i), headers, string.format([[BODY]], i))
  end
end
request = function()
  n = n % #ring + 1
  return ring[n]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"status":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"p50_us":%.1f,"p99_us":%.1f,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def write_script(folder: Path, path: str, body: str, key: str) -> Path:
    script = folder / "bench.lua"
    lua = LUA.replace("PATH", path).replace("BODY", body).replace("KEY", key)
    script.write_text(lua)
    return script


def probe(port: int, path: str, body: str, key: str) -> None:
    """One request as wrk will send it; a server that does not answer 2xx is not measured."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        connection.request("POST", path.replace("%d", "0"), body.replace("%d", "0"), headers)
        answer = connection.getresponse()
        text = answer.read().decode(errors="replace")
    finally:
        connection.close()
    if answer.status // 100 != 2 or json.loads(text).get("status") != "cancelled":
        raise RuntimeError(f"probe of port {port} answered {answer.status}: {text[:500]}")


def wait_listening(process: subprocess.Popen[bytes], port: int, count: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while listeners(port) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{process.args!r} did not start listening on {port}:\n{tail}")
        time.sleep(0.05)


def wrk(url: str, script: Path, connections: int, duration_s: float, children: Children) -> Any:
    argv = [
        shutil.which("wrk") or "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    with tempfile.TemporaryFile() as out:
        process = children.start(argv, env=dict(os.environ), out=out)
        try:
            process.wait(duration_s + 60)
        finally:
            children.stop(process, grace_s=1.0)
        out.seek(0)
        text = out.read().decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{text}")
    return json.loads(line.removeprefix("BENCH "))


# Servers.


def gateway_config(
    folder: Path, upstream_port: int, gateway: Gateway = GATEWAYS["gateway"]
) -> Path:
    """Every default on (SQLite ledger, JSON logs, access log) unless ``gateway`` turns the
    logs off; limits no run reaches."""
    path = folder / "gateway.yaml"
    logging = (
        "level: info\n  access_log: true" if gateway.logs else "level: warning\n  access_log: false"
    )
    path.write_text(
        f"""\
server:
  host: 127.0.0.1
store:
  backend: sqlite
  path: ledger.db
logging:
  {logging}
callers:
  - name: bench
    key: ${{BENCH_CALLER_KEY}}
    connections: ["*"]
connections:
  {CONNECTION}:
    provider: stateset
    base_url: http://127.0.0.1:{upstream_port}
    credentials:
      api_key: ${{BENCH_STATESET_KEY}}
    timeout_s: 10
    breaker: {{failures: 10000}}
    limits: {{concurrency: 100000, rate_per_s: 0}}
"""
    )
    return path


def environment() -> dict[str, str]:
    return {**os.environ, "BENCH_CALLER_KEY": CALLER_KEY, "BENCH_STATESET_KEY": STATESET_KEY}


def gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "cancel-gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


@contextlib.contextmanager
def server(
    target: str, upstream_port: int, children: Children, folder: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The server under test for ``target``, listening: its process and port."""
    port, workers = free_port(), 1
    log = folder / "server.log"
    if target == "baseline":
        upstream = f"http://127.0.0.1:{upstream_port}"
        argv = [sys.executable, "-m", "bench.baseline", "--port", str(port)]
        argv += ["--upstream", upstream, "--connection", CONNECTION]
    else:
        gateway = GATEWAYS[target]
        config, workers = gateway_config(folder, upstream_port, gateway), gateway.workers
        argv = [*gateway_command(), "serve", "--config", str(config), "--port", str(port)]
        argv += ["--workers", str(workers)]
    with log.open("wb") as out:
        process = children.start(argv, env=environment(), out=out)
    try:
        wait_listening(process, port, workers, log)
        yield process, port
    finally:
        children.stop(process)


def log_note(log: Path) -> str:
    """The gateway's own log, as a check that it logged, and what it said besides ``info``:
    the events of its warnings and errors and the statuses of its non-2xx answers."""
    lines = answers = 0
    unusual = collections.Counter[str]()
    with log.open("rb") as stream:
        for line in stream:
            lines += 1
            try:
                event = json.loads(line)
            except ValueError:
                unusual["non-JSON line"] += 1
                continue
            level, status = event.get("level"), event.get("status")
            if level != "info":
                code = event.get("error_code") or event.get("code") or ""
                unusual[f"{level} {event.get('event')} {code}".strip()] += 1
            elif event.get("event") == "http.request":
                answers += 1
                if not 200 <= status < 300:
                    unusual[f"answered {status}"] += 1
    size = log.stat().st_size / 2**20
    per = f"{lines / answers:.2f} lines per answer" if answers else "no access log line"
    said = "".join(f"; {what}: {n}" for what, n in unusual.most_common(6))
    return f"{lines} lines ({size:.1f} MiB), {per}{said}"


# One measurement.


@dataclass(frozen=True)
class Bench:
    children: Children
    work: Path  # logs, configs and ledgers, one folder per measurement
    duration_s: float
    warmup_s: float
    soak_s: float
    profiles: Path | None  # --profile: where py-spy writes (kept after the run)
    failed: list[str] = field(default_factory=list)  # rows that could not be measured


def measure(
    bench: Bench,
    scenario: Scenario,
    target: str,
    upstream: tuple[subprocess.Popen[bytes], int],
    round_: int = 0,
) -> Result:
    folder = bench.work / scenario.name / target / f"round-{round_ + 1}"
    folder.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        if target == "direct":
            (process, port), log = upstream, bench.work / scenario.name / "upstream.log"
        else:
            process, port = stack.enter_context(server(target, upstream[1], bench.children, folder))
            log = folder / "server.log"
        try:
            summary, (user_ms, system_ms), rss_kib, processes, samples, profile = load(
                bench, scenario, target, process, port, folder, round_
            )
        except (RuntimeError, OSError) as exc:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{exc}\n{tail}") from None
    requests = summary["requests"]
    kinds = {k: summary[k] for k in ("connect", "read", "write", "timeout") if summary[k]}
    return Result(
        scenario=scenario,
        target=target,
        requests=requests,
        seconds=summary["duration_us"] / 1e6,
        rps=requests / (summary["duration_us"] / 1e6),
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        mean_ms=summary["mean_us"] / 1000,
        non_2xx=summary["status"],
        socket_errors=sum(kinds.values()),
        socket_error_kinds=", ".join(f"{k} {n}" for k, n in kinds.items()),
        rss_mib=rss_kib / 1024,
        cpu_ms_per_request=(user_ms + system_ms) / requests if requests else float("nan"),
        system_share=system_ms / (user_ms + system_ms) if user_ms + system_ms else 0.0,
        processes=processes,
        note=log_note(log) if target.startswith("gateway") else "",
        rss_samples=tuple(samples),
        profile=profile,
    )


def load(
    bench: Bench,
    scenario: Scenario,
    target: str,
    process: subprocess.Popen[bytes],
    port: int,
    folder: Path,
    round_: int = 0,
) -> tuple[Any, tuple[float, float], int, int, list[tuple[float, float]], Path | None]:
    """Probe, warm up, measure: wrk's summary of the measured run, the CPU ms the server's tree used
    (user, system) in the measured one, its peak RSS in KiB, its number of processes, its RSS
    every second (soak only) and py-spy's profile of it (the profiled row with --profile: each
    round's samples added to one file, as py-spy's raw format allows)."""
    url, path, body, key = request_for(target, port)
    probe(port, path, body, key)
    script = write_script(folder, path, body, key)
    wrk(url, script, scenario.connections, bench.warmup_s, bench.children)
    duration = bench.soak_s if scenario.soak else bench.duration_s / scenario.rounds
    profile = None
    if bench.profiles and (scenario.name, target) == PROFILED:
        profile = bench.profiles / f"{scenario.name}-{target}.raw"
        this_round = profile.with_name(f"{profile.stem}-round-{round_ + 1}.raw")
    tree = process_tree(process.pid)
    user, system = cpu_ticks(tree)
    with contextlib.ExitStack() as during:
        samples = during.enter_context(rss_sampled(process.pid)) if scenario.soak else []
        if profile:
            during.enter_context(profiled(bench.children, process.pid, duration, this_round))
        summary = wrk(url, script, scenario.connections, duration, bench.children)
    if profile:
        with profile.open("ab") as every_round:
            every_round.write(this_round.read_bytes())
    tree = process_tree(process.pid)  # the same processes, unless one died
    user_after, system_after = cpu_ticks(tree)
    cpu = ((user_after - user) * 1000 / CLK_TCK, (system_after - system) * 1000 / CLK_TCK)
    if process.poll() is not None:
        raise RuntimeError(f"the server exited with code {process.returncode}")
    return summary, cpu, memory_kib(tree), len(tree), samples, profile


def run_scenario(bench: Bench, scenario: Scenario) -> list[Result]:
    """One upstream emulation with the scenario's delay, each target measured in front of it,
    in turns when the scenario has rounds."""
    rounds: dict[str, list[Result]] = {target: [] for target in scenario.targets}
    port = free_port()
    argv = [sys.executable, "-m", "bench.upstream", "--port", str(port)]
    argv += ["--delay-ms", str(scenario.delay_ms)]
    log = bench.work / scenario.name / "upstream.log"
    log.parent.mkdir()
    with log.open("wb") as out:
        upstream = bench.children.start(argv, env=environment(), out=out)
    try:
        wait_listening(upstream, port, 1, log)
        for round_, target in itertools.product(range(scenario.rounds), scenario.targets):
            turn = f" (round {round_ + 1} of {scenario.rounds})" if scenario.rounds > 1 else ""
            print(f"{scenario.name} {target}{turn} ...", end=" ", flush=True)
            try:
                result = measure(bench, scenario, target, (upstream, port), round_)
            except (RuntimeError, OSError) as exc:  # the row is reported; the others go on
                print(f"FAILED: {exc}", flush=True)
                bench.failed.append(f"{scenario.name} {target}{turn}: {str(exc).splitlines()[0]}")
                continue
            rounds[target].append(result)
            print(f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms", flush=True)
    finally:
        bench.children.stop(upstream)
    return [combined(measured) for measured in rounds.values() if measured]


# Report.


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
        "| scenario | target | req/s | p50 ms | p99 ms | non-2xx | socket errors "
        "| peak RSS MiB | CPU ms/req | of it kernel | processes |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if r.scenario.soak:
            continue
        flag = " **FAIL**" if r.non_2xx else ""
        rows.append(
            f"| {r.scenario.name} | {r.target} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.non_2xx}{flag} | {r.socket_errors} | {r.rss_mib:.1f} "
            f"| {r.cpu_ms_per_request:.3f} | {r.system_share:.0%} | {r.processes} |"
        )
    return rows


def rss_slope(r: Result) -> float | None:
    """MiB per minute: a least-squares fit of the RSS sampled over the second half of the run."""
    half = r.rss_samples[-1][0] / 2 if r.rss_samples else 0.0
    late = [(t, mib) for t, mib in r.rss_samples if t >= half]
    if len(late) < 3:
        return None
    times, mibs = zip(*late, strict=True)
    return statistics.linear_regression(times, mibs).slope * 60


def soak_table(results: Sequence[Result]) -> list[str]:
    rows = [
        "| req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | in flight | non-2xx "
        "| socket errors | RSS MiB: start | peak | end | slope, MiB/min | CPU ms/req |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if not r.scenario.soak or not r.rss_samples:
            continue
        delay, mibs, slope = r.scenario.delay_ms, [m for _, m in r.rss_samples], rss_slope(r)
        kinds = f" ({r.socket_error_kinds})" if r.socket_errors else ""
        rows.append(
            f"| {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.p50_ms - delay:.2f} "
            f"| {r.p99_ms - delay:.2f} | {r.rps * r.mean_ms / 1000:,.0f} | {r.non_2xx} "
            f"| {r.socket_errors}{kinds} | {mibs[0]:.1f} | {max(mibs):.1f} | {mibs[-1]:.1f} "
            f"| {'?' if slope is None else f'{slope:+.2f}'} | {r.cpu_ms_per_request:.3f} |"
        )
    return rows if len(rows) > 2 else []


def ratios(results: Sequence[Result]) -> list[str]:
    """The figures issue 7 sets targets for, from the rows that were measured."""
    rows = {(r.scenario.name, r.target): r for r in results}

    def rps(scenario: str, target: str, over: str) -> float | None:
        mine, theirs = rows.get((scenario, target)), rows.get((scenario, over))
        return mine.rps / theirs.rps if mine and theirs else None

    def added_p50(target: str) -> float | None:
        mine, direct = rows.get(("c1", target)), rows.get(("c1", "direct"))
        return mine.p50_ms - direct.p50_ms if mine and direct else None

    def cpu(target: str) -> float | None:
        row = rows.get(("c64", target))
        return row.cpu_ms_per_request if row else None

    def cost(without: str) -> float | None:
        """CPU ms/request the feature ``without`` leaves out costs the gateway, 64 connections."""
        mine, less = cpu("gateway"), cpu(without)
        return mine - less if mine is not None and less is not None else None

    w2_64, w2_1k = rps("c64", "gateway-w2", "gateway"), rps("c1000-20ms", "gateway-w2", "gateway")
    soak = rows.get(("soak", "gateway"))
    soak_slope = rss_slope(soak) if soak else None

    def added_p99_and_errors(scenario: str, target: str) -> tuple[float | None, int | None]:
        """p99 ms beyond the upstream's delay, and non-2xx plus socket errors."""
        row = rows.get((scenario, target))
        if row is None:
            return None, None
        return row.p99_ms - row.scenario.delay_ms, row.non_2xx + row.socket_errors

    soak_p99, soak_errors = added_p99_and_errors("soak", "gateway")
    floor_p99, floor_errors = added_p99_and_errors("c5000-100ms", "direct")
    base_p99, base_errors = added_p99_and_errors("c5000-100ms", "baseline")
    figures = [  # what, value, issue 7's target
        ("gateway / baseline req/s, 64 connections", rps("c64", "gateway", "baseline"), "≥ 1"),
        ("gateway CPU ms/request, 64 connections", cpu("gateway"), "≤ 0.17"),
        ("baseline CPU ms/request, 64 connections", cpu("baseline"), ""),
        ("of the gateway's, the logs' CPU ms/request", cost("gateway-no-logs"), ""),
        ("gateway added p50 ms, 1 connection", added_p50("gateway"), "≤ 0.5"),
        ("baseline added p50 ms, 1 connection", added_p50("baseline"), ""),
        ("--workers 2 / 1 worker req/s, 64 connections", w2_64, "≥ 1.4"),
        (
            "gateway / direct req/s, 256 conn., 20 ms",
            rps("c256-20ms", "gateway", "direct"),
            "≥ 0.45",
        ),
        (
            "baseline / direct req/s, 256 conn., 20 ms",
            rps("c256-20ms", "baseline", "direct"),
            "",
        ),
        ("gateway / direct req/s, 1,000 conn., 20 ms", rps("c1000-20ms", "gateway", "direct"), ""),
        ("--workers 2 / 1 worker req/s, 1,000 conn., 20 ms", w2_1k, ""),
        ("soak: added p99 ms, 5,000 conn., 100 ms", soak_p99, "≤ 40"),
        ("soak: errors (non-2xx and socket errors)", soak_errors, "= 0"),
        ("soak: RSS slope over the 2nd half, MiB/min (flat)", soak_slope, "≤ 1"),
        ("no gateway, the soak's load on the upstream alone: added p99 ms", floor_p99, ""),
        ("no gateway, the soak's load on the upstream alone: errors", floor_errors, ""),
        ("no gateway, the soak's load through the baseline: added p99 ms", base_p99, ""),
        ("no gateway, the soak's load through the baseline: errors", base_errors, ""),
    ]
    lines = []
    for what, value, target in figures:
        if value is None:
            lines.append(f"- {what}: not measured")
            continue
        line = f"- {what}: **{value:,.0f}**" if abs(value) >= 1000 else f"- {what}: **{value:.3g}**"
        if target:
            sense, bound = target.split()
            met = {
                "≥": value >= float(bound),
                "≤": value <= float(bound),
                "=": value == float(bound),
            }[sense]
            line += f" (target {target}: {'met' if met else 'not met'})"
        lines.append(line)
    return lines


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


def report(
    results: Sequence[Result], failed: Sequence[str], args: argparse.Namespace, load_before: str
) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    notes = [f"- {r.scenario.name} {r.target}: {r.note}" for r in results if r.note]
    soak = soak_table(results)
    flagged = [r for r in results if r.non_2xx or r.socket_errors]
    warnings = [
        f"- **{r.scenario.name} {r.target}: {r.non_2xx} non-2xx answers, "
        f"{r.socket_errors} socket errors** {r.socket_error_kinds}".rstrip()
        for r in flagged
    ] + [f"- **not measured: {row}**" for row in failed]
    parts = [
        "# Benchmark results",
        "",
        f"Written by `python -m bench.run` ({' '.join(sys.argv[1:]) or 'no options'}) on {when}: "
        f"{args.warmup:g} s of warm-up, then {args.duration:g} s measured per row"
        f"{f' ({args.soak_duration:g} s for the soak)' if soak else ''}. "
        f"{interleaved(results)}See bench/README.md for how to read it.",
        "",
        "## Machine",
        "",
        *machine(load_before),
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
        "the logs cost. Scenario "
        "`cN` is N connections against an immediate upstream, `cN-20ms` against one that "
        "answers after 20 ms. RSS and CPU are of the server's whole process tree (upstream "
        "excluded, except for `direct`).",
        "",
        *table(results),
        "",
    ]
    if soak:
        parts += [
            "## Soak",
            "",
            f"`cancel-gateway serve` (one worker), 5,000 connections for {args.soak_duration:g} s "
            "against an upstream that answers after 100 ms. *Added* is p50 or p99 minus those "
            "100 ms; *in flight* is req/s times wrk's mean latency (Little's law): requests being "
            "answered at any moment, short of 5,000 when connections wait to be accepted. RSS "
            "is `VmRSS` of the gateway, sampled every second of the measured run; the slope is "
            "a least-squares fit over its second half.",
            "",
            *soak,
            "",
        ]
    parts += [
        "## Against the targets of issue 7",
        "",
        *ratios(results),
        "",
    ]
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


def main(argv: Sequence[str] | None = None) -> int:
    names = [s.name for s in SCENARIOS]
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
    parser.add_argument("--only", action="append", choices=names, help="repeatable")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    parser.add_argument("--keep", action="store_true", help="keep the logs, configs and ledgers")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    if args.soak_duration is None:
        args.soak_duration = 10.0 if args.quick else 60.0
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
    text = report(results, bench.failed, args, load_before)
    args.out.write_text(text)
    print()
    print(text)
    print(f"written to {args.out}")
    for r in results:
        if r.profile:
            print(f"py-spy's raw profile of {r.scenario.name} {r.target}: {r.profile}")
    return 1 if bench.failed or any(r.non_2xx for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
