"""make_logger: JSON lines with timestamp, level and event; secrets redacted wherever they are."""

from __future__ import annotations

import enum
import io
import logging
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp._http_parser import HttpRequestParser as HttpRequestParserC
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParserPy
from structlog.typing import FilteringBoundLogger

from gateway.logging import capture_library_logs, log_context, make_logger
from gateway.redact import REDACTED, Redactor

# Fake values only.
SECRET = "CANARY-SECRET-1234567890"
OTHER_SECRET = "sk_test_CANARY_other_7f3a"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


class Captured:
    """A logger writing to memory, and its lines parsed back."""

    def __init__(self, secrets: Iterable[str] = (), level: str = "info") -> None:
        self.stream = io.StringIO()
        self.log: FilteringBoundLogger = make_logger(secrets, level=level, stream=self.stream)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.text.splitlines()]

    @property
    def last(self) -> dict[str, Any]:
        return self.lines[-1]


@pytest.fixture
def logs() -> Captured:
    return Captured([SECRET, OTHER_SECRET], level="debug")


# --- shape -----------------------------------------------------------------------------------


def test_every_line_is_one_json_object(logs: Captured):
    logs.log.info("first.event", n=1)
    logs.log.warning("second.event", text="two\nlines")
    raw = logs.text.splitlines()
    assert len(raw) == 2
    assert all(isinstance(orjson.loads(line), dict) for line in raw)


def test_line_has_timestamp_level_and_event(logs: Captured):
    logs.log.info("cancellation.received", body_bytes=12)
    line = logs.last
    assert line["event"] == "cancellation.received"
    assert line["level"] == "info"
    assert line["body_bytes"] == 12


def test_timestamp_is_rfc3339_utc_ending_in_z(logs: Captured):
    before = datetime.now(UTC)
    logs.log.info("tick")
    stamp = logs.last["timestamp"]
    assert RFC3339_UTC.fullmatch(stamp), stamp
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() is not None
    assert abs((parsed - before).total_seconds()) < 60


def test_bound_context_appears_in_each_line_and_goes_away(logs: Captured):
    with log_context(request_id="req-1", trace_id="4bf92f3577b34da6a3ce929d0e0e4736"):
        logs.log.info("inside")
    logs.log.info("outside")
    inside, outside = logs.lines
    assert inside["request_id"] == "req-1"
    assert inside["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "request_id" not in outside
    assert "trace_id" not in outside


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", ["debug", "info", "warning", "error"]),
        ("info", ["info", "warning", "error"]),
        ("warning", ["warning", "error"]),
        ("error", ["error"]),
    ],
)
def test_level_filters_lower_levels(level: str, shown: list[str]):
    logs = Captured(level=level)
    logs.log.debug("d")
    logs.log.info("i")
    logs.log.warning("w")
    logs.log.error("e")
    assert [line["level"] for line in logs.lines] == shown


def test_every_way_of_logging_gives_the_same_line(logs: Captured):
    """Each enabled level is one call of its own; what it writes is what structlog's way
    writes: bound fields, a field given to the call winning over a bound one, printf-style
    arguments, the aliases, ``log`` and ``exception``."""
    bound = logs.log.bind(cancellation_id="cg_1", caller="bound")
    bound.info("one", caller="given", n=1)
    bound.warning("two %s of %d", "out", 3)
    bound.warn("three")
    bound.log(40, "four", n=4)
    try:
        raise ValueError("boom")
    except ValueError:
        bound.exception("five")
    one, two, three, four, five = logs.lines
    assert {k: one[k] for k in ("event", "level", "cancellation_id", "caller", "n")} == {
        "event": "one",
        "level": "info",
        "cancellation_id": "cg_1",
        "caller": "given",
        "n": 1,
    }
    assert (two["event"], two["level"], two["caller"]) == ("two out of 3", "warning", "bound")
    assert (three["event"], three["level"]) == ("three", "warning")
    assert (four["event"], four["level"], four["n"]) == ("four", "error", 4)
    assert (five["level"], five["cancellation_id"]) == ("error", "cg_1")
    assert "ValueError: boom" in five["exception"]


def test_default_stream_is_stdout(capsys: pytest.CaptureFixture[str]):
    make_logger().info("to.stdout")
    out, err = capsys.readouterr()
    assert orjson.loads(out)["event"] == "to.stdout"
    assert err == ""


def test_unserialisable_values_are_written_as_text(logs: Captured):
    logs.log.info("odd", value={1}, when=datetime(2024, 1, 16, tzinfo=UTC))
    assert logs.last["value"] == "{1}"
    assert logs.last["when"].startswith("2024-01-16")


# --- redaction of configured secrets ----------------------------------------------------------


