"""Providers that sign each request, or take HTTP Basic or a query key, cancel end to end
against a server that checks the credential itself: it recomputes the signature with hmac from
what it received and refuses the request when it does not match."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.clock import SystemClock
from gateway.redact import REDACTED
from tests.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent / "fixtures"

# As in CONFIG below.
APP_SECRET = "tts-app-secret-not-real"
ACCESS_TOKEN = "tts-access-token-not-real"
APP_KEY = "29a39d"
ACCOUNT_ID = "acct-3pl-not-real"
BASIC_KEY = "basic-3pl-key-not-real"
QUERY_KEY = "query-key-not-real-0123"
NOT_SENT = ("sign", "access_token")  # left out of what the signature covers

CONFIG = """
providers: [signed-shop.yaml, basic-3pl.yaml, query-key.yaml, variant.yaml]
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  shop:
    provider: signed-shop
    base_url: ${UPSTREAM}/tts
    credentials: {app_secret: tts-app-secret-not-real, access_token: tts-access-token-not-real}
    params: {app_key: 29a39d, shop_cipher: GCP_XF90igAAAABh00qsWgtvOiGFNqyubMt3}
    timeout_s: 2
    retry: {backoff_base_s: 0.01}
  variant:
    provider: signed-shop-variant
    base_url: ${UPSTREAM}/tts
    credentials: {app_secret: tts-app-secret-not-real, access_token: tts-access-token-not-real}
    params: {app_key: 29a39d, shop_cipher: GCP_XF90igAAAABh00qsWgtvOiGFNqyubMt3}
    timeout_s: 2
  warehouse:
    provider: basic-3pl
    base_url: ${UPSTREAM}/3pl
    credentials: {account_id: acct-3pl-not-real, api_key: basic-3pl-key-not-real}
    timeout_s: 2
  keyed:
    provider: query-key
    base_url: ${UPSTREAM}/qk
    credentials: {api_key: query-key-not-real-0123}
    timeout_s: 2
