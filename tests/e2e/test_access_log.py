"""The access log: one structured `http.request` line per answer, through the gateway's own
JSON logger (and its redaction), on a real gateway."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import BASE_CONFIG, CALLER_KEY, CANARIES, Gateway, GatewayFactory, Upstream

pytestmark = pytest.mark.e2e

RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
RX = {"connection": "rxuniverse-lab", "id": "72544"}


def access_lines(gateway: Gateway, request_id: str) -> list[dict[str, Any]]:
    return [e for e in gateway.events("http.request") if e.get("request_id") == request_id]


async def test_a_cancellation_logs_one_access_line(gateway: Gateway, upstream: Upstream):
    """A cancellation logs exactly one http.request with method, path, route, status,
    duration_ms and its request id, after cancellation.completed."""
    upstream.answer(200, RX_OK)
    result = await gateway.cancel(RX, headers={"User-Agent": "access-log-test/1"})
    request_id = result.headers["X-Request-ID"]
    [line] = access_lines(gateway, request_id)
    assert line["level"] == "info"
    assert line["method"] == "POST"
    assert line["path"] == "/v1/cancellations"
    assert line["route"] == "/v1/cancellations"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], int | float)
    assert line["duration_ms"] >= 0
    assert line["trace_id"] == result.body["trace_id"]
    assert line["user_agent"] == "access-log-test/1"
    assert line["remote"] == "127.0.0.1"
    events = [e["event"] for e in gateway.logs if e.get("request_id") == request_id]
    assert events[-1] == "http.request"


async def test_duration_covers_the_time_spent_upstream(gateway: Gateway, upstream: Upstream):
    """duration_ms is the whole answer's time: a provider that takes 150 ms shows in it."""
    upstream.answer(200, RX_OK, delay_s=0.15)
    result = await gateway.cancel(RX)
    [line] = access_lines(gateway, result.headers["X-Request-ID"])
    assert line["duration_ms"] >= 150


async def test_unknown_path_and_healthz_log_one_line_each(gateway: Gateway):
    """A 404 on an unknown path (route 'unmatched', its query kept) and /healthz each log one
    access line with their own status."""
    missing = await gateway.request("GET", "/no/such/thing?x=1", key=None)
    assert missing.status == 404
    [line] = access_lines(gateway, missing.headers["X-Request-ID"])
    assert (line["method"], line["path"], line["route"], line["status"]) == (
        "GET",
        "/no/such/thing",
        "unmatched",
        404,
    )
    assert line["query"] == "x=1"

    health = await gateway.request("GET", "/healthz", key=None)
    [line] = access_lines(gateway, health.headers["X-Request-ID"])
    assert (line["method"], line["path"], line["route"], line["status"]) == (
        "GET",
        "/healthz",
        "/healthz",
        200,
    )
    assert line["query"] is None


async def test_refusals_are_logged_with_their_status(gateway: Gateway):
    """A 401 and a 405 are answered and logged like any other request."""
    unauthorized = await gateway.cancel(RX, key=None)
    [line] = access_lines(gateway, unauthorized.headers["X-Request-ID"])
    assert line["status"] == 401
    not_allowed = await gateway.request("DELETE", "/v1/cancellations")
    [line] = access_lines(gateway, not_allowed.headers["X-Request-ID"])
    assert (line["status"], line["method"]) == (405, "DELETE")


async def test_every_request_gets_its_own_line(gateway: Gateway, upstream: Upstream):
    """N requests → N access lines, one per request id."""
    upstream.always(200, RX_OK)
    ids = []
    for n in range(3):
        ids.append((await gateway.cancel({**RX, "id": str(n)})).headers["X-Request-ID"])
    ids.append((await gateway.request("GET", "/readyz", key=None)).headers["X-Request-ID"])
    logged = [e["request_id"] for e in gateway.events("http.request")]
    assert logged == ids


async def test_access_log_can_be_turned_off(make_gateway: GatewayFactory, upstream: Upstream):
    """logging: {access_log: false} → no http.request lines; the cancellation events stay."""
    gateway = await make_gateway(
        "logging: {access_log: false}\n" + BASE_CONFIG, upstream_url=upstream.url
    )
    upstream.answer(200, RX_OK)
    assert (await gateway.cancel(RX)).status == 200
    assert (await gateway.request("GET", "/healthz", key=None)).status == 200
    assert (await gateway.request("GET", "/nowhere", key=None)).status == 404
    assert gateway.events("http.request") == []
    assert len(gateway.events("cancellation.completed")) == 1


async def test_no_key_or_credential_reaches_the_access_log(
    make_gateway: GatewayFactory, upstream: Upstream
):
    """Neither the caller's key, a wrong key nobody configured, nor a provider credential
    appears in the log: the access line carries no headers but User-Agent."""
    gateway = await make_gateway(upstream_url=upstream.url)
    upstream.answer(200, RX_OK)
    wrong_key = "unconfigured-key-5a9e1c7b3d"
    ok = await gateway.cancel(RX)
    refused = await gateway.cancel(RX, key=wrong_key)
    assert (ok.status, refused.status) == (200, 401)
    lines = gateway.events("http.request")
    assert len(lines) == 2
    for line in lines:
        assert set(line) <= {
            "event",
            "level",
            "timestamp",
            "request_id",
            "trace_id",
            "span_id",
            "config_version",
            "method",
            "path",
            "query",
            "route",
            "status",
            "duration_ms",
            "remote",
            "user_agent",
        }
    text = gateway.log_text
    assert CALLER_KEY not in text
    assert wrong_key not in text
    for secret in CANARIES.values():
        assert secret not in text