def test_secret_as_a_plain_value_is_redacted(logs: Captured):
    logs.log.info("upstream.request", value=SECRET)
    assert logs.last["value"] == REDACTED
    assert SECRET not in logs.text


def test_secret_inside_a_longer_string_is_redacted(logs: Captured):
    logs.log.info("upstream.request", url=f"https://127.0.0.1/x?token={SECRET}&a=1")
    assert logs.last["url"] == f"https://127.0.0.1/x?token={REDACTED}&a=1"


def test_secret_in_the_event_name_is_redacted(logs: Captured):
    logs.log.info(f"oops {SECRET}")
    assert logs.last["event"] == f"oops {REDACTED}"


def test_secret_in_nested_dicts_and_lists_is_redacted(logs: Captured):
    logs.log.info(
        "nested",
        data={"outer": {"inner": [1, f"x{SECRET}x", {"deep": (OTHER_SECRET,)}]}},
    )
    assert logs.last["data"] == {"outer": {"inner": [1, f"x{REDACTED}x", {"deep": [REDACTED]}]}}
    assert SECRET not in logs.text
    assert OTHER_SECRET not in logs.text


def test_secret_in_a_non_string_value_is_redacted(logs: Captured):
    class Holder:
        def __str__(self) -> str:
            return f"Holder({SECRET})"

    logs.log.info("object", value=Holder(), raw=SECRET.encode())
    assert SECRET not in logs.text
    assert logs.last["value"] == f"Holder({REDACTED})"


def test_secret_in_bound_context_is_redacted(logs: Captured):
    logs.log.bind(caller_hint=SECRET).info("bound")
    with log_context(request_id=f"r-{SECRET}"):
        logs.log.info("contextvar")
    assert SECRET not in logs.text


def test_secret_in_exception_text_is_redacted(logs: Captured):
    try:
        raise RuntimeError(f"provider said: bad key {SECRET}")
    except RuntimeError:
        logs.log.exception("upstream.error")
    line = logs.last
    assert line["level"] == "error"
    assert "RuntimeError: provider said: bad key [REDACTED]" in line["exception"]
    assert SECRET not in logs.text


def test_secret_in_a_chained_exception_is_redacted(logs: Captured):
    try:
        try:
            raise ValueError(f"inner {OTHER_SECRET}")
        except ValueError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError:
        logs.log.exception("chained")
    assert "ValueError: inner [REDACTED]" in logs.last["exception"]
    assert OTHER_SECRET not in logs.text


def test_traceback_shows_no_local_variable_values(logs: Captured):
    """Locals may hold request bodies or keys that are not configured secrets: never rendered."""

    def fail() -> None:
        hidden = "LOCAL-" + "CANARY-" + "0451"
        assert hidden
        raise KeyError("missing")

    try:
        fail()
    except KeyError:
        logs.log.exception("internal_error")
    text = logs.last["exception"]
    assert "Traceback" in text
    assert "KeyError" in text
    assert "LOCAL-CANARY-0451" not in logs.text


def test_a_secret_containing_another_is_removed_whole():
    short, longer = "CANARY-abcdef123", "CANARY-abcdef123-and-more"
    logs = Captured([short, longer])
    logs.log.info("x", value=f"<{longer}> <{short}>")
    assert logs.last["value"] == f"<{REDACTED}> <{REDACTED}>"


def test_secret_with_regex_characters_is_redacted_literally():
    secret = "CANARY.+*?[](){}|^$\\key"
    logs = Captured([secret])
    logs.log.info("x", value=f"a{secret}b", other="CANARYX")
    assert logs.last["value"] == f"a{REDACTED}b"
    assert logs.last["other"] == "CANARYX"


def test_empty_secret_redacts_nothing():
    """An empty credential (an optional one left out) must not turn every value into [REDACTED]."""
    logs = Captured(["", SECRET])
    logs.log.info("x", value="plain text")
    assert logs.last["value"] == "plain text"


def test_non_secret_values_pass_unchanged(logs: Captured):
    logs.log.info("x", status=200, latency_ms=41.7, ok=True, none=None, name="stateset-main")
    line = logs.last
    assert (line["status"], line["latency_ms"], line["ok"], line["none"], line["name"]) == (
        200,
        41.7,
        True,
        None,
        "stateset-main",
    )


# --- masking by key --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["Authorization", "authorization", "AUTHORIZATION", "x-api-key", "X-API-Key", "Access-Token"],
)
def test_sensitive_header_values_are_masked_whatever_they_hold(key: str):
    """Not a configured secret, yet masked: these headers carry credentials by definition."""
    logs = Captured()
    logs.log.info("upstream.request", headers={key: "Bearer unconfigured-value", "Accept": "*/*"})
    assert logs.last["headers"] == {key: REDACTED, "Accept": "*/*"}
    assert "unconfigured-value" not in logs.text


