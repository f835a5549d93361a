"""classify: every documented provider answer maps to the outcome CONTRACT §5/§6 gives it."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
import pytest

from gateway.definition import ProviderDefinition
from gateway.errors import SPECS, ErrorCode, Status
from gateway.translate.classify import (
    MAX_PROVIDER_MESSAGE,
    MAX_PROVIDER_TEXT,
    Outcome,
    classify,
)
from gateway.translate.wire import UpstreamResponse

from .conftest import DEFAULT_RESOURCE, FIXED_NOW

# --- the providers' documented bodies (shared/providers/*.txt, NOTES.md) --------------------

STATESET_SUCCESS = {
    "id": "asn_0901f083-aa1c-43c5-af5c-0a9d2fc64e30",
    "object": "asn",
    "asn_number": "ASN-2024-00001",
    "status": "cancelled",
    "cancelled_at": "2024-01-16T10:30:00Z",
    "cancelled_by": "purchasing@company.com",
    "cancellation_reason": "Supplier notified of production delay",
    "purchase_order_id": "po_123456789",
    "supplier_id": "sup_abc123",
    "items_affected": [
        {"sku": "WBH-001", "quantity": 500},
        {"sku": "USB-C-001", "quantity": 1000},
    ],
    "notifications_sent": [
        {"type": "email", "recipient": "supplier@audiotech.com", "sent_at": "2024-01-16T10:31:00Z"},
        {"type": "webhook", "endpoint": "warehouse_system", "sent_at": "2024-01-16T10:31:00Z"},
    ],
    "notes": (
        "Shipment delayed by 2 weeks due to material shortage. "
        "Will create new ASN when shipment is ready."
    ),
}

STATESET_ASN_ALREADY_RECEIVED = {
    "error": {
        "type": "invalid_status",
        "message": "Cannot cancel ASN that has already been received",
        "code": "ASN_ALREADY_RECEIVED",
    }
}

SHIPPER_SUCCESS = {
    "metadata": {
        "path": "/v3/fulfillment/outbound/oms/cancel",
        "http_status_code": 200,
        "http_status": "OK",
        "timestamp": 1637907242,
    }
}

SHIPPER_810 = {
    "metadata": {
        "path": "/v3/fulfillment/outbound/oms/cancel",
        "http_status_code": 400,
        "http_status": "Bad Request",
        "errors": [{"code": 810, "message": "Invalid Input. Please Validate Your Input."}],
        "timestamp": 1637907103,
    }
}

SHIPPER_401 = {
    "metadata": {
        "path": "/v3/fulfillment/outbound/oms/cancel",
        "status_code": 401,
        "status": "Unauthorized",
        "message": "PATCH /v1/fulfillment/outbound/oms/cancel [401] Unauthorized",
        "error": {
            "code": 802,
            "message": "Unauthorized Access. You are not authorized to access this resource.",
        },
        "timestamp": "2022-05-12T04:04:19Z",
    }
}

SHIPPER_803 = {
    "metadata": {
        "path": "/v3/fulfillment/outbound/oms/cancel",
        "http_status_code": 500,
        "http_status": "Internal Server Error",
        "errors": [{"code": 803, "message": "Internal Server error."}],
        "timestamp": 1652326659,
    }
}

# 3012 is documented for the B2B sibling endpoint, in the same error shape.
SHIPPER_3012 = {
    "metadata": {
        "path": "/v3/fulfillment/outbound/oms/cancel",
        "http_status_code": 400,
        "http_status": "Bad Request",
        "errors": [{"code": 3012, "message": "Order Doesn't Exist in WMS and OMS."}],
        "timestamp": 1652326659,
    }
}

SHOPLAZZA_PROCUREMENT = {
    "id": "382451985837728044",
    "procurement_sn": "00000002",
    "supplier_id": "382453603865993516",
    "location_id": "190035786870033452",
    "note": "teest note",
    "state": 4,
    "pending_quantity": 0,
    "received_quantity": 0,
    "rejected_quantity": 0,
    "transfer_quantity": 0,
    "created_by": "",
    "created_at": "2024-05-21T08:47:39Z",
    "updated_at": "2024-05-21T09:59:29Z",
}
SHOPLAZZA_SUCCESS = {"procurement": SHOPLAZZA_PROCUREMENT}

RXUNIVERSE_SUCCESS = {
    "orderNumber": "72544",
    "trayNumber": "337178",
    "poNumber": "Example",
    "message": "",
}


# --- helpers -----------------------------------------------------------------------------------


def response(
    status: int, body: Any = b"", headers: dict[str, str] | None = None
) -> UpstreamResponse:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return UpstreamResponse(status, headers or {}, raw)


def run(
    definitions: dict[str, ProviderDefinition],
    provider: str,
    status: int,
    body: Any = b"",
    now: datetime | None = None,
    headers: dict[str, str] | None = None,
) -> Outcome:
    definition = definitions[provider]
    resource = next(iter(definition.resources))
    return classify(definition, resource, response(status, body, headers), now or FIXED_NOW)


PLAIN = ProviderDefinition.model_validate(
    {"name": "plain", "resources": {"thing": {"method": "DELETE", "path": "/things/{id}"}}}
)


@pytest.fixture
def providers(definitions: dict[str, ProviderDefinition]) -> dict[str, ProviderDefinition]:
    """The built-ins plus ``plain``, a provider with no error rules at all."""
    return {**definitions, "plain": PLAIN}


def assert_failure(outcome: Outcome, code: ErrorCode, *, unmapped: bool) -> None:
    """The outcome carries ``code`` with the status and retryability errors.SPECS gives it."""
    assert outcome.code is code
    assert outcome.status is SPECS[code].status
    assert outcome.retryable is SPECS[code].retryable
    assert outcome.unmapped is unmapped
    assert outcome.cancelled_at is None
    assert outcome.provider_response == {}


# --- StateSet ----------------------------------------------------------------------------------


def test_stateset_success(providers: dict[str, ProviderDefinition]) -> None:
    """The documented 200 is cancelled, with the provider's time and a small selection."""
    outcome = run(providers, "stateset", 200, STATESET_SUCCESS)
    assert outcome.status is Status.CANCELLED
    assert outcome.code is None
    assert outcome.retryable is False
    assert outcome.unmapped is False
    assert outcome.provider_status == 200
    assert outcome.cancelled_at == "2024-01-16T10:30:00Z"
    assert outcome.provider_response == {
        "asn_number": "ASN-2024-00001",
        "purchase_order_id": "po_123456789",
        "supplier_id": "sup_abc123",
        "items_affected": [
            {"sku": "WBH-001", "quantity": 500},
            {"sku": "USB-C-001", "quantity": 1000},
        ],
    }


