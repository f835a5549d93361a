"""Reloads, slow clients and stopping, on real sockets: in-process for the HTTP side, and as a
real `cancel-gateway serve` process for the signals."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.app import create_app
from gateway.loader import load
from gateway.serve import Listener, serve_until_stopped
from tests.conftest import BASE_CONFIG, CALLER_KEY, CANARIES, GatewayFactory, Upstream
from tests.services import free_port

pytestmark = pytest.mark.e2e

ADMIN_KEY = "ops-admin-key-0123456789"
WITH_ADMIN = BASE_CONFIG.replace(
    "callers:\n", f"callers:\n  - name: ops\n    key: {ADMIN_KEY}\n    admin: true\n", 1
)
RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
RX_CANCEL = {"connection": "rxuniverse-lab", "id": "72544"}
NEW_CANARY = "CANARY-reloaded-lab-5e1f"
SECOND_LAB = (
    "  rxuniverse-two:\n"
    "    provider: rxuniverse\n"
    "    base_url: ${UPSTREAM}/rxuniverse\n"
    "    credentials:\n"
    f"      api_key: {NEW_CANARY}\n"
)


async def _reload(gateway: Any, key: str = ADMIN_KEY) -> Any:
    return await gateway.request("POST", "/admin/reload", key=key)


# --- reload over HTTP ------------------------------------------------------------------------


async def test_reload_serves_the_new_configuration(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(WITH_ADMIN, upstream_url=upstream.url)
    before = await gateway.request("GET", "/readyz", key=None)
    old_version = before.headers["X-Config-Version"]
    assert before.body["config_version"] == old_version

    gateway.rewrite(WITH_ADMIN + SECOND_LAB)
    reloaded = await _reload(gateway)
    assert reloaded.status == 200, reloaded.body
    new_version = reloaded.body["config_version"]
    assert reloaded.body == {
        "status": "reloaded",
        "config_version": new_version,
        "previous_version": old_version,
    }
    assert new_version != old_version

    upstream.always(200, RX_OK)
    result = await gateway.cancel({"connection": "rxuniverse-two", "id": "72544"})
    assert result.body["status"] == "cancelled"
    assert result.headers["X-Config-Version"] == new_version
    assert upstream.received[-1].headers["x-api-key"] == NEW_CANARY
    [event] = gateway.events("config.reloaded")
    assert (event["config_version"], event["previous_version"]) == (new_version, old_version)
    completed = gateway.events("cancellation.completed")[-1]
    assert completed["config_version"] == new_version


async def test_bad_reload_keeps_the_old_configuration(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(WITH_ADMIN, upstream_url=upstream.url)
    version = (await gateway.request("GET", "/readyz", key=None)).headers["X-Config-Version"]
    gateway.rewrite(WITH_ADMIN + "  broken:\n    provider: no-such-provider\n")
    refused = await _reload(gateway)
    assert refused.status == 422
    error = refused.body["error"]
    assert error["code"] == "invalid_request"
    assert version in error["message"]
    assert [f["loc"] for f in error["fields"]] == [
        f"{gateway.config_path}: connections.broken.provider"
    ]
    upstream.always(200, RX_OK)
    result = await gateway.cancel(RX_CANCEL)
    assert result.body["status"] == "cancelled"
    assert result.headers["X-Config-Version"] == version
    [failed] = gateway.events("config.reload_failed")
    assert failed["config_version"] == version
    assert "connections.broken.provider" in failed["problems"][0]


async def test_only_admin_callers_may_reload(make_gateway: GatewayFactory, upstream: Upstream):
    gateway = await make_gateway(WITH_ADMIN, upstream_url=upstream.url)
    forbidden = await _reload(gateway, key=CALLER_KEY)
    assert forbidden.status == 403
    assert forbidden.body["error"]["code"] == "forbidden"
    assert (await _reload(gateway, key="not-a-key-0123456789")).status == 401
    assert gateway.events("config.reloaded") == []


async def test_in_flight_cancellation_finishes_on_the_configuration_it_started_with(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(WITH_ADMIN, upstream_url=upstream.url)
    old_version = (await gateway.request("GET", "/readyz", key=None)).headers["X-Config-Version"]
    release = asyncio.Event()
    upstream.answer(200, RX_OK, until=release)
    in_flight = asyncio.create_task(gateway.cancel(RX_CANCEL))
    await upstream.wait_for(1)

    without_lab = WITH_ADMIN.split("  rxuniverse-lab:")[0]
    gateway.rewrite(without_lab)
    assert (await _reload(gateway)).status == 200
    assert not in_flight.done()

    release.set()
    finished = await in_flight
    assert finished.body["status"] == "cancelled"
    assert finished.headers["X-Config-Version"] == old_version
    after = await gateway.cancel(RX_CANCEL)
    assert after.status == 404
    assert after.body["error"]["code"] == "unknown_connection"


async def test_reloaded_secrets_are_redacted_too(make_gateway: GatewayFactory, upstream: Upstream):
    gateway = await make_gateway(WITH_ADMIN, upstream_url=upstream.url)
    gateway.rewrite(WITH_ADMIN + SECOND_LAB)
    assert (await _reload(gateway)).status == 200
    # A provider that echoes the key it was sent.
    upstream.always(400, {"error": f"key {NEW_CANARY} is not valid", "details": []})
    result = await gateway.cancel({"connection": "rxuniverse-two", "id": "1"})
    assert result.status == 422
    assert NEW_CANARY not in result.raw.decode()
    assert NEW_CANARY not in gateway.log_text
    assert "[REDACTED]" in result.raw.decode()


async def test_breaker_state_survives_a_reload_that_leaves_the_connection_alone(
    make_gateway: GatewayFactory, upstream: Upstream
):
    config = WITH_ADMIN.replace(
        "  rxuniverse-lab:\n",
        "  rxuniverse-lab:\n    retry: {max_attempts: 1}\n    breaker: {failures: 1}\n",
    )
    gateway = await make_gateway(config, upstream_url=upstream.url)
    upstream.always(503, {"error": "Service Unavailable", "details": []})
    assert (await gateway.cancel(RX_CANCEL)).status == 502
    gateway.rewrite(config + SECOND_LAB)
    assert (await _reload(gateway)).status == 200
    refused = await gateway.cancel(RX_CANCEL)
    assert refused.status == 503  # still open: nothing sent
    assert len(upstream.received) == 1


# --- slow clients ----------------------------------------------------------------------------


async def _serve(upstream: Upstream, tmp_path: Path, server: str) -> tuple[asyncio.Event, Any, str]:
    """The gateway through the production serving path, with ``server`` settings."""
    path = tmp_path / "gateway.yaml"
    path.write_text(f"server: {{{server}}}\n" + BASE_CONFIG)
    environ = {"OMS_API_KEY": CALLER_KEY, "UPSTREAM": upstream.url, **CANARIES}
    runtime = load(path, environ)
    listener = Listener(
        create_app(runtime),
        "127.0.0.1",
        0,
        1.0,
        keepalive_timeout_s=runtime.config.server.keepalive_timeout_s,
    )
    stop = asyncio.Event()
    started: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_until_stopped([listener], lambda urls: started.set_result(list(urls)), stop)
    )
    async with asyncio.timeout(5):
        urls = await started
    return stop, task, urls[0]


async def test_trickling_headers_are_cut_off(upstream: Upstream, tmp_path: Path):
    stop, task, url = await _serve(upstream, tmp_path, "keepalive_timeout_s: 0.5")
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    closed = False
    try:
        for chunk in (b"POST /v1/cancellations HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n") * 10:
            writer.write(chunk)
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), timeout=0.2) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
    except ConnectionError:
        closed = True
    finally:
        writer.close()
        stop.set()
        await task
    assert closed
    assert time.monotonic() - started < 2.0


async def test_trickling_body_gets_an_envelope(upstream: Upstream, tmp_path: Path):
    stop, task, url = await _serve(upstream, tmp_path, "body_timeout_s: 0.3")
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /v1/cancellations HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {CALLER_KEY}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"conn'
        )
        await writer.drain()
        async with asyncio.timeout(3):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            body = orjson.loads(await reader.readexactly(length))
    finally:
        writer.close()
        stop.set()
        await task
    assert head.startswith(b"HTTP/1.1 422")
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["message"] == "the request body did not arrive within 0.3 s"


# --- the process: SIGHUP and SIGTERM ---------------------------------------------------------


class Process:
    """`cancel-gateway serve` with a config file, its stdout read as JSON events."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, config: Path, env: dict[str, str]) -> tuple[Process, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", "--config", str(config),
            "--port", str(free_port()),
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        running = cls(process)
        started = await running.wait_for("gateway.started")
        return running, started["urls"][0]

    async def wait_for(self, name: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(20):
            while True:
                line = await self.process.stdout.readline()
                assert line, "the gateway exited"
                event = orjson.loads(line)
                self.events.append(event)
                if event["event"] == name:
                    return event


async def test_sighup_reloads_and_a_bad_file_is_refused(upstream: Upstream, tmp_path: Path):
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE_CONFIG)
    env = {"OMS_API_KEY": CALLER_KEY, "UPSTREAM": upstream.url, **CANARIES}
    running, url = await Process.start(path, env)
    process = running.process
    try:
        first = running.events[-1]["config_version"]
        path.write_text(BASE_CONFIG + SECOND_LAB)
        process.send_signal(signal.SIGHUP)
        reloaded = await running.wait_for("config.reloaded")
        assert reloaded["previous_version"] == first
        assert "rxuniverse-two" in reloaded["connections"]

        path.write_text("callers: [")
        process.send_signal(signal.SIGHUP)
        failed = await running.wait_for("config.reload_failed")
        assert failed["config_version"] == reloaded["config_version"]

        upstream.always(200, RX_OK)
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {CALLER_KEY}"}) as session,
            session.post(
                f"{url}/v1/cancellations", json={"connection": "rxuniverse-two", "id": "1"}
            ) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["X-Config-Version"] == reloaded["config_version"]
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert stderr.decode() == ""


