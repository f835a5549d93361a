"""The catalog of real providers, each end to end: the gateway in front of the simulator made
from the provider's own documented examples (tokens issued and required, probes answered), a
request per documented outcome (success, already cancelled, not found, not cancellable, an
auth failure), token expiry and renewal where the provider fetches tokens, line items where
it takes them, and pending → final where it answers pending."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer

from gateway.auth_schemes import TokenAuth
from gateway.definition import ProviderDefinition
from gateway.examples import AnswerExample
from gateway.providers import builtin_files
from gateway.simulate import create_simulator_app
from gateway.simulate.examples import slug
from gateway.simulate.signatures import Account
from tests.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.e2e

# Each catalog provider's connection to the simulator: its params (made-up values) and
# credentials (made up, long enough to be credentials).
CONNECTIONS: dict[str, dict[str, Any]] = {
    "shopify": {"params": {"shop": "demo-shop"}},
    "walmart": {},
    "amazon_mcf": {"params": {"region": "na", "auth_host": "${SIM}/amazon_mcf"}},
    "shopee": {"params": {"host": "${SIM}/shopee", "partner_id": 1, "shop_id": 2}},
    "magento": {"params": {"username": "admin"}},
    "bigcommerce": {"params": {"store_hash": "abc123"}},
    "woocommerce": {},
    "shipengine": {},
}
# The simulated accounts check the signatures of the providers that sign (their params as the
# gateway's connections send them, the simulator's own URL where a param names a host).
ACCOUNTS = {
    "shopee": Account(
        credentials={"partner_key": "partner_key-not-real-0123"},
        params={"partner_id": 1, "shop_id": 2},
    )
}
# The outcomes each provider shows through the simulator, when it documents them.
OUTCOMES = [
    ("cancelled", None),
    ("already_cancelled", None),
    ("rejected", "not_found"),
    ("rejected", "not_cancellable"),
    ("failed", "provider_auth_failed"),
]


@functools.cache
def definition(name: str) -> ProviderDefinition:
    [file] = [f for f in builtin_files() if f.name == f"{name}.yaml"]
    return ProviderDefinition.model_validate(yaml.safe_load(file.read_text("utf-8")))


def credentials(name: str) -> dict[str, str]:
    return {c: f"{c}-not-real-0123" for c in definition(name).credentials}


def config() -> str:
    lines = ["callers:", "  - {name: oms, key: '${OMS_API_KEY}', connections: ['*']}"]
    lines.append("connections:")
    for name, settings in CONNECTIONS.items():
        lines += [
            f"  {name}:",
            f"    provider: {name}",
            f"    base_url: ${{SIM}}/{name}",
            f"    credentials: {credentials(name)}",
            f"    params: {settings.get('params', {})}",
            "    timeout_s: 3",
            "    async: {first_delay_s: 0.05, max_delay_s: 0.1}",
        ]
    # Shopee with a partner key the simulated account does not have: its signatures are wrong.
    wrong = {**credentials("shopee"), "partner_key": "another-partner-key-0123"}
    lines += [
        "  shopee-wrong-key:",
        "    provider: shopee",
        "    base_url: ${SIM}/shopee",
        f"    credentials: {wrong}",
        f"    params: {CONNECTIONS['shopee']['params']}",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
async def gateway(
    make_gateway: GatewayFactory, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> Gateway:
    sim = await aiohttp_server(create_simulator_app(accounts=ACCOUNTS))
    url = str(sim.make_url("")).rstrip("/")
    return await make_gateway(config(), env={"SIM": url})


def cases() -> list[Any]:
    """For each provider and each outcome it documents: the first answer example giving it."""
    found = []
    for name in CONNECTIONS:
        provider = definition(name)
        # The cancel's answers, and a read's that finds the object cancelled already.
        answers = [
            a
            for a in provider.examples.answers
            if not a.probe and (not a.read or a.expect.status == "already_cancelled")
        ]
        for status, code in OUTCOMES:
            example = next(
                (a for a in answers if (a.expect.status, a.expect.code) == (status, code)), None
            )
            if example is not None:
                found.append(pytest.param(name, example, id=f"{name}-{code or status}"))
    return found


def request_for(name: str, resource: str | None, object_id: str) -> dict[str, Any]:
    """The canonical request for ``name``'s resource: lines where it takes (or needs) them."""
    provider = definition(name)
    chosen = resource or next(iter(provider.resources))
    body: dict[str, Any] = {"connection": name, "id": object_id, "reason": "customer request"}
    if len(provider.resources) > 1:
        body["resource"] = chosen
    if provider.resources[chosen].items is not None:
        body["items"] = [{"id": "1", "quantity": 1}]
    return body


