"""Checkpoints (manifests of blobs), their archives, and the blobs themselves."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tunevault.metadata import tables as t
from tunevault.metadata.base import StoreBase, now
from tunevault.metadata.finetunes import _select_fine_tunes
from tunevault.metadata.jobs import enqueue
from tunevault.models import (
    Archive,
    ArchiveFormat,
    Checkpoint,
    FileEntry,
    FineTune,
    JobKind,
    Kind,
)


class CheckpointsMixin(StoreBase):
    def add_checkpoint(
        self,
        ft_id: str,
        step: int,
        kind: Kind,
        final: bool,
        files: Sequence[FileEntry],
        jobs: Sequence[JobKind] = (),
    ) -> Checkpoint:
        """Record a checkpoint and queue its build jobs, in one transaction."""
        ts = now()
        with self.engine.begin() as conn:
            res = conn.execute(
                t.checkpoints.insert().values(
                    ft_id=ft_id, step=step, kind=kind.value, final=final, created_at=ts
                )
            )
            assert res.inserted_primary_key is not None
            ckpt_id = res.inserted_primary_key[0]
            if files:
                conn.execute(
                    t.checkpoint_files.insert(),
                    [
                        {
                            "checkpoint_id": ckpt_id,
                            "path": f.path,
                            "size": f.size,
                            "sha256": f.sha256,
                        }
                        for f in files
                    ],
                )
            for job in jobs:
                enqueue(conn, int(ckpt_id), job)
        if jobs:
            self.jobs_signal.notify()
        return Checkpoint(
            id=int(ckpt_id),
            ft_id=ft_id,
            step=step,
            kind=kind,
            final=final,
            created_at=ts,
            files=tuple(sorted(files, key=lambda f: f.path)),
        )

    def list_checkpoints(self, ft_id: str) -> list[Checkpoint]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.checkpoints)
                .where(t.checkpoints.c.ft_id == ft_id)
                .order_by(t.checkpoints.c.step, t.checkpoints.c.kind)
            )
            return [_checkpoint(r._mapping) for r in rows]

    def get_checkpoint(self, checkpoint_id: int) -> Checkpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.checkpoints).where(t.checkpoints.c.id == checkpoint_id)
            ).first()
            if row is None:
                return None
            return _checkpoint(row._mapping, _files(conn, checkpoint_id))

    def find_checkpoint(self, ft_id: str, step: int, kind: Kind) -> Checkpoint | None:
        c = t.checkpoints.c
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.checkpoints).where(c.ft_id == ft_id, c.step == step, c.kind == kind)
            ).first()
            return _checkpoint(row._mapping, _files(conn, row.id)) if row else None

    def set_checkpoint_files(self, checkpoint_id: int, files: Sequence[FileEntry]) -> None:
        """Fill a checkpoint whose files are produced by a build (the merged model)."""
        cf = t.checkpoint_files
        with self.engine.begin() as conn:
            conn.execute(cf.delete().where(cf.c.checkpoint_id == checkpoint_id))
            conn.execute(
                cf.insert(),
                [
                    {
                        "checkpoint_id": checkpoint_id,
                        "path": f.path,
                        "size": f.size,
                        "sha256": f.sha256,
                    }
                    for f in files
                ],
            )

    def fine_tune_with_archives(
        self, org_id: str, ft_id: str
    ) -> tuple[FineTune | None, list[tuple[Checkpoint, Archive | None]]]:
        """A fine-tune with its checkpoints and their archives, in one round trip.

        The download route's resolve: it runs on every download, so it is one query. The
        fine-tune reads as from `get_fine_tune` (`compressing` while builds are pending).
        """
        f, c, a = t.fine_tunes, t.checkpoints, t.archives
        q = (
            _select_fine_tunes()
            .add_columns(
                c.c.id.label("c_id"),
                c.c.step.label("c_step"),
                c.c.kind.label("c_kind"),
                c.c.final.label("c_final"),
                c.c.created_at.label("c_created_at"),
                a.c.storage_key.label("a_key"),
                a.c.sha256.label("a_sha256"),
                a.c.size.label("a_size"),
                a.c.created_at.label("a_created_at"),
                a.c.format.label("a_format"),
            )
            .select_from(
                f.outerjoin(c, c.c.ft_id == f.c.id).outerjoin(a, a.c.checkpoint_id == c.c.id)
            )
            .where(f.c.id == ft_id, f.c.org_id == org_id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            return None, []
        ft = FineTune(**{fl.name: rows[0]._mapping[fl.name] for fl in dataclasses.fields(FineTune)})
        found = []
        for r in rows:
            if r.c_id is None:
                continue
            ckpt = Checkpoint(
                id=r.c_id,
                ft_id=ft.id,
                step=r.c_step,
                kind=Kind(r.c_kind),
                final=r.c_final,
                created_at=r.c_created_at,
            )
            archive = (
                None
                if r.a_key is None
                else Archive(
                    checkpoint_id=r.c_id,
                    storage_key=r.a_key,
                    sha256=r.a_sha256,
                    size=r.a_size,
                    created_at=r.a_created_at,
                    format=ArchiveFormat(r.a_format),
                )
            )
            found.append((ckpt, archive))
        return ft, found

    def merged_checkpoints_for_base(self, org_id: str, base_name: str) -> list[int]:
        """Merged checkpoints of the organization's LoRA fine-tunes of this base model."""
        c, f = t.checkpoints.c, t.fine_tunes.c
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(c.id)
                    .select_from(t.checkpoints.join(t.fine_tunes, c.ft_id == f.id))
                    .where(f.org_id == org_id, f.model == base_name, c.kind == Kind.MERGED.value)
                ).scalars()
            )

    def fine_tune_files(self, ft_id: str) -> dict[int, tuple[FileEntry, ...]]:
        """The files of every checkpoint of the fine-tune, by checkpoint id, in one query."""
        c, cf = t.checkpoints.c, t.checkpoint_files.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(cf.checkpoint_id, cf.path, cf.size, cf.sha256)
                .select_from(t.checkpoint_files.join(t.checkpoints, cf.checkpoint_id == c.id))
                .where(c.ft_id == ft_id)
                .order_by(cf.checkpoint_id, cf.path)
            )
            found: dict[int, list[FileEntry]] = {}
            for r in rows:
                found.setdefault(r.checkpoint_id, []).append(FileEntry(r.path, r.size, r.sha256))
        return {ckpt_id: tuple(files) for ckpt_id, files in found.items()}

    def get_archive(self, checkpoint_id: int) -> Archive | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.archives).where(t.archives.c.checkpoint_id == checkpoint_id)
            ).first()
        if row is None:
            return None
        fields = {k: row._mapping[k] for k in Archive.__dataclass_fields__}
        return Archive(**{**fields, "format": ArchiveFormat(row.format)})


def _files(conn: Connection, checkpoint_id: int) -> tuple[FileEntry, ...]:
    rows = conn.execute(
        sa.select(t.checkpoint_files)
        .where(t.checkpoint_files.c.checkpoint_id == checkpoint_id)
        .order_by(t.checkpoint_files.c.path)
    )
    return tuple(FileEntry(path=r.path, size=r.size, sha256=r.sha256) for r in rows)


def _checkpoint(m: Any, files: tuple[FileEntry, ...] = ()) -> Checkpoint:
    return Checkpoint(
        id=m["id"],
        ft_id=m["ft_id"],
        step=m["step"],
        kind=Kind(m["kind"]),
        final=m["final"],
        created_at=m["created_at"],
        files=files,
    )
