"""What the demo prints: where everything listens, and requests to paste."""

from __future__ import annotations

import json

DEMO_REQUESTS = [
    {"connection": "stateset-demo", "id": "asn_demo_1", "reason": "Supplier delay"},
    {"connection": "shipper-demo", "id": "SO-DEMO-1", "reason": "Cancelled from marketplace"},
    {"connection": "shoplazza-demo", "id": "382451985837728044"},
    {"connection": "rxuniverse-demo", "id": "72544", "reason": "customer request"},
]
# The simulator applies it, then holds the answer past the connection's budget.
LOST_ANSWER = {"connection": "stateset-demo", "id": "lostanswer-demo", "reason": "Supplier delay"}
# Shopify's cancel as a queued job: answered pending, then settled by its probe.
CATALOG_REQUEST = {
    "connection": "shopify-demo",
    "resource": "order",
    "id": "job-queued",
    "reason": "Customer changed their mind",
}
# Answered 202 pending at once; its first two sends meet a 503, the third cancels it.
ASYNC_REQUEST = {
    "connection": "shipper-demo",
    "id": "flaky503x2-async",
    "reason": "Cancelled from marketplace",
}


def demo_banner(gateway_url: str, simulator_url: str, key: str) -> str:
    lines = [
        "cancel-gateway demo",
        f"  gateway     {gateway_url}",
        f"  simulators  {simulator_url}",
        f"  caller key  {key}",
        f"  console     {gateway_url}/console  (paste the caller key: every cancellation sent,",
        "              its timeline, and each connection's health, refreshed as you go)",
        "",
        "Paste one of these; each answers a `cancelled` envelope (pasted again, StateSet and",
        "RxUniverse answer `already_cancelled`):",
    ]
    for request in DEMO_REQUESTS:
        body = json.dumps(request, separators=(",", ":"))
        lines.append(
            f"curl -s -X POST {gateway_url}/v1/cancellations "
            f"-H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{body}'"
        )
    lost = json.dumps(LOST_ANSWER, separators=(",", ":"))
    lines += [
        "",
        "A cancel applied whose answer is lost: after 4 s without an answer the gateway reads",
        "the ASN (a status probe), finds it cancelled and answers `cancelled` with probes 1:",
        f"curl -s -X POST {gateway_url}/v1/cancellations "
        f"-H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{lost}'",
        "",
        "Asynchronously (Prefer: respond-async): answered 202 `pending` at once, with a",
        "Location; the gateway sends it in the background, through two 503s, until it is",
        "`cancelled`. GET the Location (same Authorization header) to see it settle, and",
        "its /events to see how:",
        f"curl -si -X POST {gateway_url}/v1/cancellations -H 'Prefer: respond-async' "
        f"-H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
        f"-d '{json.dumps(ASYNC_REQUEST, separators=(',', ':'))}'",
        "",
        "The catalog (shopify-demo, walmart-demo, amazon-mcf-demo, shopee-demo, magento-demo,",
        "bigcommerce-demo, woocommerce-demo, shipengine-demo) is simulated from each provider's",
        "documented examples; the id names the example (lower case, hyphens). Shopify answers",
        "`pending` while its job runs, and its probe settles it a second later:",
        f"curl -si -X POST {gateway_url}/v1/cancellations "
        f"-H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
        f"-d '{json.dumps(CATALOG_REQUEST, separators=(',', ':'))}'",
        "",
        "Ids choose simulator scenarios (notfound-1, slow-3000, flaky503x2-1, ...): see README.",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)
