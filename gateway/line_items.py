"""How a resource cancels single lines of an object (a request's ``items``): a list rendered
into its one request (``mode: list``), or one request per line (``mode: each``).

In a request's templates, ``{items}`` is the rendered list (a lone placeholder in the body, so
it stays a JSON list), and ``{item.id}``, ``{item.quantity}`` and ``{item.index}`` (from 0) are
one line's values: in ``template`` for a list, in the request itself for one request per line.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gateway.fields import Strict, StructureField
from gateway.translate.templates import Template, structure_templates

ITEM_NAMES = frozenset({"item.id", "item.quantity", "item.index"})
LIST_NAME = "items"
LINE_NAMES = ITEM_NAMES | {LIST_NAME}
MAX_ITEMS = 500  # CONTRACT §11: a request names 1 to 500 lines


class Lines(Strict):
    """A resource's ``items:``."""

    mode: Literal["list", "each"]
    template: StructureField = None  # one line in the list (mode: list)
    quantity: Literal["required", "optional"] = "optional"
    required: bool = False  # may a request leave out ``items`` (cancel the whole object)?
    max: int = Field(default=MAX_ITEMS, ge=1, le=MAX_ITEMS)
    concurrency: int = Field(default=4, ge=1, le=32)  # requests in flight at once (mode: each)

    @model_validator(mode="after")
    def _template_for_a_list(self) -> Lines:
        if (self.mode == "list") != (self.template is not None):
            raise ValueError(
                "mode: list renders each line with `template`; mode: each takes none (the "
                "request itself names {item.id})"
            )
        return self

    def templates(self) -> list[Template]:
        return list(structure_templates(self.template))


def lines_problems(
    lines: Lines | None,
    located: list[tuple[str, Template]],
    body: object,
    where: str,
) -> list[tuple[str, str]]:
    """What is wrong with where a resource's templates name lines: ``located`` are its request
    and default templates, ``body`` its body as written."""
    found: list[tuple[str, str]] = []
    uses_list = [loc for loc, t in located if LIST_NAME in t.names]
    uses_item = [loc for loc, t in located if ITEM_NAMES & set(t.names)]
    if lines is None:
        found += [(loc, "{items} needs the resource's `items:` (mode: list)") for loc in uses_list]
        found += [(loc, "{item.*} needs the resource's `items:` (mode: each)") for loc in uses_item]
        return found
    if lines.mode == "list":
        found += [
            (loc, "{item.*} is one line's value: use it in items.template, and {items} here")
            for loc in uses_item
        ]
        if not _lone_items(body):
            found.append(
                (f"{where}.body", 'a list of lines goes in the body as a lone "{items}" value')
            )
        found += [
            (f"{where}.items.template", "a line's template names a line's values, not {items}")
            for t in lines.templates()
            if LIST_NAME in t.names
        ]
        if not any("item.id" in t.names for t in lines.templates()):
            found.append((f"{where}.items.template", "a line's template must name {item.id}"))
    else:
        found += [(loc, "{items} is a list's (mode: list)") for loc in uses_list]
        if not uses_item or not any("item.id" in t.names for _, t in located):
            found.append((f"{where}", "one request per line must name {item.id} in its request"))
    return found


def _lone_items(body: object) -> bool:
    """Does the body hold ``"{items}"`` as a value of its own, somewhere?"""
    if isinstance(body, Template):
        return body.source == "{items}"
    if isinstance(body, dict):
        return any(_lone_items(v) for v in body.values())
    if isinstance(body, list):
        return any(_lone_items(v) for v in body)
    return False
