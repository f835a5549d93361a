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
from typing import Any
from urllib.parse import unquote, urlsplit

from gateway.config import ConnectionConfig, GatewayConfig
from gateway.definition import ProviderDefinition
from gateway.problems import ConfigError, Problem, validate
from gateway.prove import problems_of
from gateway.providers import builtin_files
from gateway.resilience import Policy
from gateway.targets import Target, check_callers, resolve_target
from gateway.yamlfile import parse_yaml, read_yaml, unreadable

# ${NAME} or ${NAME:-default}; a default may hold one level of braces (a URL template).
_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\{[^{}]*\})*))?\}")
SECRET_PATHS = (
    ("callers", "*", "key"),
    ("callers", "*", "webhook", "secret"),
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
    warnings: tuple[Problem, ...] = ()  # what loads, but the definitions' examples leave open

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
    raw = read_yaml(path, problems)
    if raw is None:
        raise ConfigError(problems)
    secrets: set[str] = set()
    unresolved: set[tuple[str, ...]] = set()
    raw = _substitute(raw, environ, (), str(path), problems, unresolved, secrets)
    config = validate(GatewayConfig, raw, str(path), problems, skip=unresolved)
    files, sources = _provider_files(path.parent, raw, config, problems)
    failed: set[str] = set()
    warnings: list[Problem] = []
    providers = load_providers(path.parent, files, problems, failed, warnings)

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
        if caller.webhook is not None:
            secrets.add(caller.webhook.secret.get_secret_value())
            password = urlsplit(caller.webhook.url).password  # user:password@ in the URL
            secrets.update({password, unquote(password)} if password else set())
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
    return Runtime(
        path, config, providers, targets, frozenset(secrets), version, policies, tuple(warnings)
    )


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
        connection = validate(ConnectionConfig, entry, "", [])
        if connection is not None:
            parsed[str(name)] = connection
    return parsed


def _within(loc: str, prefixes: Set[tuple[str, ...]]) -> bool:
    parts = tuple(loc.split(".")) if loc else ()
    return any(parts[: len(p)] == p for p in prefixes)


def load_providers(
    base: Path,
    extra: Iterable[str],
    problems: list[Problem],
    failed: set[str] | None = None,
    warnings: list[Problem] | None = None,
) -> dict[str, ProviderDefinition]:
    """The built-in definitions, then the config's own files, which may replace them by name.

    ``failed`` receives the names of the definitions that did not load (the name they give
    and their file's), so that what uses them is not also reported as unknown; a built-in
    one of those names was meant to be replaced, and is not used instead. A definition whose
    ``examples`` fail is refused too; ``warnings`` receives what its examples leave unproven.
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
                problems.append(Problem(str(file), "", f"cannot read: {unreadable(exc)}"))
    refused: set[str] = set()
    for name, text in sources:
        read = _read(name, text)
        problems.extend(read.problems)
        if warnings is not None:
            warnings.extend(read.unproven)
        if read.definition is not None:
            found[read.definition.name] = read.definition
            refused.discard(read.definition.name)
        else:
            refused.update(read.names)
    for name in refused:
        found.pop(name, None)
    if failed is not None:
        failed.update(refused)
    return found


@dataclass(frozen=True, slots=True)
class _Read:
    """One definition file read: the definition (None when refused), its problems, what its
    examples leave unproven, and the names a refused one stands for (its file's, its own)."""

    definition: ProviderDefinition | None
    problems: tuple[Problem, ...]
    unproven: tuple[Problem, ...]
    names: tuple[str, ...]


_READS: dict[tuple[str, str], _Read] = {}


def _read(name: str, text: str) -> _Read:
    """A definition file read, parsed, validated and proven once per text: the outcome
    depends on nothing else, and every load (a start, a reload, every test) reads the
    built-in files again. A definition is frozen, so loads may share it."""
    key = (name, text)
    if key in _READS:
        return _READS[key]
    problems: list[Problem] = []
    unproven: list[Problem] = []
    raw = parse_yaml(text, name, problems)
    definition = None if raw is None else validate(ProviderDefinition, raw, name, problems)
    if definition is not None:
        wrong, unproven = problems_of(definition, name)
        problems += wrong
        definition = None if wrong else definition
    names: tuple[str, ...] = ()
    if definition is None:
        names = (Path(name).stem,)
        if raw is not None and isinstance(raw.get("name"), str):
            names += (raw["name"],)
    if len(_READS) > 256:  # files edited many times over: start again
        _READS.clear()
    read = _READS[key] = _Read(definition, tuple(problems), tuple(unproven), names)
    return read


def _definition_files(location: Path) -> list[Path] | None:
    """The definition files an entry of ``providers`` names: the file, or a folder's YAML
    files in name order; None when there is nothing there."""
    location = location.resolve()
    if location.is_dir():
        return sorted(location.glob("*.yaml")) + sorted(location.glob("*.yml"))
    if location.is_file():
        return [location]
    return None


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
