"""Every simulator scenario of every built-in provider, end to end.

The real gateway runs on one loopback port, the real provider simulator (``gateway.simulate``)
on another. Each case checks both sides: the envelope the caller gets, and what the simulated
provider received (its journal): verb, raw path, auth header, request id, trace context, body.

The simulator checks the canary credentials the gateway is configured with, so the auth
header the gateway sends is verified by the provider emulation itself as well as here.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.simulate import (
    JOURNAL_KEY,
    TABLE,
    JournalEntry,
    SimulatorKeys,
    create_simulator_app,
)
from gateway.simulate.scenarios import match
from tests.conftest import CANARIES, Gateway, GatewayFactory, Result

pytestmark = pytest.mark.e2e

NOW = datetime(2024, 1, 16, 10, 30, tzinfo=UTC)
NOW_TEXT = "2024-01-16T10:30:00Z"
GATEWAY_TIME = "<the gateway's clock>"  # cancelled_at set by the gateway, not the provider

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
REASON = "customer request"

# The simulator accepts exactly the (fake) credentials the gateway is configured with.
SIM_KEYS = SimulatorKeys(
    stateset=CANARIES["STATESET_API_KEY"],
    shipper=CANARIES["SHIPPER_API_KEY"],
    shoplazza=CANARIES["SHOPLAZZA_ACCESS_TOKEN"],
    rxuniverse=CANARIES["RXUNIVERSE_API_KEY"],
)

CONFIG = """
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  stateset-main:
    provider: stateset
    base_url: ${UPSTREAM}/stateset
    credentials:
      api_key: ${STATESET_API_KEY}
    timeout_s: <TIMEOUT_S>
  shipper-main:
    provider: shipper
    base_url: ${UPSTREAM}/shipper
    credentials:
      api_key: ${SHIPPER_API_KEY}
    params: {warehouse_id: WH-TGR04}
    timeout_s: <TIMEOUT_S>
  shoplazza-main:
    provider: shoplazza
    base_url: ${UPSTREAM}/shoplazza/{params.shop_domain}
    credentials:
      access_token: ${SHOPLAZZA_ACCESS_TOKEN}
    params: {shop_domain: demo-shop}
    timeout_s: <TIMEOUT_S>
  rxuniverse-lab:
    provider: rxuniverse
    base_url: ${UPSTREAM}/rxuniverse
    credentials:
      api_key: ${RXUNIVERSE_API_KEY}
    timeout_s: <TIMEOUT_S>
"""

CONNECTION = {
    "stateset": "stateset-main",
    "shipper": "shipper-main",
    "shoplazza": "shoplazza-main",
    "rxuniverse": "rxuniverse-lab",
}
RESOURCE = {
    "stateset": "asn",
    "shipper": "sales_order",
    "shoplazza": "procurement",
    "rxuniverse": "order",
}
# Each provider's own auth header (lowercase) and the value it must carry.
AUTH = {
    "stateset": ("authorization", f"Bearer {CANARIES['STATESET_API_KEY']}"),
    "shipper": ("x-api-key", CANARIES["SHIPPER_API_KEY"]),
    "shoplazza": ("access-token", CANARIES["SHOPLAZZA_ACCESS_TOKEN"]),
    "rxuniverse": ("x-api-key", CANARIES["RXUNIVERSE_API_KEY"]),
}
CREDENTIAL_HEADERS = {"authorization", "x-api-key", "access-token"}

# The selections the envelope keeps of each simulated success body.
SS_RESPONSE = {
    "asn_number": "ASN-2024-00001",
    "purchase_order_id": "po_123456789",
    "supplier_id": "sup_abc123",
    "items_affected": [
        {"sku": "WBH-001", "quantity": 500},
        {"sku": "USB-C-001", "quantity": 1000},
    ],
}
SH_RESPONSE: dict[str, Any] = {}
SL_RESPONSE = {
    "procurement_sn": "00000002",
    "state": 4,
    "supplier_id": "382453603865993516",
    "location_id": "190035786870033452",
}
RX_WARNING = (
    "The provided deleteReason was ignored because the system is configured to not use "
    "delete reasons"
)


def rx_response(order_number: str, message: str = "") -> dict[str, Any]:
    return {
        "orderNumber": order_number,
        "trayNumber": "337178",
        "poNumber": "Example",
        "message": message,
    }


# Fixtures: the simulator on its own real port, the gateway pointed at it.

Clock = Callable[[], datetime]
ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass
class Simulator:
    app: web.Application
    url: str

    @property
    def journal(self) -> list[JournalEntry]:
        return list(self.app[JOURNAL_KEY].entries)


SimulatorFactory = Callable[..., Awaitable[Simulator]]


@pytest.fixture
def make_simulator(aiohttp_server: ServerFactory) -> SimulatorFactory:
    async def factory(keys: SimulatorKeys = SIM_KEYS, clock: Clock = lambda: NOW) -> Simulator:
        app = create_simulator_app(keys, clock=clock)
        server = await aiohttp_server(app)
        return Simulator(app, str(server.make_url("")).rstrip("/"))

    return factory


@pytest.fixture
async def simulator(make_simulator: SimulatorFactory) -> Simulator:
    return await make_simulator()


async def gateway_to(
    make_gateway: GatewayFactory,
    simulator: Simulator,
    *,
    timeout_s: float = 2.0,
    env: dict[str, str] | None = None,
) -> Gateway:
    config = CONFIG.replace("<TIMEOUT_S>", str(timeout_s))
    return await make_gateway(config, upstream_url=simulator.url, env=env)


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, simulator: Simulator) -> Gateway:
    return await gateway_to(make_gateway, simulator)


# Helpers


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def standard_path(provider: str, object_id: str) -> str:
    """The raw path (with query) each provider's cancel of a plain id is sent to."""
    return {
        "stateset": f"/stateset/v1/asns/{object_id}/cancel",
        "shipper": "/shipper/v3/fulfillment/outbound/oms/cancel",
        "shoplazza": f"/shoplazza/demo-shop/openapi/2022-01/procurements/{object_id}/cancel",
        "rxuniverse": f"/rxuniverse/api/v2/orders/{object_id}?deleteReason=customer%20request",
    }[provider]


