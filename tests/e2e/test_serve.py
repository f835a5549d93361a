"""`cancel-gateway serve` as a real process with the example config: one cancellation per
provider, JSON logs on stdout, a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import CALLER_KEY, CANARIES, Upstream
from tests.services import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "gateway.yaml"


async def _start(
    env: dict[str, str], *extra: str, port: int = 0, workers: int = 1
) -> tuple[asyncio.subprocess.Process, str]:
    """Start `cancel-gateway serve` and wait until each worker has logged gateway.started."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(EXAMPLE),
        "--port", str(port), *extra,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    started: list[str] = []
    async with asyncio.timeout(20):
        while len(started) < workers:
            line = await process.stdout.readline()
            assert line, (await process.stderr.read()).decode() if process.stderr else "no output"
            event = orjson.loads(line)
            if event["event"] == "gateway.started":
                started.append(event["urls"][0])
    return process, started[0]


def _env(upstream: Upstream, folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GATEWAY_DB": str(folder / "ledger.db"),
        "OMS_API_KEY": CALLER_KEY,
        "STATESET_BASE_URL": f"{upstream.url}/stateset",
        "STATESET_API_KEY": CANARIES["STATESET_API_KEY"],
        "SHIPPER_BASE_URL": f"{upstream.url}/shipper",
        "SHIPPER_API_KEY": CANARIES["SHIPPER_API_KEY"],
        "SHOPLAZZA_BASE_URL": f"{upstream.url}/shoplazza/{{params.shop_domain}}",
        "SHOPLAZZA_ACCESS_TOKEN": CANARIES["SHOPLAZZA_ACCESS_TOKEN"],
        "SHOPLAZZA_SHOP_DOMAIN": "demo-shop",
        "RXUNIVERSE_BASE_URL": f"{upstream.url}/rxuniverse",
    }


async def test_example_config_serves_every_provider(upstream: Upstream, tmp_path: Path):
    """With its variables set, the example config cancels on all four providers."""
    env = _env(upstream, tmp_path)
    upstream.answer(200, {"status": "cancelled", "cancelled_at": "2024-01-16T10:30:00Z"})
    upstream.answer(200, {"metadata": {"http_status_code": 200}})
    upstream.answer(200, {"procurement": {"state": 4, "updated_at": "2024-05-21T09:59:29Z"}})
    upstream.answer(200, {"orderNumber": "72544"})
    process, url = await _start(env)
    try:
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {CALLER_KEY}"}
        ) as session:
            for request in [
                {"connection": "stateset-main", "id": "asn_1", "reason": "r"},
                {"connection": "shipper-main", "id": "SO-1", "reason": "r"},
                {"connection": "shoplazza-main", "id": "382451985837728044"},
                {"connection": "rxuniverse-lab", "id": "72544"},
            ]:
                async with session.post(f"{url}/v1/cancellations", json=request) as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
                    assert body["status"] == "cancelled"
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert stderr.decode() == ""  # no warnings, no tracebacks
    assert [r.raw_path for r in upstream.received] == [
        "/stateset/v1/asns/asn_1/cancel",
        "/shipper/v3/fulfillment/outbound/oms/cancel",
        "/shoplazza/demo-shop/openapi/2022-01/procurements/382451985837728044/cancel",
        "/rxuniverse/api/v2/orders/72544",
    ]
    lines = [orjson.loads(line) for line in stdout.splitlines() if line.strip()]
    assert lines[-1]["event"] == "gateway.stopped"
    assert sum(1 for line in lines if line["event"] == "cancellation.completed") == 4
    for secret in [*CANARIES.values(), CALLER_KEY]:
        assert secret.encode() not in stdout


async def test_two_workers_share_a_port_and_stop_cleanly(upstream: Upstream, tmp_path: Path):
    """--workers 2: both processes serve one port; SIGTERM to the parent stops both, exit 0."""
    port = free_port()
    process, url = await _start(_env(upstream, tmp_path), "--workers", "2", port=port, workers=2)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(6):
                async with session.get(f"{url}/healthz") as resp:
                    assert resp.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    events = [orjson.loads(line)["event"] for line in stdout.splitlines() if line.strip()]
    assert events.count("gateway.stopped") == 2


