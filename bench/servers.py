"""The servers measured, each a fresh process on a free loopback port: the upstream emulation
(bench/upstream.py, also the ``direct`` row), the baseline (bench/baseline.py) and
``cancel-gateway serve`` with a config written for the row; what wrk sends each of them, one
probe before a server is measured, and what the gateway's log says after.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import redis
import yaml

from bench.processes import Children, free_port, wait_listening
from bench.wrk import Request

# Loopback-only values for processes this benchmark starts and stops: not secrets.
CALLER_KEY = "bench-caller-key-0123456789"
STATESET_KEY = "sk_test_bench_0123456789"
CONNECTION = "stateset-bench"

Server = tuple[subprocess.Popen[bytes], int]  # a listening server's process, and its port


@dataclass(frozen=True)
class Gateway:
    """``cancel-gateway serve`` as measured: its workers, whether the logs are on (the
    default), and how StateSet's request carries its credential: its key (the built-in), a
    token fetched from the upstream and cached (OAuth2 client credentials), or the key and a
    signature (HMAC-SHA256 over the method, the path, a timestamp and the body). The rows
    without the logs, with a token and with a signature say, in the same run, what each costs."""

    workers: int = 1
    logs: bool = True
    auth: Literal["key", "token", "signed"] = "key"
    timeout_s: float = 10
    # The connection's breaker and limits: their defaults, or set so high nothing is refused.
    guarded: bool = False
    rate_per_s: float = 0  # the connection's rate limit (0: none)
    store: Literal["sqlite", "redis"] = "sqlite"  # redis: REDIS_URL, by default on loopback


GATEWAYS = {
    "gateway": Gateway(),
    "gateway-w2": Gateway(workers=2),
    "gateway-no-logs": Gateway(logs=False),  # warnings and errors only, no access log
    "gateway-token": Gateway(auth="token"),
    "gateway-signed": Gateway(auth="signed"),
    # The budget under load: a 5 s budget, the breaker and limits as they come.
    "gateway-budget": Gateway(timeout_s=5, guarded=True),
    # Two processes sharing one Redis (what replicas share), a provider limit of 2/s.
    "gateway-shared": Gateway(workers=2, store="redis", rate_per_s=2),
}
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
STATESET = Path(__file__).parents[1] / "gateway" / "providers" / "stateset.yaml"


def provider_file(folder: Path, auth: str, upstream_port: int) -> str:
    """StateSet's definition with ``auth`` changed, written next to the config: its name."""
    definition = yaml.safe_load(STATESET.read_text())
    definition.pop("examples")  # they pin the built-in's key header
    definition["name"] = f"stateset-{auth}"
    if auth == "token":
        definition["credentials"] = {"client_id": {}, "client_secret": {}}
        definition["auth"] = {
            "type": "oauth2_client_credentials",
            "token_url": f"http://127.0.0.1:{upstream_port}/oauth/token",
            "client_id": "{credentials.client_id}",
            "client_secret": "{credentials.client_secret}",
        }
    else:
        definition["credentials"]["signing_key"] = {}
        definition["resources"]["asn"]["headers"]["X-Timestamp"] = "{now.unix}"
        definition["signature"] = {
            "algorithm": "hmac-sha256",
            "key": "{credentials.signing_key}",
            "message": [{"part": "method"}, {"part": "path"}, "{now.unix}", {"part": "body"}],
            "header": "X-Signature",
        }
    (folder / f"stateset-{auth}.yaml").write_text(yaml.safe_dump(definition))
    return f"stateset-{auth}"


def gateway_config(
    folder: Path, upstream_port: int, gateway: Gateway = GATEWAYS["gateway"]
) -> Path:
    """Every default on (SQLite ledger, JSON logs, access log) unless ``gateway`` turns the
    logs off; limits no run reaches, so nothing is refused, unless ``gateway`` is guarded or
    has a rate limit."""
    path = folder / "gateway.yaml"
    logging = (
        "level: info\n  access_log: true" if gateway.logs else "level: warning\n  access_log: false"
    )
    provider, providers = "stateset", ""
    credentials = "api_key: ${BENCH_STATESET_KEY}"
    if gateway.auth != "key":
        provider = provider_file(folder, gateway.auth, upstream_port)
        providers = f"providers: [{provider}.yaml]\n"
    if gateway.auth == "token":
        credentials = "{client_id: bench-client-0123, client_secret: bench-secret-0123}"
    if gateway.auth == "signed":
        credentials += "\n      signing_key: bench-signing-key-0123"
    store = "backend: sqlite\n  path: ledger.db"
    if gateway.store == "redis":
        store = f"backend: redis\n  url: {REDIS_URL}\n  prefix: '{redis_prefix(folder)}'"
    guards = (
        ""
        if gateway.guarded
        else "    breaker: {failures: 10000}\n"
        f"    limits: {{concurrency: 100000, rate_per_s: {gateway.rate_per_s:g}}}\n"
    )
    path.write_text(
        providers
        + f"""\
server:
  host: 127.0.0.1
store:
  {store}
logging:
  {logging}
callers:
  - name: bench
    key: ${{BENCH_CALLER_KEY}}
    connections: ["*"]
connections:
  {CONNECTION}:
    provider: {provider}
    base_url: http://127.0.0.1:{upstream_port}
    credentials:
      {credentials}
    timeout_s: {gateway.timeout_s:g}
{guards}"""
    )
    return path


