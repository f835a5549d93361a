"""A simulator for any definition, made from its ``examples:``: each resource's route under
``/<name>``, answering the documented answers, and its token endpoint when it fetches one.

The object id chooses the answer: the answer example whose name, lower case with spaces as
hyphens, equals the id (``already-cancelled``); any other id gets the resource's first example
that is a success. A resource that reads before it cancels has its read's route too, answering
its ``read: true`` examples the same way (the default: the first that gives the values); a
resource with a status probe has the probe's route, answering its ``probe: true`` examples
(the default: the first that finds the object cancelled, so that an id choosing a pending
answer is settled by the first probe). A token auth's endpoint (its URL's path, under
``/<name>``) answers a new token each time, and the resources answer 401 to a request without
a token it issued (in the header or query parameter the auth names); for the id
``token-expired`` every token issued before it first came has expired (refused with the
definition's own answer for a refused credential when it documents one), so that the gateway
fetches another. Given the account calling it (``Account``), a provider that signs computes
every signature again and refuses one made otherwise (signatures.py).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from gateway.auth_schemes import TokenAuth
from gateway.definition import ProviderDefinition, Resource
from gateway.examples import AnswerExample
from gateway.read_spec import ObjectRead
from gateway.simulate.signatures import Account, Verify, url_query, verifier
from gateway.translate.paths import FieldChain
from gateway.translate.templates import Template

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Request = Resource | ObjectRead  # a cancel, a read or a probe: what is sent
EXPIRED = "token-expired"  # an id for which the tokens issued before it came have expired
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def add_definition_routes(
    app: web.Application, definition: ProviderDefinition, account: Account | None = None
) -> None:
    """Routes that answer as ``definition``'s examples say, under ``/<definition.name>``;
    with ``account``, signatures are checked (signatures.py)."""
    prefix = f"/{definition.name}"
    issued: dict[str, int] = {}  # each token the endpoint issued, and when (1, 2, …)
    expired = [0]  # the tokens issued up to this one have expired (set at the first such id)
    auth = definition.auth
    carrier = None  # where a fetched token must arrive: ("header" or "query", its name)
    if isinstance(auth, TokenAuth):
        carrier = ("query", auth.query) if auth.query else ("header", auth.header)
        call = auth.token_call
        path = _token_path(call.url.source)
        checked = verifier(call.signature, account, url_query(call.url), call.headers)
        handler = _token_endpoint(call.token, issued, checked)
        app.router.add_route(call.method, prefix + path, handler)
    answering = functools.partial(_answering, carrier=carrier, issued=issued, expired=expired)
    # Requests that share a route (a GraphQL API: one path for every call) are told apart by
    # the fixed texts of their bodies; the first registered there answers what matches none.
    routes: dict[tuple[str, str], list[tuple[Request, Handler]]] = {}
    for name, resource in definition.resources.items():
        answers = [
            a
            for a in definition.examples.answers
            if a.resource in (None, name) or len(definition.resources) == 1
        ]
        made: list[tuple[Request, list[AnswerExample], str]] = [
            (resource, [a for a in answers if not a.read and not a.probe], "cancelled")
        ]
        if resource.read is not None:  # the read answers with the read's examples
            made.append((resource.read, [a for a in answers if a.read], "read"))
        if resource.probe is not None:  # the probe answers with the probe's examples
            made.append((resource.probe, [a for a in answers if a.probe], "cancelled"))
        for request, examples, success in made:
            where = (request.method, prefix + _route(request.path.source))
            checked = verifier(definition.signature, account, request.query, request.headers)
            handler = answering(
                examples, object_id=_id_finder(request), success=success, verify=checked
            )
            routes.setdefault(where, []).append((request, handler))
    for (method, path), handlers in routes.items():
        app.router.add_route(method, path, _dispatching(handlers))


def _token_path(url: str) -> str:
    """The path of a token URL template: after its host, or after the placeholder that holds
    the scheme and host (``{params.token_host}/v3/token``)."""
    if "://" in url:
        return urlsplit(_PLACEHOLDER.sub("x", url)).path or "/"
    return "/" + url.partition("/")[2].partition("?")[0]


def slug(name: str) -> str:
    return "-".join(name.lower().split())


def _route(path: str) -> str:
    """A definition's path template as an aiohttp route: each placeholder one segment."""
    names = itertools.count()
    route = _PLACEHOLDER.sub(
        lambda m: "{id}" if m.group(1) == "id" else f"{{p{next(names)}}}", path
    )
    return route.replace("{{", "{").replace("}}", "}")


def _dispatching(handlers: list[tuple[Request, Handler]]) -> Handler:
    """One route's handler: the request whose body's fixed texts the call carries."""
    if len(handlers) == 1:
        return handlers[0][1]
    marks = [(_fixed_texts(request.body), handler) for request, handler in handlers]

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            sent = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            sent = None
        for texts, chosen in marks[1:]:
            if texts and all(_at(sent, path) == text for path, text in texts):
                return await chosen(request)
        return await marks[0][1](request)

    return handler


