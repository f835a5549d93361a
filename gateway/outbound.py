"""One cancellation on its way out (``Outbound``: where it goes and what is sent) and how one
attempt of it ended (``Tried``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.resilience import Policy
from gateway.targets import Target
from gateway.translate.build import Reader
from gateway.translate.classify import Outcome
from gateway.translate.wire import UpstreamRequest

# An attempt is not started with less of the budget left than this: it could only time out,
# with its outcome unknown.
MIN_ATTEMPT_S = 0.01


@dataclass(frozen=True, slots=True)
class Tried:
    """How an attempt that was made ended. (One the local guards refused is a GatewayError:
    nothing was sent.)"""

    outcome: Outcome
    status: int | None = None  # the provider's HTTP status, None without an answer
    sent: bool = False  # may the request have reached the provider?
    unreadable: bool = False  # an answer came that could not be read (too large, not HTTP)
    failed: bool = False  # counts against the breaker: no answer, or a 5xx
    final: bool = False  # nothing repeating could change (the token endpoint said no)
    cached_token: str | None = None  # the cached token it was sent with (worth renewing)
    stale: bool = False  # the provider says the object changed since it was read: read again
    url: str | None = None  # the attempt's URL as shown (each attempt may be built anew)

    def event(self, at: float, request: UpstreamRequest, latency_ms: float) -> dict[str, Any]:
        """The attempt as an event of its cancellation (``GET …/{id}/events``)."""
        code = self.outcome.code
        return {
            "at": at,
            "type": "attempt",
            "method": request.method,
            "url": self.url or request.shown_url,
            "status": self.status,
            "error_code": code.value if code else None,
            "latency_ms": latency_ms,
        }


@dataclass(frozen=True, slots=True)
class Outbound:
    """One cancellation on its way out: where it goes and what is sent."""

    target: Target
    resource: str
    policy: Policy
    request: UpstreamRequest
    # For a definition with values made anew for each attempt (a time, a UUID, a signature
    # over them): the request as the next attempt sends it.
    rebuild: Callable[[], UpstreamRequest] | None = None
    # For a resource that reads before it cancels: the read, and the cancel made from it.
    reader: Reader | None = None
    reading: bool = False  # this is the read: its answer is classified as one
    probing: bool = False  # this is a status probe: its answer is classified as one

    def for_attempt(self, attempt: int) -> UpstreamRequest:
        if attempt == 1 or self.rebuild is None:
            return self.request
        return self.rebuild()

    @property
    def title(self) -> str:
        return self.target.definition.title or self.target.definition.name
