"""build_request: the exact HTTP request each built-in provider receives, and what is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from pydantic import ValidationError

from gateway.definition import ProviderDefinition
from gateway.errors import ErrorCode, GatewayError
from gateway.models import CancelRequest
from gateway.redact import REDACTED
from gateway.targets import Target
from gateway.translate.build import Call, build_request, resolve_resource
from gateway.translate.wire import UpstreamRequest

from .conftest import DEFAULT_RESOURCE, FAKE_KEY

MakeTarget = Callable[..., Target]
MakeRequest = Callable[..., CancelRequest]

ASN_ID = "asn_0901f083-aa1c-43c5-af5c-0a9d2fc64e30"
PROCUREMENT_ID = "382451985837728044"

# The minimum each provider needs besides the id.
MINIMAL_FIELDS: dict[str, dict[str, Any]] = {
    "stateset": {"reason": "Supplier notified of production delay"},
    "shipper": {"reason": "cancel aja"},
    "shoplazza": {},
    "rxuniverse": {},
}

AUTH_HEADERS = {
    "stateset": ("Authorization", f"Bearer {FAKE_KEY}"),
    "shipper": ("x-api-key", FAKE_KEY),
    "shoplazza": ("Access-Token", FAKE_KEY),
    "rxuniverse": ("x-api-key", FAKE_KEY),
}

PROVIDERS = list(DEFAULT_RESOURCE)


def build(
    make_target: MakeTarget,
    make_request: MakeRequest,
    call: Call,
    provider: str,
    target: Target | None = None,
    **fields: Any,
) -> UpstreamRequest:
    for key, value in MINIMAL_FIELDS[provider].items():
        fields.setdefault(key, value)
    target = target or make_target(provider)
    return build_request(target, DEFAULT_RESOURCE[provider], make_request(**fields), call)


def refusal(
    make_target: MakeTarget,
    make_request: MakeRequest,
    call: Call,
    provider: str,
    target: Target | None = None,
    **fields: Any,
) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        build(make_target, make_request, call, provider, target, **fields)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    return info.value


def locs(error: GatewayError) -> list[str]:
    return [loc for loc, _ in error.fields]


def body_of(request: UpstreamRequest) -> Any:
    assert request.body is not None
    return orjson.loads(request.body)


def header_names(request: UpstreamRequest) -> list[str]:
    return [name for name, _ in request.headers]


# --- StateSet ------------------------------------------------------------------------------


def test_stateset_documented_request(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """StateSet: POST /v1/asns/{id}/cancel with the documented JSON body and headers."""
    request = build(
        make_target,
        make_request,
        call,
        "stateset",
        id=ASN_ID,
        reason="Supplier notified of production delay",
        requested_by="purchasing@company.com",
        notify=True,
        notes="Shipment delayed by 2 weeks due to material shortage.",
    )
    assert request.method == "POST"
    assert request.url == f"https://api.stateset.com/v1/asns/{ASN_ID}/cancel"
    assert body_of(request) == {
        "reason": "Supplier notified of production delay",
        "cancelled_by": "purchasing@company.com",
        "notify_supplier": True,
        "notes": "Shipment delayed by 2 weeks due to material shortage.",
    }
    assert dict(request.headers) == {
        "Idempotency-Key": "idem-1234",
        "Authorization": f"Bearer {FAKE_KEY}",
        "X-Request-ID": "req-abc-123",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "Content-Type": "application/json",
    }
    assert request.secret_headers == frozenset({"authorization"})


def test_stateset_body_defaults(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """cancelled_by defaults to the caller's name, notify_supplier to true, notes are omitted."""
    request = build(make_target, make_request, call, "stateset", id=ASN_ID, reason="late")
    assert body_of(request) == {"reason": "late", "cancelled_by": "oms", "notify_supplier": True}