async def test_sigterm_lets_five_slow_cancellations_finish(upstream: Upstream, tmp_path: Path):
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE_CONFIG)
    env = {"OMS_API_KEY": CALLER_KEY, "UPSTREAM": upstream.url, **CANARIES}
    running, url = await Process.start(path, env)
    process = running.process
    upstream.default.delay_s = 1.0
    upstream.default.body = orjson.dumps(RX_OK)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {CALLER_KEY}"}) as session:

        async def cancel(n: int) -> int:
            body = {"connection": "rxuniverse-lab", "id": f"order-{n}"}
            async with session.post(f"{url}/v1/cancellations", json=body) as resp:
                envelope = await resp.json()
                assert envelope["status"] == "cancelled", envelope
                return resp.status

        calls = [asyncio.create_task(cancel(n)) for n in range(5)]
        await upstream.wait_for(5, timeout_s=10)  # all five in flight
        process.send_signal(signal.SIGTERM)
        statuses = await asyncio.gather(*calls)
    async with asyncio.timeout(20):
        stdout, stderr = await process.communicate()
    assert statuses == [200] * 5
    assert process.returncode == 0, stderr.decode()
    assert stderr.decode() == ""  # no warnings, no tracebacks
    events = [orjson.loads(line)["event"] for line in stdout.splitlines() if line.strip()]
    assert events.count("cancellation.completed") == 5
    assert events[-1] == "gateway.stopped"
