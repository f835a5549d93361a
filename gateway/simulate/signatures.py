"""A simulated provider's check of the signatures it receives, as the provider would make it:
the definition's recipe computed again over the request that came, with the credentials and
params of the account the simulator was given (``Account``). A gateway configured with
another key, or whose recipe puts a part elsewhere, is refused. (The recipe itself is pinned by
known-answer tests computed by hand; this shows what a provider does with a wrong one.)

The values made anew for each request (a timestamp, a UUID) are read back from where the
request's templates put them: a query parameter or a header holding that value alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from gateway.auth_schemes import Signature
from gateway.translate.sign import sent_value, signed
from gateway.translate.templates import GENERATED_NAMES, Ref, Template, compile_template
from gateway.translate.wire import UpstreamRequest

Verify = Callable[[web.Request, bytes, str | None], bool]


@dataclass(frozen=True)
class Account:
    """What a simulated provider knows of the account calling it."""

    credentials: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)


def verifier(
    signature: Signature | None,
    account: Account | None,
    query: Mapping[str, Template],
    headers: Mapping[str, Template],
) -> Verify | None:
    """How to check a request signed by ``signature`` whose templates are ``query`` and
    ``headers``, or None when there is nothing to check (no signature, or no account)."""
    if signature is None or account is None:
        return None
    places = _generated(query, "query") + _generated(headers, "header")
    params = {f"params.{k}": v for k, v in account.params.items()}

    def verify(got: web.Request, body: bytes, token: str | None) -> bool:
        given = (
            got.query.get(signature.query)
            if signature.query is not None
            else got.headers.get(signature.header or "")
        )
        if not given:
            return False
        ctx: dict[str, Any] = dict(params)
        if token is not None:
            ctx["token"] = token
        for name, where, key in places:
            value = got.query.get(key) if where == "query" else got.headers.get(key)
            if value is not None:
                ctx[name] = value
        unsigned = UpstreamRequest(
            got.method, _without(got, signature.query), tuple(got.headers.items()), body or None
        )
        try:
            expected = signed(signature, unsigned, account.credentials, ctx)
        except Exception:  # a part it cannot make: not a signature this account would send
            return False
        return sent_value(signature, expected) == given

    return verify


def url_query(url: Template) -> dict[str, Template]:
    """The query parameters a URL template writes (a token request's), as templates."""
    _, _, query = url.source.partition("?")
    pairs = (pair.partition("=") for pair in query.split("&") if pair)
    return {unquote(name): compile_template(value) for name, _, value in pairs}


def _generated(templates: Mapping[str, Template], where: str) -> list[tuple[str, str, str]]:
    """Where a value made for each request stands alone: (its name, query or header, key)."""
    found = []
    for key, template in templates.items():
        lone = template.parts[0] if len(template.parts) == 1 else None
        if isinstance(lone, Ref):
            found += [(n, where, key) for n in lone.alternatives if n in GENERATED_NAMES]
    return found


def _without(got: web.Request, name: str | None) -> str:
    """The URL as the gateway built it before placing the signature (its last parameter)."""
    url = str(got.url)
    if name is None:
        return url
    base, _, query = url.partition("?")
    kept = [p for p in query.split("&") if p and unquote(p.partition("=")[0]) != name]
    return f"{base}?{'&'.join(kept)}" if kept else base