@pytest.mark.parametrize("status", [400, 409])
def test_stateset_asn_already_received(
    providers: dict[str, ProviderDefinition], status: int
) -> None:
    """ASN_ALREADY_RECEIVED is not_cancellable whichever status (undocumented) comes with it."""
    outcome = run(providers, "stateset", status, STATESET_ASN_ALREADY_RECEIVED)
    assert_failure(outcome, ErrorCode.NOT_CANCELLABLE, unmapped=False)
    assert outcome.status is Status.REJECTED
    assert outcome.provider_code == "ASN_ALREADY_RECEIVED"
    assert outcome.provider_status == status
    assert outcome.detail == "Cannot cancel ASN that has already been received"


STATESET_CODES = [
    # lowercase generation
    ("invalid_api_key", 401, ErrorCode.PROVIDER_AUTH_FAILED),
    ("api_key_expired", 401, ErrorCode.PROVIDER_AUTH_FAILED),
    ("insufficient_permissions", 403, ErrorCode.PROVIDER_AUTH_FAILED),
    ("parameter_missing", 400, ErrorCode.INVALID_REQUEST),
    ("parameter_invalid", 400, ErrorCode.INVALID_REQUEST),
    ("rate_limit_exceeded", 429, ErrorCode.RATE_LIMITED),
    ("idempotency_key_in_use", 409, ErrorCode.IDEMPOTENCY_IN_PROGRESS),
    # uppercase generation
    ("INVALID_API_KEY", 401, ErrorCode.PROVIDER_AUTH_FAILED),
    ("EXPIRED_API_KEY", 401, ErrorCode.PROVIDER_AUTH_FAILED),
    ("MISSING_AUTH_HEADER", 401, ErrorCode.PROVIDER_AUTH_FAILED),
    ("INSUFFICIENT_PERMISSIONS", 403, ErrorCode.PROVIDER_AUTH_FAILED),
    ("ASN_ALREADY_RECEIVED", 400, ErrorCode.NOT_CANCELLABLE),
    # the other spelling of each, matched case-insensitively
    ("asn_already_received", 400, ErrorCode.NOT_CANCELLABLE),
    ("API_KEY_EXPIRED", 401, ErrorCode.PROVIDER_AUTH_FAILED),
    ("PARAMETER_MISSING", 400, ErrorCode.INVALID_REQUEST),
    ("Parameter_Invalid", 400, ErrorCode.INVALID_REQUEST),
    ("RATE_LIMIT_EXCEEDED", 429, ErrorCode.RATE_LIMITED),
    ("IDEMPOTENCY_KEY_IN_USE", 409, ErrorCode.IDEMPOTENCY_IN_PROGRESS),
    # a code that disagrees with the generic status table wins over it
    ("invalid_api_key", 400, ErrorCode.PROVIDER_AUTH_FAILED),
    ("parameter_invalid", 404, ErrorCode.INVALID_REQUEST),
]


