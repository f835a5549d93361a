"""The benchmark's gateway configurations load, and each turns off exactly what its name says:
a row measured with a config the gateway refuses, or with a feature left on, would report the
wrong cost."""

from pathlib import Path

import pytest

from bench import run
from gateway.loader import load

ENVIRON = {"BENCH_CALLER_KEY": run.CALLER_KEY, "BENCH_STATESET_KEY": run.STATESET_KEY}


@pytest.mark.parametrize("name", sorted(run.GATEWAYS))
def test_each_benchmarked_gateway_config_loads_with_its_features(tmp_path: Path, name: str) -> None:
    gateway = run.GATEWAYS[name]
    runtime = load(run.gateway_config(tmp_path, 9999, gateway), ENVIRON)
    config = runtime.config
    assert config.store.backend == "sqlite"
    assert config.logging.level == ("info" if gateway.logs else "warning")
    assert config.logging.access_log is gateway.logs
    assert runtime.targets[run.CONNECTION].name == run.CONNECTION


def test_the_default_row_has_every_default_on() -> None:
    assert run.GATEWAYS["gateway"] == run.Gateway(workers=1, logs=True)


def _round(
    requests: int, seconds: float, cpu_ms: float, p50_ms: float, **more: object
) -> run.Result:
    fields: dict[str, object] = {
        "scenario": run.SCENARIOS[0],
        "target": "gateway",
        "requests": requests,
        "seconds": seconds,
        "rps": requests / seconds,
        "p50_ms": p50_ms,
        "p99_ms": p50_ms * 3,
        "mean_ms": p50_ms,
        "non_2xx": 0,
        "socket_errors": 0,
        "socket_error_kinds": "",
        "rss_mib": 60.0,
        "cpu_ms_per_request": cpu_ms / requests,
        "system_share": 0.1,
        "processes": 1,
    }
    return run.Result(**{**fields, **more})  # type: ignore[arg-type]


def test_rounds_add_up_requests_time_and_cpu_and_take_the_median_latency() -> None:
    rounds = [
        _round(1000, 2.0, 400.0, 10.0, rss_mib=60.0),
        _round(3000, 2.0, 900.0, 30.0, rss_mib=70.0, non_2xx=2),
        _round(2000, 2.0, 700.0, 20.0, rss_mib=65.0),
    ]
    row = run.combined(rounds)
    assert (row.requests, row.seconds, row.rps) == (6000, 6.0, 1000.0)
    assert row.cpu_ms_per_request == 2000.0 / 6000  # not the mean of the rounds' ratios
    assert (row.p50_ms, row.p99_ms) == (20.0, 60.0)
    assert (row.rss_mib, row.non_2xx, row.rounds) == (70.0, 2, 3)


def test_rounds_add_up_socket_errors_by_kind() -> None:
    rounds = [
        _round(100, 1.0, 10.0, 1.0, socket_errors=3, socket_error_kinds="connect 1, timeout 2"),
        _round(100, 1.0, 10.0, 1.0, socket_errors=4, socket_error_kinds="timeout 4"),
    ]
    row = run.combined(rounds)
    assert row.socket_errors == 7
    assert row.socket_error_kinds == "connect 1, timeout 6"


def test_one_round_is_the_row_itself() -> None:
    only = _round(500, 5.0, 100.0, 4.0, note="5 lines per answer")
    assert run.combined([only]) == only
