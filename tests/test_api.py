"""The HTTP handlers without a socket: the real app from ``create_app`` with a fake transport,
clock and store, each request made by aiohttp's ``make_mocked_request`` and passed through the
error and authentication middlewares, with the keys the request-context middleware sets."""

from __future__ import annotations

import asyncio
import functools
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.payload import Payload
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.test_utils import make_mocked_request
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from gateway import api
from gateway.api import CONFIG, CURRENT, INFO, parse_batch
from gateway.app import authenticate, create_app, errors_to_envelope
from gateway.errors import ErrorCode, GatewayError
from gateway.inbound import RequestInfo
from gateway.loader import load
from gateway.models import MAX_BATCH, MAX_BATCH_KEY
from gateway.tracing import request_id_from, trace_from
from gateway.translate.wire import UpstreamRequest, UpstreamResponse
from tests.conftest import BASE_CONFIG, CALLER_KEY, CANARIES
from tests.fakes import (
    ENV,
    LIMITED_KEY,
    FakeClock,
    FakeTransport,
    FlakyStore,
    load_runtime,
    make_logging,
    response,
    write_config,
)

ADMIN_KEY = "ops-admin-key-0123456789"
CONFIG_TEXT = BASE_CONFIG.replace(
    "callers:\n", f"callers:\n  - name: ops\n    key: {ADMIN_KEY}\n    admin: true\n", 1
)
RX_CANCEL = {"connection": "rxuniverse-lab", "id": "72544"}
RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}


@dataclass
class Result:
    status: int
    headers: Any
    raw: bytes

    @property
    def body(self) -> Any:
        return orjson.loads(self.raw)

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = self.body["error"]
        return error


@dataclass
class Api:
    """The app and its fakes; ``call`` makes one request to one handler."""

    app: web.Application
    transport: FakeTransport
    store: FlakyStore
    folder: Path
    stream: io.StringIO
    request_ids: list[str] = field(default_factory=list)

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = [orjson.loads(line) for line in self.stream.getvalue().splitlines()]
        return [line for line in lines if line["event"] == name]

    async def call(
        self,
        handler: Handler,
        method: str,
        path: str,
        *,
        key: str | None = CALLER_KEY,
        json: Any = None,
        headers: dict[str, str] | None = None,
        match_info: dict[str, str] | None = None,
        payload: StreamReader = EMPTY_PAYLOAD,
    ) -> Result:
        """``json`` is the body, all there with the headers; ``payload`` a body of the test's
        own (one that comes later, or breaks)."""
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        if json is not None:
            data = orjson.dumps(json)
            sent["Content-Length"] = str(len(data))
            payload = body_stream()
            payload.feed_data(data)
            payload.feed_eof()
        request = make_mocked_request(
            method, path, headers=sent, app=self.app, payload=payload, match_info=match_info or {}
        )
        # What the request-context middleware sets for everything after it.
        request[INFO] = RequestInfo(
            request_id_from(sent.get("X-Request-ID")),
            trace_from(None),
            sent.get("Idempotency-Key"),
        )
        request[CURRENT] = self.app[CONFIG].current
        self.request_ids.append(request[INFO].request_id)
        answer = await errors_to_envelope(request, functools.partial(authenticate, handler=handler))
        assert isinstance(answer, web.Response)
        body = answer.body  # bytes, or the payload aiohttp made of a str
        assert isinstance(body, bytes | Payload), body
        raw = body if isinstance(body, bytes) else await body.as_bytes()
        return Result(answer.status, answer.headers, raw)


class _OpenConnection(BaseProtocol):
    """The client's connection, still open: a body not all there yet may be waited for."""

    @property
    def connected(self) -> bool:
        return True


def body_stream() -> StreamReader:
    """A request body as the server's parser feeds it."""
    return StreamReader(_OpenConnection(asyncio.get_running_loop()), 2**16)


def make_api(folder: Path, config: str = CONFIG_TEXT, store: FlakyStore | None = None) -> Api:
    runtime = load_runtime(folder, config)
    redactor, log, stream = make_logging(runtime)
    transport, store = FakeTransport(), store or FlakyStore()
    app = create_app(
        runtime,
        log=log,
        redactor=redactor,
        transport=transport,
        clock=FakeClock(),
        store=store,
        loader=functools.partial(load, runtime.path, ENV),
    )
    return Api(app, transport, store, folder, stream)


@pytest.fixture
def client(tmp_path: Path) -> Api:
    return make_api(tmp_path)


async def create(client: Api, query: str = "", **kwargs: Any) -> Result:
    return await client.call(api.create_cancellation, "POST", f"/v1/cancellations{query}", **kwargs)


# --- POST /v1/cancellations and its dry_run flag -------------------------------------------