def probe_path(provider: str, object_id: str) -> str:
    """Where the status probe of StateSet and Shoplazza reads the object."""
    return {
        "stateset": f"/stateset/v1/asns/{object_id}",
        "shoplazza": f"/shoplazza/demo-shop/openapi/2022-01/procurements/{object_id}",
    }[provider]


def standard_body(provider: str, object_id: str) -> Any:
    """The JSON body each provider gets for ``{"id": object_id, "reason": REASON}``; None: none."""
    if provider == "stateset":
        return {"reason": REASON, "cancelled_by": "oms", "notify_supplier": True}
    if provider == "shipper":
        return {
            "data": {
                "cancellation": {
                    "order_no": object_id,
                    "cancel_reason": REASON,
                    "warehouse_id": "WH-TGR04",
                }
            }
        }
    return None


def check_auth(entry: JournalEntry, provider: str) -> None:
    """The provider's own credential header, and no other credential header."""
    headers = lower(entry.headers)
    name, value = AUTH[provider]
    assert {h for h in headers if h in CREDENTIAL_HEADERS} == {name}
    assert headers[name] == value


def check_sent(
    entry: JournalEntry,
    provider: str,
    path: str,
    body: Any,
    request_id: str,
) -> None:
    """One request as the simulated provider received it."""
    method = {"stateset": "POST", "shipper": "PATCH", "shoplazza": "PATCH"}.get(provider, "DELETE")
    assert (entry.provider, entry.method, entry.path) == (provider, method, path)
    check_auth(entry, provider)
    headers = lower(entry.headers)
    assert headers["x-request-id"] == request_id
    forwarded = re.fullmatch(rf"00-{TRACE_ID}-([0-9a-f]{{16}})-01", headers["traceparent"])
    assert forwarded is not None, headers["traceparent"]
    assert forwarded.group(1) != CALLER_SPAN  # the gateway's own span, same trace
    if provider == "stateset":
        assert headers["idempotency-key"]
    else:
        assert "idempotency-key" not in headers
    if body is None:
        assert entry.body == ""
    else:
        assert headers["content-type"] == "application/json"
        assert orjson.loads(entry.body) == body
    if provider == "shoplazza":
        assert headers["content-type"] == "application/json"  # documented, with no body


def check_gateway_time(value: str) -> None:
    assert value.endswith("Z"), value
    moment = datetime.fromisoformat(value)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


def check_no_secret(result: Result) -> None:
    text = result.raw.decode()
    for value in CANARIES.values():
        assert value not in text


async def cancel(
    gateway: Gateway, provider: str, object_id: str, request_id: str, **extra: Any
) -> Result:
    body = {"connection": CONNECTION[provider], "id": object_id, "reason": REASON, **extra}
    headers = {"X-Request-ID": request_id, "traceparent": TRACEPARENT}
    return await gateway.cancel(body, headers=headers)


# The expectation table: one row per (scenario, provider) the simulator lists, and a few more.


@dataclass(frozen=True)
class Row:
    scenario: str
    provider: str
    object_id: str
    http: int
    status: str
    code: str | None = None
    provider_code: str | None = None
    provider_status: int | None = None  # error.provider_status
    retryable: bool | None = None
    retry_after_s: float | None = None
    upstream_status: int | None = None  # upstream.status
    cancelled_at: str | None = None  # exact, or GATEWAY_TIME
    provider_response: dict[str, Any] | None = None
    attempts: int = 1
    sent: int = 1  # cancel requests the simulated provider received
    probes: int = 0  # status probes (StateSet and Shoplazza document one) after unknown outcomes
    timeout_s: float = 2.0
    bug: str | None = None  # a known defect: the row is expected to fail until it is fixed


def ok(
    scenario: str,
    provider: str,
    object_id: str,
    cancelled_at: str,
    provider_response: dict[str, Any],
    **more: Any,
) -> Row:
    more.setdefault("upstream_status", 200)
    return Row(
        scenario,
        provider,
        object_id,
        200,
        "cancelled",
        cancelled_at=cancelled_at,
        provider_response=provider_response,
        **more,
    )


def err(
    scenario: str,
    provider: str,
    object_id: str,
    http: int,
    status: str,
    code: str,
    provider_code: str | None,
    provider_status: int | None,
    retryable: bool,
    **more: Any,
) -> Row:
    more.setdefault("upstream_status", provider_status)
    return Row(
        scenario,
        provider,
        object_id,
        http,
        status,
        code,
        provider_code,
        provider_status,
        retryable,
        **more,
    )


