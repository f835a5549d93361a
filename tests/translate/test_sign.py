"""Signatures: each recipe against values computed here by hand with hmac/hashlib/base64 (never
by the code under test), a provider's published example, and the values made for each attempt
that a signature usually covers (a time, a nonce)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.definition import ProviderDefinition
from gateway.models import CancelRequest
from gateway.redact import REDACTED
from gateway.targets import Target
from gateway.translate.build import Call, build_attempts, build_request
from gateway.translate.wire import UpstreamRequest

MakeTarget = Callable[..., Target]
MakeRequest = Callable[..., CancelRequest]

SECRET = "signing-secret-not-real"
NOW = datetime(2024, 1, 16, 10, 30, 0, 250_000, tzinfo=UTC)
UUID = "0b5c3f8e-4d7a-4b8e-9f51-2c6d1e0a7b39"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def unix(moment: datetime) -> int:
    """Whole seconds since the epoch, by integer arithmetic on the calendar."""
    return (moment - EPOCH) // timedelta(seconds=1)


def hmac_hex(key: str, message: str | bytes, digest: Any = hashlib.sha256) -> str:
    data = message.encode() if isinstance(message, str) else message
    return hmac.new(key.encode(), data, digest).hexdigest()


def query_of(request: UpstreamRequest) -> dict[str, str]:
    """The request's query parameters, decoded; each name given once."""
    pairs = parse_qs(urlsplit(request.url).query, keep_blank_values=True, strict_parsing=True)
    assert all(len(values) == 1 for values in pairs.values()), pairs
    return {name: values[0] for name, values in pairs.items()}


def signed_definition(signature: dict[str, Any], **extra: Any) -> ProviderDefinition:
    """A provider that cancels ``order`` with a query and a JSON body and signs as told."""
    data: dict[str, Any] = {
        "name": "signed",
        "credentials": {"secret": {}},
        "signature": signature,
        "resources": {
            "order": {
                "method": "POST",
                "path": "/v1/orders/{id}/cancel",
                "query": {"b": "{reason}", "a": "1", "c": "x"},
                "body": {"reason": "{reason}"},
            }
        },
    }
    data.update(extra)
    return ProviderDefinition.model_validate(data)


def build(
    make_target: MakeTarget,
    make_request: MakeRequest,
    call: Call,
    definition: ProviderDefinition,
    credentials: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    resource: str = "order",
    **fields: Any,
) -> UpstreamRequest:
    target = make_target(
        definition.name,
        definition=definition,
        credentials={"secret": SECRET} if credentials is None else credentials,
        params=params or {},
        base_url=("https", "api.signed.example", ""),
    )
    fields.setdefault("reason", "late parcel")
    pinned = replace(call, now=NOW, uuid=UUID)
    return build_request(target, resource, make_request(**fields), pinned)


# --- published and provider-shaped recipes ----------------------------------------------------

# TikTok Shop Partner API, "Sign your API request": the app secret, the path, the query
# parameters but sign and access_token sorted by name as {name}{value} without separators, the
# body, the app secret again; HMAC-SHA256 keyed with the app secret, lowercase hex.
TIKTOK_SECRET = "e59af819cc"  # the documentation's example values, not a credential
TIKTOK_APP_KEY = "29a39d"
TIKTOK_TIMESTAMP = 1623812664
TIKTOK_SIGN = "b596b73e0cc6de07ac26f036364178ab16b0a907af13d43f0a0cd2345f582dc8"
TIKTOK_MESSAGE = [
    "{credentials.app_secret}",
    {"part": "path"},
    {
        "part": "query",
        "pair": "{name}{value}",
        "separator": "",
        "exclude": ["sign", "access_token"],
    },
    {"part": "body"},
    "{credentials.app_secret}",
]


def tiktok_definition() -> ProviderDefinition:
    return ProviderDefinition.model_validate(
        {
            "name": "tiktok-shop",
            "credentials": {"app_secret": {}, "access_token": {}},
            "params": {"app_key": {"required": True}},
            "auth": {"header": "x-tts-access-token", "value": "{credentials.access_token}"},
            "signature": {
                "algorithm": "hmac-sha256",
                "key": "{credentials.app_secret}",
                "message": TIKTOK_MESSAGE,
                "query": "sign",
            },
            "resources": {
                "shops": {
                    "method": "GET",
                    "path": "/authorization/202309/shops",
                    "query": {"app_key": "{params.app_key}", "timestamp": "{now.unix}"},
                }
            },
        }
    )


