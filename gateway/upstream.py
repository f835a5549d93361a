"""The only network I/O of the gateway: send one ``UpstreamRequest``, get one response.

The seam is one call, ``await transport(request, timeout_s) -> UpstreamResponse``, so tests and
the resilience layer wrap it like a function. Every aiohttp exception is mapped once, in
``_FAILURES``, to a contract code and to whether the request may have reached the provider
(which decides whether repeating it is safe).
"""

from __future__ import annotations

import asyncio
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from gateway import __version__
from gateway._compat import disable_client_resend
from gateway.errors import ErrorCode
from gateway.translate.wire import UpstreamRequest, UpstreamResponse

MAX_BODY_BYTES = 1024 * 1024
CONNECT_TIMEOUT_S = 3.0
USER_AGENT = f"cancel-gateway/{__version__}"


class Transport(Protocol):
    async def __call__(
        self, request: UpstreamRequest, timeout_s: float, connect_timeout_s: float = ...
    ) -> UpstreamResponse: ...


class UpstreamFailure(Exception):
    """No usable answer. ``sent`` is False only when the request certainly never left.
    ``message`` is the gateway's words; ``detail`` the library's, which may quote what the
    provider sent (so it is redacted like the provider's own text)."""

    def __init__(self, code: ErrorCode, message: str, sent: bool, detail: str = "") -> None:
        super().__init__(f"{message}: {detail}" if detail else message)
        self.code = code
        self.message = message
        self.sent = sent
        self.detail = detail


_T, _E, _B = ErrorCode.PROVIDER_TIMEOUT, ErrorCode.PROVIDER_ERROR, ErrorCode.PROVIDER_BAD_RESPONSE

# Most specific first: (exception, code, may have been sent, what happened).
_FAILURES: tuple[tuple[type[BaseException], ErrorCode, bool, str], ...] = (
    (aiohttp.ConnectionTimeoutError, _T, False, "connecting timed out"),
    (aiohttp.SocketTimeoutError, _T, True, "no answer in time"),
    (aiohttp.ServerTimeoutError, _T, True, "no answer in time"),
    (aiohttp.ClientConnectorDNSError, _E, False, "the host name does not resolve"),
    (aiohttp.ClientConnectorCertificateError, _E, False, "the TLS certificate was refused"),
    (aiohttp.ClientConnectorError, _E, False, "the connection was refused"),
    (aiohttp.ServerDisconnectedError, _E, True, "the provider closed the connection"),
    (aiohttp.ClientPayloadError, _E, True, "the answer was cut off"),
    (aiohttp.ClientResponseError, _B, True, "the answer is not valid HTTP"),
    (aiohttp.ClientOSError, _E, True, "the connection was reset"),
    (aiohttp.ClientError, _E, True, "the request failed"),
    (asyncio.TimeoutError, _T, True, "no answer within the budget"),
)


def map_failure(exc: BaseException, request: UpstreamRequest | None = None) -> UpstreamFailure:
    for kind, code, sent, what in _FAILURES:
        if isinstance(exc, kind):
            detail = str(exc).strip()
            if request is not None and request.secret_query:
                # aiohttp quotes the URL it called (an answer that is not HTTP, a connect
                # timeout): its signature and query credentials are masked, as wherever shown
                # (the URL's query replaced is the URL replaced).
                detail = detail.replace(
                    urlsplit(request.url).query, urlsplit(request.shown_url).query
                )
            return UpstreamFailure(code, what, sent, detail)
    raise exc


def new_session(limit: int = 1024) -> aiohttp.ClientSession:
    """One pooled session per app: no cookies, no proxies from the environment, and no
    silent second send."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=60),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        trust_env=False,
    )
    # aiohttp re-sends a GET/PUT/DELETE once by itself when a pooled connection is reset;
    # every send must be a counted attempt under the retry rules.
    disable_client_resend(session)
    return session


class AiohttpTransport:
    """The transport over one pooled aiohttp session: the one given, or, without one, a
    session of its own opened by ``open()`` (on the server's loop) and closed by ``close()``."""

    def __init__(
        self, session: aiohttp.ClientSession | None = None, max_body_bytes: int = MAX_BODY_BYTES
    ):
        self._given = session
        self._session = session
        self._max_body = max_body_bytes

    async def open(self) -> None:
        if self._session is None:
            self._session = new_session()

    async def close(self) -> None:
        if self._session is not None and self._given is None:
            await self._session.close()
            self._session = None

    async def __call__(
        self,
        request: UpstreamRequest,
        timeout_s: float,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> UpstreamResponse:
        timeout = aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=min(connect_timeout_s, timeout_s)
        )
        if self._session is None:
            raise RuntimeError("the transport is not open")
        try:
            async with self._session.request(
                request.method,
                URL(request.url, encoded=True),  # already encoded: no re-quoting, no dot segments
                headers=list(request.headers),
                data=request.body,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                body = await self._read(response)
                headers = {k.lower(): v for k, v in response.headers.items()}
                return UpstreamResponse(response.status, headers, body)
        except UpstreamFailure:
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise map_failure(exc, request) from None

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """At most ``max_body`` bytes after decompression: a larger answer is refused."""
        length = response.content_length
        if (
            length is not None
            and length <= self._max_body
            and not response.headers.get("Content-Encoding")
        ):
            # The usual answer: its size known and within the limit. A compressed one is
            # measured as it inflates, below.
            return await response.read()
        if length is not None and length > self._max_body:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_body:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> UpstreamFailure:
        return UpstreamFailure(
            ErrorCode.PROVIDER_BAD_RESPONSE,
            f"the answer is larger than {self._max_body} bytes",
            sent=True,
        )
