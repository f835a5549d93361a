"""Provider definitions: a file that validates is complete; everything else is refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from gateway.definition import ParamSpec, ProviderDefinition
from gateway.providers import builtin_files
from gateway.translate.templates import Template
from tests.translate.conftest import load_builtin_definitions


@pytest.fixture(scope="module")
def definitions() -> dict[str, ProviderDefinition]:
    """The built-in provider definitions, by name."""
    return load_builtin_definitions()


def minimal() -> dict[str, Any]:
    """The smallest useful definition, as its YAML would load."""
    return {
        "name": "acme",
        "title": "Acme",
        "base_url": "https://api.acme.example",
        "credentials": {"api_key": {}},
        "params": {"region": {"required": True}},
        "auth": {"header": "Authorization", "value": "Bearer {credentials.api_key}"},
        "errors": {
            "code": "error.code",
            "rules": [{"when": {"code": "GONE"}, "outcome": "not_found"}],
        },
        "resources": {
            "order": {
                "method": "POST",
                "path": "/v1/{params.region}/orders/{id}/cancel",
                "headers": {"X-Caller": "{caller.name}"},
                "query": {"why": "{reason}"},
                "body": {"reason": "{reason}", "nested": ["{notes}", 1]},
                "fields": {"requested_by": {"default": "{caller.name}"}},
                "success": {"status": [200], "when": "status == 'cancelled'"},
                "extract": {"cancelled_at": "cancelled_at", "provider_response": {"n": "n"}},
            }
        },
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """``minimal()`` with the value at a dotted path replaced (or added)."""
    data = copy.deepcopy(minimal())
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        ProviderDefinition.model_validate(data)
    return str(info.value)


def test_minimal_definition_validates_and_compiles() -> None:
    """A valid file compiles: templates become Template objects, JMESPath is parsed."""
    definition = ProviderDefinition.model_validate(minimal())
    resource = definition.resources["order"]
    assert isinstance(resource.path, Template)
    assert resource.success.when is not None
    assert resource.success.when.search({"status": "cancelled"}) is True
    assert definition.template_problems() == []


@pytest.mark.parametrize(
    "path",
    [
        "surprise",
        "auth.prefix",
        "credentials.api_key.secret",
        "params.region.example",
        "errors.status",
        "resources.order.timeout",
        "resources.order.success.body",
        "resources.order.extract.id",
        "resources.order.fields.requested_by.min_length",
        "errors.rules.0.when.header",
        "errors.rules.0.why",
    ],
)
def test_unknown_keys_are_rejected(path: str) -> None:
    """Typos anywhere in a definition are errors, not silently ignored."""
    data = copy.deepcopy(minimal())
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = "x"
    assert "Extra inputs are not permitted" in refused(data)


def test_unknown_canonical_field_rule_is_rejected() -> None:
    """``fields`` only names canonical request fields."""
    refused(with_change("resources.order.fields", {"order_no": {"required": True}}))


@pytest.mark.parametrize(
    "path",
    [
        "resources.order.success.when",
        "resources.order.extract.cancelled_at",
        "resources.order.extract.provider_response",
        "errors.code",
        "errors.message",
        "errors.type",
    ],
)
def test_bad_jmespath_is_rejected(path: str) -> None:
    """A JMESPath expression that does not parse is refused at load, not at request time."""
    value: Any = "status =="
    if path.endswith("provider_response"):
        value = {"n": "[unclosed"}
    assert "JMESPath" in refused(with_change(path, value))


def test_non_string_jmespath_is_rejected() -> None:
    """An expression must be a string."""
    assert "JMESPath" in refused(with_change("errors.code", 5))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("resources.order.path", "/v1/orders/{params.nope}/cancel"),
        ("resources.order.path", "/v1/orders/{order_id}/cancel"),
        ("resources.order.headers", {"X-Thing": "{params.nope}"}),
        ("resources.order.query", {"q": "{nope}"}),
        ("resources.order.body", {"a": {"b": ["{params.nope}"]}}),
        ("resources.order.fields", {"reason": {"default": "{params.nope}"}}),
        ("base_url", "https://{params.nope}.acme.example"),
        ("auth.header", "{params.nope}"),
        ("auth.value", "Bearer {credentials.password}"),
    ],
)
def test_template_referencing_unknown_name_is_rejected(path: str, value: Any) -> None:
    """Every placeholder must name the vocabulary or a declared param/credential."""
    assert "references nothing known" in refused(with_change(path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("resources.order.path", "/v1/orders/{id}/cancel/{credentials.api_key}"),
        ("resources.order.body", {"key": "{credentials.api_key}"}),
        ("resources.order.body", {"data": [{"key": "k={credentials.api_key}"}]}),
        ("resources.order.query", {"api_key": "{credentials.api_key}"}),
        ("resources.order.headers", {"X-Api-Key": "{credentials.api_key}"}),
        ("resources.order.fields", {"notes": {"default": "{credentials.api_key}"}}),
        ("base_url", "https://{credentials.api_key}.acme.example"),
        ("auth.header", "X-{credentials.api_key}"),
        ("resources.order.query", {"why": "{reason|credentials.api_key}"}),
    ],
)
def test_credentials_outside_auth_value_are_rejected(path: str, value: Any) -> None:
    """Credentials may only appear in ``auth.value``: never in a URL, a body or a header name."""
    assert "credentials may only be used in auth" in refused(with_change(path, value))


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("{credentials.api_key}", "credentials may only be used in auth"),
        ("{params.nope}", "references nothing known"),
    ],
)
def test_header_is_checked_even_when_a_query_key_has_its_name(header: str, problem: str) -> None:
    """A header template is checked whatever the query parameters are called."""
    data = with_change("resources.order.headers", {"why": header})
    assert problem in refused(data)


@pytest.mark.parametrize("source", ["/v1/{id", "/v1/{Bad}/x", "/v1/{}"])
def test_malformed_template_is_rejected(source: str) -> None:
    """A template that does not compile is a validation error."""
    refused(with_change("resources.order.path", source))


def test_rule_without_criteria_is_rejected() -> None:
    """A rule must match on at least one of status, code, type, message."""
    rule = {"when": {}, "outcome": "not_found"}
    assert "at least one of" in refused(with_change("errors.rules", [rule]))


def test_rule_with_only_null_criteria_is_rejected() -> None:
    """Explicit nulls are no criteria either."""
    rule = {"when": {"status": None, "code": None}, "outcome": "not_found"}
    assert "at least one of" in refused(with_change("errors.rules", [rule]))


@pytest.mark.parametrize("outcome", ["cancelled", "unauthorized", "internal_error", "nope"])
def test_rule_outcome_must_be_a_provider_outcome(outcome: str) -> None:
    """Rules classify into provider-side codes only."""
    rule = {"when": {"status": 400}, "outcome": outcome}
    refused(with_change("errors.rules", [rule]))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("resources", {}),
        ("name", "Acme"),
        ("name", "1acme"),
        ("resources.order.method", "FETCH"),
        ("params.region.type", "date"),
        ("params.region.pattern", "([unclosed"),
        ("params.region.max_length", 0),
        ("resources.order.headers", {"X Caller": "{caller.name}"}),  # not a header name
        ("resources.order.headers", {"X-Caller:": "{caller.name}"}),
    ],
)
def test_structural_mistakes_are_rejected(path: str, value: Any) -> None:
    """Other malformed values are refused too."""
    refused(with_change(path, value))


def test_every_builtin_file_loads() -> None:
    """The built-in definitions validate, one per file, named like the file."""
    files = builtin_files()
    assert [f.name for f in files] == [
        "amazon_mcf.yaml",
        "bigcommerce.yaml",
        "magento.yaml",
        "rxuniverse.yaml",
        "shipengine.yaml",
        "shipper.yaml",
        "shopee.yaml",
        "shopify.yaml",
        "shoplazza.yaml",
        "stateset.yaml",
        "walmart.yaml",
        "woocommerce.yaml",
    ]
    for file in files:
        definition = ProviderDefinition.model_validate(yaml.safe_load(file.read_text("utf-8")))
        assert f"{definition.name}.yaml" == file.name
        assert definition.template_problems() == []


@pytest.mark.parametrize(
    ("provider", "resource", "method", "credentials"),
    [
        ("stateset", "asn", "POST", ["api_key"]),
        ("shipper", "sales_order", "PATCH", ["api_key"]),
        ("shoplazza", "procurement", "PATCH", ["access_token"]),
        ("rxuniverse", "order", "DELETE", ["api_key"]),
    ],
)
def test_builtin_resources_and_credentials(
    definitions: dict[str, ProviderDefinition],
    provider: str,
    resource: str,
    method: str,
    credentials: list[str],
) -> None:
    """Each built-in cancels the contract's resource with its verb, retry-safe (§5 Retries)."""
    definition = definitions[provider]
    assert list(definition.resources) == [resource]
    assert definition.resources[resource].method == method
    assert definition.resources[resource].retry_safe is True
    assert list(definition.credentials) == credentials


