"""What crosses the wire to a provider and back, as plain values without I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote

import orjson

from gateway.redact import REDACTED


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str  # already percent-encoded: sent as is, never re-quoted or normalised
    headers: tuple[tuple[str, str], ...]
    body: bytes | None = None
    # Header names (lower case) and query parameter names whose values are credentials or
    # signatures: masked wherever the request is shown (envelopes, logs, previews).
    secret_headers: frozenset[str] = field(default_factory=frozenset)
    secret_query: frozenset[str] = field(default_factory=frozenset)
    # A signature over the fetched token is computed once the token is in place: this signs
    # the request given the token (see ``gateway/tokens.py``).
    sign_with_token: Callable[[UpstreamRequest, str], UpstreamRequest] | None = field(
        default=None, compare=False
    )

    def __repr__(self) -> str:  # credentials never appear in a repr
        return (
            f"UpstreamRequest(method={self.method!r}, url={self.shown_url!r}, "
            f"headers={self.shown_headers()!r}, body={self.body!r})"
        )

    @property
    def shown_url(self) -> str:
        """The URL with the values of its secret query parameters masked."""
        if not self.secret_query:
            return self.url
        base, _, query = self.url.partition("?")
        pairs = (pair.partition("=") for pair in query.split("&"))
        shown = (
            f"{name}={REDACTED}" if unquote(name) in self.secret_query else name + eq + value
            for name, eq, value in pairs
        )
        return f"{base}?{'&'.join(shown)}"

    def shown_body(self) -> object | None:
        """The body as a preview shows it: a form's fields as a mapping, else its JSON value
        (or its text, should it be neither). A body never holds a credential."""
        if self.body is None:
            return None
        kind = next((v for n, v in self.headers if n.lower() == "content-type"), "")
        if kind.startswith("application/x-www-form-urlencoded"):
            return dict(parse_qsl(self.body.decode(), keep_blank_values=True))
        try:
            shown: object = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return self.body.decode("utf-8", "replace")
        return shown

    def with_secret_header(self, name: str, value: str) -> UpstreamRequest:
        """``name`` set to a value that is a credential or a signature."""
        lowered = name.lower()
        return self._copy(
            headers=self._headers_with(lowered, name, value),
            secret_headers=self.secret_headers | {lowered},
        )

    def with_secret_query(self, name: str, value: str) -> UpstreamRequest:
        """A query parameter added whose value is a credential or a signature."""
        pair = f"{quote(name, safe='')}={quote(value, safe='')}"
        url = f"{self.url}{'&' if '?' in self.url else '?'}{pair}"
        return self._copy(url=url, secret_query=self.secret_query | {name})

    def with_header(self, name: str, value: str) -> UpstreamRequest:
        """The same request with header ``name`` (any case) set to ``value``."""
        return self._copy(headers=self._headers_with(name.lower(), name, value))

    def _headers_with(self, lowered: str, name: str, value: str) -> tuple[tuple[str, str], ...]:
        kept = tuple((n, v) for n, v in self.headers if n.lower() != lowered)
        return (*kept, (name, value))

    def _copy(
        self,
        *,
        url: str | None = None,
        headers: tuple[tuple[str, str], ...] | None = None,
        secret_headers: frozenset[str] | None = None,
        secret_query: frozenset[str] | None = None,
    ) -> UpstreamRequest:
        """The same request with the given parts changed: built directly, several times
        cheaper than ``dataclasses.replace`` on every request that is signed or given a
        token."""
        return UpstreamRequest(
            self.method,
            self.url if url is None else url,
            self.headers if headers is None else headers,
            self.body,
            self.secret_headers if secret_headers is None else secret_headers,
            self.secret_query if secret_query is None else secret_query,
            self.sign_with_token,
        )

    def shown_headers(self) -> dict[str, str]:
        return {
            name: (REDACTED if name.lower() in self.secret_headers else value)
            for name, value in self.headers
        }


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
