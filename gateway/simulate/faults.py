"""Playing a scenario: the provider's own refusals, and the faults every upstream can show.

A provider module describes itself with a ``Provider`` (its error shape and its scenario
outcomes) and hands ``play`` a function that performs the real cancel. ``play`` decides from
the id whether that function runs, runs late, or is replaced by an error or a broken answer.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from aiohttp import web

from gateway.simulate.replies import JSON_TYPE, Call, Reply
from gateway.simulate.scenarios import Match, match
from gateway.simulate.state import CLOCK_KEY, STATE_KEY

REDIRECT_TARGET = "/_redirected"
OVERSIZED_BYTES = 2 * 1024 * 1024 + 4096
HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body>\n"
    "</html>\n"
)

ErrorShape = Callable[[int, Call], Reply]
Outcome = Callable[[Call], Reply]
Succeed = Callable[[datetime], Reply]


@dataclass(frozen=True)
class Provider:
    """How one simulated provider answers besides its success."""

    name: str
    error: ErrorShape  # a generic error (401, 404, 405, 429, 500, 503) in its own shape
    outcomes: Mapping[str, Outcome] = field(default_factory=dict)  # its own scenarios
    request_id_header: str | None = None


async def play(
    request: web.Request, provider: Provider, call: Call, succeed: Succeed
) -> web.StreamResponse:
    """Answer a valid, authorised cancel of ``call.object_id`` as its scenario says."""
    found = match(call.object_id)
    if found is None or provider.name not in found.scenario.providers:
        return succeed(call.now).response()
    if found.scenario.fault:
        return await FAULTS[found.name](request, provider, call, found, succeed)
    outcome = provider.outcomes.get(found.name)
    # A scenario without an outcome is a variant of success the provider's `succeed` plays.
    return (outcome(call) if outcome else succeed(call.now)).response()


Fault = Callable[[web.Request, Provider, Call, Match, Succeed], Awaitable[web.StreamResponse]]


async def _already(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    request.app[STATE_KEY].cancel(provider.name, call.object_id, call.now)
    return succeed(call.now).response()


async def _unauthorized(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    return provider.error(401, call).response()


async def _err500(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    return provider.error(500, call).response()


async def _slow(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    await asyncio.sleep((found.value or 0) / 1000)
    return succeed(request.app[CLOCK_KEY]()).response()


async def _flaky503(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    calls = request.app[STATE_KEY].count(provider.name, call.object_id, found.name)
    if calls <= (found.value or 0):
        return provider.error(503, call).response()
    return succeed(call.now).response()


async def _ratelimit(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    calls = request.app[STATE_KEY].count(provider.name, call.object_id, found.name)
    if calls == 1:
        return _too_many(provider, call, found.value or 0)
    return succeed(call.now).response()


async def _ratelimit_always(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    return _too_many(provider, call, 120)


def _too_many(provider: Provider, call: Call, retry_after_s: int) -> web.Response:
    response = provider.error(429, call).response()
    response.headers["Retry-After"] = str(retry_after_s)
    return response


async def _lost_answer(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    applied = succeed(call.now)  # the provider did it; its answer is what gets lost
    await asyncio.sleep((found.value or 0) / 1000)
    return applied.response()


async def _lost_reset(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    succeed(call.now)
    return await _reset(request, provider, call, found, succeed)


async def _reset(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: closing sends an RST instead of a FIN, as a crashed proxy would.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # Nothing reaches the client: the transport is gone before this is written.
    return web.Response(status=500)


async def _html(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    return web.Response(status=502, text=HTML_PAGE, content_type="text/html")


async def _nonjson(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    return web.Response(status=200, text="OK", content_type="text/plain")


async def _empty(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    return web.Response(status=200, body=b"", content_type=JSON_TYPE)


async def _oversized(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    body = orjson.dumps({"padding": "x" * OVERSIZED_BYTES})
    return web.Response(status=200, body=body, content_type=JSON_TYPE)


async def _redirect(
    request: web.Request, provider: Provider, call: Call, found: Match, succeed: Succeed
) -> web.StreamResponse:
    return web.Response(status=found.value or 302, headers={"Location": REDIRECT_TARGET})


async def redirected(request: web.Request) -> web.Response:
    """Where ``redirect`` points: only a client that follows redirects gets here."""
    return Reply(200, {"redirected": True}).response()


FAULTS: Mapping[str, Fault] = {
    "already": _already,
    "unauthorized": _unauthorized,
    "err500": _err500,
    "slow": _slow,
    "flaky503": _flaky503,
    "ratelimit": _ratelimit,
    "ratelimit-always": _ratelimit_always,
    "lostanswer": _lost_answer,
    "lostreset": _lost_reset,
    "reset": _reset,
    "html": _html,
    "nonjson": _nonjson,
    "empty": _empty,
    "oversized": _oversized,
    "redirect": _redirect,
}
