"""Tokens fetched before the call: cached until shortly before they expire, renewed then,
forgotten when refused; no socket, a fake clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.errors import ErrorCode
from gateway.problems import ConfigError
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
    transport.answer(issued("token-one-1"))
    request, cached = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    [sent] = transport.sent
    assert (sent.method, sent.url) == ("POST", "https://auth.market.example/v3/token")
    assert sent.body == b"grant_type=client_credentials"
    headers = dict(sent.headers)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert headers["Authorization"].startswith("Basic ")
    assert dict(request.headers)["WM_SEC.ACCESS_TOKEN"] == "token-one-1"
    assert request.shown_headers()["WM_SEC.ACCESS_TOKEN"] == "[REDACTED]"
    assert cached is None  # fetched, not from the cache


def setup_with(tmp_path: Path, change: str, to: str) -> tuple[Tokens, FakeTransport, object]:
    text = (FIXTURES / "oauth-market.yaml").read_text()
    assert change in text
    files = {"oauth-market.yaml": text.replace(change, to)}
    runtime = load_runtime(tmp_path, CONFIG, files=files)
    transport = FakeTransport()
    tokens = Tokens(transport, FakeClock(), Redactor(runtime.secrets))
    return tokens, transport, runtime.targets["market"]


async def test_a_content_type_in_the_token_headers_replaces_the_default(tmp_path: Path):
    tokens, transport, target = setup_with(
        tmp_path,
        "    WM_SVC.NAME:",
        "    content-type: application/x-www-form-urlencoded; charset=UTF-8\n    WM_SVC.NAME:",
    )
    transport.answer(issued("token-one-1"))
    await tokens.authorize(target, CANCEL, 5.0)
    [sent] = transport.sent
    types = [v for n, v in sent.headers if n.lower() == "content-type"]
    assert types == ["application/x-www-form-urlencoded; charset=UTF-8"]


def test_an_authorization_header_beside_basic_client_auth_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="leave it out of the headers"):
        setup_with(tmp_path, "    WM_SVC.NAME:", "    Authorization: Basic abc\n    WM_SVC.NAME:")


async def test_a_token_is_reused_until_shortly_before_it_expires(tmp_path: Path):
    """900 s of life, renewed 60 s before: reused at 839 s, fetched anew at 840 s."""
    tokens, transport, clock, target = setup(tmp_path)
    transport.answer(issued("token-one-1"), issued("token-two-2"))
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    clock.advance(839)
    request, cached = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert (dict(request.headers)["WM_SEC.ACCESS_TOKEN"], cached) == ("token-one-1", "token-one-1")
    clock.advance(1)
    request, cached = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert (dict(request.headers)["WM_SEC.ACCESS_TOKEN"], cached) == ("token-two-2", None)
    assert len(transport.sent) == 2


async def test_a_short_lived_token_is_renewed_at_nine_tenths_of_its_life(tmp_path: Path):
    tokens, transport, clock, target = setup(tmp_path)
    transport.answer(issued("token-one-1", expires_in=100), issued("token-two-2", expires_in=100))
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    clock.advance(89)
    assert (await tokens.authorize(target, CANCEL, clock.monotonic() + 5))[1] == "token-one-1"
    clock.advance(1)
    assert (await tokens.authorize(target, CANCEL, clock.monotonic() + 5))[1] is None


async def test_a_forgotten_token_is_fetched_again(tmp_path: Path):
    tokens, transport, clock, target = setup(tmp_path)
    transport.answer(issued("token-one-1"), issued("token-two-2"))
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    tokens.forget(target, "token-one-1")
    request, _ = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert dict(request.headers)["WM_SEC.ACCESS_TOKEN"] == "token-two-2"


@pytest.mark.parametrize(
    ("answer", "code", "status"),
    [
        (response(401, {"error": "invalid_client"}), ErrorCode.PROVIDER_AUTH_FAILED, 401),
        (response(503, {"error": "down"}), ErrorCode.PROVIDER_ERROR, 503),
        (response(200, {"token_type": "Bearer"}), ErrorCode.PROVIDER_BAD_RESPONSE, 200),
        (response(200, {"access_token": "short"}), ErrorCode.PROVIDER_BAD_RESPONSE, 200),
        (response(200, {"access_token": "line\r\nbreak-1"}), ErrorCode.PROVIDER_BAD_RESPONSE, 200),
        (response(200, {"access_token": {"a": 1}}), ErrorCode.PROVIDER_BAD_RESPONSE, 200),
        (response(429, {"error": "slow down"}), ErrorCode.RATE_LIMITED, 429),
        (response(302, {}), ErrorCode.PROVIDER_BAD_RESPONSE, 302),
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


async def test_the_newest_eight_tokens_are_redacted_older_ones_forgotten(tmp_path: Path):
    _, transport, clock, target = setup(tmp_path)
    redactor = Redactor([])
    tokens = Tokens(transport, clock, redactor)
    names = [f"token-number-{n:02d}" for n in range(10)]
    transport.answer(*(issued(name) for name in names))
    for _ in range(10):
        _, cached = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
        assert cached is None
        tokens.forget(target, dict(_.headers)["WM_SEC.ACCESS_TOKEN"])
    shown = redactor.text(" ".join(names)).split()
    assert shown == names[:2] + ["[REDACTED]"] * 8


async def test_a_refused_token_is_forgotten_only_if_it_is_still_the_cached_one(tmp_path: Path):
    """Requests refused with an old token must not throw away the one fetched meanwhile."""
    tokens, transport, clock, target = setup(tmp_path)
    transport.answer(issued("token-one-1"), issued("token-two-2"))
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    tokens.forget(target, "token-one-1")
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)  # fetches token-two-2
    tokens.forget(target, "token-one-1")  # a late refusal of the old token
    _, cached = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert cached == "token-two-2"
    assert len(transport.sent) == 2


async def test_a_waiter_that_gives_up_does_not_stop_the_fetch_for_the_others(tmp_path: Path):
    """The request that started the fetch is cancelled: the fetch goes on, the other
    request waiting for it gets the token."""
    tokens, transport, clock, target = setup(tmp_path)
    arrived, release = transport.hold(issued("token-one-1"))
    first = asyncio.ensure_future(tokens.authorize(target, CANCEL, clock.monotonic() + 5))
    await arrived.wait()
    second = asyncio.ensure_future(tokens.authorize(target, CANCEL, clock.monotonic() + 5))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    request, _ = await second
    assert dict(request.headers)["WM_SEC.ACCESS_TOKEN"] == "token-one-1"
    assert len(transport.sent) == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_an_unsendable_token_is_not_cached(tmp_path: Path):
    """A token with a line break: refused (no 500), and the next request fetches again."""
    tokens, transport, clock, target = setup(tmp_path)
    transport.answer(response(200, {"access_token": "bad\r\ntoken-1"}), issued("token-two-2"))
    with pytest.raises(TokenFailure):
        await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    request, cached = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert (dict(request.headers)["WM_SEC.ACCESS_TOKEN"], cached) == ("token-two-2", None)


async def test_a_reload_that_changes_the_credentials_fetches_a_new_token(tmp_path: Path):
    """The same connection, reloaded with another client secret, does not reuse the token the
    old secret fetched; reloaded unchanged, it does."""
    tokens, transport, clock, target = setup(tmp_path)
    files = {"oauth-market.yaml": (FIXTURES / "oauth-market.yaml").read_text()}
    same = load_runtime(tmp_path, CONFIG, files=files).targets["market"]
    changed_config = CONFIG.replace("client-secret-not-real", "client-secret-rotated-not-real")
    changed = load_runtime(tmp_path, changed_config, files=files).targets["market"]
    transport.answer(issued("token-one-1"), issued("token-two-2"))
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    _, cached = await tokens.authorize(same, CANCEL, clock.monotonic() + 5)
    assert cached == "token-one-1"
    request, cached = await tokens.authorize(changed, CANCEL, clock.monotonic() + 5)
    assert (dict(request.headers)["WM_SEC.ACCESS_TOKEN"], cached) == ("token-two-2", None)
    assert len(transport.sent) == 2


async def test_an_oauth2_token_request_is_signed_by_its_own_signature(tmp_path: Path):
    """`token_signature` signs the token request like a cancel: HMAC-SHA256 under the client
    secret over the method, the path and the form body, computed here by hand."""
    import hashlib
    import hmac
    from urllib.parse import urlsplit

    signature = (
        "  token_signature:\n"
        "    algorithm: hmac-sha256\n"
        '    key: "{credentials.client_secret}"\n'
        "    message: [{part: method}, {part: path}, {part: body}]\n"
        "    header: X-Token-Signature\n"
        "  header: WM_SEC.ACCESS_TOKEN"
    )
    tokens, transport, target = setup_with(tmp_path, "  header: WM_SEC.ACCESS_TOKEN", signature)
    transport.answer(issued("token-one-1"))
    await tokens.authorize(target, CANCEL, 5.0)
    [sent] = transport.sent
    message = b"POST" + urlsplit(sent.url).path.encode() + (sent.body or b"")
    expected = hmac.new(b"client-secret-not-real", message, hashlib.sha256).hexdigest()
    assert sent.header("X-Token-Signature") == expected
