"""Refresh-token grants: the form Login with Amazon documents, the rotated token kept in the
store and spent next, the lease that lets one process at a time spend it, and what happens when
the store fails; no socket, a fake clock, the memory store."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from gateway.errors import ErrorCode
from gateway.redact import Redactor
from gateway.store import RefreshRow, StoreUnavailable
from gateway.store.memory import MemoryStore
from gateway.tokens import REFRESH_LEASE_S, TokenFailure, Tokens
from gateway.translate.wire import UpstreamRequest
from tests.fakes import FakeClock, FakeTransport, load_runtime, response

# Shaped like Amazon's Login with Amazon token exchange for the Selling Partner API.
DEFINITION = """
name: lwa-market
credentials:
  client_id: {}
  client_secret: {}
  refresh_token: {}
auth:
  type: oauth2_refresh_token
  token_url: https://api.amazon.com/auth/o2/token
  client_id: "{credentials.client_id}"
  client_secret: "{credentials.client_secret}"
  refresh_token: "{credentials.refresh_token}"
  header: x-amz-access-token
  value: "{token}"
resources:
  order:
    method: PUT
    path: /fba/outbound/2020-07-01/fulfillmentOrders/{id}/cancel
"""
CONFIG = """
providers: [lwa-market.yaml]
callers:
  - {name: oms, key: "${OMS_API_KEY}", connections: ["*"]}
connections:
  market:
    provider: lwa-market
    base_url: https://sellingpartnerapi-na.amazon.com
    credentials:
      client_id: amzn1.application-oa2-client.not-real
      client_secret: client-secret-not-real
      refresh_token: "${REFRESH}"
