"""CancelRequest is strict (types, lengths, characters, unknown fields); cancellation ids sort."""

from __future__ import annotations

import itertools
import re
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from gateway import models
from gateway.models import CancelRequest, new_cancellation_id

MINIMAL: dict[str, Any] = {"connection": "stateset-main", "id": "asn_1"}
CROCKFORD_LOWER = "0123456789abcdefghjkmnpqrstvwxyz"
CANCELLATION_ID = re.compile(r"^cxl_[0-9abcdefghjkmnpqrstvwxyz]{26}$")


def parse(**fields: Any) -> CancelRequest:
    return CancelRequest.model_validate({**MINIMAL, **fields})


def refused_at(**fields: Any) -> list[str]:
    """The locations pydantic names when ``MINIMAL`` plus ``fields`` is refused."""
    with pytest.raises(ValidationError) as caught:
        parse(**fields)
    return [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]


# --- accepted --------------------------------------------------------------------------------


def test_minimal_request_is_accepted():
    request = CancelRequest.model_validate(MINIMAL)
    assert (request.connection, request.id) == ("stateset-main", "asn_1")
    assert (request.resource, request.reason, request.notify, request.params) == (
        None,
        None,
        None,
        {},
    )


def test_full_request_is_accepted():
    request = parse(
        resource="asn",
        reason="Supplier delay",
        requested_by="ops@example.com",
        notify=False,
        notes="line one\n\tline two",
        params={"warehouse_id": "WH-TGR04", "priority": 2, "ratio": 0.5, "urgent": True},
    )
    assert request.notify is False
    assert request.notes == "line one\n\tline two"


@pytest.mark.parametrize("missing", ["connection", "id"])
def test_required_fields_must_be_present(missing: str):
    data = {k: v for k, v in MINIMAL.items() if k != missing}
    with pytest.raises(ValidationError) as caught:
        CancelRequest.model_validate(data)
    assert [e["loc"] for e in caught.value.errors()] == [(missing,)]


def test_request_is_frozen():
    request = parse()
    with pytest.raises(ValidationError):
        request.id = "other"  # type: ignore[misc]


# --- strictness ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["colour", "order_id", "Connection", "cancelled_by"])
def test_unknown_fields_are_refused(field: str):
    assert refused_at(**{field: "x"}) == [field]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 12345),
        ("id", 1.5),
        ("id", None),
        ("id", ["asn_1"]),
        ("connection", 7),
        ("resource", 1),
        ("reason", 500),
        ("reason", True),
        ("requested_by", {"name": "x"}),
        ("notify", "true"),
        ("notify", 1),
        ("notify", 0),
        ("notify", "false"),
        ("notes", ["a"]),
        ("params", "warehouse_id=WH-1"),
        ("params", [["warehouse_id", "WH-1"]]),
    ],
)
def test_wrong_types_are_refused_not_coerced(field: str, value: Any):
    assert refused_at(**{field: value})[0] == field


# --- the identifier --------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 129, 1000])
def test_id_length_outside_1_to_128_is_refused(length: int):
    assert refused_at(id="a" * length) == ["id"]


@pytest.mark.parametrize("length", [1, 128])
def test_id_length_at_the_bounds_is_accepted(length: int):
    assert parse(id="a" * length).id == "a" * length


