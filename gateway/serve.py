"""Running servers: one event loop per process, a clean stop on SIGTERM/SIGINT, a reload on
SIGHUP, N workers.

On a stop signal the listening sockets close first, then in-flight requests get up to the drain
timeout to finish, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.web_request import BaseRequest

from gateway._compat import ErrorAnsweringRunner

Started = Callable[[Sequence[str]], Awaitable[None] | None]


class ErrorAnswer(Protocol):
    """Answers a request the app never saw: one aiohttp could not parse (``exc`` is its
    ``HttpProcessingError``), or one whose handling failed outside every middleware. It logs
    and counts the request itself; the connection is closed after the answer."""

    def __call__(
        self, request: BaseRequest, status: int, exc: BaseException | None
    ) -> web.StreamResponse: ...


# An app that answers such requests itself carries its function here (the gateway's does).
ERROR_ANSWER = web.AppKey("error_answer", ErrorAnswer)


@dataclass(frozen=True)
class Listener:
    app: web.Application
    host: str
    port: int
    drain_timeout_s: float = 10.0
    reuse_port: bool = False
    keepalive_timeout_s: float = 15.0  # idle connections, and requests whose headers trickle
    envelopes: bool = False  # answer malformed HTTP with the app's ERROR_ANSWER
    backlog: int = 4096  # aiohttp's 128 drops SYNs of a burst of connections: 1 s+ retries

    def answer(self) -> ErrorAnswer | None:
        """How this listener answers what aiohttp cannot parse; None: aiohttp's plain text."""
        if not self.envelopes:
            return None
        found = self.app.get(ERROR_ANSWER)
        if found is None:
            raise TypeError("envelopes=True, but the app carries no ERROR_ANSWER")
        return found


class CannotListen(Exception):
    """A listener could not bind (port in use, address not local, permission)."""


ListenerSpec = Listener | Callable[[Sequence[str]], Listener]


async def serve_until_stopped(
    listeners: Sequence[ListenerSpec],
    on_started: Started | None = None,
    stop: asyncio.Event | None = None,
    on_reload: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Serve every listener until SIGTERM/SIGINT (or ``stop`` is set), then drain and return.
    SIGHUP calls ``on_reload``, which must handle its own failures.

    Listeners start in order; one given as a function is built from the URLs of those already
    listening (the demo's gateway learns where its simulator is).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = [signal.SIGTERM, signal.SIGINT]
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[object]] = set()
    if on_reload is not None:
        reload = on_reload

        def hangup() -> None:
            task: asyncio.Task[object] = asyncio.ensure_future(reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, hangup)
            signals.append(signal.SIGHUP)
    runners: list[web.AppRunner] = []
    urls: list[str] = []
    try:
        for spec in listeners:
            listener = spec if isinstance(spec, Listener) else spec(list(urls))
            settings: dict[str, Any] = {
                "access_log": None,
                "shutdown_timeout": listener.drain_timeout_s,
                "keepalive_timeout": listener.keepalive_timeout_s,
            }
            answer = listener.answer()
            runner = (
                web.AppRunner(listener.app, **settings)
                if answer is None
                else ErrorAnsweringRunner(listener.app, answer, **settings)
            )
            await runner.setup()
            runners.append(runner)
            site = EagerSite(
                runner,
                listener.host,
                listener.port,
                reuse_port=listener.reuse_port,
                backlog=listener.backlog,
            )
            try:
                await site.start()
            except OSError as exc:
                where = f"{listener.host}:{listener.port}"
                # asyncio's own text repeats the address: the errno's name says it all.
                reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
                raise CannotListen(f"cannot listen on {where}: {reason}") from None
            urls.extend(_urls(runner))
        if on_started is not None:
            result = on_started(urls)
            if result is not None:
                await result
        await stop.wait()
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        # Last started, first stopped: the gateway drains before the upstreams it calls.
        for runner in reversed(runners):
            await runner.cleanup()


class _Listening:
    """What aiohttp's runner asks of a site's server: its sockets, and to close."""

    def __init__(self, sock: socket.socket) -> None:
        self.sockets = [sock]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


class EagerSite(web.BaseSite):
    """A TCP site that takes every connection waiting in the kernel's queue at each turn of
    the loop. libuv (under uvloop) takes one per turn (libuv/libuv#3696): under a burst of
    thousands, connections then wait in the queue while the accepted ones are served, and some
    time out before they are accepted. Admission control (``server.max_in_flight``) bounds
    what the accepted ones may start, so taking them all at once is safe: those beyond the
    bound are answered ``overloaded`` at once instead of waiting unseen."""

    __slots__ = ("_host", "_port", "_reuse_port", "_sock")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, reuse_port: bool, backlog: int
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self._sock: socket.socket | None = None

    @property
    def name(self) -> str:
        host, port = (self._sock.getsockname()[:2]) if self._sock else (self._host, self._port)
        return _url(host, port)

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.create_server(
            (self._host, self._port),
            family=family,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
        )
        sock.setblocking(False)
        self._sock = sock
        self._server = _Listening(sock)  # type: ignore[assignment]
        factory = self._runner.server
        assert factory is not None

        def accept_all() -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:  # out of descriptors, say: the queue waits a moment
                    loop.remove_reader(sock.fileno())
                    loop.call_later(ACCEPT_PAUSE_S, watch)
                    return
                conn.setblocking(False)
                task = loop.create_task(loop.connect_accepted_socket(factory, sock=conn))
                _CONNECTING.add(task)
                task.add_done_callback(_connected)

        def watch() -> None:
            if sock.fileno() != -1:  # not closed meanwhile
                loop.add_reader(sock.fileno(), accept_all)

        watch()

    async def stop(self) -> None:
        if self._sock is not None and self._sock.fileno() != -1:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        await super().stop()


ACCEPT_PAUSE_S = 0.1  # after an accept that failed (no descriptor left), before the next
_CONNECTING: set[asyncio.Task[Any]] = set()  # held until connected: tasks are weakly kept


def _connected(task: asyncio.Task[Any]) -> None:
    _CONNECTING.discard(task)
    if not task.cancelled():
        task.exception()  # seen: a client gone before its connection was set up is no error


def run(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop when it is installed (it is a dependency on Linux and macOS),
    else on the standard loop."""
    _collect_less_often()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


# New objects between collections of the youngest generation (Python's default is 700), and
# how many of those runs, then of the middle one's, trigger the older generations' (defaults).
GC_THRESHOLDS = (50_000, 20, 100)


def _collect_less_often() -> None:
    """The cyclic garbage collector less often, and never over what was loaded before the loop
    starts (modules, schemas). With thousands of cancellations in flight most young objects
    are still alive, and each collection finds them again; a request's own objects are freed
    by reference counting before a collection sees them. (What it saved under load is in
    bench/README.md.)"""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _urls(runner: web.AppRunner) -> list[str]:
    return [_url(address[0], address[1]) for address in runner.addresses]


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_workers(count: int, target: Callable[[], int]) -> int:
    """Run ``target`` in ``count`` processes sharing one port (SO_REUSEPORT); forward stop
    signals to them and exit with the worst exit code."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(target,)) for _ in range(count)]
    for process in processes:
        process.start()

    def forward(signum: int, _: object) -> None:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)  # each worker reloads its configuration
    for process in processes:
        process.join()
    return max((p.exitcode or 0) for p in processes)


def _worker_main(target: Callable[[], int]) -> None:
    sys.exit(target())
