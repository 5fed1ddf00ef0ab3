"""Together's JSON shapes for fine-tunes, events, checkpoints and metrics (COMPAT.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from tunevault.models import Checkpoint, Event, FineTune, Kind, MetricRow


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def training_type(ft: FineTune) -> dict[str, Any]:
    if not ft.is_lora:
        return {"type": "Full"}
    return {
        "type": "Lora",
        "lora_r": ft.lora_r or 0,
        "lora_alpha": ft.lora_alpha or 0,
        "lora_dropout": ft.lora_dropout if ft.lora_dropout is not None else 0.0,
        "lora_trainable_modules": ft.lora_trainable_modules or "all-linear",
    }


def fine_tune(ft: FineTune, events: list[Event] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ft.id,
        "object": "fine-tune",
        "status": ft.status,
        "user_id": ft.org_id,
        "model": ft.model,
        "model_output_name": ft.model_output_name,
        "model_output_path": download_path(ft.id, checkpoint=ft.natural_kind.value),
        "suffix": ft.suffix,
        "training_type": training_type(ft),
        "training_method": {"method": "sft", "train_on_inputs": "auto"},
        "created_at": iso(ft.created_at),
        "updated_at": iso(ft.updated_at),
    }
    if events is not None:
        body["events"] = [event(e) for e in events]
    return body


def event(e: Event) -> dict[str, Any]:
    body: dict[str, Any] = {
        "object": "fine-tune-event",
        "created_at": iso(e.created_at),
        "level": e.level,
        "type": e.type,
        "message": e.message,
    }
    if e.step is not None:
        body["step"] = e.step
    return body


def download_path(ft_id: str, *, step: int | None = None, checkpoint: str | None = None) -> str:
    params: dict[str, Any] = {"ft_id": ft_id}
    if checkpoint is not None:
        params["checkpoint"] = checkpoint
    if step is not None:
        params["checkpoint_step"] = step
    return f"/v1/finetune/download?{urlencode(params)}"


_FINAL_LABEL = {
    Kind.ADAPTER: "Final Adapter",
    Kind.MERGED: "Final Merged",
    Kind.MODEL_OUTPUT: "Final",
}


def checkpoint(c: Checkpoint) -> dict[str, Any]:
    if c.final:
        label, path = _FINAL_LABEL[c.kind], download_path(c.ft_id, checkpoint=c.kind.value)
    else:
        label, path = "Intermediate", download_path(c.ft_id, step=c.step)
    return {
        "step": c.step,
        "path": path,
        "created_at": iso(c.created_at),
        "checkpoint_type": label,
        "checkpoint": "adapter" if c.kind == Kind.ADAPTER else "model",
    }


def metric(m: MetricRow) -> dict[str, Any]:
    return {**m.values, "train/global_step": m.step}