def test_sensitive_key_is_masked_at_the_top_level():
    logs = Captured()
    logs.log.info("x", authorization="Bearer unconfigured-value")
    assert logs.last["authorization"] == REDACTED


def test_sensitive_key_holding_a_structure_is_masked_whole():
    logs = Captured()
    logs.log.info("x", headers={"Authorization": ["Bearer a", "Bearer b"]})
    assert logs.last["headers"] == {"Authorization": REDACTED}


def test_redactor_copies_instead_of_changing_the_event():
    """Redaction works on copies: the caller's own objects keep their values."""
    headers = {"Authorization": "Bearer x", "body": [SECRET]}
    cleaned = Redactor([SECRET]).clean({"headers": headers})
    assert cleaned == {"headers": {"Authorization": REDACTED, "body": [REDACTED]}}
    assert headers == {"Authorization": "Bearer x", "body": [SECRET]}


# --- serialized first, searched, cleaned only when needed -------------------------------------


@pytest.mark.parametrize(
    "secret",
    ['CANARY"quoted"value', "CANARY\\back\\slash", "CANARY\ttab\nline", "CANARY-ünï-çødé-€"],
)
def test_secret_that_json_escapes_is_found_in_the_serialized_line(secret: str):
    """The line is searched for each secret as JSON writes it, escapes and all."""
    logs = Captured([secret])
    logs.log.info("x", value=f"<{secret}>", nested={"list": [secret]})
    assert logs.last["value"] == f"<{REDACTED}>"
    assert logs.last["nested"] == {"list": [REDACTED]}
    assert secret not in logs.text
    assert orjson.dumps(secret)[1:-1].decode() not in logs.text


def test_secret_in_a_key_of_a_nested_mapping_leaves_the_value_alone_but_is_seen():
    """A nested sensitive key is masked although the rest of the line holds no secret."""
    logs = Captured([SECRET])
    logs.log.info("x", response={"data": {"Token": "unconfigured-value", "id": 7}})
    assert logs.last["response"] == {"data": {"Token": REDACTED, "id": 7}}


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1.5, True, None, "text"], "c": {"d": "e"}},
        {"a": f"x{SECRET}x", "b": [{"password": 1}], "c": (OTHER_SECRET, 2)},
        {"headers": {"X-Api-Key": "k", "Accept": "*/*"}, 3: "a key JSON writes as text"},
        {"when": datetime(2024, 1, 16, tzinfo=UTC), "set": {1}},
        [SECRET, {"secret": "s"}, "plain"],
        f"just {SECRET}",
    ],
)
def test_dumps_writes_what_cleaning_then_serializing_would(value: Any):
    redactor = Redactor([SECRET, OTHER_SECRET])
    expected = orjson.loads(
        orjson.dumps(redactor.clean(value), default=str, option=orjson.OPT_NON_STR_KEYS)
    )
    written = orjson.loads(redactor.dumps(value))
    assert written == expected
    assert SECRET not in str(written)
    assert OTHER_SECRET not in str(written)


def test_log_context_nests_and_a_line_keeps_its_own_value():
    logs = Captured()
    with log_context(request_id="outer", trace_id="t-1"):
        with log_context(request_id="inner"):
            logs.log.info("nested")
        logs.log.info("own", request_id="given")
    logs.log.info("after")
    nested, own, after = logs.lines
    assert (nested["request_id"], nested["trace_id"]) == ("inner", "t-1")
    assert (own["request_id"], own["trace_id"]) == ("given", "t-1")
    assert "request_id" not in after
    assert "trace_id" not in after


def test_a_secret_json_cannot_encode_is_still_removed():
    """A credential read from a non-UTF-8 environment holds a lone surrogate: the line that
    quotes it is cleaned, not refused."""
    secret = "CANARY-\udc80-raw"
    logs = Captured([secret])
    logs.log.info("x", value=f"<{secret}>", other="plain")
    assert logs.last["value"] == f"<{REDACTED}>"
    assert logs.last["other"] == "plain"


def test_a_secret_used_as_a_key_is_removed_from_the_key():
    logs = Captured([SECRET])
    logs.log.info("x", data={SECRET: 1, f"k-{SECRET}": "v"})
    assert logs.last["data"] == {REDACTED: 1, f"k-{REDACTED}": "v"}
    assert SECRET not in logs.text


