"""Where the gateway's time goes: ``py-spy record`` run on it, and its raw output summed up.

py-spy's raw (collapsed) format has one line per distinct stack, ``frame;frame;... count``,
outermost frame first; with ``--threads`` the first frame is ``thread (tid): name``. Only the
main thread's stacks are counted (the event loop runs there); without ``--idle``, py-spy leaves
out the samples in which a thread was waiting, so these are samples of CPU time.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.processes import ROOT, Children

RATE_HZ = 200
MAIN_THREAD = "MainThread"
EVERYWHERE = 0.99  # functions on at least this share of the stacks: the entry frames

Function = tuple[str, str]  # name, file (as short as it can be made: aiohttp/web_protocol.py)


def command(py_spy: str, pid: int, duration_s: float, output: Path) -> list[str]:
    """Raw (collapsed) stacks, one thread name first on each; idle samples left out."""
    options = {"--duration": max(1, round(duration_s)), "--rate": RATE_HZ, "--output": output}
    given = [str(x) for option in options.items() for x in option]
    # --nonblocking: read the process without pausing it for each sample, which would slow
    # the very run being measured (at the price of an occasional torn stack).
    return [
        py_spy, "record", "--pid", str(pid), *given,
        "--format", "raw", "--threads", "--nonblocking",
    ]  # fmt: skip


@contextlib.contextmanager
def profiled(children: Children, pid: int, duration_s: float, output: Path) -> Iterator[None]:
    """``py-spy record`` on ``pid`` for ``duration_s``, started on entry, awaited on exit."""
    py_spy = shutil.which("py-spy", path=Path(sys.executable).parent) or "py-spy"
    log = output.with_suffix(".log")
    with log.open("wb") as out:
        process = children.start(
            command(py_spy, pid, duration_s, output), env=dict(os.environ), out=out
        )
    try:
        yield
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(duration_s + 30)
    finally:
        children.stop(process, grace_s=5.0)
    if process.returncode != 0 or not output.exists():
        raise RuntimeError(f"py-spy failed ({process.returncode}):\n{log.read_text()[-2000:]}")


def short_file(file: str) -> str:
    """``/…/site-packages/aiohttp/web.py`` → ``aiohttp/web.py``; the project's and the
    standard library's files relative to their folders (py-spy often shortens them already)."""
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in file:
            return file.rpartition(marker)[2]
    for folder in (str(ROOT), sysconfig.get_paths()["stdlib"]):
        if file.startswith(folder + "/"):
            return file[len(folder) + 1 :]
    return file


def package(file: str) -> str:
    """The project's files one by one (``gateway/logging.py``), anything else by package."""
    top, slash, _ = file.partition("/")
    if top == "gateway":
        return file
    top = top if slash else top.removesuffix(".py")
    if top == "<string>":
        return "generated code"  # exec'd: dataclasses' __init__, namedtuples…
    top = top.removeprefix("<frozen ").removesuffix(">").partition(".")[0]  # <frozen abc>
    return f"{top} (stdlib)" if top in sys.stdlib_module_names else top


def function(frame: str) -> Function:
    """``Class.method (file.py:123)`` → (``Class.method``, ``file.py``)."""
    name, paren, where = frame.rpartition(" (")
    if not paren:
        return frame, ""
    file, colon, line = where.removesuffix(")").rpartition(":")
    return name, short_file(file if colon and line.isdigit() else where.removesuffix(")"))


@dataclass(frozen=True)
class Profile:
    samples: int  # the main thread's
    other_threads: int  # samples of other threads, left out
    inclusive: collections.Counter[Function]  # samples with the function anywhere on the stack
    innermost: collections.Counter[Function]  # samples with it as the innermost frame


def read(path: Path) -> Profile:
    samples = other = 0
    inclusive, innermost = collections.Counter[Function](), collections.Counter[Function]()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *frames = stack.split(";")
        if not count.isdigit() or not frames:
            continue
        if not thread.endswith(f": {MAIN_THREAD}"):
            other += int(count)
            continue
        functions = [function(frame) for frame in frames]
        samples += int(count)
        for each in set(functions):
            inclusive[each] += int(count)
        innermost[functions[-1]] += int(count)
    return Profile(samples, other, inclusive, innermost)


def section(profile: Profile, path: Path, what: str, top: int = 20) -> list[str]:
    """RESULTS.md's "Where the time goes": the ``top`` functions by inclusive share, grouped
    by package, then the share of each package as the innermost frame."""
    n = profile.samples
    if not n:
        return [f"py-spy recorded no sample of the main thread ({path})."]
    entry = {f for f, count in profile.inclusive.items() if count >= EVERYWHERE * n}
    ranked = [(f, c) for f, c in profile.inclusive.most_common() if f not in entry][:top]
    groups: dict[str, list[tuple[Function, int]]] = {}
    for f, count in ranked:  # each group where its best function ranks
        groups.setdefault(package(f[1]), []).append((f, count))
    rows = ["| package | function | inclusive | innermost |", "|---|---|--:|--:|"]
    for name, members in groups.items():
        for i, ((label, file), count) in enumerate(members):
            where = "" if file == name else f" ({file.removeprefix(name.split()[0] + '/')})"
            rows.append(
                f"| {name if i == 0 else ''} | `{label}`{where} | {count / n:.1%} "
                f"| {profile.innermost[(label, file)] / n:.1%} |"
            )
    by_package, gateway = collections.Counter[str](), collections.Counter[str]()
    for (_, file), count in profile.innermost.items():
        name = package(file)
        by_package["gateway" if name.startswith("gateway/") else name] += count
        if name.startswith("gateway/"):
            gateway[name.removeprefix("gateway/")] += count
    shown = [(p, c) for p, c in by_package.most_common() if c >= 0.01 * n]
    rest = n - sum(c for _, c in shown)
    modules = ", ".join(f"{m} {c / n:.1%}" for m, c in gateway.most_common() if c >= 0.01 * n)
    summary = ", ".join(
        f"**{p}** {c / n:.1%}" + (f" ({modules}…)" if p == "gateway" and modules else "")
        for p, c in shown
    )
    entry_names = ", ".join(sorted(f"`{label}`" for label, _ in entry))
    return [
        f"`py-spy record` at {RATE_HZ} Hz on {what}, Python frames only: time spent in C "
        "(uvloop, orjson, sqlite3, the kernel) counts for the Python function that called it. "
        f"Only the main thread, where the event loop runs, and only samples in which it was "
        f"running (py-spy without `--idle`): {n:,} samples; {profile.other_threads:,} of other "
        "threads left out. *Inclusive*: share of those samples with the function anywhere on "
        "the stack; *innermost*: as the innermost frame. Left out as on every stack: "
        f"{entry_names or 'none'}.",
        "",
        *rows,
        "",
        f"Innermost frame by package (≥ 1%): {summary}; other {rest / n:.1%}.",
    ]
