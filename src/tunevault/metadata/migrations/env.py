"""Alembic environment: always run programmatically with a live connection (see store.migrate)."""

from alembic import context

from tunevault.metadata.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
