"""Admission control end to end: a gateway at its limit of cancellations in flight answers
one more at once with 503 `overloaded`, keeps its health and metrics endpoints answering, and
admits again as soon as a slot frees."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from tests.conftest import BASE_CONFIG, CALLER_KEY, GatewayFactory, Upstream

pytestmark = pytest.mark.e2e

TWO = BASE_CONFIG.replace("callers:", "server: {max_in_flight: 2}\ncallers:", 1)
CANCEL = {"connection": "stateset-main", "reason": "r"}
OK = {"id": "x", "status": "cancelled", "cancelled_at": "2024-01-01T00:00:00Z"}


async def test_beyond_the_limit_answers_overloaded_at_once_and_health_still_answers(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(TWO, upstream_url=upstream.url)
    hold = asyncio.Event()
    upstream.answer(200, OK, until=hold)
    upstream.answer(200, OK, until=hold)
    upstream.always(200, OK)
    held = [asyncio.create_task(gateway.cancel({**CANCEL, "id": f"A-{n}"})) for n in range(2)]
    await upstream.wait_for(2)

    refused = await asyncio.gather(*(gateway.cancel({**CANCEL, "id": f"B-{n}"}) for n in range(4)))
    assert {r.status for r in refused} == {503}
    assert {r.body["error"]["code"] for r in refused} == {"overloaded"}
    assert {r.headers["Retry-After"] for r in refused} == {"1"}
    assert len(upstream.received) == 2  # none of them sent
    for path in ("/healthz", "/readyz"):
        assert (await gateway.request("GET", path, key=None)).status == 200
    batch = await gateway.request(
        "POST", "/v1/cancellations/batch", json={"items": [{**CANCEL, "id": "C-1"}]}
    )
    assert (batch.status, batch.body["error"]["code"]) == (503, "overloaded")  # refused whole
    unauthenticated = await gateway.cancel({**CANCEL, "id": "E-1"}, key=None)
    assert unauthenticated.status == 503  # refused before anything else, the key included
    assert "X-Config-Version" in unauthenticated.headers
    refusals = [e for e in gateway.logs if e.get("status") == 503]
    assert refusals == []  # no line each: counted in the metrics instead
    metrics = (await gateway.session.get(gateway.url + "/metrics")).content
    text = (await metrics.read()).decode()
    assert "cancel_gateway_overloaded_total 6.0" in text

    hold.set()
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
    admitted = await gateway.cancel({**CANCEL, "id": "D-1"})
    assert admitted.status == 200
    listed = await gateway.request("GET", "/v1/cancellations")
    assert sorted(e["resource_id"] for e in listed.body["items"]) == ["A-0", "A-1", "D-1"]


HELD = BASE_CONFIG.replace(
    "callers:", "server: {max_in_flight: 1, overload_hold_s: 0.6}\ncallers:", 1
)


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> int:
    """One cancellation on this very connection; the answer's HTTP status."""
    writer.write(
        b"POST /v1/cancellations HTTP/1.1\r\nHost: gateway\r\n"
        + f"Authorization: Bearer {CALLER_KEY}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def test_a_refused_connection_is_read_again_only_after_the_hold(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(HELD, upstream_url=upstream.url)
    hold = asyncio.Event()
    upstream.answer(200, OK, until=hold)
    upstream.always(200, OK)
    busy = asyncio.create_task(gateway.cancel({**CANCEL, "id": "A-1"}))
    await upstream.wait_for(1)

    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = orjson.dumps({**CANCEL, "id": "B-1"})
    assert await _ask(reader, writer, body) == 503
    refused_at = time.monotonic()
    again = asyncio.create_task(_ask(reader, writer, body))  # asks again at once
    # Meanwhile the gateway answers on every other connection, and frees its slot.
    assert (await gateway.request("GET", "/healthz", key=None)).status == 200
    hold.set()
    assert (await busy).status == 200
    assert not again.done()  # still not read: the connection is held
    assert await again == 200  # read after the hold, when a slot is free: admitted
    assert time.monotonic() - refused_at >= 0.5
    writer.close()
    await writer.wait_closed()
    assert [e["resource_id"] for e in gateway.events("cancellation.completed")] == ["A-1", "B-1"]
