"""Timing every SQL statement the store sends, for the database latency metric.

SQLAlchemy's cursor events bracket each statement on the connection that runs it; the
start time rides on the execution context, so concurrent statements on other threads'
connections do not mix. Reported by the statement's first word (select, insert, ...):
bounded labels, never the SQL text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

Observer = Callable[[str, float], None]
_VERBS = frozenset({"select", "insert", "update", "delete", "with", "begin", "commit"})
_STARTED = "_tunevault_started"


def statement_kind(sql: str) -> str:
    word = sql.lstrip().split(None, 1)[0].lower() if sql.strip() else ""
    return word if word in _VERBS else "other"


def time_statements(engine: Engine, observe: Observer) -> None:
    """Report `(kind, seconds)` for every statement the engine executes from now on."""

    def before(_conn: Any, _cursor: Any, _sql: str, _params: Any, context: Any, _many: Any) -> None:
        setattr(context, _STARTED, time.perf_counter())

    def after(_conn: Any, _cursor: Any, sql: str, _params: Any, context: Any, _many: Any) -> None:
        started = getattr(context, _STARTED, None)
        if started is not None:
            observe(statement_kind(sql), time.perf_counter() - started)

    sa.event.listen(engine, "before_cursor_execute", before)
    sa.event.listen(engine, "after_cursor_execute", after)
