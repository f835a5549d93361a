"""Reading the ledger, end to end: `GET /v1/cancellations` lists the caller's own final
cancellations (every caller's for an admin), newest first, filtered, page by page."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import BASE_CONFIG, Gateway, GatewayFactory, Upstream

pytestmark = pytest.mark.e2e

ADMIN_KEY = "ledger-admin-key-0123456789"
LIMITED_KEY = "limited-caller-key-0123456789"
CONFIG = BASE_CONFIG.replace(
    "callers:\n", f"callers:\n  - name: ops\n    key: {ADMIN_KEY}\n    admin: true\n", 1
)
STATESET_OK = {"id": "x", "status": "cancelled", "cancelled_at": "2024-01-01T00:00:00Z"}
SHIPPER_OK = {"metadata": {"http_status_code": 200}}


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    return await make_gateway(CONFIG, upstream_url=upstream.url)


async def listed(gateway: Gateway, query: str = "", key: str | None = None) -> Any:
    kwargs = {"key": key} if key else {}
    result = await gateway.request("GET", f"/v1/cancellations{query}", **kwargs)
    assert result.status == 200, result.body
    return result.body


async def make(gateway: Gateway, upstream: Upstream, count: int) -> list[str]:
    ids = []
    for n in range(count):
        upstream.answer(200, STATESET_OK)
        result = await gateway.cancel(
            {"connection": "stateset-main", "id": f"asn_{n}", "reason": "r"}
        )
        assert result.status == 200, result.body
        ids.append(result.body["cancellation_id"])
    return ids


async def test_the_callers_cancellations_newest_first_page_by_page(
    gateway: Gateway, upstream: Upstream
):
    ids = await make(gateway, upstream, 5)
    first = await listed(gateway, "?limit=2")
    assert [e["cancellation_id"] for e in first["items"]] == ids[::-1][:2]
    seen, cursor = [], None
    while True:
        page = await listed(gateway, f"?limit=2{'&cursor=' + cursor if cursor else ''}")
        seen += [e["cancellation_id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # every one once, no gap
    assert first["items"][0]["status"] == "cancelled"  # the envelope as answered


async def test_filters_narrow_the_list(gateway: Gateway, upstream: Upstream):
    ids = await make(gateway, upstream, 2)
    upstream.answer(404, {"error": {"type": "invalid_request_error", "code": "not_found"}})
    gone = await gateway.cancel({"connection": "stateset-main", "id": "asn_gone", "reason": "r"})
    by_status = await listed(gateway, "?status=rejected")
    assert [e["cancellation_id"] for e in by_status["items"]] == [gone.body["cancellation_id"]]
    by_id = await listed(gateway, "?resource_id=asn_1")
    assert [e["cancellation_id"] for e in by_id["items"]] == [ids[1]]
    none = await listed(gateway, "?connection=shipper-main")
    assert none == {"items": [], "next_cursor": None}
    later = await listed(gateway, "?since=2100-01-01T00:00:00Z")
    assert later["items"] == []
    earlier = await listed(gateway, "?until=2100-01-01T00:00:00%2B00:00")
    assert len(earlier["items"]) == 3


async def test_a_caller_sees_its_own_and_an_admin_sees_all(gateway: Gateway, upstream: Upstream):
    await make(gateway, upstream, 2)
    upstream.answer(200, SHIPPER_OK)
    limited = await gateway.cancel(
        {"connection": "shipper-main", "id": "SO-1", "reason": "r"}, key=LIMITED_KEY
    )
    mine = await listed(gateway, key=LIMITED_KEY)
    assert [e["cancellation_id"] for e in mine["items"]] == [limited.body["cancellation_id"]]
    assert len((await listed(gateway))["items"]) == 2  # oms's own
    assert len((await listed(gateway, key=ADMIN_KEY))["items"]) == 3


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("?status=done", "query.status"),
        ("?limit=0", "query.limit"),
        ("?limit=201", "query.limit"),
        ("?since=yesterday", "query.since"),
        ("?until=2026-01-01T00:00:00", "query.until"),  # no offset
        ("?cursor=abc", "query.cursor"),
        ("?colour=red", "query.colour"),
        ("?status=failed&status=rejected", "query.status"),
    ],
)
async def test_an_invalid_filter_is_a_422(gateway: Gateway, query: str, loc: str):
    result = await gateway.request("GET", f"/v1/cancellations{query}")
    assert result.status == 422, result.body
    assert result.body["error"]["code"] == "invalid_request"
    assert [f["loc"] for f in result.body["error"]["fields"]] == [loc]


async def test_listing_needs_a_caller_key(gateway: Gateway):
    result = await gateway.request("GET", "/v1/cancellations", key=None)
    assert result.status == 401