@pytest.mark.parametrize(
    ("provider", "base_url"),
    [
        ("stateset", "https://api.stateset.com"),
        ("shoplazza", "https://{params.shop_domain}.myshoplaza.com"),
        ("shipper", None),
        ("rxuniverse", None),
    ],
)
def test_builtin_default_hosts(
    definitions: dict[str, ProviderDefinition], provider: str, base_url: str | None
) -> None:
    """Shipper and RxUniverse have no public default host; the others do."""
    template = definitions[provider].base_url
    assert (template.source if template else None) == base_url


@pytest.mark.parametrize(
    "expression",
    [
        "a",
        "a.b",
        "a.b.c",
        '"x-y".z',
        "a[0]",
        "a || b",
        "a.*",
        "a.b[0].c",
        "a.b == 'c'",
        "a != 'text'",
        "a.b.c == `1`",
        "a.b.c == `true`",
        "a == `null`",
        "a != `null`",
        "a == `[1, 2]`",
        'a.b == `{"c": 1}`',
        "a.b.c == `1.0`",
    ],
)
@pytest.mark.parametrize(
    "document",
    [
        {"a": {"b": {"c": 1}}, "x-y": {"z": "q"}},
        {"a": [1, 2], "b": "fallback"},
        {"a": {"b": "c"}},
        {"a": "text"},
        {"a": None},
        {"a": {"b": {"c": True}}},
        {"a": {"b": {"c": 1.0}}},
        {"a": {"b": "c"}, "x-y": None},
        {"a": {"b": {"c": False}}},
        {"a": {"b": {"c": 0}}},
        [],
        "scalar",
        None,
    ],
)
def test_expressions_answer_as_jmespath_does(expression: str, document: object) -> None:
    """A compiled expression (fast field chain or not) answers exactly as JMESPath."""
    import jmespath

    from gateway.translate.paths import compile_path as _jmespath

    assert _jmespath(expression).search(document) == jmespath.search(expression, document)


