"""Spans: one server span per request, one client span per upstream attempt.

Two implementations of one small seam. ``NoSpans`` (the default) keeps only the ids of
``tracing.py``, which are in every log line and forwarded upstream. ``OtelSpans`` records real
OpenTelemetry spans (the ``otel`` extra, ``tracing.exporter`` in the configuration): the server
span continues the caller's ``traceparent``, each attempt is its child, and the upstream
receives the attempt span's id, so a provider that traces shows under the right attempt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.config import TracingConfig
from gateway.tracing import Trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer


class ServerSpan(Protocol):
    @property
    def trace(self) -> Trace:
        """The trace the request runs in: log lines and the envelope carry its id."""

    def finish(self, http_status: int) -> None: ...


class AttemptSpan(Protocol):
    @property
    def traceparent(self) -> str | None:
        """What to send upstream as ``traceparent``; None keeps the request's own."""

    def finish(self, *, http_status: int | None, outcome: str, code: str | None) -> None: ...


class Spans(Protocol):
    def server(
        self, method: str, route: str, trace: Trace
    ) -> contextlib.AbstractContextManager[ServerSpan]: ...

    def attempt(
        self, *, number: int, provider: str, connection: str, method: str, url: str
    ) -> AttemptSpan: ...


@dataclass(slots=True)
class _Ids:
    """A span that is only ids; its own context manager (no generator per request)."""

    trace: Trace
    traceparent: str | None = None

    def finish(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _Ids:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class NoSpans:
    def server(
        self, method: str, route: str, trace: Trace
    ) -> contextlib.AbstractContextManager[ServerSpan]:
        return _Ids(trace)

    def attempt(
        self, *, number: int, provider: str, connection: str, method: str, url: str
    ) -> AttemptSpan:
        return _NO_ATTEMPT


_NO_ATTEMPT = _Ids(Trace("", "", None, ""))


class OtelSpans:
    """Spans through an OpenTelemetry ``TracerProvider`` (imported only when used)."""

    def __init__(self, provider: TracerProvider) -> None:
        from gateway import __version__

        self._tracer: Tracer = provider.get_tracer("cancel-gateway", __version__)

    @contextlib.contextmanager
    def server(self, method: str, route: str, trace: Trace) -> Iterator[ServerSpan]:
        from opentelemetry import trace as api

        context = None
        if trace.parent_id is not None:
            remote = api.SpanContext(
                trace_id=int(trace.trace_id, 16),
                span_id=int(trace.parent_id, 16),
                is_remote=True,
                trace_flags=api.TraceFlags(int(trace.flags, 16)),
            )
            context = api.set_span_in_context(api.NonRecordingSpan(remote))
        span = self._tracer.start_span(
            f"{method} {route}",
            context=context,
            kind=api.SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route},
        )
        ids = span.get_span_context()
        continued = Trace(
            f"{ids.trace_id:032x}",
            f"{ids.span_id:016x}",
            trace.parent_id,
            f"{ids.trace_flags:02x}",
            trace.state,
        )
        with api.use_span(span, end_on_exit=True):
            yield _OtelServerSpan(span, continued)

    def attempt(
        self, *, number: int, provider: str, connection: str, method: str, url: str
    ) -> AttemptSpan:
        from opentelemetry import trace as api

        span = self._tracer.start_span(
            method,
            kind=api.SpanKind.CLIENT,
            attributes={
                "http.request.method": method,
                "url.full": url,
                "cancel_gateway.attempt": number,
                "cancel_gateway.provider": provider,
                "cancel_gateway.connection": connection,
            },
        )
        ids = span.get_span_context()
        traceparent = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"
        return _OtelAttemptSpan(span, traceparent)


@dataclass(slots=True)
class _OtelServerSpan:
    span: Span
    trace: Trace

    def finish(self, http_status: int) -> None:
        from opentelemetry.trace import StatusCode

        self.span.set_attribute("http.response.status_code", http_status)
        if http_status >= 500:
            self.span.set_status(StatusCode.ERROR)


@dataclass(slots=True)
class _OtelAttemptSpan:
    span: Span
    traceparent: str | None

    def finish(self, *, http_status: int | None, outcome: str, code: str | None) -> None:
        from opentelemetry.trace import StatusCode

        if http_status is not None:
            self.span.set_attribute("http.response.status_code", http_status)
        self.span.set_attribute("cancel_gateway.outcome", outcome)
        if code is not None:
            self.span.set_attribute("cancel_gateway.code", code)
            self.span.set_status(StatusCode.ERROR, code)
        self.span.end()


def otel_provider(settings: TracingConfig) -> TracerProvider:
    """A ``TracerProvider`` exporting as ``settings`` say; shut it down to flush."""
    import sys

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if settings.exporter == "console":
        # stderr: stdout is for JSON log lines only.
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    elif settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint))
        )
    return provider
