"""A fast StateSet emulation: ``POST /v1/asns/{id}/cancel`` answers StateSet's documented
success body (200, ``"status": "cancelled"``) after ``--delay-ms`` (0: at once), and
``POST /oauth/token`` issues a token for the row that fetches one.

    python -m bench.upstream --port 9001 --delay-ms 20

With ``BENCH_STATESET_KEY`` set, any other bearer key gets StateSet's 401, so a benchmark that
sends the wrong credential shows non-2xx answers instead of fast ones.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import os
import time

import orjson
from aiohttp import web

from bench._serve import serve

NOTIFY = ({"type": "email", "recipient": "supplier@audiotech.com"},)
UNAUTHORIZED = orjson.dumps(
    {
        "error": {
            "type": "authentication_error",
            "code": "INVALID_API_KEY",
            "message": "Invalid API key provided",
        }
    }
)
BAD_BODY = orjson.dumps(
    {
        "error": {
            "type": "invalid_request_error",
            "code": "parameter_missing",
            "message": "reason and cancelled_by are required",
        }
    }
)


def create_app(delay_s: float, key: str | None) -> web.Application:
    expected = f"Bearer {key}".encode() if key else None

    async def cancel(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").encode()
        if expected is not None and not hmac.compare_digest(given, expected):
            return web.Response(status=401, body=UNAUTHORIZED, content_type="application/json")
        try:
            body = orjson.loads(await request.read())
            reason, cancelled_by = body["reason"], body["cancelled_by"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.Response(status=400, body=BAD_BODY, content_type="application/json")
        if delay_s:
            await asyncio.sleep(delay_s)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        answer = {
            "id": request.match_info["id"],
            "object": "asn",
            "asn_number": "ASN-2024-00001",
            "status": "cancelled",
            "cancelled_at": now,
            "cancelled_by": cancelled_by,
            "cancellation_reason": reason,
            "purchase_order_id": "po_123456789",
            "supplier_id": "sup_abc123",
            "items_affected": [
                {"sku": "WBH-001", "quantity": 500},
                {"sku": "USB-C-001", "quantity": 1000},
            ],
            "notifications_sent": (
                [{**n, "sent_at": now} for n in NOTIFY] if body.get("notify_supplier", True) else []
            ),
            "notes": body.get("notes"),
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def token(request: web.Request) -> web.Response:
        # OAuth2 client credentials, for the row that fetches its token: the token issued is
        # the key the cancel checks, valid for an hour (fetched once per measured run).
        await request.read()
        answer = {"access_token": key or "bench-token", "token_type": "Bearer", "expires_in": 3600}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/asns/{id}/cancel", cancel)
    app.router.add_post("/oauth/token", token)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    serve(create_app(args.delay_ms / 1000, os.environ.get("BENCH_STATESET_KEY")), args.port)


if __name__ == "__main__":
    main()
