"""The scenario table: how ids are read, and that its documents list every scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.simulate import SIMULATED
from gateway.simulate.app import PROVIDERS
from gateway.simulate.scenarios import TABLE, markdown_table, match

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize(
    ("object_id", "name", "value"),
    [
        ("notfound-1", "notfound", None),
        ("NOTFOUND", "notfound", None),
        ("slow", "slow", 2000),
        ("slow-50", "slow", 50),
        ("slow-50-order7", "slow", 50),
        ("slow-x", "slow", 2000),
        ("slow-99999999", "slow", 60000),
        ("flaky503", "flaky503", 2),
        ("flaky503x5", "flaky503", 5),
        ("flaky503-1", "flaky503", 2),
        ("ratelimit", "ratelimit", 1),
        ("ratelimit-30", "ratelimit", 30),
        ("ratelimit-always", "ratelimit-always", None),
        ("ratelimit-always-2", "ratelimit-always", None),
        ("received", "received", None),
        ("received409-a", "received409", None),
        ("redirect", "redirect", 302),
        ("redirect-308", "redirect", 308),
        ("redirect-200", "redirect", 302),
        ("lowercase-auth", "lowercase-auth", None),
    ],
)
def test_id_chooses_scenario_and_parameter(object_id: str, name: str, value: int | None) -> None:
    found = match(object_id)
    assert found is not None
    assert (found.name, found.value) == (name, value)


@pytest.mark.parametrize(
    "object_id", ["asn_0901f083", "72544", "SO-DEMO-1", "382451985837728044", "x-notfound", ""]
)
def test_ordinary_ids_play_no_scenario(object_id: str) -> None:
    assert match(object_id) is None


def test_a_name_that_starts_another_comes_after_it() -> None:
    names = [scenario.name for scenario in TABLE]
    for i, earlier in enumerate(names):
        for later in names[i + 1 :]:
            assert not later.startswith(earlier), f"{later} is shadowed by {earlier}"


def test_scenarios_name_only_simulated_providers() -> None:
    for scenario in TABLE:
        assert scenario.providers
        assert set(scenario.providers) <= set(SIMULATED)


def test_provider_outcomes_belong_to_scenarios_for_that_provider() -> None:
    by_name = {scenario.name: scenario for scenario in TABLE}
    for name, provider in PROVIDERS.items():
        for outcome in provider.outcomes:
            assert name in by_name[outcome].providers
            assert not by_name[outcome].fault


def test_readme_holds_the_table() -> None:
    assert markdown_table() in README.read_text()
