"""Retention of intermediate checkpoints, applied by `tunevault gc`.

A policy keeps the newest `keep_last` intermediate steps of a fine-tune and drops
intermediate steps older than `max_age_days`; a step goes when either rule says so. An
organization's policy applies to each of its fine-tunes unless the fine-tune has its own
(per rule). A step holding a final checkpoint is never dropped, nor counted. Dropping a
step deletes its checkpoint rows (files, archive, jobs, share links by cascade) with a
`WARNING` event "retention dropped step N ..." on the fine-tune; the same gc run then
frees its archives, and its blobs once nothing else names them and they are past the
grace period.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tunevault.errors import FineTuneNotFound
from tunevault.metadata.base import now
from tunevault.metadata.policy import NO_RULE
from tunevault.models import IntermediateStep, Retention
from tunevault.service.context import Services
from tunevault.service.usage import org_named


@dataclass(frozen=True)
class Dropped:
    ft_id: str
    step: int
    kinds: tuple[str, ...]
    reason: str


INHERIT = "inherit"  # on a fine-tune: its organization's rule
NONE = "none"  # no such rule


def set_org_policy(svc: Services, org_name: str, policy: Retention) -> None:
    svc.store.set_org_retention(org_named(svc, org_name).id, policy)


def set_fine_tune_policy(
    svc: Services, org_name: str, ft_id: str, keep_last: int | str, max_age_days: int | str
) -> None:
    """Each rule a number, NONE or INHERIT."""
    org = org_named(svc, org_name)
    if svc.store.get_fine_tune(org.id, ft_id) is None:
        raise FineTuneNotFound(f"organization {org_name} has no fine-tune {ft_id!r}")
    svc.store.set_fine_tune_retention(ft_id, _stored(keep_last), _stored(max_age_days))


def _stored(rule: int | str) -> int | None:
    if rule == INHERIT:
        return None
    return NO_RULE if rule == NONE else int(rule)


def plan(svc: Services, at: datetime | None = None) -> list[tuple[IntermediateStep, str]]:
    """The steps the policies drop, each with why, newest first per fine-tune."""
    at = at or now()
    by_ft: dict[str, list[IntermediateStep]] = {}
    for step in svc.store.intermediate_steps():
        by_ft.setdefault(step.ft_id, []).append(step)
    return [(s, why) for steps in by_ft.values() for s, why in _dropped(steps, at)]


def _dropped(
    steps: Iterable[IntermediateStep], at: datetime
) -> Iterable[tuple[IntermediateStep, str]]:
    for rank, step in enumerate(steps):  # newest first
        keep, days = step.policy.keep_last, step.policy.max_age_days
        if keep is not None and rank >= keep:
            yield step, f"beyond the newest {keep} intermediate steps"
        elif days is not None and step.created_at < at - timedelta(days=days):
            yield step, f"older than {days} days"


def apply(svc: Services, *, dry_run: bool) -> list[Dropped]:
    """Drop what `plan` lists (or only list it): the steps dropped."""
    return [
        Dropped(step.ft_id, step.step, step.kinds, why)
        for step, why in plan(svc)
        if dry_run or svc.store.drop_step(step, why)
    ]
