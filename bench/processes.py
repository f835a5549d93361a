"""The benchmark's processes: starting and stopping them, and what ``/proc`` says of them.

Each child leads its own process group, so a stop reaches a server's workers too, and a
server's CPU time and memory are summed over its whole process tree (``--workers`` forks).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Children:
    """The processes started and not yet stopped, so an error or Ctrl-C stops them all."""

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


def wait_listening(process: subprocess.Popen[bytes], port: int, count: int, log: Path) -> None:
    """Until ``count`` sockets listen on ``port``; an error with the log's tail when the
    process exits first or 30 s pass."""
    deadline = time.monotonic() + 30
    while listeners(port) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{process.args!r} did not start listening on {port}:\n{tail}")
        time.sleep(0.05)


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