@pytest.mark.parametrize(("code", "status", "expected"), STATESET_CODES)
def test_stateset_codes_of_both_generations(
    providers: dict[str, ProviderDefinition], code: str, status: int, expected: ErrorCode
) -> None:
    """Lowercase and uppercase StateSet codes classify alike, by the definition's rules."""
    body = {"error": {"code": code, "message": "something went wrong"}}
    outcome = run(providers, "stateset", status, body)
    assert_failure(outcome, expected, unmapped=False)
    assert outcome.provider_code == code


@pytest.mark.parametrize(
    ("error_type", "status", "expected"),
    [
        ("authentication_error", 401, ErrorCode.PROVIDER_AUTH_FAILED),
        ("authentication_error", 400, ErrorCode.PROVIDER_AUTH_FAILED),
        ("invalid_request_error", 400, ErrorCode.INVALID_REQUEST),
        ("invalid_request_error", 404, ErrorCode.NOT_FOUND),
        ("rate_limit_error", 429, ErrorCode.RATE_LIMITED),
        ("invalid_status", 400, ErrorCode.NOT_CANCELLABLE),
        ("INVALID_STATUS", 422, ErrorCode.NOT_CANCELLABLE),
    ],
)
def test_stateset_type_fallback_for_unknown_codes(
    providers: dict[str, ProviderDefinition], error_type: str, status: int, expected: ErrorCode
) -> None:
    """An unknown code falls back on the error type, before the HTTP status."""
    body = {"error": {"type": error_type, "code": "brand_new_code", "message": "m"}}
    outcome = run(providers, "stateset", status, body)
    assert_failure(outcome, expected, unmapped=False)
    assert outcome.provider_code == "brand_new_code"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ErrorCode.PROVIDER_REJECTED),
        (401, ErrorCode.PROVIDER_AUTH_FAILED),
        (404, ErrorCode.NOT_FOUND),
        (409, ErrorCode.NOT_CANCELLABLE),
        (500, ErrorCode.PROVIDER_ERROR),
        (503, ErrorCode.PROVIDER_ERROR),
    ],
)
def test_stateset_status_fallback(
    providers: dict[str, ProviderDefinition], status: int, expected: ErrorCode
) -> None:
    """Unknown code and type: the generic status table decides, and says so (unmapped)."""
    body = {"error": {"type": "new_type", "code": "new_code", "message": "m"}}
    outcome = run(providers, "stateset", status, body)
    assert_failure(outcome, expected, unmapped=True)
    assert outcome.provider_code == "new_code"


def test_stateset_message_is_provider_code_without_a_code(
    providers: dict[str, ProviderDefinition],
) -> None:
    """Without a code, the provider's message is the provider_code."""
    outcome = run(providers, "stateset", 400, {"error": {"message": "ASN is locked"}})
    assert outcome.provider_code == "ASN is locked"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, {**STATESET_SUCCESS, "status": "in_transit"}),
        (200, {**STATESET_SUCCESS, "status": "CANCELLED"}),
        (200, {"id": "asn_1", "object": "asn"}),
        (201, STATESET_SUCCESS),
    ],
    ids=["other-status", "status-other-case", "no-status", "201"],
)
def test_stateset_2xx_without_confirmation_is_a_bad_response(
    providers: dict[str, ProviderDefinition], status: int, body: dict[str, Any]
) -> None:
    """Only a 200 whose body says status: cancelled confirms the cancellation."""
    outcome = run(providers, "stateset", status, body)
    assert_failure(outcome, ErrorCode.PROVIDER_BAD_RESPONSE, unmapped=True)
    assert outcome.provider_status == status


# --- Shipper -----------------------------------------------------------------------------------


def test_shipper_success(providers: dict[str, ProviderDefinition]) -> None:
    """metadata.http_status_code 200 is cancelled; Shipper returns no data."""
    outcome = run(providers, "shipper", 200, SHIPPER_SUCCESS)
    assert outcome.status is Status.CANCELLED
    assert outcome.code is None
    assert outcome.provider_response == {}
    assert outcome.cancelled_at is None
    assert outcome.unmapped is False


@pytest.mark.parametrize(
    ("status", "body", "expected", "provider_code", "message"),
    [
        (400, SHIPPER_810, ErrorCode.INVALID_REQUEST, "810", "Invalid Input"),
        (401, SHIPPER_401, ErrorCode.PROVIDER_AUTH_FAILED, "802", "Unauthorized Access"),
        (500, SHIPPER_803, ErrorCode.PROVIDER_ERROR, "803", "Internal Server error"),
        (400, SHIPPER_3012, ErrorCode.NOT_FOUND, "3012", "Doesn't Exist"),
        (404, SHIPPER_3012, ErrorCode.NOT_FOUND, "3012", "Doesn't Exist"),
        (200, SHIPPER_810, ErrorCode.INVALID_REQUEST, "810", "Invalid Input"),
    ],
    ids=["810", "401-802", "803", "3012-400", "3012-404", "810-under-200"],
)
def test_shipper_documented_errors(
    providers: dict[str, ProviderDefinition],
    status: int,
    body: dict[str, Any],
    expected: ErrorCode,
    provider_code: str,
    message: str,
) -> None:
    """Shipper's codes (both error shapes) classify by the definition's rules."""
    outcome = run(providers, "shipper", status, body)
    assert_failure(outcome, expected, unmapped=False)
    assert outcome.provider_code == provider_code
    assert outcome.provider_status == status
    assert outcome.detail is not None
    assert message in outcome.detail


