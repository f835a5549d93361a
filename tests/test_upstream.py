"""AiohttpTransport: one request out, one response back, every failure mapped to a contract code.

Narrow client cases use aioresponses; what only a real socket shows (redirects left alone, raw
paths, a refused port, a body cut off by size) runs against loopback servers.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway import __version__
from gateway.errors import ErrorCode
from gateway.translate.wire import UpstreamRequest, UpstreamResponse
from gateway.upstream import AiohttpTransport, UpstreamFailure, map_failure, new_session

ServerFactory = Callable[..., Awaitable[TestServer]]

MOCK_BASE = "http://127.0.0.1:9"  # never contacted: aioresponses answers
FAKE_KEY = "CANARY-SECRET-1234567890"


class MockedResponse(aiohttp.ClientResponse):
    """aioresponses 0.7 builds responses without the ``stream_writer`` aiohttp 3.14 requires."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


def request(
    url: str,
    method: str = "POST",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes | None = None,
) -> UpstreamRequest:
    return UpstreamRequest(method, url, headers, body)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    opened = new_session()
    yield opened
    await opened.close()


@pytest.fixture
def transport(session: aiohttp.ClientSession) -> AiohttpTransport:
    return AiohttpTransport(session)


async def failure_of(transport: AiohttpTransport, req: UpstreamRequest, timeout_s: float = 2.0):
    with pytest.raises(UpstreamFailure) as caught:
        await transport(req, timeout_s)
    return caught.value


# --- a loopback server that records what it receives -----------------------------------------


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Loopback:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def paths(self) -> list[str]:
        return [s.raw_path for s in self.seen]


@pytest.fixture
async def loopback(aiohttp_server: ServerFactory) -> AsyncIterator[Loopback]:
    server = Loopback()

    async def record(req: web.Request) -> None:
        server.seen.append(Seen(req.method, req.raw_path, dict(req.headers), await req.read()))

    async def echo(req: web.Request) -> web.Response:
        await record(req)
        return web.json_response({"ok": True}, headers={"X-Request-ID": "req-1"})

    async def redirect(req: web.Request) -> web.Response:
        await record(req)
        return web.Response(status=302, headers={"Location": "/target"})

    async def sized(req: web.Request) -> web.Response:
        await record(req)
        return web.Response(body=b"x" * int(req.match_info["size"]))

    async def chunked(req: web.Request) -> web.StreamResponse:
        await record(req)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(req)
        try:
            for _ in range(int(req.match_info["chunks"])):
                await response.write(b"y" * 512)
            await response.write_eof()
        except ConnectionError:
            pass  # the client stopped reading, as it should
        return response

    async def gzipped(req: web.Request) -> web.Response:
        await record(req)
        body = gzip.compress(b"z" * int(req.match_info["size"]))
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def cookie(req: web.Request) -> web.Response:
        await record(req)
        response = web.json_response({})
        response.set_cookie("session", "from-the-provider")
        return response

    async def slow(req: web.Request) -> web.Response:
        await record(req)
        await asyncio.wait_for(server.release.wait(), 10)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/redirect", redirect)
    app.router.add_route("*", "/sized/{size}", sized)
    app.router.add_route("*", "/chunked/{chunks}", chunked)
    app.router.add_route("*", "/gzip/{size}", gzipped)
    app.router.add_route("*", "/cookie", cookie)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/{tail:.*}", echo)
    running = await aiohttp_server(app)
    server.url = str(running.make_url("")).rstrip("/")
    yield server
    server.release.set()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204, 400, 404, 409, 422, 429, 500, 503])
async def test_any_status_is_returned_as_a_response(transport: AiohttpTransport, status: int):
    """Classifying a status is the translation's job: the transport only reports it."""
    with aioresponses() as mocked:
        mocked.post(
            f"{MOCK_BASE}/v1/x", status=status, body=b'{"a":1}', response_class=MockedResponse
        )
        response = await transport(request(f"{MOCK_BASE}/v1/x"), 2.0)
    assert response == UpstreamResponse(status, response.headers, b'{"a":1}')


async def test_response_header_names_are_lower_cased(transport: AiohttpTransport):
    with aioresponses() as mocked:
        mocked.patch(
            f"{MOCK_BASE}/v1/x",
            status=429,
            body=b"{}",
            headers={"Retry-After": "7", "X-Request-ID": "abc", "Content-Type": "application/json"},
            response_class=MockedResponse,
        )
        response = await transport(request(f"{MOCK_BASE}/v1/x", "PATCH"), 2.0)
    assert response.headers["retry-after"] == "7"
    assert response.headers["x-request-id"] == "abc"
    assert response.headers["content-type"] == "application/json"
    assert all(name == name.lower() for name in response.headers)


