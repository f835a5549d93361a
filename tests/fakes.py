"""Test doubles for the core: a clock that moves only when told, a transport that answers from
a script and records what it was sent, a store that fails on demand, and ``make_kit``, which
builds the process's services from ``BASE_CONFIG`` around them. No socket, no real sleeping.

The transport has the shape of httpx's ``MockTransport``: a plain async callable.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import textwrap
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from structlog.typing import FilteringBoundLogger

from gateway.cancel import Canceller
from gateway.inbound import RequestInfo
from gateway.loader import Runtime, load
from gateway.logging import make_logger
from gateway.metrics import Metrics
from gateway.redact import Redactor
from gateway.routing import Caller, Callers
from gateway.services import Services, build_services
from gateway.store import (
    BeginAnswer,
    Entry,
    KeyClaim,
    LedgerQuery,
    RefreshLease,
    RefreshRow,
    StoredReply,
    StoreUnavailable,
)
from gateway.store.memory import MemoryStore
from gateway.tracing import trace_from
from gateway.translate.wire import UpstreamRequest, UpstreamResponse
from gateway.upstream import CONNECT_TIMEOUT_S
from tests.conftest import BASE_CONFIG, CALLER_KEY, CANARIES

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

UPSTREAM = "http://upstream.test"  # never resolved: the fake transport answers for it
ENV = {"OMS_API_KEY": CALLER_KEY, "UPSTREAM": UPSTREAM, **CANARIES}
LIMITED_KEY = "limited-caller-key-0123456789"  # BASE_CONFIG's caller limited to shipper-*
START = datetime(2024, 1, 16, 10, 30, tzinfo=UTC)

# A provider whose cancel is a POST with no idempotency key: not safe to repeat once sent.
PLAIN_POST = """\
name: plainpost
title: PlainPost
credentials:
  token: {}
auth: {header: X-Token, value: "{credentials.token}"}
resources:
  order:
    method: POST
    path: /orders/{id}/cancel
    body: {reason: "{reason}"}
"""
PLAIN_FILES = {"plainpost.yaml": PLAIN_POST}
PLAIN_CONFIG = BASE_CONFIG.replace("callers:", "providers: [plainpost.yaml]\ncallers:", 1) + (
    "  plain:\n    provider: plainpost\n    base_url: ${UPSTREAM}/plain\n"
    "    credentials: {token: plain-token-0123}\n    timeout_s: 2\n"
)


class FakeClock:
    """Time that moves only by ``sleep`` (which returns at once) or ``advance``; ``now`` and
    ``monotonic`` move together."""

    def __init__(self, start: datetime = START, monotonic: float = 1000.0) -> None:
        self._start = start
        self._origin = monotonic
        self.t = monotonic
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.t - self._origin)

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(seconds, 0.0)
        await asyncio.sleep(0)  # a turn of the loop, as a real sleep gives; no time passes

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass(frozen=True)
class Sent:
    """One request the transport received, with the timeouts it was given."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    timeout_s: float
    connect_timeout_s: float

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for n, v in self.headers if n.lower() == lowered), None)

    def json(self) -> Any:
        return None if self.body is None else orjson.loads(self.body)


Behaviour = Callable[
    [UpstreamRequest, float, float], Awaitable[UpstreamResponse] | UpstreamResponse
]
Script = UpstreamResponse | BaseException | Behaviour


