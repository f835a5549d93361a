"""Shipper, Cancel Sales Order B2C (shared/providers/shipper-cancel-sales-order-b2c.txt).

``PATCH /shipper/v3/fulfillment/outbound/oms/cancel`` with header ``x-api-key`` and body
``{"data": {"cancellation": {"order_no", "cancel_reason", "warehouse_id"}}}``, all three
required strings of at most 50, 50 and 20 characters. Answers are a ``metadata`` object;
the 401 has its own keys and an ISO timestamp where the others have unix seconds. Shipper
documents no "already cancelled" answer: a second cancel succeeds again.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from gateway.simulate.faults import Outcome, Provider, play
from gateway.simulate.replies import Call, Reply, iso_z, unix
from gateway.simulate.state import CLOCK_KEY, KEYS_KEY, STATE_KEY

NAME = "shipper"
PREFIX = "/shipper"
CANCEL_PATH = "/v3/fulfillment/outbound/oms/cancel"
LIMITS = {"order_no": 50, "cancel_reason": 50, "warehouse_id": 20}


def _failure(status: int, call: Call, code: int | None, message: str) -> Reply:
    problem: dict[str, Any] = {"code": code, "message": message}
    if code is None:
        del problem["code"]
    metadata = {
        "path": call.path,
        "http_status_code": status,
        "http_status": HTTPStatus(status).phrase,
        "errors": [problem],
        "timestamp": unix(call.now),
    }
    return Reply(status, {"metadata": metadata})


def unauthorized(call: Call) -> Reply:
    metadata = {
        "path": call.path,
        "status_code": 401,
        "status": "Unauthorized",
        # The document's example prints /v1 here; the simulator names the path it was sent.
        "message": f"{call.method} {call.path} [401] Unauthorized",
        "error": {
            "code": 802,
            "message": "Unauthorized Access. You are not authorized to access this resource.",
        },
        "timestamp": iso_z(call.now),
    }
    return Reply(401, {"metadata": metadata})


def error(status: int, call: Call) -> Reply:
    """Shipper documents codes for 400 (810), 401 (802) and 500 (803) only; other statuses
    carry the message alone."""
    if status == 401:
        return unauthorized(call)
    if status == 500:
        return _failure(500, call, 803, "Internal Server error.")
    return _failure(status, call, None, HTTPStatus(status).phrase)


def invalid_input(call: Call) -> Reply:
    return _failure(400, call, 810, "Invalid Input. Please Validate Your Input.")


OUTCOMES: Mapping[str, Outcome] = {
    # 3012 is documented for the B2B sibling endpoint.
    "notfound": lambda call: _failure(400, call, 3012, "Order Doesn't Exist in WMS and OMS."),
    "badid": invalid_input,
    # The rule (no cancel once stock is allocated) is documented, its code is not.
    "allocated": lambda call: _failure(400, call, 811, "Sales Order already allocated"),
}

PROVIDER = Provider(NAME, error, OUTCOMES)


def check_body(raw: bytes) -> dict[str, str] | None:
    """The three cancellation fields, or None when any is missing, empty, not a string or
    over its documented length (Shipper answers all of these with 810)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    data = body.get("data") if isinstance(body, dict) else None
    cancellation = data.get("cancellation") if isinstance(data, dict) else None
    if not isinstance(cancellation, dict):
        return None
    fields: dict[str, str] = {}
    for name, limit in LIMITS.items():
        value = cancellation.get(name)
        if not isinstance(value, str) or not value or len(value) > limit:
            return None
        fields[name] = value
    return fields


def success(call: Call, now: datetime) -> Reply:
    metadata = {
        "path": call.path,
        "http_status_code": 200,
        "http_status": "OK",
        "timestamp": unix(now),
    }
    return Reply(200, {"metadata": metadata})


async def cancel(request: web.Request) -> web.StreamResponse:
    app = request.app
    call = Call(NAME, request.method, CANCEL_PATH, "", app[CLOCK_KEY]())
    if request.method != "PATCH":
        return error(405, call).response()
    key = request.headers.get("x-api-key", "")
    if not hmac.compare_digest(key.encode(), app[KEYS_KEY].shipper.encode()):
        return unauthorized(call).response()
    fields = check_body(await request.read())
    if fields is None:
        return invalid_input(call).response()

    order_no = fields["order_no"]
    call = Call(NAME, request.method, CANCEL_PATH, order_no, call.now)
    state = app[STATE_KEY]

    def succeed(now: datetime) -> Reply:
        state.cancel(NAME, order_no, now)
        return success(call, now)

    return await play(request, PROVIDER, call, succeed)


ROUTES = ((CANCEL_PATH, cancel),)
