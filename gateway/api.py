"""The HTTP endpoints. Each handler is thin: the work happens in ``cancel.py``."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel

from gateway.config import ServerConfig
from gateway.envelope import Reply, gateway_envelope, render_envelope, reply_headers
from gateway.errors import ErrorCode, GatewayError, Status, invalid_request, spec
from gateway.health import MINUTE_S, WINDOW_MINUTES
from gateway.inbound import Decoded, RequestInfo, check_idempotency_key, json_body
from gateway.ledger_api import ledger_page
from gateway.live import Live, LiveConfig
from gateway.metrics import CONTENT_TYPE
from gateway.models import (
    CANCELLATION_ID,
    MAX_BATCH,
    MAX_BATCH_KEY,
    ConnectionHealthInfo,
    ConnectionInfo,
    Connections,
    ConnectionsHealth,
    Health,
    Latency,
    MinuteOutcomes,
    ParamInfo,
    Readiness,
    Reloaded,
)
from gateway.openapi import openapi_document
from gateway.problems import ConfigError
from gateway.routing import Caller
from gateway.services import Services
from gateway.store import Entry, StoreUnavailable
from gateway.translate.classify import format_time

CONFIG = web.AppKey("config", LiveConfig)
SERVICES = web.AppKey("services", Services)
SERVER = web.AppKey("server", ServerConfig)  # as started: these settings need a restart
INFO = web.RequestKey("info", RequestInfo)
CURRENT = web.RequestKey("current", Live)  # the configuration this request runs on
CALLER = web.RequestKey("caller", Caller)
ACCESS_LOG = web.AppKey("access_log", bool)
OPENAPI = web.AppKey("openapi", bytes)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/cancellations", create_cancellation)
    app.router.add_get("/v1/cancellations", list_cancellations)
    app.router.add_post("/v1/cancellations/batch", create_batch)
    # Not "batch": that path is POST only, and a GET on it must say so (405, Allow: POST).
    app.router.add_get("/v1/cancellations/{cancellation_id:(?!batch$)[^/]+}", get_cancellation)
    app.router.add_get("/v1/cancellations/{cancellation_id}/events", get_events)
    app.router.add_get("/v1/connections", list_connections)
    app.router.add_get("/v1/connections/health", connections_health)
    app.router.add_post("/admin/reload", reload_config)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app[OPENAPI] = orjson.dumps(openapi_document())


async def create_cancellation(request: web.Request) -> web.Response:
    """One cancellation; with ``?dry_run=true``, what would be sent for it, and nothing is."""
    dry_run = _flag(request, "dry_run")
    body = await _read_body(request)
    canceller = request[CURRENT].canceller
    if dry_run:
        preview = canceller.preview(request[CALLER], body, request[INFO])
        request.app[SERVICES].log.info(
            "cancellation.previewed",
            caller=request[CALLER].name,
            connection=preview.connection,
            resource_id=preview.resource_id,
        )
        return web.Response(body=preview.model_dump_json(), content_type="application/json")
    info = request[INFO]
    if prefers_async(request):
        info = replace(info, asynchronous=True)
    reply = await canceller.cancel(request[CALLER], body, info)
    return envelope_response(reply)


def prefers_async(request: web.Request) -> bool:
    """``Prefer: respond-async`` (RFC 7240: preferences separated by commas, each maybe with
    parameters after a semicolon, names compared without case)."""
    for header in request.headers.getall("Prefer", []):
        for preference in header.split(","):
            if preference.split(";")[0].split("=")[0].strip().lower() == "respond-async":
                return True
    return False


async def create_batch(request: web.Request) -> web.Response:
    """Up to ``MAX_BATCH`` cancellations, at most ``server.batch_concurrency`` at a time; each
    item is answered with the envelope it would get alone, in the order given, and one
    item's failure never touches another's. With an ``Idempotency-Key`` K, item i uses K#i."""
    if "dry_run" in request.query:  # asking for one must never cancel for real
        raise invalid_request(
            ("query.dry_run", "a batch has no dry run: preview its items one by one")
        )
    body = await _read_body(request)
    info = request[INFO]
    if prefers_async(request):  # every valid item is queued, each answered pending
        info = replace(info, asynchronous=True)
    items = parse_batch(body, info.idempotency_key)
    caller, canceller = request[CALLER], request[CURRENT].canceller
    slots = asyncio.Semaphore(request.app[SERVER].batch_concurrency)

    async def one(index: int, item: object) -> Reply:
        key = None if info.idempotency_key is None else f"{info.idempotency_key}#{index}"
        async with slots:
            # Each item as it was decoded: checked on its own, whatever its shape or depth.
            return await canceller.cancel(caller, Decoded(item), replace(info, idempotency_key=key))

    replies = await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
    counts = dict.fromkeys((s.value for s in Status), 0)
    for answered in replies:
        counts[answered.status] += 1
    bodies = [answered.body for answered in replies]
    head = orjson.dumps(
        {"counts": counts, "request_id": info.request_id, "trace_id": info.trace.trace_id}
    )
    # The envelopes are spliced in as they were rendered (and redacted), not parsed again.
    document = b'{"items":[' + b",".join(bodies) + b"]," + head[1:]
    return web.Response(body=document, content_type="application/json")


