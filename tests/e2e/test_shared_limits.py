"""Limits shared by replicas: two `serve` processes on one Redis keep, together, to the
provider's documented limit (Shoplazza: 2 requests a second per store), where limits of their
own would let each send that much."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import BASE_CONFIG, Upstream
from tests.e2e.conftest import ServeFactory, call, store_yaml
from tests.services import REDIS_URL

pytestmark = pytest.mark.e2e

CANCELLED = {"procurement": {"procurement_sn": "P-1", "state": 4}}


async def test_two_processes_on_one_redis_keep_to_one_limit(
    serve: ServeFactory, upstream: Upstream, tmp_path: Path, redis_prefix: str
):
    store = store_yaml(backend="redis", url=REDIS_URL, prefix=redis_prefix)
    config = tmp_path / "gateway.yaml"
    config.write_text(store + BASE_CONFIG.replace("timeout_s: 2", "timeout_s: 8"))
    upstream.always(200, CANCELLED)
    first, second = await asyncio.gather(serve(config), serve(config))
    urls = [await first.url(), await second.url()]
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(
            *(
                call(
                    session,
                    "POST",
                    f"{urls[n % 2]}/v1/cancellations",
                    {"connection": "shoplazza-main", "id": f"{n + 1}"},
                )
                for n in range(8)
            )
        )
    assert [a.status for a in answers] == [200] * 8, [a.body for a in answers]
    sent = sorted(upstream.arrivals)
    assert len(sent) == 8
    # 2 at once (the burst), then one every half second, for both processes together: the
    # eighth comes 3 s after the first. Two limits of their own would have sent all eight
    # within 1 s.
    assert sent[-1] - sent[0] >= 2.5
