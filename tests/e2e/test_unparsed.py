"""Requests aiohttp cannot parse (a made-up method, a control character in a header, a broken
request line) on a real listener: answered, logged and counted like every other request, and
never a way to put a caller's key into the logs."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.api import CONFIG
from gateway.app import create_app
from gateway.loader import load
from gateway.logging import capture_library_logs, make_logger
from gateway.redact import Redactor
from gateway.serve import ERROR_ANSWER, Listener, serve_until_stopped
from tests.conftest import BASE_CONFIG, CALLER_KEY, CANARIES
from tests.services import free_port

pytestmark = pytest.mark.e2e

HEAD = b"Host: gateway\r\nContent-Length: 2\r\n"
MALFORMED = {
    "made_up_method": b"FOOBAR /v1/cancellations HTTP/1.1\r\n" + HEAD + b"\r\n{}",
    "control_character": b"POST /v1/cancellations HTTP/1.1\r\nX-Note: a\x01b\r\n"
    + HEAD
    + b"\r\n{}",
    "bad_request_line": b"GET /healthz HTTP/1.1 and more\r\n" + HEAD + b"\r\n{}",
    "bad_version": b"GET /healthz HTTP/9.x\r\n" + HEAD + b"\r\n{}",
}


@dataclass
class Served:
    url: str
    app: web.Application
    stream: io.StringIO

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.stream.getvalue().splitlines() if line]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """The gateway behind the listener `serve` uses, in this process; aiohttp's own log records
    go to the same captured log, as `serve` sends them."""
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE_CONFIG)
    environ = {"OMS_API_KEY": CALLER_KEY, "UPSTREAM": "http://127.0.0.1:9", **CANARIES}
    runtime = load(path, environ)
    stream = io.StringIO()
    redactor = Redactor(runtime.secrets)
    log = make_logger(stream=stream, level="debug", redactor=redactor)
    app = create_app(
        runtime, log=log, redactor=redactor, loader=functools.partial(load, path, environ)
    )
    library = logging.getLogger("aiohttp")
    saved = library.handlers[:], library.level, library.propagate
    capture_library_logs(log)
    urls: list[str] = []
    listening, stop = asyncio.Event(), asyncio.Event()

    def started(found: Sequence[str]) -> None:
        urls.extend(found)
        listening.set()

    listener = Listener(app, "127.0.0.1", 0, envelopes=True)
    serving = asyncio.create_task(serve_until_stopped([listener], started, stop))
    try:
        async with asyncio.timeout(10):
            await listening.wait()
        yield Served(urls[0], app, stream)
    finally:
        stop.set()
        await serving
        library.handlers, library.level, library.propagate = saved[0], saved[1], saved[2]


async def send_raw(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Bytes no HTTP client would send; the answer's status, headers and body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        return await resp.text()


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
async def test_an_unparsable_request_is_answered_logged_and_counted(
    served: Served, request_bytes: bytes
):
    """A 400 envelope with X-Request-ID (its request_id) and X-Config-Version; exactly one
    log line, a warning without traceback, with that request id and the status; one more
    cancel_gateway_http_requests_total{route="unparsed"}."""
    status, headers, body = await send_raw(served.url, request_bytes)
    envelope = orjson.loads(body)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert envelope["error"]["code"] == "invalid_request"
    request_id = headers["X-Request-ID"]
    assert envelope["request_id"] == request_id
    assert headers["X-Config-Version"] == served.app[CONFIG].current.version

    [line] = served.lines
    assert line["request_id"] == request_id
    assert line["trace_id"] == envelope["trace_id"]
    assert (line["event"], line["level"], line["status"]) == ("request.unparsed", "warning", 400)
    assert line["config_version"] == headers["X-Config-Version"]
    assert line["reason"]
    assert "Traceback" not in served.stream.getvalue()

    text = await scrape(served.url)
    assert (
        'cancel_gateway_http_requests_total{method="other",route="unparsed",status="400"} 1.0'
        in text
    )


async def test_the_unparsed_answer_names_the_configuration_served_after_a_reload(
    served: Served,
):
    """X-Config-Version of an unparsable request's answer is the version served now."""
    before = served.app[CONFIG].current.version
    config = served.app[CONFIG].current.runtime.path
    config.write_text(BASE_CONFIG.replace("timeout_s: 2", "timeout_s: 3", 1))
    after = (await served.app[CONFIG].reload()).version
    assert after != before
    _, headers, _ = await send_raw(served.url, MALFORMED["control_character"])
    assert headers["X-Config-Version"] == after
    [unparsed] = [line for line in served.lines if line["event"] == "request.unparsed"]
    assert unparsed["config_version"] == after