SS, SH, SL, RX = "stateset", "shipper", "shoplazza", "rxuniverse"
SLOW_BUDGET_S = 0.5

ROWS: list[Row] = [
    # notfound
    err("notfound", SS, "notfound-1", 404, "rejected", "not_found", "not_found", 404, False),
    err("notfound", SH, "notfound-1", 404, "rejected", "not_found", "3012", 400, False),
    err("notfound", SL, "notfound-1", 404, "rejected", "not_found", "Procurement not found", 404, False),
    err("notfound", RX, "notfound-1", 404, "rejected", "not_found", "No record found", 404, False),
    # already: the object counts as cancelled before the first call
    Row("already", SS, "already-1", 200, "already_cancelled", upstream_status=400,
        cancelled_at=None, provider_response={}),
    ok("already", SH, "already-1", GATEWAY_TIME, SH_RESPONSE),  # Shipper has no "already"
    ok("already", SL, "already-1", NOW_TEXT, SL_RESPONSE),  # state 4 again: indistinguishable
    Row("already", RX, "already-1", 200, "already_cancelled", upstream_status=400,
        cancelled_at=None, provider_response={}),
    # unauthorized: the provider refuses the gateway's credential
    err("unauthorized", SS, "unauthorized-1", 502, "failed", "provider_auth_failed", "INVALID_API_KEY", 401, False),
    err("unauthorized", SH, "unauthorized-1", 502, "failed", "provider_auth_failed", "802", 401, False),
    err("unauthorized", SL, "unauthorized-1", 502, "failed", "provider_auth_failed", "store is not active", 401, False),
    err("unauthorized", RX, "unauthorized-1", 502, "failed", "provider_auth_failed", "Unauthorized", 401, False),
    # err500
    err("err500", SS, "err500-1", 502, "failed", "provider_error", "internal_error", 500, True, probes=1),
    err("err500", SH, "err500-1", 502, "failed", "provider_error", "803", 500, True),
    err("err500", SL, "err500-1", 502, "failed", "provider_error", "Internal Server Error", 500, True, probes=1),
    err("err500", RX, "err500-1", 502, "failed", "provider_error", "Internal Server Error", 500, True),
    # StateSet only
    err("received409", SS, "received409-1", 409, "rejected", "not_cancellable", "ASN_ALREADY_RECEIVED", 409, False),
    err("received", SS, "received-1", 409, "rejected", "not_cancellable", "ASN_ALREADY_RECEIVED", 400, False),
    err("expired", SS, "expired-1", 502, "failed", "provider_auth_failed", "EXPIRED_API_KEY", 401, False),
    err("lowercase-auth", SS, "lowercase-auth-1", 502, "failed", "provider_auth_failed", "invalid_api_key", 401, False),
    err("lowercase-expired", SS, "lowercase-expired-1", 502, "failed", "provider_auth_failed", "api_key_expired", 401, False),
    err("lowercase-noscope", SS, "lowercase-noscope-1", 502, "failed", "provider_auth_failed", "insufficient_permissions", 403, False),
    err("keyinuse", SS, "keyinuse-1", 409, "failed", "idempotency_in_progress", "idempotency_key_in_use", 409, True),
    # badid
    err("badid", SS, "badid-1", 422, "rejected", "invalid_request", "parameter_invalid", 400, False),
    err("badid", SH, "badid-1", 422, "rejected", "invalid_request", "810", 400, False),
    err("badid", SL, "badid-1", 422, "rejected", "invalid_request", "invalid procurement_id", 400, False),
    # noscope
    err("noscope", SS, "noscope-1", 502, "failed", "provider_auth_failed", "INSUFFICIENT_PERMISSIONS", 403, False),
    err("noscope", SL, "noscope-1", 502, "failed", "provider_auth_failed", "Forbidden", 403, False),
    # Shipper only: 811 is undocumented, so the generic 4xx rule applies (NOTES.md)
    err("allocated", SH, "allocated-1", 422, "rejected", "provider_rejected", "811", 400, False),
    # Shoplazza only
    err("inactive", SL, "inactive-1", 502, "failed", "provider_auth_failed", "store is not active", 401, False),
    err("nosupplier", SL, "nosupplier-1", 422, "rejected", "provider_rejected", "Supplier not found", 400, False),
    err("nocontext", SL, "nocontext-1", 422, "rejected", "provider_rejected", "No Context", 400, False),
    # RxUniverse only
    err("jobtracker", RX, "jobtracker-1", 502, "failed", "provider_misconfigured", "Job Tracker module required for cancel method", 400, False),
    err("noreasons", RX, "noreasons-1", 502, "failed", "provider_misconfigured", "The delete reasons file is empty", 400, False),
    err("badreason", RX, "badreason-1", 422, "rejected", "invalid_request", "Delete reason code does not exist", 400, False),
    err("station", RX, "station-1", 409, "rejected", "not_cancellable", "Order has been through a non-cancel station", 400, False),
    ok("warning", RX, "warning-1", GATEWAY_TIME, rx_response("warning-1", RX_WARNING)),
    # slow: over the budget → timeout; under it → the usual success
    err("slow", SS, "slow-900", 504, "failed", "provider_timeout", None, None, True, timeout_s=SLOW_BUDGET_S),
    err("slow", SH, "slow-900", 504, "failed", "provider_timeout", None, None, True, timeout_s=SLOW_BUDGET_S),
    err("slow", SL, "slow-900", 504, "failed", "provider_timeout", None, None, True, timeout_s=SLOW_BUDGET_S),
    err("slow", RX, "slow-900", 504, "failed", "provider_timeout", None, None, True, timeout_s=SLOW_BUDGET_S),
    ok("slow", SS, "slow-50", NOW_TEXT, SS_RESPONSE, timeout_s=SLOW_BUDGET_S),
    ok("slow", SH, "slow-50", GATEWAY_TIME, SH_RESPONSE, timeout_s=SLOW_BUDGET_S),
    ok("slow", SL, "slow-50", NOW_TEXT, SL_RESPONSE, timeout_s=SLOW_BUDGET_S),
    ok("slow", RX, "slow-50", GATEWAY_TIME, rx_response("slow-50"), timeout_s=SLOW_BUDGET_S),
    # flaky503 (503 twice, then the usual answer): repeated within the budget, the third
    # attempt cancels; 503 five times outlasts the three attempts.
    ok("flaky503", SS, "flaky503-a", NOW_TEXT, SS_RESPONSE, attempts=3, sent=3, probes=2),
    ok("flaky503", SH, "flaky503-a", GATEWAY_TIME, SH_RESPONSE, attempts=3, sent=3),
    ok("flaky503", SL, "flaky503-a", NOW_TEXT, SL_RESPONSE, attempts=3, sent=3, probes=2),
    ok("flaky503", RX, "flaky503-a", GATEWAY_TIME, rx_response("flaky503-a"), attempts=3, sent=3),
    err("flaky503", SS, "flaky503x5-a", 502, "failed", "provider_error", "service_unavailable", 503, True, attempts=3, sent=3, probes=3),
    err("flaky503", RX, "flaky503x5-a", 502, "failed", "provider_error", "Service Unavailable", 503, True, attempts=3, sent=3),
    # ratelimit (429 with Retry-After: 1 once): repeated after a second, within the budget
    ok("ratelimit", SS, "ratelimit-a", NOW_TEXT, SS_RESPONSE, attempts=2, sent=2),
    ok("ratelimit", SH, "ratelimit-a", GATEWAY_TIME, SH_RESPONSE, attempts=2, sent=2),
    ok("ratelimit", SL, "ratelimit-a", NOW_TEXT, SL_RESPONSE, attempts=2, sent=2),
    ok("ratelimit", RX, "ratelimit-a", GATEWAY_TIME, rx_response("ratelimit-a"), attempts=2, sent=2),
    # a Retry-After beyond the budget is answered at once, with the provider's value
    err("ratelimit", SL, "ratelimit-30", 429, "failed", "rate_limited", "Too Many Requests", 429, True, retry_after_s=30),
    err("ratelimit-always", SS, "ratelimit-always-1", 429, "failed", "rate_limited", "rate_limit_exceeded", 429, True, retry_after_s=120),
    err("ratelimit-always", SH, "ratelimit-always-1", 429, "failed", "rate_limited", "Too Many Requests", 429, True, retry_after_s=120),
    err("ratelimit-always", SL, "ratelimit-always-1", 429, "failed", "rate_limited", "Too Many Requests", 429, True, retry_after_s=120),
    err("ratelimit-always", RX, "ratelimit-always-1", 429, "failed", "rate_limited", "Too Many Requests", 429, True, retry_after_s=120),
    # lostanswer / lostreset: the cancel is applied and its answer lost; StateSet and Shoplazza
    # probe the object and find it cancelled (one cancel sent); Shipper and RxUniverse document
    # no probe: a timeout uses the budget up, a reset is repeated (safe) and resets again.
    ok("lostanswer", SS, "lostanswer-a", GATEWAY_TIME, {"asn_number": "ASN-2024-00001"}, upstream_status=None, probes=1),
    ok("lostanswer", SL, "lostanswer-a", NOW_TEXT, {"procurement_sn": "00000002", "state": 4}, upstream_status=None, probes=1),
    err("lostanswer", SH, "lostanswer-a", 504, "failed", "provider_timeout", None, None, True),
    err("lostanswer", RX, "lostanswer-a", 504, "failed", "provider_timeout", None, None, True),
    ok("lostreset", SS, "lostreset-1", GATEWAY_TIME, {"asn_number": "ASN-2024-00001"}, upstream_status=None, probes=1),
    ok("lostreset", SL, "lostreset-1", NOW_TEXT, {"procurement_sn": "00000002", "state": 4}, upstream_status=None, probes=1),
    err("lostreset", SH, "lostreset-1", 502, "failed", "provider_error", None, None, True, attempts=3, sent=3),
    err("lostreset", RX, "lostreset-1", 502, "failed", "provider_error", None, None, True, attempts=3, sent=3),
    # reset: no HTTP answer at all; every built-in operation is safe to repeat, so three attempts
    # (StateSet and Shoplazza probe before each repeat; Shoplazza's probes wait for its 2
    # requests/s like its cancels, and the third has no turn left within the 2 s budget)
    err("reset", SS, "reset-1", 502, "failed", "provider_error", None, None, True, attempts=3, sent=3, probes=3),
    err("reset", SH, "reset-1", 502, "failed", "provider_error", None, None, True, attempts=3, sent=3),
    err("reset", SL, "reset-1", 502, "failed", "provider_error", None, None, True, attempts=3, sent=3, probes=2),
    err("reset", RX, "reset-1", 502, "failed", "provider_error", None, None, True, attempts=3, sent=3),
    # html: a 502 whatever its body, repeated like any 502
    err("html", SS, "html-1", 502, "failed", "provider_error", None, 502, True, attempts=3, sent=3, probes=3),
    err("html", SH, "html-1", 502, "failed", "provider_error", None, 502, True, attempts=3, sent=3),
    err("html", SL, "html-1", 502, "failed", "provider_error", None, 502, True, attempts=3, sent=3, probes=2),
    err("html", RX, "html-1", 502, "failed", "provider_error", None, 502, True, attempts=3, sent=3),
    # nonjson / empty: a 2xx that does not confirm the cancellation
    err("nonjson", SS, "nonjson-1", 502, "failed", "provider_bad_response", None, 200, True),
    err("nonjson", SH, "nonjson-1", 502, "failed", "provider_bad_response", None, 200, True),
    err("nonjson", SL, "nonjson-1", 502, "failed", "provider_bad_response", None, 200, True),
    err("nonjson", RX, "nonjson-1", 502, "failed", "provider_bad_response", None, 200, True),
    err("empty", SS, "empty-1", 502, "failed", "provider_bad_response", None, 200, True),
    err("empty", SH, "empty-1", 502, "failed", "provider_bad_response", None, 200, True),
    err("empty", SL, "empty-1", 502, "failed", "provider_bad_response", None, 200, True),
    err("empty", RX, "empty-1", 502, "failed", "provider_bad_response", None, 200, True),
    # oversized: refused before the body is read, so no status is kept
    err("oversized", SS, "oversized-1", 502, "failed", "provider_bad_response", None, None, True, probes=1),
    err("oversized", SH, "oversized-1", 502, "failed", "provider_bad_response", None, None, True),
    err("oversized", SL, "oversized-1", 502, "failed", "provider_bad_response", None, None, True, probes=1),
    err("oversized", RX, "oversized-1", 502, "failed", "provider_bad_response", None, None, True),
    # redirect: never followed
    err("redirect", SS, "redirect-1", 502, "failed", "provider_bad_response", None, 302, True),
    err("redirect", SH, "redirect-1", 502, "failed", "provider_bad_response", None, 302, True),
    err("redirect", SL, "redirect-1", 502, "failed", "provider_bad_response", None, 302, True),
    err("redirect", RX, "redirect-1", 502, "failed", "provider_bad_response", None, 302, True),
]  # fmt: skip


