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
    # Warnings only: what the definitions' examples leave unproven (a rule no document shows).
    assert all(line.startswith("warning: gateway/providers/") for line in err.splitlines())
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


CATALOG_ENV = {
    "SHOPIFY_SHOP": "demo-shop",
    "SHOPIFY_ACCESS_TOKEN": "fake-shopify-token",
    "WALMART_CLIENT_ID": "fake-walmart-client",
    "WALMART_CLIENT_SECRET": "fake-walmart-secret",
    "AMAZON_REGION": "eu",
    "AMAZON_LWA_CLIENT_ID": "fake-lwa-client",
    "AMAZON_LWA_CLIENT_SECRET": "fake-lwa-secret",
    "AMAZON_LWA_REFRESH_TOKEN": "fake-lwa-refresh",
    "SHOPEE_PARTNER_ID": "2001887",  # integers, from the environment as text
    "SHOPEE_SHOP_ID": "14701711",
    "SHOPEE_PARTNER_KEY": "fake-partner-key",
    "SHOPEE_REFRESH_TOKEN": "fake-shopee-refresh",
    "MAGENTO_BASE_URL": "https://shop.example.com",
    "MAGENTO_ADMIN_USER": "admin",
    "MAGENTO_ADMIN_PASSWORD": "fake-magento-password",
    "BIGCOMMERCE_STORE_HASH": "abc123",
    "BIGCOMMERCE_ACCESS_TOKEN": "fake-bigcommerce-token",
    "WOOCOMMERCE_BASE_URL": "https://shop.example.com",
    "WOOCOMMERCE_CONSUMER_KEY": "ck_fake_woocommerce",
    "WOOCOMMERCE_CONSUMER_SECRET": "cs_fake_woocommerce",
    "SHIPENGINE_API_KEY": "fake-shipengine-key",
}


def test_the_example_configs_catalog_connections_check_ok_once_uncommented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """Each commented catalog connection names the variables it needs, and checks with them."""
    text = EXAMPLE.read_text()
    head, _, catalog = text.partition("  # The catalog")
    lines = [line.replace("  # ", "  ", 1) for line in catalog.splitlines()[1:]]
    uncommented = head + "\n".join(line for line in lines if line.strip() != "#") + "\n"
    named = set(re.findall(r"\$\{([A-Z_]+)", catalog))
    assert named == set(CATALOG_ENV) | {"WALMART_ENVIRONMENT"}
    set_env(monkeypatch, {**EXAMPLE_ENV, **CATALOG_ENV})

    code = main(["check-config", "--config", str(write(tmp_path, uncommented))])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "12 connections (amazon_mcf, bigcommerce, magento, rxuniverse, shipengine" in out
    assert not any(secret in out + err for secret in CATALOG_ENV.values() if "fake" in secret)


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


# --- what the problems say ---------------------------------------------------------------------

TINY = """
name: tiny
base_url: https://tiny.example
credentials:
  token: {description: "API token"}
auth:
  header: X-Token
  value: "{credentials.token}"
params:
  warehouse_id: {}
resources:
  thing:
    method: DELETE
    path: /things/{id}
"""

USES_TINY = """
providers: [tiny.yaml]
callers:
  - name: oms
    key: test-caller-key-0123456789
    connections: ["*"]
connections:
  t:
    provider: tiny
    credentials: {token: fake-token}
"""


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """check-config's problem lines for ``path``, which must fail."""
    assert main(["check-config", "--config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    return err.splitlines()


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(TINY + "colour: blue\n", id="schema"),
        pytest.param(TINY.replace("/things/{id}", "/things/{params.warehous_id}"), id="template"),
        pytest.param(TINY + "  other: [unclosed\n", id="yaml"),
        pytest.param(TINY.replace("name: tiny", "name: Tiny"), id="bad-name"),
    ],
)
def test_a_definition_that_failed_is_not_also_an_unknown_provider(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], broken: str
):
    """The definition's own problem, then one line pointing at it: no misleading second error."""
    write(tmp_path, broken, "tiny.yaml")
    lines = check(write(tmp_path, USES_TINY), capsys)
    assert not any("unknown provider" in line for line in lines), lines
    assert (
        lines[-1]
        == f"{tmp_path / 'gateway.yaml'}: connections.t.provider: provider 'tiny' failed to load (see above)"
    )
    assert lines[0].startswith(f"{tmp_path / 'tiny.yaml'}: ")


