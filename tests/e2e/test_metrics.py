"""`GET /metrics` of a real gateway on a loopback port, after real cancellations against a real
upstream: what each kind of outcome adds to the scrape."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from tests.conftest import BASE_CONFIG, Gateway, GatewayFactory, Upstream
from tests.services import free_port

pytestmark = pytest.mark.e2e

RX_OK = {"orderNumber": "72544", "trayNumber": "1", "poNumber": "P", "message": ""}
RX = {"connection": "rxuniverse-lab", "id": "72544"}
LIMITED_KEY = "limited-caller-key-0123456789"
LAB = ("rxuniverse-lab", "rxuniverse")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def with_lab(extra: str) -> str:
    """BASE_CONFIG with YAML lines added to the rxuniverse-lab connection."""
    anchor = "  rxuniverse-lab:\n"
    block = "".join(f"    {line}\n" for line in extra.strip("\n").splitlines())
    return BASE_CONFIG.replace(anchor, anchor + block, 1)


class Scrape:
    """One answer of GET /metrics, parsed with prometheus-client's own parser."""

    def __init__(self, status: int, content_type: str, text: str) -> None:
        self.status = status
        self.content_type = content_type
        self.text = text
        self.samples: Samples = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when the scrape has no such sample (a counter never touched)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def labelled(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for (n, labels) in self.samples if n == name]

    def cancellations(self, connection: str, provider: str, status: str, code: str = "") -> float:
        return self.value(
            "cancel_gateway_cancellations_total",
            connection=connection,
            provider=provider,
            status=status,
            error_code=code,
        )

    def attempts(self, result: str, connection: str = LAB[0], provider: str = LAB[1]) -> float:
        return self.value(
            "cancel_gateway_upstream_attempts_total",
            connection=connection,
            provider=provider,
            result=result,
        )


async def scrape(gateway: Gateway, headers: dict[str, str] | None = None) -> Scrape:
    """GET /metrics without a caller key."""
    async with gateway.session.get(gateway.url + "/metrics", headers=headers or {}) as resp:
        return Scrape(resp.status, resp.headers.get("Content-Type", ""), await resp.text())


async def test_metrics_is_prometheus_text_and_needs_no_caller_key(gateway: Gateway):
    """GET /metrics answers 200 text/plain in the Prometheus format, with no Authorization."""
    result = await scrape(gateway)
    assert result.status == 200, result.text
    assert result.content_type.startswith("text/plain")
    assert "version=" in result.content_type
    assert result.types["cancel_gateway_cancellations"] == "counter"
    assert result.types["cancel_gateway_upstream_latency_seconds"] == "histogram"
    assert result.types["cancel_gateway_breaker_state"] == "gauge"
    assert "# HELP cancel_gateway_unmapped_errors_total" in result.text
    # A wrong key is not refused either: the endpoint is outside the API's authentication.
    again = await scrape(gateway, {"Authorization": "Bearer not-a-key-0123456789"})
    assert again.status == 200


async def test_success_and_provider_404_are_counted_with_their_labels(
    gateway: Gateway, upstream: Upstream
):
    """A success and a provider 404 count as cancellations labelled connection/provider/status/
    error_code, and as upstream attempts by status class."""
    upstream.answer(200, RX_OK)
    upstream.answer(404, {"error": "No record found"})
    assert (await gateway.cancel(RX)).status == 200
    missing = await gateway.cancel({**RX, "id": "404"})
    assert missing.body["error"]["code"] == "not_found"

    result = await scrape(gateway)
    assert result.cancellations(*LAB, "cancelled") == 1
    assert result.cancellations(*LAB, "rejected", "not_found") == 1
    assert len(result.labelled("cancel_gateway_cancellations_total")) == 2
    assert result.attempts("2xx") == 1
    assert result.attempts("4xx") == 1
    assert result.attempts("5xx") == 0
    # A 404 that a rule of the definition maps is not "unmapped".
    assert result.labelled("cancel_gateway_unmapped_errors_total") == []


