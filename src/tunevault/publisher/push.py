"""Publishing a whole plan as one fine-tune, resumable through the state file.

Order: hash, create the fine-tune (its id goes to the state file at once), upload the
blobs the server lacks, post the checkpoint manifests (idempotent on the server), then
the events and metrics not sent yet, and the final status. A rerun after any
interruption repeats only what the state file does not record as done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunevault.errors import Conflict, NotFound
from tunevault.models import Kind
from tunevault.publisher.files import LayoutError, collect
from tunevault.publisher.layouts import CheckpointPlan, PublishPlan
from tunevault.publisher.repush import Resume, check_resume
from tunevault.publisher.state import STATE_FILE, PushState
from tunevault.publisher.uploader import PublishClient, hash_files, manifest

METRICS_BATCH = 1000


@dataclass
class PushResult:
    fine_tune_id: str
    resumed: bool
    files: int
    bytes_total: int
    bytes_uploaded: int
    blobs_uploaded: int
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.fine_tune_id,
            "resumed": self.resumed,
            "files": self.files,
            "bytes_total": self.bytes_total,
            "bytes_uploaded": self.bytes_uploaded,
            "blobs_uploaded": self.blobs_uploaded,
            "checkpoints": self.checkpoints,
            "notes": self.notes,
        }


def is_local_path(name: str) -> bool:
    """Whether a base model "name" is really a path on the training machine, which no
    other machine (nor the merge) can use."""
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().is_dir()


def fine_tune_body(
    model: str,
    name: str,
    training_type: dict[str, Any],
    suffix: str | None,
    external_base: bool = False,
) -> dict[str, Any]:
    """The create request of a fine-tune that is being published (the CLI and the callback)."""
    body: dict[str, Any] = {
        "model": model,
        "model_output_name": name,
        "training_type": training_type,
        "status": "running",
    }
    if suffix:
        body["suffix"] = suffix
    if external_base and training_type.get("type") == "Lora":  # its base is elsewhere: no merge
        body["external_base"] = True
    return body


def _open_fine_tune(
    client: PublishClient, state: PushState, body: dict[str, Any]
) -> tuple[str, bool]:
    """The fine-tune this directory already started on this server, else a new one."""
    ft_id = state.fine_tune_id
    if ft_id is not None:
        try:
            client.get_fine_tune(ft_id)
            return ft_id, True
        except NotFound:
            pass  # deleted since, or another organization's key: start a new one
    if not body["model"]:
        raise LayoutError(
            f"the fine-tune {ft_id} recorded in {STATE_FILE} is gone and the files do not name "
            "the base model; pass --model BASE"
        )
    ft_id = str(client.create_fine_tune(body, state.creation_key())["id"])
    state.start(ft_id)
    return ft_id, False


def _event(state: PushState, client: PublishClient, ft_id: str, key: str, **event: Any) -> None:
    if not state.done(key):
        client.add_events(ft_id, [{"level": "info", "id": key, **event}])
        state.mark(key)


def publish_checkpoint(
    client: PublishClient,
    ft_id: str,
    directory: Path,
    *,
    step: int,
    kind: Kind,
    final: bool,
    include_resume_state: bool = False,
    state: PushState | None = None,
    hashed: dict[Path, str] | None = None,
) -> dict[str, Any]:
    """Upload one model directory's missing blobs and commit it as a checkpoint (recorded
    in `state`, so that a later push of the training directory knows it). `hashed` keeps
    the digests across retries of the same directory."""
    files = collect(directory, include_resume_state=include_resume_state)
    known = {} if hashed is None else hashed
    digests = hash_files(files, client.progress, lambda f: known.get(f.source))
    known.update(digests)
    client.upload_files(files, digests)
    out = client.add_checkpoint(ft_id, step, kind.value, final, manifest(files, digests))
    if state is not None:
        state.record_published(step, kind.value, {f.path: digests[f.source] for f in files})
    return out


def _commit(
    client: PublishClient,
    state: PushState,
    ft_id: str,
    c: CheckpointPlan,
    digests: dict[Path, str],
) -> dict[str, Any]:
    """Post one checkpoint's manifest and record it as published from this directory."""
    try:
        out = client.add_checkpoint(
            ft_id, c.step, c.kind.value, c.final, manifest(c.files, digests)
        )
    except Conflict as e:
        raise Conflict(
            f"{e.message}. {c.source} holds other files than {ft_id} has at step {c.step}: "
            "pass --new to publish this directory as a new fine-tune"
        ) from e
    state.record_published(c.step, c.kind.value, {f.path: digests[f.source] for f in c.files})
    return out


