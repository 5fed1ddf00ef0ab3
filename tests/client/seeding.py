"""Build a tunevault data dir with synthetic checkpoints (random files), for client tests
and the download benchmark. Random bytes do not compress, so archives are as big as the
files; zstd level 1 keeps the build fast."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tunevault.models import Archive, FineTune, Kind, Scope
from tunevault.service.builds import build_archive
from tunevault.service.context import open_services
from tunevault.service.publishing import put_directory
from tunevault.settings import Settings

CHUNK = 8 << 20


@dataclass(frozen=True)
class Seeded:
    data_dir: Path
    settings: Settings
    token: str
    ft: FineTune
    step: int
    kind: Kind
    archive: Archive
    checkpoint_id: int


def write_random_tree(root: Path, sizes: dict[str, int]) -> None:
    for rel, size in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            left = size
            while left > 0:
                chunk = os.urandom(min(CHUNK, left))
                f.write(chunk)
                left -= len(chunk)


def add_fine_tune(
    settings: Settings,
    token: str,
    sizes: dict[str, int],
    *,
    name: str = "acme/llama-ft",
    step: int = 100,
    level: int = 1,
) -> Seeded:
    """A completed full fine-tune of organization acme with one final checkpoint."""
    kind = Kind.MODEL_OUTPUT
    with open_services(settings) as svc:
        org = svc.store.get_org_by_name("acme") or svc.store.create_org("acme")
        ft = svc.store.create_fine_tune(
            org.id,
            model="base/model",
            model_output_name=name,
            training_type="Full",
            status="completed",
        )
        src = settings.data_dir / "src" / ft.id
        write_random_tree(src, sizes)
        # No build job: the server's workers would rebuild it at their own zstd level.
        files = put_directory(svc.store, svc.storage, org.id, src)
        ckpt = svc.store.add_checkpoint(ft.id, step, kind, True, files)
        archive = build_archive(svc.store, svc.storage, ckpt.id, level=level)
    return Seeded(settings.data_dir, settings, token, ft, step, kind, archive, ckpt.id)


def seed_store(data_dir: Path, sizes: dict[str, int], *, level: int = 1) -> Seeded:
    settings = Settings(data_dir=data_dir, zstd_level=level)
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        _, token = svc.store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
    return add_fine_tune(settings, token, sizes, level=level)


def rebuild_archive(seeded: Seeded, level: int) -> Archive:
    """Replace the checkpoint's archive by one built at another zstd level: new bytes, new ETag."""
    with open_services(seeded.settings) as svc:
        return build_archive(svc.store, svc.storage, seeded.checkpoint_id, level=level)


def archive_bytes(seeded: Seeded, archive: Archive | None = None) -> bytes:
    with open_services(seeded.settings) as svc:
        key = (archive or seeded.archive).storage_key
        return b"".join(svc.storage.iter_range(key))
