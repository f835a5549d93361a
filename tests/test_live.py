"""LiveConfig without a server: a reload swaps the configuration whole or not at all, warns
about what needs a restart, keeps the guards of connections it leaves alone, and names the
version served in the build information."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway import __version__
from gateway.live import Live, LiveConfig
from gateway.loader import load
from gateway.problems import ConfigError
from tests.conftest import BASE_CONFIG
from tests.fakes import (
    ENV,
    Kit,
    as_body,
    make_kit,
    request_info,
    response,
    with_settings,
    write_config,
)

RX_CANCEL = {"connection": "rxuniverse-lab", "id": "72544"}
RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
RX_503 = {"error": "Service Unavailable"}
WMS_KEY = "wms-caller-key-0123456789"
WITH_WMS = BASE_CONFIG.replace(
    "callers:\n", f'callers:\n  - name: wms\n    key: {WMS_KEY}\n    connections: ["*"]\n', 1
)
# rxuniverse-lab's breaker opens at its first failure, and it is not repeated.
FRAGILE = with_settings("rxuniverse-lab", "retry: {max_attempts: 1}\nbreaker: {failures: 1}")


def live_config(kit: Kit) -> LiveConfig:
    """Served from the kit's file, which a test rewrites before reloading."""
    return LiveConfig(kit.runtime, kit.services, functools.partial(load, kit.runtime.path, ENV))


async def cancel(live: Live, body: Any, caller: str = "oms") -> dict[str, Any]:
    found = live.callers.named(caller)
    assert found is not None
    reply = await live.canceller.cancel(found, as_body(body), request_info())
    result: dict[str, Any] = orjson.loads(reply.body)
    return result


def build_info(kit: Kit, config_version: str) -> float | None:
    return kit.services.metrics.registry.get_sample_value(
        "cancel_gateway_build_info", {"version": __version__, "config_version": config_version}
    )


async def test_a_reload_serves_the_new_configuration_whole(tmp_path: Path):
    kit = make_kit(tmp_path)
    config = live_config(kit)
    old = config.current
    write_config(tmp_path, WITH_WMS)
    new = await config.reload()
    assert config.current is new
    assert new.version != old.version
    assert new.callers.named("wms") is not None  # the callers of the new file...
    assert old.callers.named("wms") is None  # ...and the old Live unchanged for its requests
    assert new.canceller is not old.canceller
    [reloaded] = kit.events("config.reloaded")
    assert (reloaded["config_version"], reloaded["previous_version"]) == (new.version, old.version)
    assert reloaded["connections"] == sorted(new.runtime.targets)


async def test_a_request_in_flight_finishes_on_the_configuration_it_started_with(tmp_path: Path):
    kit = make_kit(tmp_path)
    config = live_config(kit)
    arrived, release = kit.transport.hold(response(200, RX_OK))
    in_flight = asyncio.create_task(cancel(config.current, RX_CANCEL))
    await arrived.wait()
    head = BASE_CONFIG.partition("  rxuniverse-lab:\n")[0]  # the last connection
    write_config(tmp_path, head)
    await config.reload()
    release.set()
    assert (await in_flight)["status"] == "cancelled"
    refused = await cancel(config.current, RX_CANCEL)
    assert refused["error"]["code"] == "unknown_connection"


async def test_a_configuration_that_fails_to_load_leaves_the_old_one_serving(tmp_path: Path):
    kit = make_kit(tmp_path)
    config = live_config(kit)
    old = config.current
    write_config(tmp_path, BASE_CONFIG + "  broken:\n    provider: nobody\n")
    with pytest.raises(ConfigError) as refused:
        await config.reload()
    assert any("nobody" in str(p) for p in refused.value.problems)
    assert config.current is old
    [failed] = kit.events("config.reload_failed")
    assert failed["config_version"] == old.version
    assert failed["problems"]
    assert kit.events("config.reloaded") == []


