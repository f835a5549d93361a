"""Shared fixtures: real loopback servers for the gateway and for the upstreams it calls."""

from __future__ import annotations

import asyncio
import functools
import io
import re
import socket
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.clock import Clock
from gateway.loader import load
from gateway.logging import make_logger
from gateway.redact import Redactor
from gateway.upstream import Transport

pytest_plugins = ["tests.services"]

# `make unit` leaves out what opens a socket or starts a process (pyproject.toml's markers).
# A test is marked `socket` when it uses one of these fixtures, directly or through another.
SOCKET_FIXTURES = frozenset(
    {"aiohttp_server", "aiohttp_client", "aiohttp_raw_server", "unused_tcp_port"}
    | {"unused_tcp_port_factory", "redis_prefix", "postgres_dsn", "private_redis"}
)
# The store contract runs on every backend (tests/store/test_backends.py); these talk to a server.
SERVER_BACKENDS = frozenset({"redis", "postgres"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            SOCKET_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            or params.get("make_store") in SERVER_BACKENDS
        ):
            item.add_marker(pytest.mark.socket)


@pytest.fixture(autouse=True)
def _unit_tests_open_no_socket(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Where socket tests are left out (`make unit`), a test that binds or connects a network
    socket, or starts a process, without its marker fails and names the marker."""
    unmarked = not any(request.node.get_closest_marker(m) for m in ("e2e", "socket", "process"))
    if not unmarked or "not socket" not in (request.config.option.markexpr or ""):
        yield
        return
    done: list[str] = []

    def watch(owner: Any, method: str, marker: str, applies: Callable[[Any], bool]) -> None:
        real = getattr(owner, method)

        def watched(self: Any, *args: Any, **kwargs: Any) -> Any:
            if applies(self):
                done.append(marker)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(owner, method, watched)

    def networked(sock: socket.socket) -> bool:
        return sock.family in (socket.AF_INET, socket.AF_INET6)

    watch(socket.socket, "bind", "socket", networked)
    watch(socket.socket, "connect", "socket", networked)
    watch(subprocess.Popen, "__init__", "process", lambda _: True)
    yield
    if done:
        pytest.fail(f"{request.node.nodeid} needs @pytest.mark.{done[0]} (tests/conftest.py)")


# Fake values only: tests look for them in logs and answers to prove they never leak.
CALLER_KEY = "test-caller-key-0123456789"
CANARIES = {
    "STATESET_API_KEY": "sk_test_CANARY_stateset_7f3a",
    "SHIPPER_API_KEY": "CANARY-shipper-9d21",
    "SHOPLAZZA_ACCESS_TOKEN": "CANARY-shoplazza-4b88",
    "RXUNIVERSE_API_KEY": "CANARY-rxuniverse-c0de",
}

BASE_CONFIG = """
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
  - name: limited
    key: limited-caller-key-0123456789
    connections: ["shipper-*"]
connections:
  stateset-main:
    provider: stateset
    base_url: ${UPSTREAM}/stateset
    credentials:
      api_key: ${STATESET_API_KEY}
    timeout_s: 2
  shipper-main:
    provider: shipper
    base_url: ${UPSTREAM}/shipper
    credentials:
      api_key: ${SHIPPER_API_KEY}
    params: {warehouse_id: WH-TGR04}
    timeout_s: 2
  shoplazza-main:
    provider: shoplazza
    base_url: ${UPSTREAM}/shoplazza/{params.shop_domain}
    credentials:
      access_token: ${SHOPLAZZA_ACCESS_TOKEN}
    params: {shop_domain: demo-shop}
    timeout_s: 2
  rxuniverse-lab:
    provider: rxuniverse
    base_url: ${UPSTREAM}/rxuniverse
    credentials:
      api_key: ${RXUNIVERSE_API_KEY}
    timeout_s: 2
"""


@dataclass
class Received:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay_s: float = 0.0
    until: asyncio.Event | None = None


# The built-in status probes' paths: StateSet's ASN, Shoplazza's procurement.
PROBE_PATH = re.compile(r"/v1/asns/[^/]+$|/procurements/[^/]+$")


class Upstream:
    """A real HTTP server on loopback that records each request and answers as told."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._answers: list[Answer] = []
        self._arrived = asyncio.Condition()
        self._holds: list[asyncio.Event] = []
        self.default = Answer()
        self.url = ""
        self.probes: list[str] = []  # the paths of the status probes received
        self.arrivals: list[float] = []  # when each request came (time.monotonic)
        self.probe_answers: list[tuple[int, Any]] = []  # queued answers to probes

    def answer(
        self,
        status: int = 200,
        json: Any = None,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
        until: asyncio.Event | None = None,
    ) -> None:
        """Queue one answer; when the queue is empty, ``default`` answers. With ``until`` it
        is held until the test sets that event (the fixture sets it at teardown)."""
        payload = orjson.dumps(json) if body is None else body
        answer = Answer(
            status, payload, headers or {"Content-Type": "application/json"}, delay_s, until
        )
        self._answers.append(answer)
        if until is not None:
            self._holds.append(until)

    def always(
        self,
        status: int = 200,
        json: Any = None,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer this way every time the queue is empty (retries included)."""
        payload = orjson.dumps(json) if body is None else body
        self.default = Answer(status, payload, headers or {"Content-Type": "application/json"})

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> None:
        """Return once ``count`` requests have arrived (bodies read); fail after ``timeout_s``."""
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)

    def release(self) -> None:
        """Let every held answer go."""
        for hold in self._holds:
            hold.set()

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        if request.method == "GET" and PROBE_PATH.search(request.path):
            # A status probe (StateSet's and Shoplazza's read the object): kept apart from the
            # cancels, answered 404 (which settles nothing) unless a test queues answers.
            self.probes.append(request.raw_path)
            if self.probe_answers:
                status, payload = self.probe_answers.pop(0)
                return web.json_response(payload, status=status)
            return web.json_response({"error": "no such object"}, status=404)
        self.received.append(
            Received(request.method, request.raw_path, dict(request.headers), await request.read())
        )
        async with self._arrived:
            self._arrived.notify_all()
        answer = self._answers.pop(0) if self._answers else self.default
        if answer.until is not None:
            await answer.until.wait()
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Upstream]:
    fake = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    fake.release()  # a test that failed while an answer was held: the server can stop


@dataclass
class Result:
    status: int
    body: dict[str, Any]
    headers: Any
    raw: bytes


class Gateway:
    """The real gateway app served on a loopback port, with its log lines captured."""

    def __init__(
        self, url: str, session: aiohttp.ClientSession, stream: io.StringIO, config_path: Path
    ) -> None:
        self.url = url
        self.session = session
        self._stream = stream
        self.config_path = config_path  # rewrite it, then reload

    def rewrite(self, config: str) -> None:
        self.config_path.write_text(textwrap.dedent(config))

    @property
    def log_text(self) -> str:
        return self._stream.getvalue()

    @property
    def logs(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.log_text.splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.logs if line["event"] == name]

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        key: str | None = CALLER_KEY,
        headers: dict[str, str] | None = None,
    ) -> Result:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        if json is not None:
            data = orjson.dumps(json)
            sent.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.url + path, data=data, headers=sent) as resp:
            raw = await resp.read()
            return Result(resp.status, orjson.loads(raw), resp.headers, raw)

    async def cancel(self, body: Any, **kwargs: Any) -> Result:
        return await self.request("POST", "/v1/cancellations", json=body, **kwargs)


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    tmp_path: Path,
) -> AsyncIterator[GatewayFactory]:
    """Build a gateway from YAML text (``${UPSTREAM}`` and the canaries are set) on a real port."""
    sessions: list[aiohttp.ClientSession] = []

    async def factory(
        config: str = BASE_CONFIG,
        *,
        upstream_url: str = "http://127.0.0.1:9",
        env: dict[str, str] | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
    ) -> Gateway:
        path = tmp_path / "gateway.yaml"
        path.write_text(textwrap.dedent(config))
        environ = {"OMS_API_KEY": CALLER_KEY, "UPSTREAM": upstream_url, **CANARIES, **(env or {})}
        runtime = load(path, environ)
        stream = io.StringIO()
        redactor = Redactor(runtime.secrets)
        log = make_logger(stream=stream, level="debug", redactor=redactor)
        app = create_app(
            runtime,
            log=log,
            redactor=redactor,
            transport=transport,
            clock=clock,
            loader=functools.partial(load, path, environ),
        )
        server = await aiohttp_server(app)
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Gateway(str(server.make_url("")).rstrip("/"), session, stream, path)

    yield factory
    for session in sessions:
        await session.close()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    """The standard gateway: one connection per built-in provider, all pointing at ``upstream``."""
    return await make_gateway(upstream_url=upstream.url)
