"""Request bodies a definition declares: JSON (GraphQL included), a form, or none, and a
vendor's content type in place of the default one."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest
from pydantic import ValidationError

from gateway.definition import ProviderDefinition
from gateway.models import CancelRequest
from gateway.targets import Target, split_base_url
from gateway.translate.build import Call, build_request
from gateway.translate.wire import UpstreamRequest

CALL = Call("cxl_1", "oms", "key-1", "req-1", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")


def build(resource: dict[str, Any], **request: Any) -> UpstreamRequest:
    definition = ProviderDefinition.model_validate(
        {
            "name": "shop",
            "base_url": "https://shop.example",
            "resources": {"order": {"method": "POST", "path": "/orders/{id}/cancel", **resource}},
        }
    )
    target = Target("shop", definition, split_base_url("https://shop.example"), {}, {}, 10)
    canonical = CancelRequest.model_validate({"connection": "shop", "id": "o-1", **request})
    return build_request(target, "order", canonical, CALL)


def header(request: UpstreamRequest, name: str) -> str | None:
    return next((v for n, v in request.headers if n.lower() == name.lower()), None)


def test_a_form_body_is_url_encoded_with_its_content_type() -> None:
    request = build(
        {
            "body_encoding": "form",
            "body": {
                "order_id": "{id}",
                "reason": "{reason}",
                "notify": "{notify}",
                "x": "{notes}",
            },
        },
        reason="out of stock & more",
        notify=True,
    )
    assert header(request, "Content-Type") == "application/x-www-form-urlencoded"
    assert request.body is not None
    assert parse_qs(request.body.decode()) == {
        "order_id": ["o-1"],
        "reason": ["out of stock & more"],
        "notify": ["true"],
    }  # an absent value (notes) is left out, as in JSON


def test_a_graphql_mutation_is_json_with_a_query_and_variables() -> None:
    """A query's own braces are written doubled in the definition: single ones are placeholders."""
    mutation = "mutation cancel($id: ID!) { orderCancel(orderId: $id) { job { id } } }"
    written = mutation.replace("{", "{{").replace("}", "}}")
    request = build({"body": {"query": written, "variables": {"id": "gid://shop/Order/{id}"}}})
    assert request.body is not None
    assert orjson.loads(request.body) == {
        "query": mutation,
        "variables": {"id": "gid://shop/Order/o-1"},
    }
    assert header(request, "Content-Type") == "application/json"


def test_a_vendor_content_type_replaces_the_default() -> None:
    vendor = "application/vnd.shop.v2+json"
    request = build({"headers": {"Content-Type": vendor, "Accept": vendor}, "body": {"a": 1}})
    assert header(request, "Content-Type") == vendor
    assert header(request, "Accept") == vendor


def test_no_body_sends_none_and_no_content_type() -> None:
    request = build({})
    assert request.body is None
    assert header(request, "Content-Type") is None


@pytest.mark.parametrize("body", [{"a": {"b": 1}}, {"a": [1, 2]}, ["x"], None])
def test_a_form_body_must_be_a_flat_mapping(body: Any) -> None:
    with pytest.raises(ValidationError, match="a form body is a mapping"):
        build({"body_encoding": "form", "body": body})


def test_a_body_is_shown_as_its_fields_or_its_json_value() -> None:
    """What a dry run shows: a form's fields as a mapping (an empty value kept), a JSON body
    (under a vendor's type too) as its value, no body as null."""
    form = build({"body_encoding": "form", "body": {"id": "{id}", "note": ""}})
    assert form.shown_body() == {"id": "o-1", "note": ""}
    vendor = build({"body": {"id": "{id}"}, "headers": {"Content-Type": "application/vnd.x+json"}})
    assert vendor.shown_body() == {"id": "o-1"}
    assert build({}).shown_body() is None
    text = UpstreamRequest("POST", "https://x.example", (("Content-Type", "text/plain"),), b"hi")
    assert text.shown_body() == "hi"
