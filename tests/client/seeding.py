"""Build a tunevault data dir with synthetic checkpoints (random files), for client tests
and the download benchmark. Random bytes do not compress, so archives are as big as the
files; zstd level 1 keeps the build fast."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tunevault.builds import build_archive
from tunevault.models import Archive, FineTune, Kind, Scope
from tunevault.publish import publish_directory
from tunevault.services import open_services
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


def seed_store(
    data_dir: Path,
    sizes: dict[str, int],
    *,
    name: str = "acme/llama-ft",
    step: int = 100,
    kind: Kind = Kind.MODEL_OUTPUT,
    level: int = 1,
) -> Seeded:
    settings = Settings(data_dir=data_dir, zstd_level=level)
    src = data_dir / "src"
    write_random_tree(src, sizes)
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        _, token = svc.store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
        ft = svc.store.create_fine_tune(
            org.id,
            model="base/model",
            model_output_name=name,
            training_type="Full",
            status="completed",
        )
        ckpt = publish_directory(
            svc.store, svc.storage, ft.id, src, step=step, kind=kind, final=True
        )
        archive = build_archive(svc.store, svc.storage, ckpt.id, level=level)
    return Seeded(data_dir, settings, token, ft, step, kind, archive, ckpt.id)


def rebuild_archive(seeded: Seeded, level: int) -> Archive:
    """Replace the checkpoint's archive by one built at another zstd level: new bytes, new ETag."""
    with open_services(seeded.settings) as svc:
        return build_archive(svc.store, svc.storage, seeded.checkpoint_id, level=level)


def archive_bytes(seeded: Seeded, archive: Archive | None = None) -> bytes:
    with open_services(seeded.settings) as svc:
        key = (archive or seeded.archive).storage_key
        return b"".join(svc.storage.iter_range(key))