def test_a_builtin_replaced_by_a_definition_that_failed_is_not_used_instead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """A file meant to replace stateset that fails leaves no stateset to check against."""
    write(tmp_path, TINY.replace("name: tiny", "name: stateset") + "colour: blue\n", "tiny.yaml")
    lines = check(
        write(tmp_path, USES_TINY.replace("provider: tiny", "provider: stateset")), capsys
    )
    assert lines[1:] == [
        f"{tmp_path / 'gateway.yaml'}: connections.t.provider: provider 'stateset' failed to load (see above)"
    ]


@pytest.mark.parametrize(
    ("key", "loc", "expected"),
    [
        pytest.param(
            "timeout: 3",
            "connections.t.timeout",
            "unknown key (did you mean timeout_s? known: async, attempt_timeout_s, base_url, "
            "breaker, connect_timeout_s, credentials, limits, params, provider, retry, timeout_s)",
            id="connection",
        ),
        pytest.param(
            "retry: {max_attempt: 3}",
            "connections.t.retry.max_attempt",
            "unknown key (did you mean max_attempts? known: backoff_base_s, backoff_max_s, "
            "budget_min_retries, budget_ratio, budget_window_s, max_attempts)",
            id="nested",
        ),
        pytest.param(
            "colour: blue",
            "connections.t.colour",
            "unknown key (known: async, attempt_timeout_s, base_url, breaker, connect_timeout_s, "
            "credentials, limits, params, provider, retry, timeout_s)",
            id="nothing-close",
        ),
    ],
)
def test_an_unknown_key_suggests_the_closest_known_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, loc: str, expected: str
):
    write(tmp_path, TINY, "tiny.yaml")
    lines = check(write(tmp_path, USES_TINY + f"    {key}\n"), capsys)
    assert lines == [f"{tmp_path / 'gateway.yaml'}: {loc}: {expected}"]


def test_an_unknown_key_in_a_definition_suggests_the_closest_known_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    write(tmp_path, TINY.replace("    method: DELETE", "    methd: DELETE"), "tiny.yaml")
    lines = check(write(tmp_path, USES_TINY), capsys)
    where = f"{tmp_path / 'tiny.yaml'}: resources.thing.methd: "
    (line,) = [line for line in lines if line.startswith(where)]
    assert line.startswith(f"{where}unknown key (did you mean method? known: already_cancelled, ")


def test_an_unknown_placeholder_suggests_the_closest_known_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    write(tmp_path, TINY.replace("/things/{id}", "/things/{params.warehous_id}"), "tiny.yaml")
    lines = check(write(tmp_path, USES_TINY), capsys)
    assert lines[0] == (
        f"{tmp_path / 'tiny.yaml'}: resources.thing.path: {{params.warehous_id}} references "
        "nothing known (did you mean params.warehouse_id? known: params.warehouse_id)"
    )


def test_an_unknown_provider_suggests_the_closest_known_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    set_env(monkeypatch, {"OMS_API_KEY": CALLER_KEY, "STATESET_API_KEY": "sk_test_fake"})
    lines = check(write(tmp_path, GOOD.replace("provider: stateset", "provider: statset")), capsys)
    assert lines == [
        f"{tmp_path / 'gateway.yaml'}: connections.stateset-main.provider: unknown provider "
        "'statset' (did you mean stateset? known: amazon_mcf, bigcommerce, magento, rxuniverse, "
        "shipengine, shipper, shopee, shopify, shoplazza, stateset, walmart, woocommerce)"
    ]


def test_a_name_too_long_says_its_length_in_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """A name's limit is said in characters, not hidden in a regular expression."""
    write(tmp_path, TINY.replace("name: tiny", "name: t" + "x" * 64), "tiny.yaml")
    text = USES_TINY.replace("name: oms", "name: " + "o" * 101)
    lines = check(write(tmp_path, text), capsys)
    assert f"{tmp_path / 'tiny.yaml'}: name: String should have at most 64 characters" in lines
    assert (
        f"{tmp_path / 'gateway.yaml'}: callers.0.name: String should have at most 100 characters"
        in lines
    )


def test_a_param_of_the_wrong_type_is_one_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """A param is a string, a number or a boolean: a list is one line saying so."""
    write(tmp_path, TINY, "tiny.yaml")
    lines = check(write(tmp_path, USES_TINY + "    params: {warehouse_id: [1, 2]}\n"), capsys)
    assert lines == [
        f"{tmp_path / 'gateway.yaml'}: connections.t.params.warehouse_id: "
        "must be a string, a number or a boolean"
    ]


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


@pytest.mark.process
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


@pytest.mark.process
def test_console_script_check_config_broken(tmp_path: Path):
    path = write(tmp_path, BROKEN)

    result = run_script("check-config", "--config", str(path), env={})

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert all(PROBLEM_LINE.fullmatch(line) for line in lines), lines
    assert "CANARY" not in result.stderr
