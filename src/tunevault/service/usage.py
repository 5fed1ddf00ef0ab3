"""Usage per organization and its quota on source bytes.

Source bytes are the blobs an organization uploaded (adapters, full outputs, base
models): the truth, never rebuilt. Derived bytes are what builds made from them
(archives, merged files). The quota bounds source bytes only: derived bytes follow from
them. A blob two organizations uploaded counts for each of them, as each could delete
everything else and still need it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from tunevault.errors import NotFound, QuotaExceeded
from tunevault.models import Organization, OrgUsage
from tunevault.service.context import Services


def org_named(svc: Services, name: str) -> Organization:
    org = svc.store.get_org_by_name(name)
    if org is None:
        raise NotFound(f"no organization named {name!r}; `tunevault usage` lists them all")
    return org


def usage(svc: Services, org_name: str | None = None) -> list[OrgUsage]:
    """Every organization's usage, or the named one's."""
    return _with_evicted(svc, None if org_name is None else org_named(svc, org_name).id)


def org_usage(svc: Services, org_id: str) -> OrgUsage:
    found = _with_evicted(svc, org_id)
    if not found:
        raise NotFound("the organization of this key no longer exists")
    return found[0]


def _with_evicted(svc: Services, org_id: str | None) -> list[OrgUsage]:
    """Usage with what the derived budget evicted (rebuilt on its next download)."""
    evicted = svc.store.evicted_by_org(org_id)
    found = []
    for u in svc.store.usage(org_id):
        n, size = evicted.get(u.org_id, (0, 0))
        found.append(dataclasses.replace(u, evicted_archives=n, evicted_bytes=size))
    return found


def set_quota(svc: Services, org_name: str, quota: int | None) -> OrgUsage:
    """Set (None: remove) the organization's quota on source bytes."""
    org = org_named(svc, org_name)
    svc.store.set_source_quota(org.id, quota)
    return org_usage(svc, org.id)


def check_quota(svc: Services, org_id: str, adding: int) -> None:
    """Refuse (QuotaExceeded) an upload of `adding` new source bytes that would take the
    organization past its quota. Uploads in flight are not counted: concurrent ones can
    pass it by at most what they carry."""
    now = org_usage(svc, org_id)
    quota = now.source_quota_bytes
    if quota is None or now.source_bytes + adding <= quota:
        return
    raise QuotaExceeded(
        f"this upload of {adding} bytes would take organization {now.org}'s source bytes "
        f"to {now.source_bytes + adding}, past its quota of {quota} "
        f"({now.source_bytes} used): delete fine-tunes or base models it no longer needs, "
        "or ask the operator to raise the quota (`tunevault usage --set-quota`)"
    )


def check_missing(svc: Services, org_id: str, sizes: Mapping[str, int]) -> None:
    """`check_quota` for the blobs of a publish the organization does not own yet."""
    owned = svc.store.org_blob_sizes(org_id, sizes)
    check_quota(svc, org_id, sum(n for sha, n in sizes.items() if sha not in owned))
