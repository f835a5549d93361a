"""`GET /openapi.json`: a valid OpenAPI 3.1 document of every endpoint, and a live gateway that
keeps to it under schemathesis' generated requests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from gateway.app import create_app
from gateway.errors import ErrorCode
from gateway.loader import load
from gateway.openapi import openapi_document
from tests.conftest import Gateway
from tests.e2e.test_demo import BANNER_END, _start
from tests.services import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


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
    """Bearer auth everywhere but health, readiness, metrics and the document itself."""
    document = openapi_document()
    assert document["components"]["securitySchemes"]["callerKey"]["scheme"] == "bearer"
    public = {
        path
        for path, operations in document["paths"].items()
        if all(op.get("security") == [] for op in operations.values())
    }
    assert public == {"/healthz", "/readyz", "/metrics", "/openapi.json"}


async def test_the_served_document_is_the_generated_one(gateway: Gateway):
    """GET /openapi.json needs no key and answers the generated document."""
    result = await gateway.request("GET", "/openapi.json", key=None)
    assert result.status == 200
    assert result.body == openapi_document()


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path):
    """A seeded, bounded schemathesis run against the demo: every answer is documented, has
    the documented content type and schema, and none is a 5xx the document does not list."""
    port = free_port()
    demo, lines = await _start("demo", "--port", str(port), until=BANNER_END)
    key = next(line.split()[-1] for line in lines if "caller key" in line)
    assert demo.stderr is not None
    # The demo logs every request to stderr: read it, or the full pipe stalls the demo.
    drain = asyncio.create_task(demo.stderr.read())
    try:
        schemathesis = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("st")), "run",
            f"http://127.0.0.1:{port}/openapi.json",
            "--header", f"Authorization: Bearer {key}",
            "--checks", "all",
            # A valid request may name a connection that does not exist: 404 is right.
            "--exclude-checks", "positive_data_acceptance",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", "25", "--seed", "20261201",
            "--workers", "1", "--request-timeout", "10",
            "--report-dir", str(tmp_path),
            cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(180):
            output, _ = await schemathesis.communicate()
    finally:
        demo.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            await demo.wait()
        await drain
    report = output.decode(errors="replace")
    assert schemathesis.returncode == 0, report
    assert "passed" in report