async def test_unmapped_provider_error_is_counted_with_the_provider_status(
    gateway: Gateway, upstream: Upstream
):
    """An error no rule of the definition matches counts in cancel_gateway_unmapped_errors_total
    with its provider_status; a mapped one does not."""
    upstream.answer(418, {"error": "I'm a teapot"})
    upstream.answer(400, {"error": "Something new the definition does not know"})
    upstream.answer(400, {"error": "Order has been through a non-cancel station"})  # mapped
    teapot = await gateway.cancel(RX)
    assert teapot.body["error"]["code"] == "provider_rejected"
    new = await gateway.cancel({**RX, "id": "2"})
    assert new.body["error"]["code"] == "provider_rejected"
    mapped = await gateway.cancel({**RX, "id": "3"})
    assert mapped.body["error"]["code"] == "not_cancellable"

    result = await scrape(gateway)
    unmapped = "cancel_gateway_unmapped_errors_total"
    labels = {"connection": LAB[0], "provider": LAB[1]}
    assert result.value(unmapped, **labels, provider_status="418") == 1
    assert result.value(unmapped, **labels, provider_status="400") == 1
    assert len(result.labelled(unmapped)) == 2
    assert result.cancellations(*LAB, "rejected", "provider_rejected") == 2
    assert result.cancellations(*LAB, "rejected", "not_cancellable") == 1


async def test_retries_are_counted_by_reason(make_gateway: GatewayFactory, upstream: Upstream):
    """503, 503, 200 on a retry-safe connection: two retries 'answered 503', attempts 5xx=2 and
    2xx=1, one cancellation, nothing unmapped (the final answer was a success)."""
    gateway = await make_gateway(
        with_lab("retry: {backoff_base_s: 0.01}"), upstream_url=upstream.url
    )
    upstream.answer(503, {"error": "Service Unavailable"})
    upstream.answer(503, {"error": "Service Unavailable"})
    upstream.answer(200, RX_OK)
    result = await gateway.cancel(RX)
    assert result.body["upstream"]["attempts"] == 3

    metrics = await scrape(gateway)
    retries = "cancel_gateway_upstream_retries_total"
    assert metrics.value(retries, connection=LAB[0], reason="answered_503") == 2
    assert metrics.labelled(retries) == [{"connection": LAB[0], "reason": "answered_503"}]
    assert metrics.attempts("5xx") == 2
    assert metrics.attempts("2xx") == 1
    assert metrics.cancellations(*LAB, "cancelled") == 1
    assert metrics.labelled("cancel_gateway_unmapped_errors_total") == []
    assert metrics.value("cancel_gateway_breaker_state", connection=LAB[0]) == 0


async def test_open_breaker_counts_refusals_and_shows_state_2(
    make_gateway: GatewayFactory, upstream: Upstream
):
    """After the breaker opens, a refused cancellation counts as a breaker_open refusal, the
    breaker gauge reads 2, and nothing more is sent."""
    gateway = await make_gateway(
        with_lab("retry: {max_attempts: 1}\nbreaker: {failures: 1, open_s: 60}"),
        upstream_url=upstream.url,
    )
    upstream.always(503, {"error": "Service Unavailable"})
    first = await gateway.cancel(RX)
    assert first.body["error"]["code"] == "provider_error"
    refused = await gateway.cancel(RX)
    assert refused.status == 503
    assert refused.body["error"]["code"] == "provider_unavailable"
    assert len(upstream.received) == 1

    metrics = await scrape(gateway)
    refusals = "cancel_gateway_upstream_refusals_total"
    assert metrics.value(refusals, connection=LAB[0], reason="breaker_open") == 1
    assert metrics.value("cancel_gateway_breaker_state", connection=LAB[0]) == 2
    assert metrics.cancellations(*LAB, "failed", "provider_unavailable") == 1
    assert metrics.cancellations(*LAB, "failed", "provider_error") == 1
    assert metrics.attempts("5xx") == 1
    # Other connections were never used: their breaker is not shown at all.
    assert metrics.labelled("cancel_gateway_breaker_state") == [{"connection": LAB[0]}]


