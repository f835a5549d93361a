"""loader.load: the configuration file and what it names, checked completely, every problem at once."""

from __future__ import annotations

import hashlib
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from gateway.loader import Runtime, load
from gateway.problems import ConfigError, Problem

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "gateway.yaml"

# Fake values only: a problem text or a repr must never show them.
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

CALLERS = f"""
callers:
  - name: oms
    key: {CALLER_KEY}
    connections: ["*"]
"""

# A tiny provider definition, enough to prove a config's own files are read.
TINY_PROVIDER = """
name: tiny
title: Tiny
base_url: https://tiny.example
credentials:
  token: {description: "API token"}
auth:
  header: X-Token
  value: "{credentials.token}"
resources:
  thing:
    method: DELETE
    path: /things/{id}
"""


def write(folder: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), "utf-8")
    return path


def load_text(folder: Path, text: str, environ: Mapping[str, str] | None = None) -> Runtime:
    return load(write(folder, text), environ or {})


def problems_of(folder: Path, text: str, environ: Mapping[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_text(folder, text, environ)
    assert caught.value.problems, "a ConfigError always carries its problems"
    return caught.value.problems


def locs(problems: list[Problem]) -> list[str]:
    return [p.loc for p in problems]


def only(problems: list[Problem], loc: str) -> Problem:
    found = [p for p in problems if p.loc == loc]
    assert len(found) == 1, f"expected one problem at {loc!r}, got {problems}"
    return found[0]


def connection(name: str, body: str) -> str:
    """``CALLERS`` plus one connection ``name`` whose YAML body is ``body``."""
    return (
        CALLERS + "connections:\n  " + name + ":\n" + textwrap.indent(textwrap.dedent(body), "    ")
    )


# --- the example configuration ---------------------------------------------------------------


def test_example_config_loads_with_its_variables_set():
    """config/gateway.yaml gives one connection per built-in provider once its variables are set."""
    runtime = load(EXAMPLE, EXAMPLE_ENV)

    assert {name: t.definition.name for name, t in runtime.targets.items()} == {
        "stateset-main": "stateset",
        "shipper-main": "shipper",
        "shoplazza-main": "shoplazza",
        "rxuniverse-lab": "rxuniverse",
    }
    assert runtime.config.server.port == 8080  # ${GATEWAY_PORT:-8080}
    assert runtime.targets["shipper-main"].params["warehouse_id"] == "WH-TGR04"
    assert runtime.targets["shoplazza-main"].params["shop_domain"] == "my-shop"
    assert runtime.targets["stateset-main"].base_url.authority.source == "api.stateset.com"


def test_every_unset_variable_is_reported_with_its_key_path():
    """Without its environment, the example names each unset variable where it is used, at once."""
    with pytest.raises(ConfigError) as caught:
        load(EXAMPLE, {})

    reported = {(p.loc, p.message) for p in caught.value.problems}
    assert reported == {
        ("callers.0.key", "environment variable OMS_API_KEY is not set"),
        (
            "connections.stateset-main.credentials.api_key",
            "environment variable STATESET_API_KEY is not set",
        ),
        (
            "connections.shipper-main.base_url",
            "environment variable SHIPPER_BASE_URL is not set",
        ),
        (
            "connections.shipper-main.credentials.api_key",
            "environment variable SHIPPER_API_KEY is not set",
        ),
        (
            "connections.shoplazza-main.credentials.access_token",
            "environment variable SHOPLAZZA_ACCESS_TOKEN is not set",
        ),
        (
            "connections.shoplazza-main.params.shop_domain",
            "environment variable SHOPLAZZA_SHOP_DOMAIN is not set",
        ),
        (
            "connections.rxuniverse-lab.base_url",
            "environment variable RXUNIVERSE_BASE_URL is not set",
        ),
    }
    assert all(p.file == str(EXAMPLE) for p in caught.value.problems)


def test_problem_text_is_file_key_path_message():
    """Each problem reads ``file: key.path: message``; the error's text lists them one a line."""
    with pytest.raises(ConfigError) as caught:
        load(EXAMPLE, {k: v for k, v in EXAMPLE_ENV.items() if k != "SHIPPER_API_KEY"})

    (problem,) = caught.value.problems
    assert str(problem) == (
        f"{EXAMPLE}: connections.shipper-main.credentials.api_key: "
        "environment variable SHIPPER_API_KEY is not set"
    )
    assert str(caught.value) == str(problem)


def test_schema_problems_of_several_kinds_come_in_one_error(tmp_path: Path):
    """An unset variable, an unknown key and a bad value are all reported by one load."""
    problems = problems_of(
        tmp_path,
        """
        server:
          port: 70000
          colour: blue
        callers:
          - name: oms
            key: ${OMS_API_KEY}
            connections: ["*"]
        """,
    )
    assert sorted(locs(problems)) == ["callers.0.key", "server.colour", "server.port"]


def test_unset_variable_does_not_hide_connection_problems(tmp_path: Path):
    """README: every problem is reported at once, including those found resolving connections."""
    problems = problems_of(
        tmp_path,
        CALLERS
        + textwrap.dedent(
            """
            connections:
              a:
                provider: stateset
                credentials: {api_key: "${STATESET_API_KEY}"}
              b:
                provider: no-such-provider
            """
        ),
    )
    assert "connections.a.credentials.api_key" in locs(problems)
    assert "connections.b.provider" in locs(problems)


def test_schema_error_does_not_hide_connection_problems(tmp_path: Path):
    """A config that fails the schema still has its well-formed connections cross-checked."""
    problems = problems_of(
        tmp_path,
        "server: {colour: blue}\n"
        + CALLERS
        + textwrap.dedent(
            """
            connections:
              b:
                provider: no-such-provider
            """
        ),
    )
    assert {"server.colour", "connections.b.provider"} <= set(locs(problems))


def test_unset_base_url_is_reported_once(tmp_path: Path):
    """The empty value an unset variable leaves is not reported a second time as a bad URL."""
    problems = problems_of(
        tmp_path,
        connection(
            "main",
            "provider: stateset\nbase_url: ${NO_SUCH_URL}\ncredentials: {api_key: fake-key-0123}\n",
        ),
    )
    assert [p.loc for p in problems] == ["connections.main.base_url"]
    assert "NO_SUCH_URL is not set" in problems[0].message


# --- substitution ----------------------------------------------------------------------------


def test_default_applies_when_the_variable_is_unset(tmp_path: Path):
    runtime = load_text(tmp_path, "server: {port: '${PORT:-9090}'}\n" + CALLERS)
    assert runtime.config.server.port == 9090


def test_variable_wins_over_its_default(tmp_path: Path):
    runtime = load_text(tmp_path, "server: {port: '${PORT:-9090}'}\n" + CALLERS, {"PORT": "7070"})
    assert runtime.config.server.port == 7070


def test_empty_default_gives_an_empty_string(tmp_path: Path):
    runtime = load_text(
        tmp_path,
        connection(
            "lab",
            """
            provider: rxuniverse
            base_url: http://lab-host:4567
            credentials: {api_key: "${RX_KEY:-}"}
            """,
        ),
    )
    assert runtime.targets["lab"].credentials["api_key"] == ""


def test_variable_is_replaced_inside_a_longer_string(tmp_path: Path):
    runtime = load_text(
        tmp_path,
        connection(
            "lab",
            """
            provider: rxuniverse
            base_url: http://${LAB_HOST}:4567/rx
            """,
        ),
        {"LAB_HOST": "lab-7"},
    )
    assert runtime.targets["lab"].base_url.authority.source == "lab-7:4567"
    assert runtime.targets["lab"].base_url.path.source == "/rx"


def test_double_dollar_is_a_literal_dollar(tmp_path: Path):
    """``$$`` escapes: ``pa$$word`` is ``pa$word`` and ``$${X}`` is the text ``${X}``, no lookup."""
    runtime = load_text(
        tmp_path,
        connection(
            "main",
            """
            provider: stateset
            credentials: {api_key: "pa$$word-$${NOT_A_VARIABLE}"}
            """,
        ),
    )
    assert runtime.targets["main"].credentials["api_key"] == "pa$word-${NOT_A_VARIABLE}"


def test_default_may_hold_a_braced_template(tmp_path: Path):
    """``${URL:-https://{params.shop_domain}.host}``: the braces belong to the default."""
    runtime = load_text(
        tmp_path,
        connection(
            "shop",
            """
            provider: shoplazza
            base_url: ${SHOP_URL:-https://{params.shop_domain}.myshoplaza.com}
            credentials: {access_token: fake-token}
            params: {shop_domain: my-shop}
            """,
        ),
    )
    base = runtime.targets["shop"].base_url
    assert (base.scheme, base.authority.source) == ("https", "{params.shop_domain}.myshoplaza.com")


def test_set_but_empty_variable_takes_the_default(tmp_path: Path):
    runtime = load_text(tmp_path, "server: {port: '${PORT:-9090}'}\n" + CALLERS, {"PORT": ""})
    assert runtime.config.server.port == 9090


# --- reading the YAML ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "loc"),
    [
        pytest.param("colour: blue\n" + CALLERS, "colour", id="top-level"),
        pytest.param("server: {colour: blue}\n" + CALLERS, "server.colour", id="server"),
        pytest.param("logging: {colour: blue}\n" + CALLERS, "logging.colour", id="logging"),
        pytest.param(
            "callers:\n  - name: oms\n    key: " + CALLER_KEY + "\n    colour: blue\n",
            "callers.0.colour",
            id="caller",
        ),
        pytest.param(
            connection(
                "main", "provider: stateset\ncredentials: {api_key: fake-key-0123}\ncolour: blue\n"
            ),
            "connections.main.colour",
            id="connection",
        ),
    ],
)
def test_unknown_keys_are_errors_at_every_level(tmp_path: Path, text: str, loc: str):
    problem = only(problems_of(tmp_path, text), loc)
    assert problem.message.startswith("unknown key (known: ")


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path):
    problems = problems_of(tmp_path, "callers:\n  - name: oms\n    key: [unclosed\n")
    (problem,) = problems
    assert problem.file == str(tmp_path / "gateway.yaml")
    assert problem.loc.startswith("line ")
    assert ", column " in problem.loc


