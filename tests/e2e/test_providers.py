"""Each built-in provider end to end: the gateway on a real port, a real upstream behind it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import CANARIES, Gateway, Upstream

pytestmark = pytest.mark.e2e

STATESET_SUCCESS = {
    "id": "asn_0901f083-aa1c-43c5-af5c-0a9d2fc64e30",
    "object": "asn",
    "asn_number": "ASN-2024-00001",
    "status": "cancelled",
    "cancelled_at": "2024-01-16T10:30:00Z",
    "cancelled_by": "purchasing@company.com",
    "purchase_order_id": "po_123456789",
    "supplier_id": "sup_abc123",
    "items_affected": [{"sku": "WBH-001", "quantity": 500}],
    "notes": "kept out of the envelope",
}
SHOPLAZZA_SUCCESS = {
    "procurement": {
        "id": "382451985837728044",
        "procurement_sn": "00000002",
        "supplier_id": "382453603865993516",
        "location_id": "190035786870033452",
        "note": "teest note",
        "state": 4,
        "created_at": "2024-05-21T08:47:39Z",
        "updated_at": "2024-05-21T09:59:29Z",
    }
}


async def test_stateset_success_sends_documented_request(gateway: Gateway, upstream: Upstream):
    """StateSet: POST /v1/asns/{id}/cancel, bearer key, the documented body, an idempotency key."""
    upstream.answer(200, STATESET_SUCCESS)
    result = await gateway.cancel(
        {
            "connection": "stateset-main",
            "id": "asn_0901f083-aa1c-43c5-af5c-0a9d2fc64e30",
            "reason": "Supplier notified of production delay",
            "notes": "Shipment delayed",
        },
        headers={"Idempotency-Key": "order-42-cancel"},
    )
    assert result.status == 200
    body = result.body
    assert body["status"] == "cancelled"
    assert body["cancelled_at"] == "2024-01-16T10:30:00Z"
    assert body["provider_response"] == {
        "asn_number": "ASN-2024-00001",
        "purchase_order_id": "po_123456789",
        "supplier_id": "sup_abc123",
        "items_affected": [{"sku": "WBH-001", "quantity": 500}],
    }
    assert body["error"] is None
    assert body["upstream"]["method"] == "POST"
    assert body["upstream"]["status"] == 200
    assert body["upstream"]["attempts"] == 1
    assert body["cancellation_id"].startswith("cxl_")

    sent = upstream.received[0]
    assert sent.method == "POST"
    assert sent.raw_path == "/stateset/v1/asns/asn_0901f083-aa1c-43c5-af5c-0a9d2fc64e30/cancel"
    assert sent.headers["Authorization"] == f"Bearer {CANARIES['STATESET_API_KEY']}"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Idempotency-Key"].startswith("cg-")
    assert sent.json() == {
        "reason": "Supplier notified of production delay",
        "cancelled_by": "oms",
        "notify_supplier": True,
        "notes": "Shipment delayed",
    }


async def test_stateset_upstream_key_is_stable_for_one_caller_key(
    gateway: Gateway, upstream: Upstream
):
    """The Idempotency-Key sent to StateSet is derived from the caller's key: same key, same
    value. (A failed outcome releases the caller's key, so the caller's retry is sent again.)"""
    upstream.answer(500, {"error": {"type": "api_error", "message": "boom"}})
    upstream.answer(200, STATESET_SUCCESS)
    request = {"connection": "stateset-main", "id": "asn_1", "reason": "r"}
    failed = await gateway.cancel(request, headers={"Idempotency-Key": "k-1"})
    assert failed.body["status"] == "failed"
    retried = await gateway.cancel(request, headers={"Idempotency-Key": "k-1"})
    assert retried.body["status"] == "cancelled"
    first, second = (r.headers["Idempotency-Key"] for r in upstream.received)
    assert first == second
    assert "k-1" not in first


async def test_shipper_success_sends_nested_body(gateway: Gateway, upstream: Upstream):
    """Shipper: PATCH with x-api-key and data.cancellation; a per-request warehouse_id wins."""
    upstream.answer(200, {"metadata": {"http_status_code": 200, "http_status": "OK"}})
    result = await gateway.cancel(
        {
            "connection": "shipper-main",
            "id": "TEST-OUTBOUND-OMS-1",
            "reason": "Cancelled from marketplace",
            "params": {"warehouse_id": "PMU"},
        }
    )
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert result.body["provider_response"] == {}
    sent = upstream.received[0]
    assert (sent.method, sent.raw_path) == ("PATCH", "/shipper/v3/fulfillment/outbound/oms/cancel")
    assert sent.headers["x-api-key"] == CANARIES["SHIPPER_API_KEY"]
    assert sent.json() == {
        "data": {
            "cancellation": {
                "order_no": "TEST-OUTBOUND-OMS-1",
                "cancel_reason": "Cancelled from marketplace",
                "warehouse_id": "PMU",
            }
        }
    }


async def test_shoplazza_success_takes_updated_at(gateway: Gateway, upstream: Upstream):
    """Shoplazza: PATCH without a body, Access-Token, state 4 → cancelled at updated_at."""
    upstream.answer(200, SHOPLAZZA_SUCCESS)
    result = await gateway.cancel({"connection": "shoplazza-main", "id": "382451985837728044"})
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert result.body["cancelled_at"] == "2024-05-21T09:59:29Z"
    assert result.body["provider_response"] == {
        "procurement_sn": "00000002",
        "state": 4,
        "supplier_id": "382453603865993516",
        "location_id": "190035786870033452",
    }
    sent = upstream.received[0]
    assert sent.method == "PATCH"
    assert (
        sent.raw_path
        == "/shoplazza/demo-shop/openapi/2022-01/procurements/382451985837728044/cancel"
    )
    assert sent.headers["Access-Token"] == CANARIES["SHOPLAZZA_ACCESS_TOKEN"]
    assert sent.headers["Content-Type"] == "application/json"
    assert "Authorization" not in sent.headers
    assert sent.body == b""


async def test_rxuniverse_success_sends_reason_as_query(gateway: Gateway, upstream: Upstream):
    """RxUniverse: DELETE with the reason as deleteReason; the message is kept."""
    upstream.answer(
        200, {"orderNumber": "72544", "trayNumber": "T1", "poNumber": "PO-9", "message": "ignored"}
    )
    result = await gateway.cancel(
        {"connection": "rxuniverse-lab", "id": "72544", "reason": "customer request"}
    )
    assert result.status == 200, result.body
    assert result.body["provider_response"] == {
        "orderNumber": "72544",
        "trayNumber": "T1",
        "poNumber": "PO-9",
        "message": "ignored",
    }
    sent = upstream.received[0]
    assert sent.method == "DELETE"
    assert sent.raw_path == "/rxuniverse/api/v2/orders/72544?deleteReason=customer%20request"
    assert sent.headers["x-api-key"] == CANARIES["RXUNIVERSE_API_KEY"]


async def test_rxuniverse_without_reason_sends_no_query(gateway: Gateway, upstream: Upstream):
    """No reason, no deleteReason parameter at all."""
    upstream.answer(200, {"orderNumber": "1"})
    await gateway.cancel({"connection": "rxuniverse-lab", "id": "1"})
    assert upstream.received[0].raw_path == "/rxuniverse/api/v2/orders/1"


STATESET_RECEIVED = {
    "error": {
        "type": "invalid_status",
        "message": "Cannot cancel ASN that has already been received",
        "code": "ASN_ALREADY_RECEIVED",
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
SHIPPER_802 = {
    "metadata": {
        "path": "/v3/fulfillment/outbound/oms/cancel",
        "status_code": 401,
        "status": "Unauthorized",
        "message": "PATCH /v1/fulfillment/outbound/oms/cancel [401] Unauthorized",
        "error": {"code": 802, "message": "Unauthorized Access."},
        "timestamp": "2022-05-12T04:04:19Z",
    }
}
SHIPPER_803 = {
    "metadata": {
        "http_status_code": 500,
        "errors": [{"code": 803, "message": "Internal Server error."}],
    }
}


def rx(message: str) -> dict[str, Any]:
    return {"error": message, "details": []}


# connection, upstream status, upstream body → HTTP status, envelope status, code, provider_code
ERROR_CASES = [
    ("stateset-main", 400, STATESET_RECEIVED, 409, "rejected", "not_cancellable", "ASN_ALREADY_RECEIVED"),
    ("stateset-main", 401, {"error": {"type": "authentication_error", "code": "invalid_api_key"}},
     502, "failed", "provider_auth_failed", "invalid_api_key"),
    ("stateset-main", 401, {"error": {"type": "authentication_error", "code": "EXPIRED_API_KEY"}},
     502, "failed", "provider_auth_failed", "EXPIRED_API_KEY"),
    ("stateset-main", 400, {"error": {"type": "invalid_request_error", "code": "parameter_missing"}},
     422, "rejected", "invalid_request", "parameter_missing"),
    ("stateset-main", 503, None, 502, "failed", "provider_error", None),
    ("shipper-main", 400, SHIPPER_810, 422, "rejected", "invalid_request", "810"),
    ("shipper-main", 401, SHIPPER_802, 502, "failed", "provider_auth_failed", "802"),
    ("shipper-main", 500, SHIPPER_803, 502, "failed", "provider_error", "803"),
    ("shipper-main", 400, {"metadata": {"errors": [{"code": 3012, "message": "Order Doesn't Exist"}]}},
     404, "rejected", "not_found", "3012"),
    ("shipper-main", 400, {"metadata": {"errors": [{"code": 811, "message": "allocated"}]}},
     422, "rejected", "provider_rejected", "811"),
    ("shoplazza-main", 404, {"errors": ["Procurement not found"]},
     404, "rejected", "not_found", "Procurement not found"),
    ("shoplazza-main", 400, {"errors": ["invalid procurement_id"]},
     422, "rejected", "invalid_request", "invalid procurement_id"),
    ("shoplazza-main", 401, {"error": "store is not active"},
     502, "failed", "provider_auth_failed", "store is not active"),
    ("shoplazza-main", 403, {"errors": ["Forbidden"]}, 502, "failed", "provider_auth_failed", "Forbidden"),
    ("shoplazza-main", 429, {"errors": ["Too many requests"]}, 429, "failed", "rate_limited", None),
    ("rxuniverse-lab", 404, {"error": "No record found", "details": ["Provided: 9999999"]},
     404, "rejected", "not_found", "No record found"),
    ("rxuniverse-lab", 400, rx("Order has been through a non-cancel station"),
     409, "rejected", "not_cancellable", "Order has been through a non-cancel station"),
    ("rxuniverse-lab", 400, rx("Delete reason code does not exist"),
     422, "rejected", "invalid_request", "Delete reason code does not exist"),
    ("rxuniverse-lab", 400, rx("Job Tracker module required for cancel method"),
     502, "failed", "provider_misconfigured", "Job Tracker module required for cancel method"),
    ("rxuniverse-lab", 400, rx("The delete reasons file is empty"),
     502, "failed", "provider_misconfigured", "The delete reasons file is empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("connection", "upstream_status", "upstream_body", "http", "status", "code", "provider_code"),
    ERROR_CASES,
)
async def test_provider_errors_become_contract_codes(
    gateway: Gateway,
    upstream: Upstream,
    connection: str,
    upstream_status: int,
    upstream_body: Any,
    http: int,
    status: str,
    code: str,
    provider_code: str | None,
):
    """Every documented provider error maps to the contract's code, with the provider's own code."""
    if upstream_body is None:
        upstream.always(upstream_status, body=b"", headers={})
    else:
        upstream.always(upstream_status, upstream_body)
    result = await gateway.cancel(
        {"connection": connection, "id": "obj-1", "reason": "r", "params": {}}
    )
    assert result.status == http, result.body
    error = result.body["error"]
    assert result.body["status"] == status
    assert error["code"] == code
    assert error["source"] == "provider"
    assert error["provider_status"] == upstream_status
    if provider_code is not None:
        assert error["provider_code"] == provider_code
    assert error["retryable"] == (status == "failed" and code not in {
        "provider_auth_failed", "provider_misconfigured"
    })  # fmt: skip
    assert result.body["cancelled_at"] is None
    assert result.body["upstream"]["status"] == upstream_status
    # Transient answers are repeated (every built-in operation is safe to repeat), others not.
    attempts = 3 if upstream_status in {408, 429, 502, 503, 504} else 1
    assert result.body["upstream"]["attempts"] == attempts
    assert len(upstream.received) == attempts


async def test_rxuniverse_already_marked_is_already_cancelled(gateway: Gateway, upstream: Upstream):
    """'Order already completed' means it is already marked for cancellation: a success."""
    upstream.answer(400, rx("Order already completed"))
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "72544"})
    assert result.status == 200
    assert result.body["status"] == "already_cancelled"
    assert result.body["error"] is None
    assert result.body["cancelled_at"] is None  # when it was cancelled is not known


async def test_rate_limited_carries_retry_after(gateway: Gateway, upstream: Upstream):
    """A provider 429 with Retry-After surfaces as rate_limited with the header and the value."""
    upstream.answer(
        429,
        {"errors": ["slow down"]},
        headers={"Retry-After": "120", "Content-Type": "application/json"},
    )
    result = await gateway.cancel({"connection": "shoplazza-main", "id": "1"})
    assert result.status == 429
    assert result.body["error"]["retry_after_s"] == 120
    assert result.headers["Retry-After"] == "120"
