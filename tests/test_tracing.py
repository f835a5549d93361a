"""W3C traceparent and X-Request-ID: continue what the caller sent when valid, else start anew."""

from __future__ import annotations

import re
import string

import pytest

from gateway.tracing import Trace, request_id_from, trace_from

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def assert_new_trace(trace: Trace) -> None:
    assert HEX32.fullmatch(trace.trace_id)
    assert trace.trace_id != "0" * 32
    assert trace.trace_id != TRACE_ID
    assert HEX16.fullmatch(trace.span_id)
    assert trace.parent_id is None
    assert trace.flags == "01"


# --- trace_from ------------------------------------------------------------------------------


def test_valid_traceparent_keeps_its_trace_id():
    trace = trace_from(VALID)
    assert trace.trace_id == TRACE_ID
    assert trace.parent_id == PARENT_ID


def test_valid_traceparent_gets_a_new_span_id():
    trace = trace_from(VALID)
    assert HEX16.fullmatch(trace.span_id)
    assert trace.span_id != PARENT_ID
    assert trace_from(VALID).span_id != trace.span_id


@pytest.mark.parametrize("flags", ["00", "01"])
def test_valid_traceparent_keeps_its_flags(flags: str):
    assert trace_from(f"00-{TRACE_ID}-{PARENT_ID}-{flags}").flags == flags


def test_surrounding_whitespace_is_ignored():
    assert trace_from(f"  {VALID} ").trace_id == TRACE_ID


def test_a_later_version_with_more_fields_is_continued():
    """W3C: a version above 00 may add fields; the first four are still understood."""
    trace = trace_from(f"01-{TRACE_ID}-{PARENT_ID}-01-future-field")
    assert trace.trace_id == TRACE_ID


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param(f"00-{'0' * 32}-{PARENT_ID}-01", id="all-zero-trace-id"),
        pytest.param(f"00-{TRACE_ID}-{'0' * 16}-01", id="all-zero-parent-id"),
        pytest.param(f"ff-{TRACE_ID}-{PARENT_ID}-01", id="version-ff"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-01-extra", id="version-00-with-extra-field"),
        pytest.param(f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01", id="trace-id-31"),
        pytest.param(f"00-{TRACE_ID}a-{PARENT_ID}-01", id="trace-id-33"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01", id="parent-id-15"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}0-01", id="parent-id-17"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-1", id="flags-1"),
        pytest.param(f"0-{TRACE_ID}-{PARENT_ID}-01", id="version-1"),
        pytest.param(f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", id="uppercase-trace-id"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID.upper()}-01", id="uppercase-parent-id"),
        pytest.param(f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01", id="non-hex"),
        pytest.param(f"00_{TRACE_ID}_{PARENT_ID}_01", id="wrong-separator"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}", id="no-flags"),
        pytest.param("garbage", id="garbage"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-01\n00-x", id="two-lines"),
    ],
)
def test_invalid_traceparent_starts_a_new_trace(header: str | None):
    assert_new_trace(trace_from(header))


def test_each_new_trace_has_its_own_id():
    assert trace_from(None).trace_id != trace_from(None).trace_id


# --- child_traceparent -----------------------------------------------------------------------


def parts(traceparent: str) -> tuple[str, str, str]:
    """(trace id, span id, flags) of a well-formed version-00 ``traceparent``."""
    match = TRACEPARENT.fullmatch(traceparent)
    assert match, traceparent
    return match[1], match[2], match[3]


def test_child_traceparent_continues_the_trace():
    trace_id, _, flags = parts(trace_from(VALID).child_traceparent())
    assert (trace_id, flags) == (TRACE_ID, "01")


def test_child_traceparent_has_a_fresh_span_id_each_call():
    trace = trace_from(VALID)
    spans = [parts(trace.child_traceparent())[1] for _ in range(5)]
    assert len(set(spans)) == 5
    assert trace.span_id not in spans
    assert PARENT_ID not in spans


def test_child_traceparent_of_a_new_trace_is_valid_for_the_next_hop():
    trace = trace_from(None)
    child = trace_from(trace.child_traceparent())
    assert child.trace_id == trace.trace_id


# --- request_id_from -------------------------------------------------------------------------

VISIBLE_ASCII = "".join(c for c in string.printable if not c.isspace())


@pytest.mark.parametrize(
    "header",
    [
        "abc-123",
        "0",
        "r" * 200,
        VISIBLE_ASCII,
        "4bf92f35-77b3-4da6-a3ce-929d0e0e4736",
    ],
)
def test_request_id_of_printable_ascii_is_kept(header: str):
    assert request_id_from(header) == header


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("r" * 201, id="too-long"),
        pytest.param("abc\n", id="newline"),
        pytest.param("a\r\nX-Injected: 1", id="header-injection"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\x7fb", id="del"),
        pytest.param("a\tb", id="tab"),
        pytest.param("réquest", id="non-ascii"),
    ],
)
def test_bad_request_id_is_replaced(header: str | None):
    generated = request_id_from(header)
    assert generated != header
    assert HEX32.fullmatch(generated)


def test_generated_request_ids_differ():
    assert request_id_from(None) != request_id_from(None)