def test_shipper_810_is_a_provider_invalid_request(
    providers: dict[str, ProviderDefinition],
) -> None:
    """810 is invalid_request from the provider: rejected, not retryable."""
    outcome = run(providers, "shipper", 400, SHIPPER_810)
    assert outcome.status is Status.REJECTED
    assert outcome.retryable is False


def test_shipper_803_is_retryable(providers: dict[str, ProviderDefinition]) -> None:
    """803 (internal error) is a failure the caller may retry."""
    outcome = run(providers, "shipper", 500, SHIPPER_803)
    assert outcome.status is Status.FAILED
    assert outcome.retryable is True


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, ErrorCode.PROVIDER_REJECTED), (500, ErrorCode.PROVIDER_ERROR)],
)
def test_shipper_undocumented_code_falls_to_the_status(
    providers: dict[str, ProviderDefinition], status: int, expected: ErrorCode
) -> None:
    """An undocumented code (e.g. "stock already allocated") falls to the generic table."""
    body = {"metadata": {"http_status_code": status, "errors": [{"code": 9999, "message": "x"}]}}
    outcome = run(providers, "shipper", status, body)
    assert_failure(outcome, expected, unmapped=True)
    assert outcome.provider_code == "9999"


# --- Shoplazza ---------------------------------------------------------------------------------


def test_shoplazza_success(providers: dict[str, ProviderDefinition]) -> None:
    """state 4 is cancelled; cancelled_at is procurement.updated_at."""
    outcome = run(providers, "shoplazza", 200, SHOPLAZZA_SUCCESS)
    assert outcome.status is Status.CANCELLED
    assert outcome.code is None
    assert outcome.cancelled_at == "2024-05-21T09:59:29Z"
    assert outcome.provider_response == {
        "procurement_sn": "00000002",
        "state": 4,
        "supplier_id": "382453603865993516",
        "location_id": "190035786870033452",
    }


@pytest.mark.parametrize("state", [1, 2, 3, "4", None])
def test_shoplazza_other_state_is_a_bad_response(
    providers: dict[str, ProviderDefinition], state: Any
) -> None:
    """A 200 whose procurement is not in state 4 does not confirm the cancellation."""
    body = {"procurement": {**SHOPLAZZA_PROCUREMENT, "state": state}}
    outcome = run(providers, "shoplazza", 200, body)
    assert_failure(outcome, ErrorCode.PROVIDER_BAD_RESPONSE, unmapped=True)
    assert outcome.provider_status == 200


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"errors": ["invalid procurement_id"]}, ErrorCode.INVALID_REQUEST),
        (404, {"errors": ["Procurement not found"]}, ErrorCode.NOT_FOUND),
        (401, {"error": "store is not active"}, ErrorCode.PROVIDER_AUTH_FAILED),
        (200, {"error": "store is not active"}, ErrorCode.PROVIDER_AUTH_FAILED),
        (400, {"error": "store is not active"}, ErrorCode.PROVIDER_AUTH_FAILED),
        (403, {"error": "store is not active"}, ErrorCode.PROVIDER_AUTH_FAILED),
        (404, {"errors": ["procurement NOT found"]}, ErrorCode.NOT_FOUND),
    ],
    ids=[
        "invalid-id-400",
        "not-found-404",
        "inactive-401",
        "inactive-200",
        "inactive-400",
        "inactive-403",
        "not-found-other-case",
    ],
)
def test_shoplazza_documented_errors(
    providers: dict[str, ProviderDefinition],
    status: int,
    body: dict[str, Any],
    expected: ErrorCode,
) -> None:
    """Both error shapes classify by message (any case), whatever the HTTP status; the
    provider's message is the provider_code."""
    outcome = run(providers, "shoplazza", status, body)
    assert_failure(outcome, expected, unmapped=False)
    assert outcome.provider_code == (body.get("error") or body["errors"][0])
    assert outcome.provider_status == status