async def test_real_answer_comes_back_whole(transport: AiohttpTransport, loopback: Loopback):
    response = await transport(request(f"{loopback.url}/v1/asns/1/cancel"), 2.0)
    assert response.status == 200
    assert response.body == b'{"ok": true}'
    assert response.headers["x-request-id"] == "req-1"
    assert response.headers["content-type"].startswith("application/json")


async def test_method_headers_and_body_are_sent(transport: AiohttpTransport, loopback: Loopback):
    await transport(
        request(
            f"{loopback.url}/v3/cancel",
            "PATCH",
            headers=(("x-api-key", FAKE_KEY), ("X-Request-ID", "req-9")),
            body=b'{"data":{"order_no":"SO-1"}}',
        ),
        2.0,
    )
    (seen,) = loopback.seen
    assert seen.method == "PATCH"
    assert seen.headers["x-api-key"] == FAKE_KEY
    assert seen.headers["X-Request-ID"] == "req-9"
    assert seen.body == b'{"data":{"order_no":"SO-1"}}'


async def test_session_sends_the_gateway_user_agent(
    transport: AiohttpTransport, loopback: Loopback
):
    await transport(request(f"{loopback.url}/x", "DELETE"), 2.0)
    assert loopback.seen[0].headers["User-Agent"] == f"cancel-gateway/{__version__}"
    assert loopback.seen[0].headers["Accept"] == "application/json"


async def test_session_keeps_no_cookies(transport: AiohttpTransport, loopback: Loopback):
    """A provider's cookie must not ride along on the next cancellation (maybe another account)."""
    await transport(request(f"{loopback.url}/cookie"), 2.0)
    await transport(request(f"{loopback.url}/next"), 2.0)
    assert "Cookie" not in loopback.seen[1].headers


# --- the URL is sent as encoded --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/asns/a%2Fb/cancel",
        "/v1/asns/a%2F..%2F..%2Fadmin/cancel",
        "/api/v2/orders/%2E%2E",
        "/api/v2/orders/%2e",
        "/api/v2/orders/100%25",
        "/api/v2/orders/a%20b%3Fx%3D1%23frag",
        "/api/v2/orders/%E7%95%AA%E5%8F%B7",
        "/api/v2/orders/72544?deleteReason=customer%20request",
        "/api/v2/orders/72544?deleteReason=a%26b%3Dc",
    ],
)
async def test_url_is_sent_exactly_as_encoded(
    transport: AiohttpTransport, loopback: Loopback, path: str
):
    """No re-quoting, no decoding of %2F, no resolving of dot segments."""
    await transport(request(loopback.url + path, "DELETE"), 2.0)
    assert loopback.paths() == [path]


# --- redirects and size ----------------------------------------------------------------------


async def test_redirect_is_returned_not_followed(transport: AiohttpTransport, loopback: Loopback):
    response = await transport(request(f"{loopback.url}/redirect"), 2.0)
    assert response.status == 302
    assert response.headers["location"] == "/target"
    assert loopback.paths() == ["/redirect"]


async def test_body_at_the_limit_is_read(session: aiohttp.ClientSession, loopback: Loopback):
    transport = AiohttpTransport(session, max_body_bytes=1000)
    response = await transport(request(f"{loopback.url}/sized/1000"), 2.0)
    assert response.body == b"x" * 1000


async def test_body_over_the_limit_with_content_length_is_refused(
    session: aiohttp.ClientSession, loopback: Loopback
):
    transport = AiohttpTransport(session, max_body_bytes=1000)
    failure = await failure_of(transport, request(f"{loopback.url}/sized/1001"))
    assert failure.code is ErrorCode.PROVIDER_BAD_RESPONSE
    assert failure.sent is True
    assert "1000 bytes" in failure.message


async def test_chunked_body_over_the_limit_is_refused(
    session: aiohttp.ClientSession, loopback: Loopback
):
    """Without a Content-Length the limit is enforced while reading."""
    transport = AiohttpTransport(session, max_body_bytes=1000)
    failure = await failure_of(transport, request(f"{loopback.url}/chunked/8"))
    assert failure.code is ErrorCode.PROVIDER_BAD_RESPONSE
    assert failure.sent is True


async def test_chunked_body_under_the_limit_is_read(
    session: aiohttp.ClientSession, loopback: Loopback
):
    transport = AiohttpTransport(session, max_body_bytes=1024)
    response = await transport(request(f"{loopback.url}/chunked/2"), 2.0)
    assert response.body == b"y" * 1024


