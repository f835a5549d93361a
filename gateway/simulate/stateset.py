"""StateSet, Cancel ASN (shared/providers/stateset-cancel-asn.txt and NOTES.md).

``POST /stateset/v1/asns/{id}/cancel`` with ``Authorization: Bearer <key>`` and a JSON body
``reason`` and ``cancelled_by`` (both required), ``notify_supplier``, ``notes``. Errors are
``{"error": {"type", "code", "message"}}``. A repeated ``Idempotency-Key`` for the same ASN
replays the first success (or answers 409 while the first is still running), as StateSet
documents for safe retries.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from gateway.simulate.faults import Outcome, Provider, play
from gateway.simulate.replies import Call, Reply, iso_z, unix
from gateway.simulate.scenarios import match
from gateway.simulate.state import CLOCK_KEY, KEYS_KEY, STATE_KEY

NAME = "stateset"
PREFIX = "/stateset"


def _error(status: int, type_: str, code: str, message: str, **extra: str) -> Reply:
    return Reply(status, {"error": {"type": type_, "code": code, "message": message, **extra}})


_GENERIC = {
    401: ("authentication_error", "INVALID_API_KEY", "Invalid API key provided"),
    403: ("authentication_error", "INSUFFICIENT_PERMISSIONS", "Insufficient permissions"),
    404: ("invalid_request_error", "not_found", "Resource not found"),
    405: ("invalid_request_error", "method_not_allowed", "Method not allowed"),
    429: ("rate_limit_error", "rate_limit_exceeded", "Too many requests"),
    500: ("api_error", "internal_error", "Internal server error"),
    503: ("api_error", "service_unavailable", "Service temporarily unavailable"),
}


def error(status: int, call: Call) -> Reply:
    type_, code, message = _GENERIC.get(status, ("api_error", "api_error", "Unexpected error"))
    reply = _error(status, type_, code, message)
    if status != 429:
        return reply
    reset = unix(call.now) + 60
    limits = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0"}
    return Reply(status, reply.body, {**limits, "X-RateLimit-Reset": str(reset)})


def _fixed(status: int, type_: str, code: str, message: str) -> Outcome:
    return lambda call: _error(status, type_, code, message)


RECEIVED = "Cannot cancel ASN that has already been received"
OUTCOMES: Mapping[str, Outcome] = {
    "notfound": lambda call: _error(
        404, "invalid_request_error", "not_found", f"No such ASN: '{call.object_id}'"
    ),
    "received": _fixed(400, "invalid_status", "ASN_ALREADY_RECEIVED", RECEIVED),
    "received409": _fixed(409, "invalid_status", "ASN_ALREADY_RECEIVED", RECEIVED),
    "badid": _fixed(400, "invalid_request_error", "parameter_invalid", "Invalid ASN id"),
    "expired": _fixed(401, "authentication_error", "EXPIRED_API_KEY", "API key has expired"),
    "noscope": _fixed(
        403, "authentication_error", "INSUFFICIENT_PERMISSIONS", "Insufficient permissions"
    ),
    "lowercase-auth": _fixed(
        401, "authentication_error", "invalid_api_key", "Invalid API key provided"
    ),
    "lowercase-expired": _fixed(
        401, "authentication_error", "api_key_expired", "API key has expired"
    ),
    "lowercase-noscope": _fixed(
        403, "authentication_error", "insufficient_permissions", "Insufficient permissions"
    ),
    "keyinuse": _fixed(
        409,
        "invalid_request_error",
        "idempotency_key_in_use",
        "A request with this idempotency key is already in progress",
    ),
}
ALREADY = _error(400, "invalid_status", "ASN_ALREADY_CANCELLED", "ASN has already been cancelled")

PROVIDER = Provider(NAME, error, OUTCOMES, request_id_header="X-Request-Id")


def authenticate(request: web.Request, key: str, call: Call) -> Reply | None:
    """None when the Bearer key is right, else the 401 to answer."""
    header = request.headers.get("Authorization")
    if header is None:
        return _error(
            401, "authentication_error", "MISSING_AUTH_HEADER", "Authorization header is required"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode()):
        return None
    return error(401, call)


def check_body(raw: bytes) -> dict[str, Any] | Reply:
    """The parsed body, or the 400 StateSet answers for it."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return _error(
            400, "invalid_request_error", "parameter_invalid", "Body must be a JSON object"
        )
    for name in ("reason", "cancelled_by"):
        value = body.get(name)
        if value is None or value == "":
            message = f"Missing required parameter: {name}"
            return _error(400, "invalid_request_error", "parameter_missing", message, param=name)
        if not isinstance(value, str):
            return _invalid(name, "a string")
    if "notify_supplier" in body and not isinstance(body["notify_supplier"], bool):
        return _invalid("notify_supplier", "a boolean")
    if body.get("notes") is not None and not isinstance(body["notes"], str):
        return _invalid("notes", "a string")
    return body


