"""The publishing routes (publish scope): fine-tunes, checkpoints, events, metrics, status,
base models. See docs/publishing.md; blobs are in uploads.py.
"""

from __future__ import annotations

import re

from aiohttp import web

from tunevault.errors import InvalidRequest
from tunevault.models import Kind, MetricRow, NewEvent, Scope
from tunevault.server import render
from tunevault.server.bodies import (
    Events,
    Metrics,
    NewBaseModel,
    NewCheckpoint,
    NewFineTune,
    NewStatus,
    parse,
)
from tunevault.server.context import blocking, json_body, principal, services
from tunevault.server.finetunes import owned_fine_tune
from tunevault.service import reporting
from tunevault.service.publishing import commit_checkpoint, register_base_model, validate_manifest

routes = web.RouteTableDef()
# The Idempotency-Key header: the same alphabet as a row id.
_KEY = re.compile(r"[A-Za-z0-9._:/-]{1,100}")


@routes.post("/v1/publish/fine-tunes")
async def create_fine_tune(request: web.Request) -> web.Response:
    who = principal(request, Scope.PUBLISH)
    body = parse(NewFineTune, await json_body(request))
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _KEY.fullmatch(key):
        raise InvalidRequest(
            "Idempotency-Key is 1 to 100 characters of letters, digits and . _ : / -",
            param="Idempotency-Key",
        )
    ft, events, created = await blocking(
        reporting.create_fine_tune,
        services(request),
        who.org_id,
        body.fields(),
        status=body.status,
        idempotency_key=key,
    )
    return web.json_response(render.fine_tune(ft, events), status=201 if created else 200)


@routes.post("/v1/publish/fine-tunes/{ft_id}/checkpoints")
async def add_checkpoint(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request, Scope.PUBLISH)
    body = parse(NewCheckpoint, await json_body(request))
    files = validate_manifest(body.files)
    ckpt, created = await blocking(
        commit_checkpoint,
        services(request),
        ft,
        step=body.step,
        kind=Kind(body.kind),
        final=body.final,
        files=files,
    )
    return web.json_response(
        {
            "checkpoint_id": ckpt.id,
            "step": ckpt.step,
            "kind": ckpt.kind.value,
            "final": ckpt.final,
            "files": len(ckpt.files),
        },
        status=201 if created else 200,
    )


@routes.post("/v1/publish/fine-tunes/{ft_id}/events")
async def add_events(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request, Scope.PUBLISH)
    body = parse(Events, await json_body(request))
    rows = [NewEvent(e.type, e.message[:10_000], e.level, e.step, e.id) for e in body.events]
    added = await blocking(reporting.add_events, services(request), ft, rows)
    return web.json_response({"count": len(rows), "added": added}, status=201)


@routes.post("/v1/publish/fine-tunes/{ft_id}/metrics")
async def add_metrics(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request, Scope.PUBLISH)
    body = parse(Metrics, await json_body(request))
    rows = [MetricRow(m.step, m.values(), m.id) for m in body.metrics]
    added = await blocking(reporting.add_metrics, services(request), ft, rows)
    return web.json_response({"count": len(rows), "added": added}, status=201)


@routes.post("/v1/publish/fine-tunes/{ft_id}/status")
async def set_status(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request, Scope.PUBLISH)
    status = parse(NewStatus, await json_body(request)).status
    ft, events = await blocking(reporting.set_status, services(request), ft, status)
    return web.json_response(render.fine_tune(ft, events))


@routes.post("/v1/publish/base-models")
async def add_base_model(request: web.Request) -> web.Response:
    who = principal(request, Scope.PUBLISH)
    body = parse(NewBaseModel, await json_body(request))
    files = validate_manifest(body.files)
    model, created = await blocking(
        register_base_model, services(request), who.org_id, body.name, files
    )
    return web.json_response(
        {"name": model.name, "files": len(model.files)}, status=201 if created else 200
    )


@routes.get("/v1/publish/base-models")
async def list_base_models(request: web.Request) -> web.Response:
    who = principal(request, Scope.PUBLISH)
    models = await blocking(reporting.list_base_models, services(request), who.org_id)
    return web.json_response(
        {
            "data": [
                {
                    "name": m.name,
                    "created_at": render.iso(m.created_at),
                    "files": len(m.files),
                    "size": sum(f.size for f in m.files),
                }
                for m in models
            ]
        }
    )
