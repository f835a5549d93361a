"""The load generator: ``wrk`` with a Lua script that cycles through 1,000 cancellations and
prints its summary as one JSON line, which :func:`parse` reads.

One thread (``-t1``): on two cores, wrk keeps one busy and leaves the other to the servers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.processes import Children

MARK = "BENCH "  # the summary line's prefix, among whatever else wrk prints
TIMEOUT_S = 10
KINDS = ("connect", "read", "write", "timeout")  # wrk's socket errors

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
    '"timeout":%d,"p50_us":%.1f,"p99_us":%.1f,"mean_us":%.1f,"max_us":%.1f}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class Request:
    """What wrk sends, over and over: ``%d`` in the path and body stands for 1 to 1,000, so
    the ids differ and the gateway's ledger sees new cancellations."""

    url: str  # the server's root
    path: str
    body: str
    key: str  # the bearer key


@dataclass(frozen=True)
class Summary:
    """wrk's figures of one run; latencies from a request's write to its answer."""

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: dict[str, int]  # by kind (KINDS), the kinds that occurred
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float  # the longest answer


def write_script(folder: Path, request: Request) -> Path:
    script = folder / "bench.lua"
    lua = LUA.replace("PATH", request.path).replace("BODY", request.body)
    script.write_text(lua.replace("KEY", request.key))
    return script


def parse(output: str) -> Summary:
    """The summary line of wrk's output; a RuntimeError with the output when there is none."""
    line = next((x for x in output.splitlines() if x.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{output}")
    raw = json.loads(line.removeprefix(MARK))
    return Summary(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        non_2xx=raw["status"],
        socket_errors={kind: raw[kind] for kind in KINDS if raw[kind]},
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
    )


def run(
    request: Request, script: Path, connections: int, duration_s: float, children: Children
) -> Summary:
    """wrk for ``duration_s`` (whole seconds, at least one) with ``connections``."""
    argv = [
        shutil.which("wrk") or "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        f"{TIMEOUT_S}s",
        "--latency",
        "-s",
        str(script),
        request.url,
    ]
    with tempfile.TemporaryFile() as out:
        process = children.start(argv, env=dict(os.environ), out=out)
        try:
            process.wait(duration_s + 60)
        finally:
            children.stop(process, grace_s=1.0)
        out.seek(0)
        return parse(out.read().decode(errors="replace"))