def row_param(row: Row) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=row.bug)] if row.bug else []
    return pytest.param(row, id=f"{row.provider}-{row.object_id}", marks=marks)


def test_expectations_cover_every_scenario_of_every_provider() -> None:
    """The table above and the simulator's TABLE cannot drift apart: every (scenario, provider)
    the simulator lists has a row, no row names a pair it does not list, and each row's id
    really plays the scenario the row is about."""
    listed = {(scenario.name, provider) for scenario in TABLE for provider in scenario.providers}
    covered = {(row.scenario, row.provider) for row in ROWS}
    assert sorted(listed - covered) == [], "scenarios without an expected outcome"
    assert sorted(covered - listed) == [], "rows for scenarios the simulator does not list"
    for row in ROWS:
        found = match(row.object_id)
        assert found is not None, row.object_id
        assert found.name == row.scenario, row.object_id
    ids = [(row.provider, row.object_id) for row in ROWS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("row", [row_param(row) for row in ROWS])
async def test_scenario(make_gateway: GatewayFactory, simulator: Simulator, row: Row) -> None:
    """One scenario at one provider: the envelope, the log and what the provider received."""
    gateway = await gateway_to(make_gateway, simulator, timeout_s=row.timeout_s)
    request_id = f"req-{row.provider}-{row.object_id}"
    result = await cancel(gateway, row.provider, row.object_id, request_id)

    body = result.body
    assert result.status == row.http, body
    assert result.headers["Content-Type"].startswith("application/json")
    assert result.headers["X-Request-ID"] == request_id
    assert body["status"] == row.status
    assert body["cancellation_id"].startswith("cxl_")
    assert body["connection"] == CONNECTION[row.provider]
    assert body["provider"] == row.provider
    assert body["resource"] == RESOURCE[row.provider]
    assert body["resource_id"] == row.object_id
    assert body["request_id"] == request_id
    assert body["trace_id"] == TRACE_ID

    if row.code is None:
        assert body["error"] is None
    else:
        assert body["error"] == {
            "code": row.code,
            "message": body["error"]["message"],
            "source": "provider",
            "provider_code": row.provider_code,
            "provider_status": row.provider_status,
            "retryable": row.retryable,
            "retry_after_s": row.retry_after_s,
            "fields": [],
        }
        assert body["error"]["message"]
    if row.retry_after_s is None:
        assert "Retry-After" not in result.headers
    else:
        assert result.headers["Retry-After"] == str(int(row.retry_after_s))

    if row.cancelled_at == GATEWAY_TIME:
        check_gateway_time(body["cancelled_at"])
    else:
        assert body["cancelled_at"] == row.cancelled_at
    assert body["provider_response"] == row.provider_response

    path = standard_path(row.provider, row.object_id)
    upstream = body["upstream"]
    assert upstream["method"] == {SS: "POST", RX: "DELETE"}.get(row.provider, "PATCH")
    assert upstream["url"] == simulator.url + path
    assert upstream["status"] == row.upstream_status
    assert upstream["attempts"] == row.attempts
    assert upstream["probes"] == row.probes
    check_no_secret(result)

    assert len(gateway.events("upstream.request")) == row.attempts + row.probes
    assert len(gateway.events("upstream.probe")) == row.probes
    (completed,) = gateway.events("cancellation.completed")
    assert (completed["status"], completed["error_code"]) == (row.status, row.code)

    journal = [entry for entry in simulator.journal if entry.method != "GET"]
    probes = [entry for entry in simulator.journal if entry.method == "GET"]
    assert len(journal) == row.sent, [(e.method, e.path) for e in simulator.journal]
    if row.probes:
        wanted = probe_path(row.provider, row.object_id)
        assert [entry.path for entry in probes] == [wanted] * row.probes
    assert len(probes) == row.probes
    for entry in journal:
        check_sent(
            entry, row.provider, path, standard_body(row.provider, row.object_id), request_id
        )
    assert "/_redirected" not in [entry.path for entry in journal]


# Success, state and the provider-specific paths


async def test_stateset_success_sends_the_documented_request(
    gateway: Gateway, simulator: Simulator
) -> None:
    """StateSet: every optional field is carried under StateSet's own names."""
    result = await gateway.cancel(
        {
            "connection": "stateset-main",
            "id": "asn_0901f083-aa1c-43c5-af5c-0a9d2fc64e30",
            "reason": "Supplier notified of production delay",
            "requested_by": "purchasing@company.com",
            "notify": False,
            "notes": "Shipment delayed by 2 weeks",
        },
        headers={"X-Request-ID": "req-ss", "traceparent": TRACEPARENT},
    )
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert result.body["cancelled_at"] == NOW_TEXT
    assert result.body["provider_response"] == SS_RESPONSE
    assert result.body["upstream"]["url"] == (
        f"{simulator.url}/stateset/v1/asns/asn_0901f083-aa1c-43c5-af5c-0a9d2fc64e30/cancel"
    )
    (entry,) = simulator.journal
    check_sent(
        entry,
        SS,
        "/stateset/v1/asns/asn_0901f083-aa1c-43c5-af5c-0a9d2fc64e30/cancel",
        {
            "reason": "Supplier notified of production delay",
            "cancelled_by": "purchasing@company.com",
            "notify_supplier": False,
            "notes": "Shipment delayed by 2 weeks",
        },
        "req-ss",
    )


async def test_shipper_success_takes_the_per_request_warehouse(
    gateway: Gateway, simulator: Simulator
) -> None:
    """Shipper: data.cancellation carries the id, the reason and the request's warehouse_id."""
    result = await gateway.cancel(
        {
            "connection": "shipper-main",
            "id": "TEST-OUTBOUND-OMS-1",
            "reason": "cancel aja",
            "params": {"warehouse_id": "PMU"},
        },
        headers={"X-Request-ID": "req-sh", "traceparent": TRACEPARENT},
    )
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert result.body["provider_response"] == {}
    check_gateway_time(result.body["cancelled_at"])
    (entry,) = simulator.journal
    check_sent(
        entry,
        SH,
        "/shipper/v3/fulfillment/outbound/oms/cancel",
        {
            "data": {
                "cancellation": {
                    "order_no": "TEST-OUTBOUND-OMS-1",
                    "cancel_reason": "cancel aja",
                    "warehouse_id": "PMU",
                }
            }
        },
        "req-sh",
    )


async def test_shoplazza_success_sends_no_body(gateway: Gateway, simulator: Simulator) -> None:
    """Shoplazza: PATCH without a body; cancelled_at is the procurement's updated_at."""
    result = await gateway.cancel(
        {"connection": "shoplazza-main", "id": "382451985837728044"},
        headers={"X-Request-ID": "req-sl", "traceparent": TRACEPARENT},
    )
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert result.body["cancelled_at"] == NOW_TEXT
    assert result.body["provider_response"] == SL_RESPONSE
    (entry,) = simulator.journal
    path = "/shoplazza/demo-shop/openapi/2022-01/procurements/382451985837728044/cancel"
    check_sent(entry, SL, path, None, "req-sl")


async def test_rxuniverse_success_without_reason_sends_no_query(
    gateway: Gateway, simulator: Simulator
) -> None:
    """RxUniverse: DELETE without a body; no reason, no deleteReason parameter."""
    result = await gateway.cancel(
        {"connection": "rxuniverse-lab", "id": "72544"},
        headers={"X-Request-ID": "req-rx", "traceparent": TRACEPARENT},
    )
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert result.body["provider_response"] == rx_response("72544")
    check_gateway_time(result.body["cancelled_at"])
    (entry,) = simulator.journal
    check_sent(entry, RX, "/rxuniverse/api/v2/orders/72544", None, "req-rx")


class Ticking:
    """A clock that moves on by ``step`` each time it is read."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        self.next = start
        self.step = step

    def __call__(self) -> datetime:
        moment, self.next = self.next, self.next + self.step
        return moment


# provider → the second cancel's HTTP status, envelope status, upstream status, cancelled_at
SECOND_CANCEL = [
    # An already_cancelled answer without the provider's time: when it happened is unknown.
    (SS, 200, "already_cancelled", 400, None),
    (SH, 200, "cancelled", 200, GATEWAY_TIME),
    (SL, 200, "cancelled", 200, NOW_TEXT),  # the first cancel's updated_at, not the second's
    (RX, 200, "already_cancelled", 400, None),
]


@pytest.mark.parametrize(
    ("provider", "http", "status", "upstream_status", "cancelled_at"), SECOND_CANCEL
)
async def test_second_cancel_answers_the_providers_already(
    make_gateway: GatewayFactory,
    make_simulator: SimulatorFactory,
    provider: str,
    http: int,
    status: str,
    upstream_status: int,
    cancelled_at: str | None,
) -> None:
    """The simulator remembers the first cancel: the second gets each provider's answer for an
    object that is already cancelled, which is a success for the caller."""
    simulator = await make_simulator(clock=Ticking(NOW, timedelta(minutes=5)))
    gateway = await gateway_to(make_gateway, simulator)
    first = await cancel(gateway, provider, "order-7", "req-1")
    assert first.status == 200, first.body
    assert first.body["status"] == "cancelled"

    second = await cancel(gateway, provider, "order-7", "req-2")
    assert second.status == http, second.body
    assert second.body["status"] == status
    assert second.body["error"] is None
    assert second.body["upstream"]["status"] == upstream_status
    assert second.body["upstream"]["attempts"] == 1
    if cancelled_at == GATEWAY_TIME:
        check_gateway_time(second.body["cancelled_at"])
    else:
        assert second.body["cancelled_at"] == cancelled_at

    sent = simulator.journal
    assert len(sent) == 2
    path = standard_path(provider, "order-7")
    check_sent(sent[0], provider, path, standard_body(provider, "order-7"), "req-1")
    check_sent(sent[1], provider, path, standard_body(provider, "order-7"), "req-2")


@pytest.mark.parametrize(
    ("extra", "query"),
    [
        ({"reason": "9999"}, "deleteReason=9999"),
        ({"params": {"reason_code": "9999"}}, "deleteReason=9999"),
        # reason_code is sent instead of the reason when both are given
        ({"reason": "customer request", "params": {"reason_code": "9999"}}, "deleteReason=9999"),
    ],
    ids=["reason", "reason_code", "reason_code-wins"],
)
async def test_rxuniverse_unknown_delete_reason_is_invalid_request(
    gateway: Gateway, simulator: Simulator, extra: dict[str, Any], query: str
) -> None:
    """deleteReason=9999 (the document's unknown code) → invalid_request from the provider."""
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "72544", **extra})
    assert result.status == 422, result.body
    assert result.body["status"] == "rejected"
    error = result.body["error"]
    assert error["code"] == "invalid_request"
    assert error["source"] == "provider"
    assert error["provider_code"] == "Delete reason code does not exist"
    assert error["provider_status"] == 400
    assert error["retryable"] is False
    (entry,) = simulator.journal
    assert (entry.method, entry.path) == ("DELETE", f"/rxuniverse/api/v2/orders/72544?{query}")
    check_auth(entry, RX)


