"""The OpenAPI document states the rules the gateway checks whatever the connection: what the
document allows, the gateway's own checks accept, and what they refuse, the document refuses.

Schemas are checked with jsonschema_rs, the validator schemathesis uses: its patterns follow
ECMA-262, as JSON Schema's do (Python's ``re`` would let ``$`` match before a final newline).
"""

from __future__ import annotations

import json
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

from gateway.api import parse_batch
from gateway.errors import GatewayError
from gateway.inbound import check_idempotency_key, json_body
from gateway.loader import load_providers
from gateway.models import MAX_BATCH_KEY, new_cancellation_id
from gateway.openapi import openapi_document
from gateway.request import parse_request

CONTROLS = ["\x00", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"]
PRINTABLE = ["\xa0", "é", "\u2028", "😀", " ", "/", "%"]
LINE_FIELDS = ["connection", "resource", "id", "reason", "requested_by"]
VALID = {"connection": "stateset-demo", "id": "asn_1"}


@cache
def document() -> dict[str, Any]:
    return openapi_document()


def _validator(schema: dict[str, Any]) -> Any:
    root = {**schema, "components": document()["components"]}
    return jsonschema_rs.validator_for(root, validate_formats=True)


@cache
def _component(name: str) -> Any:
    return _validator({"$ref": f"#/components/schemas/{name}"})


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def document_allows(body: bytes) -> bool:
    """Whether the body is JSON that the document's request schema allows."""
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except ValueError:
        return False
    return bool(_component("CancelRequest").is_valid(data))


def gateway_accepts(body: bytes) -> bool:
    """Whether the gateway's own checks, the ones every connection shares, take the body."""
    try:
        _, problems = parse_request(json_body(body))
    except GatewayError:
        return False
    return not problems


def agree(body: Any) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    assert document_allows(raw) == gateway_accepts(raw), raw


def _with_character(field: str, char: str, where: str) -> dict[str, Any]:
    value = {"start": char + "ab", "middle": "a" + char + "b", "end": "ab" + char}[where]
    if field == "params key":
        return {**VALID, "params": {value: "x"}}
    if field == "params value":
        return {**VALID, "params": {"warehouse_id": value}}
    return {**VALID, field: value}


@pytest.mark.parametrize("where", ["start", "middle", "end"])
@pytest.mark.parametrize("char", CONTROLS + PRINTABLE)
@pytest.mark.parametrize("field", [*LINE_FIELDS, "notes", "params key", "params value"])
def test_a_character_is_refused_by_the_document_exactly_when_the_gateway_refuses_it(
    field: str, char: str, where: str
):
    """Control characters anywhere in a string (tab, line feed and carriage return allowed in
    notes): the document and the gateway refuse the same ones."""
    agree(_with_character(field, char, where))


def test_a_control_character_in_the_id_is_refused_by_the_document():
    """The case the document used to allow: an id with a control character."""
    assert not document_allows(orjson.dumps({**VALID, "id": "asn\x001"}))
    assert not document_allows(orjson.dumps({**VALID, "id": "asn_1\n"}))


@pytest.mark.parametrize("object_id", [".", "..", "...", ". ", ".a", "a..", "./", "\u2024"])
def test_the_dot_ids_are_refused_by_both_and_nothing_else(object_id: str):
    """'.' and '..' could climb a path: both refuse them, and only them."""
    agree({**VALID, "id": object_id})


@pytest.mark.parametrize(
    "value",
    ["text", "", 0, -3, 2.5, 1e308, -1e308, True, False, None, [], ["a"], {}, {"a": 1}],
)
def test_params_values_of_the_same_types_are_allowed(value: Any):
    """A param is a string, a number or a boolean; null, lists and objects are refused."""
    agree({**VALID, "params": {"warehouse_id": value}})


@pytest.mark.parametrize(
    "raw",
    [
        b'{"connection": "c", "id": "i", "params": {"n": 1e400}}',
        b'{"connection": "c", "id": "i", "params": {"n": -1e400}}',
        b'{"connection": "c", "id": "i", "params": {"n": 1' + b"0" * 309 + b"}}",
        b'{"connection": "c", "id": "i", "params": {"n": NaN}}',
        b'{"connection": "c", "id": "i", "params": {"n": 179769313486231570' + b"0" * 291 + b"}}",
        b'{"connection": "c", "id": "i", "params": {"n": 1.7976931348623157e308}}',
    ],
)
def test_numbers_beyond_a_double_are_refused_by_both(raw: bytes):
    """A number must fit a double: the largest one passes, past it the body is refused."""
    agree(raw)


@pytest.mark.parametrize("char", ["a", "é", "😀"])
@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("connection", 200),
        ("resource", 64),
        ("id", 128),
        ("reason", 500),
        ("requested_by", 200),
        ("notes", 2000),
        ("params key", 64),
    ],
)
def test_lengths_are_counted_alike(field: str, limit: int, char: str):
    """Limits count characters (code points) in the document as in the gateway."""
    for length in (0, 1, limit, limit + 1):
        value = char * length
        if field == "params key":
            agree({**VALID, "params": {value: "x"}})
        else:
            agree({**VALID, field: value})


