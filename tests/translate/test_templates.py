"""Templates: compiling, rendering, and the URL encoders that keep ids inside one segment."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.translate.templates import (
    Ref,
    TemplateError,
    authority_of,
    compile_structure,
    compile_template,
    encode_host_label,
    encode_query_value,
    encode_segment,
    render_structure,
    unknown_names,
)

# --- compile / render ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, 0, 12, 1.5, "text", [1, 2], {"a": 1}])
def test_lone_placeholder_keeps_the_value_type(value: Any) -> None:
    """A template that is one placeholder renders to the value itself, not its text."""
    rendered = compile_template("{notify}").render({"notify": value})
    assert rendered == value
    assert type(rendered) is type(value)


@pytest.mark.parametrize(
    ("value", "text"), [(2, "2"), (True, "true"), (1.5, "1.5"), ("x", "x"), (None, None)]
)
def test_a_lone_placeholder_marked_text_renders_its_value_as_text(value: Any, text: Any) -> None:
    """``:text`` for providers that want a number as a JSON string ("amount": "2")."""
    template = compile_template("{item.quantity|notify:text}")
    assert template.render({"item.quantity": value}) == text
    assert list(template.names) == ["item.quantity", "notify"]


def test_lone_placeholder_with_encoder_renders_text() -> None:
    """Given an encoder, even a lone placeholder renders as encoded text."""
    assert compile_template("{notify}").render({"notify": True}, str) == "true"


@pytest.mark.parametrize(
    ("source", "ctx", "expected"),
    [
        ("Bearer {credentials.api_key}", {"credentials.api_key": "k"}, "Bearer k"),
        ("/v1/asns/{id}/cancel", {"id": "asn_1"}, "/v1/asns/asn_1/cancel"),
        ("{id}-{reason}", {"id": "a", "reason": "b"}, "a-b"),
        ("flag={notify}", {"notify": False}, "flag=false"),
        ("n={params.count}", {"params.count": 3}, "n=3"),
        ("plain text", {}, "plain text"),
        ("", {}, ""),
    ],
)
def test_text_interpolation(source: str, ctx: dict[str, Any], expected: str) -> None:
    """Placeholders inside text render as text; booleans as JSON's true/false."""
    assert compile_template(source).render(ctx) == expected


@pytest.mark.parametrize(
    ("ctx", "expected"),
    [
        ({"params.reason_code": "R1", "reason": "late"}, "R1"),
        ({"reason": "late"}, "late"),
        ({"params.reason_code": None, "reason": "late"}, "late"),
        ({"params.reason_code": "", "reason": "late"}, ""),
        ({}, None),
    ],
)
def test_alternatives_take_the_first_present_value(
    ctx: dict[str, Any], expected: str | None
) -> None:
    """``{a|b}`` renders the first alternative that is not None (empty strings count)."""
    template = compile_template("{params.reason_code|reason}")
    assert template.parts == (Ref(("params.reason_code", "reason")),)
    assert template.render(ctx) == expected


def test_alternatives_tolerate_spaces_around_names() -> None:
    """``{ a | b }`` is the same reference as ``{a|b}``."""
    assert compile_template("{ params.reason_code | reason }").parts == (
        Ref(("params.reason_code", "reason")),
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{literal}}", "{literal}"),
        ("a{{b", "a{b"),
        ("a}}b", "a}b"),
        ("{{{id}}}", "{X}"),
        ("{{id}}", "{id}"),
    ],
)
def test_doubled_braces_stand_for_one(source: str, expected: str) -> None:
    """``{{`` and ``}}`` are literal braces, never placeholders."""
    assert compile_template(source).render({"id": "X"}, str) == expected


def test_escaped_braces_are_literal() -> None:
    """A template made only of escapes has no references."""
    template = compile_template("{{id}}")
    assert list(template.names) == []
    assert template.render({}, str) == "{id}"


@pytest.mark.parametrize("source", ["{", "}", "{id", "id}", "{id}}", "a{b{c}}", "{{id}"])
def test_unbalanced_brace_is_an_error(source: str) -> None:
    """A single brace that is neither a placeholder nor escaped is refused."""
    with pytest.raises(TemplateError):
        compile_template(source)


@pytest.mark.parametrize(
    "source",
    [
        "{}",
        "{ }",
        "{Id}",
        "{1id}",
        "{id.}",
        "{a.b.c}",
        "{id|}",
        "{|id}",
        "{id reason}",
        "{params.}",
        "{$id}",
    ],
)
def test_bad_reference_is_an_error(source: str) -> None:
    """References must be names (optionally one dotted suffix); anything else is refused."""
    with pytest.raises(TemplateError):
        compile_template(source)


def test_missing_value_in_text_makes_the_whole_template_absent() -> None:
    """One absent placeholder renders the whole template as None (omit), not a partial text."""
    assert compile_template("Bearer {credentials.api_key}").render({}) is None
    assert compile_template("{id}/{reason}").render({"id": "a"}, str) is None


def test_template_names_lists_every_alternative() -> None:
    """``names`` yields each reference, alternatives included, in order."""
    template = compile_template("/x/{id}/{params.a|reason}")
    assert list(template.names) == ["id", "params.a", "reason"]


# --- structures -------------------------------------------------------------------------------