class FakeTransport:
    """Answers each request with the next scripted answer: an ``UpstreamResponse``, an
    exception to raise (``UpstreamFailure``, or any other for a bug), or a callable given the
    request and its timeouts (to advance the clock, hold the answer, ...). When the script is
    empty ``default`` answers; without one the request is refused as unexpected."""

    def __init__(self, *script: Script, default: Script | None = None) -> None:
        self._script: deque[Script] = deque(script)
        self.default = default
        self.sent: list[Sent] = []

    def answer(self, *script: Script) -> None:
        self._script.extend(script)

    def hold(self, answer: UpstreamResponse) -> tuple[asyncio.Event, asyncio.Event]:
        """Script ``answer`` to wait for the test: ``arrived`` is set once the request is in,
        and the answer comes when the test sets ``release``."""
        arrived, release = asyncio.Event(), asyncio.Event()

        async def hold(request: UpstreamRequest, timeout_s: float, connect_s: float) -> Any:
            arrived.set()
            await release.wait()
            return answer

        self.answer(hold)
        return arrived, release

    @property
    def pending(self) -> int:
        """Scripted answers not used yet."""
        return len(self._script)

    async def __call__(
        self,
        request: UpstreamRequest,
        timeout_s: float,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> UpstreamResponse:
        self.sent.append(
            Sent(
                request.method,
                request.url,
                request.headers,
                request.body,
                timeout_s,
                connect_timeout_s,
            )
        )
        answer = self._script.popleft() if self._script else self.default
        if answer is None:
            raise AssertionError(f"unexpected request {request!r}: the script is empty")
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, UpstreamResponse):
            return answer
        result = answer(request, timeout_s, connect_timeout_s)
        return await result if inspect.isawaitable(result) else result


