"""One training run published as it goes: the jobs the Trainer callback hands the backlog.

Transformers-free, so that any training loop can use it: `start` when training starts,
`checkpoint` for each save, `metrics` for logged rows, `finish` at the end, `wait` for
the backlog. Every job is idempotent and uses the ids `tunevault push` gives the same
rows (`event:start`, `event:checkpoint:<step>:<kind>`, `log:<n>`, ...), and records what
it did in the directory's push state, so that pushing the directory later continues this
fine-tune and sends nothing twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tunevault.publisher.background import Backlog
from tunevault.publisher.layouts import model_kind
from tunevault.publisher.push import publish_checkpoint
from tunevault.publisher.state import PushState
from tunevault.publisher.uploader import PublishClient

log = logging.getLogger("tunevault.publisher")
PENDING_DIR = ".tunevault-pending"


class RunPublisher:
    def __init__(self, client: PublishClient, backlog: Backlog, output_dir: Path) -> None:
        self.client = client
        self.backlog = backlog
        self.output_dir = output_dir
        output_dir.mkdir(parents=True, exist_ok=True)  # the state file goes there at once
        # A new run in this directory: what an earlier one published here is forgotten.
        self.state = PushState.load(output_dir, client.url, fresh=True)
        self.fine_tune_id: str | None = None

    def start(self, body: dict[str, Any], key: str, step: int) -> None:
        def create() -> None:
            ft_id = str(self.client.create_fine_tune(body, key)["id"])
            self.state.start(ft_id)
            self.fine_tune_id = ft_id
            self._event("event:start", "JOB_START", "training started", step=step)

        self.backlog.submit(create, "the new fine-tune")

    def checkpoint(
        self, directory: Path, step: int, *, final: bool, include_resume_state: bool
    ) -> None:
        """Publish `directory` as the checkpoint at `step`, then post CHECKPOINT_SAVE. A
        save is snapshotted first (hard links), since the Trainer may delete it before the
        backlog gets to it (save_total_limit); a final directory is handed over, and
        removed once published."""
        kind = model_kind(directory)
        assert kind is not None, f"{directory} holds no model"
        source = directory if final else self._snapshot(directory)
        what = "final model" if final else "checkpoint"
        hashed: dict[Path, str] = {}  # a retry after the store was away does not hash again

        def publish() -> None:
            assert self.fine_tune_id is not None
            publish_checkpoint(
                self.client,
                self.fine_tune_id,
                source,
                step=step,
                kind=kind,
                final=final,
                include_resume_state=include_resume_state,
                state=self.state,
                hashed=hashed,
            )
            shutil.rmtree(source, ignore_errors=True)
            if not final:
                with contextlib.suppress(OSError):  # not empty: other saves are waiting
                    source.parent.rmdir()
            key = f"event:checkpoint:{step}:{kind.value}"
            self._event(key, "CHECKPOINT_SAVE", f"{what} saved at step {step}", step=step)

        self.backlog.submit(publish, f"the {what} of step {step}")

    def metrics(self, rows: list[dict[str, Any]]) -> None:
        def send() -> None:
            assert self.fine_tune_id is not None
            self.client.add_metrics(self.fine_tune_id, rows)
            self.state.add_metrics_sent(len(rows))

        self.backlog.submit(send, f"{len(rows)} metrics rows")

    def finish(
        self, status: str, event: str, message: str, level: str, step: int | None = None
    ) -> None:
        key = "event:complete" if status == "completed" else f"event:{status}"

        def finish() -> None:
            assert self.fine_tune_id is not None
            self._event(key, event, message, level, step)
            self.client.set_status(self.fine_tune_id, status)
            self.state.mark(f"status:{status}")

        self.backlog.submit(finish, f"status {status}")

    def wait(self, timeout: float | None) -> None:
        """Block until the backlog is published (or `timeout` s), saying why if it waits."""
        if self.backlog.pending:
            log.warning(
                "tunevault: waiting for %d publishing step(s) to reach %s before training "
                "returns%s",
                self.backlog.pending,
                self.client.url,
                "" if timeout is None else f" (at most {timeout:g} s)",
            )
        self.backlog.drain(timeout)

    def _event(
        self, key: str, type_: str, message: str, level: str = "info", step: int | None = None
    ) -> None:
        assert self.fine_tune_id is not None
        event: dict[str, Any] = {"type": type_, "message": message, "level": level, "id": key}
        if step is not None:
            event["step"] = step
        self.client.add_events(self.fine_tune_id, [event])
        self.state.mark(key)

    def _snapshot(self, directory: Path) -> Path:
        pending = self.output_dir / PENDING_DIR
        pending.mkdir(exist_ok=True)
        target = Path(tempfile.mkdtemp(prefix=f"{directory.name}-", dir=pending))
        shutil.copytree(directory, target, copy_function=_link_or_copy, dirs_exist_ok=True)
        return target


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)
