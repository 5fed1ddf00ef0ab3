"""What every part of the metadata store shares: the engine and the clock."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine


def now() -> datetime:
    return datetime.now(UTC)


class StoreBase:
    engine: Engine