def push_plan(
    client: PublishClient,
    plan: PublishPlan,
    state: PushState,
    *,
    model: str | None = None,
    name: str | None = None,
    suffix: str | None = None,
    external_base: bool = False,
) -> PushResult:
    body = _create_body(plan, state, model, name, suffix, external_base)
    files = [f for c in plan.checkpoints for f in c.files]
    digests = hash_files(files, client.progress, state.cached_digest)
    state.remember_digests(files, digests)
    resume = check_resume(plan, state, digests)  # another run in this directory: stop here
    # Past the organization's quota the server refuses this (413) before anything exists:
    # a push that cannot upload leaves no fine-tune behind.
    client.missing({digests[f.source]: f.size for f in files})

    ft_id, resumed = _open_fine_tune(client, state, body)
    if not resumed:
        resume = Resume()  # the recorded fine-tune is gone: everything goes to the new one
    todo = [c for c in plan.checkpoints if (c.step, c.kind.value) not in resume.kept]
    where = plan.root.name
    _event(state, client, ft_id, "event:start", type="JOB_START", message=f"push of {where}")
    sent_before = client.bytes_sent
    blobs_before = client.blobs_sent
    client.upload_files([f for c in todo for f in c.files], digests)

    result = PushResult(
        fine_tune_id=ft_id,
        resumed=resumed,
        files=len(files),
        bytes_total=sum(f.size for f in files),
        bytes_uploaded=client.bytes_sent - sent_before,
        blobs_uploaded=client.blobs_sent - blobs_before,
        notes=resume.notes,
    )
    for c in plan.checkpoints:
        if (c.step, c.kind.value) not in resume.kept:
            result.checkpoints.append(_commit(client, state, ft_id, c, digests))
        what = "final model" if c.final else "checkpoint"
        _event(
            state,
            client,
            ft_id,
            f"event:checkpoint:{c.step}:{c.kind.value}",
            type="CHECKPOINT_SAVE",
            message=f"{what} saved at step {c.step}",
            step=c.step,
        )
    _complete(client, state, ft_id, plan)
    return result


def _create_body(
    plan: PublishPlan,
    state: PushState,
    model: str | None,
    name: str | None,
    suffix: str | None,
    external_base: bool,
) -> dict[str, Any]:
    named, lora = plan.model, plan.training_type["type"] == "Lora"
    if named and lora and is_local_path(named):
        named = None  # merges need the registered name, not the training machine's path
    body = fine_tune_body(
        model or named or "",
        name or plan.root.name,
        plan.training_type,
        suffix,
        external_base and lora,
    )
    # A fine-tune this directory already started has its base; a new one needs it named.
    if not body["model"] and state.fine_tune_id is None:
        said = f" (it names {plan.model}, a path on this machine)" if plan.model else ""
        raise LayoutError(
            f"{plan.root}: the files do not name the base model{said}; pass --model BASE, "
            "the name the base was registered under (`tunevault base ls`)"
        )
    return body


def _complete(client: PublishClient, state: PushState, ft_id: str, plan: PublishPlan) -> None:
    """The metrics not sent yet, JOB_COMPLETE and the final status."""
    # Ids by position in the trainer's log: the same on every rerun of this directory.
    rows = [{**r, "id": f"log:{i}"} for i, r in enumerate(plan.metrics)][state.metrics_sent :]
    for i in range(0, len(rows), METRICS_BATCH):
        batch = rows[i : i + METRICS_BATCH]
        client.add_metrics(ft_id, batch)
        state.add_metrics_sent(len(batch))
    last = plan.checkpoints[-1].step
    _event(
        state,
        client,
        ft_id,
        "event:complete",
        type="JOB_COMPLETE",
        message="training completed",
        step=last,
    )
    if not state.done("status:completed"):
        client.set_status(ft_id, "completed")
        state.mark("status:completed")
