"""RxUniverse Rx-API v2, Cancel an Order (shared/providers/rxuniverse-cancel-order.txt).

``DELETE /rxuniverse/api/v2/orders/{orderIdentifier}`` (order, tray or PO number) with the
reason in the query parameter ``deleteReason`` and, when a key is configured, the key in
``x-api-key`` (NOTES.md decisions: the document names neither). Errors are
``{"error": "<message>", "details": [...]}`` with the exact strings of NOTES.md.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime
from http import HTTPStatus

from aiohttp import web

from gateway.simulate.faults import Outcome, Provider, play
from gateway.simulate.replies import Call, Reply
from gateway.simulate.scenarios import match
from gateway.simulate.state import CLOCK_KEY, KEYS_KEY, STATE_KEY

NAME = "rxuniverse"
PREFIX = "/rxuniverse"
UNKNOWN_REASON = "9999"  # the document's example of a reason code that does not exist
WARNING = (
    "The provided deleteReason was ignored because the system is configured to not use "
    "delete reasons"
)


def _error(status: int, message: str, *details: str) -> Reply:
    return Reply(status, {"error": message, "details": list(details)})


def error(status: int, call: Call) -> Reply:
    return _error(status, HTTPStatus(status).phrase)


def bad_reason(reason: str | None) -> Reply:
    details = [f"Provided: {reason}"] if reason else []
    return _error(400, "Delete reason code does not exist", *details)


OUTCOMES: Mapping[str, Outcome] = {
    "notfound": lambda call: _error(404, "No record found", f"Provided: {call.object_id}"),
    "jobtracker": lambda call: _error(400, "Job Tracker module required for cancel method"),
    "noreasons": lambda call: _error(400, "The delete reasons file is empty"),
    "station": lambda call: _error(400, "Order has been through a non-cancel station"),
    "badreason": lambda call: bad_reason(call.query.get("deleteReason")),
}
ALREADY = _error(400, "Order already completed")

PROVIDER = Provider(NAME, error, OUTCOMES)


def order(identifier: str, message: str = "") -> dict[str, str]:
    """The order's last known state; tray and PO number are the document's examples."""
    return {
        "orderNumber": identifier,
        "trayNumber": "337178",
        "poNumber": "Example",
        "message": message,
    }


async def cancel(request: web.Request) -> web.StreamResponse:
    app = request.app
    identifier = request.match_info["id"]
    path = f"/api/v2/orders/{identifier}"
    call = Call(NAME, request.method, path, identifier, app[CLOCK_KEY](), request.query)
    if request.method != "DELETE":
        return error(405, call).response()
    keys = app[KEYS_KEY]
    if keys.rxuniverse:
        sent = request.headers.get(keys.rxuniverse_header, "")
        if not hmac.compare_digest(sent.encode(), keys.rxuniverse.encode()):
            return error(401, call).response()
    reason = request.query.get("deleteReason")
    found = match(identifier)
    warning = WARNING if found is not None and found.name == "warning" else ""
    state = app[STATE_KEY]

    def succeed(now: datetime) -> Reply:
        if reason == UNKNOWN_REASON:
            return bad_reason(reason)
        if state.is_cancelled(NAME, identifier):
            return ALREADY
        state.cancel(NAME, identifier, now)
        return Reply(200, order(identifier, warning))

    return await play(request, PROVIDER, call, succeed)


ROUTES = (("/api/v2/orders/{id}", cancel),)