async def test_without_a_file_there_is_nothing_to_reload(tmp_path: Path):
    kit = make_kit(tmp_path)
    config = LiveConfig(kit.runtime, kit.services)
    with pytest.raises(ConfigError, match="not started from a file"):
        await config.reload()


@pytest.mark.parametrize(
    ("section", "yaml"),
    [
        ("server", "server: {port: 9999}\n"),
        ("logging", "logging: {level: debug}\n"),
        ("tracing", "tracing: {service_name: another}\n"),
        ("store", "store: {backend: memory}\n"),
    ],
)
async def test_a_change_to_a_restart_only_section_warns(tmp_path: Path, section: str, yaml: str):
    kit = make_kit(tmp_path)
    config = live_config(kit)
    write_config(tmp_path, yaml + BASE_CONFIG)
    new = await config.reload()
    [warning] = kit.events("config.restart_needed")
    assert warning["sections"] == [section]
    assert warning["config_version"] == new.version
    assert warning["level"] == "warning"


async def test_a_change_to_connections_alone_needs_no_restart(tmp_path: Path):
    kit = make_kit(tmp_path)
    config = live_config(kit)
    write_config(tmp_path, with_settings("shipper-main", "timeout_s: 3"))
    await config.reload()
    assert kit.events("config.restart_needed") == []


async def test_an_open_breaker_survives_a_reload_that_leaves_its_connection_alone(
    tmp_path: Path,
):
    kit = make_kit(tmp_path, FRAGILE)
    config = live_config(kit)
    kit.transport.answer(response(503, RX_503))
    assert (await cancel(config.current, RX_CANCEL))["error"]["code"] == "provider_error"
    write_config(tmp_path, with_settings("shipper-main", "timeout_s: 3", FRAGILE))
    await config.reload()
    refused = await cancel(config.current, RX_CANCEL)
    assert refused["error"]["code"] == "provider_unavailable"  # still open, nothing sent
    assert len(kit.transport.sent) == 1


async def test_a_reload_that_changes_a_connection_gives_it_new_guards(tmp_path: Path):
    kit = make_kit(tmp_path, FRAGILE)
    config = live_config(kit)
    kit.transport.answer(response(503, RX_503), response(200, RX_OK))
    await cancel(config.current, RX_CANCEL)
    write_config(tmp_path, with_settings("rxuniverse-lab", "timeout_s: 3", FRAGILE))
    await config.reload()
    assert (await cancel(config.current, RX_CANCEL))["status"] == "cancelled"
    assert len(kit.transport.sent) == 2


async def test_build_info_names_the_configuration_served(tmp_path: Path):
    kit = make_kit(tmp_path)
    config = live_config(kit)
    first = config.current.version
    assert build_info(kit, first) == 1
    write_config(tmp_path, WITH_WMS)
    second = (await config.reload()).version
    assert build_info(kit, second) == 1
    assert build_info(kit, first) is None  # a version no longer served is not shown
    write_config(tmp_path, "callers: []\n")
    with pytest.raises(ConfigError):
        await config.reload()
    assert build_info(kit, second) == 1


async def test_a_reloaded_credential_is_redacted_from_answers_and_logs(tmp_path: Path):
    kit = make_kit(tmp_path)
    config = live_config(kit)
    fresh = "rx-rotated-credential-5e7a"
    rotated = BASE_CONFIG.replace("${RXUNIVERSE_API_KEY}", fresh)
    write_config(tmp_path, rotated)
    await config.reload()
    kit.transport.answer(response(400, {"error": f"bad key {fresh}"}))
    answer = await cancel(config.current, RX_CANCEL)
    assert kit.transport.sent[0].header("x-api-key") == fresh  # it was really sent
    assert fresh not in orjson.dumps(answer).decode()
    assert "[REDACTED]" in answer["error"]["message"]
    assert fresh not in kit.stream.getvalue()
