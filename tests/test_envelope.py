"""render_envelope: the answer's bytes, with every secret removed, whichever way they are made."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.envelope import render_envelope
from gateway.errors import ErrorCode, Source
from gateway.models import Envelope, ErrorBody, FieldProblem, Status, UpstreamInfo
from gateway.redact import REDACTED, Redactor

# Fake values only.
SECRET = "CANARY-SECRET-1234567890"
OTHER_SECRET = 'sk_test_"quoted"\\CANARY'

UPSTREAM = UpstreamInfo(
    method="POST", url="https://api.example/v1/x", status=200, attempts=1, latency_ms=12.3
)


def envelope(**fields: Any) -> Envelope:
    base: dict[str, Any] = {
        "cancellation_id": "cxl_01",
        "status": Status.CANCELLED,
        "connection": "shop-main",
        "provider": "stateset",
        "resource": "asn",
        "resource_id": "asn_1",
        "cancelled_at": "2026-12-02T03:00:00Z",
        "upstream": UPSTREAM,
        "request_id": "req-1",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
    }
    return Envelope(**{**base, **fields})


ENVELOPES = {
    "plain success": envelope(provider_response={"id": "asn_1", "n": 3, "x": 1.5, "ok": True}),
    "no provider response": envelope(provider_response=None),
    "unicode and control characters": envelope(
        provider_response={"note": "annulé ✓ \u2028 tab\t nul\u0000 <\\/>", "list": [None, 2**63]}
    ),
    "a secret in a value": envelope(provider_response={"echo": f"key={SECRET}"}),
    "a secret that JSON escapes": envelope(provider_response={"echo": OTHER_SECRET}),
    "a masked key": envelope(
        provider_response={"id": "a", "headers": {"Authorization": "Bearer x"}}
    ),
    "a masked key in a list": envelope(provider_response={"items": [{"token": "t"}]}),
    "an error with a secret in its message": envelope(
        status=Status.FAILED,
        cancelled_at=None,
        error=ErrorBody(
            code=ErrorCode.PROVIDER_ERROR,
            message=f"the provider said: bad key {SECRET}",
            source=Source.PROVIDER,
            provider_code="E1",
            provider_status=502,
            retryable=True,
            retry_after_s=2.5,
            fields=[FieldProblem(loc="id", message="too long")],
        ),
    ),
}


@pytest.mark.parametrize("name", list(ENVELOPES))
def test_the_bytes_are_what_cleaning_then_serializing_writes(name: str) -> None:
    redactor = Redactor([SECRET, OTHER_SECRET])
    given = ENVELOPES[name]
    expected = orjson.dumps(redactor.clean(given.model_dump(mode="json")))
    written = render_envelope(given, redactor)
    assert orjson.loads(written) == orjson.loads(expected)
    assert SECRET.encode() not in written
    assert orjson.dumps(OTHER_SECRET)[1:-1] not in written


def test_secrets_and_masked_values_are_gone() -> None:
    redactor = Redactor([SECRET, OTHER_SECRET])
    echo = orjson.loads(render_envelope(ENVELOPES["a secret in a value"], redactor))
    assert echo["provider_response"] == {"echo": f"key={REDACTED}"}
    escaped = orjson.loads(render_envelope(ENVELOPES["a secret that JSON escapes"], redactor))
    assert escaped["provider_response"] == {"echo": REDACTED}
    masked = orjson.loads(render_envelope(ENVELOPES["a masked key"], redactor))
    assert masked["provider_response"]["headers"] == {"Authorization": REDACTED}
    listed = orjson.loads(render_envelope(ENVELOPES["a masked key in a list"], redactor))
    assert listed["provider_response"]["items"] == [{"token": REDACTED}]


def test_without_secrets_the_plain_envelope_is_written_as_pydantic_serializes_it() -> None:
    given = ENVELOPES["plain success"]
    assert render_envelope(given, Redactor([])) == given.model_dump_json().encode()
