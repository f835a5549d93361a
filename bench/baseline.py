"""A minimal honest aiohttp translator, the yardstick of the gateway: it checks the caller's
bearer key, validates the canonical request with pydantic, sends StateSet's cancel request
through one pooled session, checks the answer and replies with a small JSON envelope. No
ledger, no logs, no retries.

    BENCH_CALLER_KEY=... BENCH_STATESET_KEY=... \\
        python -m bench.baseline --port 9002 --upstream http://127.0.0.1:9001
"""

from __future__ import annotations

import argparse
import hmac
import os
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench._serve import serve

CALLER = "bench"
SESSION = web.AppKey("session", aiohttp.ClientSession)


class Cancel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    connection: str = Field(min_length=1, max_length=200)
    id: str = Field(min_length=1, max_length=128)
    reason: str | None = Field(default=None, max_length=500)


def reply(http_status: int, **fields: object) -> web.Response:
    return web.Response(
        status=http_status, body=orjson.dumps(fields), content_type="application/json"
    )


def create_app(
    upstream: str, connection: str, caller_key: str, stateset_key: str
) -> web.Application:
    expected = f"Bearer {caller_key}".encode()
    headers = {"Authorization": f"Bearer {stateset_key}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=10, sock_connect=3)

    async def cancel(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return reply(401, status="rejected", error="unauthorized")
        try:
            wanted = Cancel.model_validate_json(await request.read())
        except ValidationError as exc:
            return reply(422, status="rejected", error="invalid_request", detail=str(exc))
        if wanted.connection != connection:
            return reply(404, status="rejected", error="unknown_connection")
        url = f"{upstream}/v1/asns/{quote(wanted.id, safe='')}/cancel"
        body = orjson.dumps(
            {"reason": wanted.reason, "cancelled_by": CALLER, "notify_supplier": True}
        )
        try:
            async with request.app[SESSION].post(
                url, data=body, headers=headers, timeout=timeout
            ) as answer:
                status, raw = answer.status, await answer.read()
        except TimeoutError:
            return reply(504, status="failed", error="provider_timeout")
        except aiohttp.ClientError:
            return reply(502, status="failed", error="provider_error")
        try:
            parsed = orjson.loads(raw) if status == 200 else None
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict) or parsed.get("status") != "cancelled":
            return reply(502, status="failed", error="provider_error", provider_status=status)
        return reply(
            200,
            status="cancelled",
            connection=connection,
            resource_id=wanted.id,
            cancelled_at=parsed.get("cancelled_at"),
        )

    async def session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as app[SESSION]:
            yield

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_post("/v1/cancellations", cancel)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="StateSet's base URL")
    parser.add_argument("--connection", default="stateset-bench")
    args = parser.parse_args()
    caller_key, stateset_key = os.environ["BENCH_CALLER_KEY"], os.environ["BENCH_STATESET_KEY"]
    app = create_app(args.upstream.rstrip("/"), args.connection, caller_key, stateset_key)
    serve(app, args.port)


if __name__ == "__main__":
    main()
