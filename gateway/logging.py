"""JSON-lines logs through one structlog processor chain, built per app (no global state).

Redaction is a processor, so no call site has to remember it: every configured secret value
(provider credentials, caller keys) is replaced wherever it appears in an event, exception
text included, and values under sensitive header-like keys are masked whatever they hold.
Tracebacks are rendered without local variables.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import select
import sys
import threading
import time
import traceback
from collections.abc import Iterable, MutableMapping
from typing import Any, BinaryIO, TextIO

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

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
# A header quoted in a library's message (a request it could not parse): keep the name only.
_QUOTED_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-api-key|access-token|cookie)(\s*:\s*)[^\r\n'\"]*"
)


class Redactor:
    """A structlog processor that removes secret values from every event."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._sensitive: dict[Any, bool] = {}  # key -> is its value masked?
        self._ordered: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also remove these from now on (a reloaded configuration's new credentials); the
        old ones stay, as earlier events may still be written."""
        self._secrets = self._secrets | {s for s in secrets if s}
        # Longest first, so a secret that contains another is removed whole.
        values = sorted(self._secrets, key=len, reverse=True)
        self._ordered = tuple(values)
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def __call__(self, _: WrappedLogger, __: str, event: EventDict) -> EventDict:
        return self.clean(event)  # type: ignore[no-any-return]

    def text(self, value: str) -> str:
        # Substring tests are several times faster than the regular expression, and almost
        # every string holds no secret: the expression runs only on those that do.
        for secret in self._ordered:
            if secret in value:
                assert self._pattern is not None
                return self._pattern.sub(REDACTED, value)
        return value

    def clean(self, value: Any) -> Any:
        """``value`` with every secret replaced, recursively; mappings and sequences are copied.
        Runs on every log line and every envelope: the common types are tested first, by
        identity, and which keys are sensitive is remembered."""
        kind = type(value)
        if kind is str:
            return self.text(value)
        if kind is int or kind is float or kind is bool or value is None:
            return value
        if kind is dict or isinstance(value, MutableMapping):
            sensitive = self._sensitive
            cleaned = {}
            for key, item in value.items():
                masked = sensitive.get(key)
                if masked is None:
                    masked = str(key).lower() in SENSITIVE_KEYS
                    if len(sensitive) < _REMEMBERED_KEYS:
                        sensitive[key] = masked
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
    """``timestamp`` in RFC 3339 UTC with microseconds, the date and time formatted once a
    second (structlog's ISO stamper builds a datetime for every line)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: WrappedLogger, __: str, event: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event


def _render(_: WrappedLogger, __: str, event: EventDict) -> str:
    return orjson.dumps(event, default=str).decode()


class BatchedLines:
    """The log's output for a server: the lines of one turn of the event loop leave in one
    write() at the end of the turn, instead of a write() and a flush per line; with no loop
    running (start, stop, another thread) a line leaves at once, after any still waiting.

    Workers share one stdout pipe, and a pipe keeps a write() whole only up to PIPE_BUF
    bytes: lines go out in chunks of whole lines within that, so no line is ever cut by
    another process's."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._waiting: list[str] = []
        self._scheduled = False
        self._lock = threading.Lock()
        atexit.register(self.flush)

    def msg(self, message: str) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._waiting.append(message)
            if loop is not None:
                if not self._scheduled:
                    self._scheduled = True
                    loop.call_soon(self.flush)
                return
        self.flush()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg

    def flush(self) -> None:
        with self._lock:
            self._scheduled = False
            lines, self._waiting = self._waiting, []
            if not lines:
                return
            chunk: list[bytes] = []
            size = 0
            for line in lines:
                data = line.encode() + b"\n"
                if chunk and size + len(data) > select.PIPE_BUF:
                    self._stream.write(b"".join(chunk))
                    chunk, size = [], 0
                chunk.append(data)
                size += len(data)
            self._stream.write(b"".join(chunk))
            self._stream.flush()


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
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _Timestamp(),
        structlog.processors.format_exc_info,
        redactor or Redactor(secrets),
        _render,
    ]
    # WriteLogger emits each line, newline included, in one write(): workers that share a
    # stdout pipe (and PYTHONUNBUFFERED) never interleave halves of their lines.
    output: Any = structlog.WriteLogger(stream or sys.stdout)
    if batched:
        output = BatchedLines((stream or sys.stdout).buffer)
    logger: FilteringBoundLogger = structlog.wrap_logger(
        output,
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
    ).bind()  # the logger itself, not a lazy proxy that builds one for every call
    return logger