@pytest.mark.parametrize(
    ("status", "body", "expected", "provider_code"),
    [
        (
            400,
            {"errors": ["Supplier not found"]},
            ErrorCode.PROVIDER_REJECTED,
            "Supplier not found",
        ),
        (404, {"error": "Supplier not found"}, ErrorCode.NOT_FOUND, "Supplier not found"),
        (400, {"errors": ["No Context"]}, ErrorCode.PROVIDER_REJECTED, "No Context"),
        (400, {"errors": ["invalid id"]}, ErrorCode.PROVIDER_REJECTED, "invalid id"),
        (403, b"", ErrorCode.PROVIDER_AUTH_FAILED, None),
        (401, b"Unauthorized", ErrorCode.PROVIDER_AUTH_FAILED, None),
        # The document's own example is not valid JSON: '{"error": "Supplier not found"}\n}'.
        (400, b'{\n"error": "Supplier not found"}\n}', ErrorCode.PROVIDER_REJECTED, None),
    ],
    ids=[
        "supplier-errors",
        "supplier-error",
        "no-context",
        "invalid-id",
        "missing-scope",
        "unauthorized-text",
        "malformed-doc-example",
    ],
)
def test_shoplazza_other_documented_answers_use_the_generic_table(
    providers: dict[str, ProviderDefinition],
    status: int,
    body: Any,
    expected: ErrorCode,
    provider_code: str | None,
) -> None:
    """Shoplazza's other examples have no rule: the HTTP status decides."""
    outcome = run(providers, "shoplazza", status, body)
    assert_failure(outcome, expected, unmapped=True)
    assert outcome.provider_code == provider_code


# --- RxUniverse --------------------------------------------------------------------------------


def test_rxuniverse_success(providers: dict[str, ProviderDefinition]) -> None:
    """200 with the order's last state is cancelled; the empty message is kept."""
    outcome = run(providers, "rxuniverse", 200, RXUNIVERSE_SUCCESS)
    assert outcome.status is Status.CANCELLED
    assert outcome.code is None
    assert outcome.cancelled_at is None
    assert outcome.provider_response == {
        "orderNumber": "72544",
        "trayNumber": "337178",
        "poNumber": "Example",
        "message": "",
    }


def test_rxuniverse_success_keeps_a_warning_and_drops_other_fields(
    providers: dict[str, ProviderDefinition],
) -> None:
    """A non-blocking warning in ``message`` reaches provider_response; other fields do not."""
    body = {
        **RXUNIVERSE_SUCCESS,
        "message": "deleteReason ignored: reason codes are not in use",
        "patientName": "Jane Doe",
        "status": "Deleted",
    }
    outcome = run(providers, "rxuniverse", 200, body)
    assert outcome.status is Status.CANCELLED
    assert outcome.provider_response == {
        "orderNumber": "72544",
        "trayNumber": "337178",
        "poNumber": "Example",
        "message": "deleteReason ignored: reason codes are not in use",
    }


@pytest.mark.parametrize("body", [{}, {"message": ""}, {"orderNumber": None}])
def test_rxuniverse_200_naming_no_order_is_not_a_cancellation(
    providers: dict[str, ProviderDefinition], body: dict[str, object]
) -> None:
    """A 200 that names no order (no order, tray or PO number) is a bad response, not success."""
    outcome = run(providers, "rxuniverse", 200, body)
    assert outcome.status is Status.FAILED
    assert outcome.code is ErrorCode.PROVIDER_BAD_RESPONSE


@pytest.mark.parametrize("field", ["orderNumber", "trayNumber", "poNumber"])
def test_rxuniverse_200_naming_the_order_by_any_number_is_cancelled(
    providers: dict[str, ProviderDefinition], field: str
) -> None:
    """Any one of the three identifiers the document lists is enough."""
    outcome = run(providers, "rxuniverse", 200, {field: "72544", "message": ""})
    assert outcome.status is Status.CANCELLED


RXUNIVERSE_ERRORS = [
    (404, "No record found", ["Provided: 9999999"], ErrorCode.NOT_FOUND),
    (400, "Job Tracker module required for cancel method", [], ErrorCode.PROVIDER_MISCONFIGURED),
    (400, "The delete reasons file is empty", [], ErrorCode.PROVIDER_MISCONFIGURED),
    (400, "Delete reason code does not exist", ["Provided: 9999"], ErrorCode.INVALID_REQUEST),
    (400, "Order has been through a non-cancel station", [], ErrorCode.NOT_CANCELLABLE),
]


@pytest.mark.parametrize(("status", "message", "details", "expected"), RXUNIVERSE_ERRORS)
def test_rxuniverse_documented_errors(
    providers: dict[str, ProviderDefinition],
    status: int,
    message: str,
    details: list[str],
    expected: ErrorCode,
) -> None:
    """Each documented error message maps as CONTRACT §6 says, message as provider_code."""
    outcome = run(providers, "rxuniverse", status, {"error": message, "details": details})
    assert_failure(outcome, expected, unmapped=False)
    assert outcome.provider_code == message
    assert outcome.provider_status == status
    assert outcome.detail is not None
    assert message in outcome.detail


def test_rxuniverse_order_already_completed_is_already_cancelled(
    providers: dict[str, ProviderDefinition],
) -> None:
    """RxUniverse's "Order already completed" (already marked for cancellation) is
    already_cancelled, with no error code."""
    body = {"error": "Order already completed", "details": []}
    outcome = run(providers, "rxuniverse", 400, body)
    assert outcome.status is Status.ALREADY_CANCELLED
    assert outcome.code is None
    assert outcome.retryable is False
    assert outcome.unmapped is False
    assert outcome.provider_code == "Order already completed"
    assert outcome.provider_status == 400


