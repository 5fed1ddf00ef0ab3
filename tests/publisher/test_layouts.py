"""Layout detection on generated directories: what gets published, and what is refused."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.publisher import helpers
from tunevault.models import Kind
from tunevault.publisher.files import LayoutError, collect
from tunevault.publisher.layouts import detect

LORA = {
    "type": "Lora",
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.05,
    "lora_trainable_modules": "q_proj,v_proj",
}


def paths(files: tuple[object, ...]) -> list[str]:
    return [f.path for f in files]  # type: ignore[attr-defined]


def test_trainer_output_with_lora(tmp_path: Path) -> None:
    plan = detect(helpers.trainer_output(tmp_path / "run"))
    assert plan.layout == "trainer"
    assert plan.training_type == LORA
    assert plan.model is None  # the adapter config names no base: the user must
    # checkpoint-6 is at the final step: the final model supersedes it.
    assert [(c.step, c.kind, c.final) for c in plan.checkpoints] == [
        (2, Kind.ADAPTER, False),
        (4, Kind.ADAPTER, False),
        (6, Kind.ADAPTER, True),
    ]
    assert any("checkpoint-6 is superseded" in n for n in plan.notes)
    first, final = plan.checkpoints[0], plan.checkpoints[-1]
    # Resume state stays home; the checkpoint's trainer_state.json and README travel.
    assert paths(first.files) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "trainer_state.json",
    ]
    assert first.source == tmp_path / "run" / "checkpoint-2"
    assert paths(final.files) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    # Metrics: the last checkpoint's trainer_state.json (save_model writes none on top).
    assert plan.metrics[0] == {
        "step": 1,
        "train/epoch": 0.1,
        "train/grad_norm": 0.5,
        "train/learning_rate": 1e-4,
        "train/loss": 2.9,
    }
    assert {"step": 6, "eval/loss": 2.0} in plan.metrics
    assert len(plan.metrics) == 8


def test_include_optimizer(tmp_path: Path) -> None:
    plan = detect(helpers.trainer_output(tmp_path / "run"), include_optimizer=True)
    assert set(helpers.RESUME_FILES) <= set(paths(plan.checkpoints[0].files))
    assert "training_args.bin" in paths(plan.checkpoints[-1].files)


def test_trainer_output_without_final_model(tmp_path: Path) -> None:
    plan = detect(helpers.trainer_output(tmp_path / "run", saves=(3, 5), final=False))
    assert [(c.step, c.final) for c in plan.checkpoints] == [(3, False), (5, True)]
    assert plan.checkpoints[-1].source == tmp_path / "run" / "checkpoint-5"
    assert any("checkpoint-5 is the final model" in n for n in plan.notes)


def test_trainer_output_full_weights(tmp_path: Path) -> None:
    root = helpers.trainer_output(tmp_path / "run", saves=(10, 20), lora=False)
    (root / "trainer_state.json").write_text('{"global_step": 25, "log_history": []}')
    plan = detect(root)
    assert plan.training_type == {"type": "Full"}
    assert [(c.step, c.kind, c.final) for c in plan.checkpoints] == [
        (10, Kind.MODEL_OUTPUT, False),
        (20, Kind.MODEL_OUTPUT, False),
        (25, Kind.MODEL_OUTPUT, True),
    ]
    top = paths(plan.checkpoints[-1].files)
    assert top == ["config.json", "model-00001-of-00001.safetensors", "trainer_state.json"]


def test_bare_adapter(tmp_path: Path) -> None:
    plan = detect(helpers.adapter(tmp_path / "a", base="org/base-7b"))
    assert (plan.layout, plan.model, plan.training_type) == ("adapter", "org/base-7b", LORA)
    [only] = plan.checkpoints
    assert (only.step, only.kind, only.final) == (0, Kind.ADAPTER, True)
    assert plan.metrics == ()


def test_full_model(tmp_path: Path) -> None:
    plan = detect(helpers.full(tmp_path / "m", shards=2))
    assert (plan.layout, plan.training_type) == ("full", {"type": "Full"})
    [only] = plan.checkpoints
    assert only.kind == Kind.MODEL_OUTPUT and only.final
    assert len(only.files) == 3


def test_hidden_files_and_state_file_are_left_out(tmp_path: Path) -> None:
    root = helpers.adapter(tmp_path / "a")
    (root / ".tunevault-push.json").write_text("{}")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("x")
    assert ".tunevault-push.json" not in paths(detect(root).checkpoints[0].files)
    assert all(not p.startswith(".") for p in paths(detect(root).checkpoints[0].files))


def test_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(LayoutError, match="no model found"):
        detect(tmp_path)


def test_interrupted_checkpoint_is_refused(tmp_path: Path) -> None:
    root = helpers.trainer_output(tmp_path / "run", saves=(2,))
    (root / "checkpoint-4").mkdir()
    with pytest.raises(LayoutError, match="checkpoint-4 holds no adapter"):
        detect(root)


def test_symlink_outside_is_refused(tmp_path: Path) -> None:
    root = helpers.adapter(tmp_path / "a")
    (tmp_path / "secret").write_text("x")
    (root / "leak.txt").symlink_to(tmp_path / "secret")
    with pytest.raises(LayoutError, match="outside"):
        detect(root)


def test_symlink_inside_is_a_reported_copy(tmp_path: Path) -> None:
    root = helpers.adapter(tmp_path / "a")
    (root / "copy.safetensors").symlink_to("adapter_model.safetensors")
    plan = detect(root)
    by_path = {f.path: f for f in plan.checkpoints[0].files}
    assert by_path["copy.safetensors"].source == root / "adapter_model.safetensors"
    assert any("copy.safetensors: symlink" in n for n in plan.notes)


@pytest.mark.parametrize("target", ["dir", "dangling"])
def test_other_symlinks_are_refused(tmp_path: Path, target: str) -> None:
    root = helpers.adapter(tmp_path / "a")
    if target == "dir":
        (root / "sub").mkdir()
        (root / "link").symlink_to("sub")
    else:
        (root / "link").symlink_to("nowhere")
    with pytest.raises(LayoutError, match="link: "):
        detect(root)


def test_fifo_is_refused(tmp_path: Path) -> None:
    root = helpers.adapter(tmp_path / "a")
    os.mkfifo(root / "pipe")
    with pytest.raises(LayoutError, match="pipe: FIFO"):
        detect(root)  # and does not block opening it


def test_socket_is_refused(tmp_path: Path) -> None:
    root = helpers.full(tmp_path / "m")
    sub = root / "s"
    sub.mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sub / "sock"))
        with pytest.raises(LayoutError, match="s/sock: socket"):
            collect(root)


def test_unpublishable_names_are_refused(tmp_path: Path) -> None:
    root = helpers.adapter(tmp_path / "a")
    (root / "bad\nname").write_text("x")
    with pytest.raises(LayoutError, match="control characters"):
        detect(root)
