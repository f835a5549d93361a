"""``cancel-gateway``: serve, check-config. The only place that reads the
environment."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.app import create_app
from gateway.loader import Runtime, load
from gateway.logging import make_logger
from gateway.problems import ConfigError
from gateway.serve import Listener, run_workers, serve_until_stopped

DEFAULT_CONFIG = "config/gateway.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cancel-gateway", description="One endpoint that cancels on any provider."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=f"default: $GATEWAY_CONFIG, else {DEFAULT_CONFIG}")
    serve.add_argument("--host", help="overrides server.host")
    serve.add_argument("--port", type=int, help="overrides server.port")
    serve.add_argument("--workers", type=int, help="processes sharing the port (SO_REUSEPORT)")
    serve.set_defaults(run=cmd_serve)

    check = commands.add_parser("check-config", help="load and validate the configuration")
    check.add_argument("--config", help=f"default: $GATEWAY_CONFIG, else {DEFAULT_CONFIG}")
    check.set_defaults(run=cmd_check_config)

    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


def config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG)


def load_or_report(path: Path) -> Runtime | None:
    try:
        return load(path, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    runtime = load_or_report(path)
    if runtime is None:
        return 1
    config = runtime.config
    used = sorted({t.definition.name for t in runtime.targets.values()})
    print(
        f"ok: {path}: {len(config.callers)} callers, {len(runtime.targets)} connections "
        f"({', '.join(used) or 'none'}), {len(runtime.providers)} provider definitions, "
        f"version {runtime.version}"
    )
    return 0


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
    return run_workers(
        workers, functools.partial(serve_gateway, path, args.host, args.port, reuse_port=True)
    )


def serve_gateway(path: Path, host: str | None, port: int | None, *, reuse_port: bool) -> int:
    runtime = load_or_report(path)
    if runtime is None:
        return 1
    server = runtime.config.server
    log = make_logger(runtime.secrets, level=runtime.config.logging.level)
    listener = Listener(
        create_app(runtime, log=log),
        host or server.host,
        server.port if port is None else port,
        runtime.drain_timeout_s,
        reuse_port,
    )

    def started(urls: Sequence[str]) -> None:
        log.info(
            "gateway.started",
            urls=list(urls),
            config=str(path),
            config_version=runtime.version,
            connections=sorted(runtime.targets),
            pid=os.getpid(),
        )

    asyncio.run(serve_until_stopped([listener], started))
    log.info("gateway.stopped", pid=os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
