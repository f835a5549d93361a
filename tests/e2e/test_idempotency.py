"""Idempotency keys and the ledger end to end: the gateway on a loopback port, a real HTTP
upstream, and each store backend on its real engine (a Redis key prefix or a PostgreSQL schema
of the test's own, see tests/services.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.clock import SystemClock
from tests.conftest import BASE_CONFIG, GatewayFactory, Result, Upstream
from tests.services import REDIS_URL, PrivateRedis, free_port

pytestmark = pytest.mark.e2e

BACKENDS = ["memory", "sqlite", "redis", "postgres"]
OTHER_KEY = "wms-caller-key-0123456789"
ADMIN_KEY = "ops-admin-key-0123456789"
# A second caller allowed on every connection (keys and ledger rows are per caller), and an
# admin that may reload.
CALLERS = BASE_CONFIG.replace(
    "callers:\n",
    f'callers:\n  - name: wms\n    key: {OTHER_KEY}\n    connections: ["*"]\n'
    f"  - name: ops\n    key: {ADMIN_KEY}\n    admin: true\n",
    1,
)
RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
RX_CANCEL = {"connection": "rxuniverse-lab", "id": "72544"}
RX_OTHER = {"connection": "rxuniverse-lab", "id": "72545"}
KEY = {"Idempotency-Key": "order-72544-cancel"}


def store_yaml(**settings: Any) -> str:
    """A `store:` section; JSON scalars are YAML scalars, so every value is quoted safely."""
    lines = "".join(
        f"  {name}: {orjson.dumps(value).decode()}\n" for name, value in settings.items()
    )
    return "store:\n" + lines


def config(store: str, **more: Any) -> str:
    if more:
        store += "".join(
            f"  {name}: {orjson.dumps(value).decode()}\n" for name, value in more.items()
        )
    return store + CALLERS


@dataclass(frozen=True)
class StoreSection:
    backend: str
    yaml: str


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> StoreSection:
    """The `store:` section of one backend, in a namespace of this test's own."""
    backend: str = request.param
    if backend == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        section = store_yaml(backend="redis", url=REDIS_URL, prefix=prefix)
    elif backend == "postgres":
        section = store_yaml(backend="postgres", dsn=request.getfixturevalue("postgres_dsn"))
    elif backend == "sqlite":
        section = store_yaml(backend="sqlite", path="ledger.db")
    else:
        section = store_yaml(backend="memory")
    return StoreSection(backend, section)


def replayed(result: Result) -> bool:
    return result.headers.get("Idempotent-Replayed") == "true"


def assert_in_progress(result: Result) -> None:
    assert result.status == 409, result.body
    assert result.body["status"] == "failed"
    assert result.body["error"]["code"] == "idempotency_in_progress"
    assert int(result.headers["Retry-After"]) >= 1
    assert result.body["upstream"] is None
    assert not replayed(result)


# --- replays ---------------------------------------------------------------------------------


async def test_same_key_and_body_is_replayed_byte_for_byte_and_sent_once(
    store: StoreSection, make_gateway: GatewayFactory, upstream: Upstream
):
    """Same key and body again: the first answer's bytes, marked replayed, sent upstream once."""
    gateway = await make_gateway(config(store.yaml), upstream_url=upstream.url)
    upstream.always(200, RX_OK)
    first = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert first.status == 200, first.body
    assert not replayed(first)
    second = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert second.status == first.status
    assert second.raw == first.raw
    assert replayed(second)
    assert second.headers["Content-Type"] == first.headers["Content-Type"]
    assert second.headers["X-Request-ID"] != first.headers["X-Request-ID"]  # a new request
    assert len(upstream.received) == 1
    assert len(gateway.events("cancellation.replayed")) == 1


async def test_a_replay_is_logged_as_received_replayed_and_completed(
    store: StoreSection, make_gateway: GatewayFactory, upstream: Upstream
):
    """A replay still ends with `cancellation.completed` (status of the stored answer,
    replayed: true), so every request has its completed line; nothing upstream between."""
    gateway = await make_gateway(config(store.yaml), upstream_url=upstream.url)
    upstream.always(200, RX_OK)
    await gateway.cancel(RX_CANCEL, headers=KEY)
    second = await gateway.cancel(RX_CANCEL, headers=KEY)
    # The body is the first answer's, its request_id too: the header names this request.
    request_id = second.headers["X-Request-ID"]
    mine = [line for line in gateway.logs if line.get("request_id") == request_id]
    events = [line["event"] for line in mine]
    assert events == [
        "cancellation.received",
        "cancellation.replayed",
        "cancellation.completed",
        "http.request",
    ]
    completed = mine[2]
    assert completed["replayed"] is True
    assert completed["status"] == "cancelled"
    assert completed["error_code"] is None
    assert completed["http_status"] == 200