async def test_a_cancellation_answers_its_envelope(client: Api):
    client.transport.answer(response(200, RX_OK))
    result = await create(client, json=RX_CANCEL, headers={"X-Request-ID": "abc-1"})
    assert result.status == 200
    assert result.body["status"] == "cancelled"
    assert result.headers["Content-Type"] == "application/json"
    assert result.headers["X-Request-ID"] == "abc-1"


@pytest.mark.parametrize("query", ["", "?dry_run=false"])
async def test_without_a_dry_run_the_cancellation_is_sent(client: Api, query: str):
    client.transport.answer(response(200, RX_OK))
    result = await create(client, query, json=RX_CANCEL)
    assert result.body["status"] == "cancelled"
    assert len(client.transport.sent) == 1


async def test_a_dry_run_shows_what_would_be_sent_and_sends_nothing(client: Api):
    result = await create(client, "?dry_run=true", json=RX_CANCEL)
    assert result.status == 200
    assert result.body["dry_run"] is True
    assert result.body["upstream_request"]["method"] == "DELETE"
    assert client.transport.sent == []
    assert client.store.calls == []
    [previewed] = client.events("cancellation.previewed")
    assert (previewed["connection"], previewed["resource_id"]) == ("rxuniverse-lab", "72544")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?dry_run=true&dry_run=false", "is given more than once"),
        ("?dry_run=true&dry_run=true", "is given more than once"),
        ("?dry_run=yes", "must be true or false"),
        ("?dry_run=TRUE", "must be true or false"),
        ("?dry_run=", "must be true or false"),
    ],
)
async def test_a_dry_run_flag_that_is_not_one_true_or_false_is_refused(
    client: Api, query: str, message: str
):
    """Which value counts would be a guess, and a dry run must never cancel."""
    result = await create(client, query, json=RX_CANCEL)
    assert (result.status, result.error["code"]) == (422, "invalid_request")
    assert result.error["fields"] == [{"loc": "query.dry_run", "message": message}]
    assert client.transport.sent == []


async def test_a_body_over_the_limit_is_413_before_it_is_read(client: Api):
    too_large = {**RX_CANCEL, "notes": "n" * 70_000}
    result = await create(client, json=too_large)
    assert (result.status, result.error["code"]) == (413, "payload_too_large")
    assert client.transport.sent == []


async def test_a_body_that_comes_after_the_headers_is_waited_for(client: Api):
    client.transport.answer(response(200, RX_OK))
    payload = body_stream()

    def arrive() -> None:
        payload.feed_data(orjson.dumps(RX_CANCEL))
        payload.feed_eof()

    asyncio.get_running_loop().call_soon(arrive)
    result = await create(client, payload=payload)
    assert result.body["status"] == "cancelled"


async def test_a_body_that_cannot_be_read_is_a_422_and_one_warning(client: Api):
    """A body not valid for its Content-Encoding is the client's fault: no traceback."""
    payload = body_stream()
    payload.set_exception(RequestPayloadError("Can not decode content-encoding: gzip"))
    result = await create(client, payload=payload)
    assert (result.status, result.error["code"]) == (422, "invalid_request")
    assert result.error["fields"] == [{"loc": "body", "message": "could not be read"}]
    [warning] = client.events("request.body_unreadable")
    assert warning["reason"] == "Can not decode content-encoding: gzip"
    assert client.events("request.crashed") == []
    assert client.transport.sent == []


async def test_no_caller_key_is_401_with_the_scheme_to_use(client: Api):
    result = await create(client, key=None, json=RX_CANCEL)
    assert (result.status, result.error["code"]) == (401, "unauthorized")
    assert result.headers["WWW-Authenticate"] == 'Bearer realm="cancel-gateway"'
    assert client.transport.sent == []


