"""Opening the metadata store and blob storage named by the settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tunevault.errors import (
    InsufficientStorage,
    PayloadTooLarge,
    StorageUnavailable,
    TunevaultError,
)
from tunevault.metadata import MetadataStore
from tunevault.settings import Settings
from tunevault.storage import Storage, Unsupported, open_storage
from tunevault.storage.errors import BlobTooLarge, StorageError, StorageFull


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
        _use_presign_identity(storage, settings)
        yield Services(settings=settings, store=store, storage=storage)
    finally:
        storage.close()
        store.close()


def _use_presign_identity(storage: Storage, settings: Settings) -> None:
    key_id, secret = settings.s3_presign_access_key_id, settings.s3_presign_secret_access_key
    if key_id is None or secret is None:  # the settings allow both or neither
        return
    try:
        storage.use_presign_identity(key_id, secret.get_secret_value())
    except Unsupported as e:
        raise ValueError(
            "s3_presign_access_key_id is set but the storage is not S3: "
            f"unset the s3_presign_* settings or use s3:// storage ({e})"
        ) from e


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


def translated(e: StorageError) -> TunevaultError:
    """The domain's error for a storage failure: what clients and job rows are told."""
    if isinstance(e, StorageFull):
        return InsufficientStorage(str(e))
    if isinstance(e, BlobTooLarge):
        return PayloadTooLarge(str(e))
    return StorageUnavailable(str(e))
