"""TunevaultCallback in a real (tiny, CPU) Trainer run, downloaded with the real together CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.publisher.conftest import Live
from tests.publisher.test_push import settled, tunevault
from tests.support.together import together_download as run_together

training = pytest.importorskip("tests.publisher.training")  # needs transformers, peft, torch
from transformers import (  # noqa: E402
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from tunevault.integrations.transformers import TunevaultCallback  # noqa: E402

BASE = "tiny/llama"


@dataclass(frozen=True)
class Run:
    ft_id: str
    out: Path


@pytest.fixture(scope="module")
def run(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("callback")
    base = training.tiny_llama()
    base.save_pretrained(tmp / "base")  # before LoRA wraps it: the model merges go into
    proc = tunevault(live, "base", "push", BASE, str(tmp / "base"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    callback = TunevaultCallback(url=live.url, api_key=live.token, model=BASE, name="me/tiny")
    with callback:
        training.train(training.with_lora(base), tmp / "out", [callback])
    assert callback.fine_tune_id is not None
    yield Run(callback.fine_tune_id, tmp / "out")


def test_run_is_published(live: Live, run: Run) -> None:
    ft = settled(live, run.ft_id)
    assert ft["status"] == "completed" and ft["model"] == BASE
    lora = {"type": "Lora", "lora_r": 4, "lora_alpha": 8, "lora_trainable_modules": "q_proj,v_proj"}
    assert lora.items() <= ft["training_type"].items()
    ckpts = live.get(f"/v1/fine-tunes/{run.ft_id}/checkpoints")["data"]
    assert sorted(c["step"] for c in ckpts) == [2, 4, 6, 6]
    events = [e["type"] for e in live.get(f"/v1/fine-tunes/{run.ft_id}/events")["data"]]
    assert events.count("CHECKPOINT_SAVE") == 3
    assert {"JOB_START", "JOB_COMPLETE"} <= set(events)
    metrics = live.get(f"/v1/fine-tunes/{run.ft_id}/metrics")["metrics"]
    losses = [m for m in metrics if "train/loss" in m]
    assert [m["train/global_step"] for m in losses] == [1, 2, 3, 4, 5, 6]
    assert all("train/learning_rate" in m for m in losses)


def test_base_ls(live: Live, run: Run) -> None:
    proc = tunevault(live, "base", "ls", "--json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    [base] = [m for m in json.loads(out)["data"] if m["name"] == BASE]
    assert base["files"] >= 2 and base["size"] > 0


def direct(live: Live, **params: Any) -> bytes:
    """GET the archive; a merged one builds asynchronously (409 archive_not_ready)."""
    with live.http() as c:
        for _ in range(240):
            r = c.get("/v1/finetune/download", params=params)
            if r.status_code != 409:
                assert r.status_code == 200, r.text
                return r.content
            time.sleep(0.5)
    pytest.fail(f"archive {params} never became ready")


def together_download(live: Live, out: Path, *args: str) -> bytes:
    return run_together(live.url, live.token, out, *args).read_bytes()


def members(archive: bytes) -> dict[str, bytes]:
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive)).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {
            m.name.split("/", 1)[-1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


@pytest.mark.parametrize(
    ("args", "params"),
    [
        (("-c", "adapter"), {"checkpoint": "adapter"}),
        (("-s", "2"), {"checkpoint_step": 2}),
        ((":2",), {"checkpoint_step": 2}),
        ((), {"checkpoint": "merged"}),
    ],
    ids=["adapter", "step", "colon-step", "merged"],
)
def test_together_cli_downloads(
    live: Live, run: Run, tmp_path: Path, args: tuple[str, ...], params: dict[str, Any]
) -> None:
    expected = direct(live, ft_id=run.ft_id, **params)  # also waits for the merged build
    # `FT:STEP` is the CLI's other spelling of --checkpoint-step.
    args = (run.ft_id + ":2",) if args == (":2",) else (run.ft_id, *args)
    assert together_download(live, tmp_path / "out", *args) == expected
    files = members(expected)
    if params.get("checkpoint_step") == 2:
        on_disk = (run.out / "checkpoint-2" / "adapter_model.safetensors").read_bytes()
        assert files["adapter_model.safetensors"] == on_disk
        assert "optimizer.pt" not in files
    elif params.get("checkpoint") == "merged":
        assert "config.json" in files and any(n.endswith(".safetensors") for n in files)
    else:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files)


def test_full_fine_tune(live: Live, tmp_path: Path) -> None:
    callback = TunevaultCallback(url=live.url, api_key=live.token, model=BASE)
    training.train(training.tiny_llama(), tmp_path / "full-run", [callback], max_steps=4)
    ft = settled(live, callback.fine_tune_id or "")
    assert ft["status"] == "completed" and ft["training_type"]["type"] == "Full"
    assert ft["model_output_name"] == "full-run"
    ckpts = live.get(f"/v1/fine-tunes/{ft['id']}/checkpoints")["data"]
    assert sorted(c["step"] for c in ckpts) == [2, 4]
    files = members(direct(live, ft_id=ft["id"], checkpoint="model_output_path"))
    assert {"config.json", "model.safetensors"} <= set(files)
    assert not any(
        name.startswith(".tunevault-final") for name in os.listdir(tmp_path / "full-run")
    )


def test_a_base_loaded_from_a_local_directory_needs_its_registered_name(
    live: Live, tmp_path: Path
) -> None:
    training.tiny_llama().save_pretrained(tmp_path / "base")
    local = type(training.tiny_llama()).from_pretrained(tmp_path / "base")
    callback = TunevaultCallback(url=live.url, api_key=live.token, name="me/local-base")
    before = len(live.get("/v1/fine-tunes")["data"])
    with pytest.raises(ValueError, match="tunevault base push NAME DIR") as refused:
        training.train(training.with_lora(local), tmp_path / "out", [callback], max_steps=2)
    assert str(tmp_path / "base") in str(refused.value) and "model=NAME" in str(refused.value)
    assert callback.fine_tune_id is None
    assert len(live.get("/v1/fine-tunes")["data"]) == before


class Gate(TrainerCallback):
    """Holds training at `step` until `opened` is set: the cancel lands at a known point."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.opened = threading.Event()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step == self.step:
            assert self.opened.wait(60), "the cancel never came"


