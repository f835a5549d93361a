"""A status probe (a resource's ``probe:``, CONTRACT §10): a read of the object's state, with
the connection's auth, made after an attempt whose fate is unknown (a timeout, a reset, a 5xx
after sending) and before any repeat. Its answer is ``cancelled``, ``not_cancelled``,
``not_found`` or ``pending``; anything else leaves the outcome as it was.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.answers import Extract
from gateway.fields import Expression
from gateway.read_spec import ObjectRead

ProbeKind = Literal["cancelled", "not_cancelled", "not_found", "pending"]
# A probe's request may name what the cancel's answer gave (a job's id): ``{answer.<name>}``
# for each name of the resource's ``extract.provider_response``.
ANSWER_PREFIX = "answer."


class Probe(ObjectRead):
    part = "probe"
    cancelled: Expression  # truthy on an answer: the object is cancelled
    pending: Expression | None = None  # truthy: the provider is still cancelling it
    # Truthy: not cancelled (a repeat is safe); without it, any other answer means so.
    not_cancelled: Expression | None = None
    not_found: list[int] = Field(default_factory=lambda: [404])
    extract: Extract = Field(default_factory=Extract)
