"""``GET /openapi.json``: the API as an OpenAPI 3.1 document, generated from the models that
parse requests and shape answers, so the two cannot drift apart.

The document states every rule the gateway checks whatever the connection (lengths, control
characters, the ids ``.`` and ``..``, header formats). The rules a provider adds (a required
``reason``, shorter limits, its resources and params) depend on the connection a request names:
they are in the descriptions, generated from the built-in provider definitions.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway import __version__
from gateway.errors import SPECS, Status
from gateway.ledger_api import DEFAULT_LIMIT, MAX_LIMIT
from gateway.loader import load_providers
from gateway.models import (
    CANCELLATION_ID,
    MAX_BATCH,
    MAX_BATCH_KEY,
    MAX_IDEMPOTENCY_KEY,
    NO_CONTROL_PATTERN,
    BatchRequest,
    BatchResponse,
    CancellationEvents,
    CancellationList,
    CancelRequest,
    Connections,
    ConnectionsHealth,
    Envelope,
    Health,
    Preview,
    Readiness,
    Reloaded,
)
from gateway.problems import Problem
from gateway.tracing import REQUEST_ID

_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (CancelRequest, "validation"),
    (BatchRequest, "validation"),  # its items' schema is CancelRequest's, checked per item
    (Envelope, "serialization"),
    (Preview, "serialization"),
    (BatchResponse, "serialization"),
    (CancellationList, "serialization"),
    (CancellationEvents, "serialization"),
    (Connections, "serialization"),
    (ConnectionsHealth, "serialization"),
    (Health, "serialization"),
    (Readiness, "serialization"),
    (Reloaded, "serialization"),
]
_EXAMPLE = {"connection": "stateset-demo", "id": "asn_demo_1", "reason": "Supplier delay"}
# HTTP drops the spaces around a header's value (RFC 9110, 5.5): a key neither starts nor ends
# with one, and a key of spaces only arrives empty.
_KEY_PATTERN = "^[!-~]([ -~]*[!-~])?$"
_STRICT_JSON = (
    "Strict JSON: a number must fit a double (NaN, Infinity and larger numbers are refused) "
    "and a query parameter the API reads may be given once (twice is a 422)."
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _header(description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


_EVERY_ANSWER = {
    "X-Request-ID": _header(
        "The caller's X-Request-ID when it is 1 to 200 printable ASCII characters without "
        "spaces, else one the gateway made.",
        {"type": "string", "pattern": REQUEST_ID.pattern},
        required=True,
    ),
    "X-Config-Version": _header(
        "The version of the configuration that answered.", {"type": "string"}, required=True
    ),
}
_RETRY_AFTER = _header(
    "Seconds to wait before repeating the request, when the gateway knows (retry_after_s).",
    {"type": "integer", "minimum": 0},
)
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": _header(
            "The scheme the caller key is given in.", {"type": "string"}, required=True
        )
    },
    405: {"Allow": _header("The methods the path takes.", {"type": "string"}, required=True)},
}


_CANCELLATION_ID_PARAMETER = {
    "name": "cancellation_id",
    "in": "path",
    "required": True,
    "description": "As answered in the envelope; an id of another form answers 404 not_found.",
    "schema": {
        "type": "string",
        "minLength": 30,  # with the pattern, exact in any engine
        "maxLength": 30,
        "pattern": f"^{CANCELLATION_ID.pattern}$",  # else a 404
    },
}


def _list_operation() -> dict[str, Any]:
    """``GET /v1/cancellations``: its filters, each given at most once (else a 422)."""

    def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": schema,
        }

    statuses = sorted(status.value for status in Status)
    return {
        "operationId": "listCancellations",
        "summary": "The caller's final cancellations (every caller's for an admin), newest first",
        "description": "Every filter is optional and given at most once; an unknown or invalid "
        "one is a 422 invalid_request. A cancellation still running is listed once final.",
        "parameters": [
            query(
                "connection",
                "a connection's name",
                {"type": "string", "pattern": NO_CONTROL_PATTERN},
            ),
            query(
                "resource_id",
                "the provider's id of the object",
                {"type": "string", "pattern": NO_CONTROL_PATTERN},
            ),
            query("status", "the envelope's status", {"type": "string", "enum": statuses}),
            query(
                "since",
                "created at or after (RFC 3339, with its offset)",
                {"type": "string", "format": "date-time"},
            ),
            query(
                "until",
                "created before (RFC 3339, with its offset)",
                {"type": "string", "format": "date-time"},
            ),
            query(
                "limit",
                "page size",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            ),
            query(
                "cursor",
                "the previous page's next_cursor",
                {"type": "string", "pattern": f"^{CANCELLATION_ID.pattern}$"},
            ),
        ],
        "responses": {"200": _json("CancellationList", "one page"), **_errors()},
    }


def _errors() -> dict[str, Any]:
    """Every status an error envelope can come with, from the one table of codes; a status a
    retryable code answers with may say when to retry."""
    statuses = sorted({spec.http_status for spec in SPECS.values()})
    retryable = {spec.http_status for spec in SPECS.values() if spec.retryable}
    answers: dict[str, Any] = {}
    for status in statuses:
        answer = _json("Envelope", "an error envelope: see error.code")
        headers = dict(_ERROR_HEADERS.get(status, {}))
        if status in retryable:
            headers["Retry-After"] = _RETRY_AFTER
        if headers:
            answer["headers"] = headers
        answers[str(status)] = answer
    return answers


def _pending(description: str) -> dict[str, Any]:
    """A pending envelope (CONTRACT §10) and where its final one will be."""
    answer = _json("Envelope", description)
    answer["headers"] = {
        "Location": _header("/v1/cancellations/{cancellation_id}", {"type": "string"}),
        "Preference-Applied": _header(
            "respond-async, when the request asked for it", {"type": "string"}
        ),
    }
    return answer


def _request_headers(key_length: int) -> list[dict[str, Any]]:
    headers = {
        "Idempotency-Key": _header(
            f"Repeat a request safely: the first definite answer is replayed. 1 to {key_length} "
            "printable ASCII characters.",
            {"type": "string", "minLength": 1, "maxLength": key_length, "pattern": _KEY_PATTERN},
        ),
        "X-Request-ID": _header(
            "Echoed, logged and forwarded upstream when it is 1 to 200 printable ASCII "
            "characters without spaces; otherwise the gateway makes one.",
            {"type": "string"},
        ),
        "traceparent": _header(
            "W3C Trace Context: continued when valid, started otherwise.", {"type": "string"}
        ),
        "tracestate": _header(
            "W3C Trace Context: passed on with a valid traceparent, dropped without one.",
            {"type": "string"},
        ),
        "Prefer": _header(
            "respond-async (RFC 7240): checked as usual, then recorded and answered 202 pending "
            "at once; the gateway sends it in the background.",
            {"type": "string"},
        ),
    }
    return [{"name": name, "in": "header", **header} for name, header in headers.items()]


def _with_answer_headers(paths: dict[str, Any]) -> dict[str, Any]:
    """Every answer, whatever its path and status, carries the request id and the version."""
    for operations in paths.values():
        for operation in operations.values():
            for answer in operation["responses"].values():
                answer["headers"] = {**_EVERY_ANSWER, **answer.get("headers", {})}
    return paths


def _characters(limit: int | None) -> list[str]:
    return [] if limit is None else [f"at most {limit} characters"]


@functools.cache  # the built-in definitions never change while the process runs
def _provider_rules() -> dict[str, str]:
    """What each built-in provider adds to a field of the request, by field name."""
    problems: list[Problem] = []
    providers = load_providers(Path(), (), problems)  # the built-in files only
    said: dict[str, list[str]] = {"resource": [], "params": []}
    for provider in sorted(providers.values(), key=lambda p: p.name):
        said["resource"].append(f"{provider.name}: {', '.join(provider.resources)}")
        for resource_name, resource in provider.resources.items():
            for field, rule in resource.fields.items():
                limits = ["required"] if rule.required else []
                limits += _characters(rule.max_length)
                if limits:
                    rules = f"{provider.name} {resource_name}: {', '.join(limits)}"
                    said.setdefault(field, []).append(rules)
        for param_name, param in provider.params.items():
            if param.per_request:
                limits = [param.type, *_characters(param.max_length)]
                limits += [f"matching {param.pattern}"] if param.pattern else []
                limits += ["required unless the connection sets it"] if param.required else []
                said["params"].append(f"{provider.name} {param_name} ({', '.join(limits)})")
    return {name: "; ".join(rules) for name, rules in said.items() if rules}


def _describe_provider_rules(request: dict[str, Any]) -> None:
    properties = request["properties"]
    for name, rules in _provider_rules().items():
        own = properties[name].get("description", "")
        properties[name]["description"] = f"{own} Built-in providers: {rules}.".strip()
    request["description"] = (
        "What to cancel. Besides the rules below, the provider of the connection named may "
        "require a field or allow less (each field's description names the built-in "
        "providers' rules; a configuration may add providers of its own): a request that "
        "breaks one is refused before anything is sent, 422 invalid_request."
    )


def openapi_document() -> dict[str, Any]:
    _, definitions = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = definitions["$defs"]
    _describe_provider_rules(schemas["CancelRequest"])
    cancel_body = {
        "required": True,
        "description": _STRICT_JSON,
        "content": {"application/json": {"schema": _ref("CancelRequest"), "example": _EXAMPLE}},
    }
    envelope_ok = _json("Envelope", "cancelled or already_cancelled")
    public: list[dict[str, list[str]]] = []  # no caller key needed
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cancel-gateway",
            "version": __version__,
            "description": "One endpoint that cancels an order, ASN or procurement on any "
            "configured provider, answered with one envelope and stable error codes. "
            + _STRICT_JSON,
        },
        "servers": [{"url": "/", "description": "this gateway"}],
        "security": [{"callerKey": []}],
        "paths": _with_answer_headers(
            {
                "/v1/cancellations": {
                    "get": _list_operation(),
                    "post": {
                        "operationId": "cancel",
                        "summary": "Cancel one object at a provider (or preview with dry_run=true)",
                        "parameters": [
                            *_request_headers(MAX_IDEMPOTENCY_KEY),
                            {
                                "name": "dry_run",
                                "in": "query",
                                "required": False,
                                "description": "true: answer what would be sent; send nothing. "
                                "Given at most once: a repeated dry_run is a 422.",
                                "schema": {"type": "string", "enum": ["true", "false"]},
                            },
                        ],
                        "requestBody": cancel_body,
                        "responses": {
                            "200": {
                                "description": "cancelled or already_cancelled; with "
                                "dry_run=true, the preview",
                                "content": {
                                    "application/json": {
                                        "schema": {"anyOf": [_ref("Envelope"), _ref("Preview")]}
                                    }
                                },
                            },
                            "202": _pending("not settled yet"),
                            **_errors(),
                        },
                    },
                },
                "/v1/cancellations/batch": {
                    "post": {
                        "operationId": "cancelBatch",
                        "summary": f"Up to {MAX_BATCH} cancellations; each item answered with "
                        "its envelope",
                        "description": "With an Idempotency-Key K, item i uses the key K#i: a "
                        f"batch's key has at most {MAX_BATCH_KEY} characters. There is no dry "
                        "run of a batch: a dry_run parameter is a 422.",
                        "parameters": _request_headers(MAX_BATCH_KEY),
                        "requestBody": {
                            "required": True,
                            "description": _STRICT_JSON,
                            "content": {
                                "application/json": {
                                    "schema": _ref("BatchRequest"),
                                    "example": {"items": [_EXAMPLE]},
                                }
                            },
                        },
                        "responses": {
                            "200": _json("BatchResponse", "every item's envelope, in order"),
                            **_errors(),
                        },
                    }
                },
                "/v1/cancellations/{cancellation_id}": {
                    "get": {
                        "operationId": "getCancellation",
                        "summary": "A cancellation's envelope, to the caller that made it",
                        "parameters": [_CANCELLATION_ID_PARAMETER],
                        "responses": {
                            "200": envelope_ok,
                            "202": _pending("pending: the final envelope comes later"),
                            **_errors(),
                        },
                    }
                },
                "/v1/cancellations/{cancellation_id}/events": {
                    "get": {
                        "operationId": "getCancellationEvents",
                        "summary": "What happened to a cancellation, in order, to the caller "
                        "that made it",
                        "parameters": [_CANCELLATION_ID_PARAMETER],
                        "responses": {
                            "200": _json(
                                "CancellationEvents",
                                "received, each attempt, probe and scheduled step, settled, "
                                "each webhook delivery",
                            ),
                            **_errors(),
                        },
                    }
                },
                "/v1/connections": {
                    "get": {
                        "operationId": "listConnections",
                        "summary": "The connections this caller may use",
                        "responses": {"200": _json("Connections", "no secrets"), **_errors()},
                    }
                },
                "/v1/connections/health": {
                    "get": {
                        "operationId": "connectionsHealth",
                        "summary": "How each connection this caller may use is doing, as this "
                        "process saw it over the last 15 minutes",
                        "description": "Breaker state, cancellations in flight, each minute's "
                        "outcomes, the upstream's p50 and p95 latency, rate-limit refusals and "
                        "unmapped provider errors. Kept by each process in memory: with "
                        "`--workers`, the worker that answers tells of the requests it served. "
                        "An admin caller sees every connection. The operator console reads it.",
                        "responses": {
                            "200": _json("ConnectionsHealth", "no secrets"),
                            **_errors(),
                        },
                    }
                },
                "/admin/reload": {
                    "post": {
                        "operationId": "reload",
                        "summary": "Load the configuration file again (admin callers)",
                        "responses": {"200": _json("Reloaded", "now serving"), **_errors()},
                    }
                },
                "/healthz": {
                    "get": {
                        "operationId": "health",
                        "summary": "Liveness: the process answers",
                        "security": public,
                        "responses": {"200": _json("Health", "the process runs")},
                    }
                },
                "/readyz": {
                    "get": {
                        "operationId": "ready",
                        "summary": "Readiness: the configuration is loaded and the store answers",
                        "security": public,
                        "responses": {
                            "200": _json("Readiness", "configuration loaded, store answering"),
                            "503": _json("Readiness", "the store does not answer"),
                        },
                    }
                },
                "/metrics": {
                    "get": {
                        "operationId": "metrics",
                        "summary": "Prometheus metrics of every worker",
                        "security": public,
                        "responses": {
                            "200": {
                                "description": "Prometheus text format",
                                "content": {"text/plain": {"schema": {"type": "string"}}},
                            }
                        },
                    }
                },
                "/console": {
                    "get": {
                        "operationId": "console",
                        "summary": "The operator console's page (unless server.console is false)",
                        "description": "Static HTML: it asks for a caller key in the browser and "
                        "reads this API with it. No data and no secret in the page itself.",
                        "security": public,
                        "responses": {
                            "200": {
                                "description": "the page",
                                "content": {"text/html": {"schema": {"type": "string"}}},
                            }
                        },
                    }
                },
                "/console/{name}": {
                    "get": {
                        "operationId": "consoleFile",
                        "summary": "One of the console's files",
                        "security": public,
                        "parameters": [
                            {
                                "name": "name",
                                "in": "path",
                                "required": True,
                                "schema": {
                                    "type": "string",
                                    "enum": [
                                        "console.js",
                                        "console.css",
                                        "favicon.svg",
                                        "index.html",
                                    ],
                                },
                            }
                        ],
                        "responses": {
                            "200": {
                                "description": "the file (JavaScript, CSS, SVG or HTML)",
                                "content": {"*/*": {"schema": {"type": "string"}}},
                            },
                            "404": _json("Envelope", "no such file: `unknown_endpoint`"),
                        },
                    }
                },
                "/openapi.json": {
                    "get": {
                        "operationId": "openapi",
                        "summary": "This document",
                        "security": public,
                        "responses": {
                            "200": {
                                "description": "this document",
                                "content": {"application/json": {"schema": {"type": "object"}}},
                            }
                        },
                    }
                },
            }
        ),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "callerKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The caller key of one of the configured callers.",
                }
            },
        },
    }
