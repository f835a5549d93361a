"""Webhook signing and delivery: known answers, the spec's own vectors, a reference verifier, and
deliveries to real loopback servers (redirects left alone, timeouts, refused ports)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook, WebhookVerificationError

from gateway.upstream import new_session
from gateway.webhooks import (
    DEFAULT_RETRY_SCHEDULE_S,
    Delivery,
    deliver,
    event_body,
    next_delay,
    secret_key,
    signature,
)

ServerFactory = Callable[..., Awaitable[TestServer]]

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
ENVELOPE = b'{"cancellation_id":"c_1","status":"cancelled","error":null}'
AT = datetime(2026, 12, 4, 10, 30, 5, 123456, tzinfo=UTC)


def by_hand(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = webhook_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# --- signing -------------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_id_timestamp_and_body() -> None:
    body = b'{"type":"cancellation.settled","data":{"a":"\xc3\xa9"}}'
    expected = by_hand(KEY, "msg_01J", 1_764_000_000, body)
    assert signature(secret_key(SECRET), "msg_01J", 1_764_000_000, body) == expected
    assert signature(KEY, "msg_01J", 1_764_000_001, body) != expected
    assert signature(KEY, "msg_01K", 1_764_000_000, body) != expected


# The Standard Webhooks reference library's own vector (test_sign_function, and the near miss of
# test_invalid_signature_raises_error):
# https://github.com/standard-webhooks/standard-webhooks/blob/main/libraries/python/tests/test_webhooks.py
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_PAYLOAD = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SPEC_NEAR_MISS = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="


def test_the_spec_vector() -> None:
    key = secret_key(SPEC_SECRET)
    assert len(key) == 24  # the spec's minimum
    got = signature(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD)
    assert got == SPEC_SIGNATURE
    assert got != SPEC_NEAR_MISS
    assert by_hand(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD) == SPEC_SIGNATURE


def test_a_webhook_id_with_a_full_stop_is_refused() -> None:
    with pytest.raises(ValueError, match="may not contain"):
        signature(KEY, "msg.1", 1, b"{}")


# --- secrets -------------------------------------------------------------------------------------


def test_secret_key_decodes_the_base64_after_the_prefix() -> None:
    assert secret_key(SECRET) == KEY
    assert secret_key(SECRET.rstrip("=")) == KEY  # unpadded, as the reference libraries accept


@pytest.mark.parametrize("size", [24, 32, 64])
def test_keys_of_24_to_64_bytes_are_accepted(size: int) -> None:
    key = bytes([7]) * size
    assert secret_key("whsec_" + base64.b64encode(key).decode()) == key


CANARY = b"CANARY-secret-bytes-0123456789abcdef-CANARY"


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(base64.b64encode(CANARY).decode(), id="no-prefix"),
        pytest.param("WHSEC_" + base64.b64encode(CANARY).decode(), id="prefix-case"),
        pytest.param("whsec_" + base64.b64encode(CANARY).decode() + "!*", id="not-base64"),
        pytest.param("whsec_" + base64.urlsafe_b64encode(b"\xfb" * 30).decode(), id="urlsafe"),
        pytest.param("whsec_CANARY-secret CANARY", id="spaces"),
        pytest.param("whsec_" + base64.b64encode(CANARY[:23]).decode(), id="23-bytes"),
        pytest.param("whsec_" + base64.b64encode(CANARY * 2).decode(), id="86-bytes"),
        pytest.param("whsec_", id="empty"),
        pytest.param("", id="nothing"),
    ],
)
def test_a_malformed_secret_is_refused_without_echoing_it(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret") as caught:
        secret_key(secret)
    message = str(caught.value)
    assert "CANARY" not in message
    tail = secret.removeprefix("whsec_")
    assert len(tail) < 4 or tail not in message
    # no chained decoding error either, whose text could quote the secret
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


# --- the body ------------------------------------------------------------------------------------


def test_event_body_splices_the_envelope_in_unchanged() -> None:
    envelope = b'{"z": 1,   "a": [1.10, "\\u00e9"], "cancellation_id": "c_9"}'
    body = event_body(envelope, AT)
    assert envelope in body  # byte for byte: spacing, key order and escapes kept
    assert body == (
        b'{"type":"cancellation.settled","timestamp":"2026-12-04T10:30:05.123456Z","data":'
        + envelope
        + b"}"
    )
    assert orjson.loads(body) == {
        "type": "cancellation.settled",
        "timestamp": "2026-12-04T10:30:05.123456Z",
        "data": orjson.loads(envelope),
    }


def test_event_body_writes_the_timestamp_in_utc_with_z() -> None:
    paris = timezone(timedelta(hours=1))
    body = orjson.loads(event_body(ENVELOPE, datetime(2026, 12, 4, 11, 0, 0, tzinfo=paris)))
    assert body["timestamp"] == "2026-12-04T10:00:00Z"
    assert datetime.fromisoformat(body["timestamp"]) == datetime(2026, 12, 4, 10, tzinfo=UTC)


def test_event_body_refuses_a_naive_time_and_a_non_object() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        event_body(ENVELOPE, datetime(2026, 12, 4, 10, 0, 0))
    with pytest.raises(ValueError, match="JSON object"):
        event_body(b"[1]", AT)


# --- the retry schedule ----------------------------------------------------------------------


def test_next_delay_walks_the_schedule_then_gives_up() -> None:
    assert DEFAULT_RETRY_SCHEDULE_S == (5, 300, 1800, 7200, 18000, 36000, 36000)
    walked = [next_delay(DEFAULT_RETRY_SCHEDULE_S, n) for n in range(1, 8)]
    assert walked == [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    assert next_delay(DEFAULT_RETRY_SCHEDULE_S, 8) is None
    assert next_delay(DEFAULT_RETRY_SCHEDULE_S, 100) is None
    assert next_delay([2.5], 1) == 2.5
    assert next_delay([], 1) is None
    with pytest.raises(ValueError, match="after a failure"):
        next_delay(DEFAULT_RETRY_SCHEDULE_S, 0)


# --- deliveries to a loopback receiver -----------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str = ""
    seen: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def paths(self) -> list[str]:
        return [r.path for r in self.seen]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    opened = new_session()
    yield opened
    await opened.close()


@pytest.fixture
async def receiver(aiohttp_server: ServerFactory) -> AsyncIterator[Receiver]:
    server = Receiver()

    async def record(req: web.Request) -> None:
        server.seen.append(Received(req.path, dict(req.headers), await req.read()))

    async def status(req: web.Request) -> web.Response:
        await record(req)
        return web.Response(status=int(req.match_info["code"]), text="the receiver's words")

    async def redirect(req: web.Request) -> web.Response:
        await record(req)
        return web.Response(status=302, headers={"Location": "/target"})

    async def slow(req: web.Request) -> web.Response:
        await record(req)
        await asyncio.wait_for(server.release.wait(), 10)
        return web.Response(status=200)

    async def endless(req: web.Request) -> web.StreamResponse:
        # A 200 whose body never ends: the delivery is decided by the status alone.
        await record(req)
        response = web.StreamResponse(status=200, headers={"Content-Length": "1000000"})
        await response.prepare(req)
        try:
            await response.write(b"x" * 10)
            await asyncio.wait_for(server.release.wait(), 10)
        except ConnectionError:
            pass  # the sender hung up without reading, as it should
        return response

    app = web.Application()
    app.router.add_post("/status/{code}", status)
    app.router.add_post("/redirect", redirect)
    app.router.add_route("*", "/target", status)
    app.router.add_post("/slow", slow)
    app.router.add_post("/endless", endless)
    running = await aiohttp_server(app)
    server.url = str(running.make_url("")).rstrip("/")
    yield server
    server.release.set()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def send(
    session: aiohttp.ClientSession,
    url: str,
    *,
    webhook_id: str = "c_01JEXAMPLE",
    now: int | None = None,
    timeout_s: float = 5.0,
) -> Delivery:
    body = event_body(ENVELOPE, AT)
    stamp = int(time.time()) if now is None else now
    return await deliver(session, url, body, webhook_id, KEY, stamp, timeout_s=timeout_s)


@pytest.mark.parametrize("code", [200, 201, 204, 299])
async def test_a_2xx_is_a_delivery(
    session: aiohttp.ClientSession, receiver: Receiver, code: int
) -> None:
    delivery = await send(session, f"{receiver.url}/status/{code}")
    assert delivery.ok
    assert delivery.status == code
    assert delivery.error is None
    assert delivery.latency_ms > 0


async def test_what_is_sent(session: aiohttp.ClientSession, receiver: Receiver) -> None:
    await send(session, f"{receiver.url}/status/204", webhook_id="c_7", now=1_764_000_000)
    [got] = receiver.seen
    assert got.body == event_body(ENVELOPE, AT)
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["webhook-id"] == "c_7"
    assert got.headers["webhook-timestamp"] == "1764000000"
    assert got.headers["webhook-signature"] == by_hand(KEY, "c_7", 1_764_000_000, got.body)


async def test_the_reference_verifier_accepts_what_is_sent(
    session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    await send(session, f"{receiver.url}/status/200")
    [got] = receiver.seen
    verified = Webhook(SECRET).verify(got.body, got.headers)
    assert verified == {
        "type": "cancellation.settled",
        "timestamp": "2026-12-04T10:30:05.123456Z",
        "data": orjson.loads(ENVELOPE),
    }

    tampered = got.body.replace(b'"cancelled"', b'"failed"')
    assert tampered != got.body
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(got.body, {**got.headers, "webhook-id": "c_other"})
    other = "whsec_" + base64.b64encode(bytes(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(got.body, got.headers)


@pytest.mark.parametrize("code", [400, 404, 410, 429, 500, 503])
async def test_any_other_status_is_a_failure_with_its_status(
    session: aiohttp.ClientSession, receiver: Receiver, code: int
) -> None:
    delivery = await send(session, f"{receiver.url}/status/{code}")
    assert delivery == Delivery(False, code, None, delivery.latency_ms)


async def test_a_redirect_is_not_followed(
    session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    delivery = await send(session, f"{receiver.url}/redirect")
    assert not delivery.ok
    assert delivery.status == 302
    assert delivery.error is None
    assert receiver.paths() == ["/redirect"]  # /target never hit


async def test_no_answer_in_time_is_a_timeout(
    session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    delivery = await send(session, f"{receiver.url}/slow", timeout_s=0.3)
    assert delivery == Delivery(False, None, "timeout", delivery.latency_ms)
    assert 250 <= delivery.latency_ms < 5000
    assert receiver.paths() == ["/slow"]


async def test_the_answer_body_is_not_waited_for(
    session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    delivery = await send(session, f"{receiver.url}/endless", timeout_s=2.0)
    assert delivery.ok
    assert delivery.status == 200
    assert delivery.latency_ms < 2000


@pytest.mark.socket
async def test_a_refused_connection_is_a_failure(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook?token=CANARY"
    delivery = await send(session, url)
    assert delivery == Delivery(False, None, "connection_error", delivery.latency_ms)


async def test_a_url_that_is_not_http_is_a_failure(session: aiohttp.ClientSession) -> None:
    delivery = await send(session, "ftp://127.0.0.1/hook?token=CANARY")
    assert delivery == Delivery(False, None, "invalid_url", delivery.latency_ms)


async def test_every_delivery_of_an_event_has_the_same_id(
    session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    now = int(time.time())
    first = await send(session, f"{receiver.url}/status/500", webhook_id="c_42", now=now)
    second = await send(session, f"{receiver.url}/status/200", webhook_id="c_42", now=now + 5)
    assert (first.ok, second.ok) == (False, True)
    one, two = receiver.seen
    assert one.headers["webhook-id"] == two.headers["webhook-id"] == "c_42"
    assert one.body == two.body
    assert (one.headers["webhook-timestamp"], two.headers["webhook-timestamp"]) == (
        str(now),
        str(now + 5),
    )
    assert one.headers["webhook-signature"] != two.headers["webhook-signature"]
    for got in (one, two):
        Webhook(SECRET).verify(got.body, got.headers)
