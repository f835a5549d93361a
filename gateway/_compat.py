"""Every reach into another library's private parts, and nowhere else.

Each reach says why no public API does the job (with the library's issue) and checks the shape
it relies on: at import where that is cheap, else when it is used, so that an upgrade that
changes it fails loudly at start, never quietly at the first malformed request.
``tests/test_compat.py`` exercises each one.
"""

from __future__ import annotations

import inspect
from typing import Any

import aiohttp
import jmespath
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest


class LibraryChanged(RuntimeError):
    """A library no longer has the private part the gateway relies on: pin it, or adapt."""


# --- aiohttp's client: no silent second send ---------------------------------------------------
#
# aiohttp re-sends a GET/PUT/DELETE once by itself when a pooled connection turns out dead after
# the request was written. Every send must be a counted attempt under the gateway's retry rules
# (a DELETE the provider received may not be repeated unless the definition says so), and the
# only switch is a private attribute: aio-libs/aiohttp#10790 ("There is no way to disable request
# retry in ClientSession._request()"). pyproject.toml caps aiohttp below its next minor release.


def disable_client_resend(session: aiohttp.ClientSession) -> None:
    if not isinstance(getattr(session, "_retry_connection", None), bool):
        raise LibraryChanged(
            f"aiohttp {aiohttp.__version__}: ClientSession._retry_connection is gone, so its "
            "silent re-send of idempotent requests cannot be turned off"
        )
    session._retry_connection = False


# --- aiohttp's server: the answer to a request it cannot parse ----------------------------------
#
# aiohttp answers a request it cannot parse itself (plain text quoting the offending bytes, a
# caller's key among them) from RequestHandler.handle_error, which the Server builds from its
# private _loop and _kwargs; AppRunner builds the Server in its private _make_server. There is
# no hook for that answer: aio-libs/aiohttp#3287 ("Add support for custom handling of requests
# that throw in aiohttp.http_exceptions.*", open since 2018).

_HANDLE_ERROR = ("request", "status", "exc", "message")
if tuple(inspect.signature(RequestHandler.handle_error).parameters)[
    1:
] != _HANDLE_ERROR or not inspect.iscoroutinefunction(web.AppRunner._make_server):
    raise LibraryChanged(
        f"aiohttp {aiohttp.__version__}: RequestHandler.handle_error or AppRunner._make_server "
        "changed; the gateway's answer to malformed HTTP needs adapting (gateway/_compat.py)"
    )


class ErrorHandler(RequestHandler):
    """A request handler whose answer to a request aiohttp could not parse (or whose
    handling failed outside the app) is ``answer(request, status, exc)``."""

    __slots__ = ("_answer",)

    def __init__(self, manager: web.Server, *, answer: Any, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._answer = answer

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response: web.StreamResponse = self._answer(request, status, exc)
        if request.writer.output_size > 0:  # as aiohttp: an answer had begun, none can follow
            raise ConnectionError("an answer had begun: the connection is closed")
        response.force_close()
        return response


class _ErrorServer(web.Server):
    answer: Any

    def __call__(self) -> RequestHandler:
        return ErrorHandler(self, answer=self.answer, loop=self._loop, **self._kwargs)


class ErrorAnsweringRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer malformed HTTP with ``answer``."""

    def __init__(self, app: web.Application, answer: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._answer = answer

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        if not hasattr(server, "_loop") or not isinstance(getattr(server, "_kwargs", None), dict):
            raise LibraryChanged(
                f"aiohttp {aiohttp.__version__}: web.Server no longer keeps _loop and _kwargs"
            )
        server.__class__ = _ErrorServer
        server.answer = self._answer  # type: ignore[attr-defined]
        return server


# --- jmespath's parse tree: the common expressions without the interpreter ----------------------
#
# Most expressions of a definition are a chain of fields (`procurement.updated_at`) or such a
# chain compared with a literal (`status == 'cancelled'`). They are evaluated directly, many times
# faster than jmespath's tree interpreter, which needs their parse tree: jmespath exposes it only
# as ``ParsedResult.parsed``, dicts of an undocumented shape (jmespath/jmespath.py#62 made the
# nodes dicts; typeshed types them as internals). tests/test_definition.py checks the
# direct answers against jmespath's on many documents.

_EXPECTED = {
    "a.b": {
        "type": "subexpression",
        "children": [
            {"type": "field", "children": [], "value": "a"},
            {"type": "field", "children": [], "value": "b"},
        ],
    },
    "a == 'x'": {
        "type": "comparator",
        "children": [
            {"type": "field", "children": [], "value": "a"},
            {"type": "literal", "children": [], "value": "x"},
        ],
        "value": "eq",
    },
}
if any(jmespath.compile(text).parsed != tree for text, tree in _EXPECTED.items()):
    raise LibraryChanged(
        f"jmespath {jmespath.__version__}: the parse tree's shape changed (gateway/_compat.py)"
    )


def field_keys(node: Any) -> list[str] | None:
    """The keys of a plain chain of fields, or None when the node is anything else."""
    if node["type"] == "field":
        return [node["value"]]
    if node["type"] == "subexpression":
        keys: list[str] = []
        for child in node["children"]:
            found = field_keys(child)
            if found is None:
                return None
            keys += found
        return keys
    return None


def field_comparison(node: Any) -> tuple[list[str], Any, bool] | None:
    """``(keys, literal, equal)`` for `chain == literal` or `chain != literal`, else None."""
    if node["type"] != "comparator" or node["value"] not in ("eq", "ne"):
        return None
    left, right = node["children"]
    keys = field_keys(left)
    if keys is None or right["type"] != "literal":
        return None
    return keys, right["value"], node["value"] == "eq"