def test_yaml_syntax_error_points_at_the_right_line(tmp_path: Path):
    (problem,) = problems_of(tmp_path, "server:\n  port: 8080\n\tbad: tab\n" + CALLERS)
    assert problem.loc == "line 3, column 1"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param("server: {port: 1}\nserver: {port: 2}\n" + CALLERS, "line 2", id="top-level"),
        pytest.param(
            "callers:\n  - name: oms\n    name: other\n    key: " + CALLER_KEY + "\n",
            "line 3",
            id="nested",
        ),
    ],
)
def test_a_key_given_twice_is_an_error(tmp_path: Path, text: str, where: str):
    """YAML would silently keep the last one; the loader refuses instead."""
    (problem,) = problems_of(tmp_path, text)
    assert problem.loc.startswith(where + ", column")
    assert "given twice" in problem.message


def test_configuration_that_is_not_a_mapping_is_refused(tmp_path: Path):
    (problem,) = problems_of(tmp_path, "- just\n- a list\n")
    assert problem.message == "must be a YAML mapping"


def test_missing_configuration_file_is_reported(tmp_path: Path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "absent.yaml", {})
    (problem,) = caught.value.problems
    assert problem.file == str(tmp_path / "absent.yaml")
    assert problem.message.startswith("cannot read")