def test_a_str_enum_key_does_not_teach_the_redactor_that_its_value_is_safe():
    """Equal to "authorization" but printed otherwise: neither it nor the plain key after it
    may escape the mask."""

    class Header(str, enum.Enum):  # noqa: UP042 - str() is "Header.AUTH", the point here
        AUTH = "authorization"

    redactor = Redactor([])
    assert orjson.loads(redactor.dumps({Header.AUTH: "Bearer one"})) == {"authorization": REDACTED}
    assert orjson.loads(redactor.dumps({"authorization": "Bearer two"})) == {
        "authorization": REDACTED
    }


# --- aiohttp's own records -------------------------------------------------------------------

# A caller configured by key_sha256: the redactor has no plaintext to look for.
PLAIN_KEY = "sha-only-caller-key-7Qm2xV9pL4"
PARSERS = {"c_parser": HttpRequestParserC, "python_parser": HttpRequestParserPy}
UNPARSABLE = {
    "value_with_control_character": (
        f"POST /v1/cancellations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PLAIN_KEY}\x01\r\n",
        "Authorization: [REDACTED]",
    ),
    "header_without_colon": (
        f"POST /v1/cancellations HTTP/1.1\r\nHost: x\r\nAuthorization Bearer {PLAIN_KEY}\r\n",
        "[REDACTED]",
    ),
    "custom_header_with_control_character": (
        f"POST /v1/cancellations HTTP/1.1\r\nHost: x\r\nX-Caller: {PLAIN_KEY}\x01\r\n",
        "[REDACTED]",
    ),
    "header_too_long": (
        f"GET / HTTP/1.1\r\nHost: x\r\nX-Caller: {PLAIN_KEY}{'b' * 9000}\r\n",
        "[REDACTED]",
    ),
    "broken_request_line": (
        f"GET /v1/connections?key={PLAIN_KEY} HTTP/1.1 x\r\nHost: x\r\n",
        "GET [REDACTED]",
    ),
    "target_with_control_character": (
        f"GET /v1/connections?key={PLAIN_KEY}\x7f HTTP/1.1\r\nHost: x\r\n",
        "[REDACTED]",
    ),
    "absolute_target_without_host": (
        f"GET http://[{PLAIN_KEY} HTTP/1.1\r\nHost: x\r\n",
        "[REDACTED]",
    ),
}


def parse_error(parser: Any, request: str) -> HttpProcessingError:
    """What aiohttp's parser raises for these bytes (no socket: the parser alone)."""
    with pytest.raises(HttpProcessingError) as raised:
        parser(None, None, 2**16, max_line_size=8190, max_field_size=8190).feed_data(
            request.encode("latin-1") + b"\r\n"
        )
    return raised.value


@pytest.fixture
def library_logs() -> Iterator[Captured]:
    """aiohttp's records captured as `serve` captures them; the library's logger restored."""
    library = logging.getLogger("aiohttp")
    saved = library.handlers[:], library.level, library.propagate
    logs = Captured(level="debug")
    capture_library_logs(logs.log)
    yield logs
    library.handlers, library.level, library.propagate = saved[0], saved[1], saved[2]


@pytest.mark.parametrize("parser", PARSERS.values(), ids=PARSERS.keys())
@pytest.mark.parametrize(("request_text", "kept"), UNPARSABLE.values(), ids=UNPARSABLE.keys())
def test_a_request_aiohttp_cannot_parse_is_one_warning_that_quotes_no_value(
    library_logs: Captured, parser: Any, request_text: str, kept: str
):
    """aiohttp logs a request it could not parse at error level with a traceback and the raw
    bytes it choked on: forwarded, it is one warning without traceback, every header value
    and the request target masked (header names and a standard method are kept)."""
    exc = parse_error(parser, request_text)
    logging.getLogger("aiohttp.server").exception(
        "Error handling request from %s", "127.0.0.1", exc_info=exc
    )
    [line] = library_logs.lines
    assert (line["event"], line["level"], line["logger"]) == (
        "server.error",
        "warning",
        "aiohttp.server",
    )
    assert line["message"].startswith("Error handling request from 127.0.0.1: ")
    assert "Traceback" not in line["message"]
    assert PLAIN_KEY not in library_logs.text
    assert PLAIN_KEY[:12] not in library_logs.text
    if parser is HttpRequestParserC:  # the Python parser quotes less: a value without its name
        assert kept in line["message"]


def test_any_other_library_error_keeps_its_level_and_traceback(library_logs: Captured):
    """An error outside the app is the server's: logged as an error, with its traceback."""
    try:
        raise RuntimeError("outside the app")
    except RuntimeError:
        logging.getLogger("aiohttp.server").exception("Unhandled exception")
    [line] = library_logs.lines
    assert line["level"] == "error"
    assert "Traceback" in line["message"]
    assert "RuntimeError: outside the app" in line["message"]
