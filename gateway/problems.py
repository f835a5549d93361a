"""Configuration problems, each located as ``file: key.path: message``."""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Set
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class Problem:
    file: str
    loc: str
    message: str

    def __str__(self) -> str:
        if self.loc:
            return f"{self.file}: {self.loc}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(Exception):
    """Everything wrong with a configuration, reported at once."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def suggest(
    name: str, known: Iterable[str], label: str = "known", among: Iterable[str] | None = None
) -> str:
    """``did you mean x? known: a, b``: the closest of ``known`` (or of ``among``) when one
    is close, then all of ``known``."""
    options = sorted(set(known))
    close = difflib.get_close_matches(name, sorted(set(among or options)), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{hint}{label}: {', '.join(options) or 'none'}"


def validation_problems(
    model: type[BaseModel], exc: ValidationError, file: str, skip: Set[tuple[str, ...]]
) -> list[Problem]:
    """Each of pydantic's errors as a problem; an unknown key names the keys it could be."""
    found = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = tuple(str(p) for p in error["loc"])
        if loc in skip:
            continue  # already reported as an unset variable
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown key ({suggest(loc[-1], _keys_at(model, loc[:-1]))})"
        found.append(Problem(file, ".".join(loc), message))
    return found


def _keys_at(model: type[BaseModel], path: tuple[str, ...]) -> list[str]:
    """The keys the mapping at ``path`` may hold, following the model's field types through
    lists (an index) and dicts (a key)."""
    kind: Any = model
    for part in path:
        kind = _unwrapped(kind)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            field = _fields(kind).get(part)
            if field is None:
                return []
            kind = field.annotation
        elif get_origin(kind) in (list, dict):
            kind = get_args(kind)[-1]
        else:
            return []
    kind = _unwrapped(kind)
    return list(_fields(kind)) if isinstance(kind, type) and issubclass(kind, BaseModel) else []


def _fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by the keys a file writes (``async`` for a field named otherwise)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _unwrapped(kind: Any) -> Any:
    """``X`` of ``Annotated[X, ...]`` and of ``X | None``."""
    while True:
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        elif get_origin(kind) in (Union, types.UnionType):
            members = [a for a in get_args(kind) if a is not type(None)]
            if len(members) != 1:
                return kind
            kind = members[0]
        else:
            return kind


M = TypeVar("M", bound=BaseModel)


def validate(
    model: type[M],
    raw: Any,
    file: str,
    problems: list[Problem],
    skip: Set[tuple[str, ...]] = frozenset(),
) -> M | None:
    """``raw`` as ``model``, or None with its problems added (those under ``skip`` left out)."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems.extend(validation_problems(model, exc, file, skip))
        return None