@pytest.mark.parametrize(
    ("status", "expected"), [(400, ErrorCode.PROVIDER_REJECTED), (500, ErrorCode.PROVIDER_ERROR)]
)
def test_rxuniverse_unknown_message_uses_the_generic_table(
    providers: dict[str, ProviderDefinition], status: int, expected: ErrorCode
) -> None:
    """A message the definition does not know falls to the HTTP status."""
    outcome = run(providers, "rxuniverse", status, {"error": "Something new", "details": []})
    assert_failure(outcome, expected, unmapped=True)
    assert outcome.provider_code == "Something new"


# --- the generic table -------------------------------------------------------------------------

GENERIC = [
    (401, ErrorCode.PROVIDER_AUTH_FAILED, False),
    (403, ErrorCode.PROVIDER_AUTH_FAILED, False),
    (404, ErrorCode.NOT_FOUND, False),
    (408, ErrorCode.PROVIDER_REJECTED, False),  # the contract's "other 4xx" (still retried)
    (409, ErrorCode.NOT_CANCELLABLE, False),
    (429, ErrorCode.RATE_LIMITED, True),
    (400, ErrorCode.PROVIDER_REJECTED, False),
    (405, ErrorCode.PROVIDER_REJECTED, False),
    (410, ErrorCode.PROVIDER_REJECTED, False),
    (418, ErrorCode.PROVIDER_REJECTED, False),
    (422, ErrorCode.PROVIDER_REJECTED, False),
    (499, ErrorCode.PROVIDER_REJECTED, False),
    (500, ErrorCode.PROVIDER_ERROR, True),
    (502, ErrorCode.PROVIDER_ERROR, True),
    (503, ErrorCode.PROVIDER_ERROR, True),
    (504, ErrorCode.PROVIDER_ERROR, True),
    (599, ErrorCode.PROVIDER_ERROR, True),
]


@pytest.mark.parametrize(("status", "expected", "retryable"), GENERIC)
def test_generic_table_for_a_provider_without_rules(
    providers: dict[str, ProviderDefinition], status: int, expected: ErrorCode, retryable: bool
) -> None:
    """Without rules, the HTTP status decides; the outcome is marked unmapped."""
    outcome = run(providers, "plain", status, {"message": "whatever"})
    assert_failure(outcome, expected, unmapped=True)
    assert outcome.retryable is retryable
    assert outcome.provider_code is None
    assert outcome.provider_status == status


def test_generic_2xx_success_needs_json(providers: dict[str, ProviderDefinition]) -> None:
    """Without a success test, any 2xx JSON answer is cancelled; an empty one is not."""
    assert run(providers, "plain", 204, {"ok": True}).status is Status.CANCELLED
    outcome = run(providers, "plain", 204, b"")
    assert_failure(outcome, ErrorCode.PROVIDER_BAD_RESPONSE, unmapped=True)


@pytest.mark.parametrize("status", [300, 301, 302, 303, 304, 307, 308])
@pytest.mark.parametrize("provider", [*DEFAULT_RESOURCE, "plain"])
def test_redirect_is_a_bad_response(
    providers: dict[str, ProviderDefinition], provider: str, status: int
) -> None:
    """A 3xx is never followed: provider_bad_response, whatever the body says."""
    body = {**STATESET_SUCCESS, **SHIPPER_SUCCESS, **SHOPLAZZA_SUCCESS}
    headers = {"location": "https://elsewhere.example/login"}
    outcome = run(providers, provider, status, body, headers=headers)
    assert_failure(outcome, ErrorCode.PROVIDER_BAD_RESPONSE, unmapped=False)
    assert outcome.provider_status == status
    assert outcome.detail == "Location https://elsewhere.example/login"


# --- strange bodies ------------------------------------------------------------------------------

STRANGE_BODIES = [
    b"",
    b"   \n",
    b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
    b"not json at all",
    b"\xff\xfe\x00garbage",
    b"[]",
    b"[1, 2]",
    b'["cancelled"]',
    b'"cancelled"',
    b"123",
    b"null",
    b"true",
    b"NaN",
    b'{"a": 1',
    b"{}",
    b'{"procurement": "x"}',
    b'{"procurement": {"state": "4"}}',
    b'{"procurement": [4]}',
    b'{"metadata": 5}',
    b'{"metadata": {"http_status_code": "200"}}',
    b'{"metadata": {"errors": "x"}}',
    b'{"metadata": {"errors": [{"code": [810]}]}}',
    b'{"metadata": {"error": {"code": {"a": 1}}}}',
    b'{"status": ["cancelled"]}',
    b'{"error": "x"}',
    b'{"error": {"code": {"a": 1}, "type": [1], "message": null}}',
    b'{"error": {"code": true}}',
    b'{"error": ["No record found"]}',
    b'{"errors": []}',
    b'{"errors": [{"nested": 1}]}',
    b'{"errors": "invalid procurement_id"}',
]