def test_render_structure_omits_absent_dict_fields() -> None:
    """Body fields whose template has no value are left out, false and 0 are kept."""
    body = compile_structure(
        {
            "reason": "{reason}",
            "notes": "{notes}",
            "notify_supplier": "{notify}",
            "count": 0,
            "fixed": "literal",
            "nested": {"a": "{notes}", "b": "{id}"},
        }
    )
    rendered = render_structure(body, {"reason": "r", "notify": False, "id": "X"})
    assert rendered == {
        "reason": "r",
        "notify_supplier": False,
        "count": 0,
        "fixed": "literal",
        "nested": {"b": "X"},
    }


def test_render_structure_omits_absent_list_items() -> None:
    """List items whose template has no value are dropped; the rest keep their order."""
    body = compile_structure(["{id}", "{notes}", "x-{reason}", 5, None, {"k": "{notes}"}])
    assert render_structure(body, {"id": "A", "reason": "r"}) == ["A", "x-r", 5, {}]


def test_compile_structure_leaves_non_strings_literal() -> None:
    """Numbers, booleans and None in a YAML body stay as they are."""
    assert compile_structure({"a": 1, "b": True, "c": None, "d": 1.5}) == {
        "a": 1,
        "b": True,
        "c": None,
        "d": 1.5,
    }


def test_compile_structure_reports_bad_templates() -> None:
    """A bad template anywhere in a nested structure is an error."""
    with pytest.raises(TemplateError):
        compile_structure({"data": {"list": ["ok", "{bad"]}})


# --- URL encoders ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("../../admin", "..%2F..%2Fadmin"),
        ("a/b?x=1#f", "a%2Fb%3Fx%3D1%23f"),
        ("%2e%2e", "%252e%252e"),
        ("%2F", "%252F"),
        ("with space", "with%20space"),
        ("plus+sign", "plus%2Bsign"),
        ("semi;colon&amp", "semi%3Bcolon%26amp"),
        ("back\\slash", "back%5Cslash"),
        ("café", "caf%C3%A9"),
        ("注文-1", "%E6%B3%A8%E6%96%87-1"),
        ("asn_0901f083-aa1c.x~y", "asn_0901f083-aa1c.x~y"),
        ("...", "..."),
    ],
)
def test_encode_segment_keeps_the_value_in_one_segment(value: str, expected: str) -> None:
    """Everything but unreserved characters is percent-encoded, so no ``/ ? # %`` survive."""
    encoded = encode_segment(value)
    assert encoded == expected
    assert not any(c in encoded for c in "/?# ")


@pytest.mark.parametrize("value", [".", ".."])
def test_encode_segment_refuses_dot_segments(value: str) -> None:
    """``.`` and ``..`` would be resolved by servers and proxies: refused, never sent."""
    with pytest.raises(TemplateError):
        encode_segment(value)


def test_encode_query_value_encodes_separators() -> None:
    """A query value cannot add parameters or a fragment."""
    assert encode_query_value("a&b=c#d e") == "a%26b%3Dc%23d%20e"


@pytest.mark.parametrize(
    ("url", "authority"),
    [
        ("https://{params.host}:{params.port}/api/{params.tenant}", "{params.host}:{params.port}"),
        ("https://{params.shop}.example", "{params.shop}.example"),
        ("http://127.0.0.1:9", "127.0.0.1:9"),
        ("https:///v1", ""),
    ],
)
def test_authority_of_is_the_host_and_port_without_the_path(url: str, authority: str) -> None:
    """What decides where a request goes: the references checked as host and port."""
    assert authority_of(url) == authority


@pytest.mark.parametrize(
    "label",
    ["a", "0", "shop", "demo-shop", "a1", "1-a", "x" * 63, "a" + "-" * 61 + "b"],
)
def test_encode_host_label_accepts_valid_labels(label: str) -> None:
    """Labels matching ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ pass unchanged."""
    assert encode_host_label(label) == label


@pytest.mark.parametrize(
    "label",
    [
        "",
        "-shop",
        "shop-",
        "Shop",
        "shop.evil.com",
        "shop/x",
        "shop:80",
        "user@shop",
        "shop_1",
        "x" * 64,
        "café",
        "shop name",
        "%2e",
    ],
)
def test_encode_host_label_refuses_invalid_labels(label: str) -> None:
    """Anything outside the contract's host-label pattern is refused."""
    with pytest.raises(TemplateError):
        encode_host_label(label)


@pytest.mark.parametrize("label", ["shop\n", "demo-shop\n"])
def test_encode_host_label_refuses_trailing_newline(label: str) -> None:
    """A newline can never reach a host name, even at the end of the label."""
    with pytest.raises(TemplateError):
        encode_host_label(label)


# --- unknown_names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("/v1/{id}/{resource}", []),
        ("{caller.name}{connection.name}{cancellation_id}{idempotency_key}", []),
        ("{reason}{requested_by}{notify}{notes}", []),
        ("{params.warehouse_id}", []),
        ("{credentials.api_key}", []),
        ("{params.nope}", ["params.nope"]),
        ("{credentials.password}", ["credentials.password"]),
        ("{order_id}", ["order_id"]),
        ("{caller.key}", ["caller.key"]),
        ("{params}", ["params"]),
        ("{secrets.api_key}", ["secrets.api_key"]),
        ("{params.nope|reason|other}", ["params.nope", "other"]),
    ],
)
def test_unknown_names(source: str, expected: list[str]) -> None:
    """Only the fixed vocabulary and declared params/credentials are known."""
    template = compile_template(source)
    params = {"warehouse_id": object()}
    credentials = {"api_key": object()}
    assert unknown_names(template, params, credentials) == expected