def laughs(levels: int, width: int, indent: str) -> str:
    """YAML "billion laughs": each level an anchored list of ``width`` aliases of the one
    before, so the last one stands for ``width ** levels`` strings."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * width)}]" for n in range(1, levels)]
    return "".join(f"{indent}{line}\n" for line in lines)


def last_line_of(text: str, start: str) -> int:
    """The 1-based number of the last line of ``text`` that starts with ``start`` (stripped)."""
    return max(n for n, line in enumerate(text.splitlines(), 1) if line.strip().startswith(start))


def test_alias_bomb_in_the_configuration_is_refused_where_it_expands(tmp_path: Path):
    """Aliases that would multiply a file past the bound are refused at the alias that does it."""
    text = connection(
        "main", "provider: stateset\ncredentials: {api_key: fake-key-0123}\nparams:\n"
    ) + laughs(6, 9, " " * 6)
    (problem,) = problems_of(tmp_path, text)
    assert problem.file == str(tmp_path / "gateway.yaml")
    assert problem.loc.startswith("line ")
    assert "aliases" in problem.message
    line = int(problem.loc.removeprefix("line ").split(",")[0])
    assert line < last_line_of(text, "l5:"), "refused before the last level is expanded"


def test_billion_laughs_is_refused_at_once(tmp_path: Path):
    """515 bytes that stand for 10 billion strings are refused in well under a second or two."""
    text = CALLERS + "connections:\n  main:\n    params:\n" + laughs(10, 10, " " * 6)
    started = time.monotonic()
    (problem,) = problems_of(tmp_path, text)
    assert time.monotonic() - started < 2
    assert "aliases" in problem.message
    line = int(problem.loc.removeprefix("line ").split(",")[0])
    assert line < last_line_of(text, "l9:")


def test_alias_bomb_in_a_provider_body_is_refused(tmp_path: Path):
    """Every file the loader reads is bounded: a definition's body is not rendered from a bomb."""
    bomb = TINY_PROVIDER.replace("    method: DELETE", "    method: POST") + (
        "    body:\n" + laughs(6, 9, " " * 6)
    )
    definition = write(tmp_path, bomb, "tiny.yaml")
    problems = problems_of(
        tmp_path,
        "providers: [tiny.yaml]\n"
        + connection("t", "provider: tiny\ncredentials: {token: fake-token}\n"),
    )
    (problem,) = [p for p in problems if p.file == str(definition)]
    assert "aliases" in problem.message
    assert problem.loc.startswith("line ")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("&a [*a]", id="list"),
        pytest.param("&a {k: [1, *a]}", id="mapping"),
        pytest.param("&a [&b [*a], *b]", id="through-another-anchor"),
    ],
)
def test_recursive_alias_is_refused(tmp_path: Path, value: str):
    """An alias inside the node it names would be endless: a problem, not a crash."""
    (problem,) = problems_of(tmp_path, f"x: {value}\n" + CALLERS)
    assert problem.loc.startswith("line 1, column ")
    assert "inside the node it names" in problem.message


def test_deeply_nested_yaml_is_refused(tmp_path: Path):
    """A few kilobytes of brackets are a problem, not a crash of the reader."""
    (problem,) = problems_of(tmp_path, "x: " + "[" * 3000 + "]" * 3000 + "\n" + CALLERS)
    assert problem.loc.startswith("line 1, column ")
    assert "nested deeper than" in problem.message


