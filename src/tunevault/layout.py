"""Where things are, in one place: the keys blobs and archives take in storage, and the
files under the data directory (database, local blobs, upload staging, merge scratch).
gc, the uploads and the worker all walk this layout; nothing else spells a path."""

from __future__ import annotations

import re
from pathlib import Path

BLOBS = "blobs/"
ARCHIVES = "archives/"
MERGE_PREFIX = "merge-"


def blob_key(sha256_hex: str) -> str:
    """The content-addressed key of a blob."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256_hex):
        raise ValueError(f"not a sha256 hex digest: {sha256_hex!r}")
    return f"{BLOBS}sha256/{sha256_hex[:2]}/{sha256_hex}"


def archive_key(input_digest: str) -> str:
    """An archive is named by the digest of its inputs: the same files, the same key."""
    return f"{ARCHIVES}{input_digest}.tar.zst"


def database_file(data_dir: Path) -> Path:
    return data_dir / "tunevault.db"


def blob_dir(data_dir: Path) -> Path:
    """Local storage's root when no storage URL is set."""
    return data_dir / "blobs"


def staging_part(data_dir: Path, org_id: str, sha256_hex: str) -> Path:
    """An upload in progress: per organization, so one cannot append to another's."""
    return data_dir / "uploads" / org_id / f"{sha256_hex}.part"


def staged_parts(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "uploads").glob("*/*.part"))


def base_cache_dir(data_dir: Path) -> Path:
    """Base models kept for merges on object storage (tunevault.service.basecache)."""
    return data_dir / "base-cache"


def scratch_dir(data_dir: Path) -> Path:
    """Where merges lay out their inputs and outputs (directories named MERGE_PREFIX...)."""
    return data_dir / "tmp"
