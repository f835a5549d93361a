"""Classify a provider's answer into an outcome. Pure: the caller passes the clock's reading.

The order of questions: a redirect is never followed (bad response); a 2xx that passes the
definition's ``already_cancelled`` or ``success`` test is a success; otherwise the definition's
error rules are tried in order; otherwise the contract's generic table by HTTP status. Nothing
here raises on a strange body: HTML, an empty body, wrong types all classify.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from gateway.answers import Errors, RetryHint, Rule
from gateway.definition import ProviderDefinition
from gateway.errors import ErrorCode, Status, spec
from gateway.probe_spec import Probe, ProbeKind
from gateway.translate.wire import UpstreamResponse

MAX_PROVIDER_MESSAGE = 300  # characters of the provider's own text in an envelope
# What classification keeps of a provider's text: enough to redact before the envelope cuts it
# to MAX_PROVIDER_MESSAGE (a secret echoed near the cut must be seen whole to be removed).
MAX_PROVIDER_TEXT = 4096
MAX_EXTRACTED_DEPTH = 32  # levels of a value kept in provider_response
RETRY_AFTER_CLAMP_S = (1.0, 3600.0)
_NO_JSON = object()


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    code: ErrorCode | None = None
    message: str = ""  # the gateway's own words
    provider_code: str | None = None  # the provider's text: redacted and cut in the envelope
    provider_status: int | None = None
    retry_after_s: float | None = None
    cancelled_at: str | None = None  # the provider's time, RFC 3339 UTC, when it gave one
    provider_response: dict[str, Any] = field(default_factory=dict)
    unmapped: bool = False  # decided by the generic table: the definition may need a rule
    detail: str | None = None  # the provider's (or the network's) text, after the message
    rule: int | None = None  # the index of the error rule that decided, if one did
    note: str | None = None  # the gateway's word on the attempts (why no more were made)
    probed: ProbeKind | None = None  # a status probe's answer: what it says of the object

    @property
    def retryable(self) -> bool:
        return self.code is not None and spec(self.code).retryable


def classify(
    definition: ProviderDefinition,
    resource_name: str,
    response: UpstreamResponse,
    now: datetime,
    reading: bool = False,
    probing: bool = False,
) -> Outcome:
    """The outcome of a cancel's answer; ``reading``, of the answer to the read made before it
    (``cancelled`` then means "read": the values are its ``provider_response``); ``probing``,
    of a status probe's (``probed`` says what it found, or None)."""
    resource = definition.resources[resource_name]
    if probing and resource.probe is not None:
        return _probed(resource.probe, response)
    if reading and resource.read_request is not None:
        resource = resource.read_request
    status = response.status
    body = _parse(response.body)
    title = definition.title or definition.name

    if 300 <= status < 400:
        location = response.headers.get("location", "")[:MAX_PROVIDER_TEXT]
        return _failure(
            ErrorCode.PROVIDER_BAD_RESPONSE,
            f"{title} answered {status}, a redirect, which is not followed",
            status,
            detail=f"Location {location}" if location else None,
        )

    if 200 <= status < 300:
        extracted = _extract(resource.extract.provider_response, body)
        already = resource.already_cancelled
        if (
            already is not None
            and status in already.status
            and _truthy(_search(already.when, body))
        ):
            return Outcome(
                Status.ALREADY_CANCELLED,
                provider_status=status,
                cancelled_at=_timestamp(_search(resource.extract.cancelled_at, body)),
                provider_response=extracted,
            )
        pending = resource.pending
        if (
            pending is not None
            and status in pending.status
            and (pending.when is None or _truthy(_search(pending.when, body)))
        ):
            return Outcome(Status.PENDING, provider_status=status, provider_response=extracted)
        success = resource.success
        json_ok = body is not _NO_JSON or not success.require_json
        if (
            status in success.status
            and json_ok
            and (success.when is None or _truthy(_search(success.when, body)))
        ):
            return Outcome(
                Status.CANCELLED,
                provider_status=status,
                cancelled_at=_timestamp(_search(resource.extract.cancelled_at, body)),
                provider_response=extracted,
            )

    errors = definition.errors_for(resource_name)
    details = _details(errors, body)
    provider_code = details["code"] or details["message"]
    retry_after = _wait(errors.retry_after, response, body, now)
    described = details["message"]

    index = _first_rule(errors.rules, status, details, body)
    if index is not None:
        rule = errors.rules[index]
        if rule.outcome == "already_cancelled":
            return Outcome(
                Status.ALREADY_CANCELLED,
                provider_status=status,
                provider_code=provider_code,
                rule=index,
            )
        code = ErrorCode(rule.outcome)
        return _failure(
            code,
            f"{title} answered {status}",
            status,
            provider_code,
            retry_after,
            described,
            rule=index,
        )

    if 200 <= status < 300:
        shape = "a body that is not JSON" if body is _NO_JSON else "a body"
        return _failure(
            ErrorCode.PROVIDER_BAD_RESPONSE,
            f"{title} answered {status} with {shape} that does not confirm the cancellation",
            status,
            provider_code,
            unmapped=True,
        )
    code = generic_code(status)
    return _failure(
        code, f"{title} answered {status}", status, provider_code, retry_after, described, True
    )


