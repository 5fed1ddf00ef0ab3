"""`GET /v1/finetune/download`: resolve (organization, fine-tune, step or kind) to an archive."""

from __future__ import annotations

import re
from contextlib import nullcontext

from aiohttp import web

from tunevault.errors import (
    ArchiveNotReady,
    CheckpointNotFound,
    FineTuneNotFound,
    TunevaultError,
)
from tunevault.metadata import MetadataStore
from tunevault.metadata.audit import DownloadRecord
from tunevault.metadata.base import now
from tunevault.models import Archive, Checkpoint, FineTune, Kind
from tunevault.server.audit import AUDIT
from tunevault.server.blob import BlobRef, choose_range, send_blob
from tunevault.server.context import LIMITS, blocking, principal, services
from tunevault.server.observability import METRICS
from tunevault.server.query import DownloadQuery, parse_download_query
from tunevault.service.buildwait import build_wait
from tunevault.service.mergedstep import merged_at_step

routes = web.RouteTableDef()


def _printable(text: str) -> str:
    """Header text as the database can store it: raw bytes arrive as surrogates."""
    return text.encode("utf-8", "replace").decode()[:300]


def archive_filename(ft: FineTune, ckpt: Checkpoint) -> str:
    """`<output name>-step<N>-<kind>.tar.zst`: checkpoints never overwrite each other."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", ft.model_output_name.rsplit("/", 1)[-1]).strip("._")
    return f"{base or ft.id}-step{ckpt.step}-{ckpt.kind.value}.tar.zst"


def _pick_step(ft: FineTune, ckpts: list[Checkpoint], step: int) -> Checkpoint:
    at_step = [c for c in ckpts if c.step == step]
    if not at_step:
        steps = ", ".join(str(s) for s in sorted({c.step for c in ckpts})) or "none yet"
        raise CheckpointNotFound(
            f"fine-tune {ft.id} has no checkpoint at step {step}; available steps: {steps}",
            param="checkpoint_step",
        )
    # The raw output of that step: the intermediate save, else the final adapter/output.
    raw = Kind.ADAPTER if ft.is_lora else Kind.MODEL_OUTPUT
    return min(at_step, key=lambda c: (c.final, c.kind != raw))


def _pick_kind(ft: FineTune, ckpts: list[Checkpoint], checkpoint: str) -> Checkpoint:
    kind = ft.natural_kind if checkpoint == "default" else Kind(checkpoint)
    finals = [c for c in ckpts if c.final and c.kind == kind]
    if finals:
        return max(finals, key=lambda c: c.step)
    kinds = sorted({c.kind.value for c in ckpts if c.final})
    if not kinds:
        hint = f"the fine-tune is {ft.status} and has no final checkpoint yet"
    else:
        hint = f"available: {', '.join(kinds)}"
    raise CheckpointNotFound(
        f"fine-tune {ft.id} has no {kind.value} checkpoint; {hint}", param="checkpoint"
    )


def resolve(
    store: MetadataStore, org_id: str, q: DownloadQuery, workers: int = 1
) -> tuple[FineTune, Checkpoint, Archive]:
    ft, rows = store.fine_tune_with_archives(org_id, q.ft_id)
    if ft is None:
        raise FineTuneNotFound(
            f"fine-tune {q.ft_id} not found; GET /v1/fine-tunes lists yours", param="ft_id"
        )
    ckpts = [c for c, _ in rows]
    if q.merged_step is not None:
        ckpt = merged_at_step(store, ft, ckpts, q.merged_step)
    elif q.step is not None:
        ckpt = _pick_step(ft, ckpts, q.step)
    else:
        assert q.checkpoint is not None
        ckpt = _pick_kind(ft, ckpts, q.checkpoint)
    archive = {c.id: a for c, a in rows}.get(ckpt.id)  # none yet for a merge just queued
    if archive is None:
        failed = [j for j in store.jobs_for_checkpoint(ckpt.id) if j.state == "failed"]
        if failed:  # say why, with the class the build failed with (e.g. a missing base)
            klass = TunevaultError.registry.get(failed[-1].error_code or "", TunevaultError)
            raise klass(
                f"the {ckpt.kind.value} archive of {ft.id} could not be built: "
                f"{failed[-1].error_message}"
            )
        wait = build_wait(store, ckpt.id, workers)
        raise ArchiveNotReady(
            f"{ckpt.kind.value} archive of {ft.id} step {ckpt.step}: {wait.describe()}; "
            f"retry in {wait.retry_after} s",
            headers=wait.headers(),
        )
    return ft, ckpt, archive


@routes.get("/v1/finetune/download")
async def download(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    query = request.rel_url.query
    q = parse_download_query({k: query.getall(k) for k in set(query.keys())})
    svc = services(request)
    workers = max(svc.settings.build_workers, 1)  # 0: `tunevault worker`s, at least one
    ft, ckpt, archive = await blocking(resolve, svc.store, who.org_id, q, workers)
    blob = BlobRef(
        key=archive.storage_key,
        size=archive.size,
        sha256=archive.sha256,
        filename=archive_filename(ft, ckpt),
    )
    metrics = request.app[METRICS]
    mode = svc.settings.serve_mode
    # 499 (nginx's "client closed request") unless the answer goes out whole.
    status: int | None = 499
    sent = planned = start = 0
    # Download slots bound the bytes this process sends; a redirect or an X-Accel answer
    # hands the sending to the object store or nginx, and takes none.
    slot = request.app[LIMITS].download(who.key_id) if mode == "proxy" else nullcontext()
    with slot:
        metrics.downloads_in_flight.inc()
        try:
            span = choose_range(request, blob)
            # Known before the first byte: a download cut short is audited with its range.
            start = span.start if span is not None else 0
            if mode == "proxy":  # else the object store or nginx sends the bytes
                planned = span.length if span is not None else blob.size
            resp = await send_blob(request, svc.storage, blob, svc.settings, span)
        except (web.HTTPException, TunevaultError):
            status = None  # a validator or range answer (304, 412, 416): nothing was sent
            raise
        else:
            status = resp.status
            sent = planned if mode == "proxy" and request.method == "GET" else 0
            metrics.bytes_served.labels(mode).inc(sent)
            return resp
        finally:
            metrics.downloads_in_flight.dec()
            if status is not None:
                request.app[AUDIT].add(
                    DownloadRecord(
                        created_at=now(),
                        org_id=who.org_id,
                        key_id=who.key_id,
                        ft_id=ft.id,
                        step=ckpt.step,
                        kind=ckpt.kind.value,
                        archive_sha256=archive.sha256,
                        range_start=start,
                        bytes_planned=planned,
                        bytes_sent=sent,
                        status=status,
                        mode=mode,
                        client=request.remote,
                        user_agent=_printable(request.headers.get("User-Agent", "")) or None,
                    ),
                )