@pytest.mark.parametrize(
    "control",
    ["\x00", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_control_characters_in_id_are_refused(control: str):
    assert refused_at(id=f"asn{control}1") == ["id"]


@pytest.mark.parametrize("dots", [".", ".."])
def test_dot_segments_are_not_identifiers(dots: str):
    assert refused_at(id=dots) == ["id"]


@pytest.mark.parametrize(
    "identifier",
    ["...", ".hidden", "a..b", "a/../b", "SO/2024#1?x=%2F", "番号-1", " padded "],
)
def test_other_identifiers_are_kept_as_given(identifier: str):
    """Slashes, dots, ``?``, ``#`` and ``%`` are legal here: they are encoded when sent."""
    assert parse(id=identifier).id == identifier


# --- text fields -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "limit"),
    [("reason", 500), ("requested_by", 200), ("notes", 2000)],
)
def test_text_field_at_its_limit_is_accepted(field: str, limit: int):
    assert getattr(parse(**{field: "x" * limit}), field) == "x" * limit


@pytest.mark.parametrize(
    ("field", "limit"),
    [("reason", 500), ("requested_by", 200), ("notes", 2000)],
)
def test_text_field_over_its_limit_is_refused(field: str, limit: int):
    assert refused_at(**{field: "x" * (limit + 1)}) == [field]


@pytest.mark.parametrize("whitespace", ["\n", "\t", "\r\n"])
def test_notes_may_hold_newlines_and_tabs(whitespace: str):
    assert parse(notes=f"first{whitespace}second").notes == f"first{whitespace}second"


@pytest.mark.parametrize("control", ["\x00", "\x1b", "\x7f", "\x85"])
def test_notes_refuse_other_control_characters(control: str):
    assert refused_at(notes=f"a{control}b") == ["notes"]


@pytest.mark.parametrize("field", ["reason", "requested_by", "connection", "resource"])
def test_one_line_fields_refuse_newlines(field: str):
    assert refused_at(**{field: "a\nb"}) == [field]


# --- params ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{"nested": "object"}, ["a", "list"], [], {}, None],
    ids=["object", "list", "empty-list", "empty-object", "null"],
)
def test_params_refuse_non_scalar_values(value: Any):
    assert refused_at(params={"warehouse_id": value}) == ["params.warehouse_id"]


@pytest.mark.parametrize("value", [True, False])
def test_boolean_param_stays_a_boolean(value: bool):
    kept = parse(params={"urgent": value}).params["urgent"]
    assert kept is value


@pytest.mark.parametrize("value", ["WH-TGR04", 7, 0, -1, 2.5])
def test_scalar_params_are_kept_with_their_type(value: Any):
    kept = parse(params={"p": value}).params["p"]
    assert kept == value
    assert type(kept) is type(value)


def test_param_string_with_a_control_character_is_refused():
    assert refused_at(params={"warehouse_id": "WH\r\nX"}) == ["params.warehouse_id"]


@pytest.mark.parametrize("name", ["", "x" * 65, "a\nb"])
def test_bad_param_names_are_refused(name: str):
    assert refused_at(params={name: "v"})[0].startswith("params")


# --- cancellation ids ------------------------------------------------------------------------


def test_cancellation_id_is_cxl_and_26_lowercase_crockford_characters():
    for _ in range(200):
        assert CANCELLATION_ID.fullmatch(new_cancellation_id())


def test_cancellation_ids_are_unique():
    ids = {new_cancellation_id() for _ in range(2000)}
    assert len(ids) == 2000


def test_cancellation_id_starts_with_the_creation_millisecond(monkeypatch: pytest.MonkeyPatch):
    """ULID layout: the first 10 characters are the Unix time in milliseconds."""
    millis = 1_705_400_000_123
    monkeypatch.setattr(
        models, "time", SimpleNamespace(time_ns=lambda: millis * 1_000_000 + 999_999)
    )
    head = new_cancellation_id()[4:14]
    decoded = 0
    for char in head:
        decoded = decoded * 32 + CROCKFORD_LOWER.index(char)
    assert decoded == millis


def test_cancellation_id_encodes_the_time_and_all_80_random_bits(monkeypatch: pytest.MonkeyPatch):
    millis, random_part = 1_705_400_000_123, bytes(range(0xF6, 0x100))
    monkeypatch.setattr(models, "time", SimpleNamespace(time_ns=lambda: millis * 1_000_000))
    monkeypatch.setattr(models, "os", SimpleNamespace(urandom=lambda n: random_part[:n]))
    decoded = 0
    for char in new_cancellation_id()[4:]:
        decoded = decoded * 32 + CROCKFORD_LOWER.index(char)
    assert decoded == millis << 80 | int.from_bytes(random_part, "big")


def test_cancellation_ids_sort_by_creation_time(monkeypatch: pytest.MonkeyPatch):
    """Ids made one millisecond apart sort in creation order, whatever their random part."""
    clock = itertools.count(1_705_400_000_000)
    monkeypatch.setattr(models, "time", SimpleNamespace(time_ns=lambda: next(clock) * 1_000_000))
    created = [new_cancellation_id() for _ in range(50)]
    assert sorted(created) == created