def response(
    status: int = 200,
    json: Any = None,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> UpstreamResponse:
    """A provider's answer as the real transport gives it: header names lower-cased."""
    payload = orjson.dumps(json if json is not None else {}) if body is None else body
    given = {
        "content-type": "application/json",
        **{k.lower(): v for k, v in (headers or {}).items()},
    }
    return UpstreamResponse(status, given, payload)


class FlakyStore:
    """A ``MemoryStore`` whose methods named in ``failing`` raise ``fault`` (the store not
    answering, by default; another exception stands for a bug in a backend); every call is
    recorded, and the entries ``begin`` was given are kept in order."""

    name = "flaky-memory"

    def __init__(
        self,
        failing: Iterable[str] = (),
        *,
        fault: type[Exception] = StoreUnavailable,
        inner: MemoryStore | None = None,
    ) -> None:
        self.inner = inner or MemoryStore()
        self.failing = set(failing)
        self.fault = fault
        self.calls: list[str] = []
        self.begun: list[Entry] = []

    def _call(self, method: str) -> None:
        self.calls.append(method)
        if method in self.failing:
            raise self.fault(f"the store failed in {method}")

    async def open(self) -> None:
        self._call("open")

    async def close(self) -> None:
        self._call("close")

    async def ping(self) -> None:
        self._call("ping")

    async def begin(self, entry: Entry, claim: KeyClaim | None, now: float) -> BeginAnswer:
        self._call("begin")
        self.begun.append(entry)
        return await self.inner.begin(entry, claim, now)

    async def complete(
        self,
        entry: Entry,
        claim: KeyClaim | None,
        token: str,
        reply: StoredReply | None,
        now: float,
        holder: str | None = None,
    ) -> bool:
        self._call("complete")
        return await self.inner.complete(entry, claim, token, reply, now, holder)

    async def take_due(self, holder: str, now: float, lease_s: float, limit: int) -> list[Entry]:
        self._call("take_due")
        return await self.inner.take_due(holder, now, lease_s, limit)

    async def pending_summary(self) -> tuple[int, float | None]:
        self._call("pending_summary")
        return await self.inner.pending_summary()

    async def record(self, entry: Entry) -> None:
        self._call("record")
        await self.inner.record(entry)

    async def lookup(self, cancellation_id: str, caller: str) -> Entry | None:
        self._call("lookup")
        return await self.inner.lookup(cancellation_id, caller)

    async def list_entries(self, query: LedgerQuery) -> list[Entry]:
        self._call("list_entries")
        return await self.inner.list_entries(query)

    async def lease_refresh(
        self, name: str, holder: str, now: float, lease_s: float
    ) -> RefreshLease:
        self._call("lease_refresh")
        return await self.inner.lease_refresh(name, holder, now, lease_s)

    async def save_refresh(self, name: str, holder: str, row: RefreshRow | None) -> bool:
        self._call("save_refresh")
        return await self.inner.save_refresh(name, holder, row)


def with_settings(connection: str, settings: str, config: str = BASE_CONFIG) -> str:
    """``config`` with the YAML keys of ``settings`` set on one connection, replacing its own."""
    anchor = f"  {connection}:\n"
    head, tail = config.split(anchor)
    given = textwrap.dedent(settings).strip("\n").splitlines()
    names = {line.split(":", 1)[0] for line in given if not line.startswith(" ")}
    lines = tail.splitlines(keepends=True)
    end = next((i for i, line in enumerate(lines) if not line.startswith("    ")), len(lines))
    kept = [line for line in lines[:end] if line.strip().split(":", 1)[0] not in names]
    block = "".join(f"    {line}\n" for line in given)
    return head + anchor + block + "".join(kept + lines[end:])


def write_config(
    folder: Path, config: str = BASE_CONFIG, files: Mapping[str, str] | None = None
) -> Path:
    """The configuration and the provider files it names, written to ``folder``."""
    for name, text in (files or {}).items():
        (folder / name).write_text(textwrap.dedent(text))
    path = folder / "gateway.yaml"
    path.write_text(textwrap.dedent(config))
    return path


def load_runtime(
    folder: Path,
    config: str = BASE_CONFIG,
    *,
    files: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Runtime:
    """``config`` loaded as the server loads it, with the fake environment."""
    return load(write_config(folder, config, files), {**ENV, **(env or {})})


def fixed_jitter(value: float = 1.0) -> Callable[[], float]:
    """The backoff's jitter, fixed: 1.0 waits the whole ceiling."""
    return lambda: value


@dataclass
class Kit:
    """One configuration and the services of a process serving it, all fakes but the store's
    memory backend; the log is JSON lines in ``stream``."""

    runtime: Runtime
    services: Services
    clock: FakeClock
    transport: FakeTransport
    store: FlakyStore
    stream: io.StringIO
    callers: Callers = field(init=False)

    def __post_init__(self) -> None:
        self.callers = Callers(self.runtime.config.callers)

    def canceller(self) -> Canceller:
        return Canceller(self.runtime, self.services)

    def caller(self, name: str = "oms") -> Caller:
        found = self.callers.named(name)
        assert found is not None, name
        return found

    @property
    def logs(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.stream.getvalue().splitlines() if line]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.logs if line["event"] == name]

    @property
    def event_names(self) -> list[str]:
        return [line["event"] for line in self.logs]


def make_logging(runtime: Runtime) -> tuple[Redactor, FilteringBoundLogger, io.StringIO]:
    """The log's redactor, a debug-level logger writing JSON lines to a ``StringIO``, and it."""
    stream = io.StringIO()
    redactor = Redactor(runtime.secrets)
    return redactor, make_logger(stream=stream, level="debug", redactor=redactor), stream


def make_kit(
    folder: Path,
    config: str = BASE_CONFIG,
    *,
    files: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    transport: FakeTransport | None = None,
    clock: FakeClock | None = None,
    store: FlakyStore | None = None,
    jitter: float = 1.0,
    tracer_provider: TracerProvider | None = None,
) -> Kit:
    runtime = load_runtime(folder, config, files=files, env=env)
    clock = clock or FakeClock()
    transport = transport or FakeTransport()
    store = store or FlakyStore()
    redactor, log, stream = make_logging(runtime)
    services = build_services(
        runtime,
        transport,
        log=log,
        redactor=redactor,
        clock=clock,
        store=store,
        metrics=Metrics(),
        tracer_provider=tracer_provider,
        rand=fixed_jitter(jitter),
    )
    return Kit(runtime, services, clock, transport, store, stream)


def request_info(idempotency_key: str | None = None, request_id: str = "req-test-1") -> RequestInfo:
    """What the HTTP layer would have learnt: ids, a new trace, the Idempotency-Key."""
    return RequestInfo(request_id, trace_from(None), idempotency_key)


def as_body(value: Any) -> bytes:
    return orjson.dumps(value)
