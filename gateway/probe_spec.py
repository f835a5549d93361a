"""A status probe (a resource's ``probe:``, CONTRACT §10): a read of the object's state, with
the connection's auth, made after an attempt whose fate is unknown (a timeout, a reset, a 5xx
after sending) and before any repeat. Its answer is ``cancelled``, ``not_cancelled``,
``not_found`` or ``pending``; anything else leaves the outcome as it was.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from gateway.answers import Extract
from gateway.fields import (
    Expression,
    HeaderName,
    Strict,
    StructureField,
    TemplateField,
    absolute_path,
)
from gateway.translate.templates import Template, structure_templates

ProbeKind = Literal["cancelled", "not_cancelled", "not_found", "pending"]


class Probe(Strict):
    method: Literal["GET", "POST"] = "GET"
    path: Annotated[TemplateField, AfterValidator(absolute_path)]
    headers: dict[HeaderName, TemplateField] = Field(default_factory=dict)
    query: dict[str, TemplateField] = Field(default_factory=dict)
    body: StructureField = None
    status: list[int] = Field(default_factory=lambda: list(range(200, 300)))  # an answer
    cancelled: Expression  # truthy on an answer: the object is cancelled
    pending: Expression | None = None  # truthy: the provider is still cancelling it
    # Truthy: not cancelled (a repeat is safe); without it, any other answer means so.
    not_cancelled: Expression | None = None
    not_found: list[int] = Field(default_factory=lambda: [404])
    extract: Extract = Field(default_factory=Extract)

    def templates(self, where: str) -> list[tuple[str, Template]]:
        found = [(f"{where}.probe.path", self.path)]
        found += [(f"{where}.probe.headers.{n}", t) for n, t in self.headers.items()]
        found += [(f"{where}.probe.query.{n}", t) for n, t in self.query.items()]
        return found + [(f"{where}.probe.body", t) for t in structure_templates(self.body)]
