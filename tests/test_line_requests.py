"""One request per line, on a fake transport and clock: the lines share the cancellation's
budget (a line that would start after it is not sent, and says so), each line's own outcome is
in the envelope, and lines are in the envelope of an answer given before anything was sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.translate.wire import UpstreamRequest, UpstreamResponse
from tests.fakes import BASE_CONFIG, FlakyStore, Kit, make_kit, response
from tests.test_cancel import cancel

EACH = """
name: lines
credentials: {key: {}}
auth: {header: X-Key, value: "{credentials.key}"}
resources:
  order:
    method: POST
    path: /orders/{id}/lines/{item.id}/cancel
    retry_safe: true
    items: {mode: each, concurrency: 1}
    success: {when: "ok"}
"""
CONFIG = BASE_CONFIG.replace("callers:", "providers: [lines.yaml]\ncallers:", 1) + (
    "  lines:\n    provider: lines\n    base_url: ${UPSTREAM}/l\n"
    "    credentials: {key: lines-key-0123456789}\n    timeout_s: 2\n"
)
REQUEST = {"connection": "lines", "id": "SO-1", "items": [{"id": f"L{n}"} for n in range(5)]}


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return make_kit(tmp_path, CONFIG, files={"lines.yaml": EACH})


async def test_lines_that_would_start_after_the_budget_are_not_sent(kit: Kit):
    """Each line takes 0.8 s, one at a time, in a 2 s budget: three are sent, the last two
    are answered at once as timed out, never sent."""

    def slow(request: UpstreamRequest, timeout_s: float, connect_s: float) -> UpstreamResponse:
        kit.clock.advance(0.8)
        return response(200, {"ok": True})

    kit.transport.answer(*[slow] * 5)
    result = await cancel(kit, REQUEST)
    assert len(kit.transport.sent) == 3
    assert [line["status"] for line in result.body["items"]] == ["cancelled"] * 3 + ["failed"] * 2
    late = result.body["items"][3]["error"]
    assert late["code"] == "provider_timeout"
    assert "nothing was sent" in late["message"]
    assert result.body["status"] == "failed"
    assert result.body["error"]["message"].startswith("line 'L3': ")


async def test_lines_are_in_an_answer_given_before_anything_was_sent(tmp_path: Path):
    kit = make_kit(tmp_path, CONFIG, files={"lines.yaml": EACH}, store=FlakyStore({"begin"}))
    result = await cancel(kit, {**REQUEST, "items": [{"id": "A"}, {"id": "B"}]})
    assert result.body["error"]["code"] == "store_unavailable"
    assert [(i["id"], i["status"], i["error"]["code"]) for i in result.body["items"]] == [
        ("A", "failed", "store_unavailable"),
        ("B", "failed", "store_unavailable"),
    ]
    assert kit.transport.sent == []
