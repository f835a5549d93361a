"""The provider-definition format: one YAML file describes one provider's cancel dialect.

Validating a file compiles it: templates become ``Template`` objects and JMESPath expressions
are parsed, so nothing is parsed per request. ``README.md`` ("Adding a provider") documents
every key with the built-in files in ``gateway/providers/`` as examples.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
    model_validator,
)

from gateway.answers import AlreadyCancelled, Errors, Extract, Pending, Success
from gateway.auth_schemes import (
    Auth,
    BasicAuth,
    HeaderAuth,
    QueryAuth,
    Signature,
    TokenAuth,
)
from gateway.errors import ErrorCode
from gateway.examples import Examples
from gateway.fields import (
    HeaderName,
    Strict,
    StructureField,
    TemplateField,
    absolute_path,
    request_parts,
)
from gateway.line_items import LINE_NAMES, Lines, lines_problems
from gateway.probe_spec import ANSWER_PREFIX, Probe
from gateway.read_spec import ObjectRead, Read
from gateway.translate.templates import (
    CONTEXT_NAMES,
    GENERATED_NAMES,
    REQUEST_NAMES,
    Template,
    authority_of,
    compile_template,
    scalar_text,
    structure_templates,
    unknown_names,
    unknown_reference,
)

# The canonical request's fields a definition may put limits and defaults on.
CanonicalField = Literal["id", "reason", "requested_by", "notify", "notes"]


class CredentialSpec(Strict):
    required: bool = True
    description: str = ""


class ParamSpec(Strict):
    """A provider-specific value: fixed by the connection, or also given per request."""

    type: Literal["string", "integer", "number", "boolean"] = "string"
    required: bool = False
    per_request: bool = False
    default: str | int | float | bool | None = None
    max_length: int | None = Field(default=None, ge=1)
    pattern: str | None = None
    description: str = ""

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value

    def from_text(self, value: Any) -> Any:
        """A connection's value as the param's type when it came as text (``${VAR}`` from the
        environment is always text): ``"42"`` for an integer, ``"true"`` for a boolean. Text
        that is not such a value stays text, and ``problem`` says what is wrong with it."""
        if not isinstance(value, str) or self.type == "string":
            return value
        if self.type == "boolean" and value in ("true", "false"):
            return value == "true"
        if self.type == "integer" and re.fullmatch(r"-?[0-9]{1,18}", value):
            return int(value)
        if self.type == "number" and re.fullmatch(r"-?[0-9]{1,18}(\.[0-9]{1,18})?", value):
            return float(value) if "." in value else int(value)
        return value

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this param (None is absent), or None."""
        if value is None:
            return "is required" if self.required else None
        allowed = _PARAM_TYPES[self.type]
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            return f"must be a {self.type}"
        text = scalar_text(value)
        if self.max_length is not None and len(text) > self.max_length:
            return f"must be at most {self.max_length} characters"
        if self.pattern is not None and not re.fullmatch(self.pattern, text):
            return f"must match {self.pattern}"
        return None


_PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


class FieldRule(Strict):
    """Limits and defaults the provider puts on a canonical request field."""

    required: bool = False
    max_length: int | None = Field(default=None, ge=1)
    default: StructureField = None


