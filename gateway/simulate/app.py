"""The simulator app: the four providers under their prefixes and the request journal,
served by ``cancel-gateway simulate`` and ``cancel-gateway demo``.

Beside the providers' own paths it answers ``GET /_journal`` (every request received, with
credential headers masked), ``DELETE /_journal`` (clears it) and ``/_redirected`` (the target
of the ``redirect`` scenario).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType, ModuleType

import yaml
from aiohttp import web

from gateway.definition import ProviderDefinition
from gateway.providers import builtin_files
from gateway.simulate import rxuniverse, shipper, shoplazza, stateset
from gateway.simulate.examples import add_definition_routes
from gateway.simulate.faults import REDIRECT_TARGET, Provider, redirected
from gateway.simulate.replies import Call, Reply, system_now
from gateway.simulate.signatures import Account
from gateway.simulate.state import (
    CLOCK_KEY,
    JOURNAL_KEY,
    KEYS_KEY,
    MASKED_HEADERS,
    SIMULATED,
    STATE_KEY,
    Clock,
    Journal,
    JournalEntry,
    SimulatorKeys,
    SimulatorState,
)

MODULES: tuple[ModuleType, ...] = (stateset, shipper, shoplazza, rxuniverse)
PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {module.NAME: module.PROVIDER for module in MODULES}
)
JOURNAL_PATH = "/_journal"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_simulator_app(
    keys: SimulatorKeys | None = None,
    *,
    state: SimulatorState | None = None,
    clock: Clock = system_now,
    definitions: Sequence[ProviderDefinition] = (),
    accounts: Mapping[str, Account] | None = None,
) -> web.Application:
    """One app that emulates every built-in provider under ``/<provider>`` (the four seed
    providers by their own emulations, the catalog's from their examples), and each of
    ``definitions`` under ``/<its name>`` from its examples (``examples.py``): one of these
    named like a catalog provider replaces it. ``accounts``, by provider name: the account
    whose signatures a simulated provider checks (unchecked without one)."""
    app = web.Application(middlewares=[journal_middleware])
    app[KEYS_KEY] = keys if keys is not None else SimulatorKeys()
    app[STATE_KEY] = state if state is not None else SimulatorState()
    app[JOURNAL_KEY] = Journal()
    app[CLOCK_KEY] = clock
    for module in MODULES:
        for path, handler in module.ROUTES:
            app.router.add_route("*", module.PREFIX + path, handler)
    given = {definition.name for definition in definitions}
    catalog = [d for d in catalog_definitions() if d.name not in given]
    for definition in [*definitions, *catalog]:
        add_definition_routes(app, definition, (accounts or {}).get(definition.name))
    for name, provider in PROVIDERS.items():
        # Registered last: resolution is in order, so these only catch unknown paths.
        app.router.add_route("*", f"/{name}", unknown_path(provider))
        app.router.add_route("*", f"/{name}/{{tail:.*}}", unknown_path(provider))
    app.router.add_get(JOURNAL_PATH, read_journal)
    app.router.add_delete(JOURNAL_PATH, clear_journal)
    app.router.add_route("*", REDIRECT_TARGET, redirected)
    return app


@functools.cache
def catalog_definitions() -> tuple[ProviderDefinition, ...]:
    """The built-in definitions without an emulation of their own (the catalog), simulated
    from their documented examples."""
    found = []
    for file in builtin_files():
        definition = ProviderDefinition.model_validate(yaml.safe_load(file.read_text("utf-8")))
        if definition.name not in SIMULATED:
            found.append(definition)
    return tuple(found)


def provider_of(path: str) -> str | None:
    first = path.lstrip("/").split("/", 1)[0]
    return first if first in SIMULATED else None


@web.middleware
async def journal_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record every request but the journal's own, then stamp the provider's request id."""
    if request.path == JOURNAL_PATH:
        return await handler(request)
    provider = provider_of(request.path)
    body = ""  # stays empty when the body cannot be read (over client_max_size: aiohttp's 413)
    try:
        body = (await request.read()).decode("utf-8", errors="replace")
    finally:
        # str(): header names are multidict istr, which orjson does not take as keys.
        headers = {str(name): value for name, value in request.headers.items()}
        entry = JournalEntry(provider, request.method, request.raw_path, headers, body)
        request.app[JOURNAL_KEY].record(entry)
    response = await handler(request)
    header = PROVIDERS[provider].request_id_header if provider else None
    if header and not response.prepared:
        response.headers[header] = request.app[STATE_KEY].next_request_id(provider or "")
    return response


def unknown_path(provider: Provider) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.path.removeprefix(f"/{provider.name}") or "/"
        call = Call(provider.name, request.method, path, "", request.app[CLOCK_KEY]())
        return provider.error(404, call).response()

    return handler


async def read_journal(request: web.Request) -> web.Response:
    """``GET /_journal[?provider=name]``: the journal as JSON, credentials masked."""
    masked = MASKED_HEADERS | {request.app[KEYS_KEY].rxuniverse_header.lower()}
    wanted = request.query.get("provider")
    entries = [
        entry.public(masked)
        for entry in request.app[JOURNAL_KEY]
        if wanted is None or entry.provider == wanted
    ]
    return Reply(200, entries).response()


async def clear_journal(request: web.Request) -> web.Response:
    request.app[JOURNAL_KEY].clear()
    return web.Response(status=204)
