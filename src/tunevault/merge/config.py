"""adapter_config.json: each key is honoured, known not to change merged weights, or refused."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tunevault.errors import MergeRefused

T = TypeVar("T")

# Keys that do not change merged weights (bookkeeping, training-time or runtime only).
_NO_EFFECT = frozenset(
    {
        "task_type",
        "peft_type",
        "auto_mapping",
        "peft_version",
        "base_model_name_or_path",
        "revision",
        "inference_mode",
        "lora_dropout",
        "megatron_core",
        "qalora_group_size",
        "eva_config",
        "runtime_config",
    }
)
# Keys the merge reads and honours.
_HONOURED = frozenset(
    {
        "r",
        "lora_alpha",
        "use_rslora",
        "rank_pattern",
        "alpha_pattern",
        "target_modules",
        "exclude_modules",
        "layers_to_transform",
        "layers_pattern",
        "fan_in_fan_out",
        "modules_to_save",
        "bias",
        "lora_bias",
        "trainable_token_indices",
        "use_dora",
        "init_lora_weights",
    }
)
# Keys whose non-empty value asks for something a plain weight merge cannot reproduce.
_REFUSED_IF_SET = {
    "layer_replication": "it changes the model's layer structure",
    "target_parameters": "LoRA on bare parameters (e.g. MoE experts) is not supported",
    "megatron_config": "Megatron-parallel layers are not supported",
    "use_qalora": "QALoRA merges into quantized weights",
    "alora_invocation_tokens": "activated LoRA only applies after its invocation tokens",
    "arrow_config": "Arrow routing is input-dependent",
    "use_bdlora": "BD-LoRA is not supported",
    "velora_config": "VeLoRA is not supported",
    "monteclora_config": "MonteCLoRA is not supported",
    "kasa_config": "KaSA is not supported",
    "ensure_weight_tying": "tied adapter weights are not supported",
    "loftq_config": "LoftQ is not supported",
    "corda_config": "CorDA rewrites the base weights",
    "lora_ga_config": "LoRA-GA rewrites the base weights",
}
# These initialisations rewrite the base weights, so the adapter is not relative to base_dir.
_BASE_REWRITING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")


@dataclass(frozen=True)
class LoraSettings:
    r: int
    lora_alpha: float
    use_rslora: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    target_modules: str | list[str] | None = None
    exclude_modules: str | list[str] | None = None
    layers_to_transform: int | list[int] | None = None
    layers_pattern: str | list[str] | None = None
    fan_in_fan_out: bool = False
    modules_to_save: list[str] | None = None
    bias: str = "none"
    lora_bias: bool = False
    trainable_token_indices: list[int] | dict[str, list[int]] | None = None
    use_dora: bool = False

    def rank_and_alpha(self, module: str) -> tuple[int, float]:
        """PEFT's per-module r and alpha."""
        r = _by_pattern(self.rank_pattern, module, self.r)
        return r, _by_pattern(self.alpha_pattern, module, self.lora_alpha)

    def scaling(self, module: str) -> float:
        r, alpha = self.rank_and_alpha(module)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r

    def targets(self, module: str) -> bool:
        """Whether PEFT would wrap `module` (peft tuners_utils.check_target_module_exists)."""
        ex = self.exclude_modules
        if ex:
            if isinstance(ex, str):
                if re.fullmatch(ex, module):
                    return False
            elif module in ex or any(module.endswith(f".{k}") for k in ex):
                return False
        if self.modules_to_save and any(
            re.match(rf"(^|.*\.){m}($|\..*)", module) for m in self.modules_to_save
        ):
            return False
        tm = self.target_modules
        if tm is None or tm == "all-linear":
            return True
        if isinstance(tm, str):
            return re.fullmatch(tm, module) is not None
        if module in tm:
            return True
        if not any(module.endswith(f".{k}") for k in tm):
            return False
        return self._in_transformed_layer(module)

    def _in_transformed_layer(self, module: str) -> bool:
        idx = self.layers_to_transform
        if idx is None or (isinstance(idx, list) and not idx):
            return True
        pattern = self.layers_pattern
        match = None
        if not pattern:
            match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", module)
        else:
            for p in [pattern] if isinstance(pattern, str) else pattern:
                match = re.match(rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", module)
                if match is not None:
                    break
        if match is None:
            return False
        layer = int(match.group("idx"))
        return layer == idx if isinstance(idx, int) else layer in idx


def _by_pattern(patterns: dict[str, T], module: str, default: T) -> T:
    r"""The value of the first key whose `(.*\.)?(key)$` matches the module, as PEFT's
    peft.utils.other.get_pattern_key picks it, else `default`."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _is_off(value: Any) -> bool:
    return value is None or value is False or value in ({}, [], "")


def load_settings(adapter_dir: Path) -> LoraSettings:
    path = adapter_dir / "adapter_config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise MergeRefused(f"{adapter_dir}: no adapter_config.json") from e
    except ValueError as e:
        raise MergeRefused(f"adapter_config.json is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise MergeRefused("adapter_config.json is not a JSON object")
    return parse_settings(raw)


def parse_settings(raw: dict[str, Any]) -> LoraSettings:
    if raw.get("peft_type", "LORA") != "LORA":
        raise MergeRefused(f"peft_type {raw.get('peft_type')!r} is not supported, only LORA")
    for key, why in _REFUSED_IF_SET.items():
        if not _is_off(raw.get(key)):
            raise MergeRefused(f"adapter_config.json option {key}={raw[key]!r}: {why}")
    unknown = sorted(
        k
        for k in raw
        if k not in _NO_EFFECT | _HONOURED | _REFUSED_IF_SET.keys() and not _is_off(raw[k])
    )
    if unknown:
        raise MergeRefused(f"adapter_config.json has options the merge cannot honour: {unknown}")
    init = raw.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(_BASE_REWRITING_INITS):
        raise MergeRefused(
            f"adapter_config.json option init_lora_weights={init!r}: this initialisation rewrites "
            "the base weights, so the adapter does not apply to the original base model"
        )
    bias = raw.get("bias", "none")
    if bias not in ("none", "all", "lora_only"):
        raise MergeRefused(f"adapter_config.json option bias={bias!r}: not none/all/lora_only")
    try:
        settings = LoraSettings(
            r=int(raw.get("r", 8)),
            lora_alpha=float(raw.get("lora_alpha", 8)),
            use_rslora=bool(raw.get("use_rslora", False)),
            rank_pattern={str(k): int(v) for k, v in (raw.get("rank_pattern") or {}).items()},
            alpha_pattern={str(k): float(v) for k, v in (raw.get("alpha_pattern") or {}).items()},
            target_modules=_str_or_list(raw.get("target_modules")),
            exclude_modules=_str_or_list(raw.get("exclude_modules")),
            layers_to_transform=raw.get("layers_to_transform"),
            layers_pattern=_str_or_list(raw.get("layers_pattern")),
            fan_in_fan_out=bool(raw.get("fan_in_fan_out", False)),
            modules_to_save=_str_list(raw.get("modules_to_save")),
            bias=bias,
            lora_bias=bool(raw.get("lora_bias", False)),
            trainable_token_indices=raw.get("trainable_token_indices"),
            use_dora=bool(raw.get("use_dora", False)),
        )
    except (TypeError, ValueError, AttributeError) as e:
        raise MergeRefused(f"adapter_config.json has a malformed value: {e}") from e
    if settings.r <= 0 or any(v <= 0 for v in settings.rank_pattern.values()):
        raise MergeRefused("adapter_config.json: r and rank_pattern values must be positive")
    return settings


def _str_or_list(value: Any) -> str | list[str] | None:
    if value is None or isinstance(value, str):
        return value
    return [str(v) for v in value]


def _str_list(value: Any) -> list[str] | None:
    return None if value is None else [str(v) for v in value]
