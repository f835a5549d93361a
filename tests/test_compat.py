"""The reaches into other libraries' private parts (gateway/_compat.py): each one still does
what the gateway relies on with the installed versions, and says so loudly when it cannot."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp
import jmespath
import pytest
from aiohttp import web
from aiohttp.web_request import BaseRequest

from gateway._compat import (
    ErrorAnsweringRunner,
    LibraryChanged,
    disable_client_resend,
    field_comparison,
    field_keys,
)


async def test_the_clients_silent_resend_is_switched_off() -> None:
    async with aiohttp.ClientSession() as session:
        assert session._retry_connection is True  # aiohttp's default: it would re-send
        disable_client_resend(session)
        assert session._retry_connection is False


def test_a_client_without_the_switch_is_refused_loudly() -> None:
    with pytest.raises(LibraryChanged, match="_retry_connection"):
        disable_client_resend(SimpleNamespace())  # type: ignore[arg-type]


@pytest.mark.socket
async def test_a_malformed_request_gets_the_runners_answer() -> None:
    """A request line aiohttp cannot parse is answered by the function given to the runner,
    with the status aiohttp chose, and the connection is closed after it."""
    seen: list[int] = []

    def answer(request: BaseRequest, status: int, exc: BaseException | None) -> web.Response:
        seen.append(status)
        return web.Response(status=status, text="answered by the gateway")

    runner = ErrorAnsweringRunner(web.Application(), answer)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"FOO BAR BAZ QUX\r\n\r\n")
        async with asyncio.timeout(5):
            reply = await reader.read()
        writer.close()
    finally:
        await runner.cleanup()
    assert reply.split(b" ", 2)[1] == b"400"
    assert reply.endswith(b"answered by the gateway")
    assert seen == [400]


@pytest.mark.parametrize(
    ("expression", "keys"),
    [("a", ["a"]), ("a.b.c", ["a", "b", "c"]), ("a[0]", None), ("a || b", None), ("`1`", None)],
)
def test_field_chains_are_recognised(expression: str, keys: list[str] | None) -> None:
    assert field_keys(jmespath.compile(expression).parsed) == keys


@pytest.mark.parametrize(
    ("expression", "found"),
    [
        ("status == 'cancelled'", (["status"], "cancelled", True)),
        ("a.b != `4`", (["a", "b"], 4, False)),
        ("a == b", None),
        ("a < `4`", None),
        ("a[0] == `1`", None),
    ],
)
def test_field_comparisons_are_recognised(expression: str, found: Any) -> None:
    assert field_comparison(jmespath.compile(expression).parsed) == found
