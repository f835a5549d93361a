"""Resolve each configured connection against its provider definition, or say what is wrong.

The result, a ``Target``, is what the translation needs: the definition, the base URL split
for encoding, the credentials and the merged parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from gateway.config import ConnectionConfig, GatewayConfig
from gateway.definition import ProviderDefinition
from gateway.models import CONTROL
from gateway.problems import Problem, suggest
from gateway.redact import MIN_SECRET_LENGTH
from gateway.translate.auth import auth_header, with_credentials
from gateway.translate.templates import (
    GENERATED_NAMES,
    HOST_LABEL,
    Context,
    Template,
    TemplateError,
    compile_template,
    encode_host_label,
    encode_segment,
    unknown_names,
    unknown_reference,
)


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
    # The resources whose requests are rendered again for each attempt (generated values).
    per_attempt: frozenset[str] = field(init=False, repr=False, compare=False)
    uuid_per_attempt: frozenset[str] = field(init=False, repr=False, compare=False)
    # What a fetched token belongs to (tokens.py): the connection and everything that fetched
    # it (credentials, params, the auth), so that a reload changing any of them fetches anew.
    token_key: tuple[str, int] = field(init=False, repr=False, compare=False)
    # Is the signature over the fetched token (computed once the token is in place)?
    signs_token: bool = field(init=False, repr=False, compare=False)
    # The signature's key, rendered once when it names nothing but the connection's values.
    signing_key: bytes | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixed_auth", _fixed_auth(self))
        params = tuple(sorted((k, str(v)) for k, v in self.params.items()))
        auth = repr(self.definition.auth)
        base = (self.base_url.scheme, self.base_url.authority.source, self.base_url.path.source)
        fetched_by = (tuple(sorted(self.credentials.items())), params, auth, base)
        object.__setattr__(self, "token_key", (self.name, hash(fetched_by)))
        resources = self.definition.resources
        # A connection's own base URL may name a generated value too (in its path).
        own = frozenset(name for name in self.base_url.path.names if name in GENERATED_NAMES)
        named = {n: own | self.definition.generated_names(n) for n in resources}
        object.__setattr__(self, "per_attempt", frozenset(n for n in resources if named[n]))
        # A UUID is made only for a request that names one (it is the dearest of them).
        object.__setattr__(
            self, "uuid_per_attempt", frozenset(n for n in resources if "uuid" in named[n])
        )
        signature = self.definition.signature
        signs_token = signature is not None and any(
            "token" in template.names for template in signature.templates()
        )
        object.__setattr__(self, "signs_token", signs_token)
        object.__setattr__(self, "signing_key", _signing_key(self))

    def __repr__(self) -> str:  # credentials stay out of every repr
        return f"Target(name={self.name!r}, provider={self.definition.name!r})"


_CONNECTION_NAMES = ("credentials.", "connection.name")
_FIXED_NAMES = (*_CONNECTION_NAMES, "params.")


def _signing_key(target: Target) -> bytes | None:
    """The signature's key when its template names only credentials, params and the
    connection (as it usually does); ``None`` to render it for each request."""
    signature = target.definition.signature
    key = signature.key if signature is not None else None
    if key is None or not all(name.startswith(_FIXED_NAMES) for name in key.names):
        return None
    ctx = {"connection.name": target.name, **{f"params.{k}": v for k, v in target.params.items()}}
    value = key.render(with_credentials(ctx, target.credentials), str)
    return None if value is None else str(value).encode()


def _fixed_auth(target: Target) -> tuple[str, str] | None:
    """The auth header when its templates name only credentials and the connection (they
    usually do); ``None`` to render it per request, which also reports what is wrong with it."""
    auth = target.definition.auth
    templates = [] if auth is None else auth.templates()
    names = [name for template in templates for name in template.names]
    if not templates or not all(name.startswith(_CONNECTION_NAMES) for name in names):
        return None
    try:
        return auth_header(
            target.definition.auth, target.credentials, {"connection.name": target.name}
        )
    except TemplateError:
        return None


def resolve_target(
    name: str,
    conn: ConnectionConfig,
    providers: Mapping[str, ProviderDefinition],
    file: str,
    problems: list[Problem],
    failed: Set[str] = frozenset(),
) -> Target | None:
    """The connection resolved against its definition, or None with the problems found.

    A definition named in ``failed`` did not load: its own problems are reported, and
    calling it unknown here would send the reader looking for the wrong mistake.
    """
    loc = f"connections.{name}"
    definition = providers.get(conn.provider)
    if conn.provider in failed:
        message = f"provider {conn.provider!r} failed to load (see above)"
        problems.append(Problem(file, f"{loc}.provider", message))
        return None
    if definition is None:
        message = f"unknown provider {conn.provider!r} ({suggest(conn.provider, providers)})"
        problems.append(Problem(file, f"{loc}.provider", message))
        return None
    before = len(problems)

    credentials: dict[str, str] = {}
    for cname, secret in conn.credentials.items():
        value = secret.get_secret_value()
        if cname not in definition.credentials:
            declared = suggest(cname, definition.credentials, "declared")
            problems.append(
                Problem(
                    file,
                    f"{loc}.credentials.{cname}",
                    f"not a credential of {definition.name} ({declared})",
                )
            )
        elif CONTROL.search(value):
            problems.append(
                Problem(file, f"{loc}.credentials.{cname}", "contains control characters")
            )
        elif 0 < len(value) < MIN_SECRET_LENGTH:
            # Too short to be real (a typo, a placeholder), and every answer and log line is
            # searched for it: a short value would match ordinary text.
            problems.append(
                Problem(
                    file,
                    f"{loc}.credentials.{cname}",
                    f"must be at least {MIN_SECRET_LENGTH} characters (or empty when optional)",
                )
            )
        credentials[cname] = value
    for cname, cspec in definition.credentials.items():
        if cspec.required and not credentials.get(cname):
            problems.append(
                Problem(file, f"{loc}.credentials.{cname}", f"required by {definition.name}")
            )

    params: dict[str, Any] = {
        n: s.default for n, s in definition.params.items() if s.default is not None
    }
    for pname, given in conn.params.items():
        if pname not in definition.params:
            declared = suggest(pname, definition.params, "declared")
            problems.append(
                Problem(
                    file,
                    f"{loc}.params.{pname}",
                    f"not a parameter of {definition.name} ({declared})",
                )
            )
        spec = definition.params.get(pname)
        params[pname] = spec.from_text(given) if spec is not None else given
    for pname, pspec in definition.params.items():
        if params.get(pname) is None and pspec.per_request:
            continue  # may still come with each request
        problem = pspec.problem(params.get(pname))
        if problem:
            problems.append(Problem(file, f"{loc}.params.{pname}", problem))

    base_url = _base_url(conn.base_url, definition, params, f"{loc}.base_url", file, problems)
    if len(problems) > before or base_url is None:
        return None
    return Target(name, definition, base_url, credentials, params, conn.timeout_s)


def _base_url(
    configured: str | None,
    definition: ProviderDefinition,
    params: Mapping[str, Any],
    loc: str,
    file: str,
    problems: list[Problem],
) -> BaseUrl | None:
    source = (
        configured
        if configured is not None
        else (definition.base_url.source if definition.base_url else None)
    )
    if source is None:
        problems.append(
            Problem(file, loc, f"required: {definition.name} has no public default host")
        )
        return None
    try:
        base = split_base_url(source)
    except (TemplateError, ValueError) as exc:
        problems.append(Problem(file, loc, str(exc)))
        return None
    for template in (base.authority, base.path):
        for ref in unknown_names(template, definition.params, {}):
            problems.append(Problem(file, loc, unknown_reference(ref, definition.params, {})))
    refused = definition.host_problems(base.authority)
    problems.extend(Problem(file, loc, problem) for problem in refused)
    if refused:
        return None
    reported = {p.loc for p in problems}
    for ref in base.authority.names:
        value = params.get(ref.removeprefix("params."))
        if f"{loc.rsplit('.', 1)[0]}.{ref}" in reported or not ref.startswith("params."):
            continue  # already said what is wrong
        if value is None or not HOST_LABEL.fullmatch(str(value)):
            problems.append(
                Problem(
                    file,
                    f"{loc.rsplit('.', 1)[0]}.{ref}",
                    f"must be a host name label matching {HOST_LABEL.pattern}",
                )
            )
    return base


def split_base_url(source: str) -> BaseUrl:
    """Split ``scheme://authority/path`` so each part gets its own encoding."""
    # Never echo the URL: its user information may hold a password.
    scheme, sep, rest = source.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority or (not sep and "@" in source):
        raise ValueError("must not contain user information (credentials go in `credentials`)")
    if not sep or scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not authority:
        raise ValueError("has no host")
    if any(c in rest for c in "?#"):
        raise ValueError("must not contain a query or a fragment")
    return BaseUrl(
        scheme,
        compile_template(authority),
        compile_template(slash + path) if slash else Template("", ("",)),
    )


def check_callers(config: GatewayConfig, file: str, problems: list[Problem]) -> None:
    seen_names: set[str] = set()
    seen_keys: dict[bytes, str] = {}
    for i, caller in enumerate(config.callers):
        if caller.name in seen_names:
            problems.append(
                Problem(file, f"callers.{i}.name", f"caller {caller.name!r} is defined twice")
            )
        seen_names.add(caller.name)
        digest = caller.digest()
        if digest in seen_keys:
            problems.append(
                Problem(file, f"callers.{i}", f"has the same key as caller {seen_keys[digest]!r}")
            )
        seen_keys[digest] = caller.name
