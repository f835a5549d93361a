"""Callers.authenticate and route: who is calling, and which connection they may use."""

from __future__ import annotations

import hashlib
from typing import Any, cast

import pytest

from gateway.config import CallerConfig
from gateway.errors import ErrorCode, GatewayError
from gateway.routing import Caller, Callers, route
from gateway.targets import Target

# Fake keys only.
OMS_KEY = "oms-caller-key-0123456789"
ERP_KEY = "erp-caller-key-9876543210"


def caller_config(name: str, connections: list[str], **key: Any) -> CallerConfig:
    return CallerConfig.model_validate({"name": name, "connections": connections, **key})


@pytest.fixture
def callers() -> Callers:
    return Callers(
        [
            caller_config("oms", ["*"], key=OMS_KEY),
            caller_config(
                "erp", ["shop-*"], key_sha256=hashlib.sha256(ERP_KEY.encode()).hexdigest()
            ),
        ]
    )


def caller(patterns: list[str], name: str = "c") -> Caller:
    return Caller(name, b"\0" * 32, tuple(patterns))


def targets(*names: str) -> dict[str, Target]:
    """Stand-ins: ``route`` only picks one by name, so any object will do."""
    return {name: cast(Target, object()) for name in names}


# --- authentication --------------------------------------------------------------------------


def test_bearer_key_of_a_plain_key_caller_is_accepted(callers: Callers):
    assert callers.authenticate(f"Bearer {OMS_KEY}").name == "oms"


def test_bearer_key_of_a_key_sha256_caller_is_accepted(callers: Callers):
    """A caller configured only by its key's SHA-256 is found from the plain key it presents."""
    assert callers.authenticate(f"Bearer {ERP_KEY}").name == "erp"


def test_scheme_is_case_insensitive(callers: Callers):
    assert callers.authenticate(f"bearer {OMS_KEY}").name == "oms"
    assert callers.authenticate(f"BEARER {OMS_KEY}").name == "oms"


def test_uppercase_key_sha256_works_too():
    digest = hashlib.sha256(ERP_KEY.encode()).hexdigest().upper()
    found = Callers([caller_config("erp", [], key_sha256=digest)]).authenticate(f"Bearer {ERP_KEY}")
    assert found.name == "erp"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("Bearer", id="scheme-only"),
        pytest.param("Bearer    ", id="blank-key"),
        pytest.param("Bearer wrong-key-0123456789", id="wrong-key"),
        pytest.param(f"Bearer {OMS_KEY}x", id="key-plus-one"),
        pytest.param(f"Bearer {OMS_KEY[:-1]}", id="key-minus-one"),
        pytest.param(f"Bearer {OMS_KEY.upper()}", id="key-other-case"),
        pytest.param(OMS_KEY, id="no-scheme"),
        pytest.param(f"Basic {OMS_KEY}", id="basic-scheme"),
        pytest.param(f"Token {OMS_KEY}", id="token-scheme"),
        pytest.param(f"Bearer: {OMS_KEY}", id="colon-after-scheme"),
        pytest.param(hashlib.sha256(ERP_KEY.encode()).hexdigest(), id="the-digest-itself"),
        pytest.param(f"Bearer {hashlib.sha256(ERP_KEY.encode()).hexdigest()}", id="bearer-digest"),
    ],
)
def test_anything_but_a_valid_bearer_key_is_unauthorized(callers: Callers, header: str | None):
    with pytest.raises(GatewayError) as caught:
        callers.authenticate(header)
    assert caught.value.code is ErrorCode.UNAUTHORIZED


def test_unauthorized_message_does_not_echo_the_presented_key(callers: Callers):
    presented = "CANARY-SECRET-1234567890"
    with pytest.raises(GatewayError) as caught:
        callers.authenticate(f"Bearer {presented}")
    assert presented not in caught.value.message


def test_caller_repr_shows_only_its_name(callers: Callers):
    found = callers.authenticate(f"Bearer {OMS_KEY}")
    assert repr(found) == "Caller('oms')"


def test_no_callers_means_nobody_is_authenticated():
    with pytest.raises(GatewayError) as caught:
        Callers([]).authenticate(f"Bearer {OMS_KEY}")
    assert caught.value.code is ErrorCode.UNAUTHORIZED


# --- connection patterns ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "connection", "allowed"),
    [
        (["*"], "anything", True),
        (["shop-*"], "shop-main", True),
        (["shop-*"], "shop-", True),
        (["shop-*"], "shoplazza-main", False),
        (["shop-*"], "Shop-main", False),  # case-sensitive, whatever the platform
        (["shop-*"], "my-shop-main", False),  # anchored at both ends
        (["stateset-main"], "stateset-main", True),
        (["stateset-main"], "stateset-main-2", False),
        (["stateset-?"], "stateset-1", True),
        (["stateset-?"], "stateset-10", False),
        (["lab-[ab]"], "lab-a", True),
        (["lab-[ab]"], "lab-c", False),
        (["lab-[!ab]"], "lab-c", True),
        (["shop-*", "lab-*"], "lab-7", True),
        (["shop-*", "lab-*"], "stateset-main", False),
        (["stateset-main"], "stateset-main\n", False),  # the end is the end of the name
        (["stateset-main", "shop-*"], "stateset-mainshop-1", False),  # each glob on its own
    ],
)
def test_connection_globs_allow_and_deny(patterns: list[str], connection: str, allowed: bool):
    assert caller(patterns).may_use(connection) is allowed


@pytest.mark.parametrize("connection", ["stateset-main", "*", "", "anything"])
def test_no_patterns_allow_nothing(connection: str):
    """Deny by default: a caller configured without connections may use none."""
    assert caller([]).may_use(connection) is False


def test_configured_caller_without_connections_uses_nothing():
    config = caller_config("idle", [], key=OMS_KEY)
    found = Callers([config]).authenticate(f"Bearer {OMS_KEY}")
    assert found.may_use("stateset-main") is False


# --- route -----------------------------------------------------------------------------------


def test_route_returns_the_named_target():
    known = targets("stateset-main", "shop-main")
    assert route(known, caller(["*"]), "shop-main") is known["shop-main"]


def test_route_refuses_a_connection_outside_the_callers_patterns():
    with pytest.raises(GatewayError) as caught:
        route(targets("stateset-main"), caller(["shop-*"], name="erp"), "stateset-main")
    assert caught.value.code is ErrorCode.FORBIDDEN
    assert "erp" in caught.value.message


def test_route_checks_permission_before_existence():
    """A caller limited to ``shop-*`` learns nothing about ``nope``: forbidden, not unknown."""
    with pytest.raises(GatewayError) as caught:
        route(targets("shop-main"), caller(["shop-*"]), "nope")
    assert caught.value.code is ErrorCode.FORBIDDEN


def test_route_reports_an_unknown_connection_the_caller_may_name():
    with pytest.raises(GatewayError) as caught:
        route(targets("shop-main"), caller(["*"]), "nope")
    assert caught.value.code is ErrorCode.UNKNOWN_CONNECTION


def test_route_refuses_everything_to_a_caller_without_patterns():
    with pytest.raises(GatewayError) as caught:
        route(targets("shop-main"), caller([]), "shop-main")
    assert caught.value.code is ErrorCode.FORBIDDEN
