"""Redaction: secret values out of log events and out of what providers answer.

Every configured secret value (provider credentials, caller keys), and its base64 and
percent-encoded forms, is replaced wherever it appears in a log line; values under sensitive
header-like keys are masked whatever they hold.

Answers are redacted differently (``Redactor.answer``): only text that came from the provider
is searched, never the gateway's own fields, and the provider's echo of anything the caller
sent that could be a credential is masked alike, so that no answer confirms a guess.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

import orjson

REDACTED = "[REDACTED]"
_Form = TypeVar("_Form", str, bytes)  # a secret's form, as text or as escaped JSON bytes
MIN_SECRET_LENGTH = 8  # the shortest credential check-config accepts (caller keys: 16)
_DYNAMIC_KEPT = 8  # the newest fetched tokens kept per connection
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
_SCALARS = frozenset({str, int, float, bool, type(None)})


class Redactor:
    """Removes secret values from log events and envelopes."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._dynamic: dict[str, tuple[str, ...]] = {}
        self._pattern: re.Pattern[str] | None = None
        self._sensitive: dict[Any, bool] = {}  # key -> is its value masked?
        self._safe: set[str] = set()  # JSON keys whose values are not masked
        self._ordered: tuple[str, ...] = ()
        self._probes: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also remove these from now on (a reloaded configuration's new credentials); the
        old ones stay, as earlier events may still be written."""
        self._secrets = self._secrets | {s for s in secrets if s}
        self._compile()

    def set_dynamic(self, key: str, secret: str) -> None:
        """A secret the gateway obtained (a fetched token) under ``key``: the newest eight of
        a key are removed (requests still running may have been sent an older one), older
        ones forgotten, so that refreshes do not grow the redactor."""
        kept = self._dynamic.get(key, ())
        if secret and secret not in kept:
            self._dynamic[key] = (secret, *kept[: _DYNAMIC_KEPT - 1])
            self._compile()

    def _compile(self) -> None:
        dynamic = {secret for kept in self._dynamic.values() for secret in kept}
        secrets = self._secrets | dynamic
        forms = {form for secret in secrets for form in encoded_forms(secret)}
        # Longest first, so a secret that contains another is removed whole.
        values = sorted(forms | secrets, key=len, reverse=True)
        pattern = re.compile("|".join(map(re.escape, values))) if values else None
        # As each appears inside a JSON string: escaping is character by character, so a
        # secret inside a string value is, serialized, its escaped form inside the line. (A
        # secret JSON cannot encode, a lone surrogate from the environment, makes any line
        # holding it fail to serialize, and such a line is cleaned instead.)
        escaped = _shortest(tuple(orjson.dumps(v)[1:-1] for v in values if _encodable(v)))
        # Replaced together: a line written meanwhile sees the old secrets or the new ones.
        self._ordered, self._pattern = tuple(values), pattern
        self._probes, self._escaped = _shortest(tuple(values)), escaped

    def answer(self, sent: Sequence[str]) -> AnswerRedactor:
        """The redaction of a provider's answer to a request whose caller sent ``sent`` (the
        request's own strings): every secret goes, except one the caller's text contained."""
        return AnswerRedactor(self, sent)

    def found(self, value: str) -> list[str]:
        """The secrets' forms that occur in ``value``, longest first."""
        return [form for form in self._ordered if form in value]

    def text(self, value: str) -> str:
        # Substring tests are several times faster than the regular expression, and almost
        # every string holds no secret: the expression runs only on those that do.
        if self.holds(value):
            assert self._pattern is not None
            return self._pattern.sub(REDACTED, value)
        return value

    def holds(self, value: str) -> bool:
        """Does ``value`` hold a secret, in any of its forms?"""
        for secret in self._probes:  # noqa: SIM110 - a third faster than any() over a map
            if secret in value:
                return True
        return False

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
        cleaned = self.clean(value)
        try:
            return orjson.dumps(cleaned, default=str, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:  # text JSON cannot hold: a header byte that is not UTF-8
            return orjson.dumps(_encodable_values(cleaned), option=orjson.OPT_NON_STR_KEYS)

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

    def masked_by_name(self, value: Any) -> Any:
        """``value`` (decoded JSON) with the values under sensitive keys masked, and nothing
        else changed: the caller's own text shown back as sent, so that nothing shown depends on
        whether a value equals a secret (no oracle), as in a preview."""
        if self.plain(value):
            return value
        if isinstance(value, dict):
            return {
                key: REDACTED if self.masked_key(key) else self.masked_by_name(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.masked_by_name(item) for item in value]
        return value

    def _learn_safe(self, key: Any) -> bool:
        """A key of JSON (a str) whose value is not masked? Remembered when it is."""
        if type(key) is not str or self.masked_key(key):
            return False
        if len(self._safe) < _REMEMBERED_KEYS:
            self._safe.add(key)
        return True

    def masked_key(self, key: Any) -> bool:
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
                masked = self.masked_key(key)
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


def encoded_forms(secret: str) -> set[str]:
    """How a provider might echo a credential it was sent: base64 (standard and URL-safe,
    with and without padding) and percent-encoded, besides the value itself."""
    raw = secret.encode("utf-8", "surrogatepass")  # a lone surrogate from the environment
    # As a library's message quotes bytes or text it was given (repr: ' and \ escaped).
    forms = {quote(raw, safe=""), quote_plus(raw), repr(secret)[1:-1], repr(raw)[2:-1]}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode("ascii")
        forms.update((text, text.rstrip("=")))
    forms.discard(secret)
    return forms


class AnswerRedactor:
    """Redaction of one provider answer (see the module's docstring). Every form of every
    secret, and every string of the caller's request long enough to be a credential, is
    replaced by the same marker. A provider may echo both what the caller sent and the
    credential it was sent: were either kept, an answer would differ on whether the caller's
    string equals the credential, and confirm a guess.

    One exception, in ``provider_response`` only: a value that is exactly one of the caller's
    strings is the provider naming what it was asked about (RxUniverse's ``orderNumber`` is the
    id sent), and is kept as it is."""

    __slots__ = ("_echoes", "_redactor", "_sent")

    def __init__(self, redactor: Redactor, sent: Sequence[str]) -> None:
        self._redactor = redactor
        self._echoes = frozenset(sent)
        self._sent = frozenset(text for text in sent if len(text) >= MIN_SECRET_LENGTH)

    def text(self, value: str) -> str:
        # Almost every string holds neither a secret nor the caller's text: found without
        # building anything.
        if not self._redactor.holds(value) and not any(text in value for text in self._sent):
            return value
        found = {*self._redactor.found(value), *(text for text in self._sent if text in value)}
        # One expression, longest first: a string that holds another is replaced whole.
        ordered = sorted(found, key=len, reverse=True)
        return re.compile("|".join(map(re.escape, ordered))).sub(REDACTED, value)

    def clean(self, value: Any) -> Any:
        """``value`` (decoded JSON) with each string redacted as ``text`` does, except one that
        is exactly a string the caller sent, and the values under sensitive keys masked,
        whatever they hold."""
        if isinstance(value, str):
            return value if value in self._echoes else self.text(value)
        if isinstance(value, dict):
            return {
                self.text(str(key)): REDACTED
                if self._redactor.masked_key(key)
                else self.clean(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.clean(item) for item in value]
        return value


def _shortest(forms: tuple[_Form, ...]) -> tuple[_Form, ...]:
    """The forms that hold no other: a text holds some form exactly when it holds one of
    these (a padded base64 form holds its unpadded one), so searching for them is enough."""
    return tuple(f for f in forms if not any(o != f and o in f for o in forms))


def cut(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters long (then ending in "…"), never ending in part of
    a ``[REDACTED]`` marker, and with any character UTF-8 cannot hold (a lone surrogate from a
    header) replaced. Cut after redaction, so that no fragment of a secret can be left."""
    if len(text) > limit:
        head = text[: limit - 1]
        start = head.rfind(REDACTED[0])
        if start != -1 and REDACTED.startswith(head[start:]) and len(head) - start < len(REDACTED):
            head = head[:start]
        text = head + "…"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _encodable_values(value: Any) -> Any:
    """``value`` with every string JSON cannot hold (a lone surrogate, which aiohttp makes of a
    header byte that is not UTF-8) escaped, and every other type JSON lacks as its text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_encodable_values(str(k)): _encodable_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable_values(item) for item in value]
    if (
        value is None
        or isinstance(value, bool | float)
        or (isinstance(value, int) and -(2**63) <= value < 2**64)
    ):
        return value
    return _encodable_values(str(value))


def _encodable(text: str) -> bool:
    try:
        orjson.dumps(text)
    except orjson.JSONEncodeError:
        return False
    return True