def test_plain_field_chains_take_the_fast_path() -> None:
    """'a.b.c' and quoted fields become a FieldChain; anything else stays JMESPath's."""
    from gateway.translate.paths import FieldChain
    from gateway.translate.paths import compile_path as _jmespath

    assert isinstance(_jmespath("procurement.updated_at"), FieldChain)
    assert _jmespath('"x-y".z').keys == ("x-y", "z")  # type: ignore[attr-defined]
    assert not isinstance(_jmespath("a[0]"), FieldChain)


def test_a_field_compared_with_a_literal_takes_the_fast_path() -> None:
    from gateway.translate.paths import FieldEquals
    from gateway.translate.paths import compile_path as _jmespath

    assert isinstance(_jmespath("status == 'cancelled'"), FieldEquals)
    assert isinstance(_jmespath("metadata.http_status_code == `200`"), FieldEquals)
    assert not isinstance(_jmespath("a == b"), FieldEquals)  # two fields: JMESPath's
    assert not isinstance(_jmespath("a[0] == `1`"), FieldEquals)
    assert not isinstance(_jmespath("a < `1`"), FieldEquals)


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("integer", "2001887", 2001887),
        ("integer", "-3", -3),
        ("number", "1.5", 1.5),
        ("boolean", "true", True),
        ("boolean", "false", False),
        ("integer", "12abc", "12abc"),  # not a number: stays text, and is refused as such
        ("string", "42", "42"),
    ],
)
def test_a_connections_param_from_the_environment_takes_the_params_type(
    kind: str, text: str, value: object
) -> None:
    spec = ParamSpec(type=kind)
    assert spec.from_text(text) == value
    assert type(spec.from_text(text)) is type(value)
