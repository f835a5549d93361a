"""Every provider plays the faults a gateway must survive, chosen by the id."""

from __future__ import annotations

import time

import aiohttp
import pytest

from gateway.simulate import JOURNAL_KEY, SIMULATED, STATE_KEY

from .conftest import Sim

pytestmark = pytest.mark.parametrize("provider", SIMULATED)


async def test_slow_sleeps_then_succeeds(sim: Sim, provider: str) -> None:
    started = time.monotonic()
    answer = await sim.cancel(provider, "slow-50-a")
    assert time.monotonic() - started >= 0.05
    assert answer.status == 200
    assert sim.app[STATE_KEY].is_cancelled(provider, "slow-50-a")


async def test_flaky503_fails_twice_by_default_then_succeeds(sim: Sim, provider: str) -> None:
    statuses = [(await sim.cancel(provider, "flaky503-a")).status for _ in range(3)]
    assert statuses == [503, 503, 200]


async def test_flaky503_counts_per_id(sim: Sim, provider: str) -> None:
    assert (await sim.cancel(provider, "flaky503x1-a")).status == 503
    assert (await sim.cancel(provider, "flaky503x1-b")).status == 503
    assert (await sim.cancel(provider, "flaky503x1-a")).status == 200


async def test_flaky503_body_is_json_in_the_provider_shape(sim: Sim, provider: str) -> None:
    answer = await sim.cancel(provider, "flaky503x1")
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()


async def test_ratelimit_answers_429_once_with_retry_after(sim: Sim, provider: str) -> None:
    first = await sim.cancel(provider, "ratelimit")
    assert first.status == 429
    assert first.headers["Retry-After"] == "1"
    assert (await sim.cancel(provider, "ratelimit")).status == 200


async def test_ratelimit_seconds_come_from_the_id(sim: Sim, provider: str) -> None:
    assert (await sim.cancel(provider, "ratelimit-30-x")).headers["Retry-After"] == "30"


async def test_ratelimit_always_never_lets_through(sim: Sim, provider: str) -> None:
    for _ in range(3):
        answer = await sim.cancel(provider, "ratelimit-always")
        assert answer.status == 429
        assert answer.headers["Retry-After"] == "120"


async def test_reset_closes_the_connection_without_an_answer(sim: Sim, provider: str) -> None:
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await sim.cancel(provider, "reset")
    assert not sim.app[STATE_KEY].is_cancelled(provider, "reset")
    assert (await sim.cancel(provider, "ordinary")).status == 200  # the server lives on


async def test_html_is_a_502_error_page(sim: Sim, provider: str) -> None:
    answer = await sim.cancel(provider, "html")
    assert answer.status == 502
    assert answer.headers["Content-Type"].startswith("text/html")
    assert answer.raw.startswith(b"<!DOCTYPE html>")


async def test_nonjson_is_a_plain_text_200(sim: Sim, provider: str) -> None:
    answer = await sim.cancel(provider, "nonjson")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.raw == b"OK"


async def test_empty_is_a_200_without_body(sim: Sim, provider: str) -> None:
    answer = await sim.cancel(provider, "empty")
    assert answer.status == 200
    assert answer.raw == b""
    assert answer.headers["Content-Length"] == "0"


async def test_oversized_is_json_over_2_mib(sim: Sim, provider: str) -> None:
    answer = await sim.cancel(provider, "oversized")
    assert answer.status == 200
    assert len(answer.raw) > 2 * 1024 * 1024
    assert isinstance(answer.json(), dict)


async def test_redirect_points_elsewhere(sim: Sim, provider: str) -> None:
    answer = await sim.cancel(provider, "redirect")
    assert answer.status == 302
    assert answer.headers["Location"] == "/_redirected"
    assert not sim.app[STATE_KEY].is_cancelled(provider, "redirect")


async def test_redirect_code_comes_from_the_id(sim: Sim, provider: str) -> None:
    assert (await sim.cancel(provider, "redirect-307")).status == 307
    assert (await sim.cancel(provider, "redirect-399")).status == 302


async def test_redirect_target_shows_in_the_journal(sim: Sim, provider: str) -> None:
    assert (await sim.cancel(provider, "redirect")).status == 302
    followed = await sim.send("GET", "/_redirected")
    assert followed.json() == {"redirected": True}
    assert sim.app[JOURNAL_KEY].entries[-1].path == "/_redirected"
    assert sim.app[JOURNAL_KEY].entries[-1].provider is None


async def test_already_answers_the_second_cancel_outcome_at_once(sim: Sim, provider: str) -> None:
    first = await sim.cancel(provider, "already-a")
    second = await sim.cancel(provider, "already-a")
    assert (first.status, first.raw) == (second.status, second.raw)
