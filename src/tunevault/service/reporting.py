"""What a training run reports to the store: the fine-tune it creates (once per
Idempotency-Key), its events and metric rows (once per row id), and its status."""

from __future__ import annotations

from typing import Any

from tunevault.errors import Conflict
from tunevault.models import BaseModel, Event, FineTune, MetricRow, NewEvent
from tunevault.service.bases import require_base
from tunevault.service.context import Services


def create_fine_tune(
    svc: Services,
    org_id: str,
    fields: dict[str, Any],
    *,
    status: str,
    idempotency_key: str | None,
) -> tuple[FineTune, list[Event], bool]:
    """The new fine-tune, its events and True; or, for a retry with the same
    Idempotency-Key, the one that request created and False. A LoRA's base must be
    registered first, unless the base lives elsewhere (external_base): else a merged model
    would be listed that can never be built."""
    store = svc.store
    if fields["training_type"] == "Lora" and not fields.get("external_base"):
        require_base(store, org_id, fields["model"])
    if idempotency_key is not None:
        earlier = store.created_with_key(org_id, idempotency_key)
        if earlier is not None:
            if any(getattr(earlier, name) != value for name, value in fields.items()):
                raise Conflict(
                    f"Idempotency-Key {idempotency_key!r} already created {earlier.id} with "
                    "other parameters; use a new key for a new fine-tune"
                )
            return earlier, store.list_events(earlier.id), False
    ft = store.create_fine_tune(org_id, status=status, idempotency_key=idempotency_key, **fields)
    return ft, [], True


def add_events(svc: Services, ft: FineTune, rows: list[NewEvent]) -> int:
    """How many were new: a row whose id was seen before is skipped."""
    return svc.store.add_events(ft.id, rows)


def add_metrics(svc: Services, ft: FineTune, rows: list[MetricRow]) -> int:
    return svc.store.add_metrics(ft.id, rows)


def set_status(svc: Services, ft: FineTune, status: str) -> tuple[FineTune, list[Event]]:
    updated = svc.store.set_status(ft.org_id, ft.id, status)
    return updated or ft, svc.store.list_events(ft.id)


def list_base_models(svc: Services, org_id: str) -> list[BaseModel]:
    return svc.store.list_base_models(org_id)
