"""Retries, deadline, breaker, retry budget and limits, on real sockets with injected faults.

Time that only the gateway's guards see (the breaker's wait) runs on a hand-driven clock; time
the network sees (a slow answer, a Retry-After) is real but short.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BASE_CONFIG, GatewayFactory, Upstream
from tests.fakes import PLAIN_POST  # a POST with no idempotency key: unsafe to repeat

pytestmark = pytest.mark.e2e

SHIPPER_OK = {"metadata": {"http_status_code": 200}}
SHIPPER_503 = {"metadata": {"http_status_code": 503, "errors": [{"message": "unavailable"}]}}
STATESET_OK = {"id": "asn_1", "status": "cancelled", "cancelled_at": "2024-01-16T10:30:00Z"}
RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
SHOPLAZZA_OK = {"procurement": {"state": 4, "updated_at": "2024-05-21T09:59:29Z"}}


class Hands:
    """The gateway's clock, moved by the test: sleeps pass at once and advance it."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


def config(extra: str, connection: str = "rxuniverse-lab") -> str:
    """BASE_CONFIG with the YAML keys of ``extra`` set on one connection (replacing its own)."""
    anchor = f"  {connection}:\n"
    head, tail = BASE_CONFIG.split(anchor)
    given = extra.strip("\n").splitlines()
    names = {line.split(":", 1)[0] for line in given}
    lines = tail.splitlines(keepends=True)
    end = next((i for i, line in enumerate(lines) if not line.startswith("    ")), len(lines))
    kept = [line for line in lines[:end] if line.strip().split(":", 1)[0] not in names]
    block = "".join(f"    {line}\n" for line in given)
    return head + anchor + block + "".join(kept + lines[end:])


