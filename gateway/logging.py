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
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from typing import Any, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError, InvalidURLError
from aiohttp.web_protocol import RequestPayloadError
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from gateway.log_output import BatchedLines
from gateway.redact import REDACTED, Redactor

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_LEVEL_NAMES = {"warn": "warning", "exception": "error"}  # as structlog's add_log_level

# aiohttp's parse errors quote the raw bytes of the request as Python literals (b'...', '...').
# A caller configured by ``key_sha256`` has no plaintext the redactor could look for, so every
# quoted header value and request target is masked, whatever header it came in.
_LITERAL = re.compile(r"""(?<!\w)b?('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_HEADER_LINE = re.compile(r"([!#$%&*+.^_`|~0-9A-Za-z-]+)[ \t]*:")
_REQUEST_LINE = re.compile(
    r"(?:(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|CONNECT|TRACE) )?.*?( HTTP/\d\.\d)?", re.DOTALL
)
# A bare literal that names one of these is aiohttp's own word, never the request's bytes.
_HEADER_NAMES = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "expect"}
)
_POINTER = re.compile(r"\n[ \t]*\^[ \t]*(?=\n|$)")  # a caret under the unmasked text
# Any other record of the library (an error outside the app) that names a credential header.
_QUOTED_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-api-key|access-token|cookie)(\s*:\s*)[^\r\n'\"]*"
)


def unparsed_reason(exc: BaseException) -> str:
    """Why aiohttp could not parse a request, on one line, with every header value and the
    request target masked: ``Invalid header value char: b'X-Note: [REDACTED]'``."""
    message = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    if isinstance(exc, InvalidURLError) and "\n" not in message:
        message = REDACTED  # the raw target itself, unquoted
    masked = _LITERAL.sub(_mask_literal, _POINTER.sub("", str(message)))
    return " ".join(masked.split())


def _mask_literal(match: re.Match[str]) -> str:
    quoted = match.group(1)
    prefix, quote, body = match.group(0)[: -len(quoted)], quoted[0], quoted[1:-1]
    if body.lower() in _HEADER_NAMES:
        return match.group(0)
    header = _HEADER_LINE.match(body)
    if header is not None:
        kept = f"{header.group(1)}: {REDACTED}"
    else:
        request = _REQUEST_LINE.fullmatch(body)
        assert request is not None  # every text matches
        method, version = request.group(1), request.group(2)
        kept = f"{method + ' ' if method else ''}{REDACTED}{version or ''}"
    return f"{prefix}{quote}{kept}{quote}"


class _Forward(logging.Handler):
    """Log records of aiohttp (a request it could not parse, an error outside the app) as
    JSON lines through the same pipeline. A request it could not parse is the client's
    mistake, not the server's: a warning without a traceback, its quoted bytes masked."""

    def __init__(self, log: FilteringBoundLogger) -> None:
        super().__init__(logging.WARNING)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        text, level = record.getMessage(), record.levelno
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            text, level = f"{text}: {unparsed_reason(exc)}", logging.WARNING
        elif isinstance(exc, RequestPayloadError | ConnectionError):
            # aiohttp reading on past a body the handler already found broken (and logged as
            # request.body_unreadable): the client's fault again, said once is enough.
            text, level = f"{text}: {unparsed_reason(exc)}", logging.DEBUG
        else:
            if exc is not None:
                text += "\n" + "".join(traceback.format_exception(exc))
            text = _QUOTED_HEADER.sub(rf"\1\2{REDACTED}", text)
        self._log.log(level, "server.error", logger=record.name, message=text)


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

    def __exit__(self, *_: object) -> None:
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
    line = _Line(redactor or Redactor(secrets), as_bytes=batched)
    # WriteLogger emits each line, newline included, in one write(): workers that share a
    # stdout pipe (and PYTHONUNBUFFERED) never interleave halves of their lines.
    output: Any = structlog.WriteLogger(stream or sys.stdout)
    if batched:
        output = BatchedLines((stream or sys.stdout).buffer)
    logger: FilteringBoundLogger = structlog.wrap_logger(
        output,
        processors=[line],
        wrapper_class=_bound_logger_class(_LEVELS[level], line, output),
    ).bind()  # the logger itself, not a lazy proxy that builds one for every call
    return logger


def _bound_logger_class(level: int, line: _Line, output: Any) -> type[FilteringBoundLogger]:
    """structlog's filtering logger, each enabled level one call: the event goes to the one
    processor, ``_Line``, and its line to the output, without structlog's generic way through
    a chain of processors (about a third of a line's cost). The class is this logger's own, so
    it knows its processor and output; the context comes from ``structlog.get_context``.
    Everything else, ``bind`` and the disabled levels included, is structlog's."""
    base = structlog.make_filtering_bound_logger(level)
    enabled = {
        name: _emitter(base, name, line, output)
        for name, number in _LEVELS.items()
        if number >= level
    }
    return type("BoundLogger", (base,), enabled)


def _emitter(
    base: type[FilteringBoundLogger], method: str, line: _Line, output: Any
) -> Callable[..., None]:
    slow = getattr(base, method)
    context_of = structlog.get_context

    def emit(self: FilteringBoundLogger, event: str, *args: Any, **fields: Any) -> None:
        if args:  # printf-style arguments: structlog's own way
            slow(self, event, *args, **fields)
            return
        event_dict = context_of(self).copy()
        event_dict.update(fields)
        event_dict["event"] = event
        output.msg(line(output, method, event_dict))

    emit.__name__ = method
    return emit