@pytest.mark.parametrize("body", STRANGE_BODIES)
@pytest.mark.parametrize("provider", [*DEFAULT_RESOURCE, "plain"])
def test_strange_2xx_bodies_classify_without_raising(
    providers: dict[str, ProviderDefinition], provider: str, body: bytes
) -> None:
    """HTML, empty, non-JSON or wrongly typed 200s never raise and never count as success,
    except where the definition's own success test accepts them (RxUniverse: a JSON object
    without an `error` that names the order; a definition without a success test: any JSON)."""
    outcome = run(providers, provider, 200, body)
    try:
        parsed, is_json = orjson.loads(body), True
    except orjson.JSONDecodeError:
        parsed, is_json = None, False
    names_an_order = isinstance(parsed, dict) and any(
        parsed.get(k) is not None for k in ("orderNumber", "trayNumber", "poNumber")
    )
    accepted = (provider == "plain" and is_json) or (
        provider == "rxuniverse" and names_an_order and parsed.get("error") is None
    )
    if accepted:
        assert outcome.status is Status.CANCELLED
    else:
        assert_failure(outcome, ErrorCode.PROVIDER_BAD_RESPONSE, unmapped=True)


@pytest.mark.parametrize("body", STRANGE_BODIES)
@pytest.mark.parametrize("provider", [*DEFAULT_RESOURCE, "plain"])
@pytest.mark.parametrize(
    ("status", "expected"), [(400, ErrorCode.PROVIDER_REJECTED), (502, ErrorCode.PROVIDER_ERROR)]
)
def test_strange_error_bodies_fall_to_the_status(
    providers: dict[str, ProviderDefinition],
    provider: str,
    body: bytes,
    status: int,
    expected: ErrorCode,
) -> None:
    """An error body that cannot be read is classified by its HTTP status alone."""
    outcome = run(providers, provider, status, body)
    assert_failure(outcome, expected, unmapped=True)
    if outcome.provider_code is not None:
        assert isinstance(outcome.provider_code, str)


def test_provider_text_is_kept_long_enough_to_redact(
    providers: dict[str, ProviderDefinition],
) -> None:
    """A huge provider message is kept to MAX_PROVIDER_TEXT characters, well past the
    envelope's MAX_PROVIDER_MESSAGE: the envelope redacts it before it cuts it."""
    outcome = run(providers, "rxuniverse", 400, {"error": "x" * 5000})
    assert outcome.provider_code is not None
    assert len(outcome.provider_code) == MAX_PROVIDER_TEXT > MAX_PROVIDER_MESSAGE
    assert outcome.detail == outcome.provider_code
    assert outcome.message == "RxUniverse answered 400"


# --- cancelled_at --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-16T10:30:00Z", "2024-01-16T10:30:00Z"),
        ("2024-01-16T18:30:00+08:00", "2024-01-16T10:30:00Z"),
        ("2024-01-16T10:30:00", "2024-01-16T10:30:00Z"),
        ("2024-01-16T10:30:00.250Z", "2024-01-16T10:30:00.250000Z"),
        (1705401000, "2024-01-16T10:30:00Z"),
        ("yesterday", None),
        (True, None),
        ({"at": 1}, None),
        (10**15, None),
    ],
)
def test_cancelled_at_is_rfc3339_utc_or_absent(
    providers: dict[str, ProviderDefinition], value: Any, expected: str | None
) -> None:
    """The provider's time is normalised to UTC with Z; an unreadable one is dropped."""
    outcome = run(providers, "stateset", 200, {**STATESET_SUCCESS, "cancelled_at": value})
    assert outcome.status is Status.CANCELLED
    assert outcome.cancelled_at == expected


# --- Retry-After ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 30 ", 30.0),
        ("1.5", 1.5),
        ("0", 1.0),
        ("-5", 1.0),
        ("3600", 3600.0),
        ("99999", 3600.0),
        ("inf", 3600.0),
        ("nan", None),
        ("soon", None),
        ("", None),
        ("Wed, 32 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_retry_after_seconds_clamped(
    providers: dict[str, ProviderDefinition], now: datetime, header: str, expected: float | None
) -> None:
    """Retry-After in seconds is clamped to [1, 3600]; unreadable values are ignored."""
    outcome = run(providers, "plain", 429, b"", now, {"retry-after": header})
    assert_failure(outcome, ErrorCode.RATE_LIMITED, unmapped=True)
    assert outcome.retry_after_s == expected


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(seconds=120), 120.0),
        (timedelta(seconds=1), 1.0),
        (timedelta(seconds=-300), 1.0),
        (timedelta(hours=5), 3600.0),
    ],
)
def test_retry_after_http_date_is_relative_to_now(
    providers: dict[str, ProviderDefinition], now: datetime, offset: timedelta, expected: float
) -> None:
    """An HTTP-date Retry-After counts from the ``now`` passed in, clamped to [1, 3600]."""
    header = format_datetime(now + offset, usegmt=True)
    outcome = run(providers, "plain", 503, b"", now, {"retry-after": header})
    assert_failure(outcome, ErrorCode.PROVIDER_ERROR, unmapped=True)
    assert outcome.retry_after_s == expected


