"""No credential or caller key ever appears in a log line or an answer, whatever happens."""

from __future__ import annotations

import pytest

from gateway.translate.wire import UpstreamRequest, UpstreamResponse
from tests.conftest import CALLER_KEY, CANARIES, GatewayFactory, Upstream

pytestmark = pytest.mark.e2e

SECRETS = [*CANARIES.values(), CALLER_KEY]
ECHO = " / ".join(SECRETS)  # a provider that echoes what it was sent, credentials included


async def test_canary_secrets_never_leak(make_gateway: GatewayFactory, upstream: Upstream):
    """Successes, provider errors echoing the credentials, timeouts: no canary in any output."""
    gateway = await make_gateway(upstream_url=upstream.url)
    answers = [
        (200, {"status": "cancelled", "asn_number": ECHO, "cancelled_at": ECHO}),
        (
            401,
            {"error": {"type": "authentication_error", "code": "x", "message": f"bad key {ECHO}"}},
        ),
        (200, {"metadata": {"http_status_code": 200}}),
        (401, {"metadata": {"error": {"code": 802, "message": ECHO}}}),
        (200, {"procurement": {"state": 4, "procurement_sn": ECHO}}),
        (401, {"error": ECHO}),
        (200, {"orderNumber": ECHO, "message": ECHO}),
        (400, {"error": ECHO, "details": [ECHO]}),
    ]
    for status, body in answers:
        upstream.answer(status, body, headers={"Content-Type": "application/json", "X-Echo": ECHO})
    requests = [
        {"connection": "stateset-main", "id": "a", "reason": "r"},
        {"connection": "shipper-main", "id": "a", "reason": "r"},
        {"connection": "shoplazza-main", "id": "a"},
        {"connection": "rxuniverse-lab", "id": "a"},
    ]
    raw_answers = []
    for request in requests:
        for _ in range(2):
            result = await gateway.cancel(request)
            raw_answers.append(result.raw)
    # The secrets really were sent, so their absence below means something.
    assert {r.headers.get("Authorization") for r in upstream.received} >= {
        f"Bearer {CANARIES['STATESET_API_KEY']}"
    }
    assert any(
        r.headers.get("Access-Token") == CANARIES["SHOPLAZZA_ACCESS_TOKEN"]
        for r in upstream.received
    )

    outputs = [*raw_answers, gateway.log_text.encode()]
    assert len(gateway.events("cancellation.completed")) == 8
    for output in outputs:
        for secret in SECRETS:
            assert secret.encode() not in output
    assert b"[REDACTED]" in b"".join(raw_answers)


class _LeakyTransport:
    """A failing transport whose exception text holds every secret."""

    async def __call__(self, request: UpstreamRequest, timeout_s: float) -> UpstreamResponse:
        raise RuntimeError(f"crashed while sending {request.headers!r} {ECHO}")


async def test_secrets_stay_out_of_crash_logs(make_gateway: GatewayFactory):
    """A bug whose exception mentions the credentials is logged redacted, and answered as 500."""
    gateway = await make_gateway(transport=_LeakyTransport())
    result = await gateway.cancel({"connection": "shoplazza-main", "id": "a"})
    assert result.status == 500
    assert gateway.events("cancellation.crashed")
    for secret in SECRETS:
        assert secret not in gateway.log_text
        assert secret.encode() not in result.raw


async def test_wrong_caller_key_is_not_logged(make_gateway: GatewayFactory, upstream: Upstream):
    """A presented key, right or wrong, is never written anywhere."""
    gateway = await make_gateway(upstream_url=upstream.url)
    wrong = "WRONG-KEY-CANARY-55aa"
    await gateway.cancel({"connection": "shoplazza-main", "id": "a"}, key=wrong)
    await gateway.cancel({"connection": "shoplazza-main", "id": "a"})
    assert wrong not in gateway.log_text
    assert CALLER_KEY not in gateway.log_text