async def test_a_bug_in_a_handler_is_a_500_envelope_logged_with_the_request_id(client: Api):
    async def broken(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("boom: a bug")

    result = await client.call(broken, "GET", "/v1/connections")
    assert (result.status, result.error["code"]) == (500, "internal_error")
    assert b"boom" not in result.raw
    [crash] = client.events("request.crashed")
    assert "boom" in crash["exception"]
    assert client.request_ids[-1] in result.error["message"]


# --- POST /v1/cancellations/batch ---------------------------------------------------------


async def test_a_batch_answers_each_item_in_order_with_counts(client: Api):
    client.transport.answer(response(200, RX_OK), response(404, {"error": "No record found"}))
    items = [RX_CANCEL, {**RX_CANCEL, "id": "72545"}, {"connection": "nowhere", "id": "1"}]
    result = await client.call(
        api.create_batch, "POST", "/v1/cancellations/batch", json={"items": items}
    )
    assert result.status == 200
    statuses = [item["status"] for item in result.body["items"]]
    assert statuses[2] == "rejected"
    assert sorted(statuses[:2]) == ["cancelled", "rejected"]  # sent concurrently
    assert result.body["counts"] == {
        "cancelled": 1,
        "already_cancelled": 0,
        "rejected": 2,
        "failed": 0,
        "pending": 0,
    }


async def test_a_batch_item_i_uses_the_key_k_hash_i(client: Api):
    client.transport.default = response(200, RX_OK)
    body = {"items": [RX_CANCEL, {**RX_CANCEL, "id": "72545"}]}
    headers = {"Idempotency-Key": "batch-1"}
    path = "/v1/cancellations/batch"
    first = await client.call(api.create_batch, "POST", path, json=body, headers=headers)
    again = await client.call(api.create_batch, "POST", path, json=body, headers=headers)
    assert again.body["items"] == first.body["items"]  # each item replayed
    assert len(client.transport.sent) == 2
    alone = await create(client, json=RX_CANCEL, headers={"Idempotency-Key": "batch-1#0"})
    assert alone.headers.get("Idempotent-Replayed") == "true"


async def test_a_batch_has_no_dry_run(client: Api):
    result = await client.call(
        api.create_batch,
        "POST",
        "/v1/cancellations/batch?dry_run=true",
        json={"items": [RX_CANCEL]},
    )
    assert result.status == 422
    assert result.error["fields"][0]["loc"] == "query.dry_run"
    assert client.transport.sent == []


@pytest.mark.parametrize("count", [1, MAX_BATCH])
def test_a_batch_holds_1_to_max_batch_items(count: int):
    assert len(parse_batch(orjson.dumps({"items": [{}] * count}), None)) == count


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"items": []}, "items"),
        ({"items": [{}] * (MAX_BATCH + 1)}, "items"),
        ({"items": {"0": {}}}, "items"),
        ({"items": [{}], "more": 1}, "body"),
        ([{}], "body"),
    ],
)
def test_a_batch_outside_its_limits_is_refused(body: Any, loc: str):
    with pytest.raises(GatewayError) as refused:
        parse_batch(orjson.dumps(body), None)
    assert refused.value.code is ErrorCode.INVALID_REQUEST
    assert [f[0] for f in refused.value.fields] == [loc]


def test_a_batch_key_leaves_room_for_the_item_suffix():
    body = orjson.dumps({"items": [{}]})
    assert parse_batch(body, "k" * MAX_BATCH_KEY) == [{}]
    for key in ("k" * (MAX_BATCH_KEY + 1), "bad\nkey"):
        with pytest.raises(GatewayError) as refused:
            parse_batch(body, key)
        assert refused.value.fields[0][0] == "headers.Idempotency-Key"


def test_a_batch_that_is_not_json_is_refused():
    with pytest.raises(GatewayError) as refused:
        parse_batch(b"{", None)
    assert refused.value.fields == [("body", "not valid JSON")]


# --- GET /v1/cancellations/{id} -----------------------------------------------------------


async def get(client: Api, cancellation_id: str, key: str = CALLER_KEY) -> Result:
    return await client.call(
        api.get_cancellation,
        "GET",
        f"/v1/cancellations/{cancellation_id}",
        key=key,
        match_info={"cancellation_id": cancellation_id},
    )


async def test_a_cancellation_is_read_back_as_it_was_answered(client: Api):
    client.transport.answer(response(200, RX_OK))
    answered = await create(client, json=RX_CANCEL)
    result = await get(client, answered.body["cancellation_id"])
    assert (result.status, result.raw) == (200, answered.raw)


@pytest.mark.parametrize("cancellation_id", ["nope", "cxl_" + "A" * 26, "cxl_" + "0" * 27])
async def test_an_id_of_another_form_is_404_without_asking_the_store(
    client: Api, cancellation_id: str
):
    result = await get(client, cancellation_id)
    assert (result.status, result.error["code"]) == (404, "not_found")
    assert "lookup" not in client.store.calls


async def test_an_unknown_id_is_404(client: Api):
    result = await get(client, "cxl_" + "0" * 26)
    assert (result.status, result.error["code"]) == (404, "not_found")
    assert client.store.calls == ["lookup"]


async def test_another_callers_cancellation_is_404_as_if_unknown(client: Api):
    client.transport.answer(response(200, {"metadata": {"http_status_code": 200}}))
    mine = await create(
        client, key=LIMITED_KEY, json={"connection": "shipper-main", "id": "SO-1", "reason": "r"}
    )
    assert mine.status == 200
    result = await get(client, mine.body["cancellation_id"])  # asked by oms
    assert (result.status, result.error["code"]) == (404, "not_found")