def parse_batch(body: bytes, idempotency_key: str | None) -> list[object]:
    """The batch's items, unchecked: each is checked as its own cancellation."""
    check_idempotency_key(idempotency_key)
    if idempotency_key is not None and len(idempotency_key) > MAX_BATCH_KEY:
        raise invalid_request(
            (
                "headers.Idempotency-Key",
                f"a batch's key is at most {MAX_BATCH_KEY} characters (item i uses key#i)",
            )
        )
    data = json_body(body)
    if not isinstance(data, dict) or set(data) != {"items"}:
        raise invalid_request(("body", 'must be a JSON object with one field, "items"'))
    items = data["items"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise invalid_request(("items", f"must be a list of 1 to {MAX_BATCH} cancellations"))
    return items


# How a request body can fail on the wire: not valid for its Content-Encoding or its chunked
# framing (RequestPayloadError, HttpProcessingError), or a client gone before its end.
_UNREADABLE = (RequestPayloadError, HttpProcessingError, ConnectionError)


async def _read_body(request: web.Request) -> bytes:
    server = request.app[SERVER]
    limit = server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise GatewayError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"the request body is larger than {limit} bytes"
        )
    try:
        if request.content.is_eof():  # it all came with the headers: no waiting, no timer
            return await request.read()  # past client_max_size: HTTPRequestEntityTooLarge
        async with asyncio.timeout(server.body_timeout_s):
            return await request.read()  # past client_max_size: HTTPRequestEntityTooLarge
    except _UNREADABLE as exc:
        # The client's fault, not a bug: one warning line, no traceback, and an answer (which
        # a client that left never reads).
        reason = _first_line(exc)
        request.app[SERVICES].log.warning("request.body_unreadable", reason=reason)
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"the request body could not be read: {reason}",
            fields=[("body", "could not be read")],
        ) from None
    except TimeoutError:
        request.app[SERVICES].log.warning("request.body_timeout", timeout_s=server.body_timeout_s)
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"the request body did not arrive within {server.body_timeout_s:g} s",
            fields=[("body", "did not arrive in time")],
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2]) or type(exc).__name__
    return text[:200]


def _flag(request: web.Request, name: str) -> bool:
    given = request.query.getall(name, ["false"])
    if len(given) > 1:  # which one counts would be a guess: a dry run must never cancel
        raise invalid_request((f"query.{name}", "is given more than once"))
    if given[0] not in ("true", "false"):
        raise invalid_request((f"query.{name}", "must be true or false"))
    return given[0] == "true"


async def _ledger_row(request: web.Request) -> tuple[str, Entry]:
    """The cancellation the path names, for the caller that made it only (else a 404)."""
    cancellation_id = request.match_info["cancellation_id"]
    unknown = GatewayError(ErrorCode.NOT_FOUND, f"no cancellation {cancellation_id!r}")
    if not CANCELLATION_ID.fullmatch(cancellation_id):
        raise unknown
    store = request.app[SERVICES].store
    try:
        entry = await store.lookup(cancellation_id, request[CALLER].name)
    except StoreUnavailable as exc:
        request.app[SERVICES].log.error("store.unavailable", backend=store.name, error=str(exc))
        raise GatewayError(
            ErrorCode.STORE_UNAVAILABLE, "the ledger does not answer", retry_after_s=1
        ) from None
    if entry is None:
        raise unknown
    return cancellation_id, entry


async def get_events(request: web.Request) -> web.Response:
    """What happened to a cancellation, in order: received, attempts, probes, settled."""
    cancellation_id, entry = await _ledger_row(request)
    events = orjson.loads(entry.events or b"[]")
    for event in events:  # kept as unix seconds, cheaper to record: written out now
        event["at"] = format_time(datetime.fromtimestamp(event["at"], UTC))
        if "due" in event:  # a scheduled step's
            event["due"] = format_time(datetime.fromtimestamp(event["due"], UTC))
    body = orjson.dumps({"cancellation_id": cancellation_id, "events": events})
    return web.Response(body=body, content_type="application/json")


async def get_cancellation(request: web.Request) -> web.Response:
    """A cancellation's envelope as it was answered, for the caller that made it only."""
    cancellation_id, entry = await _ledger_row(request)
    if entry.envelope is None:
        raise GatewayError(
            ErrorCode.IDEMPOTENCY_IN_PROGRESS,
            f"cancellation {cancellation_id} is still running",
            retry_after_s=1,
        )
    # A pending cancellation answers 202 until it is settled (CONTRACT §10); a final one 200,
    # whatever its status (§7).
    status = 202 if entry.status == Status.PENDING.value else 200
    return web.Response(body=entry.envelope, status=status, content_type="application/json")


