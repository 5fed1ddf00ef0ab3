"""The JSON bodies of the publishing routes, declared once: each rule in one place.

Models are strict (a boolean is no integer, a string no number) and ignore fields they do
not know. A refusal is a 400 `invalid_request` naming the parameter and what it must be;
`parse` turns pydantic's error into that. Manifests (`files`) are checked by the domain
(`service.publishing.validate_manifest`), which also serves the demo and the worker.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tunevault.errors import InvalidRequest
from tunevault.models import FT_STATUSES

MAX_ROWS = 10_000
MAX_STEP = 2**31 - 1
# Patterns are anchored by pydantic's regex engine as written: `$` is the end of the text,
# not "before a final newline" as with Python's re.match.
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,300}$")]
RowId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:/-]{1,100}$")]
Step = Annotated[int, Field(ge=0, le=MAX_STEP)]

# What each parameter must be: the message of its refusal.
RULES = {
    "model": "model must be 1-300 printable characters",
    "model_output_name": "model_output_name must be 1-300 printable characters",
    "name": "name must be 1-300 printable characters",
    "suffix": "suffix must be 1-100 printable characters",
    "status": f"status must be one of {', '.join(s for s in FT_STATUSES if s != 'compressing')} "
    "(compressing is reported by tunevault; a new fine-tune starts pending, queued or running)",
    "training_type": 'training_type must be {"type": "Full"} or {"type": "Lora", ...}',
    "lora_r": "lora_r must be an integer from 1 to 65536",
    "lora_alpha": "lora_alpha must be an integer from 1 to 1048576",
    "lora_dropout": "lora_dropout must be a number in [0, 1)",
    "lora_trainable_modules": "lora_trainable_modules must be 1-300 printable characters",
    "external_base": "external_base must be true or false, and applies to LoRA fine-tunes",
    "kind": "kind must be adapter or model_output_path",
    "final": "final must be true or false",
    "step": f"step must be an integer from 0 to {MAX_STEP}",
    "files": "files must be a non-empty list of {path, size, sha256}",
    "events": f"events must be a list of 1 to {MAX_ROWS} events, each with a type of letters "
    "and _, a level of info, warning or error, a string message, an optional step and an "
    "optional id of 1 to 100 letters, digits and . _ : / -",
    "metrics": f"metrics must be a list of 1 to {MAX_ROWS} rows, each with a step, an "
    "optional id and metric values that are finite numbers under names of at most 200 "
    "characters",
    "sha256": "sha256 must be a list of at most 10,000 hex digests",
    "sizes": "sizes must be a list of byte counts, one per sha256, in the same order",
}


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class FullTraining(Body):
    type: Literal["Full"]


class LoraTraining(Body):
    type: Literal["Lora"]
    lora_r: Annotated[int, Field(ge=1, le=65536)]
    lora_alpha: Annotated[int, Field(ge=1, le=2**20)]
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    lora_trainable_modules: Text | None = None


class NewFineTune(Body):
    model: Text
    model_output_name: Text
    suffix: Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,100}$")] | None = None
    status: Literal["pending", "queued", "running"] = "pending"
    training_type: Annotated[FullTraining | LoraTraining, Field(discriminator="type")]
    external_base: bool = False

    @field_validator("external_base")
    @classmethod
    def _external_base_is_for_lora(cls, value: bool, info: ValidationInfo) -> bool:
        training = info.data.get("training_type")
        if value and training is not None and training.type != "Lora":
            raise ValueError("external_base applies to LoRA fine-tunes")
        return value

    def fields(self) -> dict[str, Any]:
        """The fine-tune's columns, as the store takes them."""
        t = self.training_type
        lora = (
            {
                "lora_r": t.lora_r,
                "lora_alpha": t.lora_alpha,
                "lora_dropout": float(t.lora_dropout),
                "lora_trainable_modules": t.lora_trainable_modules,
            }
            if isinstance(t, LoraTraining)
            else {}
        )
        return {
            "model": self.model,
            "model_output_name": self.model_output_name,
            "suffix": self.suffix,
            "training_type": t.type,
            **lora,
            "external_base": self.external_base,
        }


class NewCheckpoint(Body):
    step: Step
    kind: Literal["adapter", "model_output_path"]
    final: bool = False
    files: list[Any]


class Event(Body):
    type: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_]{1,64}$")]
    level: Literal["info", "warning", "error"] = "info"
    message: str = ""
    step: Step | None = None
    id: RowId | None = None


class Events(Body):
    events: Annotated[list[Event], Field(min_length=1, max_length=MAX_ROWS)]


class MetricsRow(Body):
    """A step, an optional id, and every other field a metric value."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    step: Step
    id: RowId | None = None

    @model_validator(mode="after")
    def _values_are_finite_numbers(self) -> MetricsRow:
        if not all(_finite(v) and len(k) <= 200 for k, v in self.values().items()):
            raise ValueError("metric values must be finite numbers")
        return self

    def values(self) -> dict[str, float]:
        return dict(self.model_extra or {})


class Metrics(Body):
    metrics: Annotated[list[MetricsRow], Field(min_length=1, max_length=MAX_ROWS)]


class NewStatus(Body):
    status: str

    @field_validator("status")
    @classmethod
    def _a_status_publishers_report(cls, value: str) -> str:
        if value not in FT_STATUSES or value == "compressing":  # tunevault reports that one
            raise ValueError("not a status a publisher reports")
        return value


class NewBaseModel(Body):
    name: Text
    files: list[Any]


class BlobDigests(Body):
    sha256: Annotated[
        list[Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]],
        Field(max_length=10_000),
    ]
    # Optional: with them, a publish that would pass the quota is refused before uploading.
    sizes: list[Annotated[int, Field(ge=0, le=1 << 40)]] | None = None

    @field_validator("sizes")
    @classmethod
    def _one_per_digest(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is not None and len(value) != len(info.data.get("sha256", ())):
            raise ValueError("one size per digest")
        return value


def _finite(value: object) -> bool:
    """A number a float holds: an integer of 400 digits is past float's range (math.isfinite
    would raise OverflowError)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


M = TypeVar("M", bound=Body)


def parse(model: type[M], body: dict[str, Any]) -> M:
    """The body as `model`, or InvalidRequest naming the first parameter that is wrong."""
    try:
        return model.model_validate(body)
    except ValidationError as e:
        param = _param(e.errors()[0]["loc"])
        raise InvalidRequest(RULES.get(param, f"{param} is not valid"), param=param) from None


def _param(loc: tuple[int | str, ...]) -> str:
    """The top-level field that is wrong (inside events or metrics, the list: the publisher
    fixes a batch as a whole), but inside training_type the LoRA field itself."""
    names = [part for part in loc if isinstance(part, str)]
    if not names:
        return "body"
    if names[0] != "training_type":
        return names[0]
    inner = [n for n in names[1:] if n in RULES]
    return inner[0] if inner else "training_type"