async def test_limit_applies_after_decompression(
    session: aiohttp.ClientSession, loopback: Loopback
):
    """A small gzip that inflates past the limit is refused (a decompression bomb)."""
    transport = AiohttpTransport(session, max_body_bytes=10_000)
    failure = await failure_of(transport, request(f"{loopback.url}/gzip/200000"))
    assert failure.code is ErrorCode.PROVIDER_BAD_RESPONSE


async def test_gzip_body_is_returned_decompressed(
    session: aiohttp.ClientSession, loopback: Loopback
):
    transport = AiohttpTransport(session, max_body_bytes=10_000)
    response = await transport(request(f"{loopback.url}/gzip/5000"), 2.0)
    assert response.body == b"z" * 5000


async def test_default_limit_is_one_mebibyte(session: aiohttp.ClientSession, loopback: Loopback):
    transport = AiohttpTransport(session)
    assert len((await transport(request(f"{loopback.url}/sized/1048576"), 5.0)).body) == 1048576
    failure = await failure_of(transport, request(f"{loopback.url}/sized/1048577"), 5.0)
    assert failure.code is ErrorCode.PROVIDER_BAD_RESPONSE


# --- transport failures ----------------------------------------------------------------------


@pytest.mark.socket
async def test_connection_refused_is_provider_error_not_sent(transport: AiohttpTransport):
    failure = await failure_of(transport, request(f"http://127.0.0.1:{closed_port()}/v1/x"))
    assert failure.code is ErrorCode.PROVIDER_ERROR
    assert failure.sent is False
    assert failure.message.startswith("the connection was refused")


