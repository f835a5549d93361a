"""`POST /v1/cancellations/batch` on a real gateway against a real upstream that answers by
order id: each item gets the envelope it would get alone, in order, with bounded concurrency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import BASE_CONFIG, Gateway, GatewayFactory, Result

pytestmark = pytest.mark.e2e

RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
LABS_KEY = "labs-caller-key-0123456789"
# A caller that may use rxuniverse connections only.
CONFIG = BASE_CONFIG.replace(
    "callers:\n",
    f"callers:\n  - name: labs\n    key: {LABS_KEY}\n    connections: ['rxuniverse-*']\n",
    1,
)
# Fields that differ between any two requests, whatever they ask.
VOLATILE = ("cancellation_id", "request_id", "trace_id", "cancelled_at")


@dataclass
class Lab:
    """An RxUniverse lab on loopback that answers by order id and measures concurrency:
    ``ok-*`` 200, ``missing-*`` 404 No record found, ``slow-*`` 200 after ``slow_s``,
    ``hang-*`` never in time."""

    url: str = ""
    received: list[str] = field(default_factory=list)
    slow_s: float = 0.15
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        order = request.match_info["order"]
        self.received.append(order)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if order.startswith("slow-"):
                await asyncio.sleep(self.slow_s)
            elif order.startswith("hang-"):
                await asyncio.sleep(30)
            if order.startswith("missing-"):
                return web.json_response({"error": "No record found"}, status=404)
            return web.json_response({**RX_OK, "orderNumber": order})
        finally:
            self.in_flight -= 1


@pytest.fixture
async def lab(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Lab:
    fake = Lab()
    app = web.Application()
    app.router.add_delete("/rxuniverse/api/v2/orders/{order}", fake.handle)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


async def batch(gateway: Gateway, items: Any, **kwargs: Any) -> Result:
    return await gateway.request("POST", "/v1/cancellations/batch", json={"items": items}, **kwargs)


def rx(order: str) -> dict[str, str]:
    return {"connection": "rxuniverse-lab", "id": order}


def steady(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope without what differs between two requests."""
    kept = {k: v for k, v in envelope.items() if k not in VOLATILE}
    if kept.get("upstream"):
        kept["upstream"] = {k: v for k, v in kept["upstream"].items() if k != "latency_ms"}
    return kept


MIXED: list[Any] = [
    rx("ok-1"),
    {"connection": "rxuniverse-lab", "colour": "red"},  # invalid: unknown field, no id
    42,  # not an object
    {"connection": "stateset-main", "id": "asn_1", "reason": "r"},  # not for this caller
    rx("missing-1"),
]


async def test_mixed_batch_answers_each_item_as_a_single_call_would(
    make_gateway: GatewayFactory, lab: Lab
):
    """A success, an invalid item, 42, a forbidden connection and a provider 404: 200, the items
    in order with the envelopes single calls give, the counts, and only valid items sent."""
    gateway = await make_gateway(CONFIG, upstream_url=lab.url)
    result = await batch(gateway, MIXED, key=LABS_KEY)
    assert result.status == 200, result.body
    items = result.body["items"]
    assert len(items) == len(MIXED)
    assert [(i["status"], (i["error"] or {}).get("code")) for i in items] == [
        ("cancelled", None),
        ("rejected", "invalid_request"),
        ("rejected", "invalid_request"),
        ("rejected", "forbidden"),
        ("rejected", "not_found"),
    ]
    assert items[0]["resource_id"] == "ok-1"
    assert items[4]["resource_id"] == "missing-1"
    assert {f["loc"] for f in items[1]["error"]["fields"]} == {"id", "colour"}
    assert [f["loc"] for f in items[2]["error"]["fields"]] == ["body"]
    assert result.body["counts"] == {
        "cancelled": 1,
        "already_cancelled": 0,
        "rejected": 4,
        "failed": 0,
        "pending": 0,
    }
    assert result.body["request_id"] == result.headers["X-Request-ID"]
    assert {i["request_id"] for i in items} == {result.body["request_id"]}
    assert {i["trace_id"] for i in items} == {result.body["trace_id"]}
    assert len({i["cancellation_id"] for i in items}) == len(MIXED)  # each its own
    assert sorted(lab.received) == ["missing-1", "ok-1"]

    # The same items one by one: the same envelopes.
    lab.received.clear()
    for item, in_batch in zip(MIXED, items, strict=True):
        alone = await gateway.cancel(item, key=LABS_KEY)
        assert steady(alone.body) == steady(in_batch)
    assert sorted(lab.received) == ["missing-1", "ok-1"]


async def test_batch_items_are_logged_as_cancellations(make_gateway: GatewayFactory, lab: Lab):
    """Each item logs its own cancellation.completed, all under the batch's request id."""
    gateway = await make_gateway(CONFIG, upstream_url=lab.url)
    result = await batch(gateway, [rx("ok-1"), rx("missing-2"), 42])
    completed = gateway.events("cancellation.completed")
    assert sorted(e["status"] for e in completed) == ["cancelled", "rejected", "rejected"]
    assert {e["request_id"] for e in completed} == {result.body["request_id"]}
    assert {e["cancellation_id"] for e in completed} == {
        i["cancellation_id"] for i in result.body["items"]
    }