async def test_stateset_idempotency_key_is_stable_for_the_callers_key(
    gateway: Gateway, simulator: Simulator
) -> None:
    """The same caller Idempotency-Key twice → the same key at StateSet, derived (the caller's
    own value is not forwarded); another caller key → another upstream key. err500 fails every
    time, so both requests reach StateSet whatever the gateway stores."""
    request = {"connection": "stateset-main", "id": "err500-k", "reason": REASON}
    for caller_key in ("order-42-cancel", "order-42-cancel", "order-43-cancel"):
        result = await gateway.cancel(request, headers={"Idempotency-Key": caller_key})
        assert result.status == 502, result.body
        assert result.body["error"]["code"] == "provider_error"
    cancels = [entry for entry in simulator.journal if entry.method != "GET"]  # not probes
    keys = [lower(entry.headers)["idempotency-key"] for entry in cancels]
    assert len(keys) == 3  # one attempt each: a 500 is not among the statuses ever repeated
    assert keys[0] == keys[1]
    assert keys[2] != keys[0]
    assert all("order-4" not in key for key in keys)


async def test_stateset_idempotency_key_differs_per_cancellation_without_callers_key(
    gateway: Gateway, simulator: Simulator
) -> None:
    """Without a caller key each cancellation still sends StateSet a key of its own."""
    for object_id in ("asn-a", "asn-b"):
        result = await gateway.cancel(
            {"connection": "stateset-main", "id": object_id, "reason": REASON}
        )
        assert result.status == 200, result.body
    cancels = [entry for entry in simulator.journal if entry.method != "GET"]
    first, second = (lower(entry.headers)["idempotency-key"] for entry in cancels)
    assert first
    assert second
    assert first != second


