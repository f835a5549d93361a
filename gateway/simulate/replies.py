"""What a simulated provider answers: a status, a JSON body and headers, plus the two time
formats the providers' documents use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Reply:
    """One JSON answer, built by the pure functions of the provider modules."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=orjson.dumps(self.body),
            content_type=JSON_TYPE,
            headers=dict(self.headers),
        )


@dataclass(frozen=True)
class Call:
    """The parts of a request the answer depends on."""

    provider: str
    method: str
    path: str  # relative to the provider's prefix, as its document prints it
    object_id: str
    now: datetime
    query: Mapping[str, str] = field(default_factory=dict)


def iso_z(moment: datetime) -> str:
    """``2024-01-16T10:30:00Z``: the documents' RFC 3339 form, whole seconds, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def system_now() -> datetime:
    return datetime.now(UTC)
