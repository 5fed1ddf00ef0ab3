"""What every part of the metadata store shares: the engine and the clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, Row

from tunevault.metadata.notify import JobSignal

# Values per `IN (...)` list: well under SQLite's bound-parameter limit (999 before 3.32),
# with room for the query's other parameters.
IN_BATCH = 500


def now() -> datetime:
    return datetime.now(UTC)


def upsert(conn: Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def select_in(
    conn: Connection, query: Callable[[list[str]], sa.Select[Any]], values: Iterable[str]
) -> list[Row[Any]]:
    """The rows of `query(chunk)` over the distinct values, `IN_BATCH` at a time."""
    wanted = sorted(set(values))
    rows: list[Row[Any]] = []
    for i in range(0, len(wanted), IN_BATCH):
        rows.extend(conn.execute(query(wanted[i : i + IN_BATCH])))
    return rows


class StoreBase:
    engine: Engine
    jobs_signal: JobSignal  # wakes this process's idle workers when a job is queued