def _cancel_operation() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # schemathesis' own deprecations are not ours
        schema = schemathesis.openapi.from_dict(document())
    return schema["/v1/cancellations"]["POST"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_bodies_are_judged_alike(mode: GenerationMode):
    """Bodies schemathesis makes from the document, valid and not: the document and the
    gateway's own checks agree on each. (The live run cannot say so for this operation: there,
    the provider a connection names may refuse more.)"""

    @settings(
        max_examples=300,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(_cancel_operation().as_strategy(generation_mode=mode))
    def judged_alike(case: Any) -> None:
        try:
            raw = json.dumps(case.body, allow_nan=False).encode()
        except (TypeError, ValueError):  # not JSON at all: nothing to compare
            return
        agree(raw)

    judged_alike()


def _header_schema(path: str, name: str) -> Any:
    [header] = [p for p in document()["paths"][path]["post"]["parameters"] if p["name"] == name]
    return jsonschema_rs.validator_for(header["schema"])


def _batch_accepts(key: str) -> bool:
    try:
        parse_batch(b'{"items": [{}]}', key)
    except GatewayError:
        return False
    return True


def _single_accepts(key: str) -> bool:
    try:
        check_idempotency_key(key)
    except GatewayError:
        return False
    return True


# As a header carries them: HTTP drops the spaces around a value, so none has any.
KEYS = ["k", "a b", "~!", "é", "a\x7f", "k" * 249, "k" * 250, "k" * 251, "k" * 255, "k" * 256]


@pytest.mark.parametrize("key", KEYS)
def test_idempotency_keys_are_judged_alike(key: str):
    """A key is 1 to 255 printable ASCII characters, a batch's at most MAX_BATCH_KEY (item i
    uses key#i): the document says each, per operation."""
    single = _header_schema("/v1/cancellations", "Idempotency-Key")
    batch = _header_schema("/v1/cancellations/batch", "Idempotency-Key")
    assert single.is_valid(key) == _single_accepts(key)
    assert batch.is_valid(key) == _batch_accepts(key)
    assert batch.is_valid("k" * MAX_BATCH_KEY)
    assert not batch.is_valid("k" * (MAX_BATCH_KEY + 1))


@pytest.mark.parametrize("key", ["", " ", "   ", " k", "k "])
def test_a_key_with_spaces_around_it_is_not_a_key_the_document_allows(key: str):
    """HTTP drops the spaces around a header value: spaces alone arrive as an empty key (a
    422), and a key cannot start or end with one."""
    for path in ("/v1/cancellations", "/v1/cancellations/batch"):
        assert not _header_schema(path, "Idempotency-Key").is_valid(key)


def _cancellation_id_schema() -> Any:
    operation = document()["paths"]["/v1/cancellations/{cancellation_id}"]["get"]
    [parameter] = operation["parameters"]
    return jsonschema_rs.validator_for(parameter["schema"])


def test_every_cancellation_id_the_gateway_makes_is_one_the_document_allows():
    schema = _cancellation_id_schema()
    assert all(schema.is_valid(new_cancellation_id()) for _ in range(200))


@pytest.mark.parametrize(
    "cancellation_id",
    ["batch", "cxl_", "cxl_" + "a" * 25, "cxl_" + "a" * 27, "CXL_" + "a" * 26, "cxl_" + "A" * 26],
)
def test_ids_of_another_form_are_refused_by_the_document(cancellation_id: str):
    """Answered 404 whatever the ledger holds: the document says which ids can be found."""
    schema = _cancellation_id_schema()
    assert not schema.is_valid(cancellation_id)
    assert not schema.is_valid(new_cancellation_id() + "\n")


def test_cancelled_at_is_documented_as_a_date_time():
    """A client may parse cancelled_at as RFC 3339: the document says it is one."""
    envelope = _component("Envelope")
    assert envelope.is_valid({"status": "cancelled", "cancelled_at": "2024-01-16T10:30:00Z"})
    assert envelope.is_valid({"status": "cancelled", "cancelled_at": None})
    assert not envelope.is_valid({"status": "cancelled", "cancelled_at": "16/01/2024 10:30"})


def test_every_operation_has_a_summary_and_the_document_a_server():
    operations = [op for ops in document()["paths"].values() for op in ops.values()]
    assert all(op.get("summary") for op in operations)
    assert document()["servers"] == [{"url": "/", "description": "this gateway"}]


def test_every_rule_of_a_built_in_provider_is_in_the_field_it_concerns():
    """StateSet's required reason, Shipper's limits, each provider's resources and params:
    the descriptions say them, from the definitions, so they cannot drift apart."""
    properties = document()["components"]["schemas"]["CancelRequest"]["properties"]
    providers = load_providers(Path(), (), [])
    for provider in providers.values():
        for resource_name in provider.resources:
            assert f"{provider.name}: " in properties["resource"]["description"]
            assert resource_name in properties["resource"]["description"]
        for resource_name, resource in provider.resources.items():
            for field, rule in resource.fields.items():
                said = properties[field]["description"]
                if rule.required:
                    assert f"{provider.name} {resource_name}: required" in said
                if rule.max_length is not None:
                    assert f"at most {rule.max_length} characters" in said
        for name, param in provider.params.items():
            assert (f"{provider.name} {name} (" in properties["params"]["description"]) == (
                param.per_request
            )
    assert "stateset asn: required" in properties["reason"]["description"]
