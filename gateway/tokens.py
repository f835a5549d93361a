"""Tokens fetched before the call (``auth`` of ``type: oauth2_client_credentials`` or
``session``): one per connection, cached until shortly before it expires, fetched once for
all the requests that need it at the same time, and forgotten when the provider refuses it.

A token is a secret: the header that carries it is masked wherever a request is shown, and the
log's redactor learns each token as it arrives (only the connection's newest two are kept, so
the redactor does not grow with every refresh).
"""

from __future__ import annotations

import asyncio
from base64 import b64encode
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from uuid import uuid4

import orjson

from gateway.auth_schemes import TokenAuth, TokenCall
from gateway.clock import Clock
from gateway.errors import ErrorCode
from gateway.redact import Redactor
from gateway.targets import Target
from gateway.translate.auth import with_credentials
from gateway.translate.build import Call
from gateway.translate.templates import TemplateError, header_value, render_structure
from gateway.translate.wire import UpstreamRequest
from gateway.upstream import Transport, UpstreamFailure

# A token is renewed this long before it expires (at most a tenth of its life).
RENEW_MARGIN_S = 60.0


class TokenFailure(Exception):
    """No token: the token endpoint refused, failed or answered without one."""

    def __init__(self, code: ErrorCode, message: str, status: int | None, sent: bool) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status  # the token endpoint's HTTP status, None without an answer
        self.sent = sent  # may the token request have reached the provider?


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    renew_at: float  # monotonic seconds


class Tokens:
    def __init__(self, transport: Transport, clock: Clock, redactor: Redactor) -> None:
        self._transport = transport
        self._clock = clock
        self._redactor = redactor
        self._cached: dict[tuple[str, int], _Token] = {}
        self._fetching: dict[tuple[str, int], asyncio.Future[_Token]] = {}

    async def authorize(
        self, target: Target, request: UpstreamRequest, deadline: float
    ) -> tuple[UpstreamRequest, bool]:
        """``request`` with the connection's token in its header, and whether the token came
        from the cache (one the provider refuses is worth fetching again once)."""
        auth = target.definition.auth
        assert isinstance(auth, TokenAuth)
        key = _key(target)
        cached = self._cached.get(key)
        fresh = cached is None or cached.renew_at <= self._clock.monotonic()
        token = await self._token(target, auth, key, deadline) if fresh else cached
        assert token is not None
        value = auth.value.render({"token": token.value}, str)
        if value is None:
            raise TokenFailure(ErrorCode.PROVIDER_AUTH_FAILED, "the token is empty", None, True)
        return request.with_secret_header(auth.header, header_value(auth.header, value)), not fresh

    def forget(self, target: Target) -> None:
        """The provider refused the cached token: the next request fetches another."""
        self._cached.pop(_key(target), None)

    async def _token(
        self, target: Target, auth: TokenAuth, key: tuple[str, int], deadline: float
    ) -> _Token:
        waiting = self._fetching.get(key)
        if waiting is not None:  # another request is fetching it: one fetch for all
            return await asyncio.shield(waiting)
        future: asyncio.Future[_Token] = asyncio.get_running_loop().create_future()
        self._fetching[key] = future
        try:
            token = await self._fetch(target, auth.token_call, deadline)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters get it, nobody else must
            raise
        finally:
            del self._fetching[key]
        self._cached[key] = token
        self._redactor.set_dynamic(f"token:{target.name}", token.value)
        future.set_result(token)
        return token

    async def _fetch(self, target: Target, call: TokenCall, deadline: float) -> _Token:
        request = _token_request(target, call, self._clock)
        timeout = deadline - self._clock.monotonic()
        if timeout <= 0:
            raise TokenFailure(ErrorCode.PROVIDER_TIMEOUT, "no time left for a token", None, False)
        try:
            response = await self._transport(request, timeout)
        except UpstreamFailure as failure:
            raise TokenFailure(
                failure.code, f"the token request failed: {failure.message}", None, failure.sent
            ) from None
        status = response.status
        if not 200 <= status < 300:
            code = ErrorCode.PROVIDER_ERROR if status >= 500 else ErrorCode.PROVIDER_AUTH_FAILED
            raise TokenFailure(code, f"the token endpoint answered {status}", status, True)
        try:
            body: Any = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            body = None
        value = call.token.search(body) if body is not None else None
        if not isinstance(value, str) or not value:
            message = f"the token endpoint answered {status} without a token"
            raise TokenFailure(ErrorCode.PROVIDER_AUTH_FAILED, message, status, True)
        lifetime = call.expires_in.search(body) if call.expires_in is not None else None
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = call.lifetime_s
        margin = min(RENEW_MARGIN_S, lifetime / 10)
        return _Token(value, self._clock.monotonic() + lifetime - margin)


def _key(target: Target) -> tuple[str, int]:
    """A token belongs to a connection and the credentials that fetched it: a reload that
    changes them fetches a new one."""
    return target.name, hash(tuple(sorted(target.credentials.items())))


def _token_request(target: Target, call: TokenCall, clock: Clock) -> UpstreamRequest:
    params = {f"params.{k}": v for k, v in target.params.items()}
    generated = Call("", "", "", "", "", now=clock.now(), uuid=str(uuid4())).generated()
    ctx = with_credentials(
        {"connection.name": target.name, **params, **generated}, target.credentials
    )
    try:
        url = _rendered(call.url.render(ctx, str), "url")
        headers = [
            (n, header_value(n, str(t.render(ctx, str) or ""))) for n, t in call.headers.items()
        ]
        body: bytes | None = None
        if call.form is not None:
            form = {name: t.render(ctx, str) for name, t in call.form.items()}
            body = urlencode({k: v for k, v in form.items() if v is not None}).encode()
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        elif call.body is not None:
            body = orjson.dumps(render_structure(call.body, ctx))
            headers.append(("Content-Type", "application/json"))
        secret = set()
        if call.basic is not None:
            user = _rendered(call.basic.username.render(ctx, str), "username")
            password = call.basic.password.render(ctx, str) or ""
            pair = b64encode(f"{user}:{password}".encode()).decode()
            headers.append(("Authorization", f"Basic {pair}"))
            secret.add("authorization")
    except TemplateError as exc:
        raise TokenFailure(ErrorCode.PROVIDER_MISCONFIGURED, str(exc), None, False) from None
    return UpstreamRequest(call.method, url, tuple(headers), body, frozenset(secret))


def _rendered(value: Any, where: str) -> str:
    if value is None:
        raise TemplateError(f"the token request's {where} lacks a value")
    return str(value)