def test_tiktok_shop_published_example(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """TikTok Shop's own example request is signed with the value its documentation gives."""
    target = make_target(
        "tiktok-shop",
        definition=tiktok_definition(),
        credentials={"app_secret": TIKTOK_SECRET, "access_token": "tts-token-not-real-0123"},
        params={"app_key": TIKTOK_APP_KEY},
        base_url=("https", "open-api.tiktokglobalshop.com", ""),
    )
    at = replace(call, now=datetime.fromtimestamp(TIKTOK_TIMESTAMP, UTC))
    request = build_request(target, "shops", make_request(), at)
    assert request.url == (
        "https://open-api.tiktokglobalshop.com/authorization/202309/shops"
        f"?app_key={TIKTOK_APP_KEY}&timestamp={TIKTOK_TIMESTAMP}&sign={TIKTOK_SIGN}"
    )
    # The recipe written out, as a check on the documentation's value itself.
    message = f"{TIKTOK_SECRET}/authorization/202309/shopsapp_key29a39dtimestamp1623812664"
    assert hmac_hex(TIKTOK_SECRET, message + TIKTOK_SECRET) == TIKTOK_SIGN
    assert request.shown_url.endswith(f"&sign={REDACTED}")
    assert TIKTOK_SIGN not in repr(request)


def test_tiktok_shop_recipe_covers_the_body_and_leaves_the_token_out(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """With a body and an access_token query parameter, the body is signed and the token is not."""
    definition = ProviderDefinition.model_validate(
        {
            "name": "tiktok-shop",
            "credentials": {"app_secret": {}, "access_token": {}},
            "params": {"app_key": {"required": True}},
            "auth": {
                "type": "query",
                "name": "access_token",
                "value": "{credentials.access_token}",
            },
            "signature": {
                "algorithm": "hmac-sha256",
                "key": "{credentials.app_secret}",
                "message": TIKTOK_MESSAGE,
                "query": "sign",
            },
            "resources": {
                "order": {
                    "method": "POST",
                    "path": "/return_refund/202309/cancellations",
                    "query": {"timestamp": "{now.unix}", "app_key": "{params.app_key}"},
                    "body": {"order_id": "{id}", "cancel_reason": "{reason}"},
                }
            },
        }
    )
    token = "tts-token-not-real-0123"
    request = build(
        make_target,
        make_request,
        call,
        definition,
        credentials={"app_secret": TIKTOK_SECRET, "access_token": token},
        params={"app_key": TIKTOK_APP_KEY},
        id="576461413038785752",
        reason="CUSTOMER_REQUEST",
    )
    body = b'{"order_id":"576461413038785752","cancel_reason":"CUSTOMER_REQUEST"}'
    assert request.body == body
    query = query_of(request)
    assert query["access_token"] == token
    message = (
        f"{TIKTOK_SECRET}/return_refund/202309/cancellations"
        f"app_key{TIKTOK_APP_KEY}timestamp{unix(NOW)}{body.decode()}{TIKTOK_SECRET}"
    )
    assert query["sign"] == hmac_hex(TIKTOK_SECRET, message)
    shown = request.shown_url
    assert f"access_token={REDACTED}" in shown
    assert f"sign={REDACTED}" in shown
    assert token not in shown
    assert query["sign"] not in shown


def test_shopee_style_recipe_over_ids_path_time_and_token(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """partner_id + path + timestamp + access_token + shop_id, HMAC-SHA256 keyed with the
    partner key, lowercase hex, in the ``sign`` query parameter; the token goes as a query
    credential and both are masked when the URL is shown."""
    definition = ProviderDefinition.model_validate(
        {
            "name": "shopee-like",
            "credentials": {"partner_key": {}, "access_token": {}},
            "params": {
                "partner_id": {"type": "integer", "required": True},
                "shop_id": {"type": "integer", "required": True},
            },
            "auth": {
                "type": "query",
                "name": "access_token",
                "value": "{credentials.access_token}",
            },
            "signature": {
                "algorithm": "hmac-sha256",
                "key": "{credentials.partner_key}",
                "message": [
                    "{params.partner_id}",
                    {"part": "path"},
                    "{now.unix}",
                    "{credentials.access_token}",
                    "{params.shop_id}",
                ],
                "query": "sign",
            },
            "resources": {
                "order": {
                    "method": "POST",
                    "path": "/api/v2/order/cancel_order",
                    "query": {
                        "partner_id": "{params.partner_id}",
                        "timestamp": "{now.unix}",
                        "shop_id": "{params.shop_id}",
                    },
                    "body": {"order_sn": "{id}", "cancel_reason": "{reason}"},
                }
            },
        }
    )
    partner_key, token = "shopee-partner-key-not-real", "shopee-token-not-real"
    request = build(
        make_target,
        make_request,
        call,
        definition,
        credentials={"partner_key": partner_key, "access_token": token},
        params={"partner_id": 2001887, "shop_id": 220006075},
        id="201218V2Y6E59M",
        reason="OUT_OF_STOCK",
    )
    expected = hmac_hex(
        partner_key, f"2001887/api/v2/order/cancel_order{unix(NOW)}{token}220006075"
    )
    assert request.url == (
        "https://api.signed.example/api/v2/order/cancel_order"
        f"?partner_id=2001887&timestamp={unix(NOW)}&shop_id=220006075"
        f"&access_token={token}&sign={expected}"
    )
    assert request.shown_url == (
        "https://api.signed.example/api/v2/order/cancel_order"
        f"?partner_id=2001887&timestamp={unix(NOW)}&shop_id=220006075"
        f"&access_token={REDACTED}&sign={REDACTED}"
    )


# --- algorithms and encodings ---------------------------------------------------------------

# algorithm -> (keyed?, the hashlib constructor), written out rather than derived from the name
ALGORITHMS: dict[str, tuple[bool, Any]] = {
    "hmac-sha256": (True, hashlib.sha256),
    "hmac-sha1": (True, hashlib.sha1),
    "hmac-sha512": (True, hashlib.sha512),
    "sha256": (False, hashlib.sha256),
    "sha1": (False, hashlib.sha1),
    "sha512": (False, hashlib.sha512),
}
ENCODINGS: dict[str, Callable[[bytes], str]] = {
    "hex": lambda digest: digest.hex(),
    "hex-upper": lambda digest: digest.hex().upper(),
    "base64": lambda digest: base64.b64encode(digest).decode("ascii"),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_every_algorithm_and_encoding(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, algorithm: str, encoding: str
) -> None:
    """Each algorithm, keyed or not, in each encoding, over literals, a field and the method."""
    keyed, constructor = ALGORITHMS[algorithm]
    signature: dict[str, Any] = {
        "algorithm": algorithm,
        "message": ["{id}", ":", {"part": "method"}],
        "encoding": encoding,
        "header": "X-Signature",
    }
    if keyed:
        signature["key"] = "{credentials.secret}"
    request = build(make_target, make_request, call, signed_definition(signature), id="order-7")
    message = b"order-7:POST"
    digest = (
        hmac.new(SECRET.encode(), message, constructor).digest()
        if keyed
        else constructor(message).digest()
    )
    assert dict(request.headers)["X-Signature"] == ENCODINGS[encoding](digest)


def test_base64_signature_in_the_query_is_percent_encoded(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """A base64 value's + / = are percent-encoded in the URL and arrive as they were."""
    signature = {
        "algorithm": "hmac-sha512",
        "key": "{credentials.secret}",
        "message": ["{id}"],
        "encoding": "base64",
        "query": "sig",
    }
    # An id whose base64 signature holds a + or a / (a SHA-512 one always ends in ==).
    for index in range(64):
        request = build(
            make_target, make_request, call, signed_definition(signature), id=f"o-{index}"
        )
        digest = hmac.new(SECRET.encode(), f"o-{index}".encode(), hashlib.sha512).digest()
        expected = base64.b64encode(digest).decode()
        if "+" in expected or "/" in expected:
            break
    assert "+" in expected or "/" in expected
    raw = urlsplit(request.url).query.rpartition("&sig=")[2]
    assert "+" not in raw
    assert "/" not in raw
    assert "=" not in raw
    assert query_of(request)["sig"] == expected


# --- request parts ----------------------------------------------------------------------------


def test_method_path_and_body_parts_are_as_sent(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """The method, the path as percent-encoded (without the query) and the body's exact bytes."""
    signature = {
        "algorithm": "hmac-sha256",
        "key": "{credentials.secret}",
        "message": [{"part": "method"}, "\n", {"part": "path"}, "\n", {"part": "body"}],
        "header": "X-Signature",
    }
    request = build(
        make_target, make_request, call, signed_definition(signature), id="A/1 b", reason="late"
    )
    body = b'{"reason":"late"}'
    assert request.body == body
    message = b"POST\n/v1/orders/A%2F1%20b/cancel\n" + body
    assert dict(request.headers)["X-Signature"] == hmac_hex(SECRET, message)


def test_body_part_of_a_request_without_body_is_empty(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """A request without a body signs no bytes for it."""
    definition = ProviderDefinition.model_validate(
        {
            "name": "signed",
            "credentials": {"secret": {}},
            "signature": {
                "algorithm": "sha256",
                "message": [{"part": "method"}, "|", {"part": "body"}, "|"],
                "header": "X-Digest",
            },
            "resources": {"order": {"method": "DELETE", "path": "/orders/{id}"}},
        }
    )
    request = build(make_target, make_request, call, definition)
    assert request.body is None
    assert dict(request.headers)["X-Digest"] == hashlib.sha256(b"DELETE||").hexdigest()


@pytest.mark.parametrize(
    ("part", "message"),
    [
        pytest.param({}, "a=1&b=late parcel&c=x", id="sorted-by-name-decoded"),
        pytest.param({"sort": False}, "b=late parcel&a=1&c=x", id="unsorted-as-sent"),
        pytest.param({"exclude": ["c", "b"]}, "a=1", id="excluded"),
        pytest.param(
            {"sort": False, "exclude": ["a"], "pair": "{name}:{value}", "separator": ";"},
            "b:late parcel;c:x",
            id="own-pair-and-separator",
        ),
        pytest.param(
            {"pair": "{value}", "separator": ""}, "1late parcelx", id="values-only-no-separator"
        ),
    ],
)
def test_query_part(
    make_target: MakeTarget,
    make_request: MakeRequest,
    call: Call,
    part: dict[str, Any],
    message: str,
) -> None:
    """The query as sent: decoded, sorted by name unless told not to, exclusions left out,
    each pair written as told and joined by the separator."""
    signature = {
        "algorithm": "hmac-sha256",
        "key": "{credentials.secret}",
        "message": [{"part": "query", **part}],
        "header": "X-Signature",
    }
    request = build(make_target, make_request, call, signed_definition(signature))
    assert urlsplit(request.url).query == "b=late%20parcel&a=1&c=x"
    assert dict(request.headers)["X-Signature"] == hmac_hex(SECRET, message)


def test_query_part_covers_a_query_credential_unless_excluded(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """A credential sent as a query parameter is part of the query that is signed, and is left
    out when excluded; the signature never signs itself."""
    signature = {
        "algorithm": "hmac-sha256",
        "key": "{credentials.secret}",
        "message": [{"part": "query"}],
        "query": "sig",
    }
    auth = {"type": "query", "name": "key", "value": "{credentials.secret}"}
    request = build(make_target, make_request, call, signed_definition(signature, auth=auth))
    expected = hmac_hex(SECRET, f"a=1&b=late parcel&c=x&key={SECRET}")
    assert query_of(request)["sig"] == expected

    excluded = {**signature, "message": [{"part": "query", "exclude": ["key"]}]}
    request = build(make_target, make_request, call, signed_definition(excluded, auth=auth))
    assert query_of(request)["sig"] == hmac_hex(SECRET, "a=1&b=late parcel&c=x")


def test_credentials_and_generated_values_in_the_message(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """A message may name credentials, params, fields and the attempt's time and nonce."""
    signature = {
        "algorithm": "hmac-sha1",
        "key": "{credentials.secret}",
        "message": ["{credentials.secret}", "{now.unix_ms}", "{uuid}", "{id}", "{now.rfc3339}"],
        "encoding": "hex-upper",
        "header": "X-Sig",
    }
    request = build(make_target, make_request, call, signed_definition(signature), id="o-9")
    millis = (NOW - EPOCH) // timedelta(milliseconds=1)
    message = f"{SECRET}{millis}{UUID}o-92024-01-16T10:30:00Z"
    expected = hmac_hex(SECRET, message, hashlib.sha1).upper()
    assert dict(request.headers)["X-Sig"] == expected


# --- where the signature goes, and how it is shown ------------------------------------------


def test_signature_in_a_header_is_masked_when_shown(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """In a header: sent as computed, masked in shown_headers() and the repr, URL untouched."""
    signature = {
        "algorithm": "hmac-sha256",
        "key": "{credentials.secret}",
        "message": ["{id}"],
        "header": "X-Signature",
    }
    request = build(make_target, make_request, call, signed_definition(signature), id="o-1")
    expected = hmac_hex(SECRET, "o-1")
    assert dict(request.headers)["X-Signature"] == expected
    assert request.shown_headers()["X-Signature"] == REDACTED
    assert request.url == "https://api.signed.example/v1/orders/o-1/cancel?b=late%20parcel&a=1&c=x"
    assert request.shown_url == request.url
    assert expected not in repr(request)
    assert SECRET not in repr(request)


def test_signature_in_a_query_parameter_is_masked_when_shown(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """In a query parameter: appended after the resource's query, masked in shown_url and the
    repr; no header carries it."""
    signature = {
        "algorithm": "hmac-sha256",
        "key": "{credentials.secret}",
        "message": ["{id}"],
        "query": "signature",
    }
    request = build(make_target, make_request, call, signed_definition(signature), id="o-1")
    expected = hmac_hex(SECRET, "o-1")
    assert request.url.endswith(f"?b=late%20parcel&a=1&c=x&signature={expected}")
    assert request.shown_url.endswith(f"?b=late%20parcel&a=1&c=x&signature={REDACTED}")
    assert expected not in repr(request)
    assert expected not in str(request.shown_headers())


# --- values made for each attempt -----------------------------------------------------------


def generated_definition(**overrides: Any) -> ProviderDefinition:
    """Two resources; ``timed`` names what ``overrides`` puts in it, ``plain`` names nothing
    made per attempt."""
    data: dict[str, Any] = {
        "name": "generated",
        "credentials": {"api_key": {}},
        "auth": {"header": "X-Key", "value": "{credentials.api_key}"},
        "resources": {
            "plain": {"method": "DELETE", "path": "/orders/{id}", "query": {"at": "{reason}"}},
            "timed": {"method": "POST", "path": "/orders/{id}/cancel"},
        },
    }
    timed = overrides.pop("timed", {})
    data["resources"]["timed"].update(timed)
    data.update(overrides)
    return ProviderDefinition.model_validate(data)


def generated_target(make_target: MakeTarget, definition: ProviderDefinition) -> Target:
    return make_target(
        definition.name,
        definition=definition,
        credentials={"api_key": "generated-key-not-real"},
        params={},
        base_url=("https", "api.generated.example", ""),
    )


def test_the_four_generated_names_render_from_the_call(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """now.unix, now.unix_ms, now.rfc3339 (UTC, Z) and uuid come from the call's pinned values,
    in a path, a header, a query parameter and a body."""
    definition = generated_definition(
        timed={
            "path": "/orders/{id}/{now.unix}",
            "headers": {"X-Date": "{now.rfc3339}", "X-Nonce": "{uuid}"},
            "query": {"ms": "{now.unix_ms}"},
            "body": {"at": "{now.unix}", "nonce": "{uuid}", "when": "{now.rfc3339}"},
        }
    )
    target = generated_target(make_target, definition)
    at = datetime(2024, 1, 16, 12, 30, 0, 250_000, tzinfo=timezone(timedelta(hours=2)))
    request = build_request(target, "timed", make_request(), replace(call, now=at, uuid=UUID))
    seconds = unix(at)
    millis = (at - EPOCH) // timedelta(milliseconds=1)
    assert seconds == unix(NOW)  # the same moment written in another zone
    assert request.url == (f"https://api.generated.example/orders/obj-1/{seconds}?ms={millis}")
    headers = dict(request.headers)
    assert headers["X-Date"] == "2024-01-16T10:30:00Z"
    assert headers["X-Nonce"] == UUID
    assert request.body == (
        f'{{"at":{seconds},"nonce":"{UUID}","when":"2024-01-16T10:30:00Z"}}'.encode()
    )


@pytest.mark.parametrize(
    ("overrides", "per_attempt"),
    [
        pytest.param({}, set(), id="none"),
        pytest.param({"timed": {"path": "/orders/{id}/{uuid}"}}, {"timed"}, id="path"),
        pytest.param({"timed": {"headers": {"X-Ts": "{now.unix}"}}}, {"timed"}, id="header"),
        pytest.param({"timed": {"query": {"ts": "{now.unix_ms}"}}}, {"timed"}, id="query"),
        pytest.param(
            {"timed": {"body": {"meta": [{"at": "{now.rfc3339}"}]}}}, {"timed"}, id="nested-body"
        ),
        pytest.param(
            {"timed": {"query": {"at": "{reason|now.unix}"}}}, {"timed"}, id="an-alternative"
        ),
        pytest.param(
            {"auth": {"header": "X-Key", "value": "{credentials.api_key}.{now.unix}"}},
            {"plain", "timed"},
            id="header-auth",
        ),
        pytest.param(
            {"auth": {"type": "query", "name": "key", "value": "{credentials.api_key}{uuid}"}},
            {"plain", "timed"},
            id="query-auth",
        ),
        pytest.param(
            {
                "signature": {
                    "algorithm": "sha256",
                    "message": [{"part": "path"}, "{now.unix}"],
                    "header": "X-Sig",
                }
            },
            {"plain", "timed"},
            id="signature-message",
        ),
        pytest.param(
            {
                "signature": {
                    "algorithm": "sha256",
                    "message": [{"part": "method"}, {"part": "path"}, {"part": "query"}],
                    "header": "X-Sig",
                }
            },
            set(),
            id="signature-over-fixed-parts",
        ),
    ],
)
def test_per_attempt_names_exactly_the_resources_that_name_a_generated_value(
    make_target: MakeTarget, overrides: dict[str, Any], per_attempt: set[str]
) -> None:
    """A resource is rebuilt for each attempt exactly when its request names a generated value,
    directly or through the auth or the signature every resource shares."""
    target = generated_target(make_target, generated_definition(**overrides))
    assert target.per_attempt == frozenset(per_attempt)


def ticking(start: datetime, step: timedelta) -> Callable[[], datetime]:
    """A clock that moves on by ``step`` each time it is read."""
    moments: Iterator[datetime] = (start + step * n for n in range(1000))
    return lambda: next(moments)


def test_each_attempt_is_rendered_and_signed_anew(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """build_attempts reads the clock and makes a nonce for the first attempt and for each
    later one; each request carries its own time, nonce and a signature over them."""
    definition = generated_definition(
        timed={"query": {"ts": "{now.unix}"}, "headers": {"X-Nonce": "{uuid}"}},
        signature={
            "algorithm": "hmac-sha256",
            "key": "{credentials.api_key}",
            "message": [{"part": "query", "exclude": ["sign"]}, "\n", "{uuid}"],
            "query": "sign",
        },
    )
    target = generated_target(make_target, definition)
    first, again = build_attempts(
        target, "timed", make_request(), call, ticking(NOW, timedelta(seconds=1))
    )
    assert again is not None
    requests = [first, again(), again()]
    seen = []
    for number, request in enumerate(requests):
        query, nonce = query_of(request), dict(request.headers)["X-Nonce"]
        assert query["ts"] == str(unix(NOW) + number)
        assert query["sign"] == hmac_hex("generated-key-not-real", f"ts={query['ts']}\n{nonce}")
        seen.append((query["ts"], nonce, query["sign"]))
    for values in zip(*seen, strict=True):
        assert len(set(values)) == len(requests)  # times, nonces, signatures: all different


def test_a_definition_without_generated_values_is_built_once(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """Without a generated value, the clock is not read and no later attempt is rebuilt."""

    def clock() -> datetime:
        raise AssertionError("the clock is read for a request that names no time")

    target = generated_target(make_target, generated_definition())
    first, again = build_attempts(target, "plain", make_request(reason="r"), call, clock)
    assert again is None
    assert first == build_request(target, "plain", make_request(reason="r"), call)


def test_a_field_default_naming_a_generated_value_is_rendered_per_attempt(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """A field's default may name a generated value (the format accepts it at load): each
    attempt renders it, as it does the same name written in the body."""
    definition = generated_definition(
        timed={"fields": {"notes": {"default": "{uuid}"}}, "body": {"nonce": "{notes}"}}
    )
    target = generated_target(make_target, definition)
    assert target.per_attempt == frozenset({"timed"})
    first, again = build_attempts(
        target, "timed", make_request(), call, ticking(NOW, timedelta(seconds=1))
    )
    assert again is not None
    assert first.body is not None
    assert b'"nonce":"' in first.body


def test_a_connection_base_url_naming_a_generated_value_is_rendered_per_attempt(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """The base URL a connection gives may name a generated value in its path (loading accepts
    it): each attempt renders it, as it does one in the definition's own base_url."""
    target = make_target(
        "generated",
        definition=generated_definition(),
        credentials={"api_key": "generated-key-not-real"},
        params={},
        base_url=("https", "api.generated.example", "/v1/{now.unix}"),
    )
    first, again = build_attempts(
        target, "plain", make_request(reason="r"), call, ticking(NOW, timedelta(seconds=1))
    )
    assert again is not None
    assert first.url.startswith(f"https://api.generated.example/v1/{unix(NOW)}/orders/obj-1")
