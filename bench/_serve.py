"""What the upstream emulation and the baseline share: run one aiohttp app on loopback, on
uvloop when it is installed, until SIGTERM or SIGINT. No access log."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from aiohttp import web

BACKLOG = 4096  # 1,000 connections arrive at once: aiohttp's default of 128 would drop SYNs


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # `make bench` installs it
        return None
    return uvloop.new_event_loop


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=BACKLOG).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(app: web.Application, port: int) -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve(app, port))
