"""Safetensors at the byte level: read headers, read row ranges, write shards as a stream.

The merge never holds a whole file: it reads a header, reads the byte range of a few rows of a
tensor at a time, and writes a shard by emitting its header first (the plan knows every output
tensor's dtype and shape) and then appending tensor bytes in order.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from tunevault.archive.checksums import BlobHasher
from tunevault.errors import MergeRefused
from tunevault.storage import pagecache
from tunevault.storage.local import WRITEBACK_EVERY, start_writeback


class _Dtypes(Mapping[str, "np.dtype[Any]"]):
    """safetensors dtype code -> numpy dtype. bf16 and fp8 come from ml_dtypes, imported on
    first use: its import registers hundreds of ufunc loops, 0.6 s of CPU (BENCHMARKS.md),
    which a merge that never casts a 2-byte float (the fused bf16 path) does not need."""

    _ML = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}

    def __init__(self, plain: dict[str, np.dtype[Any]]) -> None:
        self._d = dict(plain)

    def __getitem__(self, code: str) -> np.dtype[Any]:
        if code not in self._d and code in self._ML:
            import ml_dtypes

            self._d[code] = np.dtype(getattr(ml_dtypes, self._ML[code]))
        return self._d[code]

    def __contains__(self, code: object) -> bool:
        return code in self._d or code in self._ML

    def __iter__(self) -> Iterator[str]:
        return iter({**self._d, **dict.fromkeys(self._ML)})

    def __len__(self) -> int:
        return len(self._d.keys() | self._ML.keys())


_PLAIN: dict[str, np.dtype[Any]] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
DTYPES: Mapping[str, np.dtype[Any]] = _Dtypes(_PLAIN)
ITEMSIZE: dict[str, int] = {code: dt.itemsize for code, dt in _PLAIN.items()} | {
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
# Dtypes a LoRA delta can be merged into (computed in fp32, or fp64 for an fp64 base).
MERGEABLE = frozenset({"F64", "F32", "F16", "BF16"})
_HEADER_LIMIT = 100 * 2**20  # the safetensors reference refuses bigger headers too
_COPY_CHUNK = 64 * 2**20
_HASHED_CHUNK = 4 * 2**20  # one reused buffer: hashed copies stay small in RSS


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, absolute byte range, dtype code and shape."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def np_dtype(self) -> np.dtype[Any]:
        return DTYPES[self.dtype]


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse one safetensors header and check every tensor's byte range against the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise MergeRefused(f"{path.name}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > _HEADER_LIMIT or 8 + n > size:
            raise MergeRefused(f"{path.name}: not a safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise MergeRefused(f"{path.name}: unreadable safetensors header: {e}") from e
    if not isinstance(header, dict):
        raise MergeRefused(f"{path.name}: safetensors header is not a JSON object")
    base = 8 + n
    out: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(entry["dtype"])
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise MergeRefused(f"{path.name}: malformed header entry for {name!r}") from e
        if dtype not in DTYPES:
            raise MergeRefused(f"{path.name}: tensor {name!r} has unsupported dtype {dtype}")
        info = TensorInfo(name, path, dtype, shape, base + begin, base + end)
        if begin > end or base + end > size or info.nbytes != info.numel * ITEMSIZE[dtype]:
            raise MergeRefused(f"{path.name}: tensor {name!r} has inconsistent byte offsets")
        out[name] = info
    return out


def read_rows(
    info: TensorInfo, row0: int, row1: int, out: np.ndarray[Any, Any] | None = None
) -> np.ndarray[Any, Any]:
    """Rows [row0, row1) of a tensor seen as 2-D (first dim x the rest), read from disk into
    `out` (a reusable buffer of that shape and dtype) or a new array."""
    cols = math.prod(info.shape[1:])
    rows = row1 - row0
    itemsize = ITEMSIZE[info.dtype]
    buf = np.empty(rows * cols, dtype=info.np_dtype) if out is None else out.reshape(-1)
    with info.path.open("rb", buffering=0) as f:
        f.seek(info.start + row0 * cols * itemsize)
        got = f.readinto(buf.view(np.uint8).data)
    if got != buf.nbytes:
        raise MergeRefused(f"{info.path.name}: truncated data for tensor {info.name!r}")
    return buf.reshape(rows, cols)


def read_all(info: TensorInfo) -> np.ndarray[Any, Any]:
    """A whole (small) tensor: adapter factors, magnitudes, biases."""
    rows = info.shape[0] if info.shape else 1
    return read_rows(info, 0, rows).reshape(info.shape)


def copy_bytes(src: TensorInfo, dst: BinaryIO) -> None:
    """Copy a tensor's bytes unchanged; in the kernel where possible, so nothing lands in RSS."""
    dst.flush()
    out_fd = dst.fileno()
    with src.path.open("rb", buffering=0) as f:
        offset, left = src.start, src.nbytes
        while left:
            try:
                n = os.copy_file_range(f.fileno(), out_fd, min(left, _COPY_CHUNK), offset)
            except OSError:
                n = 0
            if n <= 0:  # filesystems without copy_file_range: plain reads
                f.seek(offset)
                chunk = f.read(min(left, _COPY_CHUNK))
                if not chunk:
                    raise MergeRefused(f"{src.path.name}: truncated data for tensor {src.name!r}")
                pagecache.write_file(dst, chunk)
                dst.flush()
                n = len(chunk)
            offset += n
            left -= n