async def test_patch_answered_503_twice_succeeds_on_the_third_attempt(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(
        config("retry: {backoff_base_s: 0.01}", "shipper-main"), upstream_url=upstream.url
    )
    upstream.answer(503, SHIPPER_503)
    upstream.answer(503, SHIPPER_503)
    upstream.answer(200, SHIPPER_OK)
    result = await gateway.cancel({"connection": "shipper-main", "id": "SO-1", "reason": "r"})
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert result.body["upstream"]["attempts"] == 3
    assert result.body["upstream"]["status"] == 200
    assert [r.method for r in upstream.received] == ["PATCH"] * 3
    assert len({r.body for r in upstream.received}) == 1  # the same request each time
    retries = gateway.events("upstream.retry")
    assert [(r["attempt"], r["reason"]) for r in retries] == [
        (1, "answered_503"),
        (2, "answered_503"),
    ]


async def test_stateset_post_is_repeated_with_the_same_idempotency_key(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(
        config("retry: {backoff_base_s: 0.01}", "stateset-main"), upstream_url=upstream.url
    )
    upstream.answer(502, {"error": {"type": "api_error", "message": "bad gateway"}})
    upstream.answer(200, STATESET_OK)
    result = await gateway.cancel({"connection": "stateset-main", "id": "asn_1", "reason": "r"})
    assert result.body["status"] == "cancelled"
    assert result.body["upstream"]["attempts"] == 2
    keys = [r.headers["Idempotency-Key"] for r in upstream.received]
    assert len(keys) == 2
    assert keys[0] == keys[1]


async def test_a_502_whose_cancel_was_applied_is_settled_by_the_probe(
    make_gateway: GatewayFactory, upstream: Upstream
):
    """StateSet answers 502 after applying the cancel: before repeating, the gateway reads the
    ASN (its documented probe), finds it cancelled and sends nothing more."""
    gateway = await make_gateway(
        config("retry: {backoff_base_s: 0.01}", "stateset-main"), upstream_url=upstream.url
    )
    upstream.answer(502, {"error": {"type": "api_error", "message": "bad gateway"}})
    asn = {"id": "asn_1", "asn_number": "ASN-1", "status": "cancelled", "updated_at": "x"}
    upstream.probe_answers.append((200, asn))
    result = await gateway.cancel({"connection": "stateset-main", "id": "asn_1", "reason": "r"})
    assert (result.status, result.body["status"]) == (200, "cancelled"), result.body
    assert (result.body["upstream"]["attempts"], result.body["upstream"]["probes"]) == (1, 1)
    assert result.body["provider_response"] == {"asn_number": "ASN-1"}
    assert len(upstream.received) == 1
    assert upstream.probes == ["/stateset/v1/asns/asn_1"]


async def test_a_503_a_rule_reads_is_not_probed(make_gateway: GatewayFactory, upstream: Upstream):
    """A 5xx whose body a rule classifies (StateSet's rate limit in a 503) is known: no probe."""
    gateway = await make_gateway(
        config("retry: {max_attempts: 1}", "stateset-main"), upstream_url=upstream.url
    )
    body = {"error": {"type": "rate_limit_error", "code": "rate_limit_exceeded", "message": "m"}}
    upstream.answer(503, body)
    result = await gateway.cancel({"connection": "stateset-main", "id": "asn_1", "reason": "r"})
    assert result.body["status"] == "failed"
    assert result.body["upstream"]["probes"] == 0
    assert upstream.probes == []


async def _plain_post_gateway(make_gateway: GatewayFactory, tmp_path: Path, url: str) -> Any:
    (tmp_path / "plainpost.yaml").write_text(PLAIN_POST)
    text = BASE_CONFIG.replace("callers:", "providers: [plainpost.yaml]\ncallers:", 1)
    text += (
        "  plain:\n    provider: plainpost\n    base_url: ${UPSTREAM}\n"
        "    credentials: {token: plain-token-0123}\n    retry: {backoff_base_s: 0.01}\n"
    )
    return await make_gateway(text, upstream_url=url)


async def test_post_without_idempotency_is_not_repeated_once_sent(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path
):
    gateway = await _plain_post_gateway(make_gateway, tmp_path, upstream.url)
    upstream.answer(503, {"message": "unavailable"})
    upstream.answer(200, {})
    result = await gateway.cancel({"connection": "plain", "id": "o-1", "reason": "r"})
    assert result.status == 502
    assert result.body["error"]["code"] == "provider_error"
    assert result.body["upstream"]["attempts"] == 1
    assert len(upstream.received) == 1
    assert gateway.events("upstream.retry") == []


async def test_post_without_idempotency_is_repeated_when_never_sent(
    make_gateway: GatewayFactory, tmp_path: Path
):
    """Connection refused: the request never left, so repeating it is safe for any verb."""
    gateway = await _plain_post_gateway(make_gateway, tmp_path, "http://127.0.0.1:9")
    result = await gateway.cancel({"connection": "plain", "id": "o-1", "reason": "r"})
    assert result.status == 502
    assert result.body["error"]["code"] == "provider_error"
    assert result.body["upstream"]["attempts"] == 3
    assert [e["reason"] for e in gateway.events("upstream.retry")] == ["not_sent", "not_sent"]


async def test_slow_upstream_is_504_within_the_budget(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(config("timeout_s: 0.5"), upstream_url=upstream.url)
    upstream.answer(200, RX_OK, delay_s=3)
    started = time.monotonic()
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "72544"})
    elapsed = time.monotonic() - started
    assert result.status == 504
    assert result.body["error"]["code"] == "provider_timeout"
    assert result.body["upstream"]["attempts"] == 1
    assert 0.5 <= elapsed <= 0.5 + 0.2


async def test_attempt_timeout_leaves_room_for_another_attempt(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(
        config("timeout_s: 2\nattempt_timeout_s: 0.3\nretry: {backoff_base_s: 0.01}"),
        upstream_url=upstream.url,
    )
    upstream.answer(200, RX_OK, delay_s=3)
    upstream.answer(200, RX_OK)
    started = time.monotonic()
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "72544"})
    assert result.body["status"] == "cancelled"
    assert result.body["upstream"]["attempts"] == 2
    assert result.body["upstream"]["latency_ms"] >= 300
    assert time.monotonic() - started < 1.5
    [retry] = gateway.events("upstream.retry")
    assert retry["reason"] == "no_answer"


