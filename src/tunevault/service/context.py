"""Opening the metadata store and blob storage named by the settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tunevault.metadata import MetadataStore
from tunevault.settings import Settings
from tunevault.storage import Storage, Unsupported, open_storage


@dataclass(frozen=True)
class Services:
    """What the server, the worker and the CLI work with."""

    settings: Settings
    store: MetadataStore
    storage: Storage


@contextmanager
def open_services(settings: Settings) -> Iterator[Services]:
    """The store (migrated to the newest schema) and storage, closed on exit."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = MetadataStore(settings.resolved_database_url())
    store.migrate()
    storage = open_storage(settings.resolved_storage_url())
    try:
        yield Services(settings=settings, store=store, storage=storage)
    finally:
        storage.close()
        store.close()


def check_serve_mode(svc: Services) -> None:
    """Refuse at start a serve mode the storage cannot do, not at the first download."""
    mode = svc.settings.serve_mode
    try:
        if mode == "redirect":
            svc.storage.presigned_url("healthcheck", expires=60)
        elif mode == "x-accel":
            svc.storage.local_path("healthcheck")
    except Unsupported as e:
        raise ValueError(f"serve_mode={mode} does not work with this storage: {e}") from e