def key_sha256_config(plaintext: str) -> str:
    """BASE_CONFIG with its one caller known only by the SHA-256 of its key."""
    digest = hashlib.sha256(plaintext.encode()).hexdigest()
    return BASE_CONFIG.replace("    key: ${OMS_API_KEY}\n", f"    key_sha256: '{digest}'\n", 1)


# The parsers: aiohttp's C extension, and its pure-Python one (platforms without a wheel).
PARSERS = {"c_parser": "0", "python_parser": "1"}


@pytest.mark.parametrize("no_extensions", PARSERS.values(), ids=PARSERS.keys())
async def test_a_key_sha256_callers_key_never_reaches_a_log_line(
    tmp_path: Path, no_extensions: str
):
    """A caller configured only by key_sha256 (the redactor cannot know its plaintext) sends
    its key in malformed requests, wherever aiohttp's message quotes it: in Authorization
    with a control character in another header or in its own value, in a header line
    without a colon, in the query of a broken request line or of a method that is no token.
    `serve` answers each, logs one warning for each, and the plaintext is on no line, stdout
    or stderr."""
    plaintext = "sha-only-caller-key-7Qm2xV9pL4"
    bearer = f"Authorization: Bearer {plaintext}\r\n".encode()
    requests = [
        b"POST /v1/cancellations HTTP/1.1\r\n" + bearer + b"X-Note: a\x01b\r\n" + HEAD,
        b"POST /v1/cancellations HTTP/1.1\r\n" + bearer[:-2] + b"\x01\r\n" + HEAD,
        b"POST /v1/cancellations HTTP/1.1\r\n" + bearer.replace(b":", b"") + HEAD,
        f"GET /v1/connections?key={plaintext} HTTP/1.1 x\r\n".encode() + bearer + HEAD,
        f"FOO(BAR /v1/cancellations?api_key={plaintext} HTTP/1.1\r\n".encode() + bearer + HEAD,
    ]
    config = tmp_path / "gateway.yaml"
    config.write_text(key_sha256_config(plaintext))
    env = {
        **os.environ,
        "AIOHTTP_NO_EXTENSIONS": no_extensions,
        "UPSTREAM": "http://127.0.0.1:9",
        **CANARIES,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(config),
        "--port", str(free_port()),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(20):
            started = orjson.loads(await process.stdout.readline())
        assert started["event"] == "gateway.started"
        for request in requests:
            status, headers, _ = await send_raw(started["urls"][0], request + b"\r\n{}")
            assert status == 400
            assert headers["X-Request-ID"]
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert plaintext.encode() not in stdout + stderr
    assert stderr.decode() == ""
    lines = [orjson.loads(line) for line in stdout.splitlines() if line.strip()]
    unparsed = [line for line in lines if line["event"] == "request.unparsed"]
    assert len(unparsed) == len(requests)
    assert all(line["level"] == "warning" for line in unparsed)
    assert not [line for line in lines if line["level"] == "error"]


async def test_a_failure_outside_the_middleware_is_an_error_with_its_traceback(served: Served):
    """The same answer serves a request whose handling failed before any middleware could
    answer it: a 500 envelope with the caller's X-Request-ID, one error line with the
    traceback, counted under route "unhandled"."""
    request = make_mocked_request("POST", "/v1/cancellations", headers={"X-Request-ID": "r-1"})
    try:
        raise RuntimeError("failed outside the middleware")
    except RuntimeError as exc:
        response = served.app[ERROR_ANSWER](request, 500, exc)
    assert response.status == 500
    assert response.headers["X-Request-ID"] == "r-1"
    assert response.headers["X-Config-Version"] == served.app[CONFIG].current.version
    assert isinstance(response, web.Response)
    assert response.text is not None
    assert orjson.loads(response.text)["error"]["code"] == "internal_error"
    [line] = served.lines
    assert (line["event"], line["level"], line["request_id"]) == ("request.crashed", "error", "r-1")
    assert "RuntimeError: failed outside the middleware" in line["exception"]
    text = await scrape(served.url)
    assert (
        'cancel_gateway_http_requests_total{method="post",route="unhandled",status="500"} 1.0'
        in text
    )
