"""Resolving a download: (organization, fine-tune, step or kind) -> a checkpoint and its archive.

The rules are the spec's: with a step, the raw checkpoint of that step (`checkpoint` is
ignored); without one, the final checkpoint of the kind asked for, `default` being the
fine-tune's natural kind (merged for a LoRA, the full output otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunevault.errors import ArchiveNotReady, CheckpointNotFound, FineTuneNotFound, TunevaultError
from tunevault.models import Archive, Checkpoint, FineTune, JobState, Kind
from tunevault.service.context import Services

RETRY_AFTER_S = 30


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


def resolve(
    svc: Services, org_id: str, ft_id: str, step: int | None, checkpoint: str | None
) -> Resolved:
    """The checkpoint a download names and its built archive; raises ArchiveNotReady (with
    Retry-After) while it is being built, and the build's own error if it failed."""
    ft, rows = svc.store.fine_tune_with_archives(org_id, ft_id)
    if ft is None:
        raise FineTuneNotFound(
            f"fine-tune {ft_id} not found; GET /v1/fine-tunes lists yours", param="ft_id"
        )
    ckpts = [c for c, _ in rows]
    if step is not None:
        ckpt = pick_step(ft, ckpts, step)
    else:
        assert checkpoint is not None
        ckpt = pick_kind(ft, ckpts, checkpoint)
    archive = dict((c.id, a) for c, a in rows)[ckpt.id]
    if archive is None:
        failed = [j for j in svc.store.jobs_for_checkpoint(ckpt.id) if j.state == JobState.FAILED]
        if failed:  # say why, with the class the build failed with (e.g. a missing base)
            klass = TunevaultError.registry.get(failed[-1].error_code or "", TunevaultError)
            raise klass(
                f"the {ckpt.kind.value} archive of {ft.id} could not be built: "
                f"{failed[-1].error_message}"
            )
        raise ArchiveNotReady(
            f"the {ckpt.kind.value} archive of {ft.id} step {ckpt.step} is being prepared; "
            f"retry in {RETRY_AFTER_S} s",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return Resolved(ft, ckpt, archive)
