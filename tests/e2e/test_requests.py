"""What the gateway accepts, refuses and forwards, over real sockets."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from gateway.translate.wire import UpstreamRequest, UpstreamResponse
from tests.conftest import BASE_CONFIG, Gateway, GatewayFactory, Upstream

pytestmark = pytest.mark.e2e

OK = {"connection": "shipper-main", "id": "SO-1", "reason": "r"}

# body → the loc that must be reported
BAD_BODIES: list[tuple[Any, str]] = [
    ({**OK, "colour": "red"}, "colour"),
    ({"id": "SO-1", "reason": "r"}, "connection"),
    ({"connection": "shipper-main", "reason": "r"}, "id"),
    ({**OK, "id": ""}, "id"),
    ({**OK, "id": "x" * 129}, "id"),
    ({**OK, "id": 42}, "id"),
    ({**OK, "id": "a\nb"}, "id"),
    ({**OK, "id": "a\x00b"}, "id"),
    ({**OK, "id": "."}, "id"),
    ({**OK, "id": ".."}, "id"),
    ({**OK, "reason": "r" * 501}, "reason"),
    ({**OK, "requested_by": "u" * 201}, "requested_by"),
    ({**OK, "notes": "n" * 2001}, "notes"),
    ({**OK, "notify": "yes"}, "notify"),
    ({**OK, "params": {"warehouse_id": {"nested": 1}}}, "params.warehouse_id"),
    ({**OK, "params": {"colour": "red"}}, "params.colour"),
    ({**OK, "params": {"warehouse_id": "W" * 21}}, "params.warehouse_id"),
    ({**OK, "id": "S" * 51}, "id"),  # Shipper's order_no limit
    ({**OK, "reason": "r" * 51}, "reason"),  # Shipper's cancel_reason limit
    ({"connection": "shipper-main", "id": "SO-1"}, "reason"),  # required by Shipper
    ({**OK, "resource": "asn"}, "resource"),
    ([OK], "body"),
    ("cancel", "body"),
]


@pytest.mark.parametrize(("body", "loc"), BAD_BODIES)
async def test_bad_request_is_refused_before_sending(
    gateway: Gateway, upstream: Upstream, body: Any, loc: str
):
    """Invalid input → 422 invalid_request naming the field, and nothing reaches the provider."""
    result = await gateway.cancel(body)
    assert result.status == 422, result.body
    assert result.body["status"] == "rejected"
    assert result.body["error"]["code"] == "invalid_request"
    assert result.body["error"]["source"] == "gateway"
    assert loc in [f["loc"] for f in result.body["error"]["fields"]]
    assert result.body["upstream"] is None
    assert upstream.received == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"connection": "shipper-main", "id": "SO-1", "reason": "r", "params": {"n": NaN}}',
        b'{"connection": "shipper-main", "id": "SO-1", "reason": "r", "x": Infinity}',
        b'{"connection": "shipper-main", "id": "SO-1",',
        b"",
        b"\xff\xfe",
    ],
)
async def test_body_that_is_not_strict_json_is_refused(
    gateway: Gateway, upstream: Upstream, raw: bytes
):
    """NaN, Infinity, truncated JSON, an empty or binary body → 422 on the body."""
    result = await gateway.request("POST", "/v1/cancellations", data=raw)
    assert result.status == 422
    assert result.body["error"]["fields"][0]["loc"] == "body"
    assert upstream.received == []


async def test_several_problems_are_reported_together(gateway: Gateway, upstream: Upstream):
    """All field problems come in one answer, not one per attempt."""
    result = await gateway.cancel(
        {"connection": "shipper-main", "id": "S" * 51, "params": {"colour": "red"}}
    )
    locs = {f["loc"] for f in result.body["error"]["fields"]}
    assert {"id", "reason", "params.colour"} <= locs


async def test_field_and_provider_problems_come_in_one_answer(gateway: Gateway, upstream: Upstream):
    """A reason too long for the canonical request and an undeclared param: both in one 422,
    with the provider's own limit on the id beside them, not in rounds."""
    result = await gateway.cancel(
        {
            "connection": "shipper-main",
            "id": "S" * 51,
            "reason": "r" * 600,
            "params": {"colour": "red"},
        }
    )
    assert result.status == 422
    problems = {f["loc"]: f["message"] for f in result.body["error"]["fields"]}
    assert set(problems) == {"reason", "params.colour", "id"}
    assert "500 characters" in problems["reason"]
    assert "50 characters" in problems["id"]
    assert result.body["connection"] == "shipper-main"
    assert upstream.received == []


