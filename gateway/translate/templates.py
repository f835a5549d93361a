"""Templates of provider definitions: ``{ref}`` placeholders, compiled once at load.

One syntax serves URLs, headers, query parameters and bodies::

    "/v1/asns/{id}/cancel"          each value percent-encoded as one path segment
    "Bearer {credentials.api_key}"  text with a placeholder: rendered as a string
    "{notify}"                      a lone placeholder keeps the value's JSON type
    "{params.reason_code|reason}"   first of the alternatives that has a value
    "{item.quantity:text}"          a lone placeholder's value as text (2 -> "2")
    "{{literal braces}}"            doubled braces stand for one

A placeholder without a value makes the whole template render as ``None``, which the caller
reads as "omit this field". Every reference is a name from a fixed vocabulary (see
``CONTEXT_NAMES``), so a definition can be checked completely before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from gateway.problems import suggest

# The names a template may reference. ``params.*`` and ``credentials.*`` are further checked
# against what the provider declares.
CONTEXT_NAMES = frozenset(
    {
        "id",
        "resource",
        "reason",
        "requested_by",
        "notify",
        "notes",
        "cancellation_id",
        "idempotency_key",
        "caller.name",
        "connection.name",
        *("now.unix", "now.unix_ms", "now.rfc3339", "uuid"),  # generated for each attempt
        "token",  # a token auth's fetched token, in its value only
        *("items", "item.id", "item.quantity", "item.index"),  # a request's lines
    }
)
# Values the gateway makes anew for each attempt: a definition naming one is rendered again
# (and signed again) before every attempt.
GENERATED_NAMES = frozenset({"now.unix", "now.unix_ms", "now.rfc3339", "uuid"})
# The names whose values come with each request, chosen by the caller.
REQUEST_NAMES = frozenset(
    {"id", "resource", "reason", "requested_by", "notify", "notes", "idempotency_key"}
    | {"items", "item.id", "item.quantity", "item.index"}
)

_REF = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-zA-Z_][a-zA-Z0-9_-]*)?$")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

Context = Mapping[str, Any]
Encoder = Callable[[str], str]


class TemplateError(ValueError):
    """A template that cannot be compiled or rendered; the message says why."""


@dataclass(frozen=True, slots=True)
class Ref:
    alternatives: tuple[str, ...]
    text: bool = False  # ``:text``: a lone placeholder renders its value as text

    def resolve(self, ctx: Context) -> Any:
        for name in self.alternatives:
            value = ctx.get(name)
            if value is not None:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    parts: tuple[str | Ref, ...]
    # What render needs to know of the parts, worked out once: a lone placeholder, or a
    # text with none (its value, rendered the same for every request).
    _lone: Ref | None = field(init=False, repr=False, compare=False)
    _literal: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lone = self.parts[0] if len(self.parts) == 1 else None
        object.__setattr__(self, "_lone", lone if isinstance(lone, Ref) else None)
        literal = all(isinstance(p, str) for p in self.parts)
        object.__setattr__(self, "_literal", "".join(map(str, self.parts)) if literal else None)

    @property
    def names(self) -> Iterator[str]:
        for part in self.parts:
            if isinstance(part, Ref):
                yield from part.alternatives

    def render(self, ctx: Context, encode: Encoder | None = None) -> Any:
        """The rendered value, or ``None`` when a placeholder has no value.

        A lone placeholder without an encoder returns the value itself (bool stays bool).
        """
        if self._literal is not None:
            return self._literal
        if self._lone is not None and encode is None:
            value = self._lone.resolve(ctx)
            return scalar_text(value) if self._lone.text and value is not None else value
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = part.resolve(ctx)
            if value is None:
                return None
            text = scalar_text(value)
            out.append(encode(text) if encode else text)
        return "".join(out)


def scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compile_template(source: str) -> Template:
    parts: list[str | Ref] = []
    literal: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(source):
        literal.append(source[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
            continue
        if match.group(1) is None:
            raise TemplateError(f"unbalanced {token!r} in {source!r} (write {token * 2} for one)")
        inside, text = match.group(1), False
        if inside.endswith(":text"):
            inside, text = inside.removesuffix(":text"), True
        alternatives = tuple(a.strip() for a in inside.split("|"))
        for name in alternatives:
            if not _REF.fullmatch(name):
                raise TemplateError(f"{{{match.group(1)}}} is not a valid reference in {source!r}")
        if any(literal):
            parts.append("".join(literal))
        literal = []
        parts.append(Ref(alternatives, text))
    literal.append(source[pos:])
    if any(literal) or not parts:
        parts.append("".join(literal))
    return Template(source, tuple(parts))


def unknown_names(
    template: Template, params: Mapping[str, object], credentials: Mapping[str, object]
) -> list[str]:
    """The references of ``template`` that name nothing the context can hold."""
    unknown = []
    for name in template.names:
        if name in CONTEXT_NAMES:
            continue
        prefix, _, rest = name.partition(".")
        declared = {"params": params, "credentials": credentials}.get(prefix)
        if declared is None or rest not in declared:
            unknown.append(name)
    return unknown


def unknown_reference(
    name: str, params: Mapping[str, object], credentials: Mapping[str, object]
) -> str:
    """Why ``{name}`` cannot be used, naming what it was likely meant to be: the known
    names of its kind are listed, the closest of all is suggested."""
    declared = {
        "params": [f"params.{n}" for n in params],
        "credentials": [f"credentials.{n}" for n in credentials],
    }
    known = declared.get(name.partition(".")[0], CONTEXT_NAMES)
    everything = [*CONTEXT_NAMES, *declared["params"], *declared["credentials"]]
    return f"{{{name}}} references nothing known ({suggest(name, known, among=everything)})"


# --- structured templates (bodies, query strings, headers) ---------------------------------

Body = Any  # nested dict / list / Template / literal scalar


def compile_structure(value: Any) -> Body:
    """Compile every string of a nested YAML value; other scalars stay literal."""
    if isinstance(value, str):
        return compile_template(value)
    if isinstance(value, dict):
        return {str(k): compile_structure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_structure(v) for v in value]
    return value


def structure_templates(value: Body) -> Iterator[Template]:
    if isinstance(value, Template):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from structure_templates(v)
    elif isinstance(value, list):
        for v in value:
            yield from structure_templates(v)


def render_structure(value: Body, ctx: Context) -> Any:
    """Render a compiled structure; fields whose value is absent are left out."""
    if isinstance(value, Template):
        return value.render(ctx)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            rendered = render_structure(item, ctx)
            if rendered is not None:
                out[key] = rendered
        return out
    if isinstance(value, list):
        return [r for r in (render_structure(v, ctx) for v in value) if r is not None]
    return value


# --- URL pieces ----------------------------------------------------------------------------

HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def authority_of(url: str) -> str:
    """The host and port of a URL (template): what lies between ``://`` and the path."""
    return url.partition("://")[2].partition("/")[0]


def encode_segment(value: str) -> str:
    """Percent-encode ``value`` as exactly one path segment.

    ``.`` and ``..`` would be resolved as dot segments by servers and proxies, so they are
    refused rather than sent (the canonical request refuses them earlier, too).
    """
    if value in (".", ".."):
        raise TemplateError(f"{value!r} cannot be used as a path segment")
    return quote(value, safe="")


def encode_host_label(value: str) -> str:
    if not HOST_LABEL.fullmatch(value):
        raise TemplateError(f"{value!r} is not a valid host name label")
    return value


def encode_query_value(value: str) -> str:
    return quote(value, safe="")


# --- header pieces ---------------------------------------------------------------------------

HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_value(name: str, value: str) -> str:
    """``value`` when it can be sent as a header's value (no control character but tab)."""
    if _HEADER_VALUE_FORBIDDEN.search(value):
        raise TemplateError(f"the value of header {name} would contain control characters")
    return value
