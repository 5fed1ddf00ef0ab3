"""The console's read pages: fine-tunes, one fine-tune, base models, storage; the download
button; and the console's own CSS and script."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources

from aiohttp import web

from tunevault.errors import FineTuneNotFound, InvalidRequest
from tunevault.models import FT_STATUSES, Archive, Checkpoint, FineTune, Principal, Scope
from tunevault.server.console.plot import loss_plot
from tunevault.server.console.snippets import Snippet, snippets
from tunevault.server.console.state import PREFIX
from tunevault.server.console.views import page
from tunevault.server.context import blocking, principal, services
from tunevault.server.download import serve_archive
from tunevault.server.origin import public_origin
from tunevault.server.query import FT_ID, parse_step
from tunevault.server.shares import PUBLIC_PREFIX, SHARE_SECRET
from tunevault.service import console, shares
from tunevault.service.downloads import archive_filename
from tunevault.service.usage import org_usage

routes = web.RouteTableDef()
_STATIC = {"console.css": "text/css", "console.js": "text/javascript"}


def _page_number(request: web.Request) -> int:
    return parse_step(request.query.get("page", "1") or "1", "page")


@routes.get(f"{PREFIX}/")
async def fine_tunes(request: web.Request) -> web.Response:
    who = principal(request)
    q = request.query
    status, kind, text = q.get("status", ""), q.get("type", ""), q.get("q", "")[:200]
    if status and status not in FT_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(FT_STATUSES)}", param="status")
    if kind not in ("", "Lora", "Full"):
        raise InvalidRequest("type must be Lora or Full", param="type")
    found = await blocking(
        console.list_fine_tunes,
        services(request),
        who.org_id,
        status=status,
        training_type=kind,
        text=text,
        page=_page_number(request),
    )
    filters = {"status": status, "type": kind, "q": text}
    return page(request, "fine_tunes.html", found=found, filters=filters, statuses=FT_STATUSES)


def hyperparameters(ft: FineTune) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [("Training type", ft.training_type), ("Suffix", ft.suffix)]
    if ft.is_lora:
        rows += [
            ("lora_r", ft.lora_r),
            ("lora_alpha", ft.lora_alpha),
            ("lora_dropout", ft.lora_dropout),
            ("lora_trainable_modules", ft.lora_trainable_modules),
        ]
    return [(k, v) for k, v in rows if v is not None]


def _can_share(who: Principal) -> bool:
    return bool({Scope.PUBLISH, Scope.ADMIN} & who.scopes)


def _checkpoint_rows(
    request: web.Request, ft: FineTune, ckpts: list[tuple[Checkpoint, Archive | None]]
) -> list[tuple[Checkpoint, Archive | None, list[Snippet]]]:
    """Each checkpoint with its archive and the commands that fetch it."""
    url = public_origin(request)
    return [(c, a, snippets(url, ft, c, archive_filename(ft, c))) for c, a in ckpts]


@routes.get(PREFIX + "/fine-tunes/{ft_id}")
async def fine_tune(request: web.Request) -> web.Response:
    who = principal(request)
    ft_id = request.match_info["ft_id"]
    svc = services(request)
    view = None
    if FT_ID.fullmatch(ft_id):
        view = await blocking(console.fine_tune_view, svc, who.org_id, ft_id)
    if view is None:
        raise FineTuneNotFound(f"fine-tune {ft_id[:80]!r} not found")
    links = await blocking(shares.list_links, svc, who.org_id, ft_id=view.ft.id)
    secret = request.app[SHARE_SECRET]
    origin = public_origin(request)
    share_urls = {link.id: f"{origin}{PUBLIC_PREFIX}{shares.token(secret, link)}" for link in links}
    return page(
        request,
        "fine_tune.html",
        view=view,
        hyperparameters=hyperparameters(view.ft),
        plot=loss_plot(view.metrics),
        checkpoints=_checkpoint_rows(request, view.ft, view.checkpoints),
        links=links,
        share_urls=share_urls,
        can_share=_can_share(who),
        now=datetime.now(UTC),
    )


@routes.get(PREFIX + "/fine-tunes/{ft_id}/checkpoints/{checkpoint_id}/archive")
async def download(request: web.Request) -> web.StreamResponse:
    """The download button: the API's download path, audited under the session's key."""
    who = principal(request)
    ckpt_id = parse_step(request.match_info["checkpoint_id"], "checkpoint")
    found = await blocking(
        console.checkpoint_archive,
        services(request),
        who.org_id,
        request.match_info["ft_id"],
        ckpt_id,
    )
    return await serve_archive(request, who, found)


@routes.get(PREFIX + "/base-models")
async def base_models(request: web.Request) -> web.Response:
    who = principal(request)
    models = await blocking(console.list_base_models, services(request), who.org_id)
    return page(request, "base_models.html", models=models)


@routes.get(PREFIX + "/storage")
async def storage(request: web.Request) -> web.Response:
    who = principal(request)
    usage = await blocking(org_usage, services(request), who.org_id)
    return page(request, "storage.html", usage=usage)


@routes.get(PREFIX + "/static/{name}")
async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _STATIC:  # a fixed list: no path ever reaches the filesystem
        raise web.HTTPNotFound()
    body = (resources.files("tunevault.server.console") / "static" / name).read_bytes()
    return web.Response(
        body=body,
        content_type=_STATIC[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
