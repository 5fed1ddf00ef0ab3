"""Reading and managing an organization's fine-tunes: what the `/v1/fine-tunes` routes,
the publishing routes and the commands look up. Another organization's fine-tune is
indistinguishable from a missing one."""

from __future__ import annotations

from tunevault.errors import Conflict, FineTuneNotFound
from tunevault.models import Checkpoint, Event, FineTune, Kind, MetricRow
from tunevault.service.context import Services

_CANCELLABLE = {"pending", "queued", "running", "compressing", "uploading"}


def owned_fine_tune(svc: Services, org_id: str, ft_id: str | None) -> FineTune:
    """The fine-tune, if this organization owns it; else FineTuneNotFound. `None` is an id
    the caller already found malformed: the same answer, without a lookup."""
    ft = svc.store.get_fine_tune(org_id, ft_id) if ft_id is not None else None
    if ft is None:
        raise FineTuneNotFound(
            f"fine-tune {(ft_id or '')[:80]!r} not found; GET /v1/fine-tunes lists yours",
            param="id",
        )
    return ft


def list_fine_tunes(svc: Services, org_id: str) -> list[FineTune]:
    return svc.store.list_fine_tunes(org_id)


def events(svc: Services, ft: FineTune) -> list[Event]:
    return svc.store.list_events(ft.id)


def checkpoints(svc: Services, ft: FineTune) -> list[Checkpoint]:
    """Newest first; at one step finals first, the merged model (the default) leading.
    Merges of intermediate adapters (built on demand, see merged_step) are not listed."""
    ckpts = [c for c in svc.store.list_checkpoints(ft.id) if c.final or c.kind != Kind.MERGED]
    ckpts.sort(key=lambda c: (-c.step, not c.final, c.kind != Kind.MERGED, c.kind.value))
    return ckpts


def metrics(svc: Services, ft: FineTune, lo: int | None, hi: int | None) -> list[MetricRow]:
    """The metric rows with steps in [lo, hi] (either bound optional)."""
    rows = svc.store.list_metrics(ft.id)  # the store has no step bounds: filter here
    return [m for m in rows if (lo is None or m.step >= lo) and (hi is None or m.step <= hi)]


def delete(svc: Services, ft: FineTune) -> None:
    svc.store.delete_fine_tune(ft.org_id, ft.id)


def cancel(svc: Services, ft: FineTune) -> FineTune:
    """Ask a running job to stop (the publisher sees `cancel_requested`); idempotent."""
    if ft.status in _CANCELLABLE:
        svc.store.add_event(ft.id, "CANCEL_REQUESTED", "cancel requested via API")
        return svc.store.set_status(ft.org_id, ft.id, "cancel_requested") or ft
    if ft.status not in ("cancel_requested", "cancelled"):
        raise Conflict(f"fine-tune {ft.id} is {ft.status}; only a running job can be cancelled")
    return ft
