"""Readiness: can this process serve? The database answers a query, and the storage takes
a write and a delete (Storage.probe_write), which a missing bucket, an identity that may
not write, a read-only or full disk all fail, where the stat of a missing key that readyz
made before answered "ok" for all of them. It costs one small PUT and one DELETE per
probe; a probe every few seconds per replica is far below any store's request rates."""

from __future__ import annotations

import os
import re
import socket

import sqlalchemy as sa

from tunevault.errors import DatabaseUnavailable, StorageUnavailable
from tunevault.service.context import Services
from tunevault.storage.errors import BackendUnavailable, StorageError

# Outside blobs/ and archives/, so gc never sees it; one key per process, so that one
# replica's delete never races another's write.
PROBE_PREFIX = "readyz/"
RETRY_AFTER_S = 5
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def probe_key() -> str:
    return PROBE_PREFIX + _UNSAFE.sub("_", f"{socket.gethostname()}-{os.getpid()}")


def check_database(svc: Services) -> None:
    try:
        svc.store.ping()
    except sa.exc.SQLAlchemyError as e:
        raise database_unavailable(e) from e


def check_storage(svc: Services) -> None:
    key = probe_key()
    try:
        svc.storage.probe_write(key)
    except BackendUnavailable as e:
        raise StorageUnavailable(str(e)) from e
    except (OSError, StorageError) as e:  # local disk: missing, read-only or full
        raise StorageUnavailable(f"the storage refused a probe write ({type(e).__name__})") from e


def database_unavailable(e: BaseException) -> DatabaseUnavailable:
    """The answer to a database that cannot be reached: retry soon, on any replica."""
    return DatabaseUnavailable(
        f"the metadata database is unavailable ({type(e).__name__}); retry in {RETRY_AFTER_S} s",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def is_database_outage(e: BaseException) -> bool:
    """A failure to reach or keep a connection, not a bad statement (a bug stays a 500).
    OperationalError also covers SQLite's "database is locked": busy, retry."""
    if isinstance(e, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError):
        return True
    return isinstance(e, sa.exc.DBAPIError) and e.connection_invalidated
