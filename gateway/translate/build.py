"""Build the provider's request from the canonical one. Pure: no I/O, no clock.

Every problem the caller can fix is collected and raised at once as one ``invalid_request``
with ``fields``, before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.definition import ParamSpec, ProviderDefinition, Resource
from gateway.errors import invalid_request
from gateway.models import CancelRequest
from gateway.translate.templates import (
    Context,
    Template,
    TemplateError,
    encode_host_label,
    encode_query_value,
    encode_segment,
    render_structure,
    scalar_text,
)
from gateway.translate.wire import UpstreamRequest

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


@dataclass(frozen=True, slots=True)
class BaseUrl:
    """A base URL template split where encodings differ: host labels, then path segments."""

    scheme: str
    authority: Template
    path: Template

    def render(self, ctx: Context) -> str:
        host = self.authority.render(ctx, encode_host_label)
        path = self.path.render(ctx, encode_segment)
        if host is None or path is None:
            raise TemplateError(f"base URL {self.authority.source!r} lacks a value")
        return f"{self.scheme}://{host}{path.rstrip('/')}"


@dataclass(frozen=True, slots=True)
class Target:
    """One configured connection, resolved against its provider definition."""

    name: str
    definition: ProviderDefinition
    base_url: BaseUrl
    credentials: Mapping[str, str]  # plain values: only the auth header ever sees them
    params: Mapping[str, Any]
    timeout_s: float
    # The auth header rendered once, when it depends on nothing but the connection.
    fixed_auth: tuple[str, str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixed_auth", _fixed_auth(self))

    def __repr__(self) -> str:  # credentials stay out of every repr
        return f"Target(name={self.name!r}, provider={self.definition.name!r})"


_CONNECTION_NAMES = ("credentials.", "connection.name")


def _fixed_auth(target: Target) -> tuple[str, str] | None:
    """The auth header when its templates name only credentials and the connection (they
    usually do); ``None`` to render it per request, which also reports what is wrong with it."""
    auth = target.definition.auth
    if auth is None:
        return None
    names = [*auth.header.names, *auth.value.names]
    if not all(name.startswith(_CONNECTION_NAMES) for name in names):
        return None
    try:
        return _auth_header(target, {"connection.name": target.name})
    except TemplateError:
        return None


@dataclass(frozen=True, slots=True)
class Call:
    """What is known about one cancellation before it is sent."""

    cancellation_id: str
    caller: str
    idempotency_key: str
    request_id: str
    traceparent: str
    tracestate: str | None = None


def resolve_resource(definition: ProviderDefinition, requested: str | None) -> str:
    names = list(definition.resources)
    if requested is None:
        if len(names) == 1:
            return names[0]
        message = f"{definition.name} has several resources: give one of {', '.join(names)}"
        raise invalid_request(("resource", message))
    if requested not in definition.resources:
        message = f"{definition.name} cancels {', '.join(names)}, not {requested!r}"
        raise invalid_request(("resource", message))
    return requested


def build_request(
    target: Target, resource_name: str, req: CancelRequest, call: Call
) -> UpstreamRequest:
    definition = target.definition
    resource = definition.resources[resource_name]
    problems: list[tuple[str, str]] = []
    params = merge_params(definition.params, target.params, req.params, problems)
    ctx: dict[str, Any] = {
        "resource": resource_name,
        "cancellation_id": call.cancellation_id,
        "idempotency_key": call.idempotency_key,
        "caller.name": call.caller,
        "connection.name": target.name,
        **{f"params.{k}": v for k, v in params.items()},
    }
    ctx.update(canonical_fields(resource, req, ctx, problems))
    if problems:
        raise invalid_request(*problems)

    try:
        url = target.base_url.render(ctx) + resource.path.render(ctx, encode_segment)
        query = _render_query(resource, ctx)
        headers, secret = _render_headers(target, resource, ctx)
    except TemplateError as exc:
        raise invalid_request(("request", str(exc))) from exc
    if query:
        url = f"{url}?{query}"
    headers.append(("X-Request-ID", call.request_id))
    headers.append(("traceparent", call.traceparent))
    if call.tracestate is not None:
        headers.append(("tracestate", call.tracestate))

    body: bytes | None = None
    if resource.body is not None:
        body = orjson.dumps(render_structure(resource.body, ctx))
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))
    return UpstreamRequest(resource.method, url, tuple(headers), body, frozenset(secret))


def merge_params(
    declared: Mapping[str, ParamSpec],
    from_connection: Mapping[str, Any],
    from_request: Mapping[str, Any],
    problems: list[tuple[str, str]],
) -> dict[str, Any]:
    """Definition defaults, then the connection's values, then the request's (where allowed)."""
    merged = {name: spec.default for name, spec in declared.items() if spec.default is not None}
    merged.update(from_connection)
    for name, value in from_request.items():
        spec = declared.get(name)
        if spec is None:
            known = ", ".join(n for n, s in declared.items() if s.per_request) or "none"
            problems.append(
                (f"params.{name}", f"not a parameter of this provider (per-request: {known})")
            )
        elif not spec.per_request:
            problems.append(
                (f"params.{name}", "is fixed by the connection and cannot be given per request")
            )
        else:
            merged[name] = value
    for name, spec in declared.items():
        problem = param_problem(spec, merged.get(name))
        if problem:
            problems.append((f"params.{name}", problem))
    return merged


def param_problem(spec: ParamSpec, value: Any) -> str | None:
    if value is None:
        return "is required" if spec.required else None
    allowed = _PARAM_TYPES[spec.type]
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        return f"must be a {spec.type}"
    text = scalar_text(value)
    if spec.max_length is not None and len(text) > spec.max_length:
        return f"must be at most {spec.max_length} characters"
    if spec.pattern is not None and not re.fullmatch(spec.pattern, text):
        return f"must match {spec.pattern}"
    return None


def canonical_fields(
    resource: Resource, req: CancelRequest, ctx: Context, problems: list[tuple[str, str]]
) -> dict[str, Any]:
    """The request's own fields with the provider's defaults applied and limits checked."""
    # An empty string says nothing: it is treated as absent, so defaults apply and it is omitted.
    values: dict[str, Any] = {
        "id": req.id,
        "reason": req.reason or None,
        "requested_by": req.requested_by or None,
        "notify": req.notify,
        "notes": req.notes or None,
    }
    for name, rule in resource.fields.items():
        if values[name] is None and rule.default is not None:
            values[name] = render_structure(rule.default, ctx)
        value = values[name]
        if value is None:
            if rule.required:
                problems.append((name, "is required by this provider"))
            continue
        if rule.max_length is not None and len(scalar_text(value)) > rule.max_length:
            problems.append(
                (name, f"must be at most {rule.max_length} characters for this provider")
            )
    return values


def _render_query(resource: Resource, ctx: Context) -> str:
    pairs = []
    for name, template in resource.query.items():
        value = template.render(ctx, encode_query_value)
        if value is not None:
            pairs.append(f"{encode_query_value(name)}={value}")
    return "&".join(pairs)


def _render_headers(
    target: Target, resource: Resource, ctx: Context
) -> tuple[list[tuple[str, str]], set[str]]:
    headers: list[tuple[str, str]] = []
    for name, template in resource.headers.items():
        value = template.render(ctx, str)
        if value is not None:
            headers.append((name, _header_value(name, value)))
    secret: set[str] = set()
    auth = target.fixed_auth or _auth_header(target, ctx)
    if auth is not None:
        headers.append(auth)
        secret.add(auth[0].lower())
    return headers, secret


def _auth_header(target: Target, ctx: Context) -> tuple[str, str] | None:
    auth = target.definition.auth
    if auth is None:
        return None
    credentials = {f"credentials.{k}": v or None for k, v in target.credentials.items()}
    name = auth.header.render(ctx, str)
    value = auth.value.render({**ctx, **credentials}, str)
    if name is None or value is None:
        return None
    if not _HEADER_NAME.fullmatch(name):
        raise TemplateError(f"{name!r} is not a valid header name")
    return name, _header_value(name, value)


def _header_value(name: str, value: str) -> str:
    if _HEADER_VALUE_FORBIDDEN.search(value):
        raise TemplateError(f"the value of header {name} would contain control characters")
    return value
