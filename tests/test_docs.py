"""Docs that fail the build when they fall behind the code."""

from __future__ import annotations

from pathlib import Path

from tunevault.errors import TunevaultError
from tunevault.server.app import make_app, openapi_document
from tunevault.settings import Settings

DOCS = Path(__file__).parent.parent / "docs"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "settings.md").read_text()
    for name in Settings.model_fields:
        assert f"| `{name}` |" in text, f"docs/settings.md misses {name}"


def test_every_error_code_is_documented() -> None:
    text = (DOCS / "api.md").read_text()
    for code, cls in TunevaultError.registry.items():
        if cls.client_side:
            continue
        assert f"| {cls.status} | `{code}` |" in text, f"docs/api.md misses {code}"


def _app_routes() -> set[tuple[str, str]]:
    app = make_app(None)  # type: ignore[arg-type]  # routing only, no requests served
    routes = set()
    for resource in app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        for route in resource:
            # aiohttp adds HEAD to every GET; a HEAD of its own is documented.
            implicit_head = route.method == "HEAD" and any(r.method == "GET" for r in resource)
            if not implicit_head and not str(path).startswith(("/v1/v1/", "/v1/v3/")):
                routes.add((route.method, str(path)))
    return routes


def _json_routes() -> set[tuple[str, str]]:
    """The app's routes but the console's: HTML pages for browsers, not the JSON API, are
    listed in docs/console.md instead (test_console_routes_are_documented)."""
    return {(m, p) for m, p in _app_routes() if p != "/console" and not p.startswith("/console/")}


def test_console_routes_are_documented() -> None:
    text = (DOCS / "console.md").read_text()
    console = _app_routes() - _json_routes()
    assert console
    for method, path in console:
        assert f"`{method} {path}`" in text, f"docs/console.md misses {method} {path}"


def test_openapi_document_and_app_routes_agree() -> None:
    doc = openapi_document()
    paths = doc["paths"]
    assert isinstance(paths, dict)
    documented = {
        (method.upper(), path)
        for path, item in paths.items()
        for method in item
        if method in ("get", "post", "delete", "put", "patch", "head")
    }
    assert documented == _json_routes()
    api = (DOCS / "api.md").read_text()
    for method, path in documented:
        assert f"`{method} {path.replace('{ft_id}', '{id}')}`" in api, (method, path)
