"""How a request carries its credentials: a definition's ``auth`` rendered with a connection's
credentials (a header, HTTP Basic, or a query parameter). Pure; with ``sign.py``, the only
place a credential's value becomes part of a request."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from gateway.auth_schemes import Auth, BasicAuth, HeaderAuth, QueryAuth
from gateway.translate.templates import (
    HEADER_NAME,
    Context,
    TemplateError,
    header_value,
)


def with_credentials(ctx: Context, credentials: Mapping[str, str]) -> Context:
    """``ctx`` and the credentials as ``credentials.<name>``; an empty one counts as absent."""
    return {**ctx, **{f"credentials.{k}": v or None for k, v in credentials.items()}}


def auth_header(
    auth: Auth | None, credentials: Mapping[str, str], ctx: Context
) -> tuple[str, str] | None:
    """``(name, value)`` of the credential header (``header`` and ``basic`` auth), or None when
    the credential goes elsewhere or its value renders empty (an optional credential left
    empty sends nothing)."""
    if isinstance(auth, HeaderAuth):
        name = auth.header.render(ctx, str)
        value = auth.value.render(with_credentials(ctx, credentials), str)
        if name is None or value is None:
            return None
        if not HEADER_NAME.fullmatch(name):
            raise TemplateError(f"{name!r} is not a valid header name")
        return name, header_value(name, value)
    if isinstance(auth, BasicAuth):
        given = with_credentials(ctx, credentials)
        username = auth.username.render(given, str)
        password = auth.password.render(given, str)
        if username is None or password is None:
            return None
        return "Authorization", header_value("Authorization", basic_value(username, password))
    return None


def basic_value(username: str, password: str) -> str:
    """HTTP Basic's Authorization value (RFC 7617)."""
    return f"Basic {base64.b64encode(f'{username}:{password}'.encode()).decode()}"


def auth_query(
    auth: Auth | None, credentials: Mapping[str, str], ctx: Context
) -> tuple[str, str] | None:
    """``(name, value)`` of the credential query parameter (``query`` auth), or None."""
    if not isinstance(auth, QueryAuth):
        return None
    value = auth.value.render(with_credentials(ctx, credentials), str)
    return None if value is None else (auth.name, value)