async def list_cancellations(request: web.Request) -> web.Response:
    """The caller's answered cancellations, final or pending (every caller's for an admin),
    newest first."""
    return await ledger_page(request.query, request[CALLER], request.app[SERVICES])


async def reload_config(request: web.Request) -> web.Response:
    """Load the configuration file again (this process only: SIGHUP reaches every worker)."""
    caller = request[CALLER]
    if not caller.admin:
        raise GatewayError(ErrorCode.FORBIDDEN, f"caller {caller.name!r} may not reload")
    previous = request[CURRENT].version
    try:
        live = await request.app[CONFIG].reload()
    except ConfigError as exc:
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"the configuration was refused, version {previous} keeps serving",
            fields=[(f"{p.file}: {p.loc}" if p.loc else p.file, p.message) for p in exc.problems],
        ) from None
    return _model(
        Reloaded(status="reloaded", config_version=live.version, previous_version=previous)
    )


async def list_connections(request: web.Request) -> web.Response:
    """The connections this caller may use, with what a request may say; never secrets."""
    caller = request[CALLER]
    listed = [
        ConnectionInfo(
            name=name,
            provider=target.definition.name,
            resources=list(target.definition.resources),
            params={
                pname: ParamInfo(
                    type=pspec.type,
                    required=pspec.required,
                    per_request=pspec.per_request,
                    description=pspec.description or None,
                )
                for pname, pspec in target.definition.params.items()
            },
        )
        for name, target in sorted(request[CURRENT].runtime.targets.items())
        if caller.may_use(name)
    ]
    return _model(Connections(connections=listed))


async def connections_health(request: web.Request) -> web.Response:
    """Each connection the caller may use (all for an admin) as this process saw it lately:
    its breaker, what is in flight, the last minutes' outcomes and the upstream's latency."""
    caller, services = request[CALLER], request.app[SERVICES]
    breakers = {name: g.breaker.effective_state().value for name, g in services.guards.items()}
    health = services.metrics.health
    listed = []
    for name, target in sorted(request[CURRENT].runtime.targets.items()):
        if not (caller.admin or caller.may_use(name)):
            continue
        window = health.window(name)
        listed.append(
            ConnectionHealthInfo(
                connection=name,
                provider=target.definition.name,
                breaker=breakers.get(name, "closed"),
                in_flight=window.in_flight,
                outcomes=window.outcomes,
                minutes=[
                    MinuteOutcomes(start=_unix_time(start), outcomes=outcomes)
                    for start, outcomes in window.minutes
                ],
                latency=Latency(p50_ms=window.p50_ms, p95_ms=window.p95_ms),
                rate_limited=window.rate_limited,
                unmapped_errors=window.unmapped,
            )
        )
    window_s = MINUTE_S * WINDOW_MINUTES
    now = format_time(datetime.now(UTC))
    return _model(ConnectionsHealth(window_s=window_s, generated_at=now, connections=listed))


def _unix_time(seconds: float) -> str:
    return format_time(datetime.fromtimestamp(seconds, UTC))


async def healthz(_: web.Request) -> web.Response:
    return _model(Health(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    """Ready when the configuration is loaded and the store answers."""
    store = request.app[SERVICES].store
    version = request[CURRENT].version
    try:
        await store.ping()
    except StoreUnavailable as exc:
        request.app[SERVICES].log.warning("store.unavailable", backend=store.name, error=str(exc))
        return _model(
            Readiness(status="unavailable", config_version=version, store=store.name), 503
        )
    return _model(Readiness(status="ready", config_version=version, store=store.name))


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; with several workers, the sum of all of them."""
    services = request.app[SERVICES]
    return web.Response(
        body=services.metrics.exposition(services.guards.items()),
        headers={"Content-Type": CONTENT_TYPE},
    )


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


def envelope_response(reply: Reply) -> web.Response:
    return web.Response(
        body=reply.body,
        status=reply.http_status,
        headers=reply.headers,
        content_type="application/json",
    )


def error_response(request: web.Request, exc: GatewayError) -> web.Response:
    """An envelope for a decision taken before any cancellation began (auth, routing, HTTP)."""
    info = request[INFO]
    envelope = gateway_envelope(exc, info.request_id, info.trace.trace_id)
    reply = Reply(
        spec(exc.code).http_status,
        render_envelope(envelope),
        reply_headers(info.request_id, exc.retry_after_s),
    )
    if exc.code is ErrorCode.UNAUTHORIZED:
        reply.headers["WWW-Authenticate"] = 'Bearer realm="cancel-gateway"'
    return envelope_response(reply)


def _model(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json(), status=status, content_type="application/json"
    )