def redis_prefix(folder: Path) -> str:
    """The Redis keys of one row: its own, so nothing another run left counts; removed after."""
    return f"bench:{hashlib.sha256(str(folder).encode()).hexdigest()[:12]}:"


def forget_redis(folder: Path) -> None:
    """Remove the keys a row left in Redis."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=f"{redis_prefix(folder)}*", count=1000):
            client.delete(key)
    finally:
        client.close()


def environment() -> dict[str, str]:
    return {**os.environ, "BENCH_CALLER_KEY": CALLER_KEY, "BENCH_STATESET_KEY": STATESET_KEY}


def gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "cancel-gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def request_for(target: str, port: int) -> Request:
    """StateSet's cancel request for ``direct``, the gateway's canonical one for the others."""
    if target == "direct":
        body = json.dumps({"reason": "bench", "cancelled_by": "bench", "notify_supplier": True})
        return Request(
            f"http://127.0.0.1:{port}", "/v1/asns/asn_bench_%d/cancel", body, STATESET_KEY
        )
    body = json.dumps({"connection": CONNECTION, "id": "asn_bench_%d", "reason": "bench"})
    return Request(f"http://127.0.0.1:{port}", "/v1/cancellations", body, CALLER_KEY)


def probe(port: int, request: Request, *, refusals: bool = False) -> None:
    """One request as wrk will send it; a server that does not answer 2xx ``cancelled`` (any
    envelope, with ``refusals``) is not measured."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {request.key}"}
        path, body = request.path.replace("%d", "0"), request.body.replace("%d", "0")
        connection.request("POST", path, body, headers)
        answer = connection.getresponse()
        text = answer.read().decode(errors="replace")
    finally:
        connection.close()
    try:
        status = json.loads(text).get("status")
    except ValueError:
        status = None
    if (status is None or not refusals) and (answer.status // 100 != 2 or status != "cancelled"):
        raise RuntimeError(f"probe of port {port} answered {answer.status}: {text[:500]}")


@contextlib.contextmanager
def upstream(delay_ms: int, children: Children, log: Path) -> Iterator[Server]:
    """The StateSet emulation, answering after ``delay_ms``, listening."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.upstream", "--port", str(port)]
    argv += ["--delay-ms", str(delay_ms)]
    with _listening(argv, port, 1, children, log) as process:
        yield process, port


@contextlib.contextmanager
def server(target: str, upstream_port: int, children: Children, folder: Path) -> Iterator[Server]:
    """The server under test for ``target`` (``baseline`` or a name of GATEWAYS), listening,
    its output in ``folder``/server.log."""
    port, workers = free_port(), 1
    log = folder / "server.log"
    if target == "baseline":
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        argv = [sys.executable, "-m", "bench.baseline", "--port", str(port)]
        argv += ["--upstream", upstream_url, "--connection", CONNECTION]
    else:
        gateway = GATEWAYS[target]
        config, workers = gateway_config(folder, upstream_port, gateway), gateway.workers
        argv = [*gateway_command(), "serve", "--config", str(config), "--port", str(port)]
        argv += ["--workers", str(workers)]
    try:
        with _listening(argv, port, workers, children, log) as process:
            yield process, port
    finally:
        if target in GATEWAYS and GATEWAYS[target].store == "redis":
            forget_redis(folder)


@contextlib.contextmanager
def _listening(
    argv: list[str], port: int, workers: int, children: Children, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` started with its output in ``log``, once it listens on ``port``; stopped after."""
    with log.open("wb") as out:
        process = children.start(argv, env=environment(), out=out)
    try:
        wait_listening(process, port, workers, log)
        yield process
    finally:
        children.stop(process)


def log_note(log: Path) -> str:
    """The gateway's own log, as a check that it logged, and what it said besides ``info``:
    the events of its warnings and errors and the statuses of its non-2xx answers."""
    lines = answers = 0
    unusual = collections.Counter[str]()
    with log.open("rb") as stream:
        for line in stream:
            lines += 1
            try:
                event = json.loads(line)
            except ValueError:
                unusual["non-JSON line"] += 1
                continue
            level, status = event.get("level"), event.get("status")
            if level != "info":
                code = event.get("error_code") or event.get("code") or ""
                unusual[f"{level} {event.get('event')} {code}".strip()] += 1
            elif event.get("event") == "http.request":
                answers += 1
                if not 200 <= status < 300:
                    unusual[f"answered {status}"] += 1
    size = log.stat().st_size / 2**20
    per = f"{lines / answers:.2f} lines per answer" if answers else "no access log line"
    said = "".join(f"; {what}: {n}" for what, n in unusual.most_common(6))
    return f"{lines} lines ({size:.1f} MiB), {per}{said}"