async def test_unknown_or_forbidden_connection_names_never_become_labels(gateway: Gateway):
    """A name the caller typed is a label only once routed: unknown, forbidden and invalid
    requests count with connection and provider empty."""
    unknown = await gateway.cancel({"connection": "no-such-connection-4f2a", "id": "1"})
    assert unknown.status == 404
    forbidden = await gateway.cancel(
        {"connection": "invented-by-limited-9c1e", "id": "1"}, key=LIMITED_KEY
    )
    assert forbidden.status == 403
    invalid = await gateway.cancel({"connection": "invalid-body-7d3b", "id": ""})
    assert invalid.status == 422

    metrics = await scrape(gateway)
    assert metrics.cancellations("", "", "rejected", "unknown_connection") == 1
    assert metrics.cancellations("", "", "rejected", "forbidden") == 1
    assert metrics.cancellations("", "", "rejected", "invalid_request") == 1
    for name in ("no-such-connection-4f2a", "invented-by-limited-9c1e", "invalid-body-7d3b"):
        assert name not in metrics.text
    assert {
        labels["connection"] for labels in metrics.labelled("cancel_gateway_cancellations_total")
    } == {""}


async def test_attempts_without_an_answer_count_as_error_or_timeout(
    make_gateway: GatewayFactory, upstream: Upstream
):
    """Connection refused counts attempts as 'error' (and retries 'not sent'); no answer within
    the budget counts as 'timeout'; both land in the latency histogram."""
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = BASE_CONFIG + (
        "  rxuniverse-down:\n"
        "    provider: rxuniverse\n"
        f"    base_url: {closed}/rxuniverse\n"
        "    retry: {max_attempts: 2, backoff_base_s: 0.01}\n"
        "  rxuniverse-slow:\n"
        "    provider: rxuniverse\n"
        "    base_url: ${UPSTREAM}/rxuniverse\n"
        "    timeout_s: 0.3\n"
        "    retry: {max_attempts: 1}\n"
    )
    gateway = await make_gateway(config, upstream_url=upstream.url)
    down = await gateway.cancel({"connection": "rxuniverse-down", "id": "1"})
    assert down.body["error"]["code"] == "provider_error", down.body
    upstream.answer(200, RX_OK, delay_s=2.0)
    slow = await gateway.cancel({"connection": "rxuniverse-slow", "id": "1"})
    assert slow.body["error"]["code"] == "provider_timeout"

    metrics = await scrape(gateway)
    assert metrics.attempts("error", "rxuniverse-down") == 2
    assert (
        metrics.value(
            "cancel_gateway_upstream_retries_total", connection="rxuniverse-down", reason="not_sent"
        )
        == 1
    )
    assert metrics.attempts("timeout", "rxuniverse-slow") == 1
    latency = "cancel_gateway_upstream_latency_seconds_count"
    assert metrics.value(latency, connection="rxuniverse-down") == 2
    assert metrics.value(latency, connection="rxuniverse-slow") == 1
    assert metrics.cancellations("rxuniverse-down", "rxuniverse", "failed", "provider_error") == 1
    assert metrics.cancellations("rxuniverse-slow", "rxuniverse", "failed", "provider_timeout") == 1


async def test_upstream_latency_histogram_has_buckets_per_connection(
    gateway: Gateway, upstream: Upstream
):
    """Each attempt is observed in its connection's histogram: cumulative buckets up to +Inf,
    _count and a _sum that covers the provider's delay."""
    upstream.answer(200, RX_OK, delay_s=0.06)
    upstream.answer(200, RX_OK)
    for n in range(2):
        assert (await gateway.cancel({**RX, "id": str(n)})).status == 200

    metrics = await scrape(gateway)
    name = "cancel_gateway_upstream_latency_seconds"
    buckets = {
        labels["le"]: metrics.value(name + "_bucket", **labels)
        for labels in metrics.labelled(name + "_bucket")
    }
    assert {labels["connection"] for labels in metrics.labelled(name + "_bucket")} == {LAB[0]}
    assert buckets["+Inf"] == 2
    assert buckets["0.05"] <= 1  # the delayed answer took longer
    assert buckets["10.0"] == 2
    ordered = [buckets[le] for le in sorted(buckets, key=float)]
    assert ordered == sorted(ordered)  # cumulative
    assert metrics.value(name + "_count", connection=LAB[0]) == 2
    assert metrics.value(name + "_sum", connection=LAB[0]) >= 0.06