def test_cancel_stops_training(live: Live, tmp_path: Path) -> None:
    gate = Gate(step=3)
    callback = TunevaultCallback(
        url=live.url,
        api_key=live.token,
        model=BASE,
        name="me/cancelled",
        poll_interval=0,
        external_base=True,  # whether or not another test registered it
    )

    def cancel_after_first_save() -> None:
        try:
            for _ in range(600):
                ft_id = callback.fine_tune_id
                if ft_id and live.get(f"/v1/fine-tunes/{ft_id}/checkpoints")["data"]:
                    live.post(f"/v1/fine-tunes/{ft_id}/cancel", {})
                    return
                time.sleep(0.05)
        finally:
            gate.opened.set()

    canceller = threading.Thread(target=cancel_after_first_save)
    canceller.start()
    with callback:  # the gate comes first: our callback polls right after it opens
        trainer = training.train(
            training.with_lora(training.tiny_llama()),
            tmp_path / "out",
            [gate, callback],
            max_steps=200,
        )
    canceller.join(30)
    assert trainer.state.global_step == 3
    ft = settled(live, callback.fine_tune_id or "")
    assert ft["status"] == "cancelled"
    ckpts = live.get(f"/v1/fine-tunes/{ft['id']}/checkpoints")["data"]
    assert [c["step"] for c in ckpts] == [2]
    events = [e["type"] for e in live.get(f"/v1/fine-tunes/{ft['id']}/events")["data"]]
    assert "JOB_CANCELLED" in events and "JOB_COMPLETE" not in events


class Explode(TrainerCallback):
    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step == 3:
            raise RuntimeError("out of memory, say")


def test_crash_marks_error(live: Live, tmp_path: Path) -> None:
    callback = TunevaultCallback(
        url=live.url, api_key=live.token, model=BASE, name="me/crash", external_base=True
    )
    with pytest.raises(RuntimeError, match="out of memory"), callback:
        training.train(
            training.with_lora(training.tiny_llama()), tmp_path / "out", [callback, Explode()]
        )
    ft = settled(live, callback.fine_tune_id or "")
    assert ft["status"] == "error"
    events = live.get(f"/v1/fine-tunes/{ft['id']}/events")["data"]
    assert any(e["type"] == "JOB_ERROR" and "out of memory" in e["message"] for e in events)


def client_download(live: Live, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TUNEVAULT_URL": live.url, "TUNEVAULT_API_KEY": live.token}
    return subprocess.run(
        [sys.executable, "-m", "tunevault", "download", *args, "-o", f"{out}/", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize(
    ("ref", "kind", "expected"),
    [
        (":6", "merged", "-step6-merged.tar.zst"),  # the final step: Together's merged model
        (":4", "adapter", "-step4-adapter.tar.zst"),
        (":4", "model_output_path", None),  # a LoRA run has no full weights at step 4
        # tunevault's merged-at-any-step extension (merged_step): either that archive, or,
        # from a server without it, a refusal; never the adapter or another step's merge.
        (":4", "merged", "-step4-merged.tar.zst"),
    ],
)
def test_download_never_hands_back_another_kind(
    live: Live, run: Run, tmp_path: Path, ref: str, kind: str, expected: str | None
) -> None:
    direct(live, ft_id=run.ft_id, checkpoint="merged")  # the final merge is built
    r = client_download(live, tmp_path, run.ft_id + ref, "--checkpoint", kind)
    body = json.loads(r.stdout)
    if r.returncode == 0:
        assert expected is not None and body["filename"].endswith(expected), body
        files = members(Path(body["path"]).read_bytes())
        assert ("config.json" in files) == (kind == "merged")
        return
    assert r.returncode == 4, r.stderr
    assert body["error"]["code"] == "checkpoint_kind_unavailable"
    assert f"asked for the {kind} checkpoint of step {ref[1:]}" in body["error"]["message"]
    assert expected is None or kind == "merged"
    assert list(tmp_path.iterdir()) == []  # nothing of the wrong archive is kept


def test_push_of_the_trained_directory_resumes_its_fine_tune(live: Live, run: Run) -> None:
    """The callback recorded what it published: pushing `output_dir` afterwards continues
    that fine-tune, uploads nothing and doubles no event or metric."""
    before = live.get(f"/v1/fine-tunes/{run.ft_id}/events")["data"]
    metrics = live.get(f"/v1/fine-tunes/{run.ft_id}/metrics")["metrics"]
    proc = tunevault(live, "push", str(run.out), "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["id"] == run.ft_id and result["resumed"] is True
    assert result["bytes_uploaded"] == 0
    assert len(live.get(f"/v1/fine-tunes/{run.ft_id}/events")["data"]) == len(before)
    assert live.get(f"/v1/fine-tunes/{run.ft_id}/metrics")["metrics"] == metrics
