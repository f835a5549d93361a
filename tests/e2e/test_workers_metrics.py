"""`cancel-gateway serve --workers 2` as a real process: whichever worker answers a scrape, the
metrics add up every worker's samples (prometheus-client's multiprocess files)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from tests.conftest import CALLER_KEY, CANARIES, Upstream
from tests.services import free_port

pytestmark = pytest.mark.e2e

RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
CONFIG = """\
store: {backend: memory}
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  rxuniverse-lab:
    provider: rxuniverse
    base_url: ${UPSTREAM}/rxuniverse
    credentials:
      api_key: ${RXUNIVERSE_API_KEY}
    timeout_s: 5
"""
CANCELLED = {
    "connection": "rxuniverse-lab",
    "provider": "rxuniverse",
    "status": "cancelled",
    "error_code": "",
}


def cancelled_in(text: str) -> float:
    """The cancelled count of rxuniverse-lab in a scrape (0 without the sample)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cancel_gateway_cancellations_total" and sample.labels == CANCELLED:
                return sample.value
    return 0.0


def per_worker(folder: Path, pids: list[int], scratch: Path) -> dict[int, float]:
    """Each worker's own count, read from its own files only."""
    counts = {}
    for pid in pids:
        mine = scratch / str(pid)
        shutil.rmtree(mine, ignore_errors=True)
        mine.mkdir(parents=True)
        for file in folder.glob(f"*_{pid}.db"):
            shutil.copy(file, mine / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(mine))
        counts[pid] = cancelled_in(generate_latest(registry).decode())
    return counts


def workers_env(upstream: Upstream, temp: Path) -> dict[str, str]:
    """The environment of a `serve --workers 2` whose parent makes its metrics folder in
    ``temp`` (PROMETHEUS_MULTIPROC_DIR unset, as most deployments leave it)."""
    return {
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        "TMPDIR": str(temp),
        "OMS_API_KEY": CALLER_KEY,
        "UPSTREAM": upstream.url,
        **CANARIES,
    }


async def stop(process: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    """SIGTERM, then what the process wrote until it exited."""
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        return await process.communicate()


async def kill(process: asyncio.subprocess.Process) -> None:
    """The process and its workers gone, whatever state a failed test left them in."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


async def serve_two_workers(
    config: Path, env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, list[int], str]:
    """`serve --workers 2` in its own process group (so its workers die with it on failure):
    the process, the workers' pids and the URL, once both have logged gateway.started."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(config),
        "--host", "127.0.0.1", "--port", str(free_port()), "--workers", "2",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    pids: list[int] = []
    url = ""
    try:
        async with asyncio.timeout(20):
            while len(pids) < 2:
                line = await process.stdout.readline()
                if not line:
                    stderr = await process.stderr.read() if process.stderr else b""
                    raise AssertionError(f"exited before both workers started: {stderr!r}")
                event = orjson.loads(line)
                if event["event"] == "gateway.started":
                    pids.append(event["pid"])
                    url = event["urls"][0]
    except BaseException:
        await kill(process)
        raise
    return process, pids, url


async def test_two_workers_scrape_the_sum_of_both(upstream: Upstream, tmp_path: Path):
    """With --workers 2, every scrape (on a new connection each time, so either worker may
    answer) counts every cancellation of both workers; SIGTERM → exit 0, metrics files gone."""
    upstream.always(200, RX_OK)
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    temp = tmp_path / "tmp"  # where the parent makes its metrics folder
    temp.mkdir()
    env = workers_env(upstream, temp)
    process, pids, url = await serve_two_workers(config, env)
    try:
        [folder] = list(temp.glob("cancel-gateway-metrics-*"))

        # A new connection per request, so the kernel spreads them over both workers.
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=10),
        ) as session:
            sent = 0

            async def cancel() -> None:
                nonlocal sent
                body = {"connection": "rxuniverse-lab", "id": f"order-{sent}"}
                headers = {"Authorization": f"Bearer {CALLER_KEY}"}
                async with session.post(
                    f"{url}/v1/cancellations", json=body, headers=headers
                ) as resp:
                    assert resp.status == 200, await resp.text()
                sent += 1

            for _ in range(10):
                await cancel()
            # Both workers must have answered some, or the sum proves nothing: a few more
            # until they have (each lands on either worker by chance).
            while min(per_worker(folder, pids, tmp_path / "split").values()) == 0:
                assert sent < 40, "one worker never answered"
                await cancel()
            split = per_worker(folder, pids, tmp_path / "split")
            assert sum(split.values()) == sent
            assert len(upstream.received) == sent

            for _ in range(8):
                async with session.get(f"{url}/metrics") as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Type"].startswith("text/plain")
                    assert cancelled_in(await resp.text()) == sent

        stdout, stderr = await stop(process)
    finally:
        await kill(process)
    assert process.returncode == 0, stderr.decode()
    assert stderr.decode() == ""
    events = [orjson.loads(line)["event"] for line in stdout.splitlines() if line.strip()]
    assert events.count("gateway.stopped") == 2
    assert not folder.exists()  # the parent's temporary folder is removed


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Each sample of a scrape, by sample name: its labels and value."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