@pytest.mark.parametrize(
    ("document", "loc"),
    [
        ({"items": []}, "items"),
        ({"items": [rx(f"ok-{n}") for n in range(101)]}, "items"),
        ({"items": [rx("ok-1")], "dry_run": True}, "body"),
        ({"items": rx("ok-1")}, "items"),
        ({"entries": [rx("ok-1")]}, "body"),
        ([rx("ok-1")], "body"),
    ],
)
async def test_malformed_batch_is_refused_whole(
    make_gateway: GatewayFactory, lab: Lab, document: Any, loc: str
):
    """0 or 101 items, extra top-level fields, items not a list, a body not an object → 422
    invalid_request envelope naming the field; nothing is sent."""
    gateway = await make_gateway(CONFIG, upstream_url=lab.url)
    result = await gateway.request("POST", "/v1/cancellations/batch", json=document)
    assert result.status == 422, result.body
    assert result.body["status"] == "rejected"
    assert result.body["error"]["code"] == "invalid_request"
    assert [f["loc"] for f in result.body["error"]["fields"]] == [loc]
    assert lab.received == []
    assert gateway.events("cancellation.completed") == []


async def test_batch_body_that_is_not_json_is_refused(make_gateway: GatewayFactory, lab: Lab):
    """A batch body that is not JSON → 422 on body."""
    gateway = await make_gateway(CONFIG, upstream_url=lab.url)
    result = await gateway.request("POST", "/v1/cancellations/batch", data=b'{"items": [')
    assert result.status == 422
    assert [f["loc"] for f in result.body["error"]["fields"]] == ["body"]


async def test_a_hundred_items_are_accepted(make_gateway: GatewayFactory, lab: Lab):
    """The limit is 100 items: a batch of exactly 100 is answered item by item."""
    gateway = await make_gateway(CONFIG, upstream_url=lab.url)
    result = await batch(gateway, [rx(f"ok-{n}") for n in range(100)])
    assert result.status == 200, result.body
    assert [i["resource_id"] for i in result.body["items"]] == [f"ok-{n}" for n in range(100)]
    assert result.body["counts"]["cancelled"] == 100
    assert len(lab.received) == 100


async def test_batch_needs_a_caller_key(make_gateway: GatewayFactory, lab: Lab):
    """No caller key → 401 envelope for the whole batch; nothing is sent."""
    gateway = await make_gateway(CONFIG, upstream_url=lab.url)
    result = await batch(gateway, [rx("ok-1")], key=None)
    assert result.status == 401
    assert result.body["error"]["code"] == "unauthorized"
    assert lab.received == []


async def test_repeated_batch_with_an_idempotency_key_replays_every_item(
    make_gateway: GatewayFactory, lab: Lab
):
    """With Idempotency-Key K, the same batch again replays each item (same envelopes, nothing
    sent), each item is in the ledger, and item i answers a single call with key K#i."""
    gateway = await make_gateway(CONFIG, upstream_url=lab.url)
    items = [rx("ok-1"), rx("missing-1"), rx("ok-2")]
    key = {"Idempotency-Key": "batch-key-1"}
    first = await batch(gateway, items, headers=key)
    assert first.status == 200, first.body
    assert len(lab.received) == 3

    again = await batch(gateway, items, headers=key)
    assert again.status == 200
    assert again.body["items"] == first.body["items"]
    assert again.body["counts"] == first.body["counts"]
    assert len(lab.received) == 3
    assert len(gateway.events("cancellation.replayed")) == 3

    for envelope in first.body["items"]:
        stored = await gateway.request("GET", f"/v1/cancellations/{envelope['cancellation_id']}")
        assert stored.status == 200
        assert stored.body == envelope

    single = await gateway.cancel(items[1], headers={"Idempotency-Key": "batch-key-1#1"})
    assert single.headers["Idempotent-Replayed"] == "true"
    assert single.body == first.body["items"][1]
    assert len(lab.received) == 3


async def test_batch_key_reused_with_other_items_conflicts_per_item(
    make_gateway: GatewayFactory, lab: Lab
):
    """The same Idempotency-Key with a changed item: that item is an idempotency_conflict, the
    unchanged one is replayed."""
    gateway = await make_gateway(CONFIG, upstream_url=lab.url)
    key = {"Idempotency-Key": "batch-key-2"}
    await batch(gateway, [rx("ok-1"), rx("ok-2")], headers=key)
    changed = await batch(gateway, [rx("ok-1"), rx("ok-3")], headers=key)
    first, second = changed.body["items"]
    assert first["status"] == "cancelled"
    assert second["error"]["code"] == "idempotency_conflict"
    assert sorted(lab.received) == ["ok-1", "ok-2"]