async def test_429_beyond_the_budget_is_answered_at_once(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(upstream_url=upstream.url)
    upstream.answer(429, {"error": "Too many requests"}, headers={"Retry-After": "120"})
    started = time.monotonic()
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "72544"})
    assert time.monotonic() - started < 0.5
    assert result.status == 429
    error = result.body["error"]
    assert (error["code"], error["source"], error["retry_after_s"]) == (
        "rate_limited",
        "provider",
        120,
    )
    assert result.headers["Retry-After"] == "120"
    assert result.body["upstream"]["attempts"] == 1


async def test_breaker_opens_fails_fast_and_probes_once(
    make_gateway: GatewayFactory, upstream: Upstream
):
    clock = Hands()
    gateway = await make_gateway(
        config("retry: {max_attempts: 1}\nbreaker: {failures: 3, open_s: 5, max_open_s: 20}"),
        upstream_url=upstream.url,
        clock=clock,
    )
    cancel = {"connection": "rxuniverse-lab", "id": "72544"}
    upstream.always(503, {"error": "Service Unavailable", "details": []})
    for _ in range(3):
        assert (await gateway.cancel(cancel)).body["error"]["code"] == "provider_error"
    assert len(upstream.received) == 3

    # Open: answered at once, nothing sent, and the other connections are unaffected.
    refused = await gateway.cancel(cancel)
    assert refused.status == 503
    error = refused.body["error"]
    assert (error["code"], error["source"], error["retryable"]) == (
        "provider_unavailable",
        "gateway",
        True,
    )
    assert error["retry_after_s"] == 5
    assert refused.body["upstream"] is None
    assert len(upstream.received) == 3
    upstream.answer(200, SHIPPER_OK)
    other = await gateway.cancel({"connection": "shipper-main", "id": "SO-1", "reason": "r"})
    assert other.body["status"] == "cancelled"
    del upstream.received[:]

    # Half open: two at once, exactly one is sent (the probe); it fails, so the wait doubles.
    clock.t += 5
    upstream.answer(503, {"error": "Service Unavailable", "details": []}, delay_s=0.2)
    probe, second = await asyncio.gather(gateway.cancel(cancel), gateway.cancel(cancel))
    assert len(upstream.received) == 1
    assert {probe.status, second.status} == {502, 503}
    clock.t += 5
    assert (await gateway.cancel(cancel)).status == 503
    assert len(upstream.received) == 1

    # After the longer wait, a successful probe closes it again.
    clock.t += 5
    upstream.always(200, RX_OK)
    assert (await gateway.cancel(cancel)).body["status"] == "cancelled"
    assert (await gateway.cancel(cancel)).body["status"] == "cancelled"
    assert len(upstream.received) == 3
    reasons = [e["reason"] for e in gateway.events("upstream.refused")]
    assert reasons == ["breaker_open"] * 3


async def test_retry_budget_exhaustion_is_counted(make_gateway: GatewayFactory, upstream: Upstream):
    gateway = await make_gateway(
        config("retry: {backoff_base_s: 0.01, budget_ratio: 0, budget_min_retries: 1}"),
        upstream_url=upstream.url,
    )
    upstream.always(503, {"error": "Service Unavailable", "details": []})
    cancel = {"connection": "rxuniverse-lab", "id": "72544"}
    first = await gateway.cancel(cancel)
    second = await gateway.cancel(cancel)
    assert first.body["upstream"]["attempts"] == 2  # the one retry the budget holds
    assert second.body["upstream"]["attempts"] == 1
    assert len(upstream.received) == 3
    exhausted = gateway.events("upstream.retry_budget_exhausted")
    assert [e["attempt"] for e in exhausted] == [2, 1]
    for answer in (first, second):  # the envelope says why there were no more attempts
        assert answer.body["error"]["message"].endswith(
            "(not repeated: the connection's retry budget is spent)"
        )


