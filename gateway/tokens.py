"""Tokens fetched before the call (``auth`` of ``type: oauth2_client_credentials``,
``oauth2_refresh_token`` or ``session``): one per connection, cached until shortly before it
expires, fetched once for all the requests that need it at the same time, and forgotten when
the provider refuses it.

A refresh token may be spent once (providers that rotate them answer a new one with each access
token). The newest lives in the store, and a lease in the store lets one process at a time spend
it: a restart or another replica continues the chain instead of spending a token already spent.

A token is a secret: the header or query parameter that carries it is masked wherever a request
is shown, and the log's redactor learns each token as it arrives (only the connection's newest
eight are kept, so the redactor does not grow with every refresh).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode
from uuid import uuid4

import orjson
from jmespath.exceptions import JMESPathError

from gateway.auth_schemes import TokenAuth, TokenCall
from gateway.clock import Clock
from gateway.definition import BASE_URL
from gateway.errors import ErrorCode
from gateway.models import CONTROL
from gateway.redact import MIN_SECRET_LENGTH, Redactor
from gateway.store import RefreshLease, RefreshRow, Store, StoreUnavailable
from gateway.store.memory import MemoryStore
from gateway.targets import Target
from gateway.translate.auth import basic_value, with_credentials
from gateway.translate.build import generated_values
from gateway.translate.sign import signed
from gateway.translate.templates import TemplateError, header_value, render_structure
from gateway.translate.wire import UpstreamRequest
from gateway.upstream import Transport, UpstreamFailure

# A token is renewed this long before it expires (at most a tenth of its life).
RENEW_MARGIN_S = 60.0
# The longest a token request may take: it serves every request waiting, each of which stops
# waiting at its own deadline.
TOKEN_TIMEOUT_S = 10.0
# How long a process may hold a connection's refresh token to spend it: longer than a token
# request may take, so that a lease runs out only when its holder died.
REFRESH_LEASE_S = 2 * TOKEN_TIMEOUT_S
# How often a process waiting for another's lease looks again, and how often a save the store
# refused is tried again.
LEASE_POLL_S = 0.05
SAVE_RETRY_S = 0.5


class TokenFailure(Exception):
    """No token: the token endpoint refused, failed or answered without one."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        status: int | None,
        sent: bool,
        final: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status  # the token endpoint's HTTP status, None without an answer
        self.sent = sent  # may the token request have reached the provider?
        # Not to be repeated now: a refresh token that may have been spent (and rotated)
        # would be spent twice.
        self.final = final


@dataclass(frozen=True, slots=True)
class _Token:
    value: str = field(repr=False)
    sent: str = field(repr=False)  # what carries it: the value of the header or parameter
    renew_at: float  # monotonic seconds


Key = tuple[str, int]


