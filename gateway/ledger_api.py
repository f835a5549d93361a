"""Reading the ledger (CONTRACT §10): ``GET /v1/cancellations``, the caller's own final
cancellations (every caller's for an admin), newest first, with filters and a cursor."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime

from aiohttp import web
from multidict import MultiMapping

from gateway.errors import ErrorCode, GatewayError, Status, invalid_request
from gateway.models import CANCELLATION_ID, CONTROL
from gateway.routing import Caller
from gateway.services import Services
from gateway.store import LedgerQuery, StoreUnavailable

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
FILTERS = ("connection", "resource_id", "status", "since", "until", "limit", "cursor")
_STATUSES = frozenset(status.value for status in Status)
_LIMIT = re.compile(r"[0-9]{1,3}")
# RFC 3339's date-time: a full date, T, a full time with seconds, an offset (Z or ±hh:mm).
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def ledger_query(params: dict[str, list[str]], caller: str | None) -> LedgerQuery:
    """The query the request's parameters ask for; every problem in one 422."""
    problems: list[tuple[str, str]] = []
    given: dict[str, str] = {}
    for name, values in params.items():
        if name not in FILTERS:
            problems.append((f"query.{name}", f"not a filter (filters: {', '.join(FILTERS)})"))
        elif len(values) > 1:
            problems.append((f"query.{name}", "given more than once"))
        else:
            given[name] = values[0]
    status = given.get("status")
    if status is not None and status not in _STATUSES:
        problems.append(("query.status", f"must be one of {', '.join(sorted(_STATUSES))}"))
    since, until = (_time(given.get(name), name, problems) for name in ("since", "until"))
    limit = DEFAULT_LIMIT
    for name in ("connection", "resource_id"):
        if name in given and CONTROL.search(given[name]):
            problems.append((f"query.{name}", "must not contain control characters"))
    if "limit" in given:
        text = given["limit"]
        if not _LIMIT.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
            problems.append(("query.limit", f"must be a whole number from 1 to {MAX_LIMIT}"))
        else:
            limit = int(text)
    cursor = given.get("cursor")
    if cursor is not None and not CANCELLATION_ID.fullmatch(cursor):
        problems.append(("query.cursor", "must be a next_cursor this endpoint answered"))
    if problems:
        raise invalid_request(*problems)
    return LedgerQuery(
        caller=caller,
        connection=given.get("connection"),
        resource_id=given.get("resource_id"),
        status=status,
        since=since,
        until=until,
        before=cursor,
        limit=limit,
    )


def _time(text: str | None, name: str, problems: list[tuple[str, str]]) -> float | None:
    if text is None:
        return None
    moment = None
    if _RFC3339.fullmatch(text):
        try:  # (a leap second, :60, is not a time Python can hold: refused)
            moment = datetime.fromisoformat(text.upper())
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        problems.append((f"query.{name}", "must be an RFC 3339 time with its offset"))
        return None
    return moment.timestamp()


async def ledger_page(
    request_query: MultiMapping[str], caller: Caller, services: Services
) -> web.Response:
    """One page of the ledger as this caller may see it, as ``{"items", "next_cursor"}``."""
    params: dict[str, list[str]] = {}
    for name, value in request_query.items():
        params.setdefault(name, []).append(value)
    query = ledger_query(params, None if caller.admin else caller.name)
    try:
        # One more than asked: whether there is a next page.
        found = await services.store.list_entries(replace(query, limit=query.limit + 1))
    except StoreUnavailable as exc:
        services.log.error("store.unavailable", backend=services.store.name, error=str(exc))
        raise GatewayError(
            ErrorCode.STORE_UNAVAILABLE, "the ledger does not answer", retry_after_s=1
        ) from None
    page = found[: query.limit]
    more = len(found) > query.limit
    cursor = b'"' + page[-1].cancellation_id.encode() + b'"' if more and page else b"null"
    items = b",".join(entry.envelope for entry in page if entry.envelope is not None)
    body = b'{"items":[' + items + b'],"next_cursor":' + cursor + b"}"
    return web.Response(body=body, content_type="application/json")
