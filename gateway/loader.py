"""Read a configuration file and everything it names, and report every problem at once.

Each problem is reported as ``file: key.path: message`` and never shows a secret's value. The
result, ``Runtime``, is everything the server needs: resolved connections (``Target``),
callers, the provider definitions and the set of secret values the logs must never show.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ValidationError

from gateway.config import ConnectionConfig, GatewayConfig
from gateway.definition import ProviderDefinition
from gateway.problems import ConfigError, Problem, validation_problems
from gateway.providers import builtin_files
from gateway.resilience import Policy
from gateway.targets import Target, check_callers, resolve_target

# ${NAME} or ${NAME:-default}; a default may hold one level of braces (a URL template).
_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\{[^{}]*\})*))?\}")
M = TypeVar("M", bound=BaseModel)
SECRET_PATHS = (
    ("callers", "*", "key"),
    ("connections", "*", "credentials", "*"),
    ("store", "url"),
    ("store", "dsn"),
)


@dataclass(frozen=True)
class Runtime:
    """A loaded, checked configuration: what the app is built from."""

    path: Path
    config: GatewayConfig
    providers: Mapping[str, ProviderDefinition]
    targets: Mapping[str, Target]
    secrets: frozenset[str] = field(repr=False)
    version: str = ""
    policies: Mapping[str, Policy] = field(default_factory=dict)  # by connection name

    @property
    def drain_timeout_s(self) -> float:
        """How long a stop waits for in-flight cancellations: the setting, else the longest
        connection budget (at least 10 s)."""
        if self.config.server.drain_timeout_s is not None:
            return self.config.server.drain_timeout_s
        budgets = [t.timeout_s for t in self.targets.values()]
        return max([10.0, *budgets])


def load(path: str | Path, environ: Mapping[str, str]) -> Runtime:
    """The checked configuration at ``path``, or ``ConfigError`` with every problem found.

    A problem in one phase does not hide the next: with an unset variable or a schema error,
    the config's provider files are still read and every connection that parses is still
    resolved against them, so one run of ``check-config`` shows everything to fix.
    """
    path = Path(path)
    problems: list[Problem] = []
    raw = _read_yaml(path, problems)
    if raw is None:
        raise ConfigError(problems)
    secrets: set[str] = set()
    unresolved: set[tuple[str, ...]] = set()
    raw = _substitute(raw, environ, (), str(path), problems, unresolved, secrets)
    config = _validate(GatewayConfig, raw, str(path), problems, skip=unresolved)
    files, sources = _provider_files(path.parent, raw, config, problems)
    failed: set[str] = set()
    providers = load_providers(path.parent, files, problems, failed)

    found: list[Problem] = []
    connections = config.connections if config else _parsable_connections(raw)
    targets = {
        name: target
        for name, conn in connections.items()
        if (target := resolve_target(name, conn, providers, str(path), found, failed)) is not None
    }
    if config is not None:
        check_callers(config, str(path), found)
    # A value that came from an unset variable is already reported; what it caused is noise.
    problems.extend(p for p in found if not _within(p.loc, unresolved))
    if config is None or problems:
        raise ConfigError(problems or [Problem(str(path), "", "invalid configuration")])

    for caller in config.callers:
        if caller.key is not None:
            secrets.add(caller.key.get_secret_value())
    for target in targets.values():
        secrets.update(v for v in target.credentials.values() if v)
    for address in (config.store.url, config.store.dsn):
        if address is not None:
            secrets.update(_url_secrets(address.get_secret_value()))
    version = _version(raw, sources)
    policies = {
        name: Policy.of(config.connections[name], target.definition)
        for name, target in targets.items()
    }
    return Runtime(path, config, providers, targets, frozenset(secrets), version, policies)


def _provider_files(
    base: Path, raw: Mapping[str, Any], config: GatewayConfig | None, problems: list[Problem]
) -> tuple[list[str], list[bytes]]:
    """The config's ``providers`` entries (taken from the raw mapping when the schema failed)
    and the bytes of every file they name, for the version hash."""
    if config is not None:
        entries = list(config.providers)
    else:
        listed = raw.get("providers")
        entries = [e for e in listed if isinstance(e, str)] if isinstance(listed, list) else []
    contents: list[bytes] = []
    for entry in entries:
        for file in _definition_files(base / entry) or []:
            with contextlib.suppress(OSError):  # load_providers reports it
                contents.append(file.read_bytes())
    return entries, contents


def _parsable_connections(raw: Mapping[str, Any]) -> dict[str, ConnectionConfig]:
    """The connections that validate on their own, when the whole config did not: their
    schema problems are already reported, the rest can still be cross-checked."""
    entries = raw.get("connections")
    if not isinstance(entries, dict):
        return {}
    parsed: dict[str, ConnectionConfig] = {}
    for name, entry in entries.items():
        connection = _validate(ConnectionConfig, entry, "", [])
        if connection is not None:
            parsed[str(name)] = connection
    return parsed


def _within(loc: str, prefixes: Set[tuple[str, ...]]) -> bool:
    parts = tuple(loc.split(".")) if loc else ()
    return any(parts[: len(p)] == p for p in prefixes)


def load_providers(
    base: Path, extra: Iterable[str], problems: list[Problem], failed: set[str] | None = None
) -> dict[str, ProviderDefinition]:
    """The built-in definitions, then the config's own files, which may replace them by name.

    ``failed`` receives the names of the definitions that did not load (the name they give
    and their file's), so that what uses them is not also reported as unknown; a built-in
    one of those names was meant to be replaced, and is not used instead.
    """
    found: dict[str, ProviderDefinition] = {}
    sources: list[tuple[str, str]] = [
        (f"gateway/providers/{f.name}", f.read_text("utf-8")) for f in builtin_files()
    ]
    for entry in extra:
        files = _definition_files(base / entry)
        if files is None:
            problems.append(
                Problem(str(base / entry), "", "provider definition file or folder not found")
            )
            continue
        for file in files:
            try:
                sources.append((str(file), file.read_text("utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(str(file), "", f"cannot read: {_reason(exc)}"))
    refused: set[str] = set()
    for name, text in sources:
        raw = _parse_yaml(text, name, problems)
        definition = None if raw is None else _validate(ProviderDefinition, raw, name, problems)
        if definition is not None:
            found[definition.name] = definition
            refused.discard(definition.name)
            continue
        refused.add(Path(name).stem)
        if raw is not None and isinstance(raw.get("name"), str):
            refused.add(raw["name"])
    for name in refused:
        found.pop(name, None)
    if failed is not None:
        failed.update(refused)
    return found


def _definition_files(location: Path) -> list[Path] | None:
    """The definition files an entry of ``providers`` names: the file, or a folder's YAML
    files in name order; None when there is nothing there."""
    location = location.resolve()
    if location.is_dir():
        return sorted(location.glob("*.yaml")) + sorted(location.glob("*.yml"))
    if location.is_file():
        return [location]
    return None


# --- reading ---------------------------------------------------------------------------------


# Anchors and aliases let a few hundred bytes stand for billions of values ("billion laughs"):
# composing is cheap, as an alias is the anchored node itself, but everything after it
# (substitution, validation, each request's body) walks the tree written out. So a file may
# reuse anchored blocks, but its aliases may add at most this many nodes to it...
MAX_ALIAS_NODES = 10_000
# ...and no file nests deeper than this, aliases included: the reader and the checks recurse.
MAX_DEPTH = 64


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (YAML keeps the last), an
    alias inside the node it names, and aliases or nesting beyond the bounds above."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._measured: dict[int, tuple[int, int]] = {}  # id(node): (nodes, depth) written out
        self._open: set[str] = set()  # anchors of the nodes being composed
        self._added = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.NodeEvent = self.peek_event()  # type: ignore[no-untyped-call]
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


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path, problems: list[Problem]) -> Any:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(path), "", f"cannot read: {_reason(exc)}"))
        return None
    return _parse_yaml(text, str(path), problems)


def _parse_yaml(text: str, name: str, problems: list[Problem]) -> Any:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problems.append(Problem(name, where, str(getattr(exc, "problem", None) or exc)))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(name, "", "must be a YAML mapping"))
        return None
    return data


def _substitute(
    value: Any,
    environ: Mapping[str, str],
    loc: tuple[str, ...],
    file: str,
    problems: list[Problem],
    unresolved: set[tuple[str, ...]],
    secrets: set[str],
) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string; ``$$`` is a literal ``$``."""
    if isinstance(value, dict):
        return {
            k: _substitute(v, environ, (*loc, str(k)), file, problems, unresolved, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _substitute(v, environ, (*loc, str(i)), file, problems, unresolved, secrets)
            for i, v in enumerate(value)
        ]
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if default is not None and not value:
            return default  # as in the shell: unset or empty takes the default
        if value is not None:
            return value
        problems.append(Problem(file, ".".join(loc), f"environment variable {name} is not set"))
        unresolved.add(loc)
        return ""

    result = _ENV_REF.sub(replace, value)
    if _is_secret(loc):
        secrets.add(result)
    return result


def _is_secret(loc: tuple[str, ...]) -> bool:
    return any(
        len(loc) == len(pattern)
        and all(p in ("*", part) for p, part in zip(pattern, loc, strict=True))
        for pattern in SECRET_PATHS
    )


def _validate(
    model: type[M],
    raw: Any,
    file: str,
    problems: list[Problem],
    skip: Set[tuple[str, ...]] = frozenset(),
) -> M | None:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems.extend(validation_problems(model, exc, file, skip))
        return None


def _reason(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return exc.strerror or str(exc)


def _version(raw: Any, provider_files: Iterable[bytes]) -> str:
    """A short hash of the resolved configuration (secrets included, so any change shows)
    and of the provider files it names."""
    digest = hashlib.sha256(repr(raw).encode())
    for content in provider_files:
        digest.update(b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()[:12]


def _url_secrets(url: str) -> set[str]:
    """The whole address and, apart, the password in it: logs may show either."""
    found = {url}
    password = urlsplit(url).password
    if password:
        found.add(password)
        found.add(unquote(password))
    return found
