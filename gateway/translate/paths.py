"""JMESPath expressions of a definition, compiled once. Most are a plain chain of fields or such
a chain compared with a literal: those are looked up directly (``FieldChain``, ``FieldEquals``),
with the answers JMESPath's interpreter gives at many times the cost."""

from __future__ import annotations

from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from gateway._compat import field_comparison, field_keys


class FieldChain(ParsedResult):
    """A plain chain of fields (``procurement.updated_at``), most of what definitions say:
    looked up directly, with the answer JMESPath's interpreter gives at many times the cost."""

    def __init__(self, expression: str, parsed: Any, keys: tuple[str, ...]) -> None:
        super().__init__(expression, parsed)
        self.keys = keys

    def search(self, value: Any, options: Any = None) -> Any:
        for key in self.keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value


class FieldEquals(ParsedResult):
    """A field chain compared with a literal (``status == 'cancelled'``), the usual success
    test: JMESPath's equality, where ``true`` equals neither ``1`` nor anything but a boolean."""

    def __init__(
        self, expression: str, parsed: Any, keys: tuple[str, ...], literal: Any, equal: bool
    ) -> None:
        super().__init__(expression, parsed)
        self.chain = FieldChain(expression, parsed, keys)
        self.literal = literal
        self.equal = equal

    def search(self, value: Any, options: Any = None) -> Any:
        found = self.chain.search(value)
        same = (type(found) is bool) is (type(self.literal) is bool) and found == self.literal
        return same is self.equal


def compile_path(value: Any) -> ParsedResult:
    """A definition's JMESPath, compiled once: the common shapes as their fast forms."""
    if isinstance(value, ParsedResult):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a JMESPath expression (a string)")
    try:
        compiled = jmespath.compile(value)
    except JMESPathError as exc:
        raise ValueError(f"invalid JMESPath expression {value!r}: {exc}") from exc
    parsed = compiled.parsed
    keys = field_keys(parsed)
    if keys is not None:
        return FieldChain(value, parsed, tuple(keys))
    comparison = field_comparison(parsed)
    if comparison is not None:
        keys, literal, equal = comparison
        return FieldEquals(value, parsed, tuple(keys), literal, equal)
    return compiled
