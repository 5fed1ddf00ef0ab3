"""The operator's view across organizations (`tunevault admin`): every organization with
its fine-tunes, keys and bytes, every fine-tune, and deleting one whatever its owner.

A deletion takes the owner's path (tunevault.service.finetunes.delete: the rows go, blobs
are left to gc) and is recorded in the operator action log with who ran it.
"""

from __future__ import annotations

import getpass
import logging
from dataclasses import dataclass
from typing import Any

from tunevault.errors import FineTuneNotFound
from tunevault.metadata.admin import OperatorAction
from tunevault.models import FineTune, OrgUsage
from tunevault.service import finetunes
from tunevault.service.context import Services
from tunevault.service.usage import org_named

log = logging.getLogger("tunevault.admin")
DELETE = "delete_fine_tune"


@dataclass(frozen=True)
class OrgSummary:
    usage: OrgUsage
    fine_tunes: int
    keys: int  # live: neither revoked nor expired

    def as_json(self) -> dict[str, Any]:
        return {**self.usage.as_json(), "fine_tunes": self.fine_tunes, "keys": self.keys}


def orgs(svc: Services) -> list[OrgSummary]:
    counts = svc.store.org_counts()
    return [OrgSummary(u, *counts.get(u.org_id, (0, 0))) for u in svc.store.usage()]


def fine_tunes(svc: Services, org_name: str | None = None) -> list[FineTune]:
    org_id = None if org_name is None else org_named(svc, org_name).id
    return svc.store.all_fine_tunes(org_id)


@dataclass(frozen=True)
class Deletion:
    fine_tune: FineTune
    checkpoints: int  # deleted with it (their blobs: by the next gc, if nothing else uses them)
    dry_run: bool

    def as_json(self) -> dict[str, Any]:
        ft = self.fine_tune
        return {
            "id": ft.id,
            "org_id": ft.org_id,
            "model_output_name": ft.model_output_name,
            "checkpoints": self.checkpoints,
            "deleted": not self.dry_run,
        }


def delete_fine_tune(svc: Services, ft_id: str, *, dry_run: bool) -> Deletion:
    """Delete the fine-tune of any organization; the dry run says what would go."""
    ft = svc.store.fine_tune_by_id(ft_id)
    if ft is None:
        raise FineTuneNotFound(
            f"no fine-tune {ft_id[:80]!r} in any organization; `tunevault admin fine-tunes` "
            "lists them",
            param="id",
        )
    deletion = Deletion(ft, len(svc.store.list_checkpoints(ft.id)), dry_run)
    if dry_run:
        return deletion
    actor = getpass.getuser()
    finetunes.delete(svc, ft)
    svc.store.record_operator_action(actor, DELETE, ft.org_id, ft.id)
    log.warning(
        "operator %s deleted fine-tune %s of organization %s",
        actor,
        ft.id,
        ft.org_id,
        extra={"fields": {"actor": actor, "ft_id": ft.id, "org_id": ft.org_id}},
    )
    return deletion


def actions(svc: Services, limit: int) -> list[OperatorAction]:
    return svc.store.list_operator_actions(limit)