class Tokens:
    """The tokens of every connection whose definition fetches one, in this process (each
    ``--workers`` process fetches its own)."""

    def __init__(
        self,
        transport: Transport,
        clock: Clock,
        redactor: Redactor,
        store: Store | None = None,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._redactor = redactor
        self._store: Store = store if store is not None else MemoryStore()
        self._cached: dict[Key, _Token] = {}
        self._fetching: dict[Key, asyncio.Task[_Token]] = {}
        self._unsaved: dict[str, RefreshRow] = {}  # rotated refresh tokens the store missed
        self._saving: set[asyncio.Future[None]] = set()  # saves tried again in the background

    async def authorize(
        self, target: Target, request: UpstreamRequest, deadline: float
    ) -> tuple[UpstreamRequest, str | None]:
        """``request`` with the connection's token in its header, and the token when it came
        from the cache (one the provider refuses is worth fetching again once)."""
        auth = target.definition.auth
        assert isinstance(auth, TokenAuth)
        cached = self._cached.get(target.token_key)
        if cached is not None and cached.renew_at > self._clock.monotonic():
            return _placed(auth, request, cached), cached.value
        token = await self._token(target, auth, target.token_key, deadline)
        return _placed(auth, request, token), None

    def forget(self, target: Target, token: str) -> None:
        """The provider refused ``token``: the next request fetches another, unless one has
        been fetched meanwhile (forgetting that one would make every refused request fetch)."""
        cached = self._cached.get(target.token_key)
        if cached is not None and cached.value == token:
            del self._cached[target.token_key]

    async def _token(self, target: Target, auth: TokenAuth, key: Key, deadline: float) -> _Token:
        """The one fetch of this key in flight, started if none is: a task of its own, so that
        a request that stops waiting (cancelled, out of time) does not stop it for the others."""
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(target, auth, key))
            self._fetching[key] = task
            task.add_done_callback(lambda _: self._fetching.pop(key, None))
        try:
            async with asyncio.timeout(max(deadline - self._clock.monotonic(), 0.001)):
                return await asyncio.shield(task)
        except TimeoutError:
            raise TokenFailure(
                ErrorCode.PROVIDER_TIMEOUT, "no token within the budget", None, True
            ) from None

    async def _fetch(self, target: Target, auth: TokenAuth, key: Key) -> _Token:
        if auth.refresh_token is None:
            return await self._issue(target, auth, key, None)
        try:
            configured = _rendered(
                auth.refresh_token.render(_token_context(target, self._clock), str),
                "refresh token",
            )
        except TemplateError as exc:
            raise TokenFailure(ErrorCode.PROVIDER_MISCONFIGURED, str(exc), None, False) from None
        seed = hashlib.sha256(configured.encode()).hexdigest()
        holder = uuid4().hex
        lease = await self._lease(target.name, holder)
        stored = lease.row if lease.row is not None and lease.row.seed == seed else None
        unsaved = self._unsaved.get(target.name)
        newest = unsaved if unsaved is not None and unsaved.seed == seed else stored
        spent = newest.value if newest is not None else configured
        rotated: list[RefreshRow] = []
        try:
            return await self._issue(target, auth, key, spent, rotated, seed)
        finally:
            row = rotated[0] if rotated else newest if newest is unsaved else None
            try:
                saved = await self._store.save_refresh(target.name, holder, row)
            except StoreUnavailable:
                saved = False
                # Tried again while the lease holds, so that no other process spends the old
                # token meanwhile.
                task = asyncio.ensure_future(self._save_later(target.name, holder, row))
                self._saving.add(task)
                task.add_done_callback(self._saving.discard)
            # A new token the store did not take is kept here, spent next and stored then.
            if saved or row is None:
                self._unsaved.pop(target.name, None)
            else:
                self._unsaved[target.name] = row

    async def _save_later(self, name: str, holder: str, row: RefreshRow | None) -> None:
        """Store ``row`` (or release the lease) once the store answers again, while the lease
        of ``holder`` still holds."""
        give_up = self._clock.monotonic() + REFRESH_LEASE_S
        while self._clock.monotonic() < give_up:
            await self._clock.sleep(SAVE_RETRY_S)
            try:
                saved = await self._store.save_refresh(name, holder, row)
            except StoreUnavailable:
                continue
            if saved and self._unsaved.get(name) is row:
                self._unsaved.pop(name, None)
            return

    async def _lease(self, name: str, holder: str) -> RefreshLease:
        """The connection's refresh lease, waiting while another process holds it."""
        give_up = self._clock.monotonic() + REFRESH_LEASE_S
        while True:
            try:
                lease = await self._store.lease_refresh(
                    name, holder, self._clock.now().timestamp(), REFRESH_LEASE_S
                )
            except StoreUnavailable:
                raise TokenFailure(
                    ErrorCode.STORE_UNAVAILABLE,
                    "the store holding the refresh token did not answer",
                    None,
                    False,
                ) from None
            if lease.held:
                return lease
            if self._clock.monotonic() >= give_up:
                raise TokenFailure(
                    ErrorCode.PROVIDER_TIMEOUT,
                    "another process has been renewing the token for too long",
                    None,
                    False,
                )
            await self._clock.sleep(LEASE_POLL_S)

    async def _issue(
        self,
        target: Target,
        auth: TokenAuth,
        key: Key,
        refresh_token: str | None,
        rotated: list[RefreshRow] | None = None,
        seed: str = "",
    ) -> _Token:
        call = auth.token_call
        request = _token_request(target, call, self._clock, refresh_token)
        try:
            response = await self._transport(request, TOKEN_TIMEOUT_S)
        except UpstreamFailure as failure:
            spent = refresh_token is not None and failure.sent
            raise TokenFailure(
                failure.code,
                f"the token request failed: {failure.message}",
                None,
                failure.sent,
                final=spent,
            ) from None
        status = response.status
        if not 200 <= status < 300:
            code = (
                ErrorCode.PROVIDER_ERROR
                if status >= 500
                else ErrorCode.RATE_LIMITED
                if status == 429
                else ErrorCode.PROVIDER_BAD_RESPONSE
                if status < 400
                else ErrorCode.PROVIDER_AUTH_FAILED
            )
            spent = refresh_token is not None and status >= 500
            message = f"the token endpoint answered {status}"
            raise TokenFailure(code, message, status, True, final=spent)
        value, lifetime, new_refresh = _read(call, response.body)
        if new_refresh is not None and new_refresh != refresh_token and rotated is not None:
            # Kept before anything else can fail: the one spent may no longer be valid.
            rotated.append(RefreshRow(new_refresh, seed))
            self._redactor.set_dynamic(f"refresh:{target.name}", new_refresh)
        if value is None:
            message = f"the token endpoint answered {status} without a usable token"
            raise TokenFailure(ErrorCode.PROVIDER_BAD_RESPONSE, message, status, True)
        try:
            sent = _carrier(auth, value)
        except TemplateError:
            raise TokenFailure(
                ErrorCode.PROVIDER_BAD_RESPONSE, "the token cannot be sent", status, True
            ) from None
        margin = min(RENEW_MARGIN_S, lifetime / 10)
        token = _Token(value, sent, self._clock.monotonic() + lifetime - margin)
        # Cached only once it is known to be sendable, and redacted from then on.
        self._cached = {k: t for k, t in self._cached.items() if k[0] != key[0]}
        self._cached[key] = token
        self._redactor.set_dynamic(f"token:{target.name}", token.value)
        return token


