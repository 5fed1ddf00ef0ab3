"""Publish a Hugging Face Trainer run to tunevault as it trains.

    from tunevault.integrations.transformers import TunevaultCallback

    callback = TunevaultCallback(model="org/base-model", name="me/my-run")
    trainer = Trainer(..., callbacks=[callback])
    with callback:  # optional: a crash then marks the fine-tune `error`
        trainer.train()

Training start creates the fine-tune (running). Every save publishes its `checkpoint-N`
as an intermediate checkpoint, except the last one, which the final model replaces.
Logs are sent as metrics in batches. At the end of training the model the Trainer holds
is saved with `save_pretrained` into a temporary directory inside `output_dir` and
published as the final checkpoint, so nothing depends on the user calling
`trainer.save_model()`. A cancel through `POST /v1/fine-tunes/{id}/cancel` is noticed
within `poll_interval` seconds: training stops and the fine-tune ends `cancelled`.

Publishing runs on a thread of its own (publisher/background.py): training never waits
for the store, and a store that is away is caught up with when it returns, with warnings
meanwhile; a save is snapshotted with hard links first, so that the Trainer may rotate it
away. The end of training waits for the backlog (`wait_at_end`). `fail_hard=True`
publishes in the training thread instead, and a store failure stops training. The
published checkpoints are recorded in `output_dir`'s push state file, so that `tunevault
push output_dir` later continues this fine-tune. Only the main process
(`state.is_world_process_zero`) publishes.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as e:  # transformers is not a dependency of tunevault
    raise ImportError("TunevaultCallback needs transformers: pip install transformers") from e

from tunevault.client.http import NetworkError
from tunevault.publisher.background import Backlog
from tunevault.publisher.layouts import lora_training_type, metric_row, model_kind
from tunevault.publisher.push import fine_tune_body, is_local_path
from tunevault.publisher.run import RunPublisher
from tunevault.publisher.uploader import PublishClient

log = logging.getLogger("tunevault.integrations.transformers")


class TunevaultCallback(TrainerCallback):
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        name: str | None = None,
        *,
        suffix: str | None = None,
        external_base: bool = False,
        include_optimizer: bool = False,
        poll_interval: float = 5.0,
        metrics_batch: int = 50,
        fail_hard: bool = False,
        wait_at_end: float | None = None,
    ) -> None:
        url = url or os.environ.get("TUNEVAULT_URL")
        api_key = api_key or os.environ.get("TUNEVAULT_API_KEY")
        if not url or not api_key:
            raise ValueError("pass url and api_key, or set TUNEVAULT_URL and TUNEVAULT_API_KEY")
        # In the background a job is retried by the backlog, round after round: one try each.
        self.client = PublishClient(url, api_key, retries=6 if fail_hard else 0)
        self._poller = PublishClient(url, api_key, retries=0, timeout_s=5.0)
        self.backlog = Backlog(self.client.url, background=not fail_hard)
        self.model = model
        self.name = name
        self.suffix = suffix
        self.external_base = external_base  # the base is not in the store: merge nothing
        self.include_optimizer = include_optimizer
        self.poll_interval = poll_interval
        self.metrics_batch = metrics_batch
        self.wait_at_end = wait_at_end
        self.run: RunPublisher | None = None  # the run being published (main process only)
        self.cancelled = False
        self.finished = False
        self._rows: list[dict[str, Any]] = []
        self._polled = 0.0

    # -- the optional context manager: marks a crashed run ---------------------------

    def __enter__(self) -> TunevaultCallback:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is not None and self.run is not None and not self.finished:
                if isinstance(exc, KeyboardInterrupt):
                    self._finish("cancelled", "JOB_CANCELLED", "training interrupted", "warning")
                else:
                    self._finish("error", "JOB_ERROR", f"training failed: {exc!r}"[:2000], "error")
                self.run.wait(self.wait_at_end)
        except Exception:  # never hide the training error behind a publishing one
            log.exception("could not mark fine-tune %s as failed", self.fine_tune_id)
        finally:
            self.backlog.close()
            self.client.close()
            self._poller.close()

    # -- Trainer events --------------------------------------------------------------

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero:
            return
        self.cancelled = self.finished = False  # the same callback may see a second train()
        self._rows = []
        self._logged = itertools.count()  # metric row ids: their place in the trainer's log
        body = fine_tune_body(
            self._base_model(model),
            self.name or _output_dir(args).name,
            _training_type(model),
            self.suffix,
            self.external_base,
        )
        self.run = RunPublisher(self.client, self.backlog, _output_dir(args))
        self.run.start(body, f"callback:{uuid.uuid4()}", state.global_step)
        self._polled = time.monotonic()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.run is None or not logs:
            return
        row = metric_row(state.global_step, logs)
        if row is not None:
            self._rows.append({**row, "id": f"log:{next(self._logged)}"})
        if len(self._rows) >= self.metrics_batch:
            self._flush_metrics()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.fine_tune_id is None or self.cancelled or self.backlog.offline:
            return
        now = time.monotonic()
        if now - self._polled < self.poll_interval:
            return
        self._polled = now
        try:  # one quick try: a store that is away must not hold training up
            status = self._poller.get_fine_tune(self.fine_tune_id)["status"]
        except NetworkError:
            return
        if status == "cancel_requested":
            log.warning("fine-tune %s was cancelled: stopping training", self.fine_tune_id)
            self.cancelled = True
            control.should_training_stop = True

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is None or self.cancelled:
            return
        if control.should_training_stop or state.global_step >= state.max_steps:
            return  # the last save: the final model is published at this step instead
        directory = _output_dir(args) / f"checkpoint-{state.global_step}"
        if model_kind(directory) is None:
            log.warning("%s holds no model weights; not published", directory)
            return
        self.run.checkpoint(
            directory, state.global_step, final=False, include_resume_state=self.include_optimizer
        )
        self._flush_metrics()

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        if self.run is None or self.finished:
            return
        if self.cancelled:
            self._finish(
                "cancelled",
                "JOB_CANCELLED",
                "training stopped: cancelled",
                "warning",
                state.global_step,
            )
            self.run.wait(self.wait_at_end)
            return
        _output_dir(args).mkdir(parents=True, exist_ok=True)
        # Inside output_dir: the space checkpoints fit in, not a possibly small /tmp.
        final_dir = Path(tempfile.mkdtemp(prefix=".tunevault-final-", dir=_output_dir(args)))
        model.save_pretrained(final_dir)
        if processing_class is not None and hasattr(processing_class, "save_pretrained"):
            processing_class.save_pretrained(final_dir)
        if model_kind(final_dir) is None:
            shutil.rmtree(final_dir, ignore_errors=True)
            raise RuntimeError(
                f"save_pretrained wrote no weights tunevault recognises in {final_dir}"
            )
        self.run.checkpoint(
            final_dir, state.global_step, final=True, include_resume_state=self.include_optimizer
        )
        self._finish("completed", "JOB_COMPLETE", "training completed", "info", state.global_step)
        self.run.wait(self.wait_at_end)

    # -- helpers ---------------------------------------------------------------------

    @property
    def fine_tune_id(self) -> str | None:
        return None if self.run is None else self.run.fine_tune_id

    def _base_model(self, model: Any) -> str:
        if self.model:
            return self.model
        config = _peft_config(model)
        candidates = [
            getattr(config, "base_model_name_or_path", None),
            getattr(getattr(model, "config", None), "_name_or_path", None),
        ]
        for name in candidates:
            if isinstance(name, str) and name:  # a LoRA's merge needs a registered name
                return _registered_name(name) if config else name
        raise ValueError(
            "the model does not name its base model (or names a local path); pass "
            "TunevaultCallback(model=...), the name the base is registered under"
        )

    def _flush_metrics(self) -> None:
        if self.run is not None and self._rows:
            rows, self._rows = self._rows, []
            self.run.metrics(rows)

    def _finish(
        self, status: str, event: str, message: str, level: str, step: int | None = None
    ) -> None:
        assert self.run is not None
        self.finished = True
        self._flush_metrics()
        self.run.finish(status, event, message, level, step)


def _registered_name(name: str) -> str:
    """The model's own name of its base, unless that is a path of this machine: a path
    names no base in the store, and its merge could never run."""
    if is_local_path(name):
        raise ValueError(
            f"the base model was loaded from the local directory {name!r}, which names no "
            "base in the store; register it with `tunevault base push NAME DIR` and pass "
            "TunevaultCallback(model=NAME)"
        )
    return name


def _output_dir(args: TrainingArguments) -> Path:
    return Path(str(args.output_dir))  # TrainingArguments fills in a default when None


def _peft_config(model: Any) -> Any:
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not configs:
        return None
    return configs.get(getattr(model, "active_adapter", "default")) or next(iter(configs.values()))


def _training_type(model: Any) -> dict[str, Any]:
    config = _peft_config(model)
    if config is None:
        return {"type": "Full"}
    if str(getattr(config, "peft_type", "LORA")).rsplit(".", 1)[-1] != "LORA":
        raise ValueError(f"only LoRA adapters are served, not {config.peft_type}")
    return lora_training_type(config.to_dict())