def test_aliases_nested_deep_through_each_other_are_refused(tmp_path: Path):
    """Depth made of aliases counts too: each level one alias of the one before."""
    chain = "".join(f"l{n}: &l{n} [*l{n - 1}]\n" for n in range(1, 400))
    (problem,) = problems_of(tmp_path, "l0: &l0 [x]\n" + chain + CALLERS)
    assert problem.loc.startswith("line ")
    assert "nested deeper than" in problem.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("? {a: 1}\n: x\n", "a key must be text or a number"),
        ("? [1, 2]\n: x\n", "a key must be text or a number"),
        ("n: " + "9" * 5000 + "\n", "holds a value YAML cannot convert"),
        ("d: 2020-99-99\n", "holds a value YAML cannot convert"),
    ],
)
def test_yaml_that_its_converters_cannot_hold_is_a_problem_not_a_crash(
    tmp_path: Path, text: str, message: str
):
    (problem,) = problems_of(tmp_path, text)
    assert message in problem.message


def test_a_merged_key_may_be_given_again_by_the_mapping_that_merges(tmp_path: Path):
    """``<<: *base`` then ``timeout_s: 5`` overrides the merged value, as YAML says."""
    runtime = load_text(
        tmp_path,
        CALLERS
        + """
connections:
  a: &base
    provider: stateset
    credentials: {api_key: fake-key-0123}
    timeout_s: 7
  b:
    <<: *base
    timeout_s: 5
""",
    )
    assert runtime.config.connections["b"].timeout_s == 5
    assert runtime.config.connections["a"].timeout_s == 7


def test_anchored_blocks_reused_a_few_times_still_work(tmp_path: Path):
    """Sharing a block between connections is what anchors are for: it loads as if written out."""
    runtime = load_text(
        tmp_path,
        CALLERS
        + """
connections:
  a: &common
    provider: stateset
    credentials: {api_key: fake-key-0123}
    retry: &retry {max_attempts: 5, backoff_base_s: 0.2}
    limits: &limits {concurrency: 10}
  b:
    <<: *common
    timeout_s: 5
  c:
    provider: stateset
    credentials: {api_key: fake-key-4567}
    retry: *retry
    limits: *limits
""",
    )
    assert sorted(runtime.targets) == ["a", "b", "c"]
    settings = runtime.config.connections
    assert settings["b"].retry.max_attempts == settings["c"].retry.max_attempts == 5
    assert settings["b"].timeout_s == 5
    assert settings["c"].limits.concurrency == 10


# --- connections -----------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["Bad_Shop", "a.b", "-x", "x-", "a" * 64, "my shop", ""])
def test_bad_shop_domain_is_refused(tmp_path: Path, domain: str):
    """A value placed in a host name must be one DNS label, or the configuration is refused."""
    problems = problems_of(
        tmp_path,
        connection(
            "shop",
            f"""
            provider: shoplazza
            credentials: {{access_token: fake-token}}
            params: {{shop_domain: "{domain}"}}
            """,
        ),
    )
    assert locs(problems) == ["connections.shop.params.shop_domain"]


@pytest.mark.parametrize("domain", ["my-shop", "a", "0", "shop1", "a" * 63])
def test_good_shop_domain_is_accepted(tmp_path: Path, domain: str):
    runtime = load_text(
        tmp_path,
        connection(
            "shop",
            f"""
            provider: shoplazza
            credentials: {{access_token: fake-token}}
            params: {{shop_domain: "{domain}"}}
            """,
        ),
    )
    assert runtime.targets["shop"].params["shop_domain"] == domain


def test_bad_shop_domain_is_refused_even_with_an_own_base_url(tmp_path: Path):
    """The host-label rule holds for a configured base_url that places the param in its host."""
    problems = problems_of(
        tmp_path,
        connection(
            "shop",
            """
            provider: shoplazza
            base_url: "https://{params.shop_domain}.shops.example"
            credentials: {access_token: fake-token}
            params: {shop_domain: "a.b"}
            """,
        ),
    )
    assert locs(problems) == ["connections.shop.params.shop_domain"]


def test_unknown_provider_is_refused_listing_the_known_ones(tmp_path: Path):
    problem = only(
        problems_of(tmp_path, connection("x", "provider: no-such-provider\n")),
        "connections.x.provider",
    )
    assert "no-such-provider" in problem.message
    assert (
        "known: amazon_mcf, bigcommerce, magento, rxuniverse, shipengine, shipper, shopee, "
        "shopify, shoplazza, stateset, walmart, woocommerce"
    ) in problem.message


@pytest.mark.parametrize(
    ("provider", "extra"),
    [
        ("shipper", "credentials: {api_key: fake-key-0123}\nparams: {warehouse_id: WH-1}\n"),
        ("rxuniverse", ""),
    ],
)
def test_provider_without_public_host_needs_a_base_url(tmp_path: Path, provider: str, extra: str):
    problem = only(
        problems_of(tmp_path, connection("c", f"provider: {provider}\n{extra}")),
        "connections.c.base_url",
    )
    assert "no public default host" in problem.message


