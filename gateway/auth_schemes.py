"""How a definition says a request carries its credentials: in a header, as HTTP Basic, in a
query parameter (``auth``), and with a computed ``signature``. ``translate/auth.py`` and
``translate/sign.py`` render them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from gateway.fields import NAME, Strict, TemplateField
from gateway.translate.templates import Template, compile_template


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


def _auth_type(value: Any) -> str:
    return str(value.get("type", "header")) if isinstance(value, dict) else str(value.type)


Auth = Annotated[
    Annotated[HeaderAuth, Tag("header")]
    | Annotated[BasicAuth, Tag("basic")]
    | Annotated[QueryAuth, Tag("query")],
    Discriminator(_auth_type),
]


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
    header: Annotated[str, Field(pattern=NAME)] | None = None
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
