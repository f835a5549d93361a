"""Request bodies that are broken on the wire: answered with a 4xx envelope or a closed
connection, logged as a warning without a traceback, and never counted as a gateway bug."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from gateway.app import create_app
from gateway.loader import load
from gateway.logging import capture_library_logs, make_logger
from gateway.redact import Redactor
from gateway.serve import Listener, serve_until_stopped
from tests.conftest import BASE_CONFIG, CALLER_KEY, CANARIES, Gateway, Upstream

pytestmark = pytest.mark.e2e

BODY = orjson.dumps({"connection": "rxuniverse-lab", "id": "1"})
FAST_BODY = BASE_CONFIG + "server:\n  body_timeout_s: 1\n"


@pytest.fixture
async def served(
    upstream: Upstream, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    """The gateway as ``serve`` runs it (aiohttp's test server cancels a handler whose client
    left; a served gateway does not, and that is what these requests meet)."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(config: str = BASE_CONFIG) -> Gateway:
        path = tmp_path / "gateway.yaml"
        path.write_text(config)
        environ = {"OMS_API_KEY": CALLER_KEY, "UPSTREAM": upstream.url, **CANARIES}
        runtime = load(path, environ)
        stream = io.StringIO()
        redactor = Redactor(runtime.secrets)
        log = make_logger(stream=stream, level="debug", redactor=redactor)
        capture_library_logs(log)  # as serve does: aiohttp's own records are lines too
        app = create_app(runtime, log=log, redactor=redactor)
        listening: asyncio.Future[Sequence[str]] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        listener = Listener(app, "127.0.0.1", 0, drain_timeout_s=1, envelopes=True)
        task = asyncio.create_task(serve_until_stopped([listener], listening.set_result, stop))
        stops.append((stop, task))
        [url] = await asyncio.wait_for(listening, 10)
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Gateway(url, session, stream, path)

    yield start
    for stop, task in stops:
        stop.set()
        await asyncio.wait_for(task, 10)
    for session in sessions:
        await session.close()


async def exchange(gateway: Gateway, head: bytes, parts: list[bytes], close: bool = False) -> bytes:
    """Send a raw request (head, then each part), optionally close the writing side; return
    whatever the gateway answers before it closes (bounded in time)."""
    where = urlsplit(gateway.url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    try:
        writer.write(head)
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)
        if close:
            writer.close()
            return b""
        async with asyncio.timeout(5):
            return await reader.read(65536)
    finally:
        writer.close()


def head(extra: str) -> bytes:
    return (
        "POST /v1/cancellations HTTP/1.1\r\nHost: gw\r\n"
        f"Authorization: Bearer {CALLER_KEY}\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


def assert_no_crash(gateway: Gateway) -> None:
    assert not gateway.events("request.crashed")
    assert not gateway.events("cancellation.crashed")
    assert "Traceback" not in gateway.log_text
    assert all(line["level"] != "error" for line in gateway.logs)


async def metrics_text(gateway: Gateway) -> str:
    async with gateway.session.get(gateway.url + "/metrics") as response:
        return await response.text()


async def test_a_body_that_is_not_gzip_is_a_422(
    served: Callable[..., Awaitable[Gateway]], upstream: Upstream
):
    """Content-Encoding: gzip with plain JSON: 422 invalid_request on the body, nothing sent."""
    gateway = await served()
    answer = await exchange(
        gateway, head(f"Content-Encoding: gzip\r\nContent-Length: {len(BODY)}\r\n"), [BODY]
    )
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"422", answer
    envelope = orjson.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert envelope["error"]["code"] == "invalid_request"
    assert envelope["error"]["fields"][0]["loc"] == "body"
    assert upstream.received == []
    assert_no_crash(gateway)
    assert gateway.events("request.body_unreadable")
    assert 'status="500"' not in await metrics_text(gateway)


async def test_a_client_that_leaves_mid_body_is_no_bug(
    served: Callable[..., Awaitable[Gateway]], upstream: Upstream
):
    """The client announces 1000 bytes, sends 10 and closes: one warning line, no 500."""
    gateway = await served()
    await exchange(gateway, head("Content-Length: 1000\r\n"), [BODY[:10]], close=True)
    for _ in range(100):
        if gateway.events("request.body_unreadable") or gateway.events("request.crashed"):
            break
        await asyncio.sleep(0.02)
    assert_no_crash(gateway)
    assert gateway.events("request.body_unreadable")
    assert upstream.received == []
    assert 'status="500"' not in await metrics_text(gateway)


GOOD_CHUNK = f"{10:x}\r\n".encode() + BODY[:10] + b"\r\n"
BAD_CHUNKS = {
    "a bad size in a later packet": [GOOD_CHUNK, b"zz-not-a-size\r\n"],
    "a bad size in the same packet": [GOOD_CHUNK + b"zz-not-a-size\r\n"],
    "a chunk without its line end": [GOOD_CHUNK[:-2] + b"XX", b"3\r\nabc\r\n0\r\n\r\n"],
}


@pytest.mark.parametrize("parts", list(BAD_CHUNKS.values()), ids=list(BAD_CHUNKS))
async def test_a_bad_chunk_after_a_good_one_is_answered_within_the_body_timeout(
    served: Callable[..., Awaitable[Gateway]], upstream: Upstream, parts: list[bytes]
):
    """A chunked body that turns bad after a good chunk: a 4xx (or a closed connection) within
    the body timeout (1 s here), never left hanging until the client gives up."""
    gateway = await served(FAST_BODY)
    started = asyncio.get_running_loop().time()
    answer = await exchange(gateway, head("Transfer-Encoding: chunked\r\n"), parts)
    assert asyncio.get_running_loop().time() - started < 2.5
    if answer:
        assert answer.split()[1] in (b"400", b"422"), answer
    assert upstream.received == []
    assert_no_crash(gateway)


async def test_a_header_that_is_not_utf8_is_logged_escaped_not_a_500(
    served: Callable[..., Awaitable[Gateway]], upstream: Upstream
):
    """A User-Agent in Latin-1 (aiohttp decodes its byte to a lone surrogate): the cancellation
    is answered as usual and the access line is written, the byte escaped."""
    gateway = await served()
    upstream.answer(200, {"orderNumber": "1"})
    utf8 = head(f"User-Agent: M\u00fcller-OMS\r\nContent-Length: {len(BODY)}\r\n")
    answer = await exchange(gateway, utf8.replace("\u00fc".encode(), b"\xfc"), [BODY])
    assert answer.split()[1] == b"200", answer
    [access] = gateway.events("http.request")
    assert access["user_agent"] == "M\\udcfcller-OMS"
    assert_no_crash(gateway)
