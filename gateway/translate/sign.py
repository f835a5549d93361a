"""A definition's ``signature``: computed over the parts of a request as it is sent, keyed
with a credential, then placed in a header or a query parameter. Pure: the request and the
context (which holds the attempt's generated values) are given.

Known-answer tests (``tests/translate/test_sign.py``) pin each recipe against values computed
independently, with ``hmac``/``hashlib`` on the recipe written out by hand, and against a
provider's published example where there is one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import orjson

from gateway.auth_schemes import RequestPart, Signature
from gateway.redact import REDACTED
from gateway.translate.auth import with_credentials
from gateway.translate.classify import Outcome
from gateway.translate.templates import Context, Template, TemplateError, header_value
from gateway.translate.wire import UpstreamRequest

_DIGESTS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1, "sha512": hashlib.sha512}


def signed(
    signature: Signature,
    request: UpstreamRequest,
    credentials: Mapping[str, str],
    ctx: Context,
    key: bytes | None = None,
) -> UpstreamRequest:
    """``request`` with its signature in place (and that place masked when shown). ``key``:
    the key already rendered, when it depends on nothing but the connection."""
    given = with_credentials(ctx, credentials) if signature.names_credentials else ctx
    message = b"".join([_part(part, request, given) for part in signature.message])
    name = signature.algorithm.removeprefix("hmac-")
    if signature.key is not None:
        if key is None:
            key = _text(signature.key, with_credentials(ctx, credentials), "key").encode()
        # With the hash's constructor: by its name, OpenSSL looks the hash up on every call.
        digest = hmac.new(key, message, _DIGESTS[name]).digest()
    else:
        digest = _DIGESTS[name](message).digest()
    value = (
        base64.b64encode(digest).decode()
        if signature.encoding == "base64"
        else digest.hex().upper()
        if signature.encoding == "hex-upper"
        else digest.hex()
    )
    if signature.header is not None:
        return request.with_secret_header(signature.header, header_value("signature", value))
    assert signature.query is not None
    return request.with_secret_query(signature.query, value)


def sent_value(signature: Signature, request: UpstreamRequest) -> str | None:
    """The signature ``request`` carries, as computed (before any encoding)."""
    if signature.header is not None:
        lowered = signature.header.lower()
        return next((v for n, v in request.headers if n.lower() == lowered), None)
    return dict(parse_qsl(urlsplit(request.url).query)).get(signature.query or "")


def check_values(
    signature: Signature, credentials: Mapping[str, str], ctx: Context, token: str
) -> None:
    """Raise ``TemplateError`` when a value the signature names is missing: for a signature
    computed later (over a token fetched at send time), the request's own problems are found
    when it is built, as any other request's are."""
    given = {**with_credentials(ctx, credentials), "token": token}
    if signature.key is not None:
        _text(signature.key, given, "key")
    for part in signature.message:
        if isinstance(part, Template):
            _text(part, given, "message")


def _part(part: Template | RequestPart, request: UpstreamRequest, ctx: Context) -> bytes:
    if isinstance(part, Template):
        return _text(part, ctx, "message").encode()
    if part.part == "method":
        return request.method.encode()
    if part.part == "path":
        return urlsplit(request.url).path.encode()
    if part.part == "body":
        return request.body or b""
    pairs = [
        (name, value)
        for name, value in parse_qsl(urlsplit(request.url).query, keep_blank_values=True)
        if name not in part.exclude
    ]
    if part.sort:
        pairs.sort()
    written = (part.pair.replace("{name}", n).replace("{value}", v) for n, v in pairs)
    return part.separator.join(written).encode()


def _text(template: Template, ctx: Context, where: str) -> str:
    value = template.render(ctx, str)
    if value is None:
        raise TemplateError(f"the signature's {where} {template.source!r} lacks a value")
    return str(value)


def without_echo(outcome: Outcome, secrets: list[str]) -> Outcome:
    """``outcome`` with every echo of ``secrets`` in what the provider said masked. A signature
    is a secret made for one request, which no redactor knows in advance: a provider that says
    "expected sign X, got Y" has it masked here, before anything is logged or answered."""
    response = outcome.provider_response
    said = [outcome.detail or "", outcome.provider_code or ""]
    if response:
        said.append(orjson.dumps(response).decode())
    # As sent in a query (percent-encoded) too: a provider may quote the query it received.
    # (A hex signature, the usual, reads the same encoded.)
    forms = [*secrets, *(quote(s, safe="") for s in secrets if not s.isalnum())]
    found = [form for form in forms if any(form in text for text in said)]
    if not found:
        return outcome

    def masked(value: Any) -> Any:
        if isinstance(value, str):
            for secret in found:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {key: masked(item) for key, item in value.items()}
        if isinstance(value, list):
            return [masked(item) for item in value]
        return value

    return replace(
        outcome,
        detail=masked(outcome.detail),
        provider_code=masked(outcome.provider_code),
        provider_response=masked(response),
    )
