"""What crosses the wire to a provider and back, as plain values without I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from gateway.redact import REDACTED


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str  # already percent-encoded: sent as is, never re-quoted or normalised
    headers: tuple[tuple[str, str], ...]
    body: bytes | None = None
    # Header names whose values are credentials: masked wherever the request is shown.
    secret_headers: frozenset[str] = field(default_factory=frozenset)

    def __repr__(self) -> str:  # credentials never appear in a repr
        return (
            f"UpstreamRequest(method={self.method!r}, url={self.url!r}, "
            f"headers={self.shown_headers()!r}, body={self.body!r})"
        )

    def with_header(self, name: str, value: str) -> UpstreamRequest:
        """The same request with header ``name`` (any case) set to ``value``."""
        lowered = name.lower()
        kept = tuple((n, v) for n, v in self.headers if n.lower() != lowered)
        return replace(self, headers=(*kept, (name, value)))

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
