"""Answers a provider gives inside HTTP 200 (GraphQL's userErrors, a bare ``false``, a code in
the body) and its hints on when to come back, classified by a definition's own rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
import pytest

from gateway.definition import ProviderDefinition
from gateway.errors import ErrorCode, Status
from gateway.translate.classify import Outcome, classify
from gateway.translate.wire import UpstreamResponse

NOW = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)


def definition(
    resource: dict[str, Any], errors: dict[str, Any] | None = None
) -> ProviderDefinition:
    return ProviderDefinition.model_validate(
        {
            "name": "shop",
            "base_url": "https://shop.example",
            "resources": {"order": {"method": "POST", "path": "/cancel", **resource}},
            **({"errors": errors} if errors else {}),
        }
    )


def answer(
    provider: ProviderDefinition, status: int, body: Any, headers: dict[str, str] | None = None
) -> Outcome:
    raw = orjson.dumps(body)
    return classify(provider, "order", UpstreamResponse(status, headers or {}, raw), NOW)


# A GraphQL mutation answers 200 whatever happens: success is an empty userErrors list.
GRAPHQL = definition(
    {"success": {"when": "length(data.orderCancel.userErrors) == `0`"}},
    {
        "code": "data.orderCancel.userErrors[0].code || errors[0].extensions.code",
        "message": "data.orderCancel.userErrors[0].message || errors[0].message",
        "rules": [
            {"when": {"code": "NOT_FOUND"}, "outcome": "not_found"},
            {"when": {"code": "THROTTLED"}, "outcome": "rate_limited"},
            {"when": {"body": "data.orderCancel.userErrors[0]"}, "outcome": "not_cancellable"},
        ],
        "retry_after": [{"body": "extensions.cost.retryAfterMs", "unit": "milliseconds"}],
    },
)


def test_an_empty_user_errors_list_in_a_200_is_a_success() -> None:
    body = {"data": {"orderCancel": {"job": {"id": "j1"}, "userErrors": []}}}
    assert answer(GRAPHQL, 200, body).status is Status.CANCELLED


def test_a_user_error_inside_a_200_is_classified_by_the_rules() -> None:
    body = {"data": {"orderCancel": {"userErrors": [{"code": "NOT_FOUND", "message": "gone"}]}}}
    outcome = answer(GRAPHQL, 200, body)
    assert (outcome.code, outcome.provider_code, outcome.detail) == (
        ErrorCode.NOT_FOUND,
        "NOT_FOUND",
        "gone",
    )


def test_a_rule_may_match_on_the_body_alone() -> None:
    """A user error with no code the rules know: the body rule (any user error) decides."""
    body = {"data": {"orderCancel": {"userErrors": [{"message": "already fulfilled"}]}}}
    assert answer(GRAPHQL, 200, body).code is ErrorCode.NOT_CANCELLABLE


def test_throttling_reported_in_the_body_waits_as_the_body_says() -> None:
    body = {
        "errors": [{"extensions": {"code": "THROTTLED"}}],
        "extensions": {"cost": {"retryAfterMs": 2500}},
    }
    outcome = answer(GRAPHQL, 200, body)
    assert (outcome.code, outcome.retry_after_s) == (ErrorCode.RATE_LIMITED, 2.5)


# Magento answers `true` when it cancelled the order and `false` when it could not.
MAGENTO = definition(
    {"success": {"when": "@ == `true`"}},
    {"rules": [{"when": {"status": 200, "body": "@ == `false`"}, "outcome": "not_cancellable"}]},
)


@pytest.mark.parametrize(("body", "status"), [(True, Status.CANCELLED), (False, Status.REJECTED)])
def test_a_bare_boolean_answer(body: bool, status: Status) -> None:
    outcome = answer(MAGENTO, 200, body)
    assert outcome.status is status
    if not body:
        assert outcome.code is ErrorCode.NOT_CANCELLABLE


def test_a_body_rule_never_matches_an_answer_that_is_not_json() -> None:
    outcome = classify(MAGENTO, "order", UpstreamResponse(200, {}, b"<html>"), NOW)
    assert (outcome.code, outcome.unmapped) == (ErrorCode.PROVIDER_BAD_RESPONSE, True)


# --- when to come back ------------------------------------------------------------------------

HINTED = definition(
    {},
    {
        "retry_after": [
            {"header": "X-RateLimit-Reset", "unit": "unix"},
            {"header": "X-Next-Replenishment-Time", "unit": "unix_ms"},
            {"body": "error.wait_s"},
        ]
    },
)


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"x-ratelimit-reset": str(int(NOW.timestamp()) + 30)}, {}, 30.0),
        ({"x-next-replenishment-time": str(int(NOW.timestamp() * 1000) + 4500)}, {}, 4.5),
        ({}, {"error": {"wait_s": 7}}, 7.0),
        ({"retry-after": "12"}, {}, 12.0),  # the standard header when no hint is given
        ({"retry-after": format_datetime(NOW + timedelta(seconds=20), usegmt=True)}, {}, 20.0),
        ({"x-ratelimit-reset": "soon", "retry-after": "3"}, {}, 3.0),  # unreadable: the next
        ({"x-ratelimit-reset": str(int(NOW.timestamp()) - 60)}, {}, 1.0),  # past: the least
        ({}, {"error": {"wait_s": 10**9}}, 3600.0),  # clamped
    ],
)
def test_the_wait_comes_from_the_first_hint_that_reads(
    headers: dict[str, str], body: Any, expected: float
) -> None:
    assert answer(HINTED, 429, body, headers).retry_after_s == expected


def test_a_hint_names_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one of header or body"):
        definition({}, {"retry_after": [{"header": "A", "body": "b"}]})
