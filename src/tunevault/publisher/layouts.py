"""Recognise a training output directory and turn it into a publish plan.

Three layouts:

- `trainer`: a Hugging Face Trainer `output_dir`, with `checkpoint-N/` saves and the final
  model (`trainer.save_model()`) at the top (TensorBoard's `runs/` left out). Without a
  top-level model the last checkpoint is the final one. An intermediate save at the final
  step is dropped: the final model supersedes it (one checkpoint per step and kind).
- `adapter`: a bare PEFT adapter directory (`adapter_config.json` + adapter weights).
- `full`: a bare model directory (`config.json` + `*.safetensors` or `pytorch_model*.bin`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunevault.models import Kind
from tunevault.publisher.files import LayoutError, LocalFile, collect

CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class CheckpointPlan:
    step: int
    kind: Kind
    final: bool
    source: Path
    files: tuple[LocalFile, ...]


@dataclass(frozen=True)
class PublishPlan:
    layout: str  # "trainer", "adapter" or "full"
    root: Path
    model: str | None  # the base model, when the files name it
    training_type: dict[str, Any]  # the body's `training_type`
    checkpoints: tuple[CheckpointPlan, ...]  # by step, the final one last
    metrics: tuple[dict[str, Any], ...] = ()
    notes: tuple[str, ...] = field(default=())  # things the user should hear about


def model_kind(directory: Path) -> Kind | None:
    """What the weights in `directory` are, or None when it holds no model."""
    if (directory / "adapter_config.json").is_file() and any(
        (directory / name).is_file() for name in ADAPTER_WEIGHTS
    ):
        return Kind.ADAPTER
    if (directory / "config.json").is_file() and (
        any(directory.glob("*.safetensors")) or any(directory.glob("pytorch_model*.bin"))
    ):
        return Kind.MODEL_OUTPUT
    return None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LayoutError(f"{path}: unreadable JSON ({e})") from e
    if not isinstance(data, dict):
        raise LayoutError(f"{path}: expected a JSON object")
    return data


def describe_model(directory: Path, kind: Kind) -> tuple[str | None, dict[str, Any]]:
    """The base model the files name (None if they do not) and Together's `training_type`."""
    if kind != Kind.ADAPTER:
        name = read_json(directory / "config.json").get("_name_or_path")
        training: dict[str, Any] = {"type": "Full"}
    else:
        cfg = read_json(directory / "adapter_config.json")  # one read for both answers
        if cfg.get("peft_type", "LORA") != "LORA":
            raise LayoutError(
                f"{directory}: PEFT type {cfg.get('peft_type')!r}; only LoRA is served"
            )
        name, training = cfg.get("base_model_name_or_path"), lora_training_type(cfg)
    return (name if isinstance(name, str) and name else None), training


def lora_training_type(cfg: dict[str, Any]) -> dict[str, Any]:
    alpha = cfg.get("lora_alpha", 8)
    body: dict[str, Any] = {
        "type": "Lora",
        "lora_r": int(cfg.get("r", 8)),
        "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
    }
    if cfg.get("lora_dropout") is not None:
        body["lora_dropout"] = float(cfg["lora_dropout"])
    modules = cfg.get("target_modules")
    if isinstance(modules, str):  # a regular expression: pass it on as written
        body["lora_trainable_modules"] = modules
    elif modules:
        body["lora_trainable_modules"] = ",".join(sorted(str(m) for m in modules))
    return body


def trainer_metrics(log_history: list[Any]) -> list[dict[str, Any]]:
    """`log_history` rows as metric rows."""
    rows = []
    for entry in log_history:
        if isinstance(entry, dict) and isinstance(entry.get("step"), int):
            row = metric_row(entry["step"], entry)
            if row is not None:
                rows.append(row)
    return rows


def metric_row(step: int, logs: dict[str, Any]) -> dict[str, Any] | None:
    """The numbers of one Trainer log entry, named the way HF's experiment trackers do."""
    row: dict[str, Any] = {"step": step}
    for key, value in logs.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):  # JSON has no NaN: a diverged loss shows as a gap
            row[metric_name(key)] = value
    return row if len(row) > 1 else None