def generic_code(status: int) -> ErrorCode:
    """The contract's table for answers no rule of the definition classifies."""
    if status in (401, 403):
        return ErrorCode.PROVIDER_AUTH_FAILED
    if status == 404:
        return ErrorCode.NOT_FOUND
    if status == 409:
        return ErrorCode.NOT_CANCELLABLE
    if status == 429:
        return ErrorCode.RATE_LIMITED
    if 400 <= status < 500:
        return ErrorCode.PROVIDER_REJECTED
    if 500 <= status < 600:
        return ErrorCode.PROVIDER_ERROR
    return ErrorCode.PROVIDER_BAD_RESPONSE


def _failure(
    code: ErrorCode,
    message: str,
    provider_status: int | None,
    provider_code: str | None = None,
    retry_after_s: float | None = None,
    detail: str | None = None,
    unmapped: bool = False,
    rule: int | None = None,
) -> Outcome:
    return Outcome(
        spec(code).status,
        code,
        message,
        provider_code,
        provider_status,
        retry_after_s,
        unmapped=unmapped,
        detail=detail,
        rule=rule,
    )


def _parse(body: bytes) -> Any:
    if not body.strip():
        return _NO_JSON
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _NO_JSON


def _search(expression: ParsedResult | None, body: Any) -> Any:
    if expression is None or body is _NO_JSON:
        return None
    try:
        return expression.search(body)
    except (JMESPathError, TypeError, ValueError):
        return None


def _truthy(value: Any) -> bool:
    """JMESPath truth: false, null and empty strings, lists and objects are false; 0 is true."""
    return value is not None and value is not False and value not in ("", [], {})


def _extract(paths: dict[str, ParsedResult], body: Any) -> dict[str, Any]:
    """The definition's fields of the answer; a value nested deeper than an envelope can hold
    (the JSON writer's limit is 255 levels) is left out, as if absent."""
    found = {name: _search(expr, body) for name, expr in paths.items()}
    return {
        name: value
        for name, value in found.items()
        if value is not None and _within_depth(value, MAX_EXTRACTED_DEPTH)
    }


def _within_depth(value: Any, levels: int) -> bool:
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        return True
    return levels > 0 and all(_within_depth(item, levels - 1) for item in value)


def _details(errors: Errors, body: Any) -> dict[str, str | None]:
    return {
        "code": _scalar(_search(errors.code, body)),
        "type": _scalar(_search(errors.type, body)),
        "message": _scalar(_search(errors.message, body)),
    }


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip()
    return text[:MAX_PROVIDER_TEXT] or None