async def test_the_same_json_written_differently_is_the_same_request(
    store: StoreSection, make_gateway: GatewayFactory, upstream: Upstream
):
    """The fingerprint is canonical JSON: another key order or spacing replays, not conflicts."""
    gateway = await make_gateway(config(store.yaml), upstream_url=upstream.url)
    upstream.always(200, RX_OK)
    first = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert first.status == 200, first.body
    respaced = b'{ "id" : "72544",\n  "connection": "rxuniverse-lab" }'
    again = await gateway.request(
        "POST",
        "/v1/cancellations",
        data=respaced,
        headers={**KEY, "Content-Type": "application/json"},
    )
    assert replayed(again)
    assert again.raw == first.raw
    assert len(upstream.received) == 1


async def test_a_definite_rejection_is_replayed_too(
    store: StoreSection, make_gateway: GatewayFactory, upstream: Upstream
):
    """A `rejected` outcome is final: it is stored and replayed like a success."""
    gateway = await make_gateway(config(store.yaml), upstream_url=upstream.url)
    upstream.always(400, {"error": "Order has been through a non-cancel station"})
    first = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert first.body["status"] == "rejected", first.body
    again = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert (again.status, again.raw) == (first.status, first.raw)
    assert replayed(again)
    assert len(upstream.received) == 1


async def test_a_failed_outcome_releases_the_key(
    store: StoreSection, make_gateway: GatewayFactory, upstream: Upstream
):
    """A `failed` outcome is not stored: the retry with the same key is sent again."""
    gateway = await make_gateway(
        config(store.yaml).replace(
            "  rxuniverse-lab:\n", "  rxuniverse-lab:\n    retry: {max_attempts: 1}\n"
        ),
        upstream_url=upstream.url,
    )
    upstream.answer(503, {"error": "Service Unavailable"})
    upstream.always(200, RX_OK)
    failed = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert failed.body["status"] == "failed", failed.body
    sent = len(upstream.received)
    retried = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert not replayed(retried)
    assert retried.body["status"] == "cancelled", retried.body
    assert retried.body["cancellation_id"] != failed.body["cancellation_id"]
    assert len(upstream.received) == sent + 1


async def test_a_reload_keeps_the_keys(
    store: StoreSection,
    make_gateway: GatewayFactory,
    upstream: Upstream,
):
    """A configuration reload keeps the store: the key still replays and nothing more is sent."""
    gateway = await make_gateway(config(store.yaml), upstream_url=upstream.url)
    upstream.always(200, RX_OK)
    first = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert first.status == 200, first.body
    reloaded = await gateway.request("POST", "/admin/reload", key=ADMIN_KEY)
    assert reloaded.status == 200, reloaded.body
    again = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert replayed(again)
    assert again.raw == first.raw
    assert len(upstream.received) == 1


# --- concurrency and conflicts ---------------------------------------------------------------


async def test_twenty_concurrent_requests_with_one_key_call_the_provider_once(
    store: StoreSection, make_gateway: GatewayFactory, upstream: Upstream
):
    """20 concurrent requests, one key: one is sent, the rest get 409 in progress or the replay."""
    gateway = await make_gateway(config(store.yaml), upstream_url=upstream.url)
    upstream.answer(200, RX_OK, delay_s=0.5)
    upstream.always(200, RX_OK)
    results = await asyncio.gather(*(gateway.cancel(RX_CANCEL, headers=KEY) for _ in range(20)))
    assert len(upstream.received) == 1
    [sent] = [r for r in results if r.status == 200 and not replayed(r)]
    assert sent.body["status"] == "cancelled"
    others = [r for r in results if r is not sent]
    in_progress = [r for r in others if not replayed(r)]
    for result in in_progress:
        assert_in_progress(result)
    assert in_progress, "no request overlapped the one in flight: the test proved nothing"
    for result in others:
        if replayed(result):
            assert (result.status, result.raw) == (sent.status, sent.raw)
    after = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert replayed(after)
    assert after.raw == sent.raw
    assert len(upstream.received) == 1