"""
CANCEL = UpstreamRequest("PUT", "https://sellingpartnerapi-na.amazon.com/x", ())
FIRST = "Atzr|refresh-first-not-real"
SEED = hashlib.sha256(FIRST.encode()).hexdigest()


def setup(tmp_path: Path, store: MemoryStore | None = None, refresh: str = FIRST):
    tmp_path.mkdir(parents=True, exist_ok=True)
    runtime = load_runtime(
        tmp_path, CONFIG, files={"lwa-market.yaml": DEFINITION}, env={"REFRESH": refresh}
    )
    transport, clock = FakeTransport(), FakeClock()
    redactor = Redactor(runtime.secrets)
    tokens = Tokens(transport, clock, redactor, store or MemoryStore())
    return tokens, transport, clock, runtime.targets["market"], redactor


def issued(token: str, refresh: str | None = None) -> object:
    body = {"access_token": token, "token_type": "bearer", "expires_in": 3600}
    return response(200, body | ({"refresh_token": refresh} if refresh else {}))


def form(sent: object) -> dict[str, str]:
    return dict(parse_qsl(sent.body.decode()))  # type: ignore[attr-defined]


async def test_the_refresh_grant_is_the_form_login_with_amazon_documents(tmp_path: Path):
    tokens, transport, clock, target, _ = setup(tmp_path)
    transport.answer(issued("Atza|access-one-not-real"))
    request, _ = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    [sent] = transport.sent
    assert (sent.method, sent.url) == ("POST", "https://api.amazon.com/auth/o2/token")
    assert form(sent) == {
        "grant_type": "refresh_token",
        "refresh_token": FIRST,
        "client_id": "amzn1.application-oa2-client.not-real",
        "client_secret": "client-secret-not-real",
    }
    assert dict(request.headers)["x-amz-access-token"] == "Atza|access-one-not-real"
    assert request.shown_headers()["x-amz-access-token"] == "[REDACTED]"


async def test_a_rotated_refresh_token_is_stored_spent_next_and_redacted(tmp_path: Path):
    store = MemoryStore()
    tokens, transport, clock, target, redactor = setup(tmp_path, store)
    transport.answer(
        issued("access-one-not-real", "refresh-two-not-real"),
        issued("access-two-not-real", "refresh-three-not-real"),
    )
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    tokens.forget(target, "access-one-not-real")
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert [form(s)["refresh_token"] for s in transport.sent] == [FIRST, "refresh-two-not-real"]
    lease = await store.lease_refresh("market", "someone", clock.now().timestamp(), 1)
    assert lease.row == RefreshRow("refresh-three-not-real", SEED)
    assert redactor.text("refresh-three-not-real") == "[REDACTED]"


async def test_another_process_continues_the_chain_through_the_store(tmp_path: Path):
    store = MemoryStore()
    one, transport_one, clock, target, _ = setup(tmp_path, store)
    transport_one.answer(issued("access-one-not-real", "refresh-two-not-real"))
    await one.authorize(target, CANCEL, clock.monotonic() + 5)
    two, transport_two, clock, target, _ = setup(tmp_path / "two", store)
    transport_two.answer(issued("access-two-not-real", "refresh-three-not-real"))
    await two.authorize(target, CANCEL, clock.monotonic() + 5)
    assert form(transport_two.sent[0])["refresh_token"] == "refresh-two-not-real"


async def test_a_new_configured_refresh_token_starts_a_new_chain(tmp_path: Path):
    store = MemoryStore()
    one, transport_one, clock, target, _ = setup(tmp_path, store)
    transport_one.answer(issued("access-one-not-real", "refresh-two-not-real"))
    await one.authorize(target, CANCEL, clock.monotonic() + 5)
    two, transport_two, clock, target, _ = setup(tmp_path / "b", store, "Atzr|new-grant-not-real")
    transport_two.answer(issued("access-two-not-real"))
    await two.authorize(target, CANCEL, clock.monotonic() + 5)
    assert form(transport_two.sent[0])["refresh_token"] == "Atzr|new-grant-not-real"


async def test_a_process_waits_while_another_holds_the_lease(tmp_path: Path):
    """Another process is spending the token: this one asks again every 50 ms, and spends the
    token that process stored once it lets go."""
    store = MemoryStore()
    tokens, transport, clock, target, _ = setup(tmp_path, store)
    now = clock.now().timestamp()
    assert (await store.lease_refresh("market", "other", now, REFRESH_LEASE_S)).held
    transport.answer(issued("access-two-not-real"))

    original = clock.sleep

    async def sleep(seconds: float) -> None:
        if len(clock.sleeps) == 3:  # the other process finishes while this one waits
            await store.save_refresh("market", "other", RefreshRow("refresh-two-not-real", SEED))
        await original(seconds)

    clock.sleep = sleep  # type: ignore[method-assign]
    await tokens.authorize(target, CANCEL, clock.monotonic() + 30)
    assert clock.sleeps == [0.05] * 4
    assert form(transport.sent[0])["refresh_token"] == "refresh-two-not-real"


async def test_a_lease_held_too_long_is_a_timeout_and_nothing_is_spent(tmp_path: Path):
    store = MemoryStore()
    tokens, transport, clock, target, _ = setup(tmp_path, store)
    # A holder whose lease lasts beyond the wait (its clock is ahead, or it is stuck).
    await store.lease_refresh("market", "other", clock.now().timestamp(), 10 * REFRESH_LEASE_S)
    with pytest.raises(TokenFailure) as failure:
        await tokens.authorize(target, CANCEL, clock.monotonic() + 60)
    assert failure.value.code is ErrorCode.PROVIDER_TIMEOUT
    assert transport.sent == []


class FlakyStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail_lease = False
        self.fail_save = False

    async def lease_refresh(self, name: str, holder: str, now: float, lease_s: float):  # type: ignore[no-untyped-def]
        if self.fail_lease:
            raise StoreUnavailable("down")
        return await super().lease_refresh(name, holder, now, lease_s)

    async def save_refresh(self, name: str, holder: str, row: RefreshRow | None) -> bool:
        if self.fail_save:
            raise StoreUnavailable("down")
        return await super().save_refresh(name, holder, row)


async def test_without_the_store_no_refresh_token_is_spent(tmp_path: Path):
    store = FlakyStore()
    store.fail_lease = True
    tokens, transport, clock, target, _ = setup(tmp_path, store)
    with pytest.raises(TokenFailure) as failure:
        await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert (failure.value.code, failure.value.sent) == (ErrorCode.STORE_UNAVAILABLE, False)
    assert transport.sent == []


async def test_a_rotated_token_the_store_missed_is_kept_spent_next_and_stored_then(
    tmp_path: Path,
):
    store = FlakyStore()
    tokens, transport, clock, target, _ = setup(tmp_path, store)
    transport.answer(
        issued("access-one-not-real", "refresh-two-not-real"),
        issued("access-two-not-real", "refresh-three-not-real"),
    )
    store.fail_save = True
    request, _ = await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert dict(request.headers)["x-amz-access-token"] == "access-one-not-real"  # still usable
    store.fail_save = False
    # The lease of the failed save is still held by that attempt: it runs out first.
    clock.advance(REFRESH_LEASE_S)
    tokens.forget(target, "access-one-not-real")
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert form(transport.sent[1])["refresh_token"] == "refresh-two-not-real"
    lease = await store.lease_refresh("market", "someone", clock.now().timestamp(), 1)
    assert lease.row == RefreshRow("refresh-three-not-real", SEED)


@pytest.mark.parametrize(
    "answer",
    [
        "timeout",
        response(503, {"error": "down"}),
    ],
)
async def test_a_refresh_that_may_have_been_spent_is_not_repeated_now(
    tmp_path: Path, answer: object
):
    """A refresh grant that timed out after it was sent, or failed at the provider, may have
    rotated the token: repeating it now could spend one token twice, so the failure is final."""
    from gateway.upstream import UpstreamFailure

    tokens, transport, clock, target, _ = setup(tmp_path)
    if answer == "timeout":

        def timeout(request: object, timeout_s: float, connect_s: float) -> object:
            raise UpstreamFailure(ErrorCode.PROVIDER_TIMEOUT, "no answer in time", sent=True)

        transport.answer(timeout)
    else:
        transport.answer(answer)
    with pytest.raises(TokenFailure) as failure:
        await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert failure.value.final


async def test_a_refused_refresh_is_not_final_beyond_its_own_refusal(tmp_path: Path):
    """A refusal before sending (connection refused) spent nothing: it may be repeated."""
    from gateway.upstream import UpstreamFailure

    tokens, transport, clock, target, _ = setup(tmp_path)

    def refused(request: object, timeout_s: float, connect_s: float) -> object:
        raise UpstreamFailure(ErrorCode.PROVIDER_ERROR, "connection refused", sent=False)

    transport.answer(refused)
    with pytest.raises(TokenFailure) as failure:
        await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    assert not failure.value.final


async def test_a_save_the_store_missed_is_tried_again_while_the_lease_holds(tmp_path: Path):
    """No other process may take the lease and spend the old token while the store is down:
    the lease stays this process's, and the new token is stored as soon as the store answers."""
    store = FlakyStore()
    tokens, transport, clock, target, _ = setup(tmp_path, store)
    transport.answer(issued("access-one-not-real", "refresh-two-not-real"))
    store.fail_save = True
    await tokens.authorize(target, CANCEL, clock.monotonic() + 5)
    other = await store.lease_refresh("market", "other", clock.now().timestamp(), 20)
    assert not other.held  # still this process's
    store.fail_save = False
    for _ in range(5):  # the retry's sleep (a fake clock's) and its save
        await asyncio.sleep(0)
    lease = await store.lease_refresh("market", "other", clock.now().timestamp(), 20)
    assert lease.held
    assert lease.row == RefreshRow("refresh-two-not-real", SEED)
