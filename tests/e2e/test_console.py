"""The operator console end to end: its pages served with their security headers, then driven
in a real browser (Debian's Chromium through Playwright) against a live gateway and a real
upstream: a wrong key, the list and its filters, one cancellation's timeline and retry, and a
connection whose breaker opens. Screenshots go to tests/artifacts/console (or
``CONSOLE_SCREENSHOTS``)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect
from yarl import URL

from tests.conftest import BASE_CONFIG, CALLER_KEY, Gateway, GatewayFactory, Upstream
from tests.services import unavailable

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(
    os.environ.get("CONSOLE_SCREENSHOTS", Path(__file__).parents[1] / "artifacts" / "console")
)
# Root runs Chromium without its sandbox; the network flags keep it off this closed network.
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync",
    "--disable-component-update", "--no-first-run", "--disable-quic",
]  # fmt: skip
STATESET = {"connection": "stateset-main", "reason": "Supplier delay"}
STATESET_OK = {"id": "x", "status": "cancelled", "cancelled_at": "2024-01-01T00:00:00Z"}
SHIPPER = {"connection": "shipper-main", "reason": "customer request"}
LIMITED_KEY = "limited-caller-key-0123456789"


async def test_the_console_is_served_with_a_strict_policy_and_small_assets(
    make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(upstream_url=upstream.url)
    total = 0
    for path in ("/console", "/console/console.js", "/console/console.css", "/console/favicon.svg"):
        async with gateway.session.get(gateway.url + path) as answer:
            assert answer.status == 200, path
            body = await answer.read()
            total += len(body)
            policy = answer.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy
            assert "unsafe-inline" not in policy
            assert "frame-ancestors 'none'" in policy
            assert answer.headers["X-Frame-Options"] == "DENY"
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            assert "Set-Cookie" not in answer.headers
    assert total < 100_000
    async with gateway.session.get(gateway.url + "/console") as page:
        html = await page.text()
    assert re.search(r"<script[^>]*>\s*[^<\s]", html) is None  # no inline script
    assert re.search(r"\son[a-z]+\s*=", html) is None  # no inline handler
    escape = URL(gateway.url + "/console/..%2fgateway.yaml", encoded=True)  # sent as it is
    async with gateway.session.get(escape) as outside:
        assert outside.status == 404
    async with gateway.session.get(gateway.url + "/console/other.js") as other:
        assert other.status == 404


async def test_the_console_can_be_turned_off(make_gateway: GatewayFactory, upstream: Upstream):
    config = BASE_CONFIG.replace("callers:", "server: {console: false}\ncallers:", 1)
    gateway = await make_gateway(config, upstream_url=upstream.url)
    async with gateway.session.get(gateway.url + "/console") as answer:
        assert answer.status == 404


def _chromium_installed() -> bool:
    return Path(CHROMIUM).exists()


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    if not _chromium_installed():
        unavailable("chromium", f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)")
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield launched
        await launched.close()


async def _console(browser, gateway: Gateway, key: str | None = CALLER_KEY, **context):
    """A new tab on the console; signed in with ``key`` unless it is None. The page's script
    errors are kept in ``tab.errors``."""
    tab = await (await browser.new_context(**context)).new_page()
    errors: list[str] = []
    # A script's errors; an answer the page expects (a 409 while running) is not one.
    tab.on(
        "console",
        lambda message: (
            message.type == "error"
            and not message.text.startswith("Failed to load resource")
            and errors.append(message.text)
        ),
    )
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.errors = errors
    await tab.goto(gateway.url + "/console")
    if key is not None:
        await tab.fill("#key", key)
        await tab.click("#login-form button")
        await expect(tab.locator("#cancellations")).to_be_visible()
    return tab


def _shots_folder() -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)


async def _one_cancelled(make_gateway: GatewayFactory, upstream: Upstream) -> Gateway:
    """A live gateway whose first caller cancelled one StateSet ASN, `asn-1`."""
    gateway = await make_gateway(upstream_url=upstream.url)
    upstream.answer(200, STATESET_OK)
    assert (await gateway.cancel({**STATESET, "id": "asn-1"})).status == 200
    return gateway


async def _shot(tab, name: str) -> None:
    _shots_folder()
    await tab.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_a_wrong_key_says_what_to_do_instead_of_a_blank_page(
    browser, make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await make_gateway(upstream_url=upstream.url)
    tab = await _console(browser, gateway, key=None)
    await expect(tab.locator("#login")).to_be_visible()
    for signed_in_only in ("#nav", "#search", "#forget"):
        await expect(tab.locator(signed_in_only)).to_be_hidden()
    await tab.fill("#key", "not-a-caller-key-0123456789")
    await tab.press("#key", "Enter")  # the keyboard alone
    await expect(tab.locator("#login-error")).to_contain_text("refused (401)")
    await expect(tab.locator("#cancellations")).to_be_hidden()
    assert await tab.evaluate("sessionStorage.length") == 0  # a refused key is not kept
    await _shot(tab, "wrong-key")


async def test_cancellations_appear_filter_and_open_on_their_timeline(
    browser, make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await _one_cancelled(make_gateway, upstream)
    tab = await _console(browser, gateway)
    rows = tab.locator("#list tbody tr")
    await expect(rows).to_have_count(1)
    assert await tab.evaluate("sessionStorage.length") == 1
    assert await tab.evaluate("document.cookie") == ""

    # One more while the page is open: it appears by itself (refreshed every 5 s).
    upstream.always(503, {"error": "unavailable"})
    failed = await gateway.cancel({**SHIPPER, "id": "SO-7"}, headers={"Idempotency-Key": "so-7-a"})
    assert failed.body["status"] == "failed", failed.body
    await expect(rows).to_have_count(2, timeout=12_000)
    await expect(rows.first.locator(".label")).to_have_text("failed")
    await _shot(tab, "cancellations")

    await tab.select_option("#f-status", "cancelled")
    await tab.click("#filters button[type=submit]")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("asn-1")
    assert "status=cancelled" in tab.url
    await tab.click("#filters button[type=reset]")
    await expect(rows).to_have_count(2)

    # The search box goes straight to the one cancellation of a resource id.
    await tab.fill("#search-input", "SO-7")
    await tab.press("#search-input", "Enter")
    await expect(tab.locator("#detail")).to_be_visible()
    timeline = tab.locator("#timeline li")
    await expect(timeline.first).to_have_attribute("data-type", "received")
    types = await timeline.evaluate_all("items => items.map(i => i.dataset.type)")
    assert types == ["received", "attempt", "attempt", "attempt", "settled"]
    await expect(tab.locator("#detail-facts")).to_contain_text(failed.body["request_id"])
    await expect(tab.locator("#detail-facts")).to_contain_text(failed.body["trace_id"])
    curl = tab.locator("#retry-curl")
    await expect(curl).to_contain_text("Idempotency-Key: so-7-a")
    await expect(curl).to_contain_text('"id":"SO-7"')
    assert CALLER_KEY not in await tab.content()
    await _shot(tab, "cancellation")
    assert tab.errors == []


async def test_a_connection_shows_its_breaker_open_after_failures(
    browser, make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await _one_cancelled(make_gateway, upstream)
    upstream.always(503, {"error": "unavailable"})
    for n in range(2):  # three attempts each: the breaker opens after five failures
        await gateway.cancel({**SHIPPER, "id": f"SO-{n}"})
    tab = await _console(browser, gateway)
    await tab.click("#nav-connections")
    shipper = tab.locator('.card[data-connection="shipper-main"]')
    await expect(shipper.locator("[data-breaker]")).to_have_attribute("data-breaker", "open")
    failed = shipper.locator("dt", has_text="Failed").locator("xpath=following-sibling::dd[1]")
    await expect(failed).to_have_text("2")
    await expect(failed).to_have_class("attention")
    stateset = tab.locator('.card[data-connection="stateset-main"]')
    await expect(stateset.locator("[data-breaker]")).to_have_text("breaker closed")
    assert await stateset.locator("svg rect.s-cancelled").count() == 1
    await _shot(tab, "connections")
    assert tab.errors == []


async def test_a_limited_caller_sees_only_its_own_and_the_page_fits_a_phone_in_the_dark(
    browser, make_gateway: GatewayFactory, upstream: Upstream
):
    gateway = await _one_cancelled(make_gateway, upstream)  # the oms caller's
    small = {"viewport": {"width": 360, "height": 740}, "color_scheme": "dark"}
    tab = await _console(browser, gateway, key=LIMITED_KEY, **small)
    await expect(tab.locator("#list-state")).to_contain_text("No cancellations yet")
    options = await tab.locator("#f-connection option").all_text_contents()
    assert options == ["any", "shipper-main"]
    assert await tab.evaluate("document.documentElement.scrollWidth") <= 360
    background = await tab.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(20, 21, 24)"  # the dark scheme's
    await _shot(tab, "phone-dark")
    await tab.click("#nav-connections")
    await expect(tab.locator(".card")).to_have_count(1)
    assert tab.errors == []


async def test_pages_go_older_and_back_and_nothing_is_asked_after_the_key_is_forgotten(
    browser, make_gateway: GatewayFactory, upstream: Upstream
):
    import asyncio

    gateway = await make_gateway(upstream_url=upstream.url)
    upstream.always(200, STATESET_OK)
    for n in range(30):  # a page holds 25
        await gateway.cancel({**STATESET, "id": f"asn-{n}"})
    tab = await _console(browser, gateway)
    rows = tab.locator("#list tbody tr")
    await expect(rows).to_have_count(25)
    await expect(rows.first).to_contain_text("asn-29")  # newest first
    await expect(tab.locator("#newer")).to_be_disabled()
    await tab.click("#older")
    await expect(rows).to_have_count(5)
    await expect(rows.last).to_contain_text("asn-0")
    await expect(tab.locator("#list-state")).to_contain_text("page 2")
    await expect(tab.locator("#older")).to_be_disabled()
    await tab.click("#newer")
    await expect(rows).to_have_count(25)
    await tab.click("#refresh-toggle")
    await expect(tab.locator("#refresh-toggle")).to_have_text("Resume auto-refresh")

    async def slowly(route) -> None:  # the list's answer still on its way when the key goes
        await asyncio.sleep(1)
        await route.continue_()

    await tab.click("#refresh-toggle")  # refreshing again
    await expect(tab.locator("#refresh-toggle")).to_have_text("Pause auto-refresh")
    await tab.route("**/v1/cancellations?*", slowly)
    async with tab.expect_request("**/v1/cancellations?*", timeout=8_000):
        pass  # the next refresh by the timer: its answer is held a second
    await tab.click("#forget")
    asked: list[str] = []
    await asyncio.sleep(1.5)  # the slow answer arrives after the key is gone
    tab.on("request", lambda request: asked.append(request.url))
    await expect(tab.locator("#login")).to_be_visible()
    assert await tab.evaluate("sessionStorage.length") == 0
    await asyncio.sleep(6)  # past a refresh's 5 s: none comes
    assert [url for url in asked if "/v1/" in url] == []
    assert tab.errors == []


async def test_a_cancellation_still_running_is_shown_once_it_has_its_answer(
    browser, make_gateway: GatewayFactory, upstream: Upstream
):
    import asyncio

    gateway = await make_gateway(upstream_url=upstream.url)
    release = asyncio.Event()
    upstream.answer(200, STATESET_OK, until=release)
    running = asyncio.create_task(gateway.cancel({**STATESET, "id": "asn-slow"}))
    await upstream.wait_for(1)
    tab = await _console(browser, gateway)
    # Its id is in the ledger before its answer: the list does not show it yet.
    listed = await gateway.request("GET", "/v1/cancellations")
    assert listed.body["items"] == []
    running_id = await _running_id(gateway)
    await tab.goto(f"{gateway.url}/console#/cancellations/{running_id}")
    await expect(tab.locator("#detail-state")).to_contain_text("still running")
    release.set()
    assert (await running).status == 200
    await expect(tab.locator("#detail-facts .label")).to_have_text("cancelled", timeout=8_000)
    assert tab.errors == []


async def _running_id(gateway: Gateway) -> str:
    """The id of the cancellation in flight, from its log line (the ledger lists answered ones)."""
    [received] = gateway.events("cancellation.received")[-1:]
    return received["cancellation_id"]
