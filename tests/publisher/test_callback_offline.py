"""The store away during training: training goes on, and every checkpoint arrives later."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.postgres import free_port
from tests.support.server import run_server
from tunevault.models import Scope
from tunevault.service.context import open_services
from tunevault.settings import Settings

training = pytest.importorskip("tests.publisher.training")  # needs transformers, peft, torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments  # noqa: E402

from tunevault.client.http import NetworkError  # noqa: E402
from tunevault.integrations.transformers import TunevaultCallback  # noqa: E402


class StoreComesUp(TrainerCallback):
    """At the end of training, with nothing published yet, starts the server (on the port
    the callback was given) in a thread that keeps it up until `down` is set."""

    def __init__(self, callback: TunevaultCallback, data_dir: Path, port: int) -> None:
        self.callback, self.data_dir, self.port = callback, data_dir, port
        self.up = threading.Event()
        self.down = threading.Event()
        self.thread = threading.Thread(target=self._serve)
        self.backlog_at_end = 0

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.backlog_at_end = self.callback.backlog.pending
        self.thread.start()

    def _serve(self) -> None:
        with run_server(self.data_dir, port=self.port):
            self.up.set()
            self.down.wait(300)


def test_training_goes_on_while_the_store_is_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "store"
    with open_services(Settings(data_dir=data_dir)) as svc:
        org = svc.store.create_org("offline")
        _, token = svc.store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    callback = TunevaultCallback(url=url, api_key=token, model="tiny/llama", name="me/offline")
    store = StoreComesUp(callback, data_dir, port)
    caplog.set_level(logging.WARNING, logger="tunevault")
    try:
        trainer = training.train(
            training.tiny_llama(), tmp_path / "run", [store, callback], max_steps=4
        )
        # Training ran to the end though nothing could be published meanwhile...
        assert trainer.state.global_step == 4
        assert store.backlog_at_end >= 3  # the fine-tune, the save at step 2, metrics
        warnings = [r.getMessage() for r in caplog.records]
        assert any(
            m.startswith(f"tunevault: cannot reach {url} (connection refused)")
            and "training goes on" in m
            for m in warnings
        ), warnings
        assert any(m.startswith(f"tunevault: {url} is reachable again") for m in warnings)
        # ... and once the store was up, everything arrived, before train() returned.
        ft_id = callback.fine_tune_id
        assert ft_id is not None and callback.backlog.pending == 0
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            ft = c.get(f"/v1/fine-tunes/{ft_id}").json()
            ckpts = c.get(f"/v1/fine-tunes/{ft_id}/checkpoints").json()["data"]
            events = [e["type"] for e in c.get(f"/v1/fine-tunes/{ft_id}/events").json()["data"]]
            metrics = c.get(f"/v1/fine-tunes/{ft_id}/metrics").json()["metrics"]
        assert ft["status"] in ("completed", "compressing") and ft["model"] == "tiny/llama"
        assert sorted(c["step"] for c in ckpts) == [2, 4]
        assert events.count("CHECKPOINT_SAVE") == 2 and events[-1] == "JOB_COMPLETE"
        assert [m["train/global_step"] for m in metrics if "train/loss" in m] == [1, 2, 3, 4]
        leftovers = [
            p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".tunevault-")
        ]
        assert leftovers == [".tunevault-push.json"]
    finally:
        store.down.set()
        if store.thread.ident is not None:
            store.thread.join(60)


def test_fail_hard_stops_training_when_the_store_is_away(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    callback = TunevaultCallback(url=url, api_key="tv_any", model="tiny/llama", fail_hard=True)
    with pytest.raises(NetworkError, match=f"cannot reach {url} .*: connection refused"):
        training.train(training.tiny_llama(), tmp_path / "run", [callback], max_steps=4)
    assert callback.fine_tune_id is None and not (tmp_path / "run" / "checkpoint-2").exists()
