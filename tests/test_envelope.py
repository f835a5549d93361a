"""The envelope: the gateway's own fields as they are, the provider's text redacted, then cut."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.envelope import provider_error, render_envelope
from gateway.errors import ErrorCode, Source, Status
from gateway.models import Envelope, UpstreamInfo
from gateway.redact import REDACTED, Redactor
from gateway.translate.classify import MAX_PROVIDER_MESSAGE, Outcome

# Fake values only.
SECRET = "CANARY-SECRET-1234567890"
COMMON = "cancelled"  # a credential that is also a word the gateway writes

UPSTREAM = UpstreamInfo(
    method="POST", url="https://api.example/v1/cancelled", status=200, attempts=1, latency_ms=1
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


def failure(detail: str | None = None, code: str | None = None) -> Outcome:
    return Outcome(
        Status.FAILED,
        ErrorCode.PROVIDER_ERROR,
        "StateSet answered 502",
        provider_code=code,
        provider_status=502,
        detail=detail,
    )


def test_the_gateways_own_fields_are_never_rewritten() -> None:
    """With a credential equal to a word the gateway writes ("cancelled"), the envelope keeps
    its status, field names, URL and ids: only provider text is redacted."""
    given = envelope(provider_response={"state": COMMON})
    redactor = Redactor([COMMON, SECRET])
    answer = redactor.answer(())
    written = orjson.loads(
        render_envelope(given.model_copy(update={"provider_response": answer.clean({"a": 1})}))
    )
    assert written["status"] == "cancelled"
    assert "cancelled_at" in written
    assert written["upstream"]["url"].endswith("/v1/cancelled")
    assert answer.clean({"state": COMMON}) == {"state": REDACTED}


def test_render_is_pydantics_serialization() -> None:
    given = envelope(provider_response={"id": "asn_1", "n": 3, "big": 2**70})
    assert render_envelope(given) == given.model_dump_json().encode()


def test_provider_text_is_redacted_then_cut_without_a_fragment() -> None:
    """A secret echoed across the cut is removed whole before the cut: no prefix of it is
    left, and the cut does not end inside a [REDACTED] marker."""
    redactor = Redactor([SECRET])
    for offset in range(-30, 5):
        text = "x" * (MAX_PROVIDER_MESSAGE + offset) + SECRET + "tail"
        error = provider_error(failure(text, code=text), redactor.answer(()))
        assert error is not None
        for shown in (error.message, error.provider_code or ""):
            assert SECRET[:4] not in shown
            assert not shown.rstrip("…").endswith(("[", "[R", "[RED", "[REDACTED"[:-1]))
        assert len(error.provider_code or "") <= MAX_PROVIDER_MESSAGE


def test_the_message_is_the_gateways_words_then_the_providers() -> None:
    error = provider_error(failure("bad key " + SECRET, code="E1"), Redactor([SECRET]).answer(()))
    assert error is not None
    assert error.message == f"StateSet answered 502: bad key {REDACTED}"
    assert error.provider_code == "E1"
    assert error.source is Source.PROVIDER


@pytest.mark.parametrize("form", ["base64", "base64url", "percent"])
def test_encoded_forms_of_a_credential_are_redacted(form: str) -> None:
    import base64
    from urllib.parse import quote

    secret = "s3cr3t/key+with=chars?"
    encoded = {
        "base64": base64.b64encode(secret.encode()).decode(),
        "base64url": base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
        "percent": quote(secret, safe=""),
    }[form]
    error = provider_error(failure(f"you sent {encoded}"), Redactor([secret]).answer(()))
    assert error is not None
    assert encoded not in error.message
    assert REDACTED in error.message


@pytest.mark.parametrize("secret", ["it's-a-key-0123", "back\\slash-key-0123"])
def test_a_credential_quoted_by_a_library_is_redacted(secret: str) -> None:
    """aiohttp's messages quote what they were given as Python does (' and \\ escaped)."""
    quoted = f"bad value {secret!r} and {secret.encode()!r}"
    error = provider_error(failure(quoted), Redactor([secret]).answer(()))
    assert error is not None
    assert error.message.count(REDACTED) == 2
    for part in (secret, secret.replace("\\", "\\\\"), "key-0123"):
        assert part not in error.message


def test_no_oracle_a_provider_echoing_the_guess_and_the_credential() -> None:
    """A provider that echoes the caller's notes and the credential it was sent: a right guess
    and a wrong one give the same message, both masked."""
    redactor = Redactor([SECRET])
    for guess in (SECRET, SECRET[:-1] + "?", "x" + SECRET + "y"):
        echoed = failure(f"notes: {guess}; key: {SECRET}")
        error = provider_error(echoed, redactor.answer(("asn_1", guess)))
        assert error is not None
        assert error.message.endswith(f"notes: {REDACTED}; key: {REDACTED}")


def test_a_short_caller_value_cannot_be_a_credential_and_comes_back_as_sent() -> None:
    """Strings shorter than the shortest credential (8 characters) are left as echoed."""
    error = provider_error(failure("order 72544 not found"), Redactor([SECRET]).answer(("72544",)))
    assert error is not None
    assert error.message.endswith("order 72544 not found")


def test_masked_keys_in_provider_response_hide_whatever_they_hold() -> None:
    answer = Redactor([SECRET]).answer(())
    cleaned = answer.clean(
        {"id": "a", "headers": {"Authorization": "Bearer x"}, "l": [{"token": 1}]}
    )
    assert cleaned == {
        "id": "a",
        "headers": {"Authorization": REDACTED},
        "l": [{"token": REDACTED}],
    }


def test_a_lone_surrogate_in_provider_text_is_replaced_not_fatal() -> None:
    error = provider_error(failure("Location https://x/\udcff"), Redactor([]).answer(()))
    assert error is not None
    written = render_envelope(envelope(status=Status.FAILED, error=error, cancelled_at=None))
    assert orjson.loads(written)["error"]["message"].startswith("StateSet answered 502")


def test_a_provider_response_value_that_is_the_callers_own_string_is_kept() -> None:
    """The provider naming what it was asked about (the id sent, as RxUniverse's orderNumber
    does) is kept; the caller's string inside a longer value is masked like a secret."""
    answer = Redactor([SECRET]).answer(("ORDER-2024-000123",))
    cleaned = answer.clean({"orderNumber": "ORDER-2024-000123", "note": "ORDER-2024-000123 ok"})
    assert cleaned == {"orderNumber": "ORDER-2024-000123", "note": f"{REDACTED} ok"}


def test_a_receipt_masks_values_by_their_key_names_only():
    """What the ledger keeps of a request (its receipt) masks values under sensitive names,
    whatever they hold, and shows every other value as sent, a secret's text included: masking
    by value would tell a caller that a guess equals a secret."""
    secret = "sk_live_receipt_0123456789"
    redactor = Redactor([secret])
    request = {
        "reason": f"pasted {secret}",
        "params": {"api_key": "anything", "Authorization": "Bearer x", "shop": "s"},
        "items": [{"id": "L-1", "password": "p"}],
    }
    assert redactor.masked_by_name(request) == {
        "reason": f"pasted {secret}",
        "params": {"api_key": "[REDACTED]", "Authorization": "[REDACTED]", "shop": "s"},
        "items": [{"id": "L-1", "password": "[REDACTED]"}],
    }
    plain = {"connection": "c", "id": "1"}
    assert redactor.masked_by_name(plain) is plain  # nothing to mask: not copied
