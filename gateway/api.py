"""The HTTP endpoints. Each handler is thin: the work happens in ``cancel.py``."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from aiohttp import web
from structlog.typing import FilteringBoundLogger

from gateway.cancel import RequestInfo
from gateway.config import ServerConfig
from gateway.envelope import Reply, error_body, reply_headers
from gateway.errors import ErrorCode, GatewayError, Source, spec
from gateway.live import Live, LiveConfig
from gateway.models import Envelope
from gateway.problems import ConfigError
from gateway.routing import Caller
from gateway.store import StoreUnavailable

_CANCELLATION_ID = re.compile(r"cxl_[0-9a-z]{26}")
LOG = web.AppKey("log", FilteringBoundLogger)
CONFIG = web.AppKey("config", LiveConfig)
SERVER = web.AppKey("server", ServerConfig)  # as started: these settings need a restart
INFO = web.RequestKey("info", RequestInfo)
CURRENT = web.RequestKey("current", Live)  # the configuration this request runs on
CALLER = web.RequestKey("caller", Caller)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/cancellations", create_cancellation)
    app.router.add_get("/v1/cancellations/{cancellation_id}", get_cancellation)
    app.router.add_get("/v1/connections", list_connections)
    app.router.add_post("/admin/reload", reload_config)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


async def create_cancellation(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    limit = server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise GatewayError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"the request body is larger than {limit} bytes"
        )
    try:
        async with asyncio.timeout(server.body_timeout_s):
            body = await request.read()  # past client_max_size: HTTPRequestEntityTooLarge (413)
    except TimeoutError:
        request.app[LOG].warning("request.body_timeout", timeout_s=server.body_timeout_s)
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            f"the request body did not arrive within {server.body_timeout_s:g} s",
            fields=[("body", "did not arrive in time")],
        ) from None
    reply = await request[CURRENT].canceller.cancel(request[CALLER], body, request[INFO])
    return envelope_response(reply)


async def get_cancellation(request: web.Request) -> web.Response:
    """A cancellation's envelope as it was answered, for the caller that made it only."""
    cancellation_id = request.match_info["cancellation_id"]
    unknown = GatewayError(ErrorCode.NOT_FOUND, f"no cancellation {cancellation_id!r}")
    if not _CANCELLATION_ID.fullmatch(cancellation_id):
        raise unknown
    store = request.app[CONFIG].store
    try:
        entry = await store.lookup(cancellation_id, request[CALLER].name)
    except StoreUnavailable as exc:
        request.app[LOG].error("store.unavailable", backend=store.name, error=str(exc))
        raise GatewayError(
            ErrorCode.STORE_UNAVAILABLE, "the ledger does not answer", retry_after_s=1
        ) from None
    if entry is None:
        raise unknown
    if entry.envelope is None:
        raise GatewayError(
            ErrorCode.IDEMPOTENCY_IN_PROGRESS,
            f"cancellation {cancellation_id} is still running",
            retry_after_s=1,
        )
    return web.Response(body=entry.envelope, content_type="application/json")


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
    return _json(
        {"status": "reloaded", "config_version": live.version, "previous_version": previous}
    )


async def list_connections(request: web.Request) -> web.Response:
    """The connections this caller may use, with what a request may say; never secrets."""
    caller = request[CALLER]
    listed: list[dict[str, Any]] = []
    for name, target in sorted(request[CURRENT].runtime.targets.items()):
        if not caller.may_use(name):
            continue
        definition = target.definition
        listed.append(
            {
                "name": name,
                "provider": definition.name,
                "resources": list(definition.resources),
                "params": {
                    pname: {
                        "type": pspec.type,
                        "required": pspec.required,
                        "per_request": pspec.per_request,
                        "description": pspec.description,
                    }
                    for pname, pspec in definition.params.items()
                },
            }
        )
    return _json({"connections": listed})


async def healthz(_: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the configuration is loaded and the store answers."""
    store = request.app[CONFIG].store
    version = request[CURRENT].version
    try:
        await store.ping()
    except StoreUnavailable as exc:
        request.app[LOG].warning("store.unavailable", backend=store.name, error=str(exc))
        return _json({"status": "unavailable", "config_version": version, "store": store.name}, 503)
    return _json({"status": "ready", "config_version": version, "store": store.name})


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
    envelope = Envelope(
        status=spec(exc.code).status,
        error=error_body(
            exc.code,
            exc.message,
            Source.GATEWAY,
            retry_after_s=exc.retry_after_s,
            fields=exc.fields,
        ),
        request_id=info.request_id,
        trace_id=info.trace.trace_id,
    )
    reply = Reply(
        spec(exc.code).http_status,
        envelope.model_dump_json().encode(),
        reply_headers(info.request_id, exc.retry_after_s),
    )
    if exc.code is ErrorCode.UNAUTHORIZED:
        reply.headers["WWW-Authenticate"] = 'Bearer realm="cancel-gateway"'
    return envelope_response(reply)


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
