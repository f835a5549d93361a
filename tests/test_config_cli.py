"""``cancel-gateway check-config``: a one-line summary and exit 0, or every problem and exit 1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.cli import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "gateway.yaml"
SCRIPT = Path(sys.executable).parent / "cancel-gateway"

# Fake values only: the output must never show them.
CALLER_KEY = "test-caller-key-0123456789"
CANARY = "CANARY-SECRET-1234567890"

EXAMPLE_ENV = {
    "OMS_API_KEY": CALLER_KEY,
    "STATESET_API_KEY": "sk_test_fake_stateset",
    "SHIPPER_BASE_URL": "https://fulfillment.shipper.example",
    "SHIPPER_API_KEY": "fake-shipper-key",
    "SHOPLAZZA_ACCESS_TOKEN": "fake-shoplazza-token",
    "SHOPLAZZA_SHOP_DOMAIN": "my-shop",
    "RXUNIVERSE_BASE_URL": "http://lab-host:4567",
}

GOOD = """
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  stateset-main:
    provider: stateset
    credentials:
      api_key: ${STATESET_API_KEY}
"""

# Three problems: an unset variable, an unknown key, a secret that is too short.
BROKEN = """
server:
  colour: blue
callers:
  - name: oms
    key: ${OMS_API_KEY}
  - name: erp
    key: CANARY-SHORT
"""

PROBLEM_LINE = re.compile(r"^(?P<file>[^:]+): (?P<loc>[^:\s]+): (?P<message>.+)$")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test sets: no GATEWAY_CONFIG or key from the developer's shell."""
    for name in ["GATEWAY_CONFIG", *EXAMPLE_ENV]:
        monkeypatch.delenv(name, raising=False)


def write(folder: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), "utf-8")
    return path


def set_env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_valid_config_exits_0_with_one_ok_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    path = write(tmp_path, GOOD)
    set_env(monkeypatch, {"OMS_API_KEY": CALLER_KEY, "STATESET_API_KEY": "sk_test_fake"})

    code = main(["check-config", "--config", str(path)])

    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"ok: {path}: ")
    assert "1 callers, 1 connections (stateset)" in lines[0]


def test_the_example_config_checks_ok_with_its_variables_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    set_env(monkeypatch, EXAMPLE_ENV)

    code = main(["check-config", "--config", str(EXAMPLE)])

    out, _ = capsys.readouterr()
    assert code == 0
    assert out.startswith("ok:")
    assert "4 connections (rxuniverse, shipper, shoplazza, stateset)" in out


def test_broken_config_exits_1_with_every_problem_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path = write(tmp_path, BROKEN)

    code = main(["check-config", "--config", str(path)])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    parsed = [PROBLEM_LINE.fullmatch(line) for line in lines]
    assert all(parsed), f"not `file: key.path: message`: {lines}"
    assert {m["file"] for m in parsed if m} == {str(path)}
    assert sorted(m["loc"] for m in parsed if m) == [
        "callers.0.key",
        "callers.1.key",
        "server.colour",
    ]
    assert "environment variable OMS_API_KEY is not set" in err


def test_broken_config_output_shows_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """Problems about secrets name them by place: neither the too-short key nor a credential."""
    path = write(
        tmp_path,
        BROKEN
        + textwrap.dedent(
            """
            connections:
              main:
                provider: stateset
                credentials: {api_key: "${STATESET_API_KEY}"}
            """
        ),
    )
    monkeypatch.setenv("STATESET_API_KEY", CANARY + "\n")

    assert main(["check-config", "--config", str(path)]) == 1

    out, err = capsys.readouterr()
    assert "CANARY" not in out + err


def test_short_credential_is_refused_by_name_never_by_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """A non-empty credential under 8 characters fails the check; the line names its place."""
    path = write(tmp_path, GOOD)
    set_env(monkeypatch, {"OMS_API_KEY": CALLER_KEY, "STATESET_API_KEY": "CANARY7"})

    code = main(["check-config", "--config", str(path)])

    out, err = capsys.readouterr()
    assert code == 1
    assert err == (
        f"{path}: connections.stateset-main.credentials.api_key: "
        "must be at least 8 characters (or empty when optional)\n"
    )
    assert "CANARY" not in out + err


def test_missing_config_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "absent.yaml"

    code = main(["check-config", "--config", str(path)])

    _, err = capsys.readouterr()
    assert code == 1
    assert err.startswith(f"{path}: cannot read")


def test_gateway_config_variable_is_used_without_config_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    path = write(tmp_path, GOOD)
    set_env(
        monkeypatch,
        {"GATEWAY_CONFIG": str(path), "OMS_API_KEY": CALLER_KEY, "STATESET_API_KEY": "sk_test_x"},
    )
    monkeypatch.chdir(tmp_path.parent)  # no config/gateway.yaml to fall back on here

    code = main(["check-config"])

    out, _ = capsys.readouterr()
    assert code == 0
    assert out.startswith(f"ok: {path}: ")


def test_config_flag_wins_over_gateway_config_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    good = write(tmp_path, GOOD)
    broken = write(tmp_path, BROKEN, "broken.yaml")
    set_env(
        monkeypatch,
        {"GATEWAY_CONFIG": str(broken), "OMS_API_KEY": CALLER_KEY, "STATESET_API_KEY": "sk_test_x"},
    )

    code = main(["check-config", "--config", str(good)])

    out, _ = capsys.readouterr()
    assert code == 0
    assert out.startswith(f"ok: {good}: ")


def test_default_path_is_config_gateway_yaml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    (tmp_path / "config").mkdir()
    write(tmp_path / "config", GOOD)
    set_env(monkeypatch, {"OMS_API_KEY": CALLER_KEY, "STATESET_API_KEY": "sk_test_x"})
    monkeypatch.chdir(tmp_path)

    code = main(["check-config"])

    out, _ = capsys.readouterr()
    assert code == 0
    assert out.startswith("ok: config/gateway.yaml: ")


# --- the installed console script, in a process of its own ------------------------------------


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_console_script_check_config_ok(tmp_path: Path):
    path = write(tmp_path, GOOD)

    result = run_script(
        "check-config",
        "--config",
        str(path),
        env={"OMS_API_KEY": CALLER_KEY, "STATESET_API_KEY": "sk_test_fake"},
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {path}: ")
    assert len(result.stdout.splitlines()) == 1


def test_console_script_check_config_broken(tmp_path: Path):
    path = write(tmp_path, BROKEN)

    result = run_script("check-config", "--config", str(path), env={})

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert all(PROBLEM_LINE.fullmatch(line) for line in lines), lines
    assert "CANARY" not in result.stderr
