"""`GET /openapi.json`: a valid OpenAPI 3.1 document of every endpoint, answers with the headers
it describes, and a live gateway that keeps to it under schemathesis' generated requests."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import jsonschema_rs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openapi_spec_validator import validate

from gateway.app import create_app
from gateway.errors import ErrorCode
from gateway.loader import load
from gateway.openapi import openapi_document
from gateway.simulate import SimulatorKeys, create_simulator_app
from tests.conftest import CALLER_KEY, CANARIES, Gateway, GatewayFactory, Result, Upstream

pytestmark = pytest.mark.e2e


def _routes(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def test_the_document_is_valid_openapi_31():
    """The generated document passes the OpenAPI 3.1 validator."""
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_route_is_documented_and_nothing_else(tmp_path: Path):
    """The app's routes and the document's operations are the same set."""
    config = tmp_path / "gateway.yaml"
    config.write_text("callers: [{name: a, key: key-0123456789abcdef}]\nstore: {backend: memory}\n")
    app = create_app(load(config, {}))
    documented = {
        (method, path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }
    assert documented == _routes(app)


def test_error_codes_are_an_enum_of_the_contract():
    """error.code is documented as an enum of exactly the contract's codes."""
    schemas = openapi_document()["components"]["schemas"]
    assert set(schemas["ErrorCode"]["enum"]) == {code.value for code in ErrorCode}
    assert schemas["ErrorBody"]["properties"]["code"] == {"$ref": "#/components/schemas/ErrorCode"}


def test_the_caller_key_is_the_security_scheme_except_on_public_endpoints():
    """Bearer auth everywhere but health, readiness, metrics, the document itself and the
    console's static files."""
    document = openapi_document()
    assert document["components"]["securitySchemes"]["callerKey"]["scheme"] == "bearer"
    public = {
        path
        for path, operations in document["paths"].items()
        if all(op.get("security") == [] for op in operations.values())
    }
    assert public == {
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/console",  # static pages: what they show comes from the API, with a key
        "/console/{name}",
    }


async def test_the_served_document_is_the_generated_one(gateway: Gateway):
    """GET /openapi.json needs no key and answers the generated document."""
    result = await gateway.request("GET", "/openapi.json", key=None)
    assert result.status == 200
    assert result.body == openapi_document()


# One connection that neither retries nor waits: a provider's 503 opens its breaker at once.
HEADERS_CONFIG = """
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  rxuniverse-lab:
    provider: rxuniverse
    base_url: ${UPSTREAM}/rxuniverse
    credentials:
      api_key: ${RXUNIVERSE_API_KEY}
    timeout_s: 2
    retry: {max_attempts: 1}
    breaker: {failures: 1, open_s: 60}
"""
# The headers the gateway itself sets on its answers (aiohttp adds the HTTP ones).
OWN_HEADERS = {"X-Request-ID", "X-Config-Version", "Retry-After", "WWW-Authenticate", "Allow"}


def _undocumented(method: str, path: str, result: Result) -> list[str]:
    """What the document does not say about this answer's headers: an own header it does not
    describe, a required one missing, or a value its schema refuses."""
    answer = openapi_document()["paths"][path][method]["responses"][str(result.status)]
    described = answer.get("headers", {})
    problems = [
        f"{name} not described" for name in OWN_HEADERS - set(described) if name in result.headers
    ]
    for name, header in described.items():
        if name not in result.headers:
            problems += [f"{name} missing"] if header["required"] else []
            continue
        value: object = result.headers[name]
        if header["schema"]["type"] == "integer":
            value = int(str(value))
        if not jsonschema_rs.validator_for(header["schema"]).is_valid(value):
            problems.append(f"{name}: {value!r} refused by {header['schema']}")
    return problems