async def test_an_unknown_connection_is_named_beside_the_fields_problems(
    gateway: Gateway, upstream: Upstream
):
    """Field problems and a connection that does not exist: all in one 422."""
    result = await gateway.cancel({"connection": "nope", "id": "x", "reason": "r" * 600})
    assert result.status == 422
    locs = [f["loc"] for f in result.body["error"]["fields"]]
    assert sorted(locs) == ["connection", "reason"]
    assert upstream.received == []


async def test_bad_idempotency_key_is_refused(gateway: Gateway, upstream: Upstream):
    """Idempotency-Key must be 1 to 255 printable ASCII characters."""
    result = await gateway.cancel(OK, headers={"Idempotency-Key": "k" * 256})
    assert result.status == 422
    assert result.body["error"]["fields"][0]["loc"] == "headers.Idempotency-Key"
    assert upstream.received == []


@pytest.mark.parametrize(
    ("identifier", "segment"),
    [
        ("../../admin", "..%2F..%2Fadmin"),
        ("a/b?x=1#f", "a%2Fb%3Fx%3D1%23f"),
        ("%2e%2e", "%252e%252e"),
        ("a b", "a%20b"),
        ("ü-1", "%C3%BC-1"),
    ],
)
async def test_identifier_reaches_upstream_as_one_segment(
    gateway: Gateway, upstream: Upstream, identifier: str, segment: str
):
    """An id can never change the upstream path: it arrives as one percent-encoded segment."""
    upstream.answer(200, {"orderNumber": "1"})
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": identifier})
    assert result.status == 200, result.body
    assert upstream.received[0].raw_path == f"/rxuniverse/api/v2/orders/{segment}"
    assert result.body["resource_id"] == identifier


async def test_missing_caller_key_is_401_envelope(gateway: Gateway, upstream: Upstream):
    """No key → 401 envelope with WWW-Authenticate; nothing is sent."""
    result = await gateway.cancel(OK, key=None)
    assert result.status == 401
    assert result.headers["WWW-Authenticate"].startswith("Bearer")
    assert result.body["error"]["code"] == "unauthorized"
    assert result.body["connection"] is None
    assert result.body["cancellation_id"] is None
    assert upstream.received == []


async def test_wrong_caller_key_is_401(gateway: Gateway, upstream: Upstream):
    result = await gateway.cancel(OK, key="not-the-key-0123456789")
    assert result.status == 401
    assert upstream.received == []


async def test_caller_outside_its_patterns_is_403(gateway: Gateway, upstream: Upstream):
    """A caller limited to shipper-* may not use stateset-main."""
    request = {"connection": "stateset-main", "id": "a", "reason": "r"}
    result = await gateway.cancel(request, key="limited-caller-key-0123456789")
    assert result.status == 403
    assert result.body["error"]["code"] == "forbidden"
    assert upstream.received == []


async def test_unknown_connection_is_404(gateway: Gateway):
    result = await gateway.cancel({**OK, "connection": "nowhere"})
    assert result.status == 404
    assert result.body["error"]["code"] == "unknown_connection"


async def test_unknown_path_is_404_envelope(gateway: Gateway):
    result = await gateway.request("GET", "/v1/nothing-here", key=None)
    assert result.status == 404
    assert result.body["error"]["code"] == "unknown_endpoint"
    assert result.headers["Content-Type"].startswith("application/json")


async def test_wrong_method_is_405_envelope(gateway: Gateway):
    result = await gateway.request("PUT", "/v1/cancellations")
    assert result.status == 405
    assert result.body["error"]["code"] == "method_not_allowed"
    assert "POST" in result.headers["Allow"]


async def test_oversized_body_is_413_envelope(gateway: Gateway, upstream: Upstream):
    """A body over max_body_bytes → 413 payload_too_large."""
    big = {**OK, "notes": "n" * 70_000}
    result = await gateway.cancel(big)
    assert result.status == 413
    assert result.body["error"]["code"] == "payload_too_large"
    assert upstream.received == []


async def test_request_id_is_echoed_and_forwarded(gateway: Gateway, upstream: Upstream):
    upstream.answer(200, {"orderNumber": "1"})
    request = {"connection": "rxuniverse-lab", "id": "1"}
    result = await gateway.cancel(request, headers={"X-Request-ID": "req-abc-123"})
    assert result.headers["X-Request-ID"] == "req-abc-123"
    assert result.body["request_id"] == "req-abc-123"
    assert upstream.received[0].headers["X-Request-ID"] == "req-abc-123"


async def test_request_id_is_generated_when_absent(gateway: Gateway):
    result = await gateway.request("GET", "/healthz", key=None)
    assert len(result.headers["X-Request-ID"]) == 32


