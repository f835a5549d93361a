"""The definition format's building blocks: a strict, frozen model, and fields that compile
as they validate (a template, a structure of templates, a JMESPath expression)."""

from __future__ import annotations

from typing import Annotated, Any

from jmespath.parser import ParsedResult
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from gateway.translate.paths import compile_path
from gateway.translate.templates import (
    HEADER_NAME,
    Body,
    Template,
    TemplateError,
    compile_structure,
    compile_template,
    structure_templates,
)


def _template(value: Any) -> Template:
    if isinstance(value, Template):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a string template")
    try:
        return compile_template(str(value))
    except TemplateError as exc:
        raise ValueError(str(exc)) from exc


NAME = HEADER_NAME.pattern  # a header's or a query parameter's name
HeaderName = Annotated[str, Field(pattern=NAME)]  # refused at load, not at send


def structure(value: Any) -> Body:
    try:
        return compile_structure(value)
    except TemplateError as exc:
        raise ValueError(str(exc)) from exc


TemplateField = Annotated[Template, BeforeValidator(_template)]
StructureField = Annotated[Any, BeforeValidator(structure)]
# Written back as its text (a definition shown, a rule named in a warning).
Expression = Annotated[
    ParsedResult, BeforeValidator(compile_path), PlainSerializer(lambda p: p.expression)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


def absolute_path(template: Template) -> Template:
    # The path is appended to the base URL: one that does not start with "/" would let the
    # first value it holds (a caller's id) extend the host the credentials are sent to.
    if not template.source.startswith("/"):
        raise ValueError("must start with / (it is appended to the base URL)")
    return template


def request_parts(
    where: str,
    path: Template,
    headers: dict[str, Template],
    query: dict[str, Template],
    body: Any,
) -> list[tuple[str, Template]]:
    """The templates of a request (its path, headers, query, body), each with where it is."""
    found = [(f"{where}.path", path)]
    found += [(f"{where}.headers.{name}", t) for name, t in headers.items()]
    found += [(f"{where}.query.{name}", t) for name, t in query.items()]
    return found + [(f"{where}.body", t) for t in structure_templates(body)]