def _invalid(name: str, expected: str) -> Reply:
    message = f"Invalid parameter: {name} must be {expected}"
    return _error(400, "invalid_request_error", "parameter_invalid", message, param=name)


def cancelled_asn(asn_id: str, body: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The documented success body, for this ASN, this request and this time."""
    sent_at = iso_z(now)
    notifications = [
        {"type": "email", "recipient": "supplier@audiotech.com", "sent_at": sent_at},
        {"type": "webhook", "endpoint": "warehouse_system", "sent_at": sent_at},
    ]
    return {
        "id": asn_id,
        "object": "asn",
        "asn_number": "ASN-2024-00001",
        "status": "cancelled",
        "cancelled_at": iso_z(now),
        "cancelled_by": body["cancelled_by"],
        "cancellation_reason": body["reason"],
        "purchase_order_id": "po_123456789",
        "supplier_id": "sup_abc123",
        "items_affected": [
            {"sku": "WBH-001", "quantity": 500},
            {"sku": "USB-C-001", "quantity": 1000},
        ],
        "notifications_sent": notifications if body.get("notify_supplier", True) else [],
        "notes": body.get("notes"),
    }


def _admitted(request: web.Request, method: str, suffix: str) -> tuple[Call, Reply | None]:
    """The call to the ASN's path plus ``suffix``, and the refusal to answer instead of
    serving it: another verb, a wrong key."""
    asn_id = request.match_info["id"]
    call = Call(
        NAME, request.method, f"/v1/asns/{asn_id}{suffix}", asn_id, request.app[CLOCK_KEY]()
    )
    if request.method != method:
        return call, error(405, call)
    return call, authenticate(request, request.app[KEYS_KEY].stateset, call)


async def cancel(request: web.Request) -> web.StreamResponse:
    app = request.app
    call, refused = _admitted(request, "POST", "/cancel")
    if refused is not None:
        return refused.response()
    asn_id = call.object_id
    body = check_body(await request.read())
    if isinstance(body, Reply):
        return body.response()

    state = app[STATE_KEY]
    key = request.headers.get("Idempotency-Key")
    slot = (key or "", asn_id)
    if key:
        if slot in state.idempotent:
            stored = state.idempotent[slot]
            if stored is None:
                return OUTCOMES["keyinuse"](call).response()
            response = stored.response()
            response.headers["Idempotent-Replayed"] = "true"
            return response
        state.idempotent[slot] = None
    successes: list[Reply] = []

    def succeed(now: datetime) -> Reply:
        if state.is_cancelled(NAME, asn_id):
            return ALREADY
        state.cancel(NAME, asn_id, now)
        successes.append(Reply(200, cancelled_asn(asn_id, body, now)))
        return successes[0]

    try:
        return await play(request, PROVIDER, call, succeed)
    finally:
        if key and successes:
            state.idempotent[slot] = successes[0]
        elif key:
            del state.idempotent[slot]


async def retrieve(request: web.Request) -> web.StreamResponse:
    """ "Retrieve ASN", the status probe: the ASN as the simulator's state has it (cancelled,
    or still in transit; 404 for a `notfound` id)."""
    app = request.app
    call, refused = _admitted(request, "GET", "")
    if refused is not None:
        return refused.response()
    asn_id = call.object_id
    found = match(asn_id)
    if found is not None and found.name == "notfound":
        return OUTCOMES["notfound"](call).response()
    when = app[STATE_KEY].cancelled.get((NAME, asn_id))
    status = "in_transit" if when is None else "cancelled"
    asn = {"id": asn_id, "asn_number": "ASN-2024-00001", "status": status}
    return Reply(200, {**asn, "updated_at": iso_z(when or call.now)}).response()


ROUTES = (("/v1/asns/{id}/cancel", cancel), ("/v1/asns/{id}", retrieve))