@pytest.mark.parametrize("provider", [SS, SH, SL, RX])
async def test_callers_retry_gets_through_after_a_long_outage(
    gateway: Gateway, simulator: Simulator, provider: str
) -> None:
    """Four 503s outlast one cancellation's three attempts; the caller's retry reaches the
    provider again, meets the last one and cancels on its second attempt (the retry budget's
    minimum of three retries per window is what it spends)."""
    first = await cancel(gateway, provider, "flaky503x4-b", "req-1")
    assert first.status == 502, first.body
    assert first.body["status"] == "failed"
    assert first.body["error"]["retryable"] is True
    assert first.body["upstream"]["attempts"] == 3
    second = await cancel(gateway, provider, "flaky503x4-b", "req-2")
    assert second.status == 200, second.body
    assert second.body["status"] == "cancelled"
    assert second.body["upstream"]["status"] == 200
    assert second.body["upstream"]["attempts"] == 2
    cancels = [entry for entry in simulator.journal if entry.method != "GET"]
    assert len(cancels) == 5
    # StateSet and Shoplazza read the object after each 503: it was not cancelled.
    probes = first.body["upstream"]["probes"] + second.body["upstream"]["probes"]
    # (Shoplazza's 2 requests/s leave no turn for the last probe of the first cancellation.)
    assert probes == {SS: 4, SL: 3}.get(provider, 0)


