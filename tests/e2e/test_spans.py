"""OpenTelemetry spans (the otel extra): a server span per request continuing the caller's
trace, a client span per upstream attempt whose id is the traceparent the provider receives."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.app import create_app
from gateway.loader import load
from gateway.logging import make_logger
from gateway.problems import ConfigError
from tests.conftest import BASE_CONFIG, CALLER_KEY, CANARIES, Upstream

pytestmark = pytest.mark.e2e

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}


class Traced:
    def __init__(self, url: str, exporter: InMemorySpanExporter, logs: io.StringIO) -> None:
        self.url = url
        self.exporter = exporter
        self.logs = logs

    def spans(self, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.kind is kind]

    async def cancel(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        sent = {"Authorization": f"Bearer {CALLER_KEY}", **(headers or {})}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/v1/cancellations", json=body, headers=sent) as resp,
        ):
            return await resp.json()


@pytest.fixture
async def traced(
    aiohttp_server: Callable[..., Awaitable[TestServer]], upstream: Upstream, tmp_path: Path
) -> Traced:
    path = tmp_path / "gateway.yaml"
    path.write_text(textwrap.dedent(BASE_CONFIG) + "store: {backend: memory}\n")
    runtime = load(path, {"OMS_API_KEY": CALLER_KEY, "UPSTREAM": upstream.url, **CANARIES})
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    logs = io.StringIO()
    app = create_app(runtime, log=make_logger(stream=logs), tracer_provider=provider)
    server = await aiohttp_server(app)
    return Traced(str(server.make_url("")).rstrip("/"), exporter, logs)


async def test_server_span_continues_the_callers_trace(traced: Traced, upstream: Upstream):
    """The server span has the caller's trace id and span as its parent; so does the envelope."""
    upstream.answer(200, RX_OK)
    envelope = await traced.cancel(
        {"connection": "rxuniverse-lab", "id": "72544"},
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
    )
    [server] = traced.spans(SpanKind.SERVER)
    assert f"{server.context.trace_id:032x}" == CALLER_TRACE
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == CALLER_SPAN
    assert server.name == "POST /v1/cancellations"
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert envelope["trace_id"] == CALLER_TRACE


async def test_each_attempt_is_a_client_span_whose_id_reaches_the_provider(
    traced: Traced, upstream: Upstream
):
    """503, 503, 200: three client spans, children of the server span, numbered, and each
    attempt's traceparent names its own span."""
    upstream.answer(503, {"error": "busy"})
    upstream.answer(503, {"error": "busy"})
    upstream.answer(200, RX_OK)
    envelope = await traced.cancel({"connection": "rxuniverse-lab", "id": "72544"})
    assert envelope["status"] == "cancelled"
    assert envelope["upstream"]["attempts"] == 3
    [server] = traced.spans(SpanKind.SERVER)
    clients = sorted(traced.spans(SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert len(clients) == 3
    for number, (span, received) in enumerate(zip(clients, upstream.received, strict=True), 1):
        assert span.parent is not None
        assert span.parent.span_id == server.context.span_id
        assert span.attributes is not None
        assert span.attributes["cancel_gateway.attempt"] == number
        assert span.attributes["cancel_gateway.provider"] == "rxuniverse"
        assert span.attributes["cancel_gateway.connection"] == "rxuniverse-lab"
        assert span.attributes["http.request.method"] == "DELETE"
        trace_id, span_id = f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"
        flags = f"{span.context.trace_flags:02x}"
        assert int(flags, 16) & 1  # sampled
        assert received.headers["traceparent"] == f"00-{trace_id}-{span_id}-{flags}"
        assert trace_id == envelope["trace_id"]
    assert [c.attributes["http.response.status_code"] for c in clients if c.attributes] == [
        503,
        503,
        200,
    ]
    assert clients[0].attributes is not None
    assert clients[0].attributes["cancel_gateway.code"] == "provider_error"
    assert clients[2].attributes is not None
    assert clients[2].attributes["cancel_gateway.outcome"] == "cancelled"
    assert "cancel_gateway.code" not in clients[2].attributes


async def test_a_new_trace_is_the_same_in_spans_logs_and_envelope(
    traced: Traced, upstream: Upstream
):
    """Without a traceparent the server span starts the trace: its id is the envelope's and
    every log line's."""
    upstream.answer(200, RX_OK)
    envelope = await traced.cancel({"connection": "rxuniverse-lab", "id": "72544"})
    [server] = traced.spans(SpanKind.SERVER)
    assert server.parent is None
    assert f"{server.context.trace_id:032x}" == envelope["trace_id"]
    lines = [orjson.loads(line) for line in traced.logs.getvalue().splitlines()]
    mine = [line for line in lines if line.get("request_id") == envelope["request_id"]]
    assert mine
    assert {line["trace_id"] for line in mine} == {envelope["trace_id"]}


async def test_a_refusal_sends_nothing_and_has_no_client_span(traced: Traced, upstream: Upstream):
    """A request refused before sending records a server span only."""
    envelope = await traced.cancel({"connection": "nowhere", "id": "1"})
    assert envelope["error"]["code"] == "unknown_connection"
    assert traced.spans(SpanKind.CLIENT) == []
    [server] = traced.spans(SpanKind.SERVER)
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 404
    assert upstream.received == []


def test_an_exporter_without_the_extra_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """tracing.exporter without opentelemetry installed names the extra to install."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("opentelemetry") else real(name, *a),
    )
    path = tmp_path / "gateway.yaml"
    path.write_text("callers: [{name: a, key: key-0123456789abcdef}]\ntracing: {exporter: otlp}\n")
    with pytest.raises(ConfigError) as raised:
        load(path, {})
    [problem] = raised.value.problems
    assert problem.loc == "tracing.exporter"
    assert "cancel-gateway[otel]" in problem.message


async def test_the_console_exporter_writes_spans_to_stderr_not_stdout(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    upstream: Upstream,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    """tracing: {exporter: console} records real spans on stderr; stdout stays JSON lines."""
    path = tmp_path / "gateway.yaml"
    path.write_text(
        textwrap.dedent(BASE_CONFIG)
        + "store: {backend: memory}\ntracing: {exporter: console, service_name: cg-test}\n"
    )
    runtime = load(path, {"OMS_API_KEY": CALLER_KEY, "UPSTREAM": upstream.url, **CANARIES})
    app = create_app(runtime, log=make_logger())
    server = await aiohttp_server(app)
    upstream.answer(200, RX_OK)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            str(server.make_url("/v1/cancellations")),
            json={"connection": "rxuniverse-lab", "id": "72544"},
            headers={"Authorization": f"Bearer {CALLER_KEY}"},
        ) as resp,
    ):
        assert resp.status == 200
    await server.close()  # the app's cleanup shuts the provider down
    captured = capsys.readouterr()
    assert '"name": "POST /v1/cancellations"' in captured.err
    assert '"service.name": "cg-test"' in captured.err
    for line in captured.out.splitlines():
        orjson.loads(line)
