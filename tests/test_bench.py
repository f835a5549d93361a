"""The benchmark's own logic: its gateway configurations load and each turns off exactly what its
name says (a row measured with a config the gateway refuses, or with a feature left on, would
report the wrong cost); rounds add up into one row; wrk's summary is read; the figures are held
to their targets."""

from dataclasses import replace
from pathlib import Path

import pytest

from bench import scrape, servers, targets, wrk
from bench.scenarios import SCENARIOS, Result, combined
from bench.targets import Comparison, Figure, Target
from gateway.loader import load

ENVIRON = {"BENCH_CALLER_KEY": servers.CALLER_KEY, "BENCH_STATESET_KEY": servers.STATESET_KEY}


@pytest.mark.parametrize("name", sorted(servers.GATEWAYS))
def test_each_benchmarked_gateway_config_loads_with_its_features(tmp_path: Path, name: str) -> None:
    gateway = servers.GATEWAYS[name]
    runtime = load(servers.gateway_config(tmp_path, 9999, gateway), ENVIRON)
    config = runtime.config
    assert config.store.backend == gateway.store
    assert config.logging.level == ("info" if gateway.logs else "warning")
    assert config.logging.access_log is gateway.logs
    assert runtime.targets[servers.CONNECTION].name == servers.CONNECTION


@pytest.mark.parametrize(
    ("name", "auth"), [("gateway-token", "token"), ("gateway-signed", "signed")]
)
def test_the_token_and_signature_rows_send_stateset_with_only_that_changed(
    tmp_path: Path, name: str, auth: str
) -> None:
    """The two rows that measure a token's and a signature's cost: StateSet's definition, its
    request unchanged but for the credential, through the same upstream."""
    from gateway.auth_schemes import TokenAuth

    runtime = load(servers.gateway_config(tmp_path, 9999, servers.GATEWAYS[name]), ENVIRON)
    definition = runtime.targets[servers.CONNECTION].definition
    (tmp_path / "builtin").mkdir()
    builtin = load(servers.gateway_config(tmp_path / "builtin", 9999), ENVIRON)
    plain = builtin.targets[servers.CONNECTION].definition
    assert definition.name == f"stateset-{auth}"
    assert definition.resources["asn"].body == plain.resources["asn"].body
    if auth == "token":
        assert isinstance(definition.auth, TokenAuth)
        assert definition.signature is None
    else:
        assert definition.auth == plain.auth
        assert definition.signature is not None
        assert definition.signature.header == "X-Signature"


def test_the_default_row_has_every_default_on() -> None:
    assert servers.GATEWAYS["gateway"] == servers.Gateway(workers=1, logs=True, auth="key")


def _round(requests: int, seconds: float, cpu_ms: float, p50_ms: float, **more: object) -> Result:
    fields: dict[str, object] = {
        "scenario": SCENARIOS[0],
        "target": "gateway",
        "requests": requests,
        "seconds": seconds,
        "rps": requests / seconds,
        "p50_ms": p50_ms,
        "p99_ms": p50_ms * 3,
        "mean_ms": p50_ms,
        "max_ms": p50_ms * 5,
        "non_2xx": 0,
        "socket_errors_by_kind": {},
        "rss_mib": 60.0,
        "cpu_ms_per_request": cpu_ms / requests,
        "system_share": 0.1,
        "processes": 1,
    }
    return Result(**{**fields, **more})  # type: ignore[arg-type]


def test_rounds_add_up_requests_time_and_cpu_and_take_the_median_latency() -> None:
    rounds = [
        _round(1000, 2.0, 400.0, 10.0, rss_mib=60.0),
        _round(3000, 2.0, 900.0, 30.0, rss_mib=70.0, non_2xx=2),
        _round(2000, 2.0, 700.0, 20.0, rss_mib=65.0),
    ]
    row = combined(rounds)
    assert (row.requests, row.seconds, row.rps) == (6000, 6.0, 1000.0)
    assert row.cpu_ms_per_request == 2000.0 / 6000  # not the mean of the rounds' ratios
    assert (row.p50_ms, row.p99_ms) == (20.0, 60.0)
    assert (row.rss_mib, row.non_2xx, row.rounds) == (70.0, 2, 3)


