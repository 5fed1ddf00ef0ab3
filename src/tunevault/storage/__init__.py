"""Blob storage: the interface (base.py), its errors, and backends chosen by URL scheme
(registry.py)."""

from tunevault.storage.base import BlobStat, BlobWriter, Storage, Unsupported
from tunevault.storage.registry import open_storage

__all__ = ["BlobStat", "BlobWriter", "Storage", "Unsupported", "open_storage"]
