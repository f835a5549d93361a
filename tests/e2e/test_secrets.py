"""No credential or caller key ever appears in a log line or an answer, whatever happens."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest

from gateway.translate.wire import UpstreamRequest, UpstreamResponse
from tests.conftest import CALLER_KEY, CANARIES, Gateway, GatewayFactory, Upstream

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


async def test_a_credential_that_is_a_common_word_never_rewrites_the_envelope(
    make_gateway: GatewayFactory, upstream: Upstream
):
    """A StateSet key that is a word the gateway writes ("cancelled"): the envelope keeps its
    status, field names and ids; only the provider's echo of it is redacted."""
    gateway = await make_gateway(upstream_url=upstream.url, env={"STATESET_API_KEY": "cancelled"})
    upstream.answer(200, {"status": "cancelled", "asn_number": "cancelled", "cancelled_at": None})
    result = await gateway.cancel({"connection": "stateset-main", "id": "asn_1", "reason": "r"})
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert result.body["cancellation_id"].startswith("cxl_")
    assert result.body["cancelled_at"] is not None
    assert result.body["provider_response"] == {"asn_number": "[REDACTED]"}
    assert result.body["upstream"]["url"].endswith("/v1/asns/asn_1/cancel")
    stored = await gateway.request("GET", f"/v1/cancellations/{result.body['cancellation_id']}")
    assert stored.raw == result.raw


async def test_a_secret_echoed_across_the_cut_leaves_no_prefix(
    gateway: Gateway, upstream: Upstream
):
    """The provider's message is redacted before it is cut to 300 characters: a credential
    that straddles the cut leaves no part of itself, whatever its position."""
    secret = CANARIES["RXUNIVERSE_API_KEY"]
    for offset in (-12, -5, -1, 0):
        upstream.answer(400, {"error": "x" * (300 + offset) + secret + " more"})
        result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "72544"})
        error = result.body["error"]
        for shown in (error["message"], error["provider_code"]):
            assert secret[:6] not in shown
            assert not shown.rstrip("…").endswith(("[", "[RE", "[REDACTE"))


async def test_a_real_cancellation_is_no_oracle_for_the_callers_guess(
    gateway: Gateway, upstream: Upstream
):
    """A provider that echoes the caller's notes (or its request id, or its tracestate) and the
    key it was sent: a right guess of the key (this connection's, another's, or a caller key)
    and a wrong one come back alike."""
    key = CANARIES["STATESET_API_KEY"]
    guesses = [key, CANARIES["SHIPPER_API_KEY"], "limited-caller-key-0123456789", key[:-1] + "b"]
    answers = set()
    for guess in guesses:
        upstream.answer(401, {"error": {"code": "X", "message": f"sent {guess}; key {key}"}})
        body = {"connection": "stateset-main", "id": "asn_1", "reason": "r", "notes": guess}
        result = await gateway.cancel(body)
        answers.add(result.body["error"]["message"])
        state = {"traceparent": f"00-{'1' * 32}-{'2' * 16}-01", "tracestate": f"v={guess}"}
        upstream.answer(401, {"error": {"code": "X", "message": f"state v={guess}; {key}"}})
        traced = await gateway.cancel({**body, "notes": "n"}, headers=state)
        answers.add(traced.body["error"]["message"])
    assert answers == {
        "StateSet answered 401: sent [REDACTED]; key [REDACTED]",
        "StateSet answered 401: state [REDACTED]; [REDACTED]",
    }


async def test_an_encoded_echo_of_the_credential_is_redacted(gateway: Gateway, upstream: Upstream):
    """A provider that echoes the header it was sent base64- or percent-encoded."""
    secret = CANARIES["SHOPLAZZA_ACCESS_TOKEN"]
    encoded = [base64.b64encode(secret.encode()).decode(), quote(f"{secret}/x", safe="")]
    upstream.answer(401, {"errors": [f"token {encoded[0]} refused"]})
    upstream.answer(401, {"errors": [f"token {encoded[1]} refused"]})
    for _ in encoded:
        result = await gateway.cancel({"connection": "shoplazza-main", "id": "1"})
        assert "[REDACTED]" in result.body["error"]["message"]
        assert encoded[0] not in result.raw.decode()
        assert quote(secret, safe="") not in result.raw.decode()
    assert encoded[0] not in gateway.log_text
    assert quote(secret, safe="") not in gateway.log_text
