"""Auth schemes: how a request carries its credentials (a header, HTTP Basic, a query
parameter), that the credential never shows, and the definitions refused at load."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from gateway.auth_schemes import BasicAuth, HeaderAuth, QueryAuth
from gateway.definition import ProviderDefinition
from gateway.models import CancelRequest
from gateway.redact import REDACTED
from gateway.targets import Target
from gateway.translate.build import Call, build_request
from gateway.translate.wire import UpstreamRequest

MakeTarget = Callable[..., Target]
MakeRequest = Callable[..., CancelRequest]

API_KEY = "auth-key-not-real-0123"
PASSWORD = "auth-password-not-real"
BASE = "https://api.auth.example/orders/obj-1/cancel"


def definition_data(auth: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """A provider cancelling ``order`` with one query parameter, authenticated as ``auth``."""
    data: dict[str, Any] = {
        "name": "authed",
        "credentials": {"api_key": {}, "password": {"required": False}},
        "resources": {
            "order": {"method": "POST", "path": "/orders/{id}/cancel", "query": {"why": "{reason}"}}
        },
    }
    if auth is not None:
        data["auth"] = auth
    data.update(extra)
    return data


def build(
    make_target: MakeTarget,
    make_request: MakeRequest,
    call: Call,
    auth: dict[str, Any] | None,
    credentials: dict[str, str] | None = None,
    **fields: Any,
) -> UpstreamRequest:
    definition = ProviderDefinition.model_validate(definition_data(auth))
    target = make_target(
        "authed",
        definition=definition,
        credentials={"api_key": API_KEY} if credentials is None else credentials,
        params={},
        base_url=("https", "api.auth.example", ""),
    )
    return build_request(target, "order", make_request(**fields), call)


def basic(username: str, password: str) -> str:
    """RFC 7617: base64 of the UTF-8 ``username:password``."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        ProviderDefinition.model_validate(data)
    return str(info.value)


# --- header (the default) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param({"header": "X-Api-Key", "value": "Key {credentials.api_key}"}, id="no-type"),
        pytest.param(
            {"type": "header", "header": "X-Api-Key", "value": "Key {credentials.api_key}"},
            id="type-header",
        ),
    ],
)
def test_header_auth_is_the_default_and_unchanged(
    make_target: MakeTarget, make_request: MakeRequest, call: Call, auth: dict[str, Any]
) -> None:
    """Without ``type``, auth is a header as before; ``type: header`` says the same."""
    assert isinstance(ProviderDefinition.model_validate(definition_data(auth)).auth, HeaderAuth)
    request = build(make_target, make_request, call, auth, reason="late")
    assert dict(request.headers)["X-Api-Key"] == f"Key {API_KEY}"
    assert request.shown_headers()["X-Api-Key"] == REDACTED
    assert request.url == f"{BASE}?why=late"
    assert API_KEY not in repr(request)