@pytest.mark.parametrize(
    ("base_url", "fragment"),
    [
        pytest.param("https://user:pass@api.example", "user information", id="userinfo"),
        pytest.param("https://user@api.example", "user information", id="user-only"),
        pytest.param("https://api.example/v1?x=1", "query", id="query"),
        pytest.param("https://api.example/v1#top", "fragment", id="fragment"),
        pytest.param("ftp://api.example", "http:// or https://", id="ftp"),
        pytest.param("file:///etc/passwd", "http:// or https://", id="file"),
        pytest.param("api.example", "http:// or https://", id="no-scheme"),
        pytest.param("https:///v1", "no host", id="no-host"),
    ],
)
def test_bad_base_url_is_refused(tmp_path: Path, base_url: str, fragment: str):
    problem = only(
        problems_of(
            tmp_path,
            connection(
                "main",
                f"""
                provider: stateset
                base_url: "{base_url}"
                credentials: {{api_key: fake-key-0123}}
                """,
            ),
        ),
        "connections.main.base_url",
    )
    assert fragment in problem.message


def test_plain_http_base_url_with_port_and_path_is_accepted(tmp_path: Path):
    runtime = load_text(
        tmp_path,
        connection(
            "main",
            """
            provider: stateset
            base_url: http://127.0.0.1:9/stateset
            credentials: {api_key: fake-key-0123}
            """,
        ),
    )
    base = runtime.targets["main"].base_url
    assert (base.scheme, base.authority.source, base.path.source) == (
        "http",
        "127.0.0.1:9",
        "/stateset",
    )


def test_base_url_problem_never_shows_its_user_information(tmp_path: Path):
    problems = problems_of(
        tmp_path,
        connection(
            "main",
            f"""
            provider: stateset
            base_url: "ftp://user:{CANARY}@api.example"
            credentials: {{api_key: fake-key-0123}}
            """,
        ),
    )
    assert "connections.main.base_url" in locs(problems)
    assert CANARY not in "\n".join(map(str, problems))


def test_undeclared_credential_is_refused(tmp_path: Path):
    problem = only(
        problems_of(
            tmp_path,
            connection(
                "main",
                "provider: stateset\ncredentials: {api_key: fake-key-0123, password: fake-password}\n",
            ),
        ),
        "connections.main.credentials.password",
    )
    assert problem.message == "not a credential of stateset (declared: api_key)"


def test_undeclared_param_is_refused(tmp_path: Path):
    problem = only(
        problems_of(
            tmp_path,
            connection(
                "main",
                "provider: stateset\ncredentials: {api_key: fake-key-0123}\nparams: {x: 1}\n",
            ),
        ),
        "connections.main.params.x",
    )
    assert problem.message == "not a parameter of stateset (declared: none)"


@pytest.mark.parametrize("credentials", ["", "credentials: {}\n", "credentials: {api_key: ''}\n"])
def test_missing_required_credential_is_refused(tmp_path: Path, credentials: str):
    problem = only(
        problems_of(tmp_path, connection("main", "provider: stateset\n" + credentials)),
        "connections.main.credentials.api_key",
    )
    assert problem.message == "required by stateset"


def test_optional_credential_may_be_left_out(tmp_path: Path):
    """RxUniverse's api_key is optional: a lab server may ask for none."""
    runtime = load_text(
        tmp_path, connection("lab", "provider: rxuniverse\nbase_url: http://lab-host:4567\n")
    )
    assert dict(runtime.targets["lab"].credentials) == {}


@pytest.mark.parametrize("control", ["\n", "\r", "\x00", "\x7f"])
def test_credential_with_a_control_character_is_refused_without_its_value(
    tmp_path: Path, control: str
):
    """A newline would split the auth header; the problem names the credential, not its value."""
    with pytest.raises(ConfigError) as caught:
        load_text(
            tmp_path,
            connection("main", "provider: stateset\ncredentials: {api_key: '${KEY}'}\n"),
            {"KEY": f"{CANARY}{control}injected: yes"},
        )
    problem = only(caught.value.problems, "connections.main.credentials.api_key")
    assert problem.message == "contains control characters"
    assert CANARY not in str(caught.value)


@pytest.mark.parametrize("value", ["C", "CANARY7"])
def test_credential_shorter_than_8_characters_is_refused_without_its_value(
    tmp_path: Path, value: str
):
    """A credential that short is a typo or a placeholder; the problem never shows it."""
    with pytest.raises(ConfigError) as caught:
        load_text(
            tmp_path,
            connection("main", "provider: stateset\ncredentials: {api_key: '${KEY}'}\n"),
            {"KEY": value},
        )
    problem = only(caught.value.problems, "connections.main.credentials.api_key")
    assert problem.message == "must be at least 8 characters (or empty when optional)"
    assert value not in "\n".join([str(caught.value), repr(caught.value.problems)])


def test_credential_of_8_characters_is_accepted(tmp_path: Path):
    runtime = load_text(
        tmp_path, connection("main", "provider: stateset\ncredentials: {api_key: '12345678'}\n")
    )
    assert runtime.targets["main"].credentials["api_key"] == "12345678"


def test_short_optional_credential_is_refused_but_an_empty_one_sends_nothing(tmp_path: Path):
    """RxUniverse's optional api_key may be empty (no header), not short."""
    text = connection(
        "lab",
        "provider: rxuniverse\nbase_url: http://lab-host:4567\ncredentials: {api_key: '${K}'}\n",
    )
    assert load_text(tmp_path, text, {"K": ""}).targets["lab"].credentials["api_key"] == ""
    problem = only(
        problems_of(tmp_path, text, {"K": "short"}), "connections.lab.credentials.api_key"
    )
    assert problem.message == "must be at least 8 characters (or empty when optional)"