async def test_answers_carry_the_headers_the_document_describes(
    make_gateway: GatewayFactory, upstream: Upstream
):
    """X-Request-ID and X-Config-Version on every answer, Retry-After on a 429 and a 503,
    WWW-Authenticate on a 401: each described for its status, each value as described."""
    gateway = await make_gateway(HEADERS_CONFIG, upstream_url=upstream.url)
    cancel = {"connection": "rxuniverse-lab", "id": "72544"}
    upstream.answer(429, {"error": "Too many requests"}, headers={"Retry-After": "120"})
    limited = await gateway.cancel(cancel)
    upstream.answer(503, {"error": "Service Unavailable", "details": []})
    failed = await gateway.cancel(cancel)
    refused = await gateway.cancel(cancel)  # the breaker is open
    answers = [
        ("post", "/v1/cancellations", limited),
        ("post", "/v1/cancellations", failed),
        ("post", "/v1/cancellations", refused),
        ("post", "/v1/cancellations", await gateway.cancel(cancel, key=None)),
        ("get", "/v1/connections", await gateway.request("GET", "/v1/connections")),
        ("get", "/healthz", await gateway.request("GET", "/healthz", key=None)),
    ]
    assert [result.status for *_, result in answers] == [429, 502, 503, 401, 200, 200]
    assert "Retry-After" in limited.headers
    assert "Retry-After" in refused.headers
    for method, path, result in answers:
        assert _undocumented(method, path, result) == [], (path, result.status)


# The demo's connections, under the names of the document's example, with a caller that may
# also reload: every operation answers something other than 401/403 to the run.
LIVE_CONFIG = """
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
    admin: true
connections:
  stateset-demo:
    provider: stateset
    base_url: ${UPSTREAM}/stateset
    credentials:
      api_key: ${STATESET_API_KEY}
  shipper-demo:
    provider: shipper
    base_url: ${UPSTREAM}/shipper
    credentials:
      api_key: ${SHIPPER_API_KEY}
    params: {warehouse_id: WH-TGR04}
  shoplazza-demo:
    provider: shoplazza
    base_url: ${UPSTREAM}/shoplazza/{params.shop_domain}
    credentials:
      access_token: ${SHOPLAZZA_ACCESS_TOKEN}
    params: {shop_domain: demo-shop}
  rxuniverse-demo:
    provider: rxuniverse
    base_url: ${UPSTREAM}/rxuniverse
    credentials:
      api_key: ${RXUNIVERSE_API_KEY}
"""

# Every check runs on every operation (given here, not with --checks, which would override the
# exception) but one: a request the document allows may still break a rule of the provider its
# connection names (StateSet requires a reason, Shipper allows shorter ids and reasons, each
# provider has resources and params of its own). The document describes those rules but cannot
# state them, since the connection decides which apply: POST /v1/cancellations alone leaves out
# positive_data_acceptance, and tests/test_openapi_document.py checks instead that whatever the
# document allows passes every check of the gateway's own.
SCHEMATHESIS_CONFIG = """
[checks]
enabled = true

[[operations]]
include-operation-id = "cancel"
checks.positive_data_acceptance.enabled = false
"""


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    make_gateway: GatewayFactory,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    tmp_path: Path,
):
    """A seeded, bounded schemathesis run of every phase and every check against a live gateway
    in front of the provider simulators: no 5xx, every answer documented with its content type,
    schema and headers, what the document refuses is refused, and (but for the provider rules
    above) what it allows is accepted."""
    keys = SimulatorKeys(
        stateset=CANARIES["STATESET_API_KEY"],
        shipper=CANARIES["SHIPPER_API_KEY"],
        shoplazza=CANARIES["SHOPLAZZA_ACCESS_TOKEN"],
        rxuniverse=CANARIES["RXUNIVERSE_API_KEY"],
    )
    simulator = await aiohttp_server(create_simulator_app(keys))
    gateway = await make_gateway(LIVE_CONFIG, upstream_url=str(simulator.make_url("")).rstrip("/"))
    settings = tmp_path / "schemathesis.toml"
    settings.write_text(SCHEMATHESIS_CONFIG)
    schemathesis = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("st")), "--config-file", str(settings), "run",
        f"{gateway.url}/openapi.json",
        "--header", f"Authorization: Bearer {CALLER_KEY}",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", "50", "--seed", "20261201",
        "--workers", "1", "--request-timeout", "10",
        "--report-dir", str(tmp_path),
        cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(240):
        output, _ = await schemathesis.communicate()
    report = output.decode(errors="replace")
    assert schemathesis.returncode == 0, report
    assert "passed" in report
    assert "Authentication failed" not in report, report