async def test_process_metrics_are_each_workers_and_build_info_follows_a_reload(
    upstream: Upstream, tmp_path: Path
):
    """With --workers 2, whichever worker answers: process_* samples for each worker, by pid,
    one python_info, and cancel_gateway_build_info naming the configuration served; after a
    SIGHUP that both workers reload, only the new version."""
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    env = workers_env(upstream, tmp_path)
    process, pids, url = await serve_two_workers(config, env)
    assert process.stdout is not None
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),  # either worker may answer
            timeout=aiohttp.ClientTimeout(total=10),
        ) as session:

            async def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
                async with session.get(f"{url}/metrics") as resp:
                    assert resp.status == 200
                    return families(await resp.text())

            async with session.get(f"{url}/readyz") as resp:
                old = resp.headers["X-Config-Version"]
            for _ in range(4):
                found = await scrape()
                cpu = found["process_cpu_seconds_total"]
                assert {labels["pid"] for labels, _ in cpu} == {str(pid) for pid in pids}
                assert all(v > 0 for _, v in cpu)
                for labels, started in found["process_start_time_seconds"]:
                    assert 0 < time.time() - started < 120, labels
                assert all(v > 1_000_000 for _, v in found["process_resident_memory_bytes"])
                assert len(found["python_info"]) == 1
                info = found["cancel_gateway_build_info"]
                assert info == [({"version": __version__, "config_version": old}, 1.0)]

            config.write_text(CONFIG.replace("timeout_s: 5", "timeout_s: 6"))
            process.send_signal(signal.SIGHUP)
            reloaded: list[str] = []
            async with asyncio.timeout(20):
                while len(reloaded) < 2:
                    event = orjson.loads(await process.stdout.readline())
                    if event["event"] == "config.reloaded":
                        reloaded.append(event["config_version"])
            [new] = set(reloaded)
            assert new != old
            for _ in range(4):
                info = (await scrape())["cancel_gateway_build_info"]
                assert info == [({"version": __version__, "config_version": new}, 1.0)]
        await stop(process)
    finally:
        await kill(process)
    assert process.returncode == 0


async def test_a_given_metrics_folder_is_wiped_of_a_previous_run(
    upstream: Upstream, tmp_path: Path
):
    """PROMETHEUS_MULTIPROC_DIR given: the last run's sample files go at start (a broken one
    would fail every scrape), the folder itself stays."""
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"left by a previous run")
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        "OMS_API_KEY": CALLER_KEY,
        "UPSTREAM": upstream.url,
        **CANARIES,
    }
    process, _, url = await serve_two_workers(config, env)
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            assert "cancel_gateway_idempotent_replays_total 0.0" in await resp.text()
        assert not (folder / "counter_1.db").exists()
        await stop(process)
    finally:
        await kill(process)
    assert process.returncode == 0
    assert folder.is_dir()