def test_header_auth_with_an_empty_optional_credential_sends_no_header(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """An optional credential left empty sends no header rather than an empty one."""
    auth = {"header": "X-Password", "value": "{credentials.password}"}
    request = build(
        make_target, make_request, call, auth, credentials={"api_key": API_KEY, "password": ""}
    )
    assert "x-password" not in {name.lower() for name, _ in request.headers}


# --- basic -------------------------------------------------------------------------------------


def test_basic_with_the_key_as_username_and_no_password(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """The usual API-key form: the key is the username, the password empty (``key:``)."""
    auth = {"type": "basic", "username": "{credentials.api_key}"}
    assert isinstance(ProviderDefinition.model_validate(definition_data(auth)).auth, BasicAuth)
    request = build(make_target, make_request, call, auth)
    assert dict(request.headers)["Authorization"] == basic(API_KEY, "")
    assert base64.b64decode(dict(request.headers)["Authorization"][6:]) == f"{API_KEY}:".encode()


def test_basic_with_username_and_password(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """Username and password, each a template, joined by one colon; masked when shown."""
    auth = {
        "type": "basic",
        "username": "acct-{connection.name}",
        "password": "{credentials.password}",
    }
    credentials = {"api_key": API_KEY, "password": PASSWORD}
    request = build(make_target, make_request, call, auth, credentials=credentials)
    value = basic("acct-authed-main", PASSWORD)
    assert dict(request.headers)["Authorization"] == value
    assert request.shown_headers()["Authorization"] == REDACTED
    assert value not in repr(request)
    assert PASSWORD not in repr(request)


def test_basic_with_a_non_ascii_password_is_utf8(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """A password outside ASCII is encoded as UTF-8 before base64, as RFC 7617 says."""
    auth = {
        "type": "basic",
        "username": "{credentials.api_key}",
        "password": "{credentials.password}",
    }
    password = "pässwörd-not-real"
    request = build(
        make_target,
        make_request,
        call,
        auth,
        credentials={"api_key": API_KEY, "password": password},
    )
    encoded = dict(request.headers)["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(encoded) == f"{API_KEY}:{password}".encode()


def test_basic_with_an_empty_optional_credential_sends_no_header(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """A password from an optional credential left empty: no Authorization header at all,
    never one with half of the pair."""
    auth = {
        "type": "basic",
        "username": "{credentials.api_key}",
        "password": "{credentials.password}",
    }
    request = build(
        make_target, make_request, call, auth, credentials={"api_key": API_KEY, "password": ""}
    )
    assert "authorization" not in {name.lower() for name, _ in request.headers}


# --- query -------------------------------------------------------------------------------------


def test_query_auth_puts_the_credential_in_the_url_and_masks_it(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """The credential is a query parameter after the resource's own, percent-encoded as one
    value; shown_url and the repr mask it; no header carries it."""
    auth = {"type": "query", "name": "api_key", "value": "{credentials.api_key}"}
    assert isinstance(ProviderDefinition.model_validate(definition_data(auth)).auth, QueryAuth)
    key = "key/with+odd=chars&more-not-real"
    request = build(
        make_target, make_request, call, auth, credentials={"api_key": key}, reason="late"
    )
    assert request.url == f"{BASE}?why=late&api_key=key%2Fwith%2Bodd%3Dchars%26more-not-real"
    assert request.shown_url == f"{BASE}?why=late&api_key={REDACTED}"
    assert all(key not in value for _, value in request.headers)
    for shown in (repr(request), str(request), request.shown_url):
        assert key not in shown
        assert "key%2Fwith" not in shown


def test_query_auth_without_a_resource_query_starts_the_query(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """With no other parameter (the reason left out), the credential starts the query."""
    auth = {"type": "query", "name": "key", "value": "{credentials.api_key}"}
    request = build(make_target, make_request, call, auth)
    assert request.url == f"{BASE}?key={API_KEY}"
    assert urlsplit(request.shown_url).query == f"key={REDACTED}"


def test_query_auth_with_an_empty_optional_credential_sends_no_parameter(
    make_target: MakeTarget, make_request: MakeRequest, call: Call
) -> None:
    """An optional credential left empty adds no parameter (nor an empty one)."""
    auth = {"type": "query", "name": "pw", "value": "{credentials.password}"}
    request = build(
        make_target,
        make_request,
        call,
        auth,
        credentials={"api_key": API_KEY, "password": ""},
        reason="late",
    )
    assert request.url == f"{BASE}?why=late"


# --- refused at load -----------------------------------------------------------------------


def test_an_unknown_auth_type_is_refused() -> None:
    """A type that is not a scheme is refused, naming the schemes there are."""
    problem = refused(definition_data({"type": "oauth", "header": "A", "value": "b"}))
    assert "auth" in problem
    assert "basic" in problem
    assert "query" in problem


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param({"type": "basic"}, id="basic-without-username"),
        pytest.param(
            {"type": "basic", "username": "u", "header": "Authorization"}, id="basic-with-header"
        ),
        pytest.param({"type": "query", "value": "{credentials.api_key}"}, id="query-no-name"),
        pytest.param({"type": "query", "name": "api_key"}, id="query-without-value"),
        pytest.param(
            {"type": "query", "name": "api key", "value": "{credentials.api_key}"},
            id="query-name-not-a-token",
        ),
        pytest.param({"type": "header", "header": "X-Key"}, id="header-without-value"),
    ],
)
def test_incomplete_or_mixed_auth_is_refused(auth: dict[str, Any]) -> None:
    """Each scheme takes exactly its own keys, and all it needs."""
    assert "auth" in refused(definition_data(auth))


@pytest.mark.parametrize("auth", ["bearer", ["header"], 5], ids=["string", "list", "number"])
def test_auth_that_is_not_a_mapping_is_a_problem_not_a_crash(auth: Any) -> None:
    """``auth: bearer`` is a mistake to report at its key, never a traceback."""
    data = definition_data(None)
    data["auth"] = auth
    assert "auth" in refused(data)


@pytest.mark.parametrize(
    ("auth", "where"),
    [
        ({"type": "basic", "username": "{credentials.nope}"}, "auth.username"),
        ({"type": "basic", "username": "u", "password": "{params.nope}"}, "auth.password"),
        ({"type": "query", "name": "k", "value": "{credentials.nope}"}, "auth.value"),
    ],
)
def test_auth_templates_name_only_what_is_declared(auth: dict[str, Any], where: str) -> None:
    """Every template of every scheme is checked against the declared names at load."""
    problem = refused(definition_data(auth))
    assert where in problem
    assert "references nothing known" in problem


SIGNATURE = {"algorithm": "hmac-sha256", "key": "{credentials.api_key}", "message": ["{id}"]}


@pytest.mark.parametrize(
    ("signature", "problem"),
    [
        pytest.param(
            {"algorithm": "hmac-sha256", "message": ["{id}"], "header": "X-Sig"},
            "needs a key",
            id="hmac-without-key",
        ),
        pytest.param(
            {**SIGNATURE, "algorithm": "sha256", "header": "X-Sig"},
            "plain hash takes none",
            id="plain-hash-with-key",
        ),
        pytest.param(
            {**SIGNATURE, "header": "X-Sig", "query": "sig"}, "exactly one of", id="both-places"
        ),
        pytest.param(SIGNATURE, "exactly one of", id="no-place"),
        pytest.param({**SIGNATURE, "algorithm": "md5", "header": "X-Sig"}, "algorithm", id="md5"),
        pytest.param({**SIGNATURE, "encoding": "base32", "header": "X-Sig"}, "encoding", id="b32"),
        pytest.param({**SIGNATURE, "message": [], "header": "X-Sig"}, "message", id="empty"),
        pytest.param(
            {**SIGNATURE, "message": [{"part": "headers"}], "header": "X-Sig"},
            "part",
            id="unknown-part",
        ),
        pytest.param(
            {**SIGNATURE, "message": [{"part": "query", "order": "name"}], "header": "X-Sig"},
            "Extra inputs",
            id="unknown-part-key",
        ),
        pytest.param(
            {**SIGNATURE, "message": [None], "header": "X-Sig"}, "string template", id="null-part"
        ),
        pytest.param(
            {**SIGNATURE, "message": ["{now.x}"], "header": "X-Sig"},
            "{now.x} references nothing known",
            id="unknown-generated-name",
        ),
        pytest.param(
            {**SIGNATURE, "key": "{credentials.nope}", "header": "X-Sig"},
            "references nothing known",
            id="unknown-credential-key",
        ),
        pytest.param(
            {**SIGNATURE, "header": "X Sig"}, "should match pattern", id="header-not-a-token"
        ),
        pytest.param(
            {**SIGNATURE, "key": "written-in-the-file", "header": "X-Sig"},
            "must name a credential",
            id="literal-key",
        ),
        pytest.param(
            {**SIGNATURE, "key": "{credentials.api_key}{id}", "header": "X-Sig"},
            "nothing a request gives",
            id="key-with-a-callers-value",
        ),
    ],
)
def test_a_bad_signature_is_refused(signature: dict[str, Any], problem: str) -> None:
    """A signature that cannot be computed, or sent, as written is refused with why."""
    assert problem in refused(definition_data(None, signature=signature))


def test_credentials_may_be_signed_but_not_sent_in_path_or_body() -> None:
    """A credential in a signature's key and message is allowed (it is hashed, never sent);
    in a path, a body, a query or a header it is still refused."""
    signature = {**SIGNATURE, "message": ["{credentials.api_key}", "{id}"], "header": "X-Sig"}
    data = definition_data(None, signature=signature)
    assert ProviderDefinition.model_validate(data).template_problems() == []
    for key, value in [
        ("path", "/orders/{id}/{credentials.api_key}"),
        ("body", {"key": "{credentials.api_key}"}),
        ("query", {"key": "{credentials.api_key}"}),
        ("headers", {"X-Key": "{credentials.api_key}"}),
    ]:
        changed = copy.deepcopy(data)
        changed["resources"]["order"][key] = value
        assert "credentials may only be used in auth" in refused(changed), key


@pytest.mark.parametrize("where", ["path", "query", "body", "auth", "signature"])
def test_an_unknown_now_name_is_refused_everywhere(where: str) -> None:
    """Only the generated names there are may be used: ``{now.x}`` is refused, with the
    closest name suggested."""
    data = definition_data({"header": "X-Key", "value": "{credentials.api_key}"})
    order = data["resources"]["order"]
    if where == "path":
        order["path"] = "/orders/{id}/{now.unixtime}"
    elif where in ("query", "body"):
        order[where] = {"ts": "{now.unixtime}"}
    elif where == "auth":
        data["auth"] = {"header": "X-Key", "value": "{credentials.api_key}{now.unixtime}"}
    else:
        data["signature"] = {**SIGNATURE, "message": ["{now.unixtime}"], "header": "X-Sig"}
    problem = refused(data)
    assert "{now.unixtime} references nothing known" in problem
    assert "now.unix" in problem.partition("references nothing known")[2]
