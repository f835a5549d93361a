"""Prometheus's own linter on real scrapes: `promtool check metrics` finds nothing to say about
the metrics of a running gateway, one process or several workers.

promtool comes with Debian's `prometheus` package (`.ci/run` installs it). Outside CI a machine
without it skips these tests, saying so; with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import BASE_CONFIG, CALLER_KEY, GatewayFactory, Upstream
from tests.e2e.test_workers_metrics import CONFIG, kill, serve_two_workers, stop, workers_env

pytestmark = pytest.mark.e2e

RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
LAB = "  rxuniverse-lab:\n"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; .ci/run installs it")
        pytest.skip(message)
    return found


async def lint(text: str) -> str:
    """What `promtool check metrics` says of a scrape: empty when it finds nothing."""
    checked = await asyncio.create_subprocess_exec(
        promtool(), "check", "metrics",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        said, _ = await checked.communicate(text.encode())
    assert checked.returncode == 0, said.decode()
    return said.decode()


async def test_a_scrape_of_every_kind_of_sample_passes_promtool(
    make_gateway: GatewayFactory, upstream: Upstream
):
    """After cancellations that touch every metric of the gateway (a success, a replay, a
    retried 503, an unmapped error, an open breaker, a local rate limit, a timing), promtool
    finds nothing to report; the scrape holds no `_created` series."""
    promtool()
    config = BASE_CONFIG.replace(
        LAB,
        LAB + "    retry: {max_attempts: 2, backoff_base_s: 0.01}\n"
        "    breaker: {failures: 2, open_s: 60}\n",
        1,
    ).replace(
        "  shipper-main:\n",
        "  shipper-main:\n    limits: {rate_per_s: 0.001, burst: 1, max_wait_s: 0}\n",
        1,
    )
    gateway = await make_gateway(config, upstream_url=upstream.url)
    upstream.answer(200, RX_OK)
    rx = {"connection": "rxuniverse-lab", "id": "72544"}
    replayed = {"Idempotency-Key": "lint-1"}
    assert (await gateway.cancel(rx, headers=replayed)).status == 200
    assert (await gateway.cancel(rx, headers=replayed)).headers["Idempotent-Replayed"] == "true"
    upstream.always(503, {"error": "Service Unavailable"})
    assert (await gateway.cancel({**rx, "id": "2"})).status == 502
    assert (await gateway.cancel({**rx, "id": "3"})).body["error"]["code"] == "provider_unavailable"
    upstream.always(418, {"error": "teapot"})
    shipper = {"connection": "shipper-main", "id": "SO-1", "reason": "r"}
    await gateway.cancel(shipper)
    limited = await gateway.cancel({**shipper, "id": "SO-2"})
    assert limited.body["error"]["code"] == "rate_limited"
    assert (await gateway.request("GET", "/nowhere", key=None)).status == 404

    async with gateway.session.get(gateway.url + "/metrics") as resp:
        text = await resp.text()
    for name in (
        "cancel_gateway_upstream_retries_total{",
        "cancel_gateway_upstream_refusals_total{",
        "cancel_gateway_unmapped_errors_total{",
        "cancel_gateway_http_request_duration_seconds_bucket{",
        "cancel_gateway_build_info{",
        "process_cpu_seconds_total ",
        "python_info{",
    ):
        assert name in text
    assert "_created" not in text
    assert await lint(text) == ""


async def test_a_scrape_of_two_workers_passes_promtool(upstream: Upstream, tmp_path: Path):
    """The sum of two workers' samples and their process metrics: nothing to report."""
    promtool()
    upstream.always(200, RX_OK)
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    process, _, url = await serve_two_workers(config, workers_env(upstream, tmp_path))
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=10),
            headers={"Authorization": f"Bearer {CALLER_KEY}"},
        ) as session:
            for n in range(4):
                body = {"connection": "rxuniverse-lab", "id": str(n)}
                async with session.post(f"{url}/v1/cancellations", json=body) as resp:
                    assert resp.status == 200
            async with session.get(f"{url}/metrics") as resp:
                text = await resp.text()
        assert 'process_cpu_seconds_total{pid="' in text
        assert "cancel_gateway_http_request_duration_seconds_bucket{" in text
        assert await lint(text) == ""
        await stop(process)
    finally:
        await kill(process)
