"""Running a definition's ``examples:`` (``gateway/examples.py``): each documented answer
classified, each documented request built, and compared with what the example expects."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult
from pydantic import ValidationError

from gateway.config import ConnectionConfig
from gateway.definition import ProviderDefinition
from gateway.errors import GatewayError, Status
from gateway.examples import EXAMPLE_NOW, AnswerExample, Checked, RequestExample
from gateway.problems import Problem, validate
from gateway.targets import resolve_target
from gateway.translate.build import Call, build_request, resolve_resource
from gateway.translate.classify import Outcome, classify
from gateway.translate.wire import UpstreamResponse
from gateway.yamlfile import read_yaml

# What a request example is built with, besides what it gives (README, "Examples").
EXAMPLE_CALL = Call(
    cancellation_id="cxl_example",
    caller="example",
    idempotency_key="example-key",
    request_id="req-example",
    traceparent="00-0000000000000000000000000000000e-000000000000000e-01",
)


def prove(definition: ProviderDefinition) -> tuple[list[Checked], list[str]]:
    """Every example's result, and warnings: the error rules no answer example matched."""
    checked: list[Checked] = []
    matched: set[tuple[str, int]] = set()  # (where the rules are, the index of the rule)
    for example in definition.examples.answers:
        result, outcome, resource = _answer(definition, example)
        checked.append(result)
        if outcome is not None and outcome.rule is not None and resource is not None:
            matched.add((_rules_of(definition, resource), outcome.rule))
    checked += [_request(definition, example) for example in definition.examples.requests]
    warnings = []
    if not definition.examples.answers:
        warnings.append("has no answer examples: nothing shows it reads its provider's answers")
        return checked, warnings
    lists = {"errors": definition.errors}
    lists |= {
        f"resources.{n}.errors": r.errors for n, r in definition.resources.items() if r.errors
    }
    for where, errors in lists.items():
        for index, rule in enumerate(errors.rules):
            if (where, index) not in matched:
                when = rule.when.model_dump(exclude_none=True, mode="json")
                warnings.append(f"{where}.rules.{index} ({when}) is matched by no answer example")
    warnings += [
        f"{where} ({path.expression}) finds nothing in any answer example"
        for where, path in _unexercised_paths(definition)
    ]
    return checked, warnings


def _unexercised_paths(definition: ProviderDefinition) -> list[tuple[str, ParsedResult]]:
    """The JMESPath expressions that read an answer (where the error code and message are,
    what is extracted, what a read gives) and find a value in none of the answer examples of
    their resource: ``code: code`` for ``code: error.code`` is the mistake this catches."""
    bodies: dict[str, list[Any]] = {name: [] for name in definition.resources}
    for example in definition.examples.answers:
        try:
            resource = resolve_resource(definition, example.resource)
        except GatewayError:
            continue
        if example.body is not None:
            bodies[resource].append(example.body)
    found: list[tuple[str, ParsedResult]] = []
    for name, res in definition.resources.items():
        paths: list[tuple[str, ParsedResult | None]] = []
        errors, where = definition.errors_for(name), _rules_of(definition, name)
        paths += [(f"{where}.{key}", getattr(errors, key)) for key in ("code", "type", "message")]
        paths.append((f"resources.{name}.extract.cancelled_at", res.extract.cancelled_at))
        paths += [
            (f"resources.{name}.extract.provider_response.{key}", path)
            for key, path in res.extract.provider_response.items()
        ]
        paths += [
            (f"resources.{name}.read.values.{key}", path)
            for key, path in (res.read.values.items() if res.read else ())
        ]
        for loc, path in paths:
            if (
                path is not None
                and bodies[name]
                and not any(_finds(path, body) for body in bodies[name])
            ):
                found.append((loc, path))
    return list(dict.fromkeys(found))  # a provider's errors shared by resources: once


def _finds(path: ParsedResult, body: Any) -> bool:
    try:
        return path.search(body) is not None
    except (JMESPathError, TypeError, ValueError):
        return False


def _rules_of(definition: ProviderDefinition, resource: str) -> str:
    """Where the rules that classify ``resource``'s answers are."""
    return f"resources.{resource}.errors" if definition.resources[resource].errors else "errors"


def problems_of(definition: ProviderDefinition, file: str) -> tuple[list[Problem], list[Problem]]:
    """A definition's failed examples as problems, and its warnings, for ``check-config``."""
    checked, warnings = prove(definition)
    failed = [
        Problem(file, f"examples.{c.kind}s: {c.name}", f"expected {c.expected}, got {c.got}")
        for c in checked
        if not c.ok
    ]
    return failed, [Problem(file, "examples", warning) for warning in warnings]


