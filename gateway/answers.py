"""How a definition reads its provider's answers: what a success looks like
(``success``, ``already_cancelled``), what to keep of it (``extract``), and what an error means
(``errors``: where its code, type and message are, the rules that map them to the contract's
outcomes, and where the provider says when to come back).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gateway.fields import Expression, Strict

# Outcomes a provider's answer can be classified as: the provider-side codes of the contract.
ProviderOutcome = Literal[
    "already_cancelled",
    "invalid_request",
    "not_found",
    "not_cancellable",
    "provider_rejected",
    "provider_auth_failed",
    "provider_misconfigured",
    "provider_error",
    "provider_bad_response",
    "provider_unavailable",
    "provider_timeout",
    "rate_limited",
    "idempotency_in_progress",
]


class Success(Strict):
    status: list[int] = Field(default_factory=lambda: list(range(200, 300)))
    when: Expression | None = None  # truthy on the parsed body
    require_json: bool = True


class AlreadyCancelled(Strict):
    status: list[int] = Field(default_factory=lambda: list(range(200, 300)))
    when: Expression


class Pending(Strict):
    """An answer that accepts the cancellation and finishes it later (a job id, a 202, a
    "submitted" state): the envelope says ``pending`` and the status probe settles it."""

    status: list[int] = Field(default_factory=lambda: list(range(200, 300)))
    when: Expression | None = None  # truthy on the parsed body; unset: any answer of ``status``


class Extract(Strict):
    cancelled_at: Expression | None = None
    provider_response: dict[str, Expression] = Field(default_factory=dict)


MatchValue = str | int | list[str | int]


class RuleMatch(Strict):
    status: int | list[int] | None = None
    code: MatchValue | None = None
    type: MatchValue | None = None
    message: MatchValue | None = None
    body: Expression | None = None  # JMESPath, truthy on the answer (``data.errors[0]``)

    @model_validator(mode="after")
    def _not_empty(self) -> RuleMatch:
        given = (self.status, self.code, self.type, self.message, self.body)
        if all(value is None for value in given):
            raise ValueError(
                "a rule must match on at least one of status, code, type, message, body"
            )
        return self


class Rule(Strict):
    when: RuleMatch
    outcome: ProviderOutcome
    note: str = ""  # where the rule comes from in the provider's documents


class RetryHint(Strict):
    """A provider's word on when to come back: a ``header`` or a JMESPath into the ``body``,
    read as seconds or milliseconds to wait, a unix time in seconds or milliseconds, or an
    HTTP date."""

    header: str | None = None
    body: Expression | None = None
    unit: Literal["seconds", "milliseconds", "unix", "unix_ms", "http_date"] = "seconds"

    @model_validator(mode="after")
    def _one_source(self) -> RetryHint:
        if (self.header is None) == (self.body is None):
            raise ValueError("give exactly one of header or body")
        return self


class Errors(Strict):
    """Where a provider puts its error details, and what they mean.

    ``code``, ``type`` and ``message`` are JMESPath expressions over the error body (use
    ``a || b`` for alternatives). Rules are tried in order; strings compare case-insensitively.
    With no rule matching, the contract's generic table by HTTP status applies.
    """

    code: Expression | None = None
    type: Expression | None = None
    message: Expression | None = None
    rules: list[Rule] = Field(default_factory=list)
    # Where the provider says when to come back, tried in order before Retry-After.
    retry_after: list[RetryHint] = Field(default_factory=list)
