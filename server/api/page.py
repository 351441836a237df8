"""The labeling page's static files (tlserve/server/web), served by the HTTP adapter.

They are read from the installed package once, at start-up, and served as they are:
no build step, no template. `/label/<model>` is the page for one model and `/label` the
chooser; the same index.html serves both and reads the model from its path. The page
holds no data, so it is open like the probes: any well-formed model name gets the page,
and whether the model exists is told only by the API, after the credential is checked,
so an anonymous visitor learns no model names. Its calls go to /v1 with the credential
the person enters (or the browser's client certificate), under the same roles as every
other client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from tlserve.server.errors import InvalidInput
from tlserve.server.registry import check_model_name

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PAGE_PATH = "/label"
_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}
# Only the page's own files run; images come as data: URLs from /v1/suggestions.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (the ETag answers 304), so an upgrade shows at once.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


class LabelPage:
    def __init__(self, default_model: str) -> None:
        self._default_model = default_model  # any name the setting allows, not only a named model's
        folder = resources.files("tlserve.server") / "web"
        self._assets: dict[str, _Asset] = {}
        for name, content_type in _FILES.items():
            body = (folder / name).read_bytes()
            etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
            self._assets[name] = _Asset(body, content_type, etag)

    def add_routes(self, router: web.UrlDispatcher) -> list[Handler]:
        """Adds the page's routes; returns their handlers (for the request metrics)."""
        router.add_get("/", self._to_page)
        for path in (PAGE_PATH, PAGE_PATH + "/", PAGE_PATH + "/{name}"):
            router.add_get(path, self._file)
        return [self._to_page, self._file]

    async def _to_page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": PAGE_PATH})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "index.html")
        asset = self._assets.get(name) or self._page_of_model(name)
        if asset is None:
            raise web.HTTPNotFound(
                text=f"no such file; the labeling page is at {PAGE_PATH} and a model's at "
                f"{PAGE_PATH}/<model>"
            )
        headers = {**_HEADERS, "ETag": asset.etag}
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=asset.body, content_type=asset.content_type, headers=headers)

    def _page_of_model(self, name: str) -> _Asset | None:
        if name != self._default_model:
            try:
                check_model_name(name)
            except InvalidInput:
                return None
        return self._assets["index.html"]
