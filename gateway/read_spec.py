"""A read before the cancel (a resource's ``read:``): a request, with the connection's auth and
signature, whose answer gives values the cancel needs (the object's current ``version``, its
line numbers). Its values are ``{read.<name>}`` in the cancel's request; it is made again
before every attempt, so a repeat after a conflict sends what the provider holds now.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field

from gateway.fields import (
    NAME,
    Expression,
    HeaderName,
    Strict,
    StructureField,
    TemplateField,
    absolute_path,
    request_parts,
)
from gateway.translate.templates import Template

READ_PREFIX = "read."


class ObjectRead(Strict):
    """A request that reads the object (a resource's ``read:`` or ``probe:``), and the
    answers that describe it (``status``, default any 2xx)."""

    part: ClassVar[str]  # its key in the resource
    method: Literal["GET", "POST"] = "GET"
    path: Annotated[TemplateField, AfterValidator(absolute_path)]
    headers: dict[HeaderName, TemplateField] = Field(default_factory=dict)
    query: dict[str, TemplateField] = Field(default_factory=dict)
    body: StructureField = None
    status: list[int] = Field(default_factory=lambda: list(range(200, 300)))

    def templates(self, where: str) -> list[tuple[str, Template]]:
        where = f"{where}.{self.part}"
        return request_parts(where, self.path, self.headers, self.query, self.body)


class Read(ObjectRead):
    part = "read"
    # The answer that gives the values (``status``, and ``when`` truthy when given); any
    # other is classified with the resource's error rules, as a cancel's answer would be.
    when: Expression | None = None
    values: dict[Annotated[str, Field(pattern=NAME)], Expression] = Field(min_length=1)
    # Truthy on an answer that shows the object already cancelled: nothing more is sent.
    already_cancelled: Expression | None = None
    # The provider's codes (as ``errors.code`` reads them) for "the object changed since it was
    # read" (a version conflict): the attempt is repeated, read included, as one never applied.
    stale: list[str] = Field(default_factory=list)

    def is_stale(self, code: str | None) -> bool:
        return code is not None and code.casefold() in {c.casefold() for c in self.stale}

    def names(self) -> frozenset[str]:
        """What the cancel's request may name: ``read.<value>``."""
        return frozenset(READ_PREFIX + name for name in self.values)
