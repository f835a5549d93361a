"""Dry runs: `POST /v1/cancellations?dry_run=true` on a real gateway and `cancel-gateway preview`
as a real process show the upstream request that would be sent, after the same checks, and
send and record nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import BASE_CONFIG, CALLER_KEY, CANARIES, Gateway, Result, Upstream

pytestmark = pytest.mark.e2e

LIMITED_KEY = "limited-caller-key-0123456789"
RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
STATESET_OK = {"id": "asn_1", "status": "cancelled", "cancelled_at": "2024-01-16T10:30:00Z"}
STATESET = {"connection": "stateset-main", "id": "asn/1 x", "reason": "Supplier delay"}
RX = {"connection": "rxuniverse-lab", "id": "../72544", "reason": "customer request"}
MASKED = "[REDACTED]"


async def preview(
    gateway: Gateway, body: Any, query: str = "dry_run=true", **kwargs: Any
) -> Result:
    return await gateway.request("POST", f"/v1/cancellations?{query}", json=body, **kwargs)


def assert_no_canary(text: str) -> None:
    for name, secret in CANARIES.items():
        assert secret not in text, name


async def test_preview_shows_the_request_and_sends_nothing(gateway: Gateway, upstream: Upstream):
    """dry_run=true answers 200 with method, URL (id as one encoded segment), headers with the
    credential masked and body; the upstream receives nothing."""
    result = await preview(gateway, STATESET)
    assert result.status == 200, result.body
    assert upstream.received == []
    body = result.body
    assert body["dry_run"] is True
    assert (body["connection"], body["provider"], body["resource"], body["resource_id"]) == (
        "stateset-main",
        "stateset",
        "asn",
        "asn/1 x",
    )
    sent = body["upstream_request"]
    assert sent["method"] == "POST"
    assert sent["url"] == f"{upstream.url}/stateset/v1/asns/asn%2F1%20x/cancel"
    assert sent["headers"]["Authorization"] == MASKED
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["headers"]["X-Request-ID"] == result.headers["X-Request-ID"] == body["request_id"]
    assert sent["body"] == {
        "reason": "Supplier delay",
        "cancelled_by": "oms",
        "notify_supplier": True,
    }
    assert_no_canary(result.raw.decode())
    assert "cancellation_id" not in body  # nothing is recorded, so there is nothing to look up


async def test_preview_of_a_delete_masks_the_api_key_header_and_has_no_body(
    gateway: Gateway, upstream: Upstream
):
    """An RxUniverse preview: DELETE, '../72544' as one segment, the reason in the query, the
    x-api-key header masked, no body."""
    result = await preview(gateway, RX)
    assert result.status == 200, result.body
    sent = result.body["upstream_request"]
    assert sent["method"] == "DELETE"
    assert sent["url"] == (
        f"{upstream.url}/rxuniverse/api/v2/orders/..%2F72544?deleteReason=customer%20request"
    )
    assert sent["headers"]["x-api-key"] == MASKED
    assert sent["body"] is None
    assert_no_canary(result.raw.decode())
    assert upstream.received == []


async def test_preview_is_what_the_real_cancellation_sends(gateway: Gateway, upstream: Upstream):
    """With the same X-Request-ID and Idempotency-Key, the real cancellation sends exactly the
    previewed method, URL, body and headers (the credential aside)."""
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {
        "X-Request-ID": "req-preview-1",
        "Idempotency-Key": "preview-then-send",
        "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
    }
    shown = (await preview(gateway, STATESET, headers=headers)).body["upstream_request"]
    upstream.answer(200, STATESET_OK)
    sent = await gateway.cancel(STATESET, headers=headers)
    assert sent.status == 200, sent.body
    [received] = upstream.received
    assert received.method == shown["method"]
    assert upstream.url + received.raw_path == shown["url"]
    assert received.json() == shown["body"]
    for name, value in shown["headers"].items():
        if name == "traceparent":  # the same trace, a span of each request's own
            assert received.headers[name].split("-")[1] == value.split("-")[1] == trace
        elif name == "Authorization":
            assert value == MASKED
            assert received.headers[name] == f"Bearer {CANARIES['STATESET_API_KEY']}"
        else:
            assert received.headers[name] == value, name
    assert shown["headers"]["Idempotency-Key"].startswith("cg-")  # derived from the caller's


async def test_preview_records_nothing(gateway: Gateway, upstream: Upstream):
    """No ledger entry and no idempotency claim: the key of a preview is free for a different
    request, only cancellation.previewed is logged, and no cancellation is counted."""
    key = {"Idempotency-Key": "previewed-key-1"}
    result = await preview(gateway, RX, headers=key)
    assert result.status == 200
    [previewed] = gateway.events("cancellation.previewed")
    assert previewed["connection"] == "rxuniverse-lab"
    assert previewed["resource_id"] == "../72544"
    assert previewed["caller"] == "oms"
    assert previewed["request_id"] == result.body["request_id"]
    assert gateway.events("cancellation.completed") == []
    assert gateway.events("cancellation.received") == []
    async with gateway.session.get(gateway.url + "/metrics") as resp:
        scrape = await resp.text()
    assert "cancel_gateway_cancellations_total{" not in scrape

    # The same key with another body is not a conflict: the preview claimed nothing.
    upstream.answer(200, RX_OK)
    other = await gateway.cancel({**RX, "id": "72545"}, headers=key)
    assert other.status == 200, other.body
    assert other.headers.get("Idempotent-Replayed") is None
    assert len(upstream.received) == 1


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({**RX, "colour": "red"}, "colour"),
        ({"connection": "rxuniverse-lab"}, "id"),
        ({**RX, "id": ".."}, "id"),
        ({"connection": "shipper-main", "id": "S" * 51, "reason": "r"}, "id"),  # Shipper's limit
        ([RX], "body"),
    ],
)
async def test_preview_refuses_invalid_requests_like_a_cancellation(
    gateway: Gateway, upstream: Upstream, body: Any, loc: str
):
    """An invalid body → 422 invalid_request envelope naming the field, as without dry_run."""
    result = await preview(gateway, body)
    assert result.status == 422, result.body
    assert result.body["status"] == "rejected"
    assert result.body["error"]["code"] == "invalid_request"
    assert loc in [f["loc"] for f in result.body["error"]["fields"]]
    real = await gateway.cancel(body)
    assert real.status == 422
    assert {f["loc"] for f in real.body["error"]["fields"]} == {
        f["loc"] for f in result.body["error"]["fields"]
    }
    assert upstream.received == []


async def test_preview_applies_authentication_and_authorization(
    gateway: Gateway, upstream: Upstream
):
    """No key → 401, a caller not allowed the connection → 403, an unknown connection → 404."""
    missing = await preview(gateway, RX, key=None)
    assert missing.status == 401
    assert missing.body["error"]["code"] == "unauthorized"
    forbidden = await preview(gateway, RX, key=LIMITED_KEY)
    assert forbidden.status == 403
    assert forbidden.body["error"]["code"] == "forbidden"
    unknown = await preview(gateway, {**RX, "connection": "nowhere"})
    assert unknown.status == 404
    assert unknown.body["error"]["code"] == "unknown_connection"
    assert upstream.received == []
    assert gateway.events("cancellation.previewed") == []


@pytest.mark.parametrize("value", ["maybe", "1", "TRUE", ""])
async def test_dry_run_must_be_true_or_false(gateway: Gateway, upstream: Upstream, value: str):
    """dry_run=<anything else> → 422 invalid_request on query.dry_run, and nothing is sent."""
    result = await preview(gateway, RX, query=f"dry_run={value}")
    assert result.status == 422, result.body
    assert result.body["error"]["code"] == "invalid_request"
    assert [f["loc"] for f in result.body["error"]["fields"]] == ["query.dry_run"]
    assert upstream.received == []
    assert gateway.events("cancellation.completed") == []


@pytest.mark.parametrize(
    "query",
    ["dry_run=false&dry_run=true", "dry_run=true&dry_run=false", "dry_run=true&dry_run=true"],
)
async def test_dry_run_given_twice_is_refused(gateway: Gateway, upstream: Upstream, query: str):
    """A query parameter the API reads, given twice, is a 422: never a real cancellation."""
    result = await preview(gateway, RX, query=query)
    assert result.status == 422, result.body
    assert [f["loc"] for f in result.body["error"]["fields"]] == ["query.dry_run"]
    assert upstream.received == []


async def test_dry_run_false_cancels(gateway: Gateway, upstream: Upstream):
    """dry_run=false is an ordinary cancellation: sent, answered with an envelope."""
    upstream.answer(200, RX_OK)
    result = await preview(gateway, RX, query="dry_run=false")
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    assert result.body["cancellation_id"].startswith("cxl_")
    assert len(upstream.received) == 1


@pytest.mark.parametrize("field", ["reason", "notes", "requested_by"])
async def test_a_preview_is_no_oracle_for_credentials(
    gateway: Gateway, upstream: Upstream, field: str
):
    """The caller's own values come back as sent, whether or not one equals a credential (of
    this connection or another caller's key): a right guess and a wrong one look alike."""
    guesses = [CANARIES["STATESET_API_KEY"], CALLER_KEY, CANARIES["STATESET_API_KEY"][:-1] + "?"]
    for guess in guesses:
        result = await preview(gateway, {**STATESET, field: guess})
        assert result.status == 200, result.body
        shown = result.body["upstream_request"]
        assert guess in result.raw.decode()
        assert "[REDACTED]" not in orjson.dumps(shown["body"]).decode()
        assert shown["headers"]["Authorization"] == MASKED
    assert upstream.received == []