@pytest.mark.socket
async def test_server_closing_without_answer_is_provider_error_sent():
    """A real server that reads the request and hangs up: the request may have been acted on."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with new_session() as session:
            failure = await failure_of(
                AiohttpTransport(session), request(f"http://127.0.0.1:{port}/x", "DELETE")
            )
    finally:
        server.close()
        await server.wait_closed()
    assert failure.code is ErrorCode.PROVIDER_ERROR
    assert failure.sent is True


@pytest.mark.parametrize("method", ["DELETE", "PUT", "GET", "PATCH"])
@pytest.mark.socket
async def test_a_pooled_connection_reset_after_the_request_is_one_request(method: str):
    """A kept-alive connection that the server closes after reading the second request: the
    server sees exactly that one request, never a silent second send of it by the client
    (aiohttp re-sends idempotent methods on a reused connection unless told not to)."""
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            requests.append(head.split(b"\r\n", 1)[0])
            if len(requests) == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
                continue
            break  # read it, then reset: the request may have been acted on
        writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/orders/1"
    try:
        async with new_session() as session:
            transport = AiohttpTransport(session)
            first = await transport(request(url, method), timeout_s=2)
            assert first.status == 200
            failure = await failure_of(transport, request(url, method))
    finally:
        server.close()
        await server.wait_closed()
    assert failure.sent is True
    assert failure.code is ErrorCode.PROVIDER_ERROR
    assert requests == [f"{method} /orders/1 HTTP/1.1".encode()] * 2


async def test_read_timeout_is_provider_timeout_sent(
    transport: AiohttpTransport, loopback: Loopback
):
    failure = await failure_of(transport, request(f"{loopback.url}/slow"), timeout_s=0.2)
    assert failure.code is ErrorCode.PROVIDER_TIMEOUT
    assert failure.sent is True
    assert loopback.paths() == ["/slow"]


@pytest.mark.parametrize(
    ("exception", "code", "sent"),
    [
        pytest.param(
            aiohttp.ServerDisconnectedError(), ErrorCode.PROVIDER_ERROR, True, id="disconnected"
        ),
        pytest.param(TimeoutError(), ErrorCode.PROVIDER_TIMEOUT, True, id="total-timeout"),
        pytest.param(
            aiohttp.SocketTimeoutError("read"), ErrorCode.PROVIDER_TIMEOUT, True, id="read-timeout"
        ),
        pytest.param(
            aiohttp.ConnectionTimeoutError("connect"),
            ErrorCode.PROVIDER_TIMEOUT,
            False,
            id="connect-timeout",
        ),
        pytest.param(
            aiohttp.ClientPayloadError("cut"), ErrorCode.PROVIDER_ERROR, True, id="payload"
        ),
        pytest.param(
            aiohttp.ClientOSError(104, "Connection reset by peer"),
            ErrorCode.PROVIDER_ERROR,
            True,
            id="reset",
        ),
    ],
)
async def test_client_exceptions_become_upstream_failures(
    transport: AiohttpTransport, exception: Exception, code: ErrorCode, sent: bool
):
    with aioresponses() as mocked:
        mocked.delete(f"{MOCK_BASE}/x", exception=exception)
        failure = await failure_of(transport, request(f"{MOCK_BASE}/x", "DELETE"))
    assert (failure.code, failure.sent) == (code, sent)


async def test_unexpected_exceptions_are_not_swallowed(transport: AiohttpTransport):
    """Only network failures are mapped: a bug stays a bug (internal_error), not provider_error."""
    with aioresponses() as mocked:
        mocked.post(f"{MOCK_BASE}/x", exception=ZeroDivisionError("bug"))
        with pytest.raises(ZeroDivisionError):
            await transport(request(f"{MOCK_BASE}/x"), 2.0)


# --- map_failure: one table, most specific first ---------------------------------------------

_KEY = ConnectionKey("provider.invalid", 443, True, True, None, None, None, None)
_INFO = aiohttp.RequestInfo(URL(f"{MOCK_BASE}/x"), "POST", CIMultiDictProxy(CIMultiDict()))


@pytest.mark.parametrize(
    ("exception", "code", "sent", "what"),
    [
        pytest.param(
            aiohttp.ConnectionTimeoutError(),
            ErrorCode.PROVIDER_TIMEOUT,
            False,
            "connecting timed out",
            id="connection-timeout",
        ),
        pytest.param(
            aiohttp.SocketTimeoutError(),
            ErrorCode.PROVIDER_TIMEOUT,
            True,
            "no answer in time",
            id="socket-timeout",
        ),
        pytest.param(
            aiohttp.ClientConnectorDNSError(_KEY, OSError(-2, "Name or service not known")),
            ErrorCode.PROVIDER_ERROR,
            False,
            "does not resolve",
            id="dns",
        ),
        pytest.param(
            aiohttp.ClientConnectorCertificateError(_KEY, Exception("bad certificate")),
            ErrorCode.PROVIDER_ERROR,
            False,
            "certificate",
            id="certificate",
        ),
        pytest.param(
            aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(111, "refused")),
            ErrorCode.PROVIDER_ERROR,
            False,
            "refused",
            id="connector",
        ),
        pytest.param(
            aiohttp.ServerDisconnectedError(),
            ErrorCode.PROVIDER_ERROR,
            True,
            "closed the connection",
            id="disconnected",
        ),
        pytest.param(
            aiohttp.ClientPayloadError("truncated"),
            ErrorCode.PROVIDER_ERROR,
            True,
            "cut off",
            id="payload",
        ),
        pytest.param(
            aiohttp.ClientResponseError(_INFO, (), status=400, message="bad status line"),
            ErrorCode.PROVIDER_BAD_RESPONSE,
            True,
            "not valid HTTP",
            id="response",
        ),
        pytest.param(
            aiohttp.ClientOSError(104, "reset"),
            ErrorCode.PROVIDER_ERROR,
            True,
            "reset",
            id="os-error",
        ),
        pytest.param(
            aiohttp.ClientError("other"),
            ErrorCode.PROVIDER_ERROR,
            True,
            "the request failed",
            id="client-error",
        ),
        pytest.param(
            TimeoutError(),
            ErrorCode.PROVIDER_TIMEOUT,
            True,
            "no answer within the budget",
            id="asyncio-timeout",
        ),
    ],
)
def test_map_failure_table(exception: BaseException, code: ErrorCode, sent: bool, what: str):
    failure = map_failure(exception)
    assert (failure.code, failure.sent) == (code, sent)
    assert what in failure.message


def test_dns_failure_is_not_sent_although_it_is_a_connector_error():
    """Order matters: ClientConnectorDNSError is a ClientConnectorError and an OSError."""
    failure = map_failure(aiohttp.ClientConnectorDNSError(_KEY, OSError(-2, "unknown")))
    assert failure.sent is False
    assert failure.message.startswith("the host name does not resolve")


def test_any_aiohttp_timeout_is_a_timeout():
    failure = map_failure(aiohttp.ServerTimeoutError("timeout"))
    assert failure.code is ErrorCode.PROVIDER_TIMEOUT


def test_map_failure_reraises_what_it_does_not_know():
    with pytest.raises(KeyError):
        map_failure(KeyError("not a network failure"))


def test_failure_message_without_detail_is_just_what_happened():
    assert map_failure(aiohttp.ServerDisconnectedError("")).message == (
        "the provider closed the connection"
    )


# --- the request's own repr ------------------------------------------------------------------


def test_upstream_request_repr_masks_secret_headers():
    shown = repr(
        UpstreamRequest(
            "POST",
            f"{MOCK_BASE}/x",
            (("Authorization", f"Bearer {FAKE_KEY}"), ("X-Request-ID", "req-1")),
            secret_headers=frozenset({"authorization"}),
        )
    )
    assert FAKE_KEY not in shown
    assert "req-1" in shown