@dataclass(frozen=True)
class OutSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return ITEMSIZE[self.dtype] * math.prod(self.shape)


def copy_hashed(src: TensorInfo, emit: Callable[[memoryview], None], buf: memoryview) -> None:
    """Copy a tensor's bytes through `buf` to `emit`: the bytes pass through user space
    once, where the output's digests are taken (a kernel copy would hide them)."""
    with src.path.open("rb", buffering=0) as f:
        f.seek(src.start)
        left = src.nbytes
        while left:
            n = f.readinto(buf[: min(left, len(buf))])
            if not n:
                raise MergeRefused(f"{src.path.name}: truncated data for tensor {src.name!r}")
            emit(buf[:n])
            left -= n


def _header(specs: list[OutSpec]) -> tuple[bytes, int]:
    """A shard's JSON header and the size of the data after it."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for s in specs:
        header[s.name] = {
            "dtype": s.dtype,
            "shape": list(s.shape),
            "data_offsets": [offset, offset + s.nbytes],
        }
        offset += s.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    return raw + b" " * (-len(raw) % 8), offset  # 8-byte aligned data, as the reference's


def shard_data_size(specs: Iterable[OutSpec]) -> int:
    """The bytes of tensor data in the shard ShardWriter writes for `specs`."""
    return _header(list(specs))[1]


def shard_size(specs: Iterable[OutSpec]) -> int:
    """The size of the shard ShardWriter writes for `specs`."""
    raw, data = _header(list(specs))
    return 8 + len(raw) + data


class Sink(Protocol):
    def write(self, data: bytes | memoryview, /) -> int | None: ...


class ShardWriter:
    """Write one safetensors file as a stream: header first, then each tensor's bytes in order.
    With a `hasher`, every byte written is hashed as it goes (a blob's digests, no re-read).
    With a `sink`, the bytes go there instead of to a file at `path` (which then only names
    the shard): the merge streamed into an archive, or only hashed."""

    def __init__(
        self,
        path: Path,
        specs: Iterable[OutSpec],
        hasher: BlobHasher | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.specs = list(specs)
        raw, self.data_bytes = _header(self.specs)
        self.path = path
        self.hasher = hasher
        self.sink = sink
        self.file: BinaryIO | None = None if sink is not None else path.open("wb")
        self._copy_buf: memoryview | None = None
        self._size = self._written_back = 0
        self._emit(struct.pack("<Q", len(raw)) + raw)
        self._next = 0
        self._written = 0

    def _emit(self, data: bytes | memoryview) -> None:
        if self.hasher is not None:
            self.hasher.update(data)
        if self.file is None:
            assert self.sink is not None
            self.sink.write(data)
            return
        pagecache.write_file(self.file, data)
        self._grown(len(data))

    def _grown(self, n: int) -> None:
        """The disk writes as we go: the final fsync then waits for the last few MiB, not
        for a shard of gigabytes."""
        assert self.file is not None
        self._size += n
        if self._size - self._written_back >= WRITEBACK_EVERY:
            self.file.flush()
            start_writeback(self.file.fileno(), self._written_back, self._size - self._written_back)
            self._written_back = self._size

    def begin(self, name: str) -> OutSpec:
        """Start the next tensor; the order is the one the header was written with."""
        if self._next >= len(self.specs) or self.specs[self._next].name != name:
            raise RuntimeError(f"{self.path.name}: tensor {name!r} written out of order")
        self._written = 0
        spec = self.specs[self._next]
        self._next += 1
        return spec

    def write(self, block: np.ndarray[Any, Any]) -> None:
        self._emit(np.ascontiguousarray(block).reshape(-1).view(np.uint8).data)
        self._written += block.nbytes

    def copy(self, src: TensorInfo) -> None:
        if self.hasher is None and self.file is not None:
            copy_bytes(src, self.file)
            self._grown(src.nbytes)
        else:
            if self._copy_buf is None:
                self._copy_buf = memoryview(bytearray(_HASHED_CHUNK))
            copy_hashed(src, self._emit, self._copy_buf)
        self._written += src.nbytes

    def end(self) -> None:
        spec = self.specs[self._next - 1]
        if self.file is not None:
            self.file.flush()
        if self._written != spec.nbytes:
            raise RuntimeError(f"{self.path.name}: tensor {spec.name!r} got {self._written} bytes")

    def abort(self) -> None:
        """Close the file of a shard left unfinished (its caller removes it)."""
        if self.file is not None:
            self.file.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        if self._next != len(self.specs):
            missing = len(self.specs) - self._next
            raise RuntimeError(f"{self.path.name}: {missing} tensors left unwritten")
