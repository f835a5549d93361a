"""A provider whose cancel takes a form (application/x-www-form-urlencoded) body: the gateway
sends the form to a real server, and a dry run shows the form's fields as a mapping."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

import pytest

from tests.conftest import GatewayFactory, Upstream

pytestmark = pytest.mark.e2e

DEFINITION = """
name: form-3pl
title: A made-up 3PL whose cancel is a form post
base_url: https://form-3pl.example
credentials:
  token: {description: "API token"}
auth:
  header: Authorization
  value: "Bearer {credentials.token}"
resources:
  order:
    method: POST
    path: /orders/cancel
    body_encoding: form
    body:
      order_id: "{id}"
      reason: "{reason}"
      notify: "{notify}"
    success:
      status: [200]
      when: "result == 'ok'"
"""

CONFIG = """
providers: [form-3pl.yaml]
callers:
  - name: oms
    key: ${OMS_API_KEY}
    connections: ["*"]
connections:
  form:
    provider: form-3pl
    base_url: ${UPSTREAM}/form
    credentials: {token: form-token-not-real}
"""

REQUEST = {"connection": "form", "id": "SO 1&2", "reason": "out of stock", "notify": True}
FIELDS = {"order_id": "SO 1&2", "reason": "out of stock", "notify": "true"}


@pytest.fixture
async def form(make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path):
    (tmp_path / "form-3pl.yaml").write_text(DEFINITION)
    return await make_gateway(CONFIG, upstream_url=upstream.url)


async def test_the_form_is_sent_url_encoded(form, upstream: Upstream):
    upstream.answer(200, {"result": "ok"})
    result = await form.cancel(REQUEST)
    assert result.status == 200, result.body
    assert result.body["status"] == "cancelled"
    [sent] = upstream.received
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert {k: v for k, [v] in parse_qs(sent.body.decode()).items()} == FIELDS


async def test_a_dry_run_shows_the_forms_fields(form, upstream: Upstream):
    result = await form.request("POST", "/v1/cancellations?dry_run=true", json=REQUEST)
    assert result.status == 200, result.body
    shown = result.body["upstream_request"]
    assert shown["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert shown["headers"]["Authorization"] == "[REDACTED]"
    assert shown["body"] == FIELDS
    assert upstream.received == []
