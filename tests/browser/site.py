"""A second web origin for the embedding tests: an "app" that embeds ctxmeter's elements from the edge, as
a team's own web app would, with React 19 and axe-core from npm (tests/browser/npm, installed by .ci/run).

React 19 ships CommonJS builds only (no UMD, no ES modules). The site serves them unchanged, each inside
a function of a small CommonJS registry, as one ES module (``/react.js``): ``import {React, ReactDOMClient}
from "/react.js"``. Nothing is compiled or bundled; the app code uses ``React.createElement``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aiohttp import web

NPM_DIR: Final = Path(__file__).resolve().parent / "npm" / "node_modules"
# What ``require(name)`` gives inside React's builds: the production builds, as its index.js picks them.
REACT_FILES: Final = {
    "react": "react/cjs/react.production.js",
    "scheduler": "scheduler/cjs/scheduler.production.js",
    "react-dom": "react-dom/cjs/react-dom.production.js",
    "react-dom/client": "react-dom/cjs/react-dom-client.production.js",
}
AXE_FILE: Final = "axe-core/axe.min.js"


def npm_missing() -> list[str]:
    """The npm files the embedding tests need that are not installed."""
    wanted = [*REACT_FILES.values(), AXE_FILE]
    return [f"tests/browser/npm/node_modules/{path}" for path in wanted if not (NPM_DIR / path).is_file()]


def react_module() -> str:
    parts = [
        "const process = { env: { NODE_ENV: 'production' } };",
        "const definitions = {};",
        "const loaded = {};",
        "function require(name) {",
        "  if (!(name in loaded)) {",
        "    const module = { exports: {} };",
        "    loaded[name] = module;",
        "    definitions[name](module, module.exports, require);",
        "  }",
        "  return loaded[name].exports;",
        "}",
    ]
    for name, path in REACT_FILES.items():
        source = (NPM_DIR / path).read_text(encoding="utf-8")
        parts.append(f"definitions[{json.dumps(name)}] = function (module, exports, require) {{\n{source}\n}};")
    parts.append('export const React = require("react");')
    parts.append('export const ReactDOMClient = require("react-dom/client");')
    return "\n".join(parts)


@dataclass
class Site:
    """Pages by path (``site.pages["/plain.html"] = html``), served at ``site.url``."""

    url: str = ""
    pages: dict[str, str] = field(default_factory=dict)


def site_app(site: Site) -> web.Application:
    react = react_module()

    async def page(request: web.Request) -> web.Response:
        html = site.pages.get(request.path)
        if html is None:
            raise web.HTTPNotFound()
        return web.Response(text=html, content_type="text/html")

    async def react_js(request: web.Request) -> web.Response:
        return web.Response(text=react, content_type="text/javascript")

    async def axe_js(request: web.Request) -> web.Response:
        return web.Response(body=(NPM_DIR / AXE_FILE).read_bytes(), content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/react.js", react_js)
    app.router.add_get("/axe.js", axe_js)
    app.router.add_get("/{page:.*\\.html}", page)
    return app
