"""Settling an unknown outcome (CONTRACT §10): after an attempt that may have reached the
provider without a usable answer (a timeout, a reset, a 5xx after sending), and before any
repeat, the resource's status probe asks the provider what became of the object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from structlog.typing import FilteringBoundLogger

from gateway.errors import ErrorCode, GatewayError
from gateway.outbound import MIN_ATTEMPT_S, Outbound, Tried
from gateway.translate.wire import UpstreamRequest

# What an attempt of a resource with a probe leaves of the budget for it: a fifth of the
# connection's timeout_s, at least half a second.
PROBE_SHARE = 0.2
PROBE_MIN_S = 0.5
# The least a repeat that leaves a probe its share must have for itself.
USEFUL_ATTEMPT_S = 0.1

# What an attempt ends with when its fate is unknown: no answer, or one that says nothing.
_UNKNOWN = frozenset(
    {ErrorCode.PROVIDER_TIMEOUT, ErrorCode.PROVIDER_ERROR, ErrorCode.PROVIDER_BAD_RESPONSE}
)

Exchange = Callable[
    [Outbound, float, int, FilteringBoundLogger, UpstreamRequest | None], Awaitable[Tried]
]


def kept_for_probe(outbound: Outbound) -> float:
    """Seconds of the budget a cancel attempt leaves for a probe (0 without one)."""
    resource = outbound.target.definition.resources[outbound.resource]
    if resource.probe is None or outbound.reading or outbound.probing:
        return 0.0
    return max(PROBE_SHARE * outbound.policy.timeout_s, PROBE_MIN_S)


def unknown(outbound: Outbound, tried: Tried) -> bool:
    """Did the attempt end without knowing what the provider did, for a resource that can
    ask?"""
    if (
        outbound.reader is None
        or outbound.target.definition.resources[outbound.resource].probe is None
    ):
        return False
    outcome = tried.outcome
    return (
        tried.sent
        and not tried.final
        and (tried.status is None or tried.status >= 500)
        and outcome.rule is None  # a rule that read the answer knows what happened
        and outcome.code in _UNKNOWN
    )


async def probe(
    exchange: Exchange,
    outbound: Outbound,
    deadline: float,
    now: Callable[[], float],
    attempt: int,
    log: FilteringBoundLogger,
    answer: Mapping[str, Any] | None = None,
) -> Tried | None:
    """How the probe ended (its outcome's ``probed`` says what it found), or None when no
    probe could be made (no time left, a request that cannot be built). ``answer``: what a
    pending answer of the cancel gave, for a probe that names it."""
    assert outbound.reader is not None
    if deadline - now() < MIN_ATTEMPT_S:
        log.info("upstream.probe_skipped", attempt=attempt, reason="no_time_left")
        return None
    try:
        request = outbound.reader.probe(answer)
    except GatewayError as exc:
        log.warning("upstream.probe_skipped", attempt=attempt, reason=exc.message)
        return None
    probing = replace(outbound, reader=None, probing=True)
    tried = await exchange(probing, deadline, attempt, log, request)
    found = tried.outcome.probed
    log.info("upstream.probe", attempt=attempt, result=found or "unknown", status=tried.status)
    return tried
