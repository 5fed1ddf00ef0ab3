"""What the web console's pages show: an organization's fine-tunes, one fine-tune whole,
storage usage, and its keys. Every read is scoped to the caller's organization."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from tunevault.errors import ArchiveNotReady, CheckpointNotFound, FineTuneNotFound
from tunevault.models import (
    ApiKey,
    Archive,
    BaseModel,
    Checkpoint,
    DownloadRecord,
    Event,
    FineTune,
    MetricRow,
    Scope,
)
from tunevault.service.context import Services
from tunevault.service.downloads import Resolved
from tunevault.service.sessions import end_key_sessions

PAGE_SIZE = 25


@dataclass(frozen=True)
class FineTunePage:
    items: list[FineTune]
    total: int
    page: int
    pages: int


@dataclass(frozen=True)
class FineTuneView:
    ft: FineTune
    events: list[Event]
    metrics: list[MetricRow]
    checkpoints: list[tuple[Checkpoint, Archive | None]]  # newest first, with their files


def list_fine_tunes(
    svc: Services,
    org_id: str,
    *,
    status: str = "",
    training_type: str = "",
    text: str = "",
    page: int = 1,
) -> FineTunePage:
    """Newest first, filtered, one page of PAGE_SIZE. The filter runs over the list the
    API serves (status reads `compressing` while builds run), so both agree."""
    needle = text.strip().lower()
    found = [
        ft
        for ft in reversed(svc.store.list_fine_tunes(org_id))
        if (not status or ft.status == status)
        and (not training_type or ft.training_type == training_type)
        and (not needle or needle in f"{ft.id} {ft.model_output_name} {ft.model}".lower())
    ]
    pages = max(1, -(-len(found) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    start = (page - 1) * PAGE_SIZE
    return FineTunePage(found[start : start + PAGE_SIZE], len(found), page, pages)


def fine_tune_view(svc: Services, org_id: str, ft_id: str) -> FineTuneView | None:
    """The fine-tune with everything its page shows; None if the organization has none."""
    ft, rows = svc.store.fine_tune_with_archives(org_id, ft_id)
    if ft is None:
        return None
    files = svc.store.fine_tune_files(ft.id)
    ckpts = [(replace(c, files=files.get(c.id, ())), a) for c, a in rows]
    ckpts.sort(key=lambda ca: (-ca[0].step, not ca[0].final, ca[0].kind.value))
    return FineTuneView(ft, svc.store.list_events(ft.id), svc.store.list_metrics(ft.id), ckpts)


def list_base_models(svc: Services, org_id: str) -> list[BaseModel]:
    return svc.store.list_base_models(org_id)


def list_downloads(svc: Services, org_id: str) -> list[DownloadRecord]:
    return svc.store.list_downloads(org_id, limit=200)


def list_keys(svc: Services, org_id: str) -> list[ApiKey]:
    return svc.store.list_keys(org_id)


def create_key(
    svc: Services, org_id: str, name: str, scopes: Iterable[Scope]
) -> tuple[ApiKey, str]:
    return svc.store.create_key(org_id, name, scopes)


def revoke_key(svc: Services, org_id: str, key_id: str) -> bool:
    """Revoke one of the organization's keys and end its console sessions; False when the
    organization has no such active key (another organization's key looks the same)."""
    if not any(k.id == key_id and k.revoked_at is None for k in svc.store.list_keys(org_id)):
        return False
    revoked = svc.store.revoke_key(key_id)
    end_key_sessions(svc, key_id)
    return revoked


def checkpoint_archive(svc: Services, org_id: str, ft_id: str, checkpoint_id: int) -> Resolved:
    """One checkpoint of the organization's fine-tune and its built archive, or the error
    that says why not (another organization's fine-tune is not found, like a missing one)."""
    ft, rows = svc.store.fine_tune_with_archives(org_id, ft_id)
    if ft is None:
        raise FineTuneNotFound(f"fine-tune {ft_id[:80]!r} not found", param="ft_id")
    found = [(c, a) for c, a in rows if c.id == checkpoint_id]
    if not found:
        raise CheckpointNotFound(f"fine-tune {ft.id} has no such checkpoint", param="checkpoint")
    ckpt, archive = found[0]
    if archive is None:
        raise ArchiveNotReady(
            f"the archive of {ft.id} step {ckpt.step} is being prepared; reload in a while"
        )
    return Resolved(ft, ckpt, archive)
