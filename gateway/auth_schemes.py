"""How a definition says a request carries its credentials: in a header, as HTTP Basic, in a
query parameter (``auth``), and with a computed ``signature``. ``translate/auth.py`` and
``translate/sign.py`` render them."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from gateway.fields import NAME, Expression, HeaderName, Strict, StructureField, TemplateField
from gateway.translate.paths import compile_path
from gateway.translate.templates import Template, compile_template, structure_templates


class HeaderAuth(Strict):
    """The credential in a header (the default ``type``). A value that renders empty (an
    optional credential left empty) sends no header."""

    type: Literal["header"] = "header"
    header: TemplateField
    value: TemplateField

    def templates(self) -> list[Template]:
        return [self.header, self.value]


class BasicAuth(Strict):
    """HTTP Basic: ``Authorization: Basic base64(username:password)``. A key given as the
    username with an empty password is the usual form for API keys."""

    type: Literal["basic"]
    username: TemplateField
    password: TemplateField = Field(default_factory=lambda: compile_template(""))

    def templates(self) -> list[Template]:
        return [self.username, self.password]


class QueryAuth(Strict):
    """The credential as a query parameter; its value is masked wherever the URL is shown."""

    type: Literal["query"]
    name: Annotated[str, Field(pattern=NAME)]
    value: TemplateField

    def templates(self) -> list[Template]:
        return [self.value]


class RequestPart(Strict):
    """A part of the request as it is sent, in a signature's message: its ``method``, its
    ``path`` (percent-encoded, without the query), its ``body`` bytes, or its ``query``
    parameters (values decoded, ``exclude``d names left out, ``sort``ed by name, each written
    as ``pair`` with ``{name}`` and ``{value}``, joined by ``separator``)."""

    part: Literal["method", "path", "body", "query"]
    sort: bool = True
    pair: str = "{name}={value}"
    separator: str = "&"
    exclude: list[str] = Field(default_factory=list)


def _part_kind(value: Any) -> str:
    return "part" if isinstance(value, dict | RequestPart) else "text"


MessagePart = Annotated[
    Annotated[TemplateField, Tag("text")] | Annotated[RequestPart, Tag("part")],
    Discriminator(_part_kind),
]


class Signature(Strict):
    """A value computed over parts of each attempt's request (a keyed HMAC, or a plain hash),
    sent in a ``header`` or a ``query`` parameter and masked wherever the request is shown."""

    algorithm: Literal["hmac-sha256", "hmac-sha1", "hmac-sha512", "sha256", "sha1", "sha512"]
    key: TemplateField | None = None  # required for an HMAC
    message: list[MessagePart] = Field(min_length=1)
    encoding: Literal["hex", "hex-upper", "base64"] = "hex"
    header: HeaderName | None = None
    query: Annotated[str, Field(pattern=NAME)] | None = None

    @model_validator(mode="after")
    def _placed_and_keyed(self) -> Signature:
        if (self.header is None) == (self.query is None):
            raise ValueError("give exactly one of header or query: where the signature goes")
        if self.algorithm.startswith("hmac-") != (self.key is not None):
            raise ValueError("an hmac- algorithm needs a key, and a plain hash takes none")
        return self

    def templates(self) -> list[Template]:
        key = [self.key] if self.key is not None else []
        return key + [part for part in self.message if isinstance(part, Template)]

    @cached_property
    def names_credentials(self) -> bool:
        """Does the message name a credential (so each rendering needs them)?"""
        texts = [part for part in self.message if isinstance(part, Template)]
        return any(name.startswith("credentials.") for t in texts for name in t.names)


class TokenCall(Strict):
    """The request that fetches a token: its URL (another host may serve tokens), method,
    headers, and a ``form`` or JSON ``body``; where the token is in the answer (``token``,
    JMESPath: ``@`` for an answer that is the bare token) and how long it lives (``expires_in``,
    seconds, else ``lifetime_s``); where a rotated refresh token is (``new_refresh_token``);
    and a ``signature`` computed over it like the cancel's."""

    url: TemplateField
    method: Literal["POST", "GET"] = "POST"
    headers: dict[HeaderName, TemplateField] = Field(default_factory=dict)
    form: dict[str, TemplateField] | None = None
    body: StructureField = None
    basic: BasicAuth | None = None  # the client's own credentials as HTTP Basic
    token: Expression = Field(default_factory=lambda: compile_path("access_token"))
    expires_in: Expression | None = Field(default_factory=lambda: compile_path("expires_in"))
    lifetime_s: float = Field(default=3600.0, gt=0, le=366 * 86400)
    new_refresh_token: Expression | None = None
    signature: Signature | None = None

    @model_validator(mode="after")
    def _one_authorization(self) -> TokenCall:
        if self.basic is not None and any(n.lower() == "authorization" for n in self.headers):
            raise ValueError(
                "the token request's Authorization header carries the client's Basic "
                "credentials: leave it out of the headers"
            )
        return self

    def templates(self) -> list[Template]:
        found = [self.url, *self.headers.values(), *(self.form or {}).values()]
        found += structure_templates(self.body)
        found += self.signature.templates() if self.signature else []
        return found + (self.basic.templates() if self.basic else [])


