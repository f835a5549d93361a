"""Status probes on a fake transport and clock (CONTRACT §10): after an attempt whose fate is
unknown, the object is read before anything is repeated; the budget keeps a share for it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.definition import ProviderDefinition
from gateway.errors import ErrorCode
from gateway.translate.wire import UpstreamRequest, UpstreamResponse
from gateway.upstream import UpstreamFailure
from tests.fakes import BASE_CONFIG, Kit, make_kit, response
from tests.test_cancel import cancel
from tests.test_metrics import value

PROBED = """
name: probed
credentials: {token: {}}
auth: {header: X-Token, value: "{credentials.token}"}
resources:
  order:
    method: POST
    path: /orders/{id}/cancel
    retry_safe: false
    success: {when: "state == 'cancelled'"}
    probe:
      path: /orders/{id}
      cancelled: "state == 'cancelled'"
      pending: "state == 'cancelling'"
      not_cancelled: "state == 'open'"
      extract: {cancelled_at: changed_at, provider_response: {state: state}}
"""
CONFIG = BASE_CONFIG.replace("callers:", "providers: [probed.yaml]\ncallers:", 1) + (
    "  probed:\n    provider: probed\n    base_url: ${UPSTREAM}/p\n"
    "    credentials: {token: probed-token-0123}\n    timeout_s: 5\n"
)
REQUEST = {"connection": "probed", "id": "o-1"}


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return make_kit(tmp_path, CONFIG, files={"probed.yaml": PROBED})


def lost(request: UpstreamRequest, timeout_s: float, connect_s: float) -> Any:
    raise UpstreamFailure(ErrorCode.PROVIDER_TIMEOUT, "no answer in time", sent=True)


def calls(kit: Kit) -> list[tuple[str, str]]:
    return [(s.method, s.url.rsplit("/p", 1)[1]) for s in kit.transport.sent]


async def test_a_lost_answer_is_settled_by_the_probe_and_nothing_is_sent_again(kit: Kit):
    kit.transport.answer(
        lost, response(200, {"state": "cancelled", "changed_at": "2026-01-02T03:04:05Z"})
    )
    result = await cancel(kit, REQUEST)
    assert (result.http_status, result.body["status"]) == (200, "cancelled"), result.body
    assert result.body["cancelled_at"] == "2026-01-02T03:04:05Z"
    assert result.body["provider_response"] == {"state": "cancelled"}
    assert (result.body["upstream"]["attempts"], result.body["upstream"]["probes"]) == (1, 1)
    assert calls(kit) == [("POST", "/orders/o-1/cancel"), ("GET", "/orders/o-1")]
    # The attempt left a fifth of the 5 s budget (1 s) for the probe.
    assert kit.transport.sent[0].timeout_s == pytest.approx(4.0)
    probes = "cancel_gateway_upstream_probes_total"
    assert value(kit.services.metrics, probes, connection="probed", result="cancelled") == 1
    [logged] = kit.events("upstream.probe")
    assert logged["result"] == "cancelled"


async def test_not_cancelled_allows_a_repeat_of_what_is_not_safe_to_repeat(kit: Kit):
    kit.transport.answer(
        lost, response(200, {"state": "open"}), response(200, {"state": "cancelled"})
    )
    result = await cancel(kit, REQUEST)
    assert (result.http_status, result.body["status"]) == (200, "cancelled"), result.body
    assert calls(kit) == [
        ("POST", "/orders/o-1/cancel"),
        ("GET", "/orders/o-1"),
        ("POST", "/orders/o-1/cancel"),
    ]
    assert (result.body["upstream"]["attempts"], result.body["upstream"]["probes"]) == (2, 1)


@pytest.mark.parametrize(
    "answer",
    [
        response(200, {"state": "cancelling"}),  # pending: still the provider's to finish
        response(404, {"error": "no such order"}),  # not found
        response(500, {"error": "down"}),  # says nothing
    ],
)
async def test_anything_else_leaves_the_outcome_unknown_and_unrepeated(
    kit: Kit, answer: UpstreamResponse
):
    kit.transport.answer(lost, answer)
    result = await cancel(kit, REQUEST)
    assert (result.http_status, result.body["error"]["code"]) == (504, "provider_timeout")
    assert [method for method, _ in calls(kit)] == ["POST", "GET"]
    assert result.body["upstream"]["probes"] == 1


async def test_a_definite_answer_needs_no_probe(kit: Kit):
    kit.transport.answer(response(409, {"error": "shipped"}))
    result = await cancel(kit, REQUEST)
    assert result.body["error"]["code"] == "not_cancellable"
    assert calls(kit) == [("POST", "/orders/o-1/cancel")]
    assert result.body["upstream"]["probes"] == 0


def test_a_probe_names_only_what_a_request_may() -> None:
    import yaml

    data = yaml.safe_load(PROBED)
    data["base_url"] = "https://api.example"
    bad = copy.deepcopy(data)
    bad["resources"]["order"]["probe"]["path"] = "/orders/{job_id}"
    with pytest.raises(ValidationError, match="job_id"):
        ProviderDefinition.model_validate(bad)
    lines = copy.deepcopy(data)
    lines["resources"]["order"]["probe"]["path"] = "/orders/{item.id}"
    with pytest.raises(ValidationError, match="belong in a resource's request"):
        ProviderDefinition.model_validate(lines)
    assert ProviderDefinition.model_validate(data).resources["order"].probe is not None


def test_a_pending_answer_needs_a_probe_which_may_name_what_the_answer_gave() -> None:
    import yaml

    data = yaml.safe_load(PROBED)
    data["base_url"] = "https://api.example"
    order = data["resources"]["order"]
    order["pending"] = {"status": [202]}
    order["extract"] = {"provider_response": {"job": "job.id"}}
    order["probe"]["path"] = "/jobs/{answer.job}"
    assert ProviderDefinition.model_validate(data).resources["order"].pending is not None
    unknown = copy.deepcopy(data)
    unknown["resources"]["order"]["probe"]["path"] = "/jobs/{answer.ticket}"
    with pytest.raises(ValidationError, match=r"answer\.ticket"):
        ProviderDefinition.model_validate(unknown)
    in_cancel = copy.deepcopy(data)
    in_cancel["resources"]["order"]["path"] = "/orders/{answer.job}/cancel"
    with pytest.raises(ValidationError, match=r"answer\.job"):
        ProviderDefinition.model_validate(in_cancel)
    unprobed = copy.deepcopy(data)
    del unprobed["resources"]["order"]["probe"]
    with pytest.raises(ValidationError, match="needs a `probe`"):
        ProviderDefinition.model_validate(unprobed)


async def test_a_pending_rule_answers_202_pending_and_queues_a_probe(kit: Kit, tmp_path: Path):
    pending = PROBED.replace(
        "    success: {when: \"state == 'cancelled'\"}\n",
        "    success: {when: \"state == 'cancelled'\"}\n"
        "    pending: {status: [200], when: \"state == 'cancelling'\"}\n",
    )
    kit = make_kit(tmp_path, CONFIG, files={"probed.yaml": pending})
    kit.transport.answer(response(200, {"state": "cancelling"}))
    result = await cancel(kit, REQUEST)
    assert result.http_status == 202
    assert (result.body["status"], result.body["error"]) == ("pending", None)
    row = await kit.store.lookup(result.body["cancellation_id"], "oms")
    assert row is not None
    assert row.status == "pending"
    assert row.due_at is not None
    assert row.work is not None
    assert b'"kind":"probe"' in row.work
    [logged] = kit.events("cancellation.pending")
    assert logged["cancellation_id"] == result.body["cancellation_id"]


async def test_a_repeat_is_made_only_with_its_probes_share_of_the_budget_left(kit: Kit):
    """The first attempt used 3.95 s of 5: what is left (1.05 s) holds the probe's share (1 s)
    but not a repeat worth sending (0.1 s at least) and its own share: the probe's
    `not_cancelled` is not acted on."""

    def slow_and_lost(request: UpstreamRequest, timeout_s: float, connect_s: float) -> Any:
        kit.clock.advance(3.95)
        raise UpstreamFailure(ErrorCode.PROVIDER_TIMEOUT, "no answer in time", sent=True)

    kit.transport.answer(slow_and_lost, response(200, {"state": "open"}))
    result = await cancel(kit, REQUEST)
    assert result.body["error"]["code"] == "provider_timeout"
    assert "would not fit in the budget" in result.body["error"]["message"]
    assert [method for method, _ in calls(kit)] == ["POST", "GET"]


async def test_a_probe_waits_for_the_connections_rate_limit(tmp_path: Path):
    """A probe is a request to the provider like any: it takes its turn in the rate limit."""
    limited = CONFIG + "    limits: {rate_per_s: 1, burst: 1}\n"
    kit = make_kit(tmp_path, limited, files={"probed.yaml": PROBED})
    kit.transport.answer(lost, response(200, {"state": "cancelled"}))
    result = await cancel(kit, REQUEST)
    assert result.body["status"] == "cancelled"
    assert kit.clock.sleeps[:1] == [pytest.approx(1.0)]  # the probe's turn in the limit