async def test_same_key_with_another_body_is_a_conflict_and_sends_nothing(
    store: StoreSection, make_gateway: GatewayFactory, upstream: Upstream
):
    """A key reused for another body is 422 `idempotency_conflict`, during and after; none sent."""
    gateway = await make_gateway(config(store.yaml), upstream_url=upstream.url)
    upstream.answer(200, RX_OK, delay_s=0.5)
    upstream.always(200, RX_OK)
    running = asyncio.create_task(gateway.cancel(RX_CANCEL, headers=KEY))
    await upstream.wait_for(1)
    conflicts = [await gateway.cancel(RX_OTHER, headers=KEY)]
    first = await running
    assert first.status == 200, first.body
    conflicts.append(await gateway.cancel(RX_OTHER, headers=KEY))
    for conflict in conflicts:
        assert conflict.status == 422, conflict.body
        assert conflict.body["status"] == "rejected"
        assert conflict.body["error"]["code"] == "idempotency_conflict"
        assert conflict.body["upstream"] is None
        assert not replayed(conflict)
    assert len(upstream.received) == 1
    again = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert replayed(again)
    assert again.raw == first.raw


# --- per caller ------------------------------------------------------------------------------


async def test_keys_and_ledger_rows_belong_to_their_caller(
    store: StoreSection,
    make_gateway: GatewayFactory,
    upstream: Upstream,
):
    """Keys and ledger rows are per caller: no cross-caller replay, GET is 404 to other callers."""
    gateway = await make_gateway(config(store.yaml), upstream_url=upstream.url)
    upstream.always(200, RX_OK)
    mine = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert mine.status == 200, mine.body
    theirs = await gateway.cancel(RX_CANCEL, headers=KEY, key=OTHER_KEY)
    assert theirs.status == 200, theirs.body
    assert not replayed(theirs)
    assert theirs.body["cancellation_id"] != mine.body["cancellation_id"]
    assert len(upstream.received) == 2
    # Each caller's key replays its own answer.
    assert (await gateway.cancel(RX_CANCEL, headers=KEY)).raw == mine.raw
    assert (await gateway.cancel(RX_CANCEL, headers=KEY, key=OTHER_KEY)).raw == theirs.raw
    assert len(upstream.received) == 2

    path = f"/v1/cancellations/{mine.body['cancellation_id']}"
    owner = await gateway.request("GET", path)
    assert owner.status == 200, owner.body
    assert owner.raw == mine.raw
    assert owner.headers["Content-Type"].startswith("application/json")
    stranger = await gateway.request("GET", path, key=OTHER_KEY)
    assert stranger.status == 404
    assert stranger.body["error"]["code"] == "not_found"
    assert stranger.body["connection"] is None  # nothing of the cancellation shows
    their_path = f"/v1/cancellations/{theirs.body['cancellation_id']}"
    assert (await gateway.request("GET", their_path, key=OTHER_KEY)).raw == theirs.raw
    assert (await gateway.request("GET", their_path)).status == 404


async def test_the_ledger_keeps_cancellations_without_a_key_and_refusals(
    store: StoreSection,
    make_gateway: GatewayFactory,
    upstream: Upstream,
):
    """The ledger keeps every cancellation, keyless and refused ones too, as they were answered."""
    gateway = await make_gateway(config(store.yaml), upstream_url=upstream.url)
    upstream.always(200, RX_OK)
    sent = await gateway.cancel(RX_CANCEL)
    refused = await gateway.cancel({"connection": "rxuniverse-lab"})
    assert sent.status == 200, sent.body
    assert refused.status == 422, refused.body
    for answer in (sent, refused):
        found = await gateway.request("GET", f"/v1/cancellations/{answer.body['cancellation_id']}")
        assert found.status == 200, found.body
        assert found.raw == answer.raw
    assert len(upstream.received) == 1


# --- time to live ----------------------------------------------------------------------------


