"""A definition's proof: ``examples:`` of the provider's documented answers (and the outcome
each must give) and documented requests (a canonical input and the exact request it must
produce, generated values pinned). ``check-config`` refuses a definition whose examples fail,
and ``cancel-gateway test-provider FILE`` prints each example, expected and got.

An error rule no answer example matches is reported as a warning: a rule nobody has seen
work (a JMESPath that points nowhere makes an "already cancelled" answer silently
``rejected``) is the mistake examples exist to catch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator

from gateway.fields import Strict
from gateway.models import CancelRequest

EXAMPLE_NOW = datetime(2026, 1, 1, tzinfo=UTC)  # an answer example's "now" (Retry-After dates)


class AnswerExpectation(Strict):
    # ``read``: an answer to a resource's read that gives its values (``provider_response``);
    # for a probe's answer, what it says of the object (``unknown``: nothing definite).
    status: Literal[
        "cancelled",
        "already_cancelled",
        "rejected",
        "failed",
        "pending",
        "read",
        "not_cancelled",
        "not_found",
        "unknown",
    ]
    code: str | None = None  # the error code; absent: none expected (a success)
    provider_code: str | None = None
    cancelled_at: str | None = None
    provider_response: dict[str, Any] | None = None  # the fields expected, at least
    retry_after_s: float | None = None


class AnswerExample(Strict):
    """A documented answer: its HTTP status, headers and body (JSON, or ``text``)."""

    name: str
    resource: str | None = None
    read: bool = False  # an answer to the resource's read, not to its cancel
    probe: bool = False  # an answer to the resource's status probe
    status: int = Field(ge=100, le=599)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    text: str | None = None
    expect: AnswerExpectation
    source: str = ""  # where the provider documents it

    def raw(self) -> bytes:
        if self.text is not None:
            return self.text.encode()
        return b"" if self.body is None else orjson.dumps(self.body)


class RequestExpectation(Strict):
    method: str
    url: str
    headers: dict[str, str] = Field(default_factory=dict)  # the headers expected, at least
    body: Any = None  # JSON, compared as values; ``null``: no body
    form: dict[str, str] | None = None  # a form body, compared as fields


class ExampleConnection(Strict):
    """The connection a request example is built for (made-up values, never real ones)."""

    base_url: str | None = None
    credentials: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)


class RequestExample(Strict):
    """A documented request: the canonical input (without ``connection``) and the request it
    must produce."""

    name: str
    request: dict[str, Any]
    connection: ExampleConnection = Field(default_factory=ExampleConnection)
    now: datetime = EXAMPLE_NOW
    uuid: str = "00000000-0000-4000-8000-000000000000"
    # For a resource that reads first: the values its read gave (``{read.<name>}``), pinned.
    read: dict[str, Any] | None = None
    expect: RequestExpectation
    source: str = ""

    @field_validator("now")
    @classmethod
    def _utc(cls, now: datetime) -> datetime:
        """A time written without an offset is UTC (as the providers' clocks are read)."""
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)

    def canonical(self) -> CancelRequest:
        return CancelRequest.model_validate({"connection": "example", **self.request})


class Examples(Strict):
    answers: list[AnswerExample] = Field(default_factory=list)
    requests: list[RequestExample] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Checked:
    """One example run: what it expected, what came, and whether they agree."""

    kind: Literal["answer", "request"]
    name: str
    expected: str
    got: str
    ok: bool