def test_rounds_add_up_socket_errors_by_kind() -> None:
    rounds = [
        _round(100, 1.0, 10.0, 1.0, socket_errors_by_kind={"connect": 1, "timeout": 2}),
        _round(100, 1.0, 10.0, 1.0, socket_errors_by_kind={"timeout": 4}),
    ]
    row = combined(rounds)
    assert row.socket_errors == 7
    assert row.socket_error_kinds == "connect 1, timeout 6"


def test_one_round_is_the_row_itself() -> None:
    only = _round(500, 5.0, 100.0, 4.0, note="5 lines per answer")
    assert combined([only]) == only


def test_wrk_summary_is_read_among_its_other_output() -> None:
    output = (
        "Running 2s test @ http://127.0.0.1:1\n"
        'BENCH {"requests":3000,"duration_us":2000000,"status":5,"connect":0,"read":0,'
        '"write":2,"timeout":7,"p50_us":1500.0,"p99_us":9000.0,"mean_us":2000.0,'
        '"max_us":12500.0}\n'
        "Requests/sec:   1500.00\n"
    )
    summary = wrk.parse(output)
    assert (summary.requests, summary.seconds, summary.non_2xx) == (3000, 2.0, 5)
    assert summary.socket_errors == {"write": 2, "timeout": 7}  # the kinds that occurred
    assert (summary.p50_ms, summary.p99_ms, summary.mean_ms) == (1.5, 9.0, 2.0)
    assert summary.max_ms == 12.5


