"""``GET /openapi.json``: the API as an OpenAPI 3.1 document, generated from the models that
parse requests and shape answers, so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway import __version__
from gateway.errors import SPECS
from gateway.models import (
    BatchRequest,
    BatchResponse,
    CancelRequest,
    Connections,
    Envelope,
    Health,
    Preview,
    Readiness,
    Reloaded,
)

_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (CancelRequest, "validation"),
    (BatchRequest, "validation"),  # its items' schema is CancelRequest's, checked per item
    (Envelope, "serialization"),
    (Preview, "serialization"),
    (BatchResponse, "serialization"),
    (Connections, "serialization"),
    (Health, "serialization"),
    (Readiness, "serialization"),
    (Reloaded, "serialization"),
]
_EXAMPLE = {"connection": "stateset-demo", "id": "asn_demo_1", "reason": "Supplier delay"}
_HEADERS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {
        "description": "Repeat a request safely: the first definite answer is replayed.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    },
    "X-Request-ID": {
        "description": "Echoed, logged and forwarded upstream; generated when absent.",
        "schema": {"type": "string"},
    },
    "traceparent": {
        "description": "W3C Trace Context: continued when valid, started otherwise.",
        "schema": {"type": "string"},
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors() -> dict[str, Any]:
    """Every status an error envelope can come with, from the one table of codes."""
    statuses = sorted({spec.http_status for spec in SPECS.values()})
    return {str(s): _json("Envelope", "an error envelope: see error.code") for s in statuses}


def _header_params(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "header", "required": False, **_HEADERS[n]} for n in names]


def openapi_document() -> dict[str, Any]:
    _, definitions = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = definitions["$defs"]
    cancel_body = {
        "required": True,
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
            "configured provider, answered with one envelope and stable error codes.",
        },
        "security": [{"callerKey": []}],
        "paths": {
            "/v1/cancellations": {
                "post": {
                    "operationId": "cancel",
                    "summary": "Cancel one object at a provider (or preview with dry_run=true)",
                    "parameters": [
                        *_header_params("Idempotency-Key", "X-Request-ID", "traceparent"),
                        {
                            "name": "dry_run",
                            "in": "query",
                            "required": False,
                            "description": "true: answer what would be sent; send nothing.",
                            "schema": {"type": "string", "enum": ["true", "false"]},
                        },
                    ],
                    "requestBody": cancel_body,
                    "responses": {
                        "200": {
                            "description": "cancelled or already_cancelled; with dry_run=true, "
                            "the preview",
                            "content": {
                                "application/json": {
                                    "schema": {"anyOf": [_ref("Envelope"), _ref("Preview")]}
                                }
                            },
                        },
                        **_errors(),
                    },
                }
            },
            "/v1/cancellations/batch": {
                "post": {
                    "operationId": "cancelBatch",
                    "summary": "Up to 100 cancellations; each item answered with its envelope",
                    "parameters": _header_params("Idempotency-Key", "X-Request-ID", "traceparent"),
                    "requestBody": {
                        "required": True,
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
                    "parameters": [
                        {
                            "name": "cancellation_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {"200": envelope_ok, **_errors()},
                }
            },
            "/v1/connections": {
                "get": {
                    "operationId": "listConnections",
                    "summary": "The connections this caller may use",
                    "responses": {"200": _json("Connections", "no secrets"), **_errors()},
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
                    "security": public,
                    "responses": {"200": _json("Health", "the process runs")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
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
                    "security": public,
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": public,
                    "responses": {
                        "200": {
                            "description": "this document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
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