def _answer(
    definition: ProviderDefinition, example: AnswerExample
) -> tuple[Checked, Outcome | None, str | None]:
    try:
        resource = resolve_resource(definition, example.resource)
    except GatewayError as exc:
        return Checked("answer", example.name, "a resource", exc.message, False), None, None
    headers = {name.lower(): value for name, value in example.headers.items()}
    response = UpstreamResponse(example.status, headers, example.raw())
    reading, probing = example.read, example.probe
    if reading and definition.resources[resource].read is None:
        return Checked("answer", example.name, "a resource that reads", resource, False), None, None
    if probing and definition.resources[resource].probe is None:
        return (
            Checked("answer", example.name, "a resource with a probe", resource, False),
            None,
            None,
        )
    outcome = classify(definition, resource, response, EXAMPLE_NOW, reading, probing)
    expect = example.expect
    status = outcome.status.value
    if probing:  # what the probe says of the object; its error code is not the point
        status = outcome.probed or "unknown"
        outcome = replace(outcome, code=None)
    if reading and outcome.status is Status.CANCELLED:
        read = definition.resources[resource].read
        assert read is not None
        missing = [name for name in read.values if name not in outcome.provider_response]
        status = "read" if not missing else f"failed (the answer lacks {', '.join(missing)})"
    got: dict[str, Any] = {
        "status": status,
        "code": outcome.code.value if outcome.code else None,
    }
    wanted: dict[str, Any] = {"status": expect.status, "code": expect.code}
    for key in ("provider_code", "cancelled_at", "retry_after_s"):
        if getattr(expect, key) is not None:
            wanted[key], got[key] = getattr(expect, key), getattr(outcome, key)
    if expect.provider_response is not None:
        wanted["provider_response"] = expect.provider_response
        got["provider_response"] = {
            k: outcome.provider_response.get(k) for k in expect.provider_response
        }
    return _checked("answer", example.name, wanted, got), outcome, resource


def _request(definition: ProviderDefinition, example: RequestExample) -> Checked:
    problems: list[Problem] = []
    try:
        connection = ConnectionConfig.model_validate(
            {"provider": definition.name, **example.connection.model_dump(exclude_none=True)}
        )
        canonical = example.canonical()
    except ValidationError as exc:
        return Checked("request", example.name, "a valid example", _first(exc), False)
    target = resolve_target("example", connection, {definition.name: definition}, "", problems)
    if target is None:
        reason = "; ".join(f"{p.loc}: {p.message}" for p in problems)
        return Checked("request", example.name, "a valid connection", reason, False)
    call = replace(EXAMPLE_CALL, now=example.now, uuid=example.uuid)
    try:
        resource = resolve_resource(definition, canonical.resource)
        # A resource that sends one request per line: the first line's is the example's.
        first_line = (0, canonical.items[0]) if canonical.items else None
        lines = definition.resources[resource].items
        line = first_line if lines is not None and lines.mode == "each" else None
        built = build_request(target, resource, canonical, call, line, example.read)
    except GatewayError as exc:
        return Checked("request", example.name, "a request", exc.message, False)
    expect = example.expect
    sent = {name.lower(): value for name, value in built.headers}
    wanted: dict[str, Any] = {"method": expect.method, "url": expect.url}
    got: dict[str, Any] = {"method": built.method, "url": built.url}
    if expect.headers:
        wanted["headers"] = {name.lower(): value for name, value in expect.headers.items()}
        got["headers"] = {name: sent.get(name) for name in wanted["headers"]}
    if expect.form is not None:
        wanted["form"] = expect.form
        got["form"] = dict(parse_qsl((built.body or b"").decode(), keep_blank_values=True))
    else:
        wanted["body"] = expect.body
        got["body"] = built.shown_body()
    return _checked("request", example.name, wanted, got)


def _checked(kind: Any, name: str, wanted: dict[str, Any], got: dict[str, Any]) -> Checked:
    differ = {key for key in wanted if wanted[key] != got.get(key)}
    shown = sorted(differ) or sorted(wanted)
    return Checked(
        kind,
        name,
        ", ".join(f"{key} {wanted[key]!r}" for key in shown),
        ", ".join(f"{key} {got.get(key)!r}" for key in shown),
        not differ,
    )


def _first(exc: ValidationError) -> str:
    error = exc.errors(include_input=False, include_url=False)[0]
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


def load_definition(file: Path) -> tuple[ProviderDefinition | None, list[Problem]]:
    """The provider definition in ``file`` alone, or None and what is wrong with it."""
    problems: list[Problem] = []
    raw = read_yaml(file, problems)
    if raw is None:
        return None, problems
    return validate(ProviderDefinition, raw, str(file), problems), problems


def table(checked: list[Checked]) -> list[str]:
    """The examples' results as a table, then a line of counts."""
    rows = [("", "example", "expected", "got")]
    rows += [
        (
            "ok" if c.ok else "FAIL",
            f"{c.kind}: {c.name}",
            c.expected,
            "as expected" if c.ok else c.got,
        )
        for c in checked
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + " " + row[3]
        for row in rows
    ]
    failed = sum(not c.ok for c in checked)
    return [*lines, f"{len(checked) - failed} passed, {failed} failed"]