def test_wrk_output_without_a_summary_is_an_error_that_shows_it() -> None:
    with pytest.raises(RuntimeError, match="unable to connect"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.parametrize(
    ("comparison", "limit", "value", "met"),
    [
        (Comparison.AT_LEAST, 1.0, 1.0, True),
        (Comparison.AT_LEAST, 1.0, 0.99, False),
        (Comparison.AT_MOST, 0.17, 0.17, True),
        (Comparison.AT_MOST, 0.17, 0.2, False),
        (Comparison.EQUAL, 0.0, 0.0, True),
        (Comparison.EQUAL, 0.0, 3.0, False),
    ],
)
def test_a_target_is_met_or_not_by_its_figure(
    comparison: Comparison, limit: float, value: float, met: bool
) -> None:
    target = Target("figure", comparison, limit)
    assert target.met({"other": -1.0, "figure": value}) is met


@pytest.mark.parametrize("figures", [{}, {"figure": None}])
def test_a_target_whose_figure_was_not_measured_is_neither_met_nor_not(
    figures: dict[str, float | None],
) -> None:
    assert Target("figure", Comparison.AT_MOST, 1).met(figures) is None


def test_the_report_gives_each_figure_its_targets_verdict() -> None:
    measured = [
        Figure("fast", "req/s ratio", 1.5),
        Figure("cheap", "CPU ms/request", 0.2),
        Figure("quiet", "errors", None),
        Figure("free", "no target", 1234.0),
    ]
    rules = [
        Target("fast", Comparison.AT_LEAST, 1),
        Target("cheap", Comparison.AT_MOST, 0.17),
        Target("quiet", Comparison.EQUAL, 0),
    ]
    assert targets.lines(measured, rules) == [
        "- req/s ratio: **1.5** (target ≥ 1: met)",
        "- CPU ms/request: **0.2** (target ≤ 0.17: not met)",
        "- errors: not measured",
        "- no target: **1,234**",
    ]


def test_every_target_is_on_a_figure_the_report_computes() -> None:
    names = [f.name for f in targets.figures([])]
    assert len(names) == len(set(names))
    assert {t.figure for t in targets.TARGETS} <= set(names)


def test_figures_come_from_the_rows_they_name() -> None:
    by_name = {row.name: row for row in SCENARIOS}
    gateway = _round(1000, 1.0, 500.0, 3.0)
    baseline = _round(2000, 1.0, 400.0, 1.0, target="baseline")
    soak = _round(1000, 1.0, 100.0, 150.0, scenario=by_name["soak"], p99_ms=130.0, non_2xx=1)
    values = {f.name: f.value for f in targets.figures([gateway, baseline, soak])}
    assert values["gateway/baseline rps c64"] == 0.5
    assert values["gateway cpu c64"] == 0.5
    assert values["soak added p99"] == 30.0  # beyond the upstream's 100 ms
    assert values["soak errors"] == 1
    assert values["gateway added p50 c1"] is None  # no c1 row


def test_a_cost_against_the_gateway_is_the_median_of_the_rounds_ratios() -> None:
    """Each round measures the gateway and the row compared with it one after the other: the
    figure is the median of the three rounds' ratios, so one slow minute does not decide it."""
    gateway = [_round(1000, 2.0, 500.0, 10.0), _round(1000, 2.0, 400.0, 10.0)]
    gateway.append(_round(1000, 2.0, 500.0, 10.0))
    signed = [_round(1000, 2.0, 520.0, 10.0), _round(1000, 2.0, 600.0, 10.0)]
    signed.append(_round(1000, 2.0, 510.0, 10.0))
    rows = [
        combined(gateway),
        replace(combined(signed), target="gateway-signed"),
    ]
    value = {f.name: f.value for f in targets.figures(rows)}["signature cpu c64"]
    assert value == pytest.approx(4.0)  # rounds: +4 %, +50 %, +2 %; summed it would be +17 %


def _scraped(
    overloaded: float, buckets: dict[float, float], statuses: dict[str, float] | None = None
) -> "scrape.Scrape":
    return scrape.Scrape(overloaded, {"200": buckets}, statuses or {})


def test_the_admitted_p99_is_the_bucket_holding_the_99th_answer_between_two_scrapes() -> None:
    inf = float("inf")
    before = _scraped(3, {0.05: 10, 0.1: 10, 0.25: 10, inf: 10})
    # 1,000 admitted since: 900 within 50 ms, 985 within 100 ms, all within 250 ms.
    after = _scraped(503, {0.05: 910, 0.1: 995, 0.25: 1010, inf: 1010})
    assert scrape.admitted_p99_ms(before, after) == 250.0
    assert scrape.overloaded_between(before, after) == 500
    assert scrape.admitted_p99_ms(after, after) is None  # none admitted meanwhile


def test_the_soaks_errors_leave_out_its_refusals_overloaded() -> None:
    soak_scenario = next(s for s in SCENARIOS if s.soak)
    soak = _round(
        1000, 60.0, 60.0, 10.0, scenario=soak_scenario, non_2xx=700, overloaded=690,
        admitted_p99_ms=250.0, rss_samples=((0.0, 100.0), (60.0, 100.0)),
    )  # fmt: skip
    values = {f.name: f.value for f in targets.figures([soak])}
    assert values["soak errors"] == 10  # the 10 non-2xx that were not overloaded
    assert values["soak admitted p99"] == 250.0


def test_refusals_counted_in_a_wider_window_never_make_errors_negative() -> None:
    soak_scenario = next(s for s in SCENARIOS if s.soak)
    soak = _round(1000, 60.0, 60.0, 10.0, scenario=soak_scenario, non_2xx=100, overloaded=130)
    assert {f.name: f.value for f in targets.figures([soak])}["soak errors"] == 0


def test_the_answers_by_status_between_two_scrapes_leave_out_the_statuses_not_seen_since() -> None:
    before = _scraped(0, {}, {"200": 10, "503": 5})
    after = _scraped(0, {}, {"200": 10, "503": 905, "504": 40})
    assert scrape.statuses_between(before, after) == {"503": 900, "504": 40}


def test_the_targets_against_the_baseline_come_from_the_same_runs_rows() -> None:
    by_name = {row.name: row for row in SCENARIOS}
    c64, c1, c256 = by_name["c64"], by_name["c1"], by_name["c256-100ms"]
    rows = [
        _round(1000, 1.0, 600.0, 3.0, scenario=c64),  # 0.6 ms CPU per request
        _round(2000, 1.0, 400.0, 1.0, scenario=c64, target="baseline"),  # 0.2
        _round(100, 1.0, 50.0, 1.25, scenario=c1),
        _round(100, 1.0, 50.0, 0.75, scenario=c1, target="baseline"),
        _round(100, 1.0, 50.0, 100.0, scenario=c256, p99_ms=180.0),
        _round(100, 1.0, 50.0, 100.0, scenario=c256, target="baseline", p99_ms=120.0),
    ]
    values = {f.name: f.value for f in targets.figures(rows)}
    assert values["cpu ratio c64"] == pytest.approx(3.0)
    assert values["added p50 over baseline c1"] == pytest.approx(0.5)
    assert values["p99 ratio c256-100ms"] == pytest.approx(1.5)
    verdicts = {t.figure: t.met(values) for t in targets.TARGETS}
    assert verdicts["cpu ratio c64"] is False
    assert verdicts["p99 ratio c256-100ms"] is False


def test_the_workers_ratio_is_the_lowest_rounds_not_the_whole_rows() -> None:
    one = combined([_round(1000, 1.0, 1.0, 1.0), _round(1000, 1.0, 1.0, 1.0)])
    two = combined([_round(1600, 1.0, 1.0, 1.0), _round(1300, 1.0, 1.0, 1.0)])
    rows = [one, replace(two, target="gateway-w2")]
    values = {f.name: f.value for f in targets.figures(rows)}
    assert values["workers rps c64"] == pytest.approx(1.45)  # the rows: met
    assert values["workers rps c64 lowest round"] == pytest.approx(1.3)  # a round: not met


def test_the_refusal_scenarios_count_their_refusals_but_never_fail_the_run_for_them() -> None:
    by_name = {row.name: row for row in SCENARIOS}
    slow = _round(
        9000, 10.0, 10.0, 2.0, scenario=by_name["c3000-slow"], target="gateway-budget",
        non_2xx=8990, max_ms=5400.0, statuses={"503": 8000, "504": 990},
    )  # fmt: skip
    limited = _round(
        400, 10.0, 10.0, 2.0, scenario=by_name["c8-limit"], target="gateway-shared",
        non_2xx=380,
    )  # fmt: skip
    c64 = _round(1000, 1.0, 1.0, 1.0, non_2xx=3)
    assert (slow.unexpected, limited.unexpected, c64.unexpected) == (0, 0, 3)
    values = {f.name: f.value for f in targets.figures([slow, limited])}
    assert values["longest answer c3000-slow"] == 5400.0
    assert values["sent per s c8-limit"] == pytest.approx(2.0)  # 20 answered 2xx in 10 s
    counted = replace(limited, statuses={"200": 25, "429": 400})  # as the gateway counted them
    assert {f.name: f.value for f in targets.figures([counted])}["sent per s c8-limit"] == 2.5
    verdicts = {t.figure: t.met(values) for t in targets.TARGETS}
    assert verdicts["longest answer c3000-slow"] is True
    assert verdicts["sent per s c8-limit"] is True


def test_the_shared_row_is_two_processes_on_redis_with_a_rate_limit(tmp_path: Path) -> None:
    gateway = servers.GATEWAYS["gateway-shared"]
    config = load(servers.gateway_config(tmp_path, 9999, gateway), ENVIRON).config
    assert (gateway.workers, config.store.backend) == (2, "redis")
    assert config.store.prefix == servers.redis_prefix(tmp_path)
    assert config.connections[servers.CONNECTION].limits.rate_per_s == 2
    budget = load(
        servers.gateway_config(tmp_path, 9999, servers.GATEWAYS["gateway-budget"]), ENVIRON
    )
    connection = budget.config.connections[servers.CONNECTION]
    assert connection.timeout_s == 5
    assert connection.breaker.failures == 5  # the default: the breaker opens as it would


def test_the_refusals_median_is_read_from_the_503_answers_histogram_only() -> None:
    inf = float("inf")
    before = scrape.Scrape(0, {"503": {0.001: 0, 0.0025: 0, inf: 0}}, {})
    after = scrape.Scrape(
        0,
        {
            "503": {0.001: 40, 0.0025: 90, inf: 100},  # 90 of 100 refused within 2.5 ms
            "504": {0.001: 0, 0.0025: 0, inf: 500},  # timeouts: not refusals
        },
        {},
    )
    assert scrape.refused_p50_ms(before, after) == 2.5
    assert scrape.admitted_p99_ms(before, after) is None  # none answered 200