def _first_rule(
    rules: list[Rule], status: int, details: dict[str, str | None], body: Any
) -> int | None:
    """The index of the first rule the answer matches."""
    for index, rule in enumerate(rules):
        when = rule.when
        if when.status is not None and status not in _as_list(when.status):
            continue
        if when.body is not None and not _truthy(_search(when.body, body)):
            continue
        if all(
            expected is None or _equal_any(details[key], expected)
            for key, expected in (
                ("code", when.code),
                ("type", when.type),
                ("message", when.message),
            )
        ):
            return index
    return None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _equal_any(actual: str | None, expected: Any) -> bool:
    if actual is None:
        return False
    folded = actual.casefold()
    return any(folded == str(e).strip().casefold() for e in _as_list(expected))


def _wait(
    hints: list[RetryHint], response: UpstreamResponse, body: Any, now: datetime
) -> float | None:
    """Seconds to wait, from the definition's hints in order, then ``Retry-After`` (seconds or
    an HTTP date); clamped, ``None`` when none is given or readable."""
    for hint in hints:
        given = response.headers.get(hint.header.lower()) if hint.header else None
        if hint.body is not None:
            found = _search(hint.body, body)
            given = None if isinstance(found, bool) else found
        seconds = _seconds(given, hint.unit, now)
        if seconds is not None:
            return seconds
    return _seconds(response.headers.get("retry-after"), "seconds", now, dates=True)


def _seconds(value: Any, unit: str, now: datetime, *, dates: bool = False) -> float | None:
    """``value`` read in ``unit`` as seconds from ``now`` (``dates``: a text that is not a
    number may be an HTTP date, as in Retry-After)."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    try:
        number = float(text) if unit != "http_date" else None
    except ValueError:
        number = None
    if number is None:
        if unit != "http_date" and not dates:
            return None
        try:
            number, unit = (parsedate_to_datetime(text) - now).total_seconds(), "seconds"
        except (TypeError, ValueError, IndexError):
            return None
    if number != number:  # NaN
        return None
    seconds = {
        "seconds": number,
        "milliseconds": number / 1000,
        "unix": number - now.timestamp(),
        "unix_ms": number / 1000 - now.timestamp(),
    }[unit]
    low, high = RETRY_AFTER_CLAMP_S
    return round(min(max(seconds, low), high), 3)


def _timestamp(value: Any) -> str | None:
    """The provider's time as RFC 3339 UTC, or ``None`` when it gave none that can be read."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            moment = datetime.fromtimestamp(value, UTC)
        elif isinstance(value, str):
            moment = datetime.fromisoformat(value.strip())
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        else:
            return None
        return format_time(moment)
    except (ValueError, OverflowError, OSError):  # past the calendar's ends, in UTC or not
        return None


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="auto").replace("+00:00", "Z")


def _probed(probe: Probe, response: UpstreamResponse) -> Outcome:
    """What a status probe's answer says of the object: ``probed`` is None when it says
    nothing definite (an error, an answer that is not JSON), which changes nothing."""
    status = response.status
    if status in probe.not_found:
        return Outcome(
            Status.REJECTED, ErrorCode.NOT_FOUND, provider_status=status, probed="not_found"
        )
    body = _parse(response.body)
    if status not in probe.status or body is _NO_JSON:
        return Outcome(Status.FAILED, provider_status=status)
    if _truthy(_search(probe.cancelled, body)):
        return Outcome(
            Status.CANCELLED,
            provider_status=status,
            cancelled_at=_timestamp(_search(probe.extract.cancelled_at, body)),
            provider_response=_extract(probe.extract.provider_response, body),
            probed="cancelled",
        )
    if probe.pending is not None and _truthy(_search(probe.pending, body)):
        return Outcome(Status.FAILED, provider_status=status, probed="pending")
    if probe.not_cancelled is None or _truthy(_search(probe.not_cancelled, body)):
        return Outcome(Status.FAILED, provider_status=status, probed="not_cancelled")
    return Outcome(Status.FAILED, provider_status=status)
