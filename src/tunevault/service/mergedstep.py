"""The merged model of any step's adapter, built on demand.

Together merges only the final adapter; tunevault also merges an intermediate one when it
is asked for (`merged_step`). Its merged checkpoint is not final, is not listed among the
fine-tune's checkpoints, and is built by a merge job like the final one, once.
"""

from __future__ import annotations

import contextlib

import sqlalchemy as sa

from tunevault.errors import CheckpointNotFound
from tunevault.metadata import MetadataStore
from tunevault.models import Checkpoint, FineTune, JobKind, Kind
from tunevault.service.bases import require_base


def merged_at_step(
    store: MetadataStore, ft: FineTune, ckpts: list[Checkpoint], step: int
) -> Checkpoint:
    """The merged checkpoint of the adapter at `step`, its merge queued if it is new."""
    if not ft.is_lora or ft.external_base:
        why = (
            "a full fine-tune has no adapter"
            if not ft.is_lora
            else f"its base {ft.model!r} lives elsewhere (external_base)"
        )
        raise CheckpointNotFound(
            f"fine-tune {ft.id} has no merged models: {why}", param="merged_step"
        )
    found = [c for c in ckpts if c.kind == Kind.MERGED and c.step == step]
    if found:
        return found[0]
    if not any(c.kind == Kind.ADAPTER and c.step == step for c in ckpts):
        steps = sorted({c.step for c in ckpts if c.kind == Kind.ADAPTER})
        raise CheckpointNotFound(
            f"fine-tune {ft.id} has no adapter at step {step}; adapter steps: "
            f"{', '.join(map(str, steps)) or 'none yet'}",
            param="merged_step",
        )
    require_base(store, ft.org_id, ft.model)
    # A concurrent request for the same step may create it first: that one is ours too.
    with contextlib.suppress(sa.exc.IntegrityError):
        store.add_checkpoint(ft.id, step, Kind.MERGED, False, [], jobs=(JobKind.MERGE,))
    made = store.find_checkpoint(ft.id, step, Kind.MERGED)
    if made is None:  # the fine-tune was deleted meanwhile
        raise CheckpointNotFound(f"fine-tune {ft.id} has no adapter at step {step}")
    return made