async def test_traceparent_is_continued_with_new_span(gateway: Gateway, upstream: Upstream):
    """The caller's trace id reaches the upstream and the logs; the span id is new."""
    upstream.answer(200, {"orderNumber": "1"})
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    result = await gateway.cancel(
        {"connection": "rxuniverse-lab", "id": "1"}, headers={"traceparent": parent}
    )
    assert result.body["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    version, trace_id, span_id, flags = upstream.received[0].headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    assert span_id != "00f067aa0ba902b7"
    for line in gateway.events("upstream.request"):
        assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_tracestate_travels_with_the_trace(gateway: Gateway, upstream: Upstream):
    """A valid traceparent's tracestate reaches the upstream unchanged; without a valid
    traceparent it means nothing and is dropped."""
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    upstream.always(200, {"orderNumber": "1"})
    body = {"connection": "rxuniverse-lab", "id": "1"}
    await gateway.cancel(body, headers={"traceparent": parent, "tracestate": state})
    await gateway.cancel(body, headers={"traceparent": "00-zz-yy-01", "tracestate": state})
    await gateway.cancel(body, headers={"traceparent": parent, "tracestate": "bad\x7f"[:3] * 200})
    assert upstream.received[0].headers["tracestate"] == state
    assert "tracestate" not in upstream.received[1].headers
    assert "tracestate" not in upstream.received[2].headers  # longer than 512: not passed on


async def test_log_lines_inside_a_request_carry_its_span(gateway: Gateway, upstream: Upstream):
    """Every line of a request names the request's span, beside its trace."""
    upstream.answer(200, {"orderNumber": "1"})
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await gateway.cancel(
        {"connection": "rxuniverse-lab", "id": "1"}, headers={"traceparent": parent}
    )
    lines = [line for line in gateway.logs if line.get("trace_id")]
    spans = {line.get("span_id") for line in lines}
    assert len(lines) >= 5
    assert len(spans) == 1
    [span] = spans
    assert span is not None
    assert len(span) == 16
    assert span != "00f067aa0ba902b7"


async def test_invalid_traceparent_starts_a_new_trace(gateway: Gateway, upstream: Upstream):
    upstream.answer(200, {"orderNumber": "1"})
    result = await gateway.cancel(
        {"connection": "rxuniverse-lab", "id": "1"}, headers={"traceparent": "00-zz-yy-01"}
    )
    assert len(result.body["trace_id"]) == 32
    assert upstream.received[0].headers["traceparent"].split("-")[1] == result.body["trace_id"]


async def test_every_cancellation_logs_the_contract_events(gateway: Gateway, upstream: Upstream):
    """received → upstream.request → upstream.response → completed, then the access line, all
    with ids bound."""
    upstream.answer(200, {"orderNumber": "1"})
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "1"})
    mine = [line for line in gateway.logs if line.get("request_id") == result.body["request_id"]]
    assert [line["event"] for line in mine] == [
        "cancellation.received",
        "upstream.request",
        "upstream.response",
        "cancellation.completed",
        "http.request",
    ]
    for line in mine:
        assert line["trace_id"] == result.body["trace_id"]
        assert line["timestamp"].endswith("Z")
        assert line["level"] == "info"
    assert mine[1]["method"] == "DELETE"
    assert mine[1]["attempt"] == 1
    assert mine[2]["status"] == 200
    assert isinstance(mine[2]["latency_ms"], float)
    completed = mine[3]
    assert completed["status"] == "cancelled"
    assert completed["error_code"] is None
    assert completed["duration_ms"] >= 0


async def test_completed_line_carries_the_providers_code(gateway: Gateway, upstream: Upstream):
    upstream.answer(404, {"error": "No record found"})
    await gateway.cancel({"connection": "rxuniverse-lab", "id": "1"})
    [completed] = gateway.events("cancellation.completed")
    assert (completed["error_code"], completed["provider_code"]) == ("not_found", "No record found")


async def test_refused_input_still_logs_received_and_completed(gateway: Gateway):
    """No record is lost: even a body that cannot be parsed is logged."""
    result = await gateway.request("POST", "/v1/cancellations", data=b"{")
    mine = [
        line["event"]
        for line in gateway.logs
        if line.get("request_id") == result.body["request_id"]
    ]
    assert mine == ["cancellation.received", "cancellation.completed", "http.request"]


