"""A definition proves itself: its examples run at load (check-config refuses one that fails)
and in `cancel-gateway test-provider`; a rule no example exercises is a warning."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.definition import ProviderDefinition
from gateway.examples import RequestExample
from gateway.prove import prove
from tests.conftest import CALLER_KEY

FIXTURE = Path(__file__).parent / "e2e" / "fixtures" / "acme-freight.yaml"
CONFIG = """
providers: [acme.yaml]
callers:
  - {name: oms, key: "${OMS_API_KEY}", connections: ["*"]}
connections:
  acme: {provider: acme-freight, credentials: {token: acme-token-not-real}}
"""


def acme(change: str = "", to: str = "") -> dict[str, object]:
    text = FIXTURE.read_text()
    assert not change or change in text
    loaded: dict[str, object] = yaml.safe_load(text.replace(change, to))
    return loaded


def test_the_fixtures_examples_all_pass_and_exercise_every_rule() -> None:
    checked, warnings = prove(ProviderDefinition.model_validate(acme()))
    assert len(checked) == 6
    assert all(c.ok for c in checked)
    assert warnings == []


def test_a_path_that_points_nowhere_is_caught_by_an_example() -> None:
    """A newcomer writes `code: code` for `code: fault.code`: the in-transit answer is no
    longer not_cancellable, and its example says so."""
    checked, _ = prove(ProviderDefinition.model_validate(acme("code: fault.code", "code: code")))
    failed = [c for c in checked if not c.ok]
    assert [c.name for c in failed] == ["in transit"]
    assert "code 'not_cancellable'" in failed[0].expected
    assert "code 'provider_rejected'" in failed[0].got  # the generic table's word for a 422


def test_a_path_that_finds_nothing_in_any_answer_is_a_warning() -> None:
    """`type: fault.kind` where no answer has a kind: no outcome depends on it, so no example
    fails, but the path is reported as finding nothing."""
    changed = acme("message: fault.text", "message: fault.text\n  type: fault.kind")
    checked, warnings = prove(ProviderDefinition.model_validate(changed))
    assert all(c.ok for c in checked)
    assert warnings == ["errors.type (fault.kind) finds nothing in any answer example"]


def test_a_request_example_compares_the_request_built() -> None:
    changed = acme("priority: 2, tags", "priority: 3, tags")
    failed = [c for c in prove(ProviderDefinition.model_validate(changed))[0] if not c.ok]
    assert [(c.kind, c.name) for c in failed] == [("request", "cancel a shipment")]
    assert "'priority': 3" in failed[0].expected
    assert "'priority': 2" in failed[0].got


def test_a_rule_no_answer_exercises_is_a_warning() -> None:
    extra = "\n    - when: {code: HELD_AT_CUSTOMS}\n      outcome: not_cancellable\n\n# The proof"
    definition = ProviderDefinition.model_validate(acme("\n\n# The proof", extra))
    checked, warnings = prove(definition)
    assert all(c.ok for c in checked)
    assert warnings == [
        "errors.rules.2 ({'code': 'HELD_AT_CUSTOMS'}) is matched by no answer example"
    ]


def test_a_rule_with_a_body_predicate_is_named_by_its_expression() -> None:
    extra = '\n    - when: {body: "fault.hold"}\n      outcome: not_cancellable\n\n# The proof'
    _, warnings = prove(ProviderDefinition.model_validate(acme("\n\n# The proof", extra)))
    assert warnings == ["errors.rules.2 ({'body': 'fault.hold'}) is matched by no answer example"]


def test_a_resources_own_rules_are_checked_against_its_answers() -> None:
    """The pickup resource classifies with its own rules; the provider's two rules stay
    matched by the shipment answers and the pickup's rule is the one reported."""
    own = "      require_json: false     # answers 204 with no body\n    errors:\n      rules:\n"
    own += "        - when: {code: PICKUP_DONE}\n          outcome: not_cancellable\n"
    definition = ProviderDefinition.model_validate(
        acme("      require_json: false     # answers 204 with no body\n", own)
    )
    checked, warnings = prove(definition)
    assert all(c.ok for c in checked)
    assert warnings == [
        "resources.pickup.errors.rules.0 ({'code': 'PICKUP_DONE'}) is matched by no answer example"
    ]


def test_a_definition_without_answer_examples_is_warned_of_as_a_whole() -> None:
    bare = acme()
    bare["examples"] = {"requests": bare["examples"]["requests"]}  # type: ignore[index]
    _, warnings = prove(ProviderDefinition.model_validate(bare))
    assert warnings == ["has no answer examples: nothing shows it reads its provider's answers"]


def test_a_request_examples_time_without_an_offset_is_utc() -> None:
    stated = [
        RequestExample.model_validate(
            {"name": "t", "request": {}, "now": now, "expect": {"method": "POST", "url": "u"}}
        ).now
        for now in ("2026-03-01T12:00:00", "2026-03-01T12:00:00Z")
    ]
    assert stated[0] == stated[1] == datetime(2026, 3, 1, 12, tzinfo=UTC)


def write(tmp_path: Path, change: str = "", to: str = "") -> Path:
    (tmp_path / "acme.yaml").write_text(yaml.safe_dump(acme(change, to)))
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    return config


def test_check_config_refuses_a_definition_whose_examples_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("OMS_API_KEY", CALLER_KEY)
    config = write(tmp_path, "code: fault.code", "code: code")
    assert main(["check-config", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'acme.yaml'}: examples.answers: in transit: expected " in err
    assert "unknown provider" not in err


def test_test_provider_prints_each_example_and_fails_on_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    shutil.copy(FIXTURE, tmp_path / "good.yaml")
    assert main(["test-provider", str(tmp_path / "good.yaml")]) == 0
    out = capsys.readouterr().out
    assert "ok  answer: in transit" in out
    assert out.rstrip().endswith("6 passed, 0 failed")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(acme("code: fault.code", "code: code")))
    assert main(["test-provider", str(tmp_path / "bad.yaml")]) == 1
    out = capsys.readouterr().out
    assert "FAIL  answer: in transit" in out
    assert out.rstrip().endswith("5 passed, 1 failed")