class Resource(Strict):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: Annotated[TemplateField, AfterValidator(absolute_path)]
    retry_safe: bool = False  # may be repeated after it was sent (README, "Resilience")
    headers: dict[HeaderName, TemplateField] = Field(default_factory=dict)
    query: dict[str, TemplateField] = Field(default_factory=dict)
    body: StructureField = None
    # How the body is written: JSON (GraphQL is JSON: a query and its variables), or as a form
    # (application/x-www-form-urlencoded: a flat mapping). A Content-Type in ``headers`` (a
    # vendor's +json type) replaces the default one.
    body_encoding: Literal["json", "form"] = "json"
    fields: dict[CanonicalField, FieldRule] = Field(default_factory=dict)
    success: Success = Field(default_factory=Success)
    already_cancelled: AlreadyCancelled | None = None
    pending: Pending | None = None  # accepted, finished later: settled by ``probe``
    extract: Extract = Field(default_factory=Extract)
    errors: Errors | None = None  # replaces the provider's ``errors`` for this resource
    items: Lines | None = None  # cancels single lines: see line_items.py
    read: Read | None = None  # a request made before the cancel: see read_spec.py
    probe: Probe | None = None  # a read of the object's state: see probe_spec.py

    @model_validator(mode="after")
    def _form_is_flat(self) -> Resource:
        if self.body_encoding == "form" and not (
            isinstance(self.body, dict)
            and all(not isinstance(v, dict | list) for v in self.body.values())
        ):
            raise ValueError("a form body is a mapping of names to single values")
        return self

    @model_validator(mode="after")
    def _pending_is_probed(self) -> Resource:
        if self.pending is not None and self.probe is None:
            raise ValueError("a `pending` answer needs a `probe` to settle it")
        return self

    def request_templates(self, where: str) -> list[tuple[str, Template]]:
        """The templates of the request (path, headers, query, body), each with where it is."""
        return request_parts(where, self.path, self.headers, self.query, self.body)

    @cached_property
    def read_request(self) -> Resource | None:
        """The read as a request to build and classify like a cancel's: its own success test,
        the resource's error rules."""
        read = self.read
        if read is None:
            return None
        already = read.already_cancelled
        return self._reading(
            read,
            success=Success(status=read.status, when=read.when),
            already_cancelled=AlreadyCancelled(status=read.status, when=already)
            if already is not None
            else None,
            extract=Extract(provider_response=read.values),
        )

    @cached_property
    def probe_request(self) -> Resource | None:
        """The probe as a request to build like a cancel's (``classify`` reads its answer)."""
        return self._reading(self.probe) if self.probe is not None else None

    def _reading(self, spec: ObjectRead, **answer: Any) -> Resource:
        """A read of the object as a resource: its request, the resource's error rules."""
        parts = {"headers": spec.headers, "query": spec.query, "body": spec.body}
        return Resource(method=spec.method, path=spec.path, errors=self.errors, **parts, **answer)

    def default_templates(self, where: str) -> list[tuple[str, Template]]:
        """The templates of the fields' defaults, each with where it is."""
        return [
            (f"{where}.fields.{name}.default", t)
            for name, rule in self.fields.items()
            for t in structure_templates(rule.default)
        ]


class RateLimit(Strict):
    """The provider's documented request rate, the default of every connection to it."""

    per_s: float = Field(gt=0, le=100000)
    burst: int | None = Field(default=None, ge=1, le=100000)
    note: str = ""


