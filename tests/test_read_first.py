"""A resource that reads before it cancels, on a fake transport: the cancel built from the
read's values, each way the read can end the attempt, a stale version read again; and where a
definition may name what a read gave (checked at load)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from gateway.definition import ProviderDefinition
from gateway.translate.wire import UpstreamRequest, UpstreamResponse
from tests.fakes import BASE_CONFIG, Kit, make_kit, response
from tests.test_cancel import cancel

VERSIONED = """
name: versioned
credentials: {token: {}}
auth: {header: X-Token, value: "{credentials.token}"}
resources:
  order:
    method: POST
    path: /orders/{id}
    read:
      path: /orders/{id}
      values: {version: version, lines: "lines[].n"}
      already_cancelled: "state == 'Cancelled'"
      stale: [VersionConflict]
    body: {version: "{read.version}", lines: "{read.lines}"}
    success: {when: "state == 'Cancelled'"}
errors:
  code: error
  rules:
    - {when: {code: VersionConflict}, outcome: not_cancellable}
"""
CONFIG = BASE_CONFIG.replace("callers:", "providers: [versioned.yaml]\ncallers:", 1) + (
    "  versioned:\n    provider: versioned\n    base_url: ${UPSTREAM}/v\n"
    "    credentials: {token: versioned-token-0123}\n    timeout_s: 2\n"
)
ORDER = {"version": 7, "state": "Open", "lines": [{"n": 1}, {"n": 2}]}


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return make_kit(tmp_path, CONFIG, files={"versioned.yaml": VERSIONED})


def sent(kit: Kit) -> list[tuple[str, str, Any]]:
    return [
        (s.method, s.url.rsplit("/v", 1)[1], orjson.loads(s.body) if s.body else None)
        for s in kit.transport.sent
    ]


async def test_the_cancel_carries_what_the_read_gave(kit: Kit):
    kit.transport.answer(response(200, ORDER), response(200, {"state": "Cancelled"}))
    result = await cancel(kit, {"connection": "versioned", "id": "o-1"})
    assert (result.http_status, result.body["status"]) == (200, "cancelled"), result.body
    assert sent(kit) == [
        ("GET", "/orders/o-1", None),
        ("POST", "/orders/o-1", {"version": 7, "lines": [1, 2]}),
    ]
    assert all(dict(s.headers)["X-Token"] == "versioned-token-0123" for s in kit.transport.sent)


async def test_a_read_that_lacks_a_value_ends_it_and_sends_nothing(kit: Kit):
    kit.transport.answer(response(200, {"state": "Open", "lines": []}))
    result = await cancel(kit, {"connection": "versioned", "id": "o-1"})
    assert (result.http_status, result.body["error"]["code"]) == (502, "provider_bad_response")
    assert "the read's answer lacks version" in result.body["error"]["message"]
    assert [method for method, _, _ in sent(kit)] == ["GET"]


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        (response(200, {**ORDER, "state": "Cancelled"}), "already_cancelled", None),
        (response(404, {"error": "NotFound"}), "rejected", "not_found"),
        (response(401, {"error": "Unauthorized"}), "failed", "provider_auth_failed"),
    ],
)
async def test_the_reads_answer_can_be_the_outcome(
    kit: Kit, answer: UpstreamResponse, status: str, code: str | None
):
    kit.transport.answer(answer)
    result = await cancel(kit, {"connection": "versioned", "id": "o-1"})
    assert result.body["status"] == status
    assert (result.body["error"] or {}).get("code") == code
    assert [method for method, _, _ in sent(kit)] == ["GET"]


async def test_a_stale_version_is_read_again_though_the_post_is_not_safe_to_repeat(kit: Kit):
    kit.transport.answer(
        response(200, ORDER),
        response(409, {"error": "VersionConflict"}),
        response(200, {**ORDER, "version": 8}),
        response(200, {"state": "Cancelled"}),
    )
    result = await cancel(kit, {"connection": "versioned", "id": "o-1"})
    assert (result.http_status, result.body["status"]) == (200, "cancelled"), result.body
    assert [body["version"] for method, _, body in sent(kit) if method == "POST"] == [7, 8]
    assert result.body["upstream"]["attempts"] == 2


async def test_a_conflict_to_the_last_attempt_is_the_rules_outcome(kit: Kit):
    kit.transport.answer(*[response(200, ORDER), response(409, {"error": "VersionConflict"})] * 3)
    result = await cancel(kit, {"connection": "versioned", "id": "o-1"})
    assert (result.http_status, result.body["error"]["code"]) == (409, "not_cancellable")
    assert len(kit.transport.sent) == 6  # retry.max_attempts reads and cancels


async def test_a_timeout_after_the_cancel_is_not_repeated(kit: Kit):
    """The read is safe to repeat; the POST that may have been applied is not."""
    from gateway.errors import ErrorCode
    from gateway.upstream import UpstreamFailure

    def timeout(request: UpstreamRequest, timeout_s: float, connect_s: float) -> Any:
        raise UpstreamFailure(ErrorCode.PROVIDER_TIMEOUT, "no answer in time", sent=True)

    kit.transport.answer(response(200, ORDER), timeout)
    result = await cancel(kit, {"connection": "versioned", "id": "o-1"})
    assert result.body["error"]["code"] == "provider_timeout"
    assert len(kit.transport.sent) == 2


# --- where a read's values may be named --------------------------------------------------

DEFINITION = {
    "name": "v",
    "base_url": "https://api.example",
    "credentials": {"token": {}},
    "auth": {"header": "X-Token", "value": "{credentials.token}"},
    "resources": {
        "order": {
            "method": "POST",
            "path": "/orders/{id}",
            "read": {"path": "/orders/{id}", "values": {"version": "version"}},
            "body": {"version": "{read.version}"},
        }
    },
}


def refused(change: dict[str, Any]) -> str:
    data = copy.deepcopy(DEFINITION)
    data["resources"]["order"].update(change)
    with pytest.raises(ValidationError) as info:
        ProviderDefinition.model_validate(data)
    return str(info.value)


def test_a_read_definition_loads():
    assert ProviderDefinition.model_validate(DEFINITION).resources["order"].read is not None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"body": {"v": "{read.revision}"}}, "read.revision"),
        ({"read": None}, "read.version"),
        ({"read": {"path": "/o/{read.version}", "values": {"version": "v"}}}, "read.version"),
        ({"read": {"path": "orders", "values": {"version": "v"}}}, "must start with /"),
        ({"read": {"path": "/o", "values": {}}}, "at least 1 item"),
        ({"read": {"path": "/o/{item.id}", "values": {"v": "v"}}}, "belong in a resource's"),
    ],
)
def test_what_a_read_gave_is_named_only_where_it_can_be(change: dict[str, Any], problem: str):
    assert problem in refused(change)


def test_a_read_value_cannot_choose_the_host():
    data = copy.deepcopy(DEFINITION)
    data["base_url"] = "https://{read.version}.example"
    with pytest.raises(ValidationError, match=r"read\.version"):
        ProviderDefinition.model_validate(data)


async def test_a_read_value_the_cancel_cannot_carry_is_the_providers_fault(kit: Kit):
    """A version of ".." would climb the cancel's path: nothing more is sent, and the answer
    blames the provider's answer, not the caller's request."""
    text = VERSIONED.replace(
        "path: /orders/{id}\n    read:", "path: /orders/{id}/{read.version}\n    read:"
    )
    folder = kit.runtime.path.parent / "dots"
    folder.mkdir()
    kit = make_kit(folder, CONFIG, files={"versioned.yaml": text})
    kit.transport.answer(response(200, {**ORDER, "version": ".."}))
    result = await cancel(kit, {"connection": "versioned", "id": "o-1"})
    assert (result.http_status, result.body["error"]["code"]) == (502, "provider_bad_response")
    assert "cannot make the cancel" in result.body["error"]["message"]
    assert [method for method, _, _ in sent(kit)] == ["GET"]


async def test_a_read_that_takes_the_whole_budget_leaves_the_cancel_unsent(kit: Kit):
    def slow(request: UpstreamRequest, timeout_s: float, connect_s: float) -> UpstreamResponse:
        kit.clock.advance(timeout_s)  # the read answers as the budget ends
        return response(200, ORDER)

    kit.transport.answer(slow)
    result = await cancel(kit, {"connection": "versioned", "id": "o-1"})
    assert result.body["error"]["code"] == "provider_timeout"
    assert "no time left in the budget, nothing was sent" in result.body["error"]["message"]
    assert [method for method, _, _ in sent(kit)] == ["GET"]
