"""The application factory. Middleware order, outermost first:

request context (request id, trace and server span, log context, access log and HTTP metrics)
→ errors to envelope → authentication → handler.

A request aiohttp cannot parse never reaches them: ``error_answer`` answers it (the listener
finds it under ``ERROR_ANSWER``) with the same headers, one log line and the same metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TextIO

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest
from structlog.typing import FilteringBoundLogger

from gateway import api, console
from gateway.api import (
    ACCESS_LOG,
    CALLER,
    CONFIG,
    CURRENT,
    INFO,
    SERVER,
    SERVICES,
    envelope_response,
    error_response,
)
from gateway.cancel import overloaded_reply
from gateway.clock import Clock
from gateway.envelope import gateway_envelope
from gateway.errors import ErrorCode, GatewayError
from gateway.inbound import RequestInfo
from gateway.live import LiveConfig
from gateway.loader import Runtime
from gateway.logging import capture_library_logs, log_context, make_logger, unparsed_reason
from gateway.metrics import Metrics
from gateway.redact import Redactor
from gateway.serve import ERROR_ANSWER, ErrorAnswer
from gateway.services import build_services
from gateway.settling import Settler
from gateway.spans import otel_provider
from gateway.store import Store, StoreUnavailable
from gateway.tracing import request_id_from, trace_from
from gateway.upstream import AiohttpTransport, Transport

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

_HTTP_CODES = {
    404: ErrorCode.UNKNOWN_ENDPOINT,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}


def create_app(
    runtime: Runtime,
    *,
    log: FilteringBoundLogger | None = None,
    redactor: Redactor | None = None,
    transport: Transport | None = None,
    clock: Clock | None = None,
    loader: Callable[[], Runtime] | None = None,
    store: Store | None = None,
    metrics_dir: str | None = None,
    tracer_provider: TracerProvider | None = None,
    background: bool = True,
) -> web.Application:
    """Build the gateway. Without ``transport`` the app opens one pooled client session on
    startup and closes it on cleanup. ``loader`` loads the configuration again for a reload
    (SIGHUP, ``POST /admin/reload``); ``redactor`` is the log's, so that a reloaded
    configuration's secrets are redacted too. ``store`` replaces the configured one.
    ``metrics_dir`` is the folder of prometheus-client's multiprocess mode (``--workers``);
    ``tracer_provider`` records spans instead of the one ``tracing`` configures;
    ``background`` False leaves the store's due work (settling.py) to other processes."""
    server = runtime.config.server
    app = web.Application(
        middlewares=[request_context, errors_to_envelope, authenticate],
        client_max_size=server.max_body_bytes,
    )
    tracing = runtime.config.tracing
    owned_provider = None
    if tracer_provider is None and tracing.exporter != "none":
        tracer_provider = owned_provider = otel_provider(tracing)
    owned_transport = None
    if transport is None:
        transport = owned_transport = AiohttpTransport()
    services = build_services(
        runtime,
        transport,
        log=log,
        redactor=redactor,
        clock=clock,
        store=store,
        metrics=Metrics(metrics_dir),
        tracer_provider=tracer_provider,
    )
    app[SERVICES] = services
    app[CONFIG] = LiveConfig(runtime, services, loader)
    app[SERVER] = server
    app[ACCESS_LOG] = runtime.config.logging.access_log
    app[ERROR_ANSWER] = error_answer(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = services.store
        try:
            await store.open()
        except StoreUnavailable as exc:  # fail closed until it answers: /readyz says so
            services.log.error("store.unavailable", backend=store.name, error=str(exc))
        settler: asyncio.Task[None] | None = None
        try:
            if owned_transport is not None:
                await owned_transport.open()
            if background:
                work = Settler(lambda: app[CONFIG].current, services, server)
                settler = asyncio.create_task(work.run())
            yield
        finally:
            if settler is not None:
                settler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await settler
            if owned_transport is not None:
                await owned_transport.close()
            await store.close()
            if owned_provider is not None:  # flushes the spans still queued
                await asyncio.to_thread(owned_provider.shutdown)

    app.cleanup_ctx.append(lifecycle)
    api.add_routes(app)
    if server.console:
        console.add_routes(app)
    return app


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Ids, the server span, the configuration the request runs on and the log context, for
    everything after; then the access log line and the HTTP metric."""
    app = request.app
    started = time.perf_counter()
    arrived = app[SERVICES].clock.monotonic()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    if route in ADMITTED and request.method == "POST" and app[SERVICES].admission.full:
        return _overloaded(request, route, started)
    trace = trace_from(request.headers.get("traceparent"), request.headers.get("tracestate"))
    with app[SERVICES].spans.server(request.method, route, trace) as span:
        info = RequestInfo(
            request_id=request_id_from(request.headers.get("X-Request-ID")),
            trace=span.trace,
            idempotency_key=request.headers.get("Idempotency-Key"),
            arrived=arrived,
        )
        request[INFO] = info
        live = app[CONFIG].current
        request[CURRENT] = live
        with log_context(
            request_id=info.request_id,
            trace_id=info.trace.trace_id,
            span_id=info.trace.span_id,
            config_version=live.version,
        ):
            response = await handler(request)
            span.finish(response.status)
            duration_s = time.perf_counter() - started
            app[SERVICES].metrics.http_answered(request.method, route, response.status, duration_s)
            if app[ACCESS_LOG]:
                app[SERVICES].log.info(
                    "http.request",
                    method=request.method,
                    path=request.path,
                    query=request.query_string or None,
                    route=route,
                    status=response.status,
                    duration_ms=round(duration_s * 1000, 2),
                    remote=request.remote,
                    user_agent=request.headers.get("User-Agent"),
                )
    response.headers["X-Request-ID"] = info.request_id
    response.headers["X-Config-Version"] = live.version
    return response


# The routes that start cancellations: refused first of all when the process is at its limit.
ADMITTED = frozenset({"/v1/cancellations", "/v1/cancellations/batch"})


def _overloaded(request: web.Request, route: str, started: float) -> web.Response:
    """503 ``overloaded`` before anything else is done (no authentication, no body, no span,
    no log line): under overload a refusal must cost the loop as little as it can, or the
    refusals crowd out the cancellations admitted. Counted in the metrics."""
    app = request.app
    trace = trace_from(request.headers.get("traceparent"), request.headers.get("tracestate"))
    info = RequestInfo(request_id_from(request.headers.get("X-Request-ID")), trace)
    response = envelope_response(overloaded_reply(info))
    response.headers["X-Request-ID"] = info.request_id
    response.headers["X-Config-Version"] = app[CONFIG].current.version
    metrics = app[SERVICES].metrics
    metrics.overloaded()
    metrics.http_answered("POST", route, 503, time.perf_counter() - started)
    _hold(request, app[SERVER].overload_hold_s)
    return response


def _hold(request: web.Request, hold_s: float) -> None:
    """Read nothing more from a refused connection for ``hold_s`` (the ``Retry-After``
    second): a caller that waits as told never notices, and one that asks again at once cannot
    keep the loop busy with refusals that crowd out the cancellations admitted. The answer
    itself is written at once; other connections are read as before."""
    transport = request.transport
    if hold_s <= 0 or transport is None or transport.is_closing():
        return
    transport.pause_reading()
    asyncio.get_running_loop().call_later(hold_s, _release, transport)


def _release(transport: asyncio.Transport) -> None:
    if not transport.is_closing():
        transport.resume_reading()


@web.middleware
async def errors_to_envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes an envelope: the gateway's own decisions, aiohttp's HTTP errors
    (404, 405, 413) and bugs, which are logged with the request id and never shown."""
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(request, exc)
    except web.HTTPException as exc:
        code = _HTTP_CODES.get(exc.status)
        if code is None:
            raise
        message = {
            ErrorCode.UNKNOWN_ENDPOINT: f"no endpoint {request.path}",
            ErrorCode.METHOD_NOT_ALLOWED: f"{request.method} is not allowed on {request.path}",
            ErrorCode.PAYLOAD_TOO_LARGE: "the request body is larger than "
            f"{request.app[SERVER].max_body_bytes} bytes",
        }[code]
        response = error_response(request, GatewayError(code, message))
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        request.app[SERVICES].log.exception(
            "request.crashed", method=request.method, path=request.path
        )
        info = request[INFO]
        error = GatewayError(
            ErrorCode.INTERNAL_ERROR, f"internal error (request {info.request_id})"
        )
        return error_response(request, error)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every ``/v1/`` and ``/admin/`` endpoint needs a caller key; unknown paths answer 404
    without one."""
    if request.path.startswith(("/v1/", "/admin/")) and request.match_info.http_exception is None:
        request[CALLER] = request[CURRENT].callers.authenticate(
            request.headers.get("Authorization")
        )
    return await handler(request)


def gateway_app(
    runtime: Runtime, *, stream: TextIO | None = None, batched: bool = False, **options: Any
) -> tuple[web.Application, FilteringBoundLogger]:
    """The gateway's app and its log (which also takes the libraries' log records)."""
    redactor = Redactor(runtime.secrets)  # the log's: a reload adds its new secrets to it
    log = make_logger(
        level=runtime.config.logging.level, stream=stream, redactor=redactor, batched=batched
    )
    capture_library_logs(log)
    return create_app(runtime, log=log, redactor=redactor, **options), log


def error_answer(app: web.Application) -> ErrorAnswer:
    """The answer to a request the middleware never saw, as every other answer is made: an
    envelope with ``X-Request-ID`` and ``X-Config-Version``, one log line with the request
    id and the status, and ``cancel_gateway_http_requests_total``. A request aiohttp could
    not parse (route ``unparsed``) is the client's mistake: a warning that says why, with
    every header value and the request target masked, and no traceback. Anything else failed
    outside the middleware: a bug, logged as an error with its traceback (route
    ``unhandled``)."""

    def answer(request: BaseRequest, status: int, exc: BaseException | None) -> web.Response:
        # An unparsed request has no headers; a parsed one keeps the caller's request id.
        request_id = request_id_from(request.headers.get("X-Request-ID"))
        trace_id = trace_from(None).trace_id
        version = app[CONFIG].current.version
        unparsed = isinstance(exc, HttpProcessingError)
        if status == 413:
            code, text = ErrorCode.PAYLOAD_TOO_LARGE, "the request is too large"
        elif status >= 500:
            code, text = ErrorCode.INTERNAL_ERROR, f"internal error (request {request_id})"
        else:
            code, text = ErrorCode.INVALID_REQUEST, f"the request is not valid HTTP ({status})"
        fields = {
            "status": status,
            "remote": request.remote,
            "request_id": request_id,
            "trace_id": trace_id,
            "config_version": version,
        }
        if unparsed:
            assert exc is not None
            app[SERVICES].log.warning("request.unparsed", reason=unparsed_reason(exc), **fields)
        else:
            app[SERVICES].log.error("request.crashed", exc_info=exc or True, **fields)
        # The method of a request that could not be parsed is unknown: counted as "other".
        method = "" if unparsed else request.method
        app[SERVICES].metrics.http_answered(method, "unparsed" if unparsed else "unhandled", status)
        envelope = gateway_envelope(GatewayError(code, text), request_id, trace_id)
        return web.Response(
            status=status,
            body=envelope.model_dump_json(),
            content_type="application/json",
            headers={"X-Request-ID": request_id, "X-Config-Version": version},
        )

    return answer