async def _raw(url: str, request: bytes) -> bytes:
    """Send bytes no HTTP client would, and read the whole answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize("key", [CALLER_KEY, "not-a-configured-key-0123456789"])
async def test_malformed_http_is_an_envelope_and_the_key_is_never_echoed(
    upstream: Upstream, tmp_path: Path, key: str
):
    """A header aiohttp cannot parse: a 400 envelope that quotes nothing, with its request id
    in X-Request-ID, and one warning on stdout with that id and the header's value masked,
    known key or not; nothing on stderr."""
    process, url = await _start(_env(upstream, tmp_path))
    try:
        answer = await _raw(
            url,
            b"POST /v1/cancellations HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {key}\x01\r\n".encode()
            + b"Content-Length: 2\r\n\r\n{}",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            stdout, stderr = await process.communicate()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") or head.startswith(b"HTTP/1.0 400")
    assert b"application/json" in head
    envelope = orjson.loads(body)
    assert envelope["status"] == "rejected"
    assert envelope["error"]["code"] == "invalid_request"
    assert f"X-Request-ID: {envelope['request_id']}".encode() in head
    assert key.encode() not in answer
    assert stderr.decode() == ""
    lines = [orjson.loads(line) for line in stdout.splitlines() if line.strip()]
    [unparsed] = [line for line in lines if line.get("request_id") == envelope["request_id"]]
    assert (unparsed["event"], unparsed["level"]) == ("request.unparsed", "warning")
    assert "Authorization: [REDACTED]" in unparsed["reason"]
    assert not [line for line in lines if line["level"] == "error"]
    assert key.encode() not in stdout
    assert process.returncode == 0


async def test_sigint_stops_serve_like_sigterm(upstream: Upstream, tmp_path: Path):
    """Ctrl-C on `serve`: a clean stop, exit 0, gateway.stopped last, nothing on stderr."""
    process, url = await _start(_env(upstream, tmp_path))
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as resp:
        assert resp.status == 200
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(15):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert stderr.decode() == ""
    assert orjson.loads(stdout.splitlines()[-1])["event"] == "gateway.stopped"


async def test_the_listen_backlog_is_the_configured_one(upstream: Upstream, tmp_path: Path):
    """server.backlog reaches the listening socket (ss shows a listener's backlog as Send-Q),
    instead of aiohttp's 128, which drops the connection attempts of a burst."""
    config = tmp_path / "gateway.yaml"
    config.write_text(EXAMPLE.read_text() + "\n")
    text = config.read_text().replace("server:\n", "server:\n  backlog: 777\n", 1)
    config.write_text(text)
    port = free_port()
    process, _ = await _start(_env(upstream, tmp_path), "--config", str(config), port=port)
    try:
        listed = await asyncio.create_subprocess_exec(
            "ss", "-ltnH", f"sport = :{port}", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await listed.communicate()
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await process.communicate()
    [line] = out.decode().splitlines()
    assert line.split()[2] == "777"  # State Recv-Q Send-Q Local Peer: Send-Q is the backlog


async def test_a_stdout_nobody_reads_never_stops_the_gateway(upstream: Upstream, tmp_path: Path):
    """The pipe fills (64 KiB, some 200 access lines) and stays full: answers keep coming,
    and once the pipe is read again every line is there, in order."""
    port = free_port()
    # A plain pipe nobody reads: asyncio's subprocess would read it in the background.
    process = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "gateway", "serve", "--config", str(EXAMPLE), "--port", str(port)],
        env=_env(upstream, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        first = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20)
        assert orjson.loads(first)["event"] == "gateway.started"
        count = 600  # about 180 KiB of access lines, nobody reading
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for n in range(count):
                async with session.get(f"http://127.0.0.1:{port}/healthz?n={n}") as resp:
                    assert resp.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(asyncio.to_thread(process.communicate), 20)
    assert process.returncode == 0, stderr.decode()
    lines = [orjson.loads(line) for line in stdout.splitlines()]
    queries = [line["query"] for line in lines if line["event"] == "http.request"]
    assert queries == [f"n={n}" for n in range(count)]
    assert lines[-1]["event"] == "gateway.stopped"


def test_a_served_process_collects_garbage_less_often_and_freezes_what_it_loaded():
    """``run`` (every command that serves) raises the collector's thresholds and freezes the
    objects that exist before serving; checked in a process of its own, as both are global."""
    code = (
        "import gc\n"
        "from gateway.serve import GC_THRESHOLDS, run\n"
        "async def main():\n"
        "    print(gc.get_threshold() == GC_THRESHOLDS, gc.get_freeze_count() > 1000)\n"
        "run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.split() == ["True", "True"]