class ShiftedClock(SystemClock):
    """The system clock, with a wall time the test moves forward."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def now(self) -> datetime:
        return super().now() + timedelta(seconds=self.offset_s)


async def test_a_key_expires_after_its_ttl_and_then_sends_again(
    store: StoreSection, make_gateway: GatewayFactory, upstream: Upstream
):
    """A key replays within `key_ttl_s` (injected clock) and is sent afresh once it has passed."""
    clock = ShiftedClock()
    ttl_s = 60.0
    gateway = await make_gateway(
        config(store.yaml, key_ttl_s=ttl_s), upstream_url=upstream.url, clock=clock
    )
    upstream.always(200, RX_OK)
    first = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert first.status == 200, first.body
    clock.offset_s = ttl_s - 1
    before = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert replayed(before)
    assert before.raw == first.raw
    assert len(upstream.received) == 1

    clock.offset_s = ttl_s + 1
    after = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert after.status == 200, after.body
    assert not replayed(after)
    assert after.body["cancellation_id"] != first.body["cancellation_id"]
    assert len(upstream.received) == 2
    again = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert replayed(again)
    assert again.raw == after.raw
    assert len(upstream.received) == 2


# --- the store does not answer ---------------------------------------------------------------


def assert_store_unavailable(result: Result) -> None:
    assert result.status == 503, result.body
    assert result.body["status"] == "failed"
    assert result.body["error"]["code"] == "store_unavailable"
    assert result.body["upstream"] is None
    assert int(result.headers["Retry-After"]) >= 1


async def test_redis_stopped_mid_run_fails_closed_and_recovers_without_restart(
    private_redis: PrivateRedis, make_gateway: GatewayFactory, upstream: Upstream
):
    """Redis down: 503 `store_unavailable`, nothing sent, /readyz 503; back up: works, no restart."""
    gateway = await make_gateway(
        config(store_yaml(backend="redis", url=private_redis.url, timeout_s=0.5)),
        upstream_url=upstream.url,
    )
    upstream.always(200, RX_OK)
    assert (await gateway.request("GET", "/readyz", key=None)).status == 200
    working = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert working.status == 200, working.body

    private_redis.stop()
    with_key = await gateway.cancel(RX_CANCEL, headers={"Idempotency-Key": "while-down"})
    without_key = await gateway.cancel(RX_CANCEL)
    for result in (with_key, without_key):
        assert_store_unavailable(result)
    assert len(upstream.received) == 1
    ready = await gateway.request("GET", "/readyz", key=None)
    assert ready.status == 503, ready.body
    assert ready.body["store"] == "redis"
    assert gateway.events("store.unavailable")

    private_redis.start()
    recovered = await gateway.cancel(RX_CANCEL, headers={"Idempotency-Key": "while-down"})
    assert recovered.status == 200, recovered.body
    assert not replayed(recovered)
    assert len(upstream.received) == 2
    assert (await gateway.request("GET", "/readyz", key=None)).status == 200
    again = await gateway.cancel(RX_CANCEL, headers={"Idempotency-Key": "while-down"})
    assert replayed(again)
    assert len(upstream.received) == 2


async def test_a_gateway_started_with_redis_down_becomes_ready_when_it_comes_up(
    private_redis: PrivateRedis, make_gateway: GatewayFactory, upstream: Upstream
):
    """A gateway started with its store down fails closed, then works once the store is up."""
    private_redis.stop()
    gateway = await make_gateway(
        config(store_yaml(backend="redis", url=private_redis.url, timeout_s=0.5)),
        upstream_url=upstream.url,
    )
    upstream.always(200, RX_OK)
    assert (await gateway.request("GET", "/readyz", key=None)).status == 503
    assert (await gateway.request("GET", "/healthz", key=None)).status == 200
    assert_store_unavailable(await gateway.cancel(RX_CANCEL, headers=KEY))
    assert upstream.received == []

    private_redis.start()
    assert (await gateway.request("GET", "/readyz", key=None)).status == 200
    working = await gateway.cancel(RX_CANCEL, headers=KEY)
    assert working.status == 200, working.body
    assert len(upstream.received) == 1


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"])
async def test_readyz_is_503_while_the_store_does_not_answer(
    backend: str, make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path
):
    """An unreachable store: /readyz 503, cancellations and lookups 503, nothing sent upstream."""
    port = free_port()  # nothing listens there
    if backend == "redis":
        section = store_yaml(backend="redis", url=f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
    elif backend == "postgres":
        dsn = f"postgresql://postgres@127.0.0.1:{port}/test"
        section = store_yaml(backend="postgres", dsn=dsn, timeout_s=0.5)
    else:
        (tmp_path / "not-a-folder").write_text("a file where the database's folder should be")
        section = store_yaml(backend="sqlite", path="not-a-folder/ledger.db", timeout_s=0.5)
    gateway = await make_gateway(config(section), upstream_url=upstream.url)
    upstream.always(200, RX_OK)
    ready = await gateway.request("GET", "/readyz", key=None)
    assert ready.status == 503, ready.body
    assert (ready.body["status"], ready.body["store"]) == ("unavailable", backend)
    assert_store_unavailable(await gateway.cancel(RX_CANCEL, headers=KEY))
    assert_store_unavailable(await gateway.cancel(RX_CANCEL))
    lookup = await gateway.request("GET", "/v1/cancellations/cxl_" + "0" * 26)
    assert_store_unavailable(lookup)
    assert upstream.received == []
