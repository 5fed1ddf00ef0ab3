"""Parsing of the download query string, shared by every client dialect (COMPAT.md).

Parameters may come in any order, URL-encoded or raw, repeated with the same value; a
parameter repeated with different values is refused rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from tunevault.errors import InvalidRequest
from tunevault.service.downloads import DownloadQuery

CHECKPOINT_VALUES = ("merged", "adapter", "model_output_path")
# Spellings other clients send: 1.x's camelCase and the 3.x CLI's "default".
_ALIASES = {"modelOutputPath": "model_output_path", "default": "default"}
# What ids look like (ft-<uuid>); anything else is unknown without asking the database,
# which may refuse it outright (PostgreSQL: a NUL character is an error, not a miss).
FT_ID = re.compile(r"ft-[0-9a-f-]{1,64}")
MAX_STEP = 2**31 - 1


def _single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = list(dict.fromkeys(params.get(name, ())))
    if len(values) > 1:
        raise InvalidRequest(f"parameter {name} is given twice with different values", param=name)
    return values[0] if values else None


def parse_step(text: str, param: str = "checkpoint_step") -> int:
    # ASCII digits only: int() also reads Arabic-Indic and fullwidth ones (U+FF15 is 5).
    if not re.fullmatch(r"[0-9]{1,10}", text.strip()) or int(text) > MAX_STEP:
        raise InvalidRequest(
            f"{param} must be a non-negative integer step (got {text[:40]!r})", param=param
        )
    return int(text)


def parse_download_query(params: Mapping[str, Sequence[str]]) -> DownloadQuery:
    raw = _single(params, "merged_step")
    if raw is None:
        return _parse_spec(params)
    if _single(params, "checkpoint") == "merged":
        query = _parse_spec(params)
        if query.step is None:
            return DownloadQuery(query.ft_id, None, "merged", parse_step(raw, "merged_step"))
    raise InvalidRequest(
        "merged_step goes with checkpoint=merged and no other step "
        "(checkpoint_step or ft_id:N): it names the step whose adapter is merged",
        param="merged_step",
    )


def _parse_spec(params: Mapping[str, Sequence[str]]) -> DownloadQuery:
    """The parameters of the spec (and the together clients)."""
    raw_id = _single(params, "ft_id")
    if not raw_id:
        raise InvalidRequest("ft_id is required: the id of a fine-tune, ft-...", param="ft_id")
    ft_id, colon, id_step = raw_id.strip().partition(":")
    if not FT_ID.fullmatch(ft_id):
        raise InvalidRequest(
            f"ft_id must be a fine-tune id that starts with 'ft-' (got {raw_id[:80]!r})",
            param="ft_id",
        )
    step = parse_step(id_step, "ft_id") if colon else None
    raw_step = _single(params, "checkpoint_step")
    if raw_step is not None and raw_step.strip() != "":
        query_step = parse_step(raw_step)
        if step is not None and step != query_step:
            raise InvalidRequest(
                f"ft_id names step {step} but checkpoint_step is {query_step}",
                param="checkpoint_step",
            )
        step = query_step
    if step is not None:
        return DownloadQuery(ft_id=ft_id, step=step, checkpoint=None)  # spec: step wins
    raw_ckpt = _single(params, "checkpoint")
    allowed = ", ".join(CHECKPOINT_VALUES)
    if not raw_ckpt:
        raise InvalidRequest(
            f"checkpoint is required when checkpoint_step is not set; one of: {allowed}",
            param="checkpoint",
        )
    checkpoint = _ALIASES.get(raw_ckpt, raw_ckpt)
    if checkpoint not in (*CHECKPOINT_VALUES, "default"):
        raise InvalidRequest(
            f"checkpoint must be one of: {allowed} (got {raw_ckpt[:40]!r})", param="checkpoint"
        )
    return DownloadQuery(ft_id=ft_id, step=None, checkpoint=checkpoint)
