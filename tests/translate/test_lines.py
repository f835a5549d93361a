"""Line items: where a definition may name them (checked at load), how a request's lines are
rendered (one list, or one request per line), and how the lines' outcomes combine."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from gateway.definition import ProviderDefinition
from gateway.errors import ErrorCode, GatewayError, Status
from gateway.lines import combined, line_outcomes
from gateway.models import CancelRequest, LineItem
from gateway.redact import Redactor
from gateway.targets import Target
from gateway.translate.build import Call, build_lines, build_request
from gateway.translate.classify import Outcome

LIST = {
    "name": "lines",
    "base_url": "https://api.example",
    "resources": {
        "order": {
            "method": "POST",
            "path": "/orders/{id}/cancel",
            "items": {
                "mode": "list",
                "template": {"line": "{item.id}", "qty": "{item.quantity}", "n": "{item.index}"},
            },
            "body": {"lines": "{items}", "why": "{reason}"},
        }
    },
}
EACH = {
    "name": "each",
    "base_url": "https://api.example",
    "resources": {
        "order": {
            "method": "POST",
            "path": "/orders/{id}/lines/{item.id}/cancel",
            "headers": {"Idempotency-Key": "{idempotency_key}"},
            "items": {"mode": "each", "quantity": "required", "max": 3},
            "body": {"quantity": "{item.quantity:text}"},
        }
    },
}


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return data


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        ProviderDefinition.model_validate(data)
    return str(info.value)


def test_both_modes_load() -> None:
    for data in (LIST, EACH):
        assert ProviderDefinition.model_validate(data).resources["order"].items is not None


@pytest.mark.parametrize(
    ("base", "path", "value", "problem"),
    [
        (LIST, "resources.order.items", None, "{items} needs the resource's `items:`"),
        (EACH, "resources.order.items", None, "{item.*} needs the resource's `items:`"),
        (LIST, "resources.order.body", {"lines": "{items|reason}"}, "a lone"),
        (LIST, "resources.order.body", {"lines": "all: {items}"}, "a lone"),
        (LIST, "resources.order.items.template", {"q": "{item.quantity}"}, "must name {item.id}"),
        (LIST, "resources.order.items.template", None, "mode: list renders each line"),
        (LIST, "resources.order.headers", {"X-Line": "{item.id}"}, "use it in items.template"),
        (EACH, "resources.order.path", "/orders/{id}/cancel", "must name {item.id}"),
        (EACH, "resources.order.items.template", {"a": "{item.id}"}, "mode: each takes none"),
        (EACH, "resources.order.body", {"all": "{items}"}, "{items} is a list's"),
        (EACH, "resources.order.items.max", 501, "less than or equal to 500"),
        (EACH, "resources.order.items.mode", "some", "'list' or 'each'"),
    ],
)
def test_lines_named_where_they_cannot_be_are_refused(
    base: dict[str, Any], path: str, value: Any, problem: str
) -> None:
    assert problem in refused(changed(base, path, value))


def test_lines_outside_a_resources_request_are_refused() -> None:
    data = changed(EACH, "auth", {"header": "X-Line", "value": "{item.id}"})
    assert "belong in a resource's request" in refused(data)


def target(data: dict[str, Any]) -> Target:
    from gateway.targets import BaseUrl
    from gateway.translate.templates import compile_template

    definition = ProviderDefinition.model_validate(data)
    base = BaseUrl("https", compile_template("api.example"), compile_template(""))
    return Target("c", definition, base, {}, {}, 5.0)


def request(**more: Any) -> CancelRequest:
    return CancelRequest.model_validate({"connection": "c", "id": "SO-1", **more})


def test_a_list_renders_every_line_into_the_one_request(call: Call) -> None:
    lines = [{"id": "A", "quantity": 2}, {"id": "B"}]
    built = build_request(target(LIST), "order", request(items=lines, reason="r"), call)
    assert orjson.loads(built.body or b"") == {
        "lines": [{"line": "A", "qty": 2, "n": 0}, {"line": "B", "n": 1}],
        "why": "r",
    }


def test_a_list_without_lines_cancels_the_whole_object(call: Call) -> None:
    built = build_request(target(LIST), "order", request(), call)
    assert orjson.loads(built.body or b"") == {}


def test_one_request_per_line_each_with_its_own_key(call: Call) -> None:
    req = request(items=[{"id": "L/1", "quantity": 1}, {"id": "L2", "quantity": 4}])
    built = build_lines(target(EACH), "order", req, call, lambda: datetime.now(UTC))
    assert built is not None
    first, second = (attempt for attempt, _, _ in built)
    assert first.url == "https://api.example/orders/SO-1/lines/L%2F1/cancel"
    assert second.url == "https://api.example/orders/SO-1/lines/L2/cancel"
    assert (first.body, second.body) == (b'{"quantity":"1"}', b'{"quantity":"4"}')
    keys = [dict(r.headers)["Idempotency-Key"] for r in (first, second)]
    assert keys == ["idem-1234-0", "idem-1234-1"]


@pytest.mark.parametrize(
    ("items", "fields"),
    [
        (None, {"items": "this provider cancels lines: name them in items"}),
        ([{"id": "a"}], {"items.0.quantity": "is required by this provider"}),
        (
            [{"id": str(n), "quantity": 1} for n in range(4)],
            {"items": "must be at most 3 lines for this provider"},
        ),
        (
            [{"id": "a", "quantity": 1}, {"id": "a", "quantity": 2}],
            {"items.1.id": "line 'a' is named twice"},
        ),
    ],
)
def test_a_providers_rules_for_lines_are_checked(
    call: Call, items: Any, fields: dict[str, str]
) -> None:
    req = request(items=items) if items is not None else request()
    with pytest.raises(GatewayError) as refused_:
        build_request(target(EACH), "order", req, call, (0, req.items[0]) if req.items else None)
    assert refused_.value.code is ErrorCode.INVALID_REQUEST
    assert dict(refused_.value.fields) == fields


def test_a_provider_without_lines_refuses_them(call: Call) -> None:
    plain = changed(changed(LIST, "resources.order.items", None), "resources.order.body", None)
    with pytest.raises(GatewayError) as refused_:
        build_request(target(plain), "order", request(items=[{"id": "a"}]), call)
    assert dict(refused_.value.fields) == {
        "items": "this provider cancels whole objects only: leave items out"
    }


@pytest.mark.parametrize(
    ("given", "ok"),
    [(1, True), (2.0, True), (0, False), (-1, False), (1.5, False), ("1", False), (True, False)],
)
def test_a_quantity_is_a_whole_number_from_one(given: Any, ok: bool) -> None:
    try:
        LineItem.model_validate({"id": "a", "quantity": given})
    except ValidationError:
        assert not ok
    else:
        assert ok


def test_one_to_five_hundred_lines() -> None:
    for count, ok in ((0, False), (1, True), (500, True), (501, False)):
        items = [{"id": str(n)} for n in range(count)]
        try:
            request(items=items)
        except ValidationError:
            assert not ok
        else:
            assert ok


# --- combining the lines' outcomes (CONTRACT §11) -------------------------------------------

ITEMS = [LineItem(id=f"L{n}") for n in range(3)]
DONE = Outcome(Status.CANCELLED, cancelled_at="2026-01-01T00:00:00Z")
LATER = Outcome(Status.CANCELLED, cancelled_at="2026-01-02T00:00:00Z")
ALREADY = Outcome(Status.ALREADY_CANCELLED)
SHIPPED = Outcome(Status.REJECTED, ErrorCode.NOT_CANCELLABLE, "shipped", provider_code="S")
GONE = Outcome(Status.REJECTED, ErrorCode.NOT_FOUND, "gone")
DOWN = Outcome(Status.FAILED, ErrorCode.PROVIDER_ERROR, "503")
OPEN = GatewayError(ErrorCode.PROVIDER_UNAVAILABLE, "the circuit is open")
QUEUED = Outcome(Status.PENDING, provider_response={"job": "J1"})

Results = list[Outcome | GatewayError]


@pytest.mark.parametrize(
    ("results", "status", "code", "line"),
    [
        ([DONE, LATER, ALREADY], Status.CANCELLED, None, None),
        ([ALREADY, ALREADY, ALREADY], Status.ALREADY_CANCELLED, None, None),
        ([DONE, GONE, SHIPPED], Status.REJECTED, ErrorCode.NOT_FOUND, "L1"),
        ([DOWN, SHIPPED, DONE], Status.REJECTED, ErrorCode.NOT_CANCELLABLE, "L1"),
        ([DONE, DOWN, OPEN], Status.FAILED, ErrorCode.PROVIDER_ERROR, "L1"),
        ([OPEN, DOWN, DONE], Status.FAILED, ErrorCode.PROVIDER_UNAVAILABLE, "L0"),
        ([DOWN, QUEUED, DONE], Status.PENDING, None, "L1"),
        ([QUEUED, SHIPPED, DOWN], Status.REJECTED, ErrorCode.NOT_CANCELLABLE, "L1"),
    ],
)
def test_lines_combine_as_the_contract_says(
    results: Results, status: Status, code: ErrorCode | None, line: str | None
) -> None:
    """Every line done is cancelled (already when all were); else the first refusal, in the
    request's order; else the first pending line; else the first failure. The error says
    which line it is."""
    result = combined(ITEMS, results)
    assert (result.status, result.code) == (status, code)
    if line is not None:
        assert result.message.startswith(f"line {line!r}: ")


def test_a_cancellation_of_lines_is_as_late_as_its_latest_line() -> None:
    result = combined(ITEMS, [DONE, LATER, ALREADY])
    assert isinstance(result, Outcome)
    assert result.cancelled_at == "2026-01-02T00:00:00Z"


def test_each_line_has_its_own_outcome_in_the_envelope() -> None:
    answer = Redactor([]).answer(())
    found = line_outcomes(ITEMS, [DONE, SHIPPED, OPEN], answer)
    assert [o.model_dump(mode="json") for o in found] == [
        {"id": "L0", "status": "cancelled", "error": None},
        {
            "id": "L1",
            "status": "rejected",
            "error": {"code": "not_cancellable", "provider_code": "S", "message": "shipped"},
        },
        {
            "id": "L2",
            "status": "failed",
            "error": {
                "code": "provider_unavailable",
                "provider_code": None,
                "message": "the circuit is open",
            },
        },
    ]
