"""Fine-tunes, their events and metrics; every lookup is scoped to an organization."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from tunevault.metadata import tables as t
from tunevault.metadata.base import StoreBase, now, upsert
from tunevault.metadata.jobs import ACTIVE
from tunevault.models import Event, FineTune, MetricRow, NewEvent


def _select_fine_tunes() -> sa.Select[Any]:
    """Fine-tune rows, with `completed` reading `compressing` while builds are pending."""
    f, c, j = t.fine_tunes.c, t.checkpoints.c, t.build_jobs.c
    building = (
        sa.select(j.id)
        .select_from(t.build_jobs.join(t.checkpoints, j.checkpoint_id == c.id))
        .where(c.ft_id == f.id, j.state.in_(ACTIVE))
        .exists()
    )
    status = sa.case((sa.and_(f.status == "completed", building), "compressing"), else_=f.status)
    return sa.select(
        # The model's fields, not every column: bookkeeping like idempotency_key stays here.
        *(f[fl.name] for fl in dataclasses.fields(FineTune) if fl.name != "status"),
        status.label("status"),
    )


class FineTunesMixin(StoreBase):
    def create_fine_tune(
        self,
        org_id: str,
        *,
        model: str,
        model_output_name: str,
        training_type: str,
        suffix: str | None = None,
        status: str = "pending",
        lora_r: int | None = None,
        lora_alpha: int | None = None,
        lora_dropout: float | None = None,
        lora_trainable_modules: str | None = None,
        idempotency_key: str | None = None,
        external_base: bool = False,
    ) -> FineTune:
        """A new fine-tune; with an `idempotency_key` already used in this organization,
        the fine-tune that key created (see `created_with_key`) and nothing new."""
        ts = now()
        ft = FineTune(
            id=f"ft-{uuid.uuid4()}",
            org_id=org_id,
            model=model,
            model_output_name=model_output_name,
            suffix=suffix,
            status=status,
            training_type=training_type,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_trainable_modules=lora_trainable_modules,
            created_at=ts,
            updated_at=ts,
            external_base=external_base,
        )
        if idempotency_key is None:
            with self.engine.begin() as conn:
                conn.execute(t.fine_tunes.insert().values(**ft.__dict__))
            return ft
        with self.engine.begin() as conn:
            stmt = upsert(conn, t.fine_tunes).values(**ft.__dict__, idempotency_key=idempotency_key)
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["org_id", "idempotency_key"]))
        made = self.created_with_key(org_id, idempotency_key)
        assert made is not None  # inserted now, or earlier by the same key
        return made

    def created_with_key(self, org_id: str, idempotency_key: str) -> FineTune | None:
        f = t.fine_tunes.c
        with self.engine.connect() as conn:
            row = conn.execute(
                _select_fine_tunes().where(f.org_id == org_id, f.idempotency_key == idempotency_key)
            ).first()
        return FineTune(**row._mapping) if row else None

    def get_fine_tune(self, org_id: str, ft_id: str) -> FineTune | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                _select_fine_tunes().where(
                    t.fine_tunes.c.id == ft_id, t.fine_tunes.c.org_id == org_id
                )
            ).first()
        return FineTune(**row._mapping) if row else None

    def fine_tune_by_id(self, ft_id: str) -> FineTune | None:
        """Unscoped lookup, for the build worker and store-side commands (`tunevault pin`):
        requests always pass an organization."""
        with self.engine.connect() as conn:
            row = conn.execute(_select_fine_tunes().where(t.fine_tunes.c.id == ft_id)).first()
        return FineTune(**row._mapping) if row else None

    def fine_tune_ids_named(self, org_id: str, model_output_name: str) -> list[str]:
        """Ids of the organization's fine-tunes with that output name (the Hub's repo ids)."""
        f = t.fine_tunes.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(f.id)
                .where(f.org_id == org_id, f.model_output_name == model_output_name)
                .order_by(f.id)
            )
            return list(rows.scalars())

    def list_fine_tunes(self, org_id: str) -> list[FineTune]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                _select_fine_tunes()
                .where(t.fine_tunes.c.org_id == org_id)
                .order_by(t.fine_tunes.c.created_at, t.fine_tunes.c.id)
            )
            return [FineTune(**r._mapping) for r in rows]

    def set_status(self, org_id: str, ft_id: str, status: str) -> FineTune | None:
        with self.engine.begin() as conn:
            conn.execute(
                t.fine_tunes.update()
                .where(t.fine_tunes.c.id == ft_id, t.fine_tunes.c.org_id == org_id)
                .values(status=status, updated_at=now())
            )
        return self.get_fine_tune(org_id, ft_id)

    def delete_fine_tune(self, org_id: str, ft_id: str) -> bool:
        """Delete the fine-tune and everything that hangs off it (blobs are left to gc)."""
        f = t.fine_tunes.c
        with self.engine.begin() as conn:
            # Events, metrics, checkpoints and their files, archives and build jobs go by
            # ON DELETE CASCADE (tables.py); SQLite too: make_engine turns foreign_keys on.
            gone = conn.execute(
                t.fine_tunes.delete().where(f.id == ft_id, f.org_id == org_id)
            ).rowcount
        return gone == 1

    # Events and metrics -------------------------------------------------------------------

    def add_event(
        self, ft_id: str, type_: str, message: str, level: str = "info", step: int | None = None
    ) -> None:
        self.add_events(ft_id, [NewEvent(type_, message, level, step)])

    def add_events(self, ft_id: str, events: Sequence[NewEvent]) -> int:
        """Append events in one transaction; returns how many were new (a row whose id is
        already stored, or repeated in the batch, is skipped)."""
        ts = now()
        return self._append(
            t.events,
            [
                {
                    "ft_id": ft_id,
                    "created_at": ts,
                    "level": e.level,
                    "type": e.type.upper(),
                    "message": e.message,
                    "step": e.step,
                    "client_id": e.client_id,
                }
                for e in events
            ],
        )

    def list_events(self, ft_id: str) -> list[Event]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.events).where(t.events.c.ft_id == ft_id).order_by(t.events.c.id)
            )
            return [
                Event(
                    created_at=r.created_at,
                    level=r.level,
                    type=r.type,
                    message=r.message,
                    step=r.step,
                )
                for r in rows
            ]

    def add_metrics(self, ft_id: str, rows: Sequence[MetricRow]) -> int:
        """Append metric rows like `add_events`; returns how many were new."""
        return self._append(
            t.metrics,
            [
                {"ft_id": ft_id, "step": r.step, "data": r.values, "client_id": r.client_id}
                for r in rows
            ],
        )

    def _append(self, table: sa.Table, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        with self.engine.begin() as conn:
            stmt = (
                upsert(conn, table)
                .on_conflict_do_nothing(index_elements=["ft_id", "client_id"])
                .returning(table.c.id)
            )
            return len(conn.execute(stmt, rows).all())  # RETURNING lists inserted rows only

    def list_metrics(self, ft_id: str) -> list[MetricRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.metrics)
                .where(t.metrics.c.ft_id == ft_id)
                .order_by(t.metrics.c.step, t.metrics.c.id)
            )
            return [MetricRow(step=r.step, values=dict(r.data)) for r in rows]
