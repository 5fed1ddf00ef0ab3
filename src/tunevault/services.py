"""Opening the metadata store and blob storage named by the settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tunevault.metadata import MetadataStore
from tunevault.settings import Settings
from tunevault.storage import Storage, open_storage


@dataclass(frozen=True)
class Services:
    """What the server, the worker and the CLI work with."""

    settings: Settings
    store: MetadataStore
    storage: Storage


@contextmanager
def open_services(settings: Settings) -> Iterator[Services]:
    """The store (migrated to the newest schema, or checked to be at it when auto_migrate
    is off) and storage, closed on exit."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = MetadataStore(settings.resolved_database_url())
    try:
        if settings.auto_migrate:
            store.migrate()
        else:
            store.check_schema()
    except BaseException:
        store.close()
        raise
    storage = open_storage(settings.resolved_storage_url())
    try:
        yield Services(settings=settings, store=store, storage=storage)
    finally:
        storage.close()
        store.close()
