"""JSON-lines logs through one structlog processor chain, built per app (no global state).

Redaction is a processor, so no call site has to remember it: every configured secret value
(provider credentials, caller keys) is replaced wherever it appears in an event, exception
text included, and values under sensitive header-like keys are masked whatever they hold.
Tracebacks are rendered without local variables.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

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
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also remove these from now on (a reloaded configuration's new credentials); the
        old ones stay, as earlier events may still be written."""
        self._secrets = self._secrets | {s for s in secrets if s}
        # Longest first, so a secret that contains another is removed whole.
        values = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def __call__(self, _: WrappedLogger, __: str, event: EventDict) -> EventDict:
        return self.clean(event)  # type: ignore[no-any-return]

    def text(self, value: str) -> str:
        return self._pattern.sub(REDACTED, value) if self._pattern else value

    def clean(self, value: Any) -> Any:
        """``value`` with every secret replaced, recursively; mappings and sequences are copied."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, MutableMapping):
            return {
                k: REDACTED if str(k).lower() in SENSITIVE_KEYS else self.clean(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.clean(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
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


def _render(_: WrappedLogger, __: str, event: EventDict) -> str:
    return orjson.dumps(event, default=str).decode()


def make_logger(
    secrets: Iterable[str] = (),
    *,
    level: str = "info",
    stream: TextIO | None = None,
    redactor: Redactor | None = None,
) -> FilteringBoundLogger:
    """A JSON-lines logger; give ``redactor`` to add secrets to it later (reloads)."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.format_exc_info,
        redactor or Redactor(secrets),
        _render,
    ]
    # WriteLogger emits each line, newline included, in one write(): workers that share a
    # stdout pipe (and PYTHONUNBUFFERED) never interleave halves of their lines.
    logger: FilteringBoundLogger = structlog.wrap_logger(
        structlog.WriteLogger(stream or sys.stdout),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
    )
    return logger
