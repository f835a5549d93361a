"""The operator console (``server.console``): four static files shipped with the package, served
from memory at ``/console``. The pages hold no data and no secret: they ask for a caller key,
keep it in the tab's ``sessionStorage`` and read the API with it, so they see exactly what that
caller may see. No cookie, hence no cross-site request to forge; a strict Content-Security-Policy
(scripts and styles from this origin only, no inline script) and no framing."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

# name → content type; nothing else is served under /console/.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
FILES = web.AppKey("console_files", dict)


def add_routes(app: web.Application) -> None:
    """``GET /console`` (the page) and ``GET /console/{name}`` (its files), read once."""
    folder = resources.files("gateway") / "console"
    app[FILES] = {name: (folder / name).read_bytes() for name in ASSETS}
    app.router.add_get("/console", _page)
    app.router.add_get("/console/{name}", _asset)


async def _page(request: web.Request) -> web.Response:
    return _answer(request, "index.html")


async def _asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return _answer(request, name)


def _answer(request: web.Request, name: str) -> web.Response:
    return web.Response(
        body=request.app[FILES][name], headers={"Content-Type": ASSETS[name], **HEADERS}
    )
