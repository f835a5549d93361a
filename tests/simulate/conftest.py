"""The simulator app behind pytest-aiohttp's test client, with a fixed clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway.simulate import JOURNAL_KEY, SimulatorKeys, SimulatorState, create_simulator_app
from gateway.simulate.state import JournalEntry

NOW = datetime(2024, 1, 16, 10, 30, tzinfo=UTC)
KEYS = SimulatorKeys()
STATESET_BODY = {
    "reason": "Supplier notified of production delay",
    "cancelled_by": "purchasing@company.com",
    "notify_supplier": True,
    "notes": "Shipment delayed by 2 weeks due to material shortage.",
}
SHIPPER_PATH = "/shipper/v3/fulfillment/outbound/oms/cancel"


def shipper_body(
    order_no: Any = "SO-1", cancel_reason: Any = "cancel aja", warehouse_id: Any = "PMU"
) -> dict[str, Any]:
    return {
        "data": {
            "cancellation": {
                "order_no": order_no,
                "cancel_reason": cancel_reason,
                "warehouse_id": warehouse_id,
            }
        }
    }


@dataclass
class Answer:
    status: int
    headers: Any
    raw: bytes

    def json(self) -> Any:
        return orjson.loads(self.raw)


class Sim:
    """Sends each provider's cancel request the way its document shows, with the demo keys."""

    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self.client = client
        self.app = client.app
        self._recorded = asyncio.Event()
        journal = self.app[JOURNAL_KEY]
        record = journal.record

        def recording(entry: JournalEntry) -> None:
            record(entry)
            self._recorded.set()

        journal.record = recording  # type: ignore[method-assign]

    async def arrived(self, count: int, timeout_s: float = 5.0) -> None:
        """Return once the simulator has journaled ``count`` requests: each was read and is
        being answered."""
        journal = self.app[JOURNAL_KEY]
        async with asyncio.timeout(timeout_s):
            while len(journal) < count:
                self._recorded.clear()
                await self._recorded.wait()

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
    ) -> Answer:
        if json is not None:
            data = orjson.dumps(json)
        url = URL(path, encoded=True)
        async with self.client.request(
            method, url, headers=headers, data=data, allow_redirects=False
        ) as response:
            return Answer(response.status, response.headers, await response.read())

    async def stateset(
        self,
        asn_id: str,
        body: Any = STATESET_BODY,
        *,
        key: str | None = KEYS.stateset,
        method: str = "POST",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        path = f"/stateset/v1/asns/{quote(asn_id, safe='')}/cancel"
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        return await self.send(method, path, headers=sent, data=data)

    async def shipper(
        self,
        order_no: str = "SO-1",
        body: Any = None,
        *,
        key: str | None = KEYS.shipper,
        method: str = "PATCH",
    ) -> Answer:
        sent = {"Content-Type": "application/json"}
        if key is not None:
            sent["x-api-key"] = key
        payload = shipper_body(order_no) if body is None else body
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return await self.send(method, SHIPPER_PATH, headers=sent, data=data)

    async def shoplazza(
        self,
        procurement_id: str,
        *,
        key: str | None = KEYS.shoplazza,
        method: str = "PATCH",
        shop: str = "demo-shop",
        version: str = "2022-01",
    ) -> Answer:
        sent = {"Content-Type": "application/json"}
        if key is not None:
            sent["Access-Token"] = key
        path = f"/shoplazza/{shop}/openapi/{version}/procurements/{quote(procurement_id, safe='')}/cancel"
        return await self.send(method, path, headers=sent)

    async def rxuniverse(
        self,
        identifier: str,
        reason: str | None = None,
        *,
        key: str | None = KEYS.rxuniverse,
        method: str = "DELETE",
    ) -> Answer:
        sent = {} if key is None else {"x-api-key": key}
        path = f"/rxuniverse/api/v2/orders/{quote(identifier, safe='')}"
        if reason is not None:
            path += f"?deleteReason={quote(reason, safe='')}"
        return await self.send(method, path, headers=sent)

    async def cancel(self, provider: str, object_id: str) -> Answer:
        """A valid cancel of ``object_id`` at ``provider``."""
        if provider == "stateset":
            return await self.stateset(object_id)
        if provider == "shipper":
            return await self.shipper(object_id)
        if provider == "shoplazza":
            return await self.shoplazza(object_id)
        return await self.rxuniverse(object_id)


ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
SimFactory = Callable[..., Awaitable[Sim]]


@pytest.fixture
def make_sim(aiohttp_client: ClientFactory) -> SimFactory:
    async def factory(
        keys: SimulatorKeys | None = None,
        state: SimulatorState | None = None,
        clock: Callable[[], datetime] = lambda: NOW,
    ) -> Sim:
        app = create_simulator_app(keys, state=state, clock=clock)
        return Sim(await aiohttp_client(app))

    return factory


@pytest.fixture
async def sim(make_sim: SimFactory) -> Sim:
    return await make_sim()