@pytest.mark.parametrize("code", [301, 303, 307, 308])
@pytest.mark.parametrize("provider", [SS, RX])
async def test_redirect_is_never_followed(
    gateway: Gateway, simulator: Simulator, provider: str, code: int
) -> None:
    """Every redirect code, for a POST and a DELETE: provider_bad_response, /_redirected untouched."""
    object_id = f"redirect-{code}"
    result = await cancel(gateway, provider, object_id, "req-redirect")
    assert result.status == 502, result.body
    error = result.body["error"]
    assert (error["code"], error["provider_status"]) == ("provider_bad_response", code)
    assert result.body["upstream"]["status"] == code
    assert [(entry.provider, entry.path) for entry in simulator.journal] == [
        (provider, standard_path(provider, object_id))
    ]


# Identifiers with characters that mean something in a URL: one encoded path segment each.
AWKWARD_ID = "PO 7/../x?y#z%41"
AWKWARD_SEGMENT = "PO%207%2F..%2Fx%3Fy%23z%2541"


@pytest.mark.parametrize(
    ("provider", "path"),
    [
        (SS, f"/stateset/v1/asns/{AWKWARD_SEGMENT}/cancel"),
        (SL, f"/shoplazza/demo-shop/openapi/2022-01/procurements/{AWKWARD_SEGMENT}/cancel"),
        (RX, f"/rxuniverse/api/v2/orders/{AWKWARD_SEGMENT}?deleteReason=customer%20request"),
        (SH, "/shipper/v3/fulfillment/outbound/oms/cancel"),  # the id travels in the body
    ],
)
async def test_identifier_is_one_percent_encoded_segment(
    gateway: Gateway, simulator: Simulator, provider: str, path: str
) -> None:
    """`/`, `..`, `?`, `#`, `%` and spaces reach the provider's own path, encoded, and the
    provider reads back exactly the id that was given."""
    result = await cancel(gateway, provider, AWKWARD_ID, "req-awkward")
    assert result.status == 200, result.body
    assert result.body["resource_id"] == AWKWARD_ID
    assert result.body["upstream"]["url"] == simulator.url + path
    (entry,) = simulator.journal
    check_sent(entry, provider, path, standard_body(provider, AWKWARD_ID), "req-awkward")
    if provider == RX:
        assert result.body["provider_response"]["orderNumber"] == AWKWARD_ID


