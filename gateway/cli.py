"""``cancel-gateway``: serve, check-config, simulate, demo. The only place that reads the
environment."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from gateway.api import CONFIG
from gateway.app import gateway_app
from gateway.cancel import Canceller
from gateway.definition import ProviderDefinition
from gateway.demo_text import demo_banner
from gateway.envelope import gateway_envelope
from gateway.errors import GatewayError
from gateway.inbound import RequestInfo
from gateway.loader import Runtime, load
from gateway.logging import make_logger
from gateway.problems import ConfigError
from gateway.prove import load_definition, prove, table
from gateway.routing import Callers
from gateway.serve import CannotListen, Listener, run, run_workers, serve_until_stopped
from gateway.services import build_services
from gateway.simulate import SIMULATED, create_simulator_app
from gateway.simulate.app import catalog_definitions
from gateway.simulate.signatures import Account
from gateway.store.memory import MemoryStore
from gateway.tracing import request_id_from, trace_from
from gateway.translate.wire import UpstreamRequest, UpstreamResponse

DEFAULT_CONFIG = "config/gateway.yaml"
# Package data, so the demo runs from an installed wheel as from a checkout.
DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
DEMO_CALLER_KEY = "demo-caller-key-0123456789"  # printed by the demo: not a secret


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cancel-gateway", description="One endpoint that cancels on any provider."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=f"default: $GATEWAY_CONFIG, else {DEFAULT_CONFIG}")
    serve.add_argument("--host", help="overrides server.host")
    serve.add_argument("--port", type=port_number, help="overrides server.port")
    serve.add_argument("--workers", type=int, help="processes sharing the port (SO_REUSEPORT)")
    serve.set_defaults(run=cmd_serve)

    check = commands.add_parser("check-config", help="load and validate the configuration")
    check.add_argument("--config", help=f"default: $GATEWAY_CONFIG, else {DEFAULT_CONFIG}")
    check.set_defaults(run=cmd_check_config)

    preview = commands.add_parser(
        "preview", help="show the upstream request a cancellation would send; send nothing"
    )
    preview.add_argument("--config", help=f"default: $GATEWAY_CONFIG, else {DEFAULT_CONFIG}")
    preview.add_argument("--caller", help="whose permissions apply (default: the first caller)")
    preview.add_argument("--idempotency-key", help="as the Idempotency-Key header would give it")
    preview.add_argument(
        "file", help="a JSON cancellation, as POSTed to /v1/cancellations; - for stdin"
    )
    preview.set_defaults(run=cmd_preview)

    prove_ = commands.add_parser(
        "test-provider", help="run a provider definition's examples and show each result"
    )
    prove_.add_argument("file", help="a provider definition (YAML)")
    prove_.set_defaults(run=cmd_test_provider)

    simulate = commands.add_parser("simulate", help="serve emulations of the built-in providers")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=port_number, default=8081)
    simulate.add_argument(
        "--definition",
        action="append",
        default=[],
        metavar="FILE",
        help="also serve this provider definition from its examples, under /<its name>",
    )
    simulate.set_defaults(run=cmd_simulate)

    demo = commands.add_parser("demo", help="the gateway in front of the simulators, on loopback")
    demo.add_argument(
        "--port", type=port_number, default=8080, help="the gateway's port (default: 8080)"
    )
    demo.add_argument(
        "--simulators-port",
        type=port_number,
        default=0,
        metavar="PORT",
        help="the simulators' port (default: a free one)",
    )
    demo.add_argument("--config", help=f"default: {DEMO_CONFIG}")
    demo.set_defaults(run=cmd_demo)

    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


def port_number(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535: the event loop would quietly listen on 70000
    modulo 65536."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return port


def config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG)


def load_or_report(path: Path) -> Runtime | None:
    try:
        return load(path, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _definition(file: str) -> ProviderDefinition | None:
    """The provider definition in ``file``, or None with every problem printed."""
    definition, problems = load_definition(Path(file))
    for problem in problems:
        print(problem, file=sys.stderr)
    return definition


def cmd_test_provider(args: argparse.Namespace) -> int:
    """Each example of the definition: expected and got, a table; exit 1 when one fails or the
    file does not load."""
    definition = _definition(args.file)
    if definition is None:
        return 1
    checked, warnings = prove(definition)
    print("\n".join(table(checked)))
    for warning in warnings:
        print(f"warning: {args.file}: {warning}", file=sys.stderr)
    return 1 if any(not c.ok for c in checked) else 0


def cmd_check_config(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    runtime = load_or_report(path)
    if runtime is None:
        return 1
    for warning in runtime.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    config = runtime.config
    used = sorted({t.definition.name for t in runtime.targets.values()})
    print(
        f"ok: {path}: {len(config.callers)} callers, {len(runtime.targets)} connections "
        f"({', '.join(used) or 'none'}), {len(runtime.providers)} provider definitions, "
        f"version {runtime.version}"
    )
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    """The dry run of ``POST /v1/cancellations``: the same checks, the request that would be
    sent (credentials masked) on stdout, exit 0; or the error envelope, exit 1."""
    runtime = load_or_report(config_path(args.config))
    if runtime is None:
        return 1
    callers = runtime.config.callers
    name = args.caller or callers[0].name
    caller = Callers(callers).named(name)
    if caller is None:
        known = ", ".join(c.name for c in callers)
        print(f"no caller named {name!r} (callers: {known})", file=sys.stderr)
        return 2
    try:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"{args.file}: {os.strerror(exc.errno) if exc.errno else exc}", file=sys.stderr)
        return 2
    info = RequestInfo(request_id_from(None), trace_from(None), args.idempotency_key)
    log = make_logger(runtime.secrets, stream=sys.stderr)
    services = build_services(runtime, _never_send, log=log, store=MemoryStore())
    canceller = Canceller(runtime, services)
    try:
        preview = canceller.preview(caller, body, info)
    except GatewayError as exc:
        envelope = gateway_envelope(exc, info.request_id, info.trace.trace_id)
        print(envelope.model_dump_json(indent=2))
        return 1
    print(preview.model_dump_json(indent=2))
    return 0


async def _never_send(
    request: UpstreamRequest, timeout_s: float, connect_timeout_s: float = 0
) -> UpstreamResponse:
    raise AssertionError("a preview never sends")


def cmd_serve(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    runtime = load_or_report(path)
    if runtime is None:
        return 1
    workers = args.workers or runtime.config.server.workers
    if workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if workers == 1:
        return serve_gateway(path, args.host, args.port, reuse_port=False)
    # Each worker writes its metrics to files here; any worker's /metrics adds them all up.
    # prometheus-client reads the variable when a worker imports it.
    given = os.environ.get(METRICS_DIR_VARIABLE)
    with contextlib.ExitStack() as stack:
        metrics_dir = given or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="cancel-gateway-metrics-")
        )
        for stale in Path(metrics_dir).glob("*.db"):  # a previous run's samples
            stale.unlink()
        os.environ[METRICS_DIR_VARIABLE] = metrics_dir
        serve = functools.partial(
            serve_gateway, path, args.host, args.port, reuse_port=True, metrics_dir=metrics_dir
        )
        return run_workers(workers, serve)


def serve_gateway(
    path: Path,
    host: str | None,
    port: int | None,
    *,
    reuse_port: bool,
    metrics_dir: str | None = None,
) -> int:
    runtime = load_or_report(path)
    if runtime is None:
        return 1
    server = runtime.config.server
    app, log = gateway_app(
        runtime,
        batched=True,
        loader=functools.partial(load, path, os.environ),
        metrics_dir=metrics_dir,
    )
    listener = Listener(
        app,
        host or server.host,
        server.port if port is None else port,
        runtime.drain_timeout_s,
        reuse_port,
        server.keepalive_timeout_s,
        envelopes=True,
        backlog=server.backlog,
    )

    def started(urls: Sequence[str]) -> None:
        log_started(log, urls, path, runtime)

    async def reload() -> None:
        with contextlib.suppress(ConfigError):  # logged; the old configuration keeps serving
            await app[CONFIG].reload()

    try:
        run(serve_until_stopped([listener], started, on_reload=reload))
    except CannotListen as exc:
        print(exc, file=sys.stderr)
        return 1
    log_stopped(log, app[CONFIG].current.version)
    return 0


def log_stopped(log: FilteringBoundLogger, config_version: str) -> None:
    log.info("gateway.stopped", pid=os.getpid(), config_version=config_version)


def log_started(
    log: FilteringBoundLogger, urls: Sequence[str], path: Path, runtime: Runtime
) -> None:
    log.info(
        "gateway.started",
        urls=list(urls),
        config=str(path),
        config_version=runtime.version,
        connections=sorted(runtime.targets),
        pid=os.getpid(),
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    log = make_logger()
    definitions = []
    for file in args.definition:
        definition = _definition(file)
        if definition is None:
            return 1
        if definition.name in SIMULATED:
            print(f"{file}: {definition.name!r} is a built-in's simulator already", file=sys.stderr)
            return 1
        definitions.append(definition)
    given = [d.name for d in definitions]
    catalog = [d.name for d in catalog_definitions() if d.name not in given]
    served = [*SIMULATED, *catalog, *given]

    def started(urls: Sequence[str]) -> None:
        log.info("simulator.started", urls=list(urls), providers=served)

    app = create_simulator_app(definitions=definitions)
    listener = Listener(app, args.host, args.port, drain_timeout_s=1.0)
    try:
        run(serve_until_stopped([listener], started))
    except CannotListen as exc:
        print(exc, file=sys.stderr)
        return 1
    log.info("simulator.stopped")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The simulators on ``--simulators-port`` (default: a free one), the gateway in front of
    them on ``--port``; the logs go to stderr so the printed instructions stay readable on
    stdout."""
    path = Path(args.config) if args.config else DEMO_CONFIG
    environ = {"DEMO_CALLER_KEY": DEMO_CALLER_KEY, **os.environ}
    errors: list[str] = []
    # The gateway is built once the simulators listen (their URL is in its configuration).
    built: list[tuple[Runtime, FilteringBoundLogger, int]] = []

    def gateway(urls: Sequence[str]) -> Listener:
        try:
            runtime = load(path, {**environ, "SIMULATOR_URL": urls[0]})
        except ConfigError as exc:
            errors.extend(map(str, exc.problems))
            raise
        app, log = gateway_app(runtime, stream=sys.stderr)
        built.append((runtime, log, len(urls)))
        return Listener(app, "127.0.0.1", args.port, 5.0, envelopes=True)

    def started(urls: Sequence[str]) -> None:
        runtime, log, first = built[0]
        log_started(log, urls[first:], path, runtime)
        print(demo_banner(urls[-1], urls[0], environ["DEMO_CALLER_KEY"]), flush=True)

    simulators = Listener(
        create_simulator_app(accounts=_signing_accounts(path, environ)),
        "127.0.0.1",
        args.simulators_port,
        drain_timeout_s=1.0,
    )
    try:
        run(serve_until_stopped([simulators, gateway], started))
    except ConfigError:
        print("\n".join(errors), file=sys.stderr)
        return 1
    except CannotListen as exc:
        flag = "--port" if built else "--simulators-port"  # the simulators listen first
        print(f"{exc} (choose another with {flag})", file=sys.stderr)
        return 1
    runtime, log, _ = built[0]
    log_stopped(log, runtime.version)
    print("demo stopped", flush=True)
    return 0


def _signing_accounts(path: Path, environ: Mapping[str, str]) -> dict[str, Account]:
    """The demo's accounts at the simulated providers that sign: each checks the signatures
    the demo's connection makes with its own key and params. (A configuration that does not
    load is reported when the gateway loads it.)"""
    try:
        runtime = load(path, {**environ, "SIMULATOR_URL": "http://127.0.0.1:1"})
    except ConfigError:
        return {}
    return {
        target.definition.name: Account(target.credentials, target.params)
        for target in runtime.targets.values()
        if target.definition.signature is not None
    }


if __name__ == "__main__":
    sys.exit(main())
