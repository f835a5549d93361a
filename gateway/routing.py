"""Who is calling, and which connection a cancellation goes to. Deny by default."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import translate

from gateway.config import CallerConfig
from gateway.errors import ErrorCode, GatewayError
from gateway.targets import Target


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    digest: bytes
    patterns: tuple[str, ...]  # globs, matched case-sensitively
    admin: bool = False
    # The globs as one expression, matched in one call (no pattern matches nothing).
    _allowed: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expression = "|".join(map(translate, self.patterns)) or "(?!)"
        object.__setattr__(self, "_allowed", re.compile(expression))

    def __repr__(self) -> str:
        return f"Caller({self.name!r})"

    def may_use(self, connection: str) -> bool:
        return self._allowed.match(connection) is not None


class Callers:
    """Bearer-key authentication: the presented key's SHA-256 is compared, in constant time,
    with every caller's, so timing tells neither which caller nor how much of a key matched."""

    def __init__(self, configs: Sequence[CallerConfig]) -> None:
        self._callers = tuple(
            Caller(c.name, c.digest(), tuple(c.connections), c.admin) for c in configs
        )

    def named(self, name: str) -> Caller | None:
        return next((c for c in self._callers if c.name == name), None)

    def authenticate(self, authorization: str | None) -> Caller:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise GatewayError(
                ErrorCode.UNAUTHORIZED, "send the caller key as 'Authorization: Bearer <key>'"
            )
        presented = hashlib.sha256(key.strip().encode("utf-8", "replace")).digest()
        found = None
        for caller in self._callers:
            if hmac.compare_digest(caller.digest, presented):
                found = caller
        if found is None:
            raise GatewayError(ErrorCode.UNAUTHORIZED, "the caller key is not valid")
        return found


def route(targets: Mapping[str, Target], caller: Caller, connection: str) -> Target:
    """The caller's permission is checked first, so a caller learns nothing about connections
    outside its patterns, not even whether they exist."""
    if not caller.may_use(connection):
        raise GatewayError(
            ErrorCode.FORBIDDEN, f"caller {caller.name!r} may not use connection {connection!r}"
        )
    target = targets.get(connection)
    if target is None:
        raise GatewayError(ErrorCode.UNKNOWN_CONNECTION, f"no connection named {connection!r}")
    return target