# --- cancel-gateway preview ------------------------------------------------------------------

# The shared test configuration, with nothing listening where it points: a preview sends nothing.
CLI_CONFIG = "store: {backend: memory}\n" + BASE_CONFIG
NOWHERE = "http://127.0.0.1:9"


def run_preview(
    tmp_path: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    config = tmp_path / "gateway.yaml"
    config.write_text(CLI_CONFIG)
    env = {**os.environ, "OMS_API_KEY": CALLER_KEY, "UPSTREAM": NOWHERE, **CANARIES}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "preview", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )


def assert_no_secret(run: subprocess.CompletedProcess[bytes]) -> None:
    for secret in [*CANARIES.values(), CALLER_KEY]:
        assert secret.encode() not in run.stdout
        assert secret.encode() not in run.stderr


def test_cli_preview_prints_the_masked_request(tmp_path: Path):
    """`cancel-gateway preview FILE` exits 0 with the Preview as JSON: credential masked, no
    secret anywhere in its output."""
    request = tmp_path / "cancel.json"
    request.write_bytes(orjson.dumps(STATESET))
    run = run_preview(tmp_path, str(request))
    assert run.returncode == 0, run.stderr.decode()
    shown = orjson.loads(run.stdout)
    assert shown["dry_run"] is True
    assert shown["provider"] == "stateset"
    sent = shown["upstream_request"]
    assert sent["method"] == "POST"
    assert sent["url"] == "http://127.0.0.1:9/stateset/v1/asns/asn%2F1%20x/cancel"
    assert sent["headers"]["Authorization"] == MASKED
    assert sent["body"]["reason"] == "Supplier delay"
    assert_no_secret(run)


