"""JSON-lines logs through structlog, built per app (no global state).

Every line goes through one processor, ``_Line``, that does what a chain of structlog's would
(request context, level, timestamp, traceback, redaction, JSON) in one call: a request writes
five lines or more, and each processor of a chain costs a call and a look at the event.

Redaction is part of that processor, so no call site has to remember it: every configured
secret value (provider credentials, caller keys) is replaced wherever it appears in an event,
exception text included, and values under sensitive header-like keys are masked whatever they
hold. Tracebacks are rendered without local variables.

The request context (request id, trace id) is bound with ``log_context``: one context
variable holding a mapping, read once per line. structlog's ``merge_contextvars`` copies the
whole context of the task for every line to find its variables.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from gateway.log_output import BatchedLines

REDACTED = "[REDACTED]"
SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "access-token",
        "cookie",
        "set-cookie",
        "api_key",
        "access_token",
        "password",
        "secret",
        "token",
        "key",
    }
)
_REMEMBERED_KEYS = 4096  # keys come from code and provider answers: bounded, just in case
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_LEVEL_NAMES = {"warn": "warning", "exception": "error"}  # as structlog's add_log_level
_SCALARS = frozenset({str, int, float, bool, type(None)})
# A header quoted in a library's message (a request it could not parse): keep the name only.
_QUOTED_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-api-key|access-token|cookie)(\s*:\s*)[^\r\n'\"]*"
)


class Redactor:
    """Removes secret values from log events and envelopes."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._sensitive: dict[Any, bool] = {}  # key -> is its value masked?
        self._safe: set[str] = set()  # JSON keys whose values are not masked
        self._ordered: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also remove these from now on (a reloaded configuration's new credentials); the
        old ones stay, as earlier events may still be written."""
        self._secrets = self._secrets | {s for s in secrets if s}
        # Longest first, so a secret that contains another is removed whole.
        values = sorted(self._secrets, key=len, reverse=True)
        pattern = re.compile("|".join(map(re.escape, values))) if values else None
        # As each appears inside a JSON string: escaping is character by character, so a
        # secret inside a string value is, serialized, its escaped form inside the line. (A
        # secret JSON cannot encode, a lone surrogate from the environment, makes any line
        # holding it fail to serialize, and such a line is cleaned instead.)
        escaped = tuple(orjson.dumps(v)[1:-1] for v in values if _encodable(v))
        # Replaced together: a line written meanwhile sees the old secrets or the new ones.
        self._ordered, self._pattern, self._escaped = tuple(values), pattern, escaped

    def text(self, value: str) -> str:
        # Substring tests are several times faster than the regular expression, and almost
        # every string holds no secret: the expression runs only on those that do.
        for secret in self._ordered:
            if secret in value:
                assert self._pattern is not None
                return self._pattern.sub(REDACTED, value)
        return value

    def dumps(self, value: Any) -> bytes:
        """``value`` as JSON with every secret replaced. Serialized first and searched for
        the secrets, which is one pass in C per secret; only a value where one is found, or
        that holds a sensitive key or a type JSON does not have, is cleaned and serialized
        again."""
        if self.plain(value):
            try:
                data = orjson.dumps(value)
            except orjson.JSONEncodeError:  # a lone surrogate, an integer past 64 bits
                data = b""
            if data and not self.found_in(data):
                return data
        return orjson.dumps(self.clean(value), default=str, option=orjson.OPT_NON_STR_KEYS)

    def found_in(self, data: bytes) -> bool:
        """Does this serialized JSON hold a secret?"""
        for secret in self._escaped:  # noqa: SIM110 - a third faster than any() over a map
            if secret in data:
                return True
        return False

    def plain(self, value: Any) -> bool:
        """Could ``value`` be written as it is: only JSON's own types, and no key whose value
        is masked? (Its strings may still hold a secret: see ``found_in``.)"""
        kind = type(value)
        if kind in _SCALARS:
            return True
        if kind is dict:
            # Set operations run in C: known keys, and scalar values, are the usual case.
            if not self._safe.issuperset(value) and not all(map(self._learn_safe, value)):
                return False
            if _SCALARS.issuperset(map(type, value.values())):
                return True
            return all(type(item) in _SCALARS or self.plain(item) for item in value.values())
        if kind is list:
            return all(self.plain(item) for item in value)
        return False

    def _learn_safe(self, key: Any) -> bool:
        """A key of JSON (a str) whose value is not masked? Remembered when it is."""
        if type(key) is not str or self._masked(key):
            return False
        if len(self._safe) < _REMEMBERED_KEYS:
            self._safe.add(key)
        return True

    def _masked(self, key: Any) -> bool:
        """Is the value under this key masked, whatever it holds? Remembered for plain str
        keys only: a str enum equal to one has another ``str()``, and must not answer for it."""
        masked = self._sensitive.get(key)
        if masked is None:
            text = str.lower(key) if isinstance(key, str) else str(key).lower()
            masked = text in SENSITIVE_KEYS
            if type(key) is str and len(self._sensitive) < _REMEMBERED_KEYS:
                self._sensitive[key] = masked
        return masked

    def clean(self, value: Any) -> Any:
        """``value`` with every secret replaced, recursively; mappings and sequences are copied.
        The common types are tested first, by identity."""
        kind = type(value)
        if kind is str:
            return self.text(value)
        if kind is int or kind is float or kind is bool or value is None:
            return value
        if kind is dict or isinstance(value, MutableMapping):
            cleaned = {}
            for key, item in value.items():
                masked = self._masked(key)
                if type(key) is str:  # a secret used as a key is removed from the key too
                    key = self.text(key)
                if masked:
                    cleaned[key] = REDACTED
                    continue
                found = type(item)  # the scalars inline: most values, no call each
                if found is str:
                    cleaned[key] = self.text(item)
                elif found is int or found is float or found is bool or item is None:
                    cleaned[key] = item
                else:
                    cleaned[key] = self.clean(item)
            return cleaned
        if isinstance(value, list | tuple):
            return [self.clean(v) for v in value]
        if isinstance(value, int | float):  # bool and int subclasses (enums)
            return value
        return self.text(str(value))


def _encodable(text: str) -> bool:
    try:
        orjson.dumps(text)
    except orjson.JSONEncodeError:
        return False
    return True


class _Forward(logging.Handler):
    """Log records of aiohttp (a request it could not parse, an error outside the app) as
    JSON lines through the same pipeline, with the headers they quote masked."""

    def __init__(self, log: FilteringBoundLogger) -> None:
        super().__init__(logging.WARNING)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + "".join(traceback.format_exception(record.exc_info[1]))
        masked = _QUOTED_HEADER.sub(rf"\1\2{REDACTED}", text)
        self._log.log(record.levelno, "server.error", logger=record.name, message=masked)


def capture_library_logs(log: FilteringBoundLogger) -> None:
    """Send aiohttp's standard-library log records to ``log`` instead of plain stderr."""
    library = logging.getLogger("aiohttp")
    library.handlers = [_Forward(log)]
    library.setLevel(logging.WARNING)
    library.propagate = False


class _Timestamp:
    """RFC 3339 UTC with microseconds, the date and time formatted once a second (structlog's
    ISO stamper builds a datetime for every line)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"


_CONTEXT: ContextVar[Mapping[str, Any] | None] = ContextVar("log_context", default=None)


class log_context:  # lower case: read as a function, `with log_context(...)`
    """``with log_context(request_id=...):`` every line logged inside, in this task and the
    tasks it starts, carries these fields (unless the line gives its own)."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields
        self._token: Token[Mapping[str, Any] | None] | None = None

    def __enter__(self) -> None:
        outer = _CONTEXT.get()
        self._token = _CONTEXT.set({**outer, **self._fields} if outer else self._fields)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._token is not None
        _CONTEXT.reset(self._token)


class _Line:
    """The one processor: the event becomes its JSON line, redacted. ``as_bytes`` for
    ``BatchedLines``, which writes bytes; a str for structlog's ``WriteLogger``."""

    def __init__(self, redactor: Redactor, as_bytes: bool) -> None:
        self._redactor = redactor
        self._as_bytes = as_bytes
        self._timestamp = _Timestamp()

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> str | bytes:
        context = _CONTEXT.get()
        if context:
            for key, value in context.items():
                if key not in event:
                    event[key] = value
        event["level"] = _LEVEL_NAMES.get(method, method)
        event["timestamp"] = self._timestamp()
        if "exc_info" in event:
            event = structlog.processors.format_exc_info(logger, method, event)
        line = self._redactor.dumps(event)
        return line if self._as_bytes else line.decode()


def make_logger(
    secrets: Iterable[str] = (),
    *,
    level: str = "info",
    stream: TextIO | None = None,
    redactor: Redactor | None = None,
    batched: bool = False,
) -> FilteringBoundLogger:
    """A JSON-lines logger; give ``redactor`` to add secrets to it later (reloads).
    ``batched``: lines leave once per turn of the event loop (``BatchedLines``), for servers;
    otherwise each line is written as it is logged."""
    processors = [_Line(redactor or Redactor(secrets), as_bytes=batched)]
    # WriteLogger emits each line, newline included, in one write(): workers that share a
    # stdout pipe (and PYTHONUNBUFFERED) never interleave halves of their lines.
    output: Any = structlog.WriteLogger(stream or sys.stdout)
    if batched:
        output = BatchedLines((stream or sys.stdout).buffer)
    logger: FilteringBoundLogger = structlog.wrap_logger(
        output,
        processors=processors,
        wrapper_class=_bound_logger_class(_LEVELS[level]),
    ).bind()  # the logger itself, not a lazy proxy that builds one for every call
    return logger


def _bound_logger_class(level: int) -> type[FilteringBoundLogger]:
    """structlog's filtering logger, each enabled level one call: the event goes to the one
    processor, ``_Line``, and its line to the output, without structlog's generic way through
    a chain of processors (about a third of a line's cost). Everything else, ``bind`` and the
    disabled levels included, is structlog's."""
    base = structlog.make_filtering_bound_logger(level)
    enabled = {name: _emitter(base, name) for name, number in _LEVELS.items() if number >= level}
    return type("BoundLogger", (base,), enabled)


def _emitter(base: type[FilteringBoundLogger], method: str) -> Callable[..., None]:
    slow = getattr(base, method)

    def emit(self: Any, event: str, *args: Any, **fields: Any) -> None:
        if args:  # printf-style arguments: structlog's own way
            slow(self, event, *args, **fields)
            return
        event_dict = self._context.copy()
        event_dict.update(fields)
        event_dict["event"] = event
        self._logger.msg(self._processors[0](self._logger, method, event_dict))

    emit.__name__ = method
    return emit
