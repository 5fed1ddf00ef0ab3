"""Blob storage backends, chosen by URL scheme (see `open_storage`)."""

from tunevault.storage.base import BlobStat, BlobWriter, Storage, Unsupported, open_storage

__all__ = ["BlobStat", "BlobWriter", "Storage", "Unsupported", "open_storage"]
