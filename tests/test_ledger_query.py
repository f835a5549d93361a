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


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": ["²"]}, "query.limit"),  # a digit to str.isdigit, not to int
        ({"limit": ["0" * 5000]}, "query.limit"),
        ({"connection": ["a\x00b"]}, "query.connection"),
        ({"resource_id": ["line\nbreak"]}, "query.resource_id"),
        ({"since": ["20261206T040654Z"]}, "query.since"),  # ISO 8601, not RFC 3339
        ({"since": ["2026-12-06 04:06:54Z"]}, "query.since"),
        ({"until": ["2026-12-06T04Z"]}, "query.until"),
    ],
)
def test_what_is_not_a_filter_value_is_refused(params: dict[str, list[str]], loc: str) -> None:
    with pytest.raises(GatewayError) as refused:
        ledger_query(params, "oms")
    assert [field for field, _ in refused.value.fields] == [loc]


def test_rfc3339_times_in_lower_case_are_read() -> None:
    query = ledger_query({"since": ["2026-12-06t04:06:54.5z"]}, "oms")
    assert query.since == datetime(2026, 12, 6, 4, 6, 54, 500000, tzinfo=UTC).timestamp()
