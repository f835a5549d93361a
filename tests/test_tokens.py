"""Tokens fetched before the call: cached until shortly before they expire, renewed then,
forgotten when refused; no socket, a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ErrorCode
from gateway.redact import Redactor
from gateway.tokens import TokenFailure, Tokens
from gateway.translate.wire import UpstreamRequest
from tests.fakes import FakeClock, FakeTransport, load_runtime, response

FIXTURES = Path(__file__).parent / "e2e" / "fixtures"
CONFIG = """
providers: [oauth-market.yaml]
callers:
  - {name: oms, key: "${OMS_API_KEY}", connections: ["*"]}
connections:
  market:
    provider: oauth-market
    base_url: https://market.example
    credentials: {client_id: client-id-not-real, client_secret: client-secret-not-real}
    params: {token_host: "https://auth.market.example"}
"""
CANCEL = UpstreamRequest("POST", "https://market.example/v3/orders/1/cancel", ())


def setup(tmp_path: Path) -> tuple[Tokens, FakeTransport, FakeClock, object]:
    runtime = load_runtime(
        tmp_path, CONFIG, files={"oauth-market.yaml": (FIXTURES / "oauth-market.yaml").read_text()}
    )
    transport, clock = FakeTransport(), FakeClock()
    from gateway.redact import Redactor

    return (
        Tokens(transport, clock, Redactor(runtime.secrets)),
        transport,
        clock,
        runtime.targets["market"],
    )


def issued(token: str, expires_in: int = 900) -> object:
    return response(200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in})


async def test_the_token_request_is_the_oauth2_client_credentials_grant(tmp_path: Path):
    tokens, transport, clock, target = setup(tmp_path)
    transport.answer(issued("t1"))
    request, cached = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    [sent] = transport.sent
    assert (sent.method, sent.url) == ("POST", "https://auth.market.example/v3/token")
    assert sent.body == b"grant_type=client_credentials"
    headers = dict(sent.headers)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert headers["Authorization"].startswith("Basic ")
    assert dict(request.headers)["WM_SEC.ACCESS_TOKEN"] == "t1"
    assert request.shown_headers()["WM_SEC.ACCESS_TOKEN"] == "[REDACTED]"
    assert cached is False


async def test_a_token_is_reused_until_shortly_before_it_expires(tmp_path: Path):
    """900 s of life, renewed 60 s before: reused at 839 s, fetched anew at 840 s."""
    tokens, transport, clock, target = setup(tmp_path)
    transport.answer(issued("t1"), issued("t2"))
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    clock.advance(839)
    request, cached = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert (dict(request.headers)["WM_SEC.ACCESS_TOKEN"], cached) == ("t1", True)
    clock.advance(1)
    request, cached = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert (dict(request.headers)["WM_SEC.ACCESS_TOKEN"], cached) == ("t2", False)
    assert len(transport.sent) == 2


async def test_a_short_lived_token_is_renewed_at_nine_tenths_of_its_life(tmp_path: Path):
    tokens, transport, clock, target = setup(tmp_path)
    transport.answer(issued("t1", expires_in=100), issued("t2", expires_in=100))
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    clock.advance(89)
    assert (await tokens.authorize(target, CANCEL, clock.monotonic() + 5))[1] is True
    clock.advance(1)
    assert (await tokens.authorize(target, CANCEL, clock.monotonic() + 5))[1] is False


async def test_a_forgotten_token_is_fetched_again(tmp_path: Path):
    tokens, transport, clock, target = setup(tmp_path)
    transport.answer(issued("t1"), issued("t2"))
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    tokens.forget(target)
    request, _ = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert dict(request.headers)["WM_SEC.ACCESS_TOKEN"] == "t2"


@pytest.mark.parametrize(
    ("answer", "code", "status"),
    [
        (response(401, {"error": "invalid_client"}), ErrorCode.PROVIDER_AUTH_FAILED, 401),
        (response(503, {"error": "down"}), ErrorCode.PROVIDER_ERROR, 503),
        (response(200, {"token_type": "Bearer"}), ErrorCode.PROVIDER_AUTH_FAILED, 200),
    ],
)
async def test_a_token_endpoint_that_gives_no_token_says_why(
    tmp_path: Path, answer: object, code: ErrorCode, status: int
):
    tokens, transport, clock, target = setup(tmp_path)
    transport.answer(answer)
    with pytest.raises(TokenFailure) as failure:
        await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert (failure.value.code, failure.value.status) == (code, status)


async def test_the_newest_tokens_are_redacted_older_ones_forgotten(tmp_path: Path):
    _, transport, clock, target = setup(tmp_path)
    redactor = Redactor([])
    tokens = Tokens(transport, clock, redactor)
    transport.answer(issued("tok-one-aaaa"), issued("tok-two-bbbb"), issued("tok-three-cc"))
    for _ in range(3):
        await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
        tokens.forget(target)
    text = "tok-one-aaaa tok-two-bbbb tok-three-cc"
    assert redactor.text(text) == "tok-one-aaaa [REDACTED] [REDACTED]"