def test_required_param_missing_is_refused(tmp_path: Path):
    problem = only(
        problems_of(
            tmp_path,
            connection("shop", "provider: shoplazza\ncredentials: {access_token: fake-token}\n"),
        ),
        "connections.shop.params.shop_domain",
    )
    assert problem.message == "is required"


# --- who chooses the host ---------------------------------------------------------------------

HOSTED_PROVIDER = """
name: hosted
base_url: "https://{params.host}:{params.port}/api"
credentials:
  token: {description: "API token"}
auth:
  header: X-Token
  value: "{credentials.token}"
params:
  host: {}
  port: {type: integer, default: 443}
  tenant: {per_request: true}
resources:
  thing:
    method: DELETE
    path: /things/{id}
"""


@pytest.mark.parametrize(
    ("change", "named"),
    [
        pytest.param("  host: {}\n", "params.host", id="host"),
        pytest.param("  port: {type: integer, default: 443}\n", "params.port", id="port"),
    ],
)
def test_definition_whose_host_or_port_is_given_per_request_is_refused(
    tmp_path: Path, change: str, named: str
):
    """A caller must never choose where a connection's credentials go: refused at load time."""
    per_request = change.replace("{}", "{per_request: true}").replace(
        "default:", "per_request: true, default:"
    )
    definition = write(tmp_path, HOSTED_PROVIDER.replace(change, per_request), "hosted.yaml")
    problems = problems_of(tmp_path, "providers: [hosted.yaml]\n" + CALLERS)
    (problem,) = problems
    assert problem.file == str(definition)
    assert problem.message.startswith(f"base_url: {{{named}}} is given per request")


def test_definition_whose_host_takes_a_request_field_is_refused(tmp_path: Path):
    """The canonical fields come from the caller too: ``{id}`` cannot choose the host."""
    text = TINY_PROVIDER.replace("https://tiny.example", "https://{id}.tiny.example")
    definition = write(tmp_path, text, "tiny.yaml")
    (problem,) = problems_of(tmp_path, "providers: [tiny.yaml]\n" + CALLERS)
    assert problem.file == str(definition)
    assert problem.message.startswith("base_url: {id} is given per request")


@pytest.mark.parametrize("path", ["{id}/cancel", "things/{id}", ".{id}"])
def test_a_resource_path_that_does_not_start_with_a_slash_is_refused(tmp_path: Path, path: str):
    """A path is appended to the base URL: without a leading "/", a caller's id could extend
    the host (``https://tiny.example`` + ``.attacker.example``) the token is sent to."""
    definition = write(tmp_path, TINY_PROVIDER.replace("/things/{id}", f'"{path}"'), "tiny.yaml")
    (problem,) = problems_of(tmp_path, "providers: [tiny.yaml]\n" + CALLERS)
    assert problem.file == str(definition)
    assert problem.loc == "resources.thing.path"
    assert "must start with /" in problem.message


@pytest.mark.parametrize("header", ["X-{params.tenant}", "{reason}"])
def test_definition_whose_auth_header_name_is_given_per_request_is_refused(
    tmp_path: Path, header: str
):
    """Nor may a caller choose which header carries the credential (one a provider echoes)."""
    text = HOSTED_PROVIDER.replace("header: X-Token", f'header: "{header}"')
    definition = write(tmp_path, text, "hosted.yaml")
    (problem,) = problems_of(tmp_path, "providers: [hosted.yaml]\n" + CALLERS)
    assert problem.file == str(definition)
    assert problem.message.startswith("auth.header: {")
    assert "is given per request" in problem.message


def test_definition_whose_host_uses_connection_params_loads(tmp_path: Path):
    """Params the connection fixes may make the host and port; per-request ones the path."""
    write(tmp_path, HOSTED_PROVIDER.replace("/api", "/api/{params.tenant}"), "hosted.yaml")
    runtime = load_text(
        tmp_path,
        "providers: [hosted.yaml]\n"
        + connection(
            "h", "provider: hosted\ncredentials: {token: fake-token}\nparams: {host: api}\n"
        ),
    )
    assert runtime.targets["h"].base_url.authority.source == "{params.host}:{params.port}"


def test_connection_base_url_whose_host_is_given_per_request_is_refused(tmp_path: Path):
    """Shipper's warehouse_id comes with each request: it may not pick a connection's host."""
    problem = only(
        problems_of(
            tmp_path,
            connection(
                "c",
                """
                provider: shipper
                base_url: "https://{params.warehouse_id}.shipper.example"
                credentials: {api_key: fake-key-0123}
                params: {warehouse_id: wh1}
                """,
            ),
        ),
        "connections.c.base_url",
    )
    assert problem.message.startswith("{params.warehouse_id} is given per request")


# --- callers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(f"key: {CALLER_KEY}\n    key_sha256: '{'ab' * 32}'", id="both"),
        pytest.param("connections: ['*']", id="neither"),
    ],
)
def test_caller_needs_exactly_one_of_key_and_key_sha256(tmp_path: Path, fields: str):
    problem = only(
        problems_of(tmp_path, f"callers:\n  - name: oms\n    {fields}\n"),
        "callers.0",
    )
    assert problem.message == "give exactly one of key or key_sha256"


