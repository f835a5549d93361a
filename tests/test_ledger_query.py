"""The ledger listing's filters, read from the query string: every problem at once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.errors import GatewayError
from gateway.ledger_api import ledger_query


def test_no_filter_is_the_callers_newest_fifty() -> None:
    query = ledger_query({}, "oms")
    assert (query.caller, query.limit, query.before, query.status) == ("oms", 50, None, None)


def test_every_filter_is_read() -> None:
    query = ledger_query(
        {
            "connection": ["stateset-main"],
            "resource_id": ["asn_1"],
            "status": ["failed"],
            "since": ["2026-01-01T00:00:00Z"],
            "until": ["2026-01-02T01:00:00+01:00"],
            "limit": ["200"],
            "cursor": ["cxl_01m94q85rt3jq5jsm633fhfkz5"],
        },
        None,
    )
    assert query.caller is None  # an admin's view
    assert (query.connection, query.resource_id, query.status) == (
        "stateset-main",
        "asn_1",
        "failed",
    )
    assert query.since == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert query.until == datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    assert (query.limit, query.before) == (200, "cxl_01m94q85rt3jq5jsm633fhfkz5")


def test_every_problem_is_reported_together() -> None:
    with pytest.raises(GatewayError) as refused:
        ledger_query({"limit": ["-1"], "status": ["maybe"], "since": ["2026-01-01"]}, "oms")
    assert sorted(loc for loc, _ in refused.value.fields) == [
        "query.limit",
        "query.since",
        "query.status",
    ]
