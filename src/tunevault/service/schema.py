"""The metadata schema as an operator sees it: where it is, and bringing it up to date."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from tunevault.metadata import MetadataStore
from tunevault.settings import Settings


def database_label(settings: Settings) -> str:
    """The database URL without its password: safe to print and log."""
    return make_url(settings.resolved_database_url()).render_as_string(hide_password=True)


def migrate_database(settings: Settings) -> tuple[str | None, str | None]:
    """Migrate the settings' database to the newest revision; the revisions before and
    after. Safe to run from any number of processes at once (see MetadataStore.migrate)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives there
    store = MetadataStore(settings.resolved_database_url())
    try:
        return store.migrate()
    finally:
        store.close()
