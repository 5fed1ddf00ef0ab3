"""The two digests of a blob, taken in one pass over its bytes.

The sha256 names the blob and is what clients verify. The xxh3-128, recorded when the
upload's sha256 checked out, is what archive builds re-check stored bytes against: it
catches bytes that rotted on disk as surely as the sha256 does, at memory speed (49 GB/s
from cache against sha256's 1.8 on this project's machine: read + check + zstd -3 runs at
989 MB/s with it, 727 with the sha256; BENCHMARKS.md, bench.build_stages). It is not a
defence against someone who can write to the storage: they could replace the archives too.
"""

from __future__ import annotations

import hashlib

import xxhash


class BlobHasher:
    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._xxh3 = xxhash.xxh3_128()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._sha256.update(data)
        self._xxh3.update(data)

    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def xxh3(self) -> str:
        return self._xxh3.hexdigest()


class StoredCheck:
    """Re-checks a stored blob's bytes: by its xxh3 when one was recorded, else (blobs
    stored before tunevault recorded one) by its sha256."""

    def __init__(self, sha256: str, xxh3: str | None) -> None:
        self._expected = xxh3 or sha256
        self._hash: xxhash.xxh3_128 | hashlib._Hash = (
            xxhash.xxh3_128() if xxh3 else hashlib.sha256()
        )

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)

    def ok(self) -> bool:
        return self._hash.hexdigest() == self._expected


class MadeDigest:
    """The sha256 of bytes made as they are packed (a streamed merge's shard): there is no
    recorded digest to check them against, so this one becomes the record."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)

    def ok(self) -> bool:
        return True

    def sha256(self) -> str:
        return self._hash.hexdigest()
