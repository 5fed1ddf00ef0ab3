"""Resolving a download: (organization, fine-tune, step or kind) -> a checkpoint and its archive.

The rules are the spec's: with a step, the raw checkpoint of that step (`checkpoint` is
ignored); without one, the final checkpoint of the kind asked for, `default` being the
fine-tune's natural kind (merged for a LoRA, the full output otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunevault.errors import ArchiveNotReady, CheckpointNotFound, FineTuneNotFound, TunevaultError
from tunevault.metadata import MetadataStore
from tunevault.models import Archive, Checkpoint, FineTune, JobState, Kind
from tunevault.service.buildwait import build_wait
from tunevault.service.cache import requeue_evicted
from tunevault.service.context import Services
from tunevault.service.mergedstep import merged_at_step

REBUILD_HEADER = "Tunevault-Build-Reason"


@dataclass(frozen=True)
class Resolved:
    ft: FineTune
    ckpt: Checkpoint
    archive: Archive

    @property
    def filename(self) -> str:
        return archive_filename(self.ft, self.ckpt)


def archive_filename(ft: FineTune, ckpt: Checkpoint) -> str:
    """`<output name>-step<N>-<kind>.tar.zst`: checkpoints never overwrite each other."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", ft.model_output_name.rsplit("/", 1)[-1]).strip("._")
    return f"{base or ft.id}-step{ckpt.step}-{ckpt.kind.value}.tar.zst"


def pick_step(ft: FineTune, ckpts: list[Checkpoint], step: int) -> Checkpoint:
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


def pick_kind(ft: FineTune, ckpts: list[Checkpoint], checkpoint: str) -> Checkpoint:
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


@dataclass(frozen=True)
class DownloadQuery:
    """What a download names: a fine-tune and a step, a kind, or (tunevault's extension)
    the merged model of a step's adapter."""

    ft_id: str
    step: int | None = None
    checkpoint: str | None = None  # "merged", "adapter", "model_output_path" or "default"
    merged_step: int | None = None


def resolve(svc: Services, org_id: str, q: DownloadQuery) -> Resolved:
    """The checkpoint a download names and its built archive; raises ArchiveNotReady (with
    a Retry-After from the build queue's real state) while it is being built, and the
    build's own error if it failed."""
    ft, rows = svc.store.fine_tune_with_archives(org_id, q.ft_id)
    if ft is None:
        raise FineTuneNotFound(
            f"fine-tune {q.ft_id} not found; GET /v1/fine-tunes lists yours", param="ft_id"
        )
    ckpts = [c for c, _ in rows]
    if q.merged_step is not None:
        ckpt = merged_at_step(svc.store, ft, ckpts, q.merged_step)
    elif q.step is not None:
        ckpt = pick_step(ft, ckpts, q.step)
    else:
        assert q.checkpoint is not None
        ckpt = pick_kind(ft, ckpts, q.checkpoint)
    archive = {c.id: a for c, a in rows}.get(ckpt.id)  # none yet for a merge just queued
    if archive is None:  # being built, or evicted from the cache: then rebuilt now
        rebuilding = requeue_evicted(svc.store, ckpt)
        raise not_ready(
            svc.store, ft, ckpt, max(svc.settings.build_workers, 1), rebuilding=rebuilding
        )
    return Resolved(ft, ckpt, archive)


def not_ready(
    store: MetadataStore,
    ft: FineTune,
    ckpt: Checkpoint,
    workers: int,
    *,
    error: type[TunevaultError] = ArchiveNotReady,
    noun: str = "archive",
    rebuilding: bool = False,
) -> TunevaultError:
    """What to answer for a checkpoint not built yet: the error its build failed with (e.g.
    a missing base), or `error` with a Retry-After from the build queue's real state
    (`workers` build in parallel; 0 in settings means `tunevault worker`s, count one)."""
    failed = [j for j in store.jobs_for_checkpoint(ckpt.id) if j.state == JobState.FAILED]
    if failed:
        klass = TunevaultError.registry.get(failed[-1].error_code or "", TunevaultError)
        return klass(
            f"the {ckpt.kind.value} {noun} of {ft.id} could not be built: "
            f"{failed[-1].error_message}"
        )
    wait = build_wait(store, ckpt.id, workers)
    headers = wait.headers()
    if rebuilding:  # the answer says why, and a together client's request may wait it out
        headers[REBUILD_HEADER] = "evicted"
    return error(
        f"{ckpt.kind.value} {noun} of {ft.id} step {ckpt.step}"
        f"{' (evicted from the cache, rebuilding)' if rebuilding else ''}: "
        f"{wait.describe()}; retry in {wait.retry_after} s",
        headers=headers,
    )