async def settled(gateway: Gateway, answered: Any) -> Any:
    if answered.status != 202:
        return answered
    async with asyncio.timeout(5):
        while True:
            found = await gateway.request("GET", answered.headers["Location"])
            if found.status != 202:
                return found
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(("name", "example"), cases())
async def test_each_documented_outcome_through_the_gateway(
    gateway: Gateway, name: str, example: AnswerExample
):
    body = request_for(name, example.resource, slug(example.name))
    result = await settled(gateway, await gateway.cancel(body))
    assert result.body["status"] == example.expect.status, result.body
    assert (result.body["error"] or {}).get("code") == example.expect.code, result.body
    assert result.body["provider"] == name


def test_every_catalog_provider_shows_success_not_found_and_an_auth_failure() -> None:
    shown = {(c.values[0], c.id.split("-", 1)[1]) for c in cases()}
    for name in CONNECTIONS:
        for outcome in ("cancelled", "not_found", "provider_auth_failed"):
            assert (name, outcome) in shown, (name, outcome)
    assert ("amazon_mcf", "already_cancelled") in shown  # found by its read, nothing sent


TOKENS = [n for n in CONNECTIONS if isinstance(definition(n).auth, TokenAuth)]


@pytest.mark.parametrize("name", TOKENS)
async def test_an_expired_token_is_renewed_and_the_cancel_goes_through(gateway: Gateway, name: str):
    first = await settled(gateway, await gateway.cancel(request_for(name, None, "first-1")))
    assert first.body["status"] == "cancelled", first.body
    renewed = await settled(gateway, await gateway.cancel(request_for(name, None, "token-expired")))
    assert renewed.body["status"] == "cancelled", renewed.body
    retries = [e for e in gateway.events("upstream.retry") if e["reason"] == "token_refused"]
    assert len(retries) == 1


PENDING = [
    pytest.param(name, example, id=name)
    for name in CONNECTIONS
    for example in definition(name).examples.answers
    if example.expect.status == "pending" and not example.probe
][:1]  # one pending answer per provider that documents one


@pytest.mark.parametrize(("name", "example"), PENDING)
async def test_a_pending_answer_is_settled_by_the_simulated_probe(
    gateway: Gateway, name: str, example: AnswerExample
):
    answered = await gateway.cancel(request_for(name, example.resource, slug(example.name)))
    assert (answered.status, answered.body["status"]) == (202, "pending"), answered.body
    final = await settled(gateway, answered)
    assert final.body["status"] == "cancelled", final.body
    assert final.body["upstream"]["probes"] >= 1


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in CONNECTIONS
        if any(definition(n).resources[r].items for r in definition(n).resources)
    ],
)
async def test_line_items_are_sent_where_the_provider_takes_them(gateway: Gateway, name: str):
    body = request_for(name, None, "lines-1")
    body["items"] = [{"id": "1", "quantity": 1}, {"id": "2", "quantity": 2}]
    result = await settled(gateway, await gateway.cancel(body))
    assert result.body["status"] == "cancelled", result.body
    assert [i["id"] for i in result.body["items"]] == ["1", "2"]


def test_the_catalog_directory_is_complete(tmp_path: Path) -> None:
    """Every built-in other than the four seed providers is exercised here."""
    seeds = {"stateset", "shipper", "shoplazza", "rxuniverse"}
    builtins = {f.name.removesuffix(".yaml") for f in builtin_files()}
    assert builtins - seeds == set(CONNECTIONS)
    signing = {n for n in CONNECTIONS if definition(n).signature is not None}
    assert signing == set(ACCOUNTS)  # every provider that signs has its signatures checked


async def test_a_signature_made_with_the_wrong_key_is_refused_by_the_simulated_provider(
    gateway: Gateway,
):
    """The simulated Shopee computes every signature again with its own partner key: the
    right one passes (the cancel, and the token request before it), a wrong one is refused."""
    right = await gateway.cancel(request_for("shopee", None, "signed-1"))
    assert right.body["status"] == "cancelled", right.body
    wrong = await gateway.cancel(
        {**request_for("shopee", None, "signed-2"), "connection": "shopee-wrong-key"}
    )
    assert wrong.body["status"] == "failed", wrong.body
    assert wrong.body["error"]["code"] == "provider_auth_failed", wrong.body


async def test_each_catalog_connection_lists_its_resources_and_params(gateway: Gateway):
    listed = await gateway.request("GET", "/v1/connections")
    found = {c["name"]: c for c in listed.body["connections"]}
    for name in CONNECTIONS:
        provider = definition(name)
        assert found[name]["provider"] == name
        assert found[name]["resources"] == list(provider.resources)
        assert set(found[name]["params"]) == set(provider.params)
    assert "not-real" not in listed.raw.decode()  # no credential, whatever its name