async def test_a_cancellation_still_running_is_409_with_retry_after(client: Api):
    looked_up: list[Result] = []

    async def meanwhile(
        request: UpstreamRequest, timeout_s: float, connect_s: float
    ) -> UpstreamResponse:
        looked_up.append(await get(client, client.store.begun[-1].cancellation_id))
        return response(200, RX_OK)

    client.transport.answer(meanwhile)
    done = await create(client, json=RX_CANCEL)
    [running] = looked_up
    assert (running.status, running.error["code"]) == (409, "idempotency_in_progress")
    assert running.headers["Retry-After"] == "1"
    assert (await get(client, done.body["cancellation_id"])).status == 200


async def test_a_ledger_that_does_not_answer_is_503(tmp_path: Path):
    client = make_api(tmp_path, store=FlakyStore(failing={"lookup"}))
    result = await get(client, "cxl_" + "0" * 26)
    assert (result.status, result.error["code"]) == (503, "store_unavailable")
    assert result.headers["Retry-After"] == "1"


# --- GET /v1/connections ------------------------------------------------------------------


async def test_connections_lists_only_what_the_caller_may_use_and_no_secret(client: Api):
    result = await client.call(api.list_connections, "GET", "/v1/connections", key=LIMITED_KEY)
    assert result.status == 200
    [shipper] = result.body["connections"]
    assert (shipper["name"], shipper["provider"], shipper["resources"]) == (
        "shipper-main",
        "shipper",
        ["sales_order"],
    )
    assert shipper["params"]["warehouse_id"]["per_request"] is True
    everything = await client.call(api.list_connections, "GET", "/v1/connections")
    names = [c["name"] for c in everything.body["connections"]]
    assert names == sorted(["rxuniverse-lab", "shipper-main", "shoplazza-main", "stateset-main"])
    for secret in (*CANARIES.values(), CALLER_KEY, ADMIN_KEY):
        assert secret.encode() not in result.raw + everything.raw


# --- health, readiness, metrics -----------------------------------------------------------


async def test_healthz_answers_ok_without_a_key(client: Api):
    result = await client.call(api.healthz, "GET", "/healthz", key=None)
    assert (result.status, result.body) == (200, {"status": "ok"})


async def test_readyz_is_ready_when_the_store_answers(client: Api):
    result = await client.call(api.readyz, "GET", "/readyz", key=None)
    assert result.status == 200
    assert result.body == {
        "status": "ready",
        "config_version": client.app[CONFIG].current.version,
        "store": "flaky-memory",
    }


async def test_readyz_is_503_when_the_store_does_not_answer(tmp_path: Path):
    client = make_api(tmp_path, store=FlakyStore(failing={"ping"}))
    result = await client.call(api.readyz, "GET", "/readyz", key=None)
    assert (result.status, result.body["status"]) == (503, "unavailable")
    [event] = client.events("store.unavailable")
    assert (event["level"], event["backend"]) == ("warning", "flaky-memory")


async def test_metrics_expose_the_configuration_served(client: Api):
    result = await client.call(api.metrics, "GET", "/metrics", key=None)
    assert result.status == 200
    version = client.app[CONFIG].current.version
    assert f'config_version="{version}"'.encode() in result.raw


async def test_the_openapi_document_is_served(client: Api):
    result = await client.call(api.openapi, "GET", "/openapi.json", key=None)
    assert result.status == 200
    assert "/v1/cancellations" in result.body["paths"]


# --- POST /admin/reload -------------------------------------------------------------------


async def test_only_an_admin_caller_may_reload(client: Api):
    before = client.app[CONFIG].current
    result = await client.call(api.reload_config, "POST", "/admin/reload")
    assert (result.status, result.error["code"]) == (403, "forbidden")
    assert client.app[CONFIG].current is before


async def test_an_admin_reload_answers_both_versions(client: Api):
    before = client.app[CONFIG].current.version
    write_config(client.folder, "logging: {level: debug}\n" + CONFIG_TEXT)
    result = await client.call(api.reload_config, "POST", "/admin/reload", key=ADMIN_KEY)
    assert result.status == 200
    after = client.app[CONFIG].current.version
    assert result.body == {
        "status": "reloaded",
        "config_version": after,
        "previous_version": before,
    }
    assert after != before


async def test_a_refused_reload_is_422_naming_each_problem(client: Api):
    before = client.app[CONFIG].current
    write_config(client.folder, CONFIG_TEXT + "  broken:\n    provider: nobody\n")
    result = await client.call(api.reload_config, "POST", "/admin/reload", key=ADMIN_KEY)
    assert (result.status, result.error["code"]) == (422, "invalid_request")
    assert before.version in result.error["message"]
    assert any("nobody" in f["message"] for f in result.error["fields"])
    assert client.app[CONFIG].current is before
