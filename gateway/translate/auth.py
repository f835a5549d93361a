"""The credential header of a request: a definition's ``auth`` rendered with a connection's
credentials. Pure; the only place a credential's value becomes part of a request."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.definition import Auth
from gateway.translate.templates import HEADER_NAME, Context, TemplateError, header_value


def auth_header(
    auth: Auth | None, credentials: Mapping[str, str], ctx: Context
) -> tuple[str, str] | None:
    """``(name, value)``, or None when there is no auth or its value renders empty (an
    optional credential left empty sends nothing)."""
    if auth is None:
        return None
    given = {f"credentials.{k}": v or None for k, v in credentials.items()}
    name = auth.header.render(ctx, str)
    value = auth.value.render({**ctx, **given}, str)
    if name is None or value is None:
        return None
    if not HEADER_NAME.fullmatch(name):
        raise TemplateError(f"{name!r} is not a valid header name")
    return name, header_value(name, value)