"""


def tiktok_sign(secret: str, path: str, query: list[tuple[str, str]], body: bytes) -> str:
    """TikTok Shop's recipe, written out: secret + path + the parameters but sign and
    access_token sorted by name as {name}{value} + body + secret, HMAC-SHA256, lowercase hex."""
    pairs = "".join(f"{name}{value}" for name, value in sorted(query) if name not in NOT_SENT)
    message = secret.encode() + path.encode() + pairs.encode() + body + secret.encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@dataclass
class Seen:
    """One signed request as the provider received it."""

    query: dict[str, str]
    sign: str
    verified: bool


@dataclass
class Provider:
    """The providers' side: checks each credential itself and answers as told."""

    signed: list[Seen] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # the next answers of the signed shop
    checked: list[str] = field(default_factory=list)  # the Basic and query-key requests

    async def shop(self, request: web.Request) -> web.Response:
        body = await request.read()
        query = parse_qsl(urlsplit(request.raw_path).query, keep_blank_values=True)
        given = dict(query).get("sign", "")
        expected = tiktok_sign(APP_SECRET, urlsplit(request.raw_path).path, query, body)
        verified = hmac.compare_digest(given, expected)
        self.signed.append(Seen(dict(query), given, verified))
        if not verified or request.headers.get("x-tts-access-token") != ACCESS_TOKEN:
            # As some providers do: the signature received is quoted in the refusal.
            message = f"Invalid signature: received {given}"
            return web.json_response({"code": 106001, "message": message}, status=401)
        if self.statuses:
            status = self.statuses.pop(0)
            return web.json_response({"code": 36009009, "message": "busy"}, status=status)
        return web.json_response({"code": 0, "message": "Success", "data": {"cancel_id": "C-1"}})

    async def warehouse(self, request: web.Request) -> web.Response:
        await request.read()
        pair = base64.b64encode(f"{ACCOUNT_ID}:{BASIC_KEY}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {pair}":
            return web.json_response({"error": "unauthorized"}, status=401)
        self.checked.append(request.path)
        return web.json_response({"status": "cancelled"})

    async def keyed(self, request: web.Request) -> web.Response:
        if request.query.get("apikey") != QUERY_KEY:
            return web.json_response({"error": "bad key"}, status=401)
        self.checked.append(request.path_qs.replace(QUERY_KEY, "KEY"))
        return web.Response(status=204)


@pytest.fixture
async def provider(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> tuple[Provider, str]:
    fake = Provider()
    app = web.Application()
    app.router.add_route("*", "/tts/{tail:.*}", fake.shop)
    app.router.add_route("*", "/3pl/{tail:.*}", fake.warehouse)
    app.router.add_route("*", "/qk/{tail:.*}", fake.keyed)
    server = await aiohttp_server(app)
    return fake, str(server.make_url("")).rstrip("/")


def write_fixtures(directory: Path, variant: dict[str, Any] | None = None) -> None:
    """The three definitions, and a variant of the signed one (the same, unless changed)."""
    for name in ("signed-shop.yaml", "basic-3pl.yaml", "query-key.yaml"):
        shutil.copy(FIXTURES / name, directory / name)
    data = yaml.safe_load((FIXTURES / "signed-shop.yaml").read_text("utf-8"))
    data["name"] = "signed-shop-variant"
    data["signature"].update(variant or {})
    (directory / "variant.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


class SteppingClock(SystemClock):
    """The system's clock, except that each reading of the date is one second after the last:
    two attempts made within a second still carry different times."""

    def __init__(self, start: datetime) -> None:
        self._next = start

    def now(self) -> datetime:
        moment, self._next = self._next, self._next + timedelta(seconds=1)
        return moment


async def start(
    make_gateway: GatewayFactory,
    provider: tuple[Provider, str],
    tmp_path: Path,
    variant: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Gateway:
    write_fixtures(tmp_path, variant)
    return await make_gateway(CONFIG, upstream_url=provider[1], **kwargs)


def assert_hidden(gateway: Gateway, raw: bytes, *values: str) -> None:
    """None of ``values`` appears in the answer or in any log line."""
    for value in values:
        assert value.encode() not in raw, value
        assert value not in gateway.log_text, value


async def test_signed_request_is_accepted_and_its_signature_never_shown(
    make_gateway: GatewayFactory, provider: tuple[Provider, str], tmp_path: Path
):
    """The provider recomputes the signature from what arrived and accepts it; the envelope
    shows the URL with the signature masked, and neither it nor the token is in the logs."""
    fake, _ = provider
    gateway = await start(make_gateway, provider, tmp_path)
    result = await gateway.cancel({"connection": "shop", "id": "576461413038785752"})
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert result.body["provider_response"] == {"cancel_id": "C-1"}
    (seen,) = fake.signed
    assert seen.verified
    assert list(seen.query) == ["timestamp", "shop_cipher", "app_key", "sign"]
    url = result.body["upstream"]["url"]
    assert url.endswith(f"&sign={REDACTED}")
    assert f"timestamp={seen.query['timestamp']}" in url
    assert_hidden(gateway, result.raw, seen.sign, ACCESS_TOKEN, APP_SECRET)
    assert any(line.get("url") == url for line in gateway.events("upstream.request"))


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(
            {
                "message": [
                    "{credentials.app_secret}",
                    {"part": "path"},
                    {"part": "query", "pair": "{name}{value}", "separator": "", "sort": False},
                    {"part": "body"},
                    "{credentials.app_secret}",
                ]
            },
            id="query-not-sorted",
        ),
        pytest.param({"key": "{credentials.access_token}"}, id="another-key"),
        pytest.param({"encoding": "hex-upper"}, id="upper-case-hex"),
    ],
)
async def test_a_wrong_recipe_is_refused_by_the_provider(
    make_gateway: GatewayFactory,
    provider: tuple[Provider, str],
    tmp_path: Path,
    variant: dict[str, Any],
):
    """A definition that signs otherwise than the provider does is refused with a 401, which
    the gateway answers as provider_auth_failed, not repeated."""
    fake, _ = provider
    gateway = await start(make_gateway, provider, tmp_path, variant)
    result = await gateway.cancel({"connection": "variant", "id": "1"})
    assert result.body["status"] == "failed"
    assert result.body["error"]["code"] == "provider_auth_failed"
    assert result.body["upstream"]["status"] == 401
    assert [seen.verified for seen in fake.signed] == [False]
    # The provider quoted the signature: the message keeps its words, not the signature.
    assert "Invalid signature: received [REDACTED]" in result.body["error"]["message"]
    assert_hidden(gateway, result.raw, fake.signed[0].sign, ACCESS_TOKEN, APP_SECRET)


async def test_a_retry_is_signed_anew_with_its_own_time(
    make_gateway: GatewayFactory, provider: tuple[Provider, str], tmp_path: Path
):
    """After a 503, the second attempt carries a later timestamp and a new signature over it,
    and the provider verifies both."""
    fake, _ = provider
    fake.statuses = [503]
    clock = SteppingClock(datetime(2024, 1, 16, 10, 30, tzinfo=UTC))
    gateway = await start(make_gateway, provider, tmp_path, clock=clock)
    result = await gateway.cancel({"connection": "shop", "id": "576461413038785752"})
    assert result.status == 200, result.body
    assert result.body["upstream"]["attempts"] == 2
    first, second = fake.signed
    assert first.verified
    assert second.verified
    assert int(second.query["timestamp"]) > int(first.query["timestamp"])
    assert first.sign != second.sign
    assert_hidden(gateway, result.raw, first.sign, second.sign, ACCESS_TOKEN)
    shown = [line["url"] for line in gateway.events("upstream.request")]
    assert len(shown) == 2
    assert all(url.endswith(f"&sign={REDACTED}") for url in shown)


async def test_basic_auth_provider_cancels(
    make_gateway: GatewayFactory, provider: tuple[Provider, str], tmp_path: Path
):
    """HTTP Basic with the account id and the key, checked by the provider; neither shown."""
    fake, _ = provider
    gateway = await start(make_gateway, provider, tmp_path)
    result = await gateway.cancel({"connection": "warehouse", "id": "SO-1", "reason": "late"})
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert fake.checked == ["/3pl/v1/orders/SO-1/cancel"]
    pair = base64.b64encode(f"{ACCOUNT_ID}:{BASIC_KEY}".encode()).decode()
    assert_hidden(gateway, result.raw, BASIC_KEY, pair)


async def test_query_key_provider_cancels_with_the_key_masked(
    make_gateway: GatewayFactory, provider: tuple[Provider, str], tmp_path: Path
):
    """The key travels in the query, the provider checks it, and the envelope's URL and the
    logs show it masked."""
    fake, _ = provider
    gateway = await start(make_gateway, provider, tmp_path)
    result = await gateway.cancel({"connection": "keyed", "id": "A-7", "notify": True})
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert fake.checked == ["/qk/orders/A-7?notify=true&apikey=KEY"]
    assert result.body["upstream"]["url"].endswith(f"/qk/orders/A-7?notify=true&apikey={REDACTED}")
    assert_hidden(gateway, result.raw, QUERY_KEY)


async def test_a_wrong_query_key_is_provider_auth_failed(
    make_gateway: GatewayFactory, provider: tuple[Provider, str], tmp_path: Path
):
    """A key the provider does not accept: provider_auth_failed, the key still masked."""
    write_fixtures(tmp_path)
    gateway = await make_gateway(
        CONFIG.replace(QUERY_KEY, "another-key-not-real"), upstream_url=provider[1]
    )
    result = await gateway.cancel({"connection": "keyed", "id": "A-7"})
    assert result.body["error"]["code"] == "provider_auth_failed"
    assert result.body["upstream"]["url"].endswith(f"apikey={REDACTED}")
    assert_hidden(gateway, result.raw, "another-key-not-real")


async def test_a_broken_answer_does_not_show_the_signature(
    make_gateway: GatewayFactory, tmp_path: Path
):
    """An answer that is not HTTP: the client library's words about it quote the URL it called,
    and the signature in that URL is masked there as everywhere else."""
    seen: list[bytes] = []

    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(broken, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        write_fixtures(tmp_path)
        gateway = await make_gateway(CONFIG, upstream_url=f"http://127.0.0.1:{port}")
        result = await gateway.cancel({"connection": "shop", "id": "1"})
    finally:
        server.close()
        await server.wait_closed()
    assert result.body["status"] == "failed"
    (head,) = seen
    sign = dict(parse_qsl(urlsplit(head.split(b" ")[1].decode()).query))["sign"]
    assert result.body["error"]["code"] == "provider_bad_response"
    # The envelope's message is cut: a prefix of the signature would show there.
    assert_hidden(gateway, result.raw, sign[:16], ACCESS_TOKEN)


def test_fixture_signature_matches_the_published_example() -> None:
    """The fixture's recipe is TikTok Shop's: on the documentation's example it gives the
    documentation's signature (the server above checks requests with the same recipe)."""
    data = yaml.safe_load((FIXTURES / "signed-shop.yaml").read_text("utf-8"))
    assert data["signature"]["message"][2] == {
        "part": "query",
        "pair": "{name}{value}",
        "separator": "",
        "exclude": list(NOT_SENT),
    }
    published = "b596b73e0cc6de07ac26f036364178ab16b0a907af13d43f0a0cd2345f582dc8"
    query = [("app_key", "29a39d"), ("timestamp", "1623812664")]
    assert tiktok_sign("e59af819cc", "/authorization/202309/shops", query, b"") == published
