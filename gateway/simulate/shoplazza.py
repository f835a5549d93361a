"""Shoplazza, Cancel Procurement (shared/providers/shoplazza-cancel-procurement.txt).

``PATCH /shoplazza/{shop_domain}/openapi/{version}/procurements/{id}/cancel`` with header
``Access-Token``; the body is ignored. The real host is ``{shop_domain}.myshoplaza.com``:
here the store is the path segment after the prefix. Errors come as ``{"errors": [...]}`` or
``{"error": "..."}``. Cancelling a cancelled procurement answers it again, unchanged.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web

from gateway.simulate.faults import Outcome, Provider, play
from gateway.simulate.replies import Call, Reply, iso_z
from gateway.simulate.scenarios import match
from gateway.simulate.state import CLOCK_KEY, KEYS_KEY, STATE_KEY

NAME = "shoplazza"
PREFIX = "/shoplazza/{shop_domain}"
CANCELLED = 4  # states: 1 waiting for stock, 2 partly received, 3 received, 4 cancelled

_INACTIVE = Reply(401, {"error": "store is not active"})


def error(status: int, call: Call) -> Reply:
    if status == 401:
        return _INACTIVE  # what Shoplazza sends for a missing or invalid token
    if status == 403:
        return Reply(403, {"errors": ["Forbidden"]})
    return Reply(status, {"errors": [HTTPStatus(status).phrase]})


OUTCOMES: Mapping[str, Outcome] = {
    "notfound": lambda call: Reply(404, {"errors": ["Procurement not found"]}),
    "badid": lambda call: Reply(400, {"errors": ["invalid procurement_id"]}),
    "inactive": lambda call: _INACTIVE,
    "noscope": lambda call: error(403, call),
    "nosupplier": lambda call: Reply(400, {"error": "Supplier not found"}),
    "nocontext": lambda call: Reply(400, {"errors": ["No Context"]}),
}

PROVIDER = Provider(NAME, error, OUTCOMES, request_id_header="Request-Id")


def procurement(procurement_id: str, updated_at: datetime) -> dict[str, Any]:
    """The documented success body for this procurement, cancelled at ``updated_at``."""
    return {
        "procurement": {
            "id": procurement_id,
            "procurement_sn": "00000002",
            "supplier_id": "382453603865993516",
            "location_id": "190035786870033452",
            "note": "teest note",
            "state": CANCELLED,
            "pending_quantity": 0,
            "received_quantity": 0,
            "rejected_quantity": 0,
            "transfer_quantity": 0,
            "created_by": "",
            "created_at": "2024-05-21T08:47:39Z",
            "updated_at": iso_z(updated_at),
        }
    }


def _admitted(request: web.Request, method: str, suffix: str) -> tuple[Call, Reply | None]:
    """The call to the procurement's path plus ``suffix``, and the refusal to answer instead
    of serving it: another verb, a wrong token."""
    info = request.match_info
    procurement_id = info["id"]
    path = f"/openapi/{info['version']}/procurements/{procurement_id}{suffix}"
    call = Call(NAME, request.method, path, procurement_id, request.app[CLOCK_KEY]())
    if request.method != method:
        return call, error(405, call)
    token = request.headers.get("Access-Token", "")
    if not hmac.compare_digest(token.encode(), request.app[KEYS_KEY].shoplazza.encode()):
        return call, _INACTIVE
    return call, None


async def cancel(request: web.Request) -> web.StreamResponse:
    call, refused = _admitted(request, "PATCH", "/cancel")
    if refused is not None:
        return refused.response()
    procurement_id = call.object_id
    state = request.app[STATE_KEY]

    def succeed(now: datetime) -> Reply:
        first = state.cancel(NAME, procurement_id, now)
        return Reply(200, procurement(procurement_id, first))

    return await play(request, PROVIDER, call, succeed)


async def detail(request: web.Request) -> web.StreamResponse:
    """ "Get Procurement Detail", the status probe: state 4 once cancelled, else 1 (waiting for
    stock); 404 for a `notfound` id."""
    call, refused = _admitted(request, "GET", "")
    if refused is not None:
        return refused.response()
    procurement_id = call.object_id
    found = match(procurement_id)
    if found is not None and found.name == "notfound":
        return OUTCOMES["notfound"](call).response()
    when = request.app[STATE_KEY].cancelled.get((NAME, procurement_id))
    body = procurement(procurement_id, when or call.now)
    if when is None:
        body["procurement"]["state"] = 1
    return Reply(200, body).response()


ROUTES = (
    ("/openapi/{version}/procurements/{id}/cancel", cancel),
    ("/openapi/{version}/procurements/{id}", detail),
)
