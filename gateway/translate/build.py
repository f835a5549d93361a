"""Build the provider's request from the canonical one. Pure: no I/O; the time and the UUIDs
a definition may name are given (``Call``), or made by ``build_attempts`` for each attempt.

Every problem the caller can fix is collected and raised at once as one ``invalid_request``
with ``fields``, before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from uuid import uuid4

import orjson

from gateway.definition import ParamSpec, ProviderDefinition, Resource
from gateway.errors import invalid_request
from gateway.line_items import LIST_NAME
from gateway.models import CancelRequest, LineItem
from gateway.probe_spec import ANSWER_PREFIX
from gateway.read_spec import READ_PREFIX
from gateway.targets import Target
from gateway.translate.auth import auth_header, auth_query
from gateway.translate.sign import check_values, signed
from gateway.translate.templates import (
    Context,
    TemplateError,
    encode_query_value,
    encode_segment,
    header_value,
    render_structure,
    scalar_text,
)
from gateway.translate.wire import UpstreamRequest


@dataclass(frozen=True, slots=True)
class Call:
    """What is known about one cancellation before it is sent."""

    cancellation_id: str
    caller: str
    idempotency_key: str
    request_id: str
    traceparent: str
    tracestate: str | None = None
    now: datetime | None = None  # the attempt's time and id (``now.*``, ``uuid``)
    uuid: str = ""

    def generated(self) -> dict[str, Any]:
        return {} if self.now is None else generated_values(self.now, self.uuid)

    def at(self, now: datetime, uuid: bool = True) -> Call:
        """This call as one attempt makes it: its time, and a new UUID when ``uuid`` (built
        directly: ``dataclasses.replace`` costs more than a signed request's rendering)."""
        return Call(
            self.cancellation_id,
            self.caller,
            self.idempotency_key,
            self.request_id,
            self.traceparent,
            self.tracestate,
            now,
            str(uuid4()) if uuid else "",
        )


def generated_values(now: datetime, uuid: str) -> dict[str, Any]:
    """The values made for one attempt (``now.*``, ``uuid``), as templates name them."""
    moment = now.astimezone(UTC)
    return {
        "now.unix": int(moment.timestamp()),
        "now.unix_ms": int(moment.timestamp() * 1000),
        "now.rfc3339": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "uuid": uuid or None,
    }


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


Line = tuple[int, LineItem]  # a line's index in the request, and the line


def build_request(
    target: Target,
    resource_name: str,
    req: CancelRequest,
    call: Call,
    line: Line | None = None,
    read: Mapping[str, Any] | None = None,
    reading: bool = False,
    probing: bool = False,
) -> UpstreamRequest:
    """The request of one attempt: the cancel (with the values its read gave, ``read``), or,
    ``reading``, the read the resource makes before it, or, ``probing``, its status probe
    (``read`` then holds what the cancel's answer gave, when it answered pending)."""
    definition = target.definition
    own = definition.resources[resource_name]
    resource = own
    if reading and own.read_request is not None:
        resource = own.read_request
    elif probing and own.probe_request is not None:
        resource = own.probe_request
    problems: list[tuple[str, str]] = []
    params = merge_params(definition.params, target.params, req.params, problems)
    ctx: dict[str, Any] = {
        "resource": resource_name,
        "cancellation_id": call.cancellation_id,
        "idempotency_key": call.idempotency_key,
        "caller.name": call.caller,
        "connection.name": target.name,
        **{f"params.{k}": v for k, v in params.items()},
        **call.generated(),
    }
    ctx.update(canonical_fields(own, req, ctx, problems))
    ctx.update(line_values(own, req, line, ctx, problems))
    prefix = ANSWER_PREFIX if probing else READ_PREFIX
    ctx.update({f"{prefix}{name}": value for name, value in (read or {}).items()})
    if problems:
        raise invalid_request(*problems)

    try:
        path = resource.path.render(ctx, encode_segment)
        if path is None:
            raise TemplateError(f"the path {resource.path.source!r} lacks a value")
        url = target.base_url.render(ctx) + path
        query = _render_query(resource, ctx)
        headers, secret = _render_headers(target, resource, ctx)
        in_query = auth_query(definition.auth, target.credentials, ctx)
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
        rendered = render_structure(resource.body, ctx)
        if resource.body_encoding == "form":
            body = urlencode({k: scalar_text(v) for k, v in rendered.items()}).encode()
            kind = "application/x-www-form-urlencoded"
        else:
            body, kind = orjson.dumps(rendered), "application/json"
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", kind))
    request = UpstreamRequest(resource.method, url, tuple(headers), body, frozenset(secret))
    if in_query is not None:
        request = request.with_secret_query(*in_query)
    signature = definition.signature
    if signature is not None and target.signs_token:
        credentials = target.credentials
        try:
            check_values(signature, credentials, ctx, "token")
        except TemplateError as exc:
            raise invalid_request(("request", str(exc))) from exc

        def sign_with_token(authorized: UpstreamRequest, token: str) -> UpstreamRequest:
            return signed(signature, authorized, credentials, {**ctx, "token": token})

        return replace(request, sign_with_token=sign_with_token)
    if signature is not None:
        try:
            request = signed(signature, request, target.credentials, ctx, target.signing_key)
        except TemplateError as exc:
            raise invalid_request(("request", str(exc))) from exc
    return request


Attempts = tuple[UpstreamRequest, Callable[[], UpstreamRequest] | None]
LineAttempts = tuple[UpstreamRequest, Callable[[], UpstreamRequest] | None, "Reader | None"]


@dataclass(frozen=True, slots=True)
class Reader:
    """A resource's read before its cancel, for one cancellation (or one line of it): each
    attempt builds the read anew, then the cancel from the values the read's answer gave."""

    target: Target
    resource: str
    req: CancelRequest
    call: Call
    now: Callable[[], datetime]
    line: Line | None = None

    def read(self) -> UpstreamRequest:
        return build_request(
            self.target, self.resource, self.req, self._fresh(), self.line, reading=True
        )

    def probe(self, answer: Mapping[str, Any] | None = None) -> UpstreamRequest:
        """The status probe; ``answer``: what the cancel's pending answer gave, for a probe
        that names it (``{answer.<name>}``)."""
        return build_request(
            self.target, self.resource, self.req, self._fresh(), self.line, answer, probing=True
        )

    @property
    def reads(self) -> bool:
        """Does the resource read before it cancels (the other use of a reader: a probe)?"""
        return self.target.definition.resources[self.resource].read is not None

    def cancel(self, values: Mapping[str, Any]) -> UpstreamRequest:
        return build_request(self.target, self.resource, self.req, self._fresh(), self.line, values)

    def missing(self, values: Mapping[str, Any]) -> list[str]:
        """The read's values its answer did not give."""
        read = self.target.definition.resources[self.resource].read
        return [name for name in (read.values if read else ()) if name not in values]

    def _fresh(self) -> Call:
        return self.call.at(self.now())


def build_reader(
    target: Target,
    resource: str,
    req: CancelRequest,
    call: Call,
    now: Callable[[], datetime],
    line: Line | None = None,
) -> Reader | None:
    """What builds the read the resource makes before its cancel, and its status probe, when
    it has either."""
    own = target.definition.resources[resource]
    if own.read is None and own.probe is None:
        return None
    return Reader(target, resource, req, call, now, line)


def build_attempts(
    target: Target,
    resource: str,
    req: CancelRequest,
    call: Call,
    now: Callable[[], datetime],
    line: Line | None = None,
) -> Attempts:
    """The first attempt's request and, when the resource names values made anew for each
    attempt (a time, a UUID, a signature over them), what makes each later attempt's."""
    read = target.definition.resources[resource].read
    # Before a read, its values are not known: the request is checked (and shown) without them.
    unread = {name: "" for name in read.values} if read is not None else None
    if resource not in target.per_attempt:
        return build_request(target, resource, req, call, line, unread), None

    def attempt() -> UpstreamRequest:
        fresh = call.at(now(), resource in target.uuid_per_attempt)
        return build_request(target, resource, req, fresh, line, unread)

    return attempt(), attempt


def build_lines(
    target: Target,
    resource: str,
    req: CancelRequest,
    call: Call,
    now: Callable[[], datetime],
) -> list[LineAttempts] | None:
    """For a resource that sends one request per line: each line's attempts and read, in the
    request's order (None for any other request). Each line has its own upstream idempotency
    key, so that a provider that honours one does not take the second line for a repeat of the
    first."""
    lines = target.definition.resources[resource].items
    if req.items is None or lines is None or lines.mode != "each":
        return None
    built = []
    for line in enumerate(req.items):
        own = replace(call, idempotency_key=f"{call.idempotency_key}-{line[0]}")
        first, again = build_attempts(target, resource, req, own, now, line)
        built.append((first, again, build_reader(target, resource, req, own, now, line)))
    return built


def line_values(
    resource: Resource,
    req: CancelRequest,
    line: Line | None,
    ctx: Context,
    problems: list[tuple[str, str]],
) -> dict[str, Any]:
    """The request's lines as its templates name them (``items``, or one line's ``item.*``),
    after the provider's rules for them."""
    lines = resource.items
    if req.items is None:
        if lines is not None and (lines.required or lines.mode == "each"):
            problems.append(("items", "this provider cancels lines: name them in items"))
        return {}
    if lines is None:
        problems.append(("items", "this provider cancels whole objects only: leave items out"))
        return {}
    named: set[str] = set()
    for n, item in enumerate(req.items):
        if item.id in named:
            problems.append((f"items.{n}.id", f"line {item.id!r} is named twice"))
        named.add(item.id)
    if len(req.items) > lines.max:
        problems.append(("items", f"must be at most {lines.max} lines for this provider"))
    if lines.quantity == "required":
        problems.extend(
            (f"items.{n}.quantity", "is required by this provider")
            for n, item in enumerate(req.items)
            if item.quantity is None
        )
    if lines.mode == "each":
        return {} if line is None else _line_context(*line)
    rendered = [
        render_structure(lines.template, {**ctx, **_line_context(n, item)})
        for n, item in enumerate(req.items)
    ]
    return {LIST_NAME: rendered}


def _line_context(index: int, item: LineItem) -> dict[str, Any]:
    return {"item.id": item.id, "item.quantity": item.quantity, "item.index": index}


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
        problem = spec.problem(merged.get(name))
        if problem:
            problems.append((f"params.{name}", problem))
    return merged


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
            headers.append((name, header_value(name, value)))
    secret: set[str] = set()
    auth = target.fixed_auth or auth_header(target.definition.auth, target.credentials, ctx)
    if auth is not None:
        headers.append(auth)
        secret.add(auth[0].lower())
    return headers, secret