def test_cli_preview_reads_stdin(tmp_path: Path):
    """`-` reads the request from stdin."""
    run = run_preview(tmp_path, "-", stdin=orjson.dumps(RX))
    assert run.returncode == 0, run.stderr.decode()
    shown = orjson.loads(run.stdout)
    assert shown["upstream_request"]["method"] == "DELETE"
    assert shown["upstream_request"]["headers"]["x-api-key"] == MASKED
    assert shown["resource_id"] == "../72544"
    assert_no_secret(run)


def test_cli_preview_of_an_invalid_request_exits_1_with_an_envelope(tmp_path: Path):
    """An invalid request file → exit 1 and the error envelope (invalid_request) on stdout."""
    request = tmp_path / "cancel.json"
    request.write_bytes(orjson.dumps({"connection": "rxuniverse-lab", "colour": "red"}))
    run = run_preview(tmp_path, str(request))
    assert run.returncode == 1, run.stderr.decode()
    envelope = orjson.loads(run.stdout)
    assert envelope["status"] == "rejected"
    assert envelope["error"]["code"] == "invalid_request"
    assert {f["loc"] for f in envelope["error"]["fields"]} >= {"id", "colour"}
    assert_no_secret(run)


def test_cli_preview_applies_the_callers_permissions(tmp_path: Path):
    """--caller limited may not use stateset-main → exit 1 with a forbidden envelope."""
    run = run_preview(tmp_path, "--caller", "limited", "-", stdin=orjson.dumps(STATESET))
    assert run.returncode == 1, run.stderr.decode()
    assert orjson.loads(run.stdout)["error"]["code"] == "forbidden"


def test_cli_preview_with_an_unknown_caller_exits_2(tmp_path: Path):
    """--caller nobody → exit 2, naming the known callers on stderr, nothing on stdout."""
    run = run_preview(tmp_path, "--caller", "nobody", "-", stdin=orjson.dumps(RX))
    assert run.returncode == 2
    assert run.stdout == b""
    assert b"nobody" in run.stderr
    assert b"oms" in run.stderr
    assert_no_secret(run)


def test_cli_preview_of_a_missing_file_exits_2(tmp_path: Path):
    """A request file that does not exist → exit 2 with the reason on stderr."""
    run = run_preview(tmp_path, str(tmp_path / "absent.json"))
    assert run.returncode == 2
    assert b"absent.json" in run.stderr
    assert run.stdout == b""