class TokenAuth(Strict):
    """A token fetched before the call, cached per connection until shortly before it expires
    (fetched once for concurrent requests), sent as ``value`` (with ``{token}``) in ``header``
    or in the ``query`` parameter so named, and fetched again once when the provider refuses it
    (``provider_auth_failed``: a 401, or an answer the definition's rules call so).

    ``type: oauth2_client_credentials`` builds the OAuth2 token request from ``token_url``,
    ``client_id``, ``client_secret`` (``client_auth``: ``body`` or ``basic``), ``scope``,
    ``audience`` and ``extra`` form fields; ``type: oauth2_refresh_token`` builds the refresh
    grant from the same and ``refresh_token``; ``type: session`` takes the login request as
    ``login``, which may spend a ``refresh_token`` too. Where the answer carries a new refresh
    token (``new_refresh_token``), it replaces the one spent, in the store, so that every
    process sharing the store spends the newest and only one spends it."""

    type: Literal["oauth2_client_credentials", "oauth2_refresh_token", "session"]
    header: HeaderName = "Authorization"
    query: Annotated[str, Field(pattern=NAME)] | None = None
    value: TemplateField = Field(default_factory=lambda: compile_template("Bearer {token}"))
    # oauth2_client_credentials and oauth2_refresh_token
    token_url: TemplateField | None = None
    client_id: TemplateField | None = None
    client_secret: TemplateField | None = None
    client_auth: Literal["body", "basic"] = "body"
    scope: str | None = None
    audience: str | None = None
    extra: dict[str, TemplateField] = Field(default_factory=dict)
    token_headers: dict[HeaderName, TemplateField] = Field(default_factory=dict)
    token_signature: Signature | None = None  # the token request's own, when it is signed
    # The refresh token configured for the connection: where the chain of refresh tokens starts.
    refresh_token: TemplateField | None = None
    # session
    login: TokenCall | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_value_in_query(cls, data: Any) -> Any:
        # A token in a query parameter is the bare token unless a value says otherwise.
        if isinstance(data, dict) and data.get("query") is not None and "value" not in data:
            return {**data, "value": "{token}"}
        return data

    @model_validator(mode="after")
    def _complete(self) -> TokenAuth:
        if self.type == "session" and self.login is None:
            raise ValueError("a session auth needs its login request (login)")
        if self.type != "session" and None in (self.token_url, self.client_id):
            raise ValueError(f"{self.type} needs token_url and client_id")
        if self.type == "oauth2_client_credentials" and self.client_secret is None:
            raise ValueError("oauth2_client_credentials needs client_secret")
        if self.type == "oauth2_refresh_token" and self.refresh_token is None:
            raise ValueError("oauth2_refresh_token needs refresh_token (naming a credential)")
        return self

    @cached_property
    def token_call(self) -> TokenCall:
        """The request that fetches the token."""
        if self.login is not None:
            return self.login
        assert self.token_url is not None
        assert self.client_id is not None
        if self.type == "oauth2_refresh_token":
            form = {
                "grant_type": compile_template("refresh_token"),
                "refresh_token": compile_template("{refresh_token}"),
            }
            rotated: Expression | None = compile_path("refresh_token")
        else:
            form = {"grant_type": compile_template("client_credentials")}
            rotated = None
        if self.scope:
            form["scope"] = compile_template(_literal(self.scope))
        if self.audience:
            form["audience"] = compile_template(_literal(self.audience))
        form.update(self.extra)
        basic = None
        secret = self.client_secret or compile_template("")
        if self.client_auth == "basic":
            basic = BasicAuth(type="basic", username=self.client_id, password=secret)
        else:
            form["client_id"] = self.client_id
            if self.client_secret is not None:
                form["client_secret"] = self.client_secret
        return TokenCall(
            url=self.token_url,
            headers=self.token_headers,
            form=form,
            basic=basic,
            new_refresh_token=rotated,
            signature=self.token_signature,
        )

    def templates(self) -> list[Template]:
        own = [self.refresh_token] if self.refresh_token is not None else []
        return [self.value, *own, *self.token_call.templates()]


def _literal(text: str) -> str:
    """``text`` as a template that renders it as written."""
    return text.replace("{", "{{").replace("}", "}}")


def _auth_type(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type", "header")
    elif isinstance(value, Strict):
        kind = getattr(value, "type", None)
    else:
        return None  # not a mapping: pydantic says so
    fetched = ("oauth2_client_credentials", "oauth2_refresh_token", "session")
    return "token" if kind in fetched else str(kind)


Auth = Annotated[
    Annotated[HeaderAuth, Tag("header")]
    | Annotated[BasicAuth, Tag("basic")]
    | Annotated[QueryAuth, Tag("query")]
    | Annotated[TokenAuth, Tag("token")],
    Discriminator(
        _auth_type,
        custom_error_type="auth_type",
        custom_error_message="must be a mapping whose type is one of header, basic, query, "
        "oauth2_client_credentials, oauth2_refresh_token, session",
    ),
]