def _read(call: TokenCall, body: bytes) -> tuple[str | None, float, str | None]:
    """The token in the answer, its life in seconds, and the new refresh token if there is
    one (a token is None unless a string of credential length with no control characters)."""
    try:
        document: Any = orjson.loads(body)
        value = _secret(call.token.search(document))
        lifetime = call.expires_in.search(document) if call.expires_in is not None else None
        rotated = call.new_refresh_token
        new_refresh = _secret(rotated.search(document)) if rotated is not None else None
    except (orjson.JSONDecodeError, JMESPathError, TypeError, ValueError):
        return None, call.lifetime_s, None
    if isinstance(lifetime, str):
        try:
            lifetime = float(lifetime)
        except ValueError:
            lifetime = None
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = call.lifetime_s
    return value, float(lifetime), new_refresh


def _secret(value: Any) -> str | None:
    """``value`` when it can be a token: a string of credential length, no control characters."""
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH or CONTROL.search(value):
        return None
    return value


def _carrier(auth: TokenAuth, token: str) -> str:
    """The value of the header or query parameter that carries ``token``, rendered once per
    token."""
    value = auth.value.render({"token": token}, str)
    if value is None:
        raise TemplateError("the token's value renders empty")
    return value if auth.query is not None else header_value(auth.header, value)


def _placed(auth: TokenAuth, request: UpstreamRequest, token: _Token) -> UpstreamRequest:
    """``request`` carrying ``token``, and signed when its signature is over the token."""
    if auth.query is not None:
        placed = request.with_secret_query(auth.query, token.sent)
    else:
        placed = request.with_secret_header(auth.header, token.sent)
    if placed.sign_with_token is None:
        return placed
    try:
        return placed.sign_with_token(replace(placed, sign_with_token=None), token.value)
    except TemplateError as exc:  # checked when the request was built: not expected here
        raise TokenFailure(ErrorCode.PROVIDER_MISCONFIGURED, str(exc), None, False) from None


def _token_context(target: Target, clock: Clock) -> dict[str, Any]:
    """What a token request's templates may name: the connection, its base URL, params and
    credentials, and the values made for this request."""
    params = {f"params.{k}": v for k, v in target.params.items()}
    generated = generated_values(clock.now(), str(uuid4()))
    base_url = target.base_url.render({**params, **generated})
    named = {"connection.name": target.name, BASE_URL: base_url, **params, **generated}
    return dict(with_credentials(named, target.credentials))


def _token_request(
    target: Target, call: TokenCall, clock: Clock, refresh_token: str | None
) -> UpstreamRequest:
    ctx = _token_context(target, clock)
    if refresh_token is not None:
        ctx["refresh_token"] = refresh_token
    try:
        url = _rendered(call.url.render(ctx, str), "url")
        # A header whose value is not there is left out, as a cancel's is.
        rendered = ((n, t.render(ctx, str)) for n, t in call.headers.items())
        headers = [(n, header_value(n, v)) for n, v in rendered if v is not None]
        body: bytes | None = None
        kind = ""
        if call.form is not None:
            form = {name: t.render(ctx, str) for name, t in call.form.items()}
            body = urlencode({k: v for k, v in form.items() if v is not None}).encode()
            kind = "application/x-www-form-urlencoded"
        elif call.body is not None:
            body = orjson.dumps(render_structure(call.body, ctx))
            kind = "application/json"
        if body is not None and not any(n.lower() == "content-type" for n, _ in headers):
            headers.append(("Content-Type", kind))  # a type in the headers replaces the default
        secret = set()
        if call.basic is not None:
            user = _rendered(call.basic.username.render(ctx, str), "username")
            password = call.basic.password.render(ctx, str) or ""
            headers.append(("Authorization", basic_value(user, password)))
            secret.add("authorization")
        request = UpstreamRequest(call.method, url, tuple(headers), body, frozenset(secret))
        if call.signature is not None:
            request = signed(call.signature, request, target.credentials, ctx)
    except TemplateError as exc:
        raise TokenFailure(ErrorCode.PROVIDER_MISCONFIGURED, str(exc), None, False) from None
    return request


def _rendered(value: Any, where: str) -> str:
    if value is None:
        raise TemplateError(f"the token request's {where} lacks a value")
    return str(value)
