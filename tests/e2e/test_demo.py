"""`cancel-gateway demo` and `cancel-gateway simulate` as real processes, used the way the README
tells a newcomer to: read the printed lines, paste them, stop with Ctrl-C."""

from __future__ import annotations

import asyncio
import shlex
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.services import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BANNER_END = "Ctrl-C stops everything."


def _command() -> list[str]:
    """The console script `make demo` runs, from the interpreter's own environment."""
    script = Path(sys.executable).with_name("cancel-gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


@dataclass
class Curl:
    """One printed `curl` line, read the way a shell would."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    @classmethod
    def parse(cls, line: str) -> Curl:
        words = shlex.split(line)
        assert words[0] == "curl", line
        method, url, headers, body = "GET", "", {}, b""
        rest = iter(words[1:])
        for word in rest:
            if word == "-X":
                method = next(rest)
            elif word == "-H":
                name, _, value = next(rest).partition(": ")
                headers[name] = value
            elif word == "-d":
                body = next(rest).encode()
            elif word.startswith("http"):
                url = word
        return cls(method, url, headers, body)


async def start(
    *args: str, until: str, command: Sequence[str] = (), cwd: Path = REPO
) -> tuple[asyncio.subprocess.Process, list[str]]:
    """Start the command (by default the console script of this environment) in ``cwd`` and
    collect its stdout lines up to and including ``until``."""
    process = await asyncio.create_subprocess_exec(
        *(command or _command()), *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        while not lines or until not in lines[-1]:
            line = await process.stdout.readline()
            if not line:
                _, stderr = await process.communicate()
                raise AssertionError(f"exited early:\n{''.join(lines)}\n{stderr.decode()}")
            lines.append(line.decode().rstrip("\n"))
    return process, lines


async def stop(process: asyncio.subprocess.Process, sig: int) -> tuple[str, str]:
    process.send_signal(sig)
    async with asyncio.timeout(20):
        stdout, stderr = await process.communicate()
    return stdout.decode(), stderr.decode()


async def pending_then_final(
    session: aiohttp.ClientSession, gateway_url: str, curl: Curl, auth: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    """Paste ``curl`` (answered 202 pending), then GET its Location until it is final."""
    async with session.request(curl.method, curl.url, headers=curl.headers, data=curl.body) as r:
        assert r.status == 202, await r.text()
        assert (await r.json())["status"] == "pending"
        location = r.headers["Location"]
    async with asyncio.timeout(10):
        while True:
            async with session.get(gateway_url + location, headers=auth) as r:
                final: dict[str, Any] = await r.json()
                if r.status == 200:
                    return location, final
            await asyncio.sleep(0.1)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


async def test_demo_cancels_on_every_provider_and_stops_on_sigint() -> None:
    port = free_port()
    process, banner = await start("demo", "--port", str(port), until=BANNER_END)
    try:
        gateway_url = f"http://127.0.0.1:{port}"
        assert f"  gateway     {gateway_url}" in banner
        key = next(line.split()[-1] for line in banner if line.startswith("  caller key"))
        curls = [Curl.parse(line) for line in banner if line.startswith("curl ")]
        # One per provider, the lost answer a probe settles, an asynchronous one, then a
        # catalog provider's pending answer.
        assert len(curls) == 7
        catalog = curls.pop()
        asynchronous = curls.pop()

        console = next(line.split()[1] for line in banner if line.startswith("  console"))
        assert console == f"{gateway_url}/console"
        envelopes: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session:
            async with session.get(console) as page:
                assert page.status == 200
                assert "console.js" in await page.text()
            for curl in curls:
                assert curl.url == f"{gateway_url}/v1/cancellations"
                assert curl.headers["Authorization"] == f"Bearer {key}"
                async with session.request(
                    curl.method, curl.url, headers=curl.headers, data=curl.body
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    envelopes.append(await resp.json())
            # Pasted a second time, a line shows the provider's "already" answer.
            first = curls[0]
            async with session.request(
                first.method, first.url, headers=first.headers, data=first.body
            ) as resp:
                again = await resp.json()
            assert asynchronous.headers["Prefer"] == "respond-async"
            auth = {"Authorization": f"Bearer {key}"}
            location, settled = await pending_then_final(session, gateway_url, asynchronous, auth)
            async with session.get(f"{gateway_url}{location}/events", headers=auth) as resp:
                events = (await resp.json())["events"]
            _, shopify = await pending_then_final(session, gateway_url, catalog, auth)
    finally:
        stdout, stderr = await stop(process, signal.SIGINT)

    assert process.returncode == 0, stderr
    providers = ["stateset", "shipper", "shoplazza", "rxuniverse", "stateset"]
    assert [e["provider"] for e in envelopes] == providers
    assert {e["status"] for e in envelopes} == {"cancelled"}
    lost = envelopes[-1]
    assert (lost["resource_id"], lost["upstream"]["probes"]) == ("lostanswer-demo", 1)
    assert lost["upstream"]["status"] is None  # the cancel's answer never came
    for envelope in envelopes:
        assert envelope["upstream"]["url"].startswith("http://127.0.0.1:")
        assert envelope["upstream"]["attempts"] == 1
        assert envelope["cancelled_at"]
    assert (again["status"], again["provider"]) == ("already_cancelled", "stateset")
    assert (settled["status"], settled["provider"]) == ("cancelled", "shipper")
    assert [e["status"] for e in events if e["type"] == "attempt"] == [503, 503, 200]
    assert (shopify["status"], shopify["provider"], shopify["upstream"]["probes"]) == (
        "cancelled",
        "shopify",
        1,
    )

    assert stdout.strip().splitlines()[-1] == "demo stopped"
    # The logs went to stderr, one JSON object per line, so stdout stays readable.
    completed = [e for e in _json_lines(stderr) if e["event"] == "cancellation.completed"]
    expected = ["cancelled"] * 5 + ["already_cancelled", "pending", "pending"]
    assert [e["status"] for e in completed] == expected
    assert len({e["request_id"] for e in completed}) == 8
    settled_lines = [e for e in _json_lines(stderr) if e["event"] == "cancellation.settled"]
    assert [e["status"] for e in settled_lines] == ["cancelled", "cancelled"]


async def test_demo_on_a_taken_port_says_so_and_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, stderr = await _run("demo", "--port", str(port))
    assert code == 1
    message = stderr.strip()
    assert message == (
        f"cannot listen on 127.0.0.1:{port}: address already in use (choose another with --port)"
    )


async def test_demo_serves_the_simulators_on_the_given_port_and_logs_start_and_stop() -> None:
    port, simulators_port = free_port(), free_port()
    process, banner = await start(
        "demo", "--port", str(port), "--simulators-port", str(simulators_port), until=BANNER_END
    )
    try:
        assert f"  simulators  http://127.0.0.1:{simulators_port}" in banner
        url = f"http://127.0.0.1:{simulators_port}/rxuniverse/api/v2/orders/72544"
        headers = {"x-api-key": "sim-rxuniverse-key"}
        async with aiohttp.ClientSession() as session, session.delete(url, headers=headers) as resp:
            assert resp.status == 200
    finally:
        _, stderr = await stop(process, signal.SIGTERM)
    assert process.returncode == 0, stderr

    # The same two lines as `serve` logs, so a reader of either log finds the gateway's start.
    events = {e["event"]: e for e in _json_lines(stderr)}
    started, stopped = events["gateway.started"], events["gateway.stopped"]
    assert started["urls"] == [f"http://127.0.0.1:{port}"]
    assert started["connections"] == [
        "amazon-mcf-demo", "bigcommerce-demo", "magento-demo", "rxuniverse-demo",
        "shipengine-demo", "shipper-demo", "shopee-demo", "shopify-demo", "shoplazza-demo",
        "stateset-demo", "walmart-demo", "woocommerce-demo",
    ]  # fmt: skip
    assert started["config"].endswith("demo.yaml")
    assert started["pid"] == stopped["pid"] == process.pid
    assert started["config_version"]
    assert stopped["config_version"] == started["config_version"]


async def test_demo_on_a_taken_simulators_port_names_that_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, stderr = await _run(
            "demo", "--port", str(free_port()), "--simulators-port", str(port)
        )
    assert code == 1
    assert stderr.strip() == (
        f"cannot listen on 127.0.0.1:{port}: address already in use "
        "(choose another with --simulators-port)"
    )


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("demo", "--port"),
        ("demo", "--simulators-port"),
        ("serve", "--port"),
        ("simulate", "--port"),
    ],
)
@pytest.mark.parametrize("value", ["70000", "http"])
async def test_a_port_out_of_range_is_refused(command: str, flag: str, value: str) -> None:
    """A port past 65535 is refused, not quietly taken modulo 65536."""
    code, stdout, stderr = await _run(command, flag, value)
    assert (code, stdout) == (2, "")
    assert f"argument {flag}: {value!r} is not a port (0 to 65535)" in stderr
    assert "Traceback" not in stderr


async def _run(*args: str) -> tuple[int, str, str]:
    """Run the command to its end: its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        *_command(), *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(20):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:  # still serving: it did not refuse what it was given
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_simulate_serves_the_providers_until_sigterm() -> None:
    port = free_port()
    process, lines = await start(
        "simulate", "--port", str(port), until='"event":"simulator.started"'
    )
    try:
        started = orjson.loads(lines[-1])
        assert started["urls"] == [f"http://127.0.0.1:{port}"]
        assert started["providers"] == [
            "stateset", "shipper", "shoplazza", "rxuniverse",  # their own emulations
            "amazon_mcf", "bigcommerce", "magento", "shipengine", "shopee", "shopify",
            "walmart", "woocommerce",  # the catalog, from their examples
        ]  # fmt: skip
        url = f"http://127.0.0.1:{port}/rxuniverse/api/v2/orders/72544"
        async with aiohttp.ClientSession(headers={"x-api-key": "sim-rxuniverse-key"}) as session:
            async with session.delete(url) as resp:
                assert resp.status == 200
                assert (await resp.json())["orderNumber"] == "72544"
            async with session.delete(url) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"] == "Order already completed"
    finally:
        stdout, stderr = await stop(process, signal.SIGTERM)
    assert process.returncode == 0, stderr
    assert _json_lines(stdout)[-1]["event"] == "simulator.stopped"
