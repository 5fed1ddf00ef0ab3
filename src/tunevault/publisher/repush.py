"""Pushing a directory again: the same run resumes, another run is refused before upload.

The state file (state.py) holds the manifest of every checkpoint this directory published,
by `tunevault push` or by the Trainer callback. A checkpoint whose published files are all
still there, unchanged, is the same checkpoint: it is kept as published, and files added
since (a `trainer_state.json` beside the callback's final model, say) are only noted. A
published file that changed or went away means the directory now holds another training
run: the push stops before it uploads a byte, saying what differs and how to publish it
as a new fine-tune.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunevault.errors import Conflict
from tunevault.publisher.layouts import CheckpointPlan, PublishPlan
from tunevault.publisher.state import PushState

SHOWN = 3  # differing files named per checkpoint


@dataclass
class Resume:
    kept: set[tuple[int, str]] = field(default_factory=set)  # published as they are now
    notes: list[str] = field(default_factory=list)


def check_resume(plan: PublishPlan, state: PushState, digests: dict[Path, str]) -> Resume:
    """What of `plan` is already published; Conflict when a published checkpoint changed."""
    resume = Resume()
    if state.fine_tune_id is None:
        return resume
    problems = []
    for c in plan.checkpoints:
        record = state.published(c.step, c.kind.value)
        if record is None:
            continue
        local = {f.path: digests[f.source] for f in c.files}
        changed = sorted(p for p in record if p in local and local[p] != record[p])
        gone = sorted(p for p in record if p not in local)
        if changed or gone:
            problems.append(_describe(c, changed, gone))
            continue
        added = sorted(set(local) - set(record))
        if added:
            resume.kept.add((c.step, c.kind.value))
            resume.notes.append(
                f"step {c.step} ({c.kind.value}) is kept as published; not sent: " + _names(added)
            )
    if problems:
        raise Conflict(
            f"{plan.root} was published as {state.fine_tune_id}, and its files changed since: "
            + "; ".join(problems)
            + ". Nothing was uploaded. This looks like another training run: pass --new to "
            "publish it as a new fine-tune (or restore the files to continue the old one)."
        )
    return resume


def _describe(c: CheckpointPlan, changed: list[str], gone: list[str]) -> str:
    parts = []
    if changed:
        parts.append(f"changed {_names(changed)}")
    if gone:
        parts.append(f"removed {_names(gone)}")
    return f"step {c.step} ({c.kind.value}): " + ", ".join(parts)


def _names(paths: list[str]) -> str:
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(paths[:SHOWN]) + more