def test_retry_after_date_uses_the_passed_clock(providers: dict[str, ProviderDefinition]) -> None:
    """The same header gives different waits for different clock readings."""
    headers = {"retry-after": "Tue, 16 Jan 2024 10:32:00 GMT"}
    early = datetime.fromisoformat("2024-01-16T10:30:00+00:00")
    late = datetime.fromisoformat("2024-01-16T10:31:30+00:00")
    assert run(providers, "plain", 429, b"", early, headers).retry_after_s == 120.0
    assert run(providers, "plain", 429, b"", late, headers).retry_after_s == 30.0


def test_retry_after_absent(providers: dict[str, ProviderDefinition]) -> None:
    """No header, no retry_after_s."""
    assert run(providers, "plain", 429).retry_after_s is None


def test_retry_after_on_a_rule_outcome(providers: dict[str, ProviderDefinition]) -> None:
    """A rule-classified rate limit (StateSet rate_limit_exceeded) keeps the provider's wait."""
    body = {"error": {"type": "rate_limit_error", "code": "rate_limit_exceeded", "message": "m"}}
    outcome = run(providers, "stateset", 429, body, headers={"retry-after": "30"})
    assert_failure(outcome, ErrorCode.RATE_LIMITED, unmapped=False)
    assert outcome.retry_after_s == 30.0


def test_shoplazza_429_is_rate_limited(providers: dict[str, ProviderDefinition]) -> None:
    """Shoplazza's 429 (no documented body or header) is rate_limited by the generic table."""
    outcome = run(providers, "shoplazza", 429, b"Too Many Requests")
    assert_failure(outcome, ErrorCode.RATE_LIMITED, unmapped=True)
    assert outcome.retry_after_s is None


# --- retryable ------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(ErrorCode))
def test_retryable_follows_specs(code: ErrorCode) -> None:
    """Outcome.retryable is errors.SPECS[code].retryable for every code."""
    assert Outcome(SPECS[code].status, code).retryable is SPECS[code].retryable


@pytest.mark.parametrize("status", [Status.CANCELLED, Status.ALREADY_CANCELLED])
def test_success_is_not_retryable(status: Status) -> None:
    """An outcome without an error code is never retryable."""
    assert Outcome(status).retryable is False


def test_rxuniverse_error_in_a_200_is_classified_by_its_rules(
    providers: dict[str, ProviderDefinition],
) -> None:
    """A 200 carrying RxUniverse's error shape is not a success: its message rule decides."""
    outcome = run(providers, "rxuniverse", 200, b'{"error": "No record found", "details": []}')
    assert outcome.code is ErrorCode.NOT_FOUND


def test_a_signature_the_provider_quotes_is_masked_wherever_it_said_it() -> None:
    """A per-request secret (a signature) echoed in the message, the code or a nested value of
    the provider's response is masked; what the provider said around it stays."""
    from gateway.auth_schemes import Signature
    from gateway.translate.sign import sent_value, without_echo
    from gateway.translate.wire import UpstreamRequest

    sign = "9f2c1e0d8b7a6f5e4d3c2b1a"
    request = UpstreamRequest(
        "POST", f"https://api.example/x?a=1&sign={sign}", (), secret_query=frozenset({"sign"})
    ).with_secret_header("X-Signature", "header-signature-value")
    in_query = Signature(algorithm="sha256", message=["x"], query="sign")
    in_header = Signature(algorithm="sha256", message=["x"], header="x-signature")
    assert sent_value(in_query, request) == sign
    assert sent_value(in_header, request) == "header-signature-value"
    outcome = Outcome(
        Status.FAILED,
        ErrorCode.PROVIDER_AUTH_FAILED,
        "Shop answered 401",
        provider_code=f"bad sign {sign}",
        detail=f"received {sign}, expected another",
        provider_response={"echo": {"sent": [sign, "kept"]}, "n": 1},
    )
    masked = without_echo(outcome, [sign])
    assert masked.detail == "received [REDACTED], expected another"
    assert masked.provider_code == "bad sign [REDACTED]"
    assert masked.provider_response == {"echo": {"sent": ["[REDACTED]", "kept"]}, "n": 1}
    quoted = "ab+c/d=="  # base64, sent percent-encoded and quoted so by the provider
    echoed = Outcome(
        Status.FAILED, ErrorCode.PROVIDER_AUTH_FAILED, detail="got sign=ab%2Bc%2Fd%3D%3D"
    )
    assert without_echo(echoed, [quoted]).detail == "got sign=[REDACTED]"
    untouched = Outcome(Status.CANCELLED, provider_response={"id": "o-1"})
    assert without_echo(untouched, [sign]) is untouched