async def test_batch_idempotency_key_leaves_room_for_the_item_suffix(
    make_gateway: GatewayFactory, lab: Lab
):
    """A batch key over 250 characters → 422 on headers.Idempotency-Key (item i uses K#i)."""
    gateway = await make_gateway(CONFIG, upstream_url=lab.url)
    result = await batch(gateway, [rx("ok-1")], headers={"Idempotency-Key": "k" * 251})
    assert result.status == 422
    assert [f["loc"] for f in result.body["error"]["fields"]] == ["headers.Idempotency-Key"]
    fits = await batch(gateway, [rx("ok-1")], headers={"Idempotency-Key": "k" * 250})
    assert fits.status == 200
    assert lab.received == ["ok-1"]


async def test_batch_concurrency_is_bounded(make_gateway: GatewayFactory, lab: Lab):
    """server.batch_concurrency: 2 → never more than 2 upstream requests in flight at once, and
    2 do run together."""
    gateway = await make_gateway("server: {batch_concurrency: 2}\n" + CONFIG, upstream_url=lab.url)
    started = time.monotonic()
    result = await batch(gateway, [rx(f"slow-{n}") for n in range(6)])
    elapsed = time.monotonic() - started
    assert result.body["counts"]["cancelled"] == 6
    assert len(lab.received) == 6
    assert lab.most_in_flight == 2
    assert elapsed >= 3 * lab.slow_s  # three rounds of two


async def test_one_hanging_item_does_not_hold_up_the_others(make_gateway: GatewayFactory, lab: Lab):
    """An item whose provider never answers times out on its own budget; the others are
    answered, and the batch comes back within that budget."""
    config = CONFIG.replace(
        "  rxuniverse-lab:\n", "  rxuniverse-lab:\n    timeout_s: 0.5\n", 1
    ).replace("    timeout_s: 2\n", "", 4)
    gateway = await make_gateway(config, upstream_url=lab.url)
    started = time.monotonic()
    result = await batch(gateway, [rx("ok-1"), rx("hang-1"), rx("missing-1"), rx("ok-2")])
    elapsed = time.monotonic() - started
    assert result.status == 200
    answered = [(i["status"], (i["error"] or {}).get("code")) for i in result.body["items"]]
    assert answered == [
        ("cancelled", None),
        ("failed", "provider_timeout"),
        ("rejected", "not_found"),
        ("cancelled", None),
    ]
    assert result.body["counts"] == {
        "cancelled": 2,
        "already_cancelled": 0,
        "rejected": 1,
        "failed": 1,
        "pending": 0,
    }
    assert elapsed < 2.0
    done = [e for e in gateway.events("cancellation.completed") if e["status"] == "cancelled"]
    hung = next(e for e in gateway.events("cancellation.completed") if e["status"] == "failed")
    assert len(done) == 2
    assert hung["duration_ms"] >= 400


@pytest.mark.parametrize("value", ["true", "maybe"])
async def test_batch_with_dry_run_sends_nothing(make_gateway: GatewayFactory, lab: Lab, value: str):
    """A batch with ?dry_run=true (or an invalid dry_run) is refused and never reaches the
    provider."""
    gateway = await make_gateway(CONFIG, upstream_url=lab.url)
    result = await gateway.request(
        "POST", f"/v1/cancellations/batch?dry_run={value}", json={"items": [rx("ok-1")]}
    )
    assert result.status == 422
    assert result.body["error"]["fields"][0]["loc"] == "query.dry_run"
    assert lab.received == []


def nested(depth: int) -> str:
    """JSON text of an object ``depth`` levels deep (too deep for orjson to write)."""
    return '{"x":' * depth + '"deep"' + "}" * depth


@pytest.mark.parametrize("depth", [254, 255, 300, 1000])
async def test_a_deeply_nested_item_gets_its_own_422_and_stops_nothing(
    make_gateway: GatewayFactory, lab: Lab, depth: int
):
    """An item nested hundreds of levels (in an unknown field, in params, or as the item
    itself) is answered with its own invalid_request; the items around it are cancelled."""
    gateway = await make_gateway(CONFIG, upstream_url=lab.url)
    items = [
        '{"connection": "rxuniverse-lab", "id": "ok-1"}',
        f'{{"connection": "rxuniverse-lab", "id": "ok-2", "extra": {nested(depth)}}}',
        f'{{"connection": "rxuniverse-lab", "id": "ok-3", "params": {{"d": {nested(depth)}}}}}',
        nested(depth),
        '{"connection": "rxuniverse-lab", "id": "ok-4"}',
    ]
    body = ('{"items": [' + ", ".join(items) + "]}").encode()
    result = await gateway.request("POST", "/v1/cancellations/batch", data=body)
    assert result.status == 200, result.body
    statuses = [(i["status"], (i["error"] or {}).get("code")) for i in result.body["items"]]
    assert statuses == [
        ("cancelled", None),
        ("rejected", "invalid_request"),
        ("rejected", "invalid_request"),
        ("rejected", "invalid_request"),
        ("cancelled", None),
    ]
    assert sorted(lab.received) == ["ok-1", "ok-4"]
    assert not gateway.events("cancellation.crashed")
    assert not gateway.events("request.crashed")
