"""The benchmark's gateway configurations load, and each turns off exactly what its name says:
a row measured with a config the gateway refuses, or with a feature left on, would report the
wrong cost."""

from pathlib import Path

import pytest

from bench import run
from gateway.loader import load

ENVIRON = {"BENCH_CALLER_KEY": run.CALLER_KEY, "BENCH_STATESET_KEY": run.STATESET_KEY}


@pytest.mark.parametrize("name", sorted(run.GATEWAYS))
def test_each_benchmarked_gateway_config_loads_with_its_features(
    tmp_path: Path, name: str
) -> None:
    gateway = run.GATEWAYS[name]
    runtime = load(run.gateway_config(tmp_path, 9999, gateway), ENVIRON)
    config = runtime.config
    assert config.store.backend == ("sqlite" if gateway.ledger else "memory")
    assert config.logging.level == ("info" if gateway.logs else "warning")
    assert config.logging.access_log is gateway.logs
    assert runtime.targets[run.CONNECTION].name == run.CONNECTION


def test_the_default_row_has_every_default_on() -> None:
    assert run.GATEWAYS["gateway"] == run.Gateway(workers=1, ledger=True, logs=True)