async def test_slow_upstream_times_out_within_budget(gateway: Gateway, upstream: Upstream):
    """No answer within timeout_s (2 s here) → 504 provider_timeout, retryable."""
    upstream.answer(200, {"orderNumber": "1"}, delay_s=5)
    started = asyncio.get_running_loop().time()
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "1"})
    elapsed = asyncio.get_running_loop().time() - started
    assert result.status == 504
    assert result.body["error"]["code"] == "provider_timeout"
    assert result.body["error"]["retryable"] is True
    assert result.body["upstream"]["status"] is None
    assert elapsed < 2 + 1.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_refused_connection_is_provider_error(make_gateway: GatewayFactory):
    """Nothing listening → 502 provider_error, retryable, logged as upstream.error."""
    gateway = await make_gateway(upstream_url=f"http://127.0.0.1:{_closed_port()}")
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "1"})
    assert result.status == 502
    assert result.body["error"]["code"] == "provider_error"
    assert result.body["error"]["source"] == "provider"
    assert result.body["error"]["retryable"] is True
    # Never sent, so repeated up to the attempt limit whatever the operation.
    errors = gateway.events("upstream.error")
    assert [e["sent"] for e in errors] == [False, False, False]
    assert [e["attempt"] for e in errors] == [1, 2, 3]
    assert result.body["upstream"]["attempts"] == 3


async def test_redirect_is_not_followed(gateway: Gateway, upstream: Upstream):
    """A 3xx is provider_bad_response, and the Location is never called."""
    upstream.answer(302, body=b"", headers={"Location": "/elsewhere"})
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "1"})
    assert result.status == 502
    assert result.body["error"]["code"] == "provider_bad_response"
    assert len(upstream.received) == 1


async def test_oversized_upstream_body_is_bad_response(gateway: Gateway, upstream: Upstream):
    """More than 1 MiB from the provider → provider_bad_response."""
    upstream.answer(200, body=b'{"pad": "' + b"x" * (1024 * 1024 + 10) + b'"}')
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "1"})
    assert result.status == 502
    assert result.body["error"]["code"] == "provider_bad_response"
    assert len(upstream.received) == 1  # an answer, if too large: not repeated


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (502, b"<html><body>Bad Gateway</body></html>", "text/html"),
        (200, b"OK", "text/plain"),
        (200, b"", "application/json"),
        (200, b'{"procurement": "x"}', "application/json"),
        (200, b'{"procurement": {"state": 1}}', "application/json"),
    ],
)
async def test_unexpected_answers_classify(
    gateway: Gateway, upstream: Upstream, status: int, body: bytes, content_type: str
):
    """HTML, non-JSON, empty and wrong-shaped answers are failures, never a crash."""
    upstream.answer(status, body=body, headers={"Content-Type": content_type})
    result = await gateway.cancel({"connection": "shoplazza-main", "id": "1"})
    assert result.status == 502
    assert result.body["status"] == "failed"
    assert result.body["error"]["code"] in {"provider_error", "provider_bad_response"}


class _ExplodingTransport:
    async def __call__(
        self, request: UpstreamRequest, timeout_s: float, connect_timeout_s: float = 3.0
    ) -> UpstreamResponse:
        raise RuntimeError("boom: a bug with a local secret")


async def test_bug_is_500_without_stack_trace(make_gateway: GatewayFactory):
    """An unexpected exception → 500 internal_error naming the request id; logged, not shown."""
    gateway = await make_gateway(transport=_ExplodingTransport())
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "1"})
    assert result.status == 500
    assert result.body["error"]["code"] == "internal_error"
    assert result.body["request_id"] in result.body["error"]["message"]
    assert b"Traceback" not in result.raw
    assert b"boom" not in result.raw
    [crash] = gateway.events("cancellation.crashed")
    assert "boom" in crash["exception"]
    assert crash["request_id"] == result.body["request_id"]
    [completed] = gateway.events("cancellation.completed")
    assert completed["error_code"] == "internal_error"


async def test_connections_lists_only_allowed_without_secrets(gateway: Gateway):
    result = await gateway.request("GET", "/v1/connections", key="limited-caller-key-0123456789")
    assert result.status == 200
    names = [c["name"] for c in result.body["connections"]]
    assert names == ["shipper-main"]
    [shipper] = result.body["connections"]
    assert shipper["provider"] == "shipper"
    assert shipper["resources"] == ["sales_order"]
    assert shipper["params"]["warehouse_id"]["per_request"] is True


async def test_health_and_readiness(gateway: Gateway):
    assert (await gateway.request("GET", "/healthz", key=None)).body == {"status": "ok"}
    ready = await gateway.request("GET", "/readyz", key=None)
    assert ready.status == 200
    assert ready.body["status"] == "ready"


async def test_caller_without_patterns_may_use_nothing(
    make_gateway: GatewayFactory, upstream: Upstream
):
    """Deny by default: a caller with no connection patterns gets 403 everywhere."""
    config = BASE_CONFIG.replace('connections: ["shipper-*"]', "connections: []")
    gateway = await make_gateway(config, upstream_url=upstream.url)
    result = await gateway.cancel(OK, key="limited-caller-key-0123456789")
    assert result.status == 403
    assert upstream.received == []