async def test_http_answers_are_counted_by_route_not_by_path(gateway: Gateway, upstream: Upstream):
    """cancel_gateway_http_requests_total uses the route's template: an id in the path and an
    unknown path never become labels."""
    upstream.answer(200, RX_OK)
    done = await gateway.cancel(RX)
    cancellation_id = done.body["cancellation_id"]
    assert (await gateway.request("GET", f"/v1/cancellations/{cancellation_id}")).status == 200
    assert (await gateway.request("GET", "/no/such/path-5e6f", key=None)).status == 404
    assert (await gateway.request("GET", "/healthz", key=None)).status == 200
    await scrape(gateway)

    metrics = await scrape(gateway)
    http = "cancel_gateway_http_requests_total"

    def answered(method: str, route: str, status: str) -> Any:
        return metrics.value(http, method=method, route=route, status=status)

    assert answered("post", "/v1/cancellations", "200") == 1
    assert answered("get", "/v1/cancellations/{cancellation_id}", "200") == 1
    assert answered("get", "unmatched", "404") == 1
    assert answered("get", "/healthz", "200") == 1
    assert answered("get", "/metrics", "200") == 1  # the first scrape; this one is not done yet
    assert cancellation_id not in metrics.text
    assert "path-5e6f" not in metrics.text


async def test_every_answer_is_timed_by_method_route_and_status(
    gateway: Gateway, upstream: Upstream
):
    """cancel_gateway_http_request_duration_seconds times each answer from arrival to
    answer: a provider that takes 150 ms shows in its cancellation's sum, a refusal is
    timed under its own status."""
    upstream.answer(200, RX_OK, delay_s=0.15)
    assert (await gateway.cancel(RX)).status == 200
    assert (await gateway.cancel(RX, key=None)).status == 401
    metrics = await scrape(gateway)
    name = "cancel_gateway_http_request_duration_seconds"
    done = {"method": "post", "route": "/v1/cancellations", "status": "200"}
    assert metrics.value(name + "_count", **done) == 1
    assert 0.15 <= metrics.value(name + "_sum", **done) < 2
    assert metrics.value(name + "_bucket", **done, le="0.1") == 0
    assert metrics.value(name + "_bucket", **done, le="0.25") == 1
    refused = {**done, "status": "401"}
    assert metrics.value(name + "_count", **refused) == 1
    assert metrics.value(name + "_sum", **refused) < 0.15


async def test_build_info_follows_the_configuration_a_reload_serves(
    make_gateway: GatewayFactory, upstream: Upstream
):
    """cancel_gateway_build_info names the gateway's version and the configuration version
    served; after POST /admin/reload only the new one, and no `_created` series anywhere."""
    admin = "ops-admin-key-0123456789"
    config = BASE_CONFIG.replace(
        "callers:\n", f"callers:\n  - name: ops\n    key: {admin}\n    admin: true\n", 1
    )
    gateway = await make_gateway(config, upstream_url=upstream.url)
    first = await scrape(gateway)
    served = (await gateway.request("GET", "/readyz", key=None)).headers["X-Config-Version"]
    info = "cancel_gateway_build_info"
    assert first.labelled(info) == [{"version": __version__, "config_version": served}]
    assert first.value(info, version=__version__, config_version=served) == 1

    gateway.rewrite(config.replace("timeout_s: 2", "timeout_s: 3", 1))
    reloaded = await gateway.request("POST", "/admin/reload", key=admin)
    assert reloaded.status == 200, reloaded.body
    new = reloaded.body["config_version"]
    assert new != served
    after = await scrape(gateway)
    assert after.labelled(info) == [{"version": __version__, "config_version": new}]
    assert after.value(info, version=__version__, config_version=new) == 1
    assert "_created" not in after.text
