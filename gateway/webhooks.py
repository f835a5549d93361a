"""Webhook deliveries of a settled cancellation, signed as Standard Webhooks describe them.

Spec: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md

A caller's receiver verifies each POST with any Standard Webhooks library, so everything signed
here follows the spec to the byte:

- The body is built once, by splicing the stored final envelope into the event's JSON, never by
  decoding and re-encoding it: the bytes signed are the bytes sent, and a repeat sends the very
  same bytes (only ``webhook-timestamp`` and the signature change between attempts).
- The signature is HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{body}`` with the key the
  secret's base64 decodes to, in the stdlib only: a few lines that a known answer pins down.
- A delivery is a 2xx answer within the timeout; anything else, a redirect included, is a failure
  to repeat on the retry schedule. Redirects are never followed: a receiver's URL that moved is
  fixed in the configuration, not chased, and following one would send the signed body somewhere
  the caller did not configure.
- What a failure records is a status or a short fixed code. The receiver's answer body is never
  read, and no exception text goes into a ``Delivery``, since it may quote the URL's query string.
- The secret never appears in an error message: it comes from the environment and errors are
  logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import orjson

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's marker, not a secret
EVENT_TYPE = "cancellation.settled"

# The spec's table of signature schemes: an HMAC-SHA256 signing secret is "Random. At least 24
# bytes (192 bits, 512 maximum)", i.e. 24 to 64 bytes.
# https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md#signature-scheme
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64

# Seconds to wait after the 1st, 2nd, ... failed delivery (CONTRACT.md §10).
DEFAULT_RETRY_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_TIMEOUT_S = 15.0


def secret_key(secret: str) -> bytes:
    """The HMAC key behind a ``whsec_<base64>`` secret.

    Raises ValueError when the secret is malformed; the message describes the problem, never the
    secret itself.
    """
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"a webhook secret must start with {WEBHOOK_SECRET_PREFIX!r}")
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    # Padding may be left out, as the spec's reference libraries accept.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"a webhook secret must be {WEBHOOK_SECRET_PREFIX!r} followed by standard base64"
        ) from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"a webhook secret must decode to {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, "
            f"not {len(key)}"
        )
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and the base64 HMAC-SHA256 of
    ``{webhook_id}.{timestamp}.{body}``.

    The id may not contain ``.``, which would make the signed content ambiguous (the spec's
    "Signature scheme").
    """
    if "." in webhook_id:
        raise ValueError("a webhook id may not contain '.'")
    signed = b"%s.%d.%s" % (webhook_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def event_body(envelope: bytes, at: datetime) -> bytes:
    """``{"type": "cancellation.settled", "timestamp": <at>, "data": <envelope>}`` as sent.

    ``envelope`` is the final envelope's JSON, spliced in as it is. ``at`` must be timezone-aware;
    it is written in RFC 3339, in UTC, with ``Z``.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("the event timestamp must be timezone-aware")
    data = envelope.strip()
    if not data.startswith(b"{") or not data.endswith(b"}"):
        raise ValueError("the envelope must be a JSON object")
    when = orjson.dumps(at.astimezone(UTC), option=orjson.OPT_UTC_Z)
    return b'{"type":"%s","timestamp":%s,"data":%s}' % (EVENT_TYPE.encode(), when, data)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt: ``ok`` for a 2xx; else the answer's ``status``, or ``error`` when there was
    none (``timeout``, ``connection_error``, ``invalid_response``, ``invalid_url``)."""

    ok: bool
    status: int | None
    error: str | None
    latency_ms: float


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    webhook_id: str,
    key: bytes,
    now: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Delivery:
    """POST one signed event to ``url``; ``now`` (unix seconds) is the attempt's timestamp.

    Never raises for what the receiver or the network does: every outcome is a ``Delivery``.
    """
    headers = {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(now),
        "webhook-signature": signature(key, webhook_id, now, body),
    }
    started = time.monotonic()

    def done(status: int | None, error: str | None = None) -> Delivery:
        ok = status is not None and 200 <= status <= 299
        return Delivery(ok, status, error, (time.monotonic() - started) * 1000)

    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            # The answer's status is all that counts; its body is left unread.
            return done(response.status)
    except TimeoutError:  # aiohttp's own timeouts derive from it too
        return done(None, "timeout")
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError):
        return done(None, "invalid_url")
    except aiohttp.ClientResponseError:
        return done(None, "invalid_response")
    except (aiohttp.ClientError, OSError):
        return done(None, "connection_error")


def next_delay(schedule: Sequence[float], failures: int) -> float | None:
    """Seconds to wait after ``failures`` failed deliveries (1 or more), or None when the
    schedule is spent and the event is given up."""
    if failures < 1:
        raise ValueError("next_delay is asked after a failure")
    if failures > len(schedule):
        return None
    return float(schedule[failures - 1])