def metric_name(key: str) -> str:
    for prefix in ("eval", "test"):
        if key.startswith(prefix + "_"):
            return f"{prefix}/{key.removeprefix(prefix + '_')}"
    return f"train/{key}"


def detect(root: Path, *, include_optimizer: bool = False) -> PublishPlan:
    root = root.resolve()
    if not root.is_dir():
        raise LayoutError(f"{root} is not a directory")
    saves = {
        int(m.group(1)): p
        for p in root.iterdir()
        if (m := CHECKPOINT_DIR.fullmatch(p.name)) and p.is_dir() and not p.is_symlink()
    }
    if saves or (root / "trainer_state.json").is_file():
        return _trainer_plan(root, saves, include_optimizer)
    kind = model_kind(root)
    if kind is None:
        raise LayoutError(
            f"{root}: no model found: expected checkpoint-N/ directories (Trainer output), "
            "adapter_config.json + adapter_model.safetensors (PEFT adapter), "
            "or config.json + *.safetensors (full model)"
        )
    notes: list[str] = []
    files = collect(root, include_resume_state=include_optimizer, notes=notes)
    state = root / "trainer_state.json"
    step = int(read_json(state).get("global_step", 0)) if state.is_file() else 0
    model, training = describe_model(root, kind)
    return PublishPlan(
        layout="adapter" if kind == Kind.ADAPTER else "full",
        root=root,
        model=model,
        training_type=training,
        checkpoints=(CheckpointPlan(step, kind, True, root, tuple(files)),),
        notes=tuple(notes),
    )


def _trainer_plan(root: Path, saves: dict[int, Path], include_optimizer: bool) -> PublishPlan:
    notes: list[str] = []
    kinds: dict[int, Kind] = {}
    for step, path in sorted(saves.items()):
        kind = model_kind(path)
        if kind is None:
            raise LayoutError(
                f"{path} holds no adapter or model weights (an interrupted save?); "
                "remove it to publish the rest"
            )
        kinds[step] = kind
    state_file = root / "trainer_state.json"
    if not state_file.is_file() and saves:
        state_file = saves[max(saves)] / "trainer_state.json"
    state = read_json(state_file) if state_file.is_file() else {}
    last = int(state.get("global_step") or max(saves, default=0))

    top_kind = model_kind(root)
    if top_kind is not None:
        final_dir = root
        final_kind = top_kind
        final_files = collect(
            root,
            include_resume_state=include_optimizer,
            skip=lambda rel: rel == "runs" or CHECKPOINT_DIR.fullmatch(rel) is not None,
            notes=notes,
        )
    elif saves:
        last = max(saves)
        final_dir, final_kind = saves[last], kinds[last]
        final_files = collect(final_dir, include_resume_state=include_optimizer, notes=notes)
        notes.append(f"no model at the top of {root}: checkpoint-{last} is the final model")
    else:
        raise LayoutError(f"{root}: trainer_state.json but no model and no checkpoint-N/")

    if any(k != final_kind for k in kinds.values()):
        raise LayoutError(
            f"{root}: mixes adapter and full-weight saves; publish the directories separately"
        )
    checkpoints = []
    for step, path in sorted(saves.items()):
        if step >= last:
            if path != final_dir:
                notes.append(f"checkpoint-{step} is superseded by the final model at step {last}")
            continue
        files = collect(path, include_resume_state=include_optimizer, notes=notes)
        checkpoints.append(CheckpointPlan(step, kinds[step], False, path, tuple(files)))
    checkpoints.append(CheckpointPlan(last, final_kind, True, final_dir, tuple(final_files)))
    history = state.get("log_history")
    model, training = describe_model(final_dir, final_kind)
    return PublishPlan(
        layout="trainer",
        root=root,
        model=model,
        training_type=training,
        checkpoints=tuple(checkpoints),
        metrics=tuple(trainer_metrics(history if isinstance(history, list) else [])),
        notes=tuple(notes),
    )
