"""Reading the configuration's and the provider definitions' YAML: a mapping, keys given
once, and anchors and aliases that may share a block but not multiply it (no "billion laughs"),
every problem reported at its line and column."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import yaml

from gateway.problems import Problem

# Anchors and aliases let a few hundred bytes stand for billions of values ("billion laughs"):
# composing is cheap, as an alias is the anchored node itself, but everything after it
# (substitution, validation, each request's body) walks the tree written out. So a file may
# reuse anchored blocks, but its aliases may add at most this many nodes to it...
MAX_ALIAS_NODES = 10_000
# ...and no file nests deeper than this, aliases included: the reader and the checks recurse.
MAX_DEPTH = 64


class _UniqueKeyLoader(yaml.composer.Composer, yaml.CSafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (YAML keeps the last), an
    alias inside the node it names, and aliases or nesting beyond the bounds above.

    libyaml (``CSafeLoader``) reads the text into events, six times faster than PyYAML's own
    reader; PyYAML's ``Composer``, first in line, builds the nodes from them, so that every
    node passes through ``compose_node`` below (libyaml's composer would not call it)."""

    def __init__(self, stream: str) -> None:
        yaml.CSafeLoader.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        self._measured: dict[int, tuple[int, int]] = {}  # id(node): (nodes, depth) written out
        self._open: set[str] = set()  # anchors of the nodes being composed
        self._added = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = cast(yaml.NodeEvent, self.peek_event())  # compose_node is only called at a node
        if isinstance(event, yaml.AliasEvent):
            self._check_alias(event)
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise _refusal(f"nested deeper than {MAX_DEPTH} levels", event)
        if event.anchor is not None:
            self._open.add(event.anchor)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.discard(event.anchor or "")

    def _check_alias(self, event: yaml.AliasEvent) -> None:
        node = self.anchors.get(event.anchor or "")
        if node is None:
            return  # YAML reports the undefined alias
        if event.anchor in self._open:
            raise _refusal(f"alias *{event.anchor} is inside the node it names", event)
        nodes, depth = self._measure(node)
        if self._depth + depth > MAX_DEPTH:
            raise _refusal(f"nested deeper than {MAX_DEPTH} levels, aliases written out", event)
        self._added += nodes
        if self._added > MAX_ALIAS_NODES:
            raise _refusal(
                f"aliases expand this file by more than {MAX_ALIAS_NODES} values "
                "(an anchored block may be reused, not multiplied)",
                event,
            )

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        """How many nodes ``node`` stands for, and how deep, with its aliases written out.

        Each node is measured once: an anchored block reused many times costs one walk.
        """
        known = self._measured.get(id(node))
        if known is not None:
            return known
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        sizes = [self._measure(child) for child in children]
        found = (1 + sum(n for n, _ in sizes), 1 + max((d for _, d in sizes), default=0))
        self._measured[id(node)] = found
        return found


def _refusal(message: str, event: yaml.Event) -> yaml.YAMLError:
    return yaml.composer.ComposerError(None, None, message, event.start_mark)  # type: ignore[arg-type]


_MERGE = "tag:yaml.org,2002:merge"
_UNCONVERTIBLE = "holds a value YAML cannot convert (a number too long, a date that does not exist)"


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    """A mapping whose own keys are scalars, each given once; keys merged in with ``<<`` may
    be given again, which is what a merge is for."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be text or a number", key_node.start_mark
            )
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path, problems: list[Problem]) -> Any:
    """The file's mapping, or None with the problem added."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(path), "", f"cannot read: {unreadable(exc)}"))
        return None
    return parse_yaml(text, str(path), problems)


def parse_yaml(text: str, name: str, problems: list[Problem]) -> Any:
    """``text`` as a YAML mapping, or None with the problem added (at its line and column)."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a safe loader (SafeConstructor)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = str(getattr(exc, "problem", None) or exc)
        if problem == "exceeded maximum nesting depth":  # libyaml's own bound, met first
            problem = f"nested deeper than {MAX_DEPTH} levels"
        problems.append(Problem(name, where, problem))
        return None
    except (ValueError, TypeError, OverflowError):  # PyYAML's own converters, on odd values
        problems.append(Problem(name, "YAML", _UNCONVERTIBLE))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(name, "", "must be a YAML mapping"))
        return None
    return data


def unreadable(exc: OSError | UnicodeDecodeError) -> str:
    """Why a file could not be read, in a few words."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return exc.strerror or str(exc)
