"""The publishing routes (publish scope): fine-tunes, checkpoints, events, metrics, status,
base models. See docs/publishing.md; blobs are in uploads.py.
"""

from __future__ import annotations

import math
import re
from typing import Any

from aiohttp import web

from tunevault.errors import InvalidRequest
from tunevault.models import FT_STATUSES, Kind, MetricRow, NewEvent, Scope
from tunevault.server import render
from tunevault.server.context import blocking, json_body, principal, services
from tunevault.server.finetunes import owned_fine_tune
from tunevault.service import reporting
from tunevault.service.publishing import commit_checkpoint, register_base_model, validate_manifest

routes = web.RouteTableDef()
MAX_ROWS = 10_000
MAX_SUFFIX = 100
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,300}")
_EVENT_TYPE = re.compile(r"[A-Za-z_]{1,64}")
_ROW_ID = re.compile(r"[A-Za-z0-9._:/-]{1,100}")  # all three: fullmatch only


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidRequest(f"{name} must be 1-300 printable characters", param=name)
    return value


def _name(body: dict[str, Any], name: str) -> str:
    value = _text(body, name)
    assert value is not None
    return value


def _int(body: dict[str, Any], name: str, *, low: int = 0, high: int = 2**31 - 1) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}", param=name)
    return value


def _training_type(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or raw.get("type") not in ("Full", "Lora"):
        raise InvalidRequest(
            'training_type must be {"type": "Full"} or {"type": "Lora", ...}', param="training_type"
        )
    if raw["type"] == "Full":
        return {"training_type": "Full"}
    dropout = raw.get("lora_dropout", 0.0)
    if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise InvalidRequest("lora_dropout must be a number in [0, 1)", param="lora_dropout")
    return {
        "training_type": "Lora",
        "lora_r": _int(raw, "lora_r", low=1, high=65536),
        "lora_alpha": _int(raw, "lora_alpha", low=1, high=2**20),
        "lora_dropout": float(dropout),
        "lora_trainable_modules": _text(raw, "lora_trainable_modules", required=False),
    }


def _external_base(body: dict[str, Any], training_type: str) -> bool:
    """A LoRA whose base model lives elsewhere: published as it is, never merged."""
    value = body.get("external_base", False)
    if not isinstance(value, bool):
        raise InvalidRequest("external_base must be true or false", param="external_base")
    if value and training_type != "Lora":
        raise InvalidRequest("external_base applies to LoRA fine-tunes", param="external_base")
    return value


@routes.post("/v1/publish/fine-tunes")
async def create_fine_tune(request: web.Request) -> web.Response:
    who = principal(request, Scope.PUBLISH)
    body = await json_body(request)
    suffix = _text(body, "suffix", required=False)
    if suffix is not None and len(suffix) > MAX_SUFFIX:  # the column's size: else a 500
        raise InvalidRequest(f"suffix must be at most {MAX_SUFFIX} characters", param="suffix")
    status = body.get("status", "pending")
    if status not in ("pending", "queued", "running"):
        raise InvalidRequest("a new fine-tune starts pending, queued or running", param="status")
    fields = {
        "model": _name(body, "model"),
        "model_output_name": _name(body, "model_output_name"),
        "suffix": suffix,
        **_training_type(body.get("training_type")),
    }
    fields["external_base"] = _external_base(body, fields["training_type"])
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _ROW_ID.fullmatch(key):
        raise InvalidRequest(
            "Idempotency-Key is 1 to 100 characters of letters, digits and . _ : / -",
            param="Idempotency-Key",
        )
    ft, events, created = await blocking(
        reporting.create_fine_tune,
        services(request),
        who.org_id,
        fields,
        status=status,
        idempotency_key=key,
    )
    return web.json_response(render.fine_tune(ft, events), status=201 if created else 200)


@routes.post("/v1/publish/fine-tunes/{ft_id}/checkpoints")
async def add_checkpoint(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request, Scope.PUBLISH)
    body = await json_body(request)
    kind_raw = body.get("kind")
    if kind_raw not in (Kind.ADAPTER.value, Kind.MODEL_OUTPUT.value):
        raise InvalidRequest("kind must be adapter or model_output_path", param="kind")
    final = body.get("final", False)
    if not isinstance(final, bool):
        raise InvalidRequest("final must be true or false", param="final")
    files = validate_manifest(body.get("files"))
    ckpt, created = await blocking(
        commit_checkpoint,
        services(request),
        ft,
        step=_int(body, "step"),
        kind=Kind(kind_raw),
        final=final,
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
    events = (await json_body(request)).get("events")
    if not isinstance(events, list) or not 0 < len(events) <= MAX_ROWS:
        raise InvalidRequest(f"events must be a list of 1 to {MAX_ROWS} events", param="events")
    rows = []
    for e in events:
        if not isinstance(e, dict) or not _EVENT_TYPE.fullmatch(str(e.get("type", ""))):
            raise InvalidRequest("every event needs a type of letters and _", param="events")
        level = e.get("level", "info")
        message = e.get("message", "")
        if level not in ("info", "warning", "error") or not isinstance(message, str):
            raise InvalidRequest(
                "level is info, warning or error; message a string", param="events"
            )
        step = _int(e, "step") if e.get("step") is not None else None
        rows.append(NewEvent(str(e["type"]), message[:10_000], level, step, _row_id(e, "events")))
    added = await blocking(reporting.add_events, services(request), ft, rows)
    return web.json_response({"count": len(rows), "added": added}, status=201)


@routes.post("/v1/publish/fine-tunes/{ft_id}/metrics")
async def add_metrics(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request, Scope.PUBLISH)
    raw = (await json_body(request)).get("metrics")
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_ROWS:
        raise InvalidRequest(f"metrics must be a list of 1 to {MAX_ROWS} rows", param="metrics")
    rows = []
    for row in raw:
        if not isinstance(row, dict):
            raise InvalidRequest("every metrics row is an object with a step", param="metrics")
        values = {k: v for k, v in row.items() if k not in ("step", "id")}
        if not all(_finite(v) and isinstance(k, str) and len(k) <= 200 for k, v in values.items()):
            raise InvalidRequest("metric values must be finite numbers", param="metrics")
        rows.append(MetricRow(_int(row, "step"), values, _row_id(row, "metrics")))
    added = await blocking(reporting.add_metrics, services(request), ft, rows)
    return web.json_response({"count": len(rows), "added": added}, status=201)


def _finite(value: object) -> bool:
    """A number a float holds: an integer of 400 digits is past float's range (math.isfinite
    raised OverflowError, a 500)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _row_id(row: dict[str, Any], param: str) -> str | None:
    """The publisher's optional id of an event or metrics row: a row sent again with the
    same id is skipped, so a batch retried after a lost answer adds nothing twice."""
    value = row.get("id")
    if value is None:
        return None
    if not isinstance(value, str) or not _ROW_ID.fullmatch(value):
        raise InvalidRequest(
            "a row id is 1 to 100 characters of letters, digits and . _ : / -", param=param
        )
    return value


@routes.post("/v1/publish/fine-tunes/{ft_id}/status")
async def set_status(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request, Scope.PUBLISH)
    status = (await json_body(request)).get("status")
    if status not in FT_STATUSES or status == "compressing":
        raise InvalidRequest(
            f"status must be one of {', '.join(FT_STATUSES)} "
            "(compressing is reported by tunevault)",
            param="status",
        )
    ft, events = await blocking(reporting.set_status, services(request), ft, status)
    return web.json_response(render.fine_tune(ft, events))


@routes.post("/v1/publish/base-models")
async def add_base_model(request: web.Request) -> web.Response:
    who = principal(request, Scope.PUBLISH)
    body = await json_body(request)
    name = _name(body, "name")
    files = validate_manifest(body.get("files"))
    model, created = await blocking(register_base_model, services(request), who.org_id, name, files)
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
