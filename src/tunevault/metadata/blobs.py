"""Blobs and who may use them, and the base models that merges start from.

Blobs are stored once (content-addressed) but owned per organization: a blob counts as
present for an organization only after that organization uploaded its bytes, so the
existence check never tells one tenant what another stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tunevault.metadata import tables as t
from tunevault.metadata.base import StoreBase, now, select_in
from tunevault.models import BaseModel, FileEntry


def _org_blob_sizes(conn: Connection, org_id: str, digests: Iterable[str]) -> dict[str, int]:
    ob = t.org_blobs.c
    rows = select_in(
        conn,
        lambda chunk: sa.select(ob.sha256, ob.size).where(
            ob.org_id == org_id, ob.sha256.in_(chunk)
        ),
        digests,
    )
    return {r.sha256: r.size for r in rows}


class BlobsMixin(StoreBase):
    def org_blob_sizes(self, org_id: str, digests: Iterable[str]) -> dict[str, int]:
        """The sizes of those blobs this organization owns."""
        with self.engine.connect() as conn:
            return _org_blob_sizes(conn, org_id, digests)

    def blob_xxh3(self, digests: Iterable[str]) -> dict[str, str]:
        """The recorded xxh3 of those blobs that have one (see tunevault.archive.checksums)."""
        b = t.blobs.c
        with self.engine.connect() as conn:
            rows = select_in(
                conn,
                lambda chunk: sa.select(b.sha256, b.xxh3).where(
                    b.sha256.in_(chunk), b.xxh3.is_not(None)
                ),
                digests,
            )
        return {r.sha256: r.xxh3 for r in rows}

    def create_base_model(self, org_id: str, name: str, files: Sequence[FileEntry]) -> BaseModel:
        ts = now()
        with self.engine.begin() as conn:
            res = conn.execute(
                t.base_models.insert().values(org_id=org_id, name=name, created_at=ts)
            )
            assert res.inserted_primary_key is not None
            model_id = int(res.inserted_primary_key[0])
            conn.execute(
                t.base_model_files.insert(),
                [
                    {"base_model_id": model_id, "path": f.path, "size": f.size, "sha256": f.sha256}
                    for f in files
                ],
            )
        return BaseModel(
            id=model_id,
            org_id=org_id,
            name=name,
            created_at=ts,
            files=tuple(sorted(files, key=lambda f: f.path)),
        )

    def get_base_model(self, org_id: str, name: str) -> BaseModel | None:
        bm, bf = t.base_models.c, t.base_model_files.c
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.base_models).where(bm.org_id == org_id, bm.name == name)
            ).first()
            if row is None:
                return None
            files = conn.execute(
                sa.select(t.base_model_files).where(bf.base_model_id == row.id).order_by(bf.path)
            )
            return BaseModel(
                id=row.id,
                org_id=row.org_id,
                name=row.name,
                created_at=row.created_at,
                files=tuple(FileEntry(path=f.path, size=f.size, sha256=f.sha256) for f in files),
            )

    def list_base_models(self, org_id: str) -> list[BaseModel]:
        bm, bf = t.base_models.c, t.base_model_files.c
        with self.engine.connect() as conn:  # one query, not one per model
            rows = conn.execute(
                sa.select(bm.id, bm.name, bm.created_at, bf.path, bf.size, bf.sha256)
                .select_from(t.base_models.join(t.base_model_files, bf.base_model_id == bm.id))
                .where(bm.org_id == org_id)
                .order_by(bm.name, bf.path)
            ).all()
        files: dict[int, list[FileEntry]] = {}
        for r in rows:
            files.setdefault(r.id, []).append(FileEntry(path=r.path, size=r.size, sha256=r.sha256))
        heads = {r.id: r for r in rows}
        return [
            BaseModel(
                id=i,
                org_id=org_id,
                name=heads[i].name,
                created_at=heads[i].created_at,
                files=tuple(entries),
            )
            for i, entries in files.items()  # in name order, as the rows came
        ]