def test_caller_key_shorter_than_16_characters_is_refused(tmp_path: Path):
    problem = only(
        problems_of(tmp_path, "callers:\n  - name: oms\n    key: '123456789012345'\n"),
        "callers.0.key",
    )
    assert problem.message == "must be at least 16 characters"


def test_caller_key_of_16_characters_is_accepted(tmp_path: Path):
    runtime = load_text(tmp_path, "callers:\n  - name: oms\n    key: '1234567890123456'\n")
    assert runtime.config.callers[0].name == "oms"


@pytest.mark.parametrize("digest", ["ab" * 31, "zz" * 32, "ab" * 33])
def test_key_sha256_must_be_64_hex_digits(tmp_path: Path, digest: str):
    problems = problems_of(tmp_path, f"callers:\n  - name: oms\n    key_sha256: '{digest}'\n")
    assert locs(problems) == ["callers.0.key_sha256"]


def test_duplicate_caller_names_are_refused(tmp_path: Path):
    problem = only(
        problems_of(
            tmp_path,
            f"""
            callers:
              - name: oms
                key: {CALLER_KEY}
              - name: oms
                key: another-caller-key-0123
            """,
        ),
        "callers.1.name",
    )
    assert problem.message == "caller 'oms' is defined twice"


def test_two_callers_with_the_same_key_are_refused(tmp_path: Path):
    problem = only(
        problems_of(
            tmp_path,
            f"""
            callers:
              - name: oms
                key: {CALLER_KEY}
              - name: erp
                key: {CALLER_KEY}
            """,
        ),
        "callers.1",
    )
    assert problem.message == "has the same key as caller 'oms'"


def test_a_key_and_its_own_sha256_count_as_the_same_key(tmp_path: Path):
    digest = hashlib.sha256(CALLER_KEY.encode()).hexdigest().upper()
    problems = problems_of(
        tmp_path,
        f"""
        callers:
          - name: oms
            key: {CALLER_KEY}
          - name: erp
            key_sha256: {digest}
        """,
    )
    assert locs(problems) == ["callers.1"]


def test_at_least_one_caller_is_required(tmp_path: Path):
    problems = problems_of(tmp_path, "callers: []\n")
    assert locs(problems) == ["callers"]


# --- secrets ---------------------------------------------------------------------------------

SHORT_CANARY = "CANARY-SHORT"  # under 16 characters: refused as a caller key

LEAK_CASES = {
    "short caller key": f"callers:\n  - name: oms\n    key: {SHORT_CANARY}\n",
    "caller with both keys": f"callers:\n  - name: oms\n    key: {CANARY}\n    key_sha256: '{'ab' * 32}'\n",
    "two callers with one key": f"callers:\n  - name: a\n    key: {CANARY}\n  - name: b\n    key: {CANARY}\n",
    "caller key of the wrong type": f"callers:\n  - name: oms\n    key: [{CANARY}]\n",
    "caller with an unknown key beside its key": f"callers:\n  - name: oms\n    key: {CANARY}\n    colour: blue\n",
    "undeclared credential": connection(
        "main", f"provider: stateset\ncredentials: {{api_key: fake-key-0123, other: {CANARY}}}\n"
    ),
    "credential of an unknown provider": connection(
        "main", f"provider: nope\ncredentials: {{api_key: {CANARY}}}\n"
    ),
    "credential with a control character": connection(
        "main", f'provider: stateset\ncredentials: {{api_key: "{CANARY}\\t"}}\n'
    ),
    "credential of the wrong type": connection(
        "main", f"provider: stateset\ncredentials: {{api_key: [{CANARY}]}}\n"
    ),
    "credential beside an unknown connection key": connection(
        "main", f"provider: stateset\ncredentials: {{api_key: {CANARY}}}\ncolour: blue\n"
    ),
    "credential beside a required credential missing": connection(
        "main",
        f"provider: shoplazza\ncredentials: {{api_key: {CANARY}}}\nparams: {{shop_domain: s}}\n",
    ),
    "credential in a connection without its base_url": connection(
        "main",
        f"provider: shipper\ncredentials: {{api_key: {CANARY}}}\nparams: {{warehouse_id: W}}\n",
    ),
}


@pytest.mark.parametrize("text", LEAK_CASES.values(), ids=LEAK_CASES.keys())
def test_secret_values_never_appear_in_problems(tmp_path: Path, text: str):
    """Even a problem about the secret itself names where it is, never what it is."""
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    shown = "\n".join([str(caught.value), repr(caught.value.problems)])
    assert CANARY not in shown
    assert SHORT_CANARY not in shown


def test_secret_from_the_environment_never_appears_in_problems(tmp_path: Path):
    """A too-short caller key given through a variable is refused without being shown."""
    with pytest.raises(ConfigError) as caught:
        load_text(
            tmp_path,
            "callers:\n  - name: oms\n    key: ${OMS_API_KEY}\n",
            {"OMS_API_KEY": SHORT_CANARY},
        )
    assert locs(caught.value.problems) == ["callers.0.key"]
    assert SHORT_CANARY not in str(caught.value)