def _fixed_texts(body: Any) -> list[tuple[tuple[Any, ...], str]]:
    """Where a body template holds text with no placeholder, and that text."""
    return [
        (path, "".join(str(p) for p in template.parts))
        for path, template in _templates(body)
        if all(isinstance(p, str) for p in template.parts)
    ]


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        if isinstance(step, str) and isinstance(document, dict):
            document = document.get(step)
        elif isinstance(step, int) and isinstance(document, list) and step < len(document):
            document = document[step]
        else:
            return None
    return document


IdFinder = Callable[[web.Request, Any], str]


def _id_finder(request: Request) -> IdFinder:
    """Where a request carries the object's id: its path, else a query parameter or a body
    field whose template names ``{id}`` (``gid://shopify/Order/{id}``)."""
    if "{id}" in request.path.source:
        return lambda got, _: got.match_info.get("id", "")
    places: list[tuple[str, Any, re.Pattern[str]]] = []
    for name, template in request.query.items():
        if "id" in template.names:
            places.append(("query", name, _matcher(template)))
    for path, template in _templates(request.body):
        if "id" in template.names:
            places.append(("body", path, _matcher(template)))

    def find(got: web.Request, body: Any) -> str:
        for where, key, pattern in places:
            value = got.query.get(key) if where == "query" else _at(body, key)
            matched = pattern.fullmatch(str(value)) if value is not None else None
            if matched:
                return matched.group("id")
        return ""

    return find


def _templates(body: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Template]]:
    if isinstance(body, Template):
        return [(path, body)]
    if isinstance(body, dict):
        return [found for k, v in body.items() for found in _templates(v, (*path, k))]
    if isinstance(body, list):
        return [found for i, v in enumerate(body) for found in _templates(v, (*path, i))]
    return []


def _matcher(template: Template) -> re.Pattern[str]:
    """A template as a pattern: its texts as they are, ``{id}`` captured, the rest anything."""
    pattern = ""
    for part in template.parts:
        if isinstance(part, str):
            pattern += re.escape(part)
        else:
            pattern += (
                "(?P<id>.+?)" if "id" in part.alternatives and "(?P<id>" not in pattern else ".*?"
            )
    return re.compile(pattern)


def _answering(
    answers: list[AnswerExample],
    *,
    object_id: IdFinder,
    carrier: tuple[str, str] | None,
    issued: dict[str, int],
    expired: list[int],
    success: str = "cancelled",
    verify: Verify | None = None,
) -> Handler:
    by_slug = {slug(a.name): a for a in answers}
    # A cancel that is always accepted for later (a job) answers pending by default.
    default = next((a for a in answers if a.expect.status == success), None) or next(
        (a for a in answers if a.expect.status == "pending"), None
    )
    refusal = next((a for a in answers if a.expect.code == "provider_auth_failed"), None)

    async def handler(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            document = orjson.loads(raw or b"null")
        except orjson.JSONDecodeError:
            document = None
        chosen_id = object_id(request, document)
        token: str | None = None
        if carrier is not None:
            where, name = carrier
            given = request.query if where == "query" else request.headers
            sent = given.get(name, "")
            token = next((t for t in issued if t in sent), None)
            if token is None:
                return web.json_response({"error": "unauthorized"}, status=401)
            held = issued[token]
            if chosen_id == EXPIRED and expired[0] == 0:
                expired[0] = max(issued.values())  # every token issued so far has expired
            if chosen_id == EXPIRED and held <= expired[0]:  # the provider's own refusal
                return _refused(refusal, "token expired")
        if verify is not None and not verify(request, raw, token):
            return _refused(refusal, "the signature does not match")
        # Once its token is renewed, ``token-expired`` gets the usual answer (a definition's
        # example of the refusal may well be named so).
        chosen = default if chosen_id == EXPIRED else by_slug.get(slug(chosen_id)) or default
        if chosen is None:
            return web.json_response({"error": "no example answers this request"}, status=501)
        return web.Response(status=chosen.status, body=chosen.raw(), headers=chosen.headers)

    return handler


def _refused(refusal: AnswerExample | None, message: str) -> web.StreamResponse:
    """The provider's documented answer to a refused credential, or a plain 401."""
    if refusal is None:
        return web.json_response({"error": message}, status=401)
    return web.Response(status=refusal.status, body=refusal.raw(), headers=refusal.headers)


def _token_endpoint(where: object, issued: dict[str, int], verify: Verify | None) -> Handler:
    counter = itertools.count(1)

    async def handler(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if verify is not None and not verify(request, raw, None):
            return web.json_response({"error": "the signature does not match"}, status=403)
        number = next(counter)
        token = f"simulated-token-{number}"
        issued[token] = number
        body: object = token  # a bare token, as for `token: "@"`
        if isinstance(where, FieldChain):  # `access_token`, `data.token`: nested as named
            for key in reversed(where.keys):
                body = {key: body}
            if len(where.keys) == 1:
                body = {**body, "expires_in": 3600}  # type: ignore[dict-item]
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    return handler