class ProviderDefinition(Strict):
    name: Annotated[str, Field(max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]
    title: str = ""
    rate_limit: RateLimit | None = None  # per connection; a connection's limits override it
    base_url: TemplateField | None = None
    credentials: dict[str, CredentialSpec] = Field(default_factory=dict)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    auth: Auth | None = None
    signature: Signature | None = None
    errors: Errors = Field(default_factory=Errors)
    resources: dict[str, Resource] = Field(min_length=1)
    examples: Examples = Field(default_factory=Examples)  # its proof (gateway/examples.py)

    @model_validator(mode="after")
    def _references_are_known(self) -> ProviderDefinition:
        problems = [f"{where}: {problem}" for where, problem in self.template_problems()]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def template_problems(self) -> list[tuple[str, str]]:
        """(location, problem) for every template naming something the context cannot hold,
        every credential used outside the auth header (credentials never go in a URL, a body
        or a log), and every value a request gives placed in the base URL's host or port."""
        found: list[tuple[str, str]] = []

        def check(
            where: str,
            template: Template,
            credentials_allowed: bool = False,
            also: frozenset[str] = frozenset(),
        ) -> None:
            for name in unknown_names(template, self.params, self.credentials):
                if name in also:
                    continue  # the one name this place adds to the context
                found.append((where, unknown_reference(name, self.params, self.credentials)))
            if not credentials_allowed and any(
                n.startswith("credentials.") for n in template.names
            ):
                found.append((where, "credentials may only be used in auth"))

        if self.base_url is not None:
            check("base_url", self.base_url)
            authority = compile_template(authority_of(self.base_url.source))
            found += [("base_url", problem) for problem in self.host_problems(authority)]
        if isinstance(self.auth, HeaderAuth):
            check("auth.header", self.auth.header)
            check("auth.value", self.auth.value, credentials_allowed=True)
            found += [
                (
                    "auth.header",
                    f"{{{name}}} is given per request: only the definition and the "
                    "connection may name the header that carries a credential",
                )
                for name in self.auth.header.names
                if self.per_request(name)
            ]
        elif isinstance(self.auth, BasicAuth):
            check("auth.username", self.auth.username, credentials_allowed=True)
            check("auth.password", self.auth.password, credentials_allowed=True)
        elif isinstance(self.auth, QueryAuth):
            check("auth.value", self.auth.value, credentials_allowed=True)
        elif isinstance(self.auth, TokenAuth):
            check("auth.value", self.auth.value)
            call = self.auth.token_call
            spends = self.auth.refresh_token is not None
            if self.auth.refresh_token is not None:
                check("auth.refresh_token", self.auth.refresh_token, credentials_allowed=True)
            for template in call.templates():
                # A token request may name the connection's base URL (a provider whose token
                # comes from the API's own host: sandbox and production alike).
                also = frozenset({"refresh_token", BASE_URL} if spends else {BASE_URL})
                check("auth (token request)", template, credentials_allowed=True, also=also)
            # What chooses the token's host: the authority, or all before the path when the
            # URL starts with a placeholder (a param holding the scheme and host).
            source = call.url.source
            origin = authority_of(source) if "://" in source else source.partition("/")[0]
            token_host = compile_template(origin)
            found += [("auth (token request)", p) for p in self.host_problems(token_host)]
        found += [
            (where, "{token} is only the fetched token's, in auth.value and signature.message")
            for where, template in self._all_templates()
            if "token" in template.names
            and not (where == "signature.message" and isinstance(self.auth, TokenAuth))
        ]
        if self.signature is not None:
            fetched = frozenset({"token"} if isinstance(self.auth, TokenAuth) else ())
            for template in self.signature.templates():
                check("signature", template, credentials_allowed=True, also=fetched)
            signing_key = self.signature.key
            if signing_key is not None and (
                not any(n.startswith("credentials.") for n in signing_key.names)
                or any(self.per_request(n) for n in signing_key.names)
            ):
                found.append(
                    (
                        "signature.key",
                        "the key is the connection's secret: it must name a credential and "
                        "nothing a request gives",
                    )
                )
        for rname, res in self.resources.items():
            where = f"resources.{rname}"
            located = res.request_templates(where) + res.default_templates(where)
            read_names = res.read.names() if res.read else frozenset()
            for loc, template in located:
                check(loc, template, also=read_names)
            for loc, template in res.read.templates(where) if res.read else []:
                check(loc, template)
            answered = frozenset(ANSWER_PREFIX + n for n in res.extract.provider_response)
            for loc, template in res.probe.templates(where) if res.probe else []:
                check(loc, template, also=answered)
            for template in res.items.templates() if res.items else []:
                check(f"{where}.items.template", template)
            found += lines_problems(res.items, located, res.body, where)
        found += [
            (where, "a request's lines ({items}, {item.*}) belong in a resource's request")
            for where, template in self._all_templates()
            if not where.startswith("resources.") and LINE_NAMES & set(template.names)
        ]
        return found

    def _all_templates(self) -> list[tuple[str, Template]]:
        """Every template but a token auth's value, with where it is."""
        found = [("base_url", self.base_url)] if self.base_url else []
        for rname, res in self.resources.items():
            found += res.request_templates(f"resources.{rname}")
            found += res.default_templates(f"resources.{rname}")
            # A read's request is outside the cancel's: lines are not its to name.
            found += [(f"read:{loc}", t) for loc, t in res.read.templates("")] if res.read else []
            found += (
                [(f"probe:{loc}", t) for loc, t in res.probe.templates("")] if res.probe else []
            )
        if self.signature is not None:
            key = self.signature.key
            found += [("signature.key", key)] if key is not None else []
            found += [
                ("signature.message", t) for t in self.signature.message if isinstance(t, Template)
            ]
        if self.auth is not None and not isinstance(self.auth, TokenAuth):
            found += [("auth", t) for t in self.auth.templates()]
        return found

    def generated_names(self, resource: str) -> frozenset[str]:
        """The values made anew for each attempt (a time, a UUID) this resource's request
        names: each attempt renders it again (and signs it again)."""
        res = self.resources[resource]
        located = res.request_templates("") + res.default_templates("")
        located += res.read.templates("") if res.read else []
        templates = [template for _, template in located]
        templates += res.items.templates() if res.items else []
        if self.base_url is not None:
            templates.append(self.base_url)
        if self.signature is not None:
            templates += self.signature.templates()
        if self.auth is not None:
            templates += self.auth.templates()
        return frozenset(name for t in templates for name in t.names if name in GENERATED_NAMES)

    def per_request(self, name: str) -> bool:
        """Does a request give the value of this reference (a field, a per-request param)?"""
        prefix, _, rest = name.partition(".")
        spec = self.params.get(rest) if prefix == "params" else None
        return name in REQUEST_NAMES or (spec is not None and spec.per_request)

    def host_problems(self, authority: Template) -> list[str]:
        """What is wrong with each reference in a URL's host and port: only params the
        connection fixes may be there, so that no request chooses where credentials go."""
        found: list[str] = []
        for name in authority.names:
            if self.per_request(name):
                found.append(
                    f"{{{name}}} is given per request: only params the connection fixes may "
                    "make the host or port, so that no caller chooses where credentials go"
                )
            elif name in CONTEXT_NAMES:
                found.append(f"{{{name}}} cannot be placed in a host name")
            # Anything else names nothing known, and is reported as such.
        return found

    def errors_for(self, resource: str) -> Errors:
        return self.resources[resource].errors or self.errors


BASE_URL = "base_url"  # the connection's base URL, in a token request's templates

__all__ = ["CanonicalField", "ErrorCode", "ProviderDefinition", "Resource"]
