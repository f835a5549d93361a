"""Fixtures for the pure translation layer: built-in definitions, targets, calls, a fixed clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from gateway.definition import ProviderDefinition
from gateway.models import CancelRequest
from gateway.providers import builtin_files
from gateway.targets import BaseUrl, Target
from gateway.translate.build import Call
from gateway.translate.templates import compile_template

FAKE_KEY = "test-key-not-real"
FIXED_NOW = datetime(2024, 1, 16, 10, 30, 0, tzinfo=UTC)

# Where each provider's test connection points. StateSet and Shoplazza use their public
# hosts; Shipper and RxUniverse have none, so a connection names one.
BASE_URLS: dict[str, tuple[str, str, str]] = {
    "stateset": ("https", "api.stateset.com", ""),
    "shipper": ("https", "fulfillment.shipper.example", ""),
    "shoplazza": ("https", "{params.shop_domain}.myshoplaza.com", ""),
    "rxuniverse": ("http", "lab.example.test:4567", ""),
}

CREDENTIALS: dict[str, dict[str, str]] = {
    "stateset": {"api_key": FAKE_KEY},
    "shipper": {"api_key": FAKE_KEY},
    "shoplazza": {"access_token": FAKE_KEY},
    "rxuniverse": {"api_key": FAKE_KEY},
}

CONNECTION_PARAMS: dict[str, dict[str, Any]] = {
    "stateset": {},
    "shipper": {"warehouse_id": "WH-TGR04"},
    "shoplazza": {"shop_domain": "demo-shop"},
    "rxuniverse": {},
}

DEFAULT_RESOURCE = {
    "stateset": "asn",
    "shipper": "sales_order",
    "shoplazza": "procurement",
    "rxuniverse": "order",
}


def load_builtin_definitions() -> dict[str, ProviderDefinition]:
    definitions = {}
    for file in builtin_files():
        definition = ProviderDefinition.model_validate(yaml.safe_load(file.read_text("utf-8")))
        definitions[definition.name] = definition
    return definitions


def make_base_url(scheme: str, authority: str, path: str = "") -> BaseUrl:
    return BaseUrl(scheme, compile_template(authority), compile_template(path))


@pytest.fixture(scope="session")
def definitions() -> dict[str, ProviderDefinition]:
    """The built-in provider definitions, by name."""
    return load_builtin_definitions()


@pytest.fixture
def make_target(
    definitions: dict[str, ProviderDefinition],
) -> Callable[..., Target]:
    """``make_target("shipper", params={...}, credentials={...})``: a connection to a provider.

    ``params`` and ``credentials`` replace the defaults above when given; ``definition`` swaps
    in a custom definition; ``base_url`` is ``(scheme, authority, path)``.
    """

    def make(
        provider: str,
        *,
        params: Mapping[str, Any] | None = None,
        credentials: Mapping[str, str] | None = None,
        definition: ProviderDefinition | None = None,
        base_url: tuple[str, str, str] | None = None,
        name: str | None = None,
    ) -> Target:
        chosen = definition or definitions[provider]
        connection_params = dict(CONNECTION_PARAMS.get(provider, {}) if params is None else params)
        # As the loader does: the definition's defaults first, then the connection's values.
        merged = {n: s.default for n, s in chosen.params.items() if s.default is not None}
        merged.update(connection_params)
        return Target(
            name=name or f"{provider}-main",
            definition=chosen,
            base_url=make_base_url(*(base_url or BASE_URLS[provider])),
            credentials=dict(CREDENTIALS.get(provider, {}) if credentials is None else credentials),
            params=merged,
            timeout_s=10.0,
        )

    return make


@pytest.fixture
def call() -> Call:
    """What the gateway knows about one cancellation before sending it."""
    return Call(
        cancellation_id="cxl_01hq3z5t9m0000000000000000",
        caller="oms",
        idempotency_key="idem-1234",
        request_id="req-abc-123",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )


@pytest.fixture
def make_request() -> Callable[..., CancelRequest]:
    """``make_request(id=..., reason=...)``: a validated canonical request."""

    def make(**fields: Any) -> CancelRequest:
        fields.setdefault("connection", "test-connection")
        fields.setdefault("id", "obj-1")
        return CancelRequest.model_validate(fields)

    return make


@pytest.fixture
def now() -> datetime:
    """The clock reading passed to ``classify``."""
    return FIXED_NOW