@pytest.mark.parametrize(
    ("status", "reason"), [(429, "rate_limited"), (502, "answered_502"), (503, "answered_503")]
)
async def test_an_answer_with_retry_after_is_repeated_after_it(
    make_gateway: GatewayFactory, upstream: Upstream, status: int, reason: str
):
    """A 429, 502 or 503 that says when to come back is repeated then (1 s), not after a
    backoff."""
    gateway = await make_gateway(upstream_url=upstream.url)
    upstream.answer(status, {"error": "busy", "details": []}, headers={"Retry-After": "1"})
    upstream.answer(200, RX_OK)
    started = time.monotonic()
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "72544"})
    assert time.monotonic() - started >= 1.0
    assert result.body["status"] == "cancelled"
    assert result.body["upstream"]["attempts"] == 2
    [retry] = gateway.events("upstream.retry")
    assert (retry["reason"], retry["delay_ms"]) == (reason, 1000.0)


async def test_a_5xx_whose_retry_after_is_past_the_budget_says_so(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(upstream_url=upstream.url)
    upstream.answer(503, {"error": "busy", "details": []}, headers={"Retry-After": "30"})
    started = time.monotonic()
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "72544"})
    assert time.monotonic() - started < 0.5
    error = result.body["error"]
    assert (error["code"], error["retry_after_s"]) == ("provider_error", 30)
    assert result.headers["Retry-After"] == "30"
    assert error["message"].endswith(
        "(not repeated: the provider asked to wait 30 s, past the budget)"
    )
    assert result.body["upstream"]["attempts"] == 1


async def test_the_last_attempt_says_it_was_the_last(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(
        config("retry: {backoff_base_s: 0.01, max_attempts: 2}"), upstream_url=upstream.url
    )
    upstream.always(503, {"error": "Service Unavailable", "details": []})
    result = await gateway.cancel({"connection": "rxuniverse-lab", "id": "72544"})
    assert result.body["upstream"]["attempts"] == 2
    assert result.body["error"]["message"].endswith(
        "(not repeated: retry.max_attempts (2) reached)"
    )


async def test_full_bulkhead_answers_503_without_sending(
    make_gateway: GatewayFactory, upstream: Upstream
):
    # The held answer keeps the only slot past the test's bound, not the connection's timeout.
    gateway = await make_gateway(
        config("timeout_s: 30\nlimits: {concurrency: 1, max_wait_s: 0}"), upstream_url=upstream.url
    )
    release = asyncio.Event()
    upstream.answer(200, RX_OK, until=release)
    cancel = {"connection": "rxuniverse-lab", "id": "72544"}
    slow = asyncio.create_task(gateway.cancel(cancel))
    await upstream.wait_for(1)
    async with asyncio.timeout(5):
        refused = await gateway.cancel(cancel)  # answered while the only slot is still taken
    assert not slow.done()
    release.set()
    assert refused.status == 503
    assert refused.body["error"]["code"] == "provider_unavailable"
    assert refused.body["error"]["source"] == "gateway"
    assert refused.body["upstream"] is None
    assert (await slow).body["status"] == "cancelled"
    assert len(upstream.received) == 1
    [event] = gateway.events("upstream.refused")
    assert event["reason"] == "concurrency"


async def test_shoplazza_rate_limit_refuses_what_cannot_wait(
    make_gateway: GatewayFactory, upstream: Upstream
):
    """The definition's 2 requests/s per store; with no wait allowed, the third is refused."""
    gateway = await make_gateway(
        config("limits: {max_wait_s: 0}", "shoplazza-main"), upstream_url=upstream.url
    )
    upstream.always(200, SHOPLAZZA_OK)
    cancel = {"connection": "shoplazza-main", "id": "382451985837728044"}
    results = [await gateway.cancel(cancel) for _ in range(3)]
    assert [r.status for r in results] == [200, 200, 429]
    error = results[2].body["error"]
    assert (error["code"], error["source"]) == ("rate_limited", "gateway")
    assert results[2].headers["Retry-After"] == "1"
    assert results[2].body["upstream"] is None
    assert len(upstream.received) == 2


async def test_shoplazza_rate_limit_paces_within_the_budget(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(upstream_url=upstream.url)
    upstream.always(200, SHOPLAZZA_OK)
    cancel = {"connection": "shoplazza-main", "id": "382451985837728044"}
    started = time.monotonic()
    results = await asyncio.gather(*(gateway.cancel(cancel) for _ in range(4)))
    assert [r.status for r in results] == [200] * 4
    assert time.monotonic() - started >= 0.9  # two at once, then one every half second