@pytest.mark.parametrize(
    ("provider", "object_id"),
    [(SS, "station-1"), (SH, "received-1"), (SL, "allocated-1"), (RX, "badid-1")],
)
async def test_scenario_of_another_provider_is_an_ordinary_id(
    gateway: Gateway, simulator: Simulator, provider: str, object_id: str
) -> None:
    """A scenario word the simulator lists for other providers only cancels normally."""
    result = await cancel(gateway, provider, object_id, "req-other")
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"


# provider → the simulator's own 401 for a credential it does not know
WRONG_CREDENTIAL = [
    (SS, "INVALID_API_KEY"),
    (SH, "802"),
    (SL, "store is not active"),
    (RX, "Unauthorized"),
]


@pytest.mark.parametrize(("provider", "provider_code"), WRONG_CREDENTIAL)
async def test_wrong_credential_is_refused_by_the_provider(
    make_gateway: GatewayFactory,
    make_simulator: SimulatorFactory,
    provider: str,
    provider_code: str,
) -> None:
    """The simulator checks the credential itself: one it does not accept → its own 401 →
    provider_auth_failed, not retryable, and the credential appears nowhere in the envelope."""
    simulator = await make_simulator(keys=SimulatorKeys())  # the demo keys, not the canaries
    gateway = await gateway_to(make_gateway, simulator)
    result = await cancel(gateway, provider, "order-1", "req-wrong")
    assert result.status == 502, result.body
    error = result.body["error"]
    assert error["code"] == "provider_auth_failed"
    assert error["provider_code"] == provider_code
    assert error["provider_status"] == 401
    assert error["retryable"] is False
    check_no_secret(result)
    (entry,) = simulator.journal
    check_auth(entry, provider)


async def test_rxuniverse_empty_key_sends_no_header(
    make_gateway: GatewayFactory, make_simulator: SimulatorFactory
) -> None:
    """A lab that asks for no key: an empty api_key sends no x-api-key header at all."""
    simulator = await make_simulator(keys=SimulatorKeys(rxuniverse=None))
    gateway = await gateway_to(make_gateway, simulator, env={"RXUNIVERSE_API_KEY": ""})
    result = await cancel(gateway, RX, "72544", "req-nokey")
    assert result.status == 200, result.body
    (entry,) = simulator.journal
    assert not CREDENTIAL_HEADERS & set(lower(entry.headers))