def test_stateset_notify_false_is_kept(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """notify=false is sent as notify_supplier: false, not replaced by the default."""
    request = build(make_target, make_request, call, "stateset", reason="late", notify=False)
    assert body_of(request)["notify_supplier"] is False


def test_stateset_idempotency_key_comes_from_the_call(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """The Idempotency-Key header is Call.idempotency_key, identical for every attempt."""
    other = Call(call.cancellation_id, call.caller, "caller-key-42", "req-2", call.traceparent)
    first = build(make_target, make_request, other, "stateset")
    again = build(make_target, make_request, other, "stateset")
    assert dict(first.headers)["Idempotency-Key"] == "caller-key-42"
    assert first.headers == again.headers


@pytest.mark.parametrize("reason", [None, ""])
def test_stateset_requires_a_reason(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, reason: str | None
) -> None:
    """StateSet's reason is required: missing or empty is refused at loc ``reason``."""
    error = refusal(make_target, make_request, call, "stateset", reason=reason)
    assert locs(error) == ["reason"]


# --- Shipper -------------------------------------------------------------------------------


def test_shipper_documented_request(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """Shipper: PATCH /v3/fulfillment/outbound/oms/cancel with the nested cancellation body."""
    request = build(
        make_target,
        make_request,
        call,
        "shipper",
        id="KZFILN0HRC9RDXJTZBJS",
        reason="cancel aja",
        params={"warehouse_id": "PMU"},
    )
    assert request.method == "PATCH"
    assert request.url == "https://fulfillment.shipper.example/v3/fulfillment/outbound/oms/cancel"
    assert body_of(request) == {
        "data": {
            "cancellation": {
                "order_no": "KZFILN0HRC9RDXJTZBJS",
                "cancel_reason": "cancel aja",
                "warehouse_id": "PMU",
            }
        }
    }
    headers = dict(request.headers)
    assert headers["x-api-key"] == FAKE_KEY
    assert headers["Content-Type"] == "application/json"
    assert "Authorization" not in headers
    assert request.secret_headers == frozenset({"x-api-key"})


def test_shipper_warehouse_from_the_connection(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """Without a per-request warehouse_id, the connection's is sent."""
    request = build(make_target, make_request, call, "shipper", id="SO-1")
    assert body_of(request)["data"]["cancellation"]["warehouse_id"] == "WH-TGR04"


def test_shipper_warehouse_per_request_without_connection_value(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """A connection may leave warehouse_id to each request."""
    target = make_target("shipper", params={})
    request = build(
        make_target, make_request, call, "shipper", target, params={"warehouse_id": "WH-1"}
    )
    assert body_of(request)["data"]["cancellation"]["warehouse_id"] == "WH-1"


@pytest.mark.parametrize(
    ("fields", "connection_params", "loc"),
    [
        ({"id": "x" * 51}, None, "id"),
        ({"reason": None}, None, "reason"),
        ({"reason": ""}, None, "reason"),
        ({"reason": "r" * 51}, None, "reason"),
        ({"params": {"warehouse_id": "w" * 21}}, None, "params.warehouse_id"),
        ({}, {"warehouse_id": "w" * 21}, "params.warehouse_id"),
        ({}, {}, "params.warehouse_id"),
        ({"params": {"warehouse_id": 12}}, None, "params.warehouse_id"),
    ],
    ids=[
        "id-51",
        "reason-missing",
        "reason-empty",
        "reason-51",
        "warehouse-21-per-request",
        "warehouse-21-connection",
        "warehouse-missing",
        "warehouse-not-a-string",
    ],
)
def test_shipper_field_limits(
    make_target: MakeTarget,
    make_request: MakeRequest,
    call: Call,
    fields: dict[str, Any],
    connection_params: dict[str, Any] | None,
    loc: str,
) -> None:
    """Shipper's documented limits are checked before sending, each at its own loc."""
    target = make_target("shipper", params=connection_params)
    error = refusal(make_target, make_request, call, "shipper", target, **fields)
    assert locs(error) == [loc]
    assert error.message.startswith("invalid request: ")


def test_shipper_limits_are_inclusive(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """Exactly 50/50/20 characters are accepted."""
    request = build(
        make_target,
        make_request,
        call,
        "shipper",
        id="i" * 50,
        reason="r" * 50,
        params={"warehouse_id": "w" * 20},
    )
    assert body_of(request)["data"]["cancellation"] == {
        "order_no": "i" * 50,
        "cancel_reason": "r" * 50,
        "warehouse_id": "w" * 20,
    }


def test_shipper_per_request_warehouse_overrides_a_bad_connection_value(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """The request's warehouse_id replaces the connection's before limits are checked."""
    target = make_target("shipper", params={"warehouse_id": "w" * 25})
    request = build(
        make_target, make_request, call, "shipper", target, params={"warehouse_id": "OK"}
    )
    assert body_of(request)["data"]["cancellation"]["warehouse_id"] == "OK"


def test_several_problems_are_reported_together(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """Every problem the caller can fix comes in one refusal, in one message."""
    error = refusal(
        make_target,
        make_request,
        call,
        "shipper",
        id="x" * 51,
        reason=None,
        params={"warehouse_id": "w" * 21, "color": "red"},
    )
    assert sorted(locs(error)) == ["id", "params.color", "params.warehouse_id", "reason"]
    for loc in locs(error):
        assert f"{loc}: " in error.message


# --- Shoplazza -----------------------------------------------------------------------------


def test_shoplazza_documented_request(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """Shoplazza: PATCH on the store's host, no body, but Content-Type: application/json."""
    request = build(make_target, make_request, call, "shoplazza", id=PROCUREMENT_ID)
    assert request.method == "PATCH"
    assert request.url == (
        f"https://demo-shop.myshoplaza.com/openapi/2022-01/procurements/{PROCUREMENT_ID}/cancel"
    )
    assert request.body is None
    headers = dict(request.headers)
    assert headers["Access-Token"] == FAKE_KEY
    assert headers["Content-Type"] == "application/json"
    assert [n.lower() for n in header_names(request)].count("content-type") == 1
    assert "Authorization" not in headers
    assert request.secret_headers == frozenset({"access-token"})


def test_shoplazza_api_version_is_a_connection_setting(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """The OpenAPI version in the path comes from the api_version param (default 2022-01)."""
    target = make_target("shoplazza", params={"shop_domain": "acme", "api_version": "2024-07"})
    request = build(make_target, make_request, call, "shoplazza", target, id="1")
    assert request.url == "https://acme.myshoplaza.com/openapi/2024-07/procurements/1/cancel"


@pytest.mark.parametrize(
    "shop_domain", ["evil.com/x", "Shop", "shop.evil.com", "-shop", "a@b", "shop\n"]
)
def test_shoplazza_bad_shop_domain_never_reaches_the_host(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, shop_domain: str
) -> None:
    """A shop_domain that is not one host label is refused, so it never becomes a host."""
    target = make_target("shoplazza", params={"shop_domain": shop_domain})
    error = refusal(make_target, make_request, call, "shoplazza", target)
    assert locs(error) == ["params.shop_domain"]


# --- RxUniverse ----------------------------------------------------------------------------


def test_rxuniverse_request_without_reason(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """RxUniverse: DELETE /api/v2/orders/{id}, no body, no query when no reason is given."""
    request = build(make_target, make_request, call, "rxuniverse", id="72544")
    assert request.method == "DELETE"
    assert request.url == "http://lab.example.test:4567/api/v2/orders/72544"
    assert request.body is None
    headers = dict(request.headers)
    assert headers["x-api-key"] == FAKE_KEY
    assert "Content-Type" not in headers
    assert request.secret_headers == frozenset({"x-api-key"})


@pytest.mark.parametrize(
    ("fields", "query"),
    [
        ({"reason": "Customer request"}, "deleteReason=Customer%20request"),
        ({"params": {"reason_code": "R12"}}, "deleteReason=R12"),
        ({"reason": "ignored", "params": {"reason_code": "R12"}}, "deleteReason=R12"),
        ({"reason": "a&b=c#d"}, "deleteReason=a%26b%3Dc%23d"),
    ],
    ids=["reason", "reason-code", "reason-code-preferred", "reason-encoded"],
)
def test_rxuniverse_delete_reason_query(
    make_target: MakeTarget,
    make_request: MakeRequest,
    call: Call,
    fields: dict[str, Any],
    query: str,
) -> None:
    """?deleteReason= carries params.reason_code, else reason, percent-encoded."""
    request = build(make_target, make_request, call, "rxuniverse", id="72544", **fields)
    assert request.url == f"http://lab.example.test:4567/api/v2/orders/72544?{query}"


def test_rxuniverse_api_key_header_is_configurable(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """The connection param api_key_header names the header carrying the key."""
    target = make_target("rxuniverse", params={"api_key_header": "X-Lab-Key"})
    request = build(make_target, make_request, call, "rxuniverse", target)
    headers = dict(request.headers)
    assert headers["X-Lab-Key"] == FAKE_KEY
    assert "x-api-key" not in headers
    assert request.secret_headers == frozenset({"x-lab-key"})
    assert request.shown_headers()["X-Lab-Key"] == REDACTED


@pytest.mark.parametrize("credentials", [{"api_key": ""}, {}], ids=["empty", "absent"])
def test_rxuniverse_empty_key_sends_no_header(
    make_target: MakeTarget,
    make_request: MakeRequest,
    call: Call,
    credentials: dict[str, str],
) -> None:
    """An empty or absent api_key sends no auth header at all (not an empty one)."""
    target = make_target("rxuniverse", credentials=credentials)
    request = build(make_target, make_request, call, "rxuniverse", target)
    assert [n.lower() for n in header_names(request)] == ["x-request-id", "traceparent"]
    assert request.secret_headers == frozenset()


@pytest.mark.parametrize(
    ("reason_code", "message"),
    [(12, "must be a string"), (True, "must be a string"), ("R" * 65, "at most 64")],
)
def test_rxuniverse_reason_code_is_checked(
    make_target: MakeTarget,
    make_request: MakeRequest,
    call: Call,
    reason_code: Any,
    message: str,
) -> None:
    """params.reason_code must be a string of at most 64 characters."""
    error = refusal(
        make_target, make_request, call, "rxuniverse", params={"reason_code": reason_code}
    )
    assert locs(error) == ["params.reason_code"]
    assert message in error.fields[0][1]


# --- common to every provider --------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_request_id_and_traceparent_are_forwarded(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, provider: str
) -> None:
    """Every upstream request carries the gateway's X-Request-ID and traceparent."""
    headers = dict(build(make_target, make_request, call, provider).headers)
    assert headers["X-Request-ID"] == call.request_id
    assert headers["traceparent"] == call.traceparent


@pytest.mark.parametrize("provider", PROVIDERS)
def test_auth_header_per_provider(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, provider: str
) -> None:
    """Each provider gets its credential in its own documented header, and only there."""
    request = build(make_target, make_request, call, provider)
    name, value = AUTH_HEADERS[provider]
    assert dict(request.headers)[name] == value
    assert [v for _, v in request.headers if FAKE_KEY in v] == [value]
    assert FAKE_KEY not in request.url
    assert FAKE_KEY.encode() not in (request.body or b"")


@pytest.mark.parametrize("provider", ["stateset", "shipper", "shoplazza"])
def test_an_auth_header_of_credentials_only_is_rendered_once_per_connection(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, provider: str
) -> None:
    """Rendered when the connection is made, and sent as rendered: the same header."""
    target = make_target(provider)
    assert target.fixed_auth == AUTH_HEADERS[provider]
    request = build_request(
        target, DEFAULT_RESOURCE[provider], make_request(reason="damaged"), call
    )
    assert [h for h in request.headers if h[0] == target.fixed_auth[0]] == [target.fixed_auth]


def test_an_auth_header_named_by_a_param_is_rendered_per_request(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """RxUniverse's header name is a param: nothing is fixed, the request still carries it."""
    target = make_target("rxuniverse")
    assert target.fixed_auth is None
    name, value = AUTH_HEADERS["rxuniverse"]
    request = build_request(
        target, DEFAULT_RESOURCE["rxuniverse"], make_request(reason="damaged"), call
    )
    assert dict(request.headers)[name] == value


def test_an_empty_credential_fixes_no_auth_header(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    target = make_target("stateset", credentials={"api_key": ""})
    assert target.fixed_auth is None
    request = build_request(
        target, DEFAULT_RESOURCE["stateset"], make_request(reason="damaged"), call
    )
    assert "Authorization" not in dict(request.headers)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_undeclared_request_param_is_rejected(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, provider: str
) -> None:
    """params a provider does not declare are refused at loc params.<name>."""
    error = refusal(make_target, make_request, call, provider, params={"colour": "red"})
    assert locs(error) == ["params.colour"]
    assert "not a parameter" in error.fields[0][1]


@pytest.mark.parametrize(
    ("provider", "param", "value"),
    [
        ("shoplazza", "shop_domain", "other-shop"),
        ("shoplazza", "api_version", "2024-07"),
        ("rxuniverse", "api_key_header", "Authorization"),
    ],
)
def test_connection_only_param_given_per_request_is_rejected(
    make_target: MakeTarget,
    make_request: MakeRequest,
    call: Call,
    provider: str,
    param: str,
    value: str,
) -> None:
    """Params fixed by the connection (host, version, auth header) cannot come per request."""
    error = refusal(make_target, make_request, call, provider, params={param: value})
    assert locs(error) == [f"params.{param}"]
    assert "fixed by the connection" in error.fields[0][1]


ENCODED_IDS = [
    ("../../admin", "..%2F..%2Fadmin"),
    ("a/b?x=1#f", "a%2Fb%3Fx%3D1%23f"),
    ("%2e%2e", "%252e%252e"),
    ("two words", "two%20words"),
    ("ordre-é", "ordre-%C3%A9"),
]

URL_SHAPES = {
    "stateset": "https://api.stateset.com/v1/asns/{}/cancel",
    "shoplazza": "https://demo-shop.myshoplaza.com/openapi/2022-01/procurements/{}/cancel",
    "rxuniverse": "http://lab.example.test:4567/api/v2/orders/{}",
}


@pytest.mark.parametrize(("raw", "encoded"), ENCODED_IDS)
@pytest.mark.parametrize("provider", list(URL_SHAPES))
def test_id_is_one_percent_encoded_path_segment(
    make_target: MakeTarget,
    make_request: MakeRequest,
    call: Call,
    provider: str,
    raw: str,
    encoded: str,
) -> None:
    """An id can never add segments, a query or a fragment, or change the host."""
    request = build(make_target, make_request, call, provider, id=raw)
    assert request.url == URL_SHAPES[provider].format(encoded)
    expected = urlsplit(URL_SHAPES[provider].format("X"))
    parts = urlsplit(request.url)
    assert (parts.scheme, parts.netloc, parts.query, parts.fragment) == (
        expected.scheme,
        expected.netloc,
        "",
        "",
    )
    assert parts.path.count("/") == expected.path.count("/")


@pytest.mark.parametrize(("raw", "encoded"), ENCODED_IDS)
def test_shipper_id_goes_in_the_body_unencoded(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, raw: str, encoded: str
) -> None:
    """Shipper's id travels in the JSON body as is; its URL is fixed."""
    request = build(make_target, make_request, call, "shipper", id=raw)
    assert request.url.endswith("/v3/fulfillment/outbound/oms/cancel")
    assert body_of(request)["data"]["cancellation"]["order_no"] == raw


@pytest.mark.parametrize("raw", [".", ".."])
def test_dot_ids_are_refused_by_the_model(raw: str) -> None:
    """The canonical request refuses ``.`` and ``..`` as ids."""
    with pytest.raises(ValidationError):
        CancelRequest.model_validate({"connection": "c", "id": raw})


@pytest.mark.parametrize("raw", [".", ".."])
@pytest.mark.parametrize("provider", list(URL_SHAPES))
def test_dot_ids_are_refused_by_build_too(
    make_target: MakeTarget, call: Call, provider: str, raw: str
) -> None:
    """Even a request that skipped validation cannot put a dot segment in a URL."""
    fields = {"connection": "c", "id": raw, "params": {}, **MINIMAL_FIELDS[provider]}
    request = CancelRequest.model_construct(**fields)
    with pytest.raises(GatewayError) as info:
        build_request(make_target(provider), DEFAULT_RESOURCE[provider], request, call)
    assert info.value.code is ErrorCode.INVALID_REQUEST


# --- resources -----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_single_resource_is_implied(
    definitions: dict[str, ProviderDefinition], provider: str
) -> None:
    """A provider with one resource needs no ``resource`` in the request."""
    assert resolve_resource(definitions[provider], None) == DEFAULT_RESOURCE[provider]
    assert (
        resolve_resource(definitions[provider], DEFAULT_RESOURCE[provider])
        == (DEFAULT_RESOURCE[provider])
    )


@pytest.mark.parametrize(("provider", "wrong"), [("stateset", "order"), ("shipper", "asn")])
def test_wrong_resource_is_refused(
    definitions: dict[str, ProviderDefinition], provider: str, wrong: str
) -> None:
    """A resource the provider does not cancel is an invalid request at loc ``resource``."""
    with pytest.raises(GatewayError) as info:
        resolve_resource(definitions[provider], wrong)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert locs(info.value) == ["resource"]
    assert DEFAULT_RESOURCE[provider] in info.value.message


def test_several_resources_need_an_explicit_choice() -> None:
    """With several resources, omitting ``resource`` is refused and names the choices."""
    definition = ProviderDefinition.model_validate(
        {
            "name": "multi",
            "resources": {
                "order": {"method": "DELETE", "path": "/orders/{id}"},
                "shipment": {"method": "DELETE", "path": "/shipments/{id}"},
            },
        }
    )
    assert resolve_resource(definition, "shipment") == "shipment"
    with pytest.raises(GatewayError) as info:
        resolve_resource(definition, None)
    assert locs(info.value) == ["resource"]
    assert "order, shipment" in info.value.message


# --- credentials stay hidden ---------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_repr_and_shown_headers_mask_the_credential(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, provider: str
) -> None:
    """Showing a request (repr, shown_headers) never shows the credential."""
    target = make_target(provider)
    request = build(make_target, make_request, call, provider, target)
    name, _ = AUTH_HEADERS[provider]
    shown = request.shown_headers()
    assert shown[name] == REDACTED
    assert shown["X-Request-ID"] == call.request_id
    assert FAKE_KEY not in repr(request)
    assert FAKE_KEY not in str(request)
    assert FAKE_KEY not in repr(target)


def test_credential_with_control_characters_is_refused_without_echoing_it(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """A credential that would split a header is refused, and the message does not quote it."""
    secret = "secret-part\r\nX-Injected: 1"
    target = make_target("stateset", credentials={"api_key": secret})
    error = refusal(make_target, make_request, call, "stateset", target)
    assert "secret-part" not in error.message
    assert all("secret-part" not in message for _, message in error.fields)


# --- custom definitions: host and header names from params ----------------------------------


def tenant_definition() -> ProviderDefinition:
    """A provider whose host and auth header name come from params without a pattern."""
    return ProviderDefinition.model_validate(
        {
            "name": "tenanted",
            "base_url": "https://{params.tenant}.tenanted.example",
            "credentials": {"api_key": {}},
            "params": {"tenant": {"required": True}, "key_header": {"default": "X-Key"}},
            "auth": {"header": "{params.key_header}", "value": "{credentials.api_key}"},
            "resources": {"order": {"method": "DELETE", "path": "/orders/{id}"}},
        }
    )


def build_tenanted(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, **params: Any
) -> UpstreamRequest:
    target = make_target(
        "tenanted",
        definition=tenant_definition(),
        params={"tenant": "acme", **params},
        credentials={"api_key": FAKE_KEY},
        base_url=("https", "{params.tenant}.tenanted.example", ""),
    )
    return build_request(target, "order", make_request(id="o-1"), call)


def test_host_param_is_placed_as_a_host_label(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """A host-label param renders into the host; the header name param names the header."""
    request = build_tenanted(make_target, make_request, call)
    assert request.url == "https://acme.tenanted.example/orders/o-1"
    assert dict(request.headers)["X-Key"] == FAKE_KEY


@pytest.mark.parametrize("tenant", ["evil.com/x", "a.b", "UPPER", "a b", "x@y"])
def test_host_param_that_is_not_a_label_is_refused(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, tenant: str
) -> None:
    """Even without a param pattern, a value that is not a host label never becomes a host."""
    with pytest.raises(GatewayError) as info:
        build_tenanted(make_target, make_request, call, tenant=tenant)
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_host_param_with_trailing_newline_is_refused(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """A trailing newline in a host param never reaches the URL."""
    with pytest.raises(GatewayError):
        build_tenanted(make_target, make_request, call, tenant="acme\n")


def test_auth_header_name_with_trailing_newline_is_refused(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """A header name rendered from a param cannot end in a newline."""
    with pytest.raises(GatewayError):
        build_tenanted(make_target, make_request, call, key_header="X-Key\n")


@pytest.mark.parametrize("key_header", ["X Key", "X:Key", "Bad(name)"])
def test_auth_header_name_must_be_a_token(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, key_header: str
) -> None:
    """A header name rendered from a param must be an HTTP token."""
    with pytest.raises(GatewayError) as info:
        build_tenanted(make_target, make_request, call, key_header=key_header)
    assert info.value.code is ErrorCode.INVALID_REQUEST