def test_runtime_secrets_hold_credentials_and_caller_keys():
    runtime = load(EXAMPLE, EXAMPLE_ENV)
    assert {
        CALLER_KEY,
        "sk_test_fake_stateset",
        "fake-shipper-key",
        "fake-shoplazza-token",
    } <= runtime.secrets
    assert "my-shop" not in runtime.secrets  # a param is not a secret


def test_literal_secrets_are_collected_too(tmp_path: Path):
    """Secrets written in the file itself (no variable) are also known to the redactor."""
    runtime = load_text(
        tmp_path,
        connection("main", f"provider: stateset\ncredentials: {{api_key: {CANARY}}}\n"),
    )
    assert {CALLER_KEY, CANARY} <= runtime.secrets


def test_runtime_repr_shows_no_secret():
    runtime = load(EXAMPLE, EXAMPLE_ENV)
    shown = repr(runtime)
    assert CALLER_KEY not in shown
    assert "fake-shipper-key" not in shown


# --- provider files of the configuration -----------------------------------------------------


def test_extra_provider_file_is_read_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = tmp_path / "deploy"
    write(folder, TINY_PROVIDER, "providers/tiny.yaml")
    config = write(
        folder,
        "providers: [providers/tiny.yaml]\n"
        + connection("t", "provider: tiny\ncredentials: {token: fake-token}\n"),
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    runtime = load(config, {})

    assert {"tiny", "stateset", "shipper", "shoplazza", "rxuniverse"} <= set(runtime.providers)
    assert runtime.targets["t"].definition.title == "Tiny"


def test_extra_provider_folder_adds_each_of_its_files(tmp_path: Path):
    write(tmp_path, TINY_PROVIDER, "providers/tiny.yaml")
    write(tmp_path, TINY_PROVIDER.replace("name: tiny", "name: small"), "providers/small.yml")
    runtime = load_text(tmp_path, "providers: [providers]\n" + CALLERS)
    assert {"tiny", "small"} <= set(runtime.providers)


def test_extra_provider_file_overrides_a_builtin_by_name(tmp_path: Path):
    override = TINY_PROVIDER.replace("name: tiny", "name: stateset").replace(
        "title: Tiny", "title: Patched StateSet"
    )
    write(tmp_path, override, "stateset.yaml")
    runtime = load_text(
        tmp_path,
        "providers: [stateset.yaml]\n"
        + connection("main", "provider: stateset\ncredentials: {token: fake-token}\n"),
    )
    assert runtime.providers["stateset"].title == "Patched StateSet"
    assert list(runtime.targets["main"].definition.resources) == ["thing"]
    assert runtime.targets["main"].base_url.authority.source == "tiny.example"


def test_provider_file_error_is_reported_with_its_own_file_name(tmp_path: Path):
    bad = write(tmp_path, TINY_PROVIDER + "colour: blue\n", "bad.yaml")
    problems = problems_of(tmp_path, "providers: [bad.yaml]\n" + CALLERS)
    (problem,) = problems
    assert problem.file == str(bad)
    assert problem.loc == "colour"


def test_provider_file_yaml_error_is_reported_with_its_own_file_name(tmp_path: Path):
    bad = write(tmp_path, "name: [unclosed\n", "broken.yaml")
    (problem,) = problems_of(tmp_path, "providers: [broken.yaml]\n" + CALLERS)
    assert problem.file == str(bad)
    assert problem.loc.startswith("line ")


def test_missing_provider_file_is_reported(tmp_path: Path):
    (problem,) = problems_of(tmp_path, "providers: [absent.yaml]\n" + CALLERS)
    assert problem.file == str(tmp_path / "absent.yaml")
    assert problem.message == "provider definition file or folder not found"


# --- version ---------------------------------------------------------------------------------


def test_version_is_stable_for_the_same_configuration(tmp_path: Path):
    text = CALLERS
    assert load_text(tmp_path, text).version == load_text(tmp_path, text).version


def test_version_changes_when_the_configuration_changes(tmp_path: Path):
    before = load_text(tmp_path, "server: {port: 8080}\n" + CALLERS).version
    after = load_text(tmp_path, "server: {port: 8081}\n" + CALLERS).version
    assert before != after


def test_version_changes_when_a_variable_changes(tmp_path: Path):
    text = "server: {port: '${PORT}'}\n" + CALLERS
    assert load_text(tmp_path, text, {"PORT": "1"}).version != (
        load_text(tmp_path, text, {"PORT": "2"}).version
    )


def test_version_changes_when_an_extra_provider_file_changes(tmp_path: Path):
    text = "providers: [tiny.yaml]\n" + connection(
        "t", "provider: tiny\ncredentials: {token: fake-token}\n"
    )
    write(tmp_path, TINY_PROVIDER, "tiny.yaml")
    before = load_text(tmp_path, text).version
    write(tmp_path, TINY_PROVIDER.replace("/things/{id}", "/v2/things/{id}"), "tiny.yaml")
    after = load_text(tmp_path, text).version
    assert before != after
