"""Metadata: organizations, keys, fine-tunes, checkpoints and archives in SQLite or PostgreSQL."""

from tunevault.metadata.store import MetadataStore

__all__ = ["MetadataStore"]
