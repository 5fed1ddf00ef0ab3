"""Parsing of the HTTP `Range` header (RFC 9110 section 14), bytes unit only.

Anything that is not a satisfiable byte range raises `RangeNotSatisfiable`: the download
contract forbids answering a ranged GET with 200, so a malformed header is refused rather
than ignored. Several ranges that overlap or lie within `MAX_GAP` bytes of each other are
coalesced into one span (RFC 9110 section 14.2: a server MAY coalesce ranges "separated by a
gap that is smaller than the overhead of sending multiple parts"), a single-part 206.
Ranges further apart would need multipart/byteranges, which no client of ours asks for:
such a header is ignored and the whole body sent with 200 (RFC 9110: a server MAY ignore
Range). Not 416, which RFC 9110 keeps for ranges none of which is satisfiable or for an
excessive number of them; not a 206 spanning the gap, which sent a whole file to a client
that asked for two bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunevault.errors import RangeNotSatisfiable

# ASCII digits only (RFC 9110 DIGIT), and few enough that int() never meets Python's
# 4300-digit limit: a longer number is past any archive anyway.
_SPEC = re.compile(r"^\s*([0-9]{0,30})\s*-\s*([0-9]{0,30})\s*$")
MAX_RANGES = 100
MAX_GAP = 80  # about the part headers one more part of a multipart/byteranges body costs


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{total}"


def parse_range(header: str, total: int) -> ByteRange | None:
    """The span the `Range` header asks for, within a representation of `total` bytes;
    None when the ranges are too far apart for one span: send the whole body."""
    try:
        return _parse(header, total)
    except RangeNotSatisfiable as e:
        e.headers["Content-Range"] = f"bytes */{total}"
        raise


def _parse(header: str, total: int) -> ByteRange | None:
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        raise RangeNotSatisfiable(f"unsupported Range header {header[:100]!r}; use bytes=N-")
    parts = specs.split(",")
    if len(parts) > MAX_RANGES:
        raise RangeNotSatisfiable(f"too many ranges (at most {MAX_RANGES})")
    spans = [s for s in (_one(p, total) for p in parts) if s is not None]
    if not spans:
        raise RangeNotSatisfiable(f"range {header[:100]!r} is outside the {total} bytes")
    spans.sort(key=lambda s: s.start)
    merged = spans[0]
    for span in spans[1:]:
        if span.start > merged.end + MAX_GAP:
            return None
        merged = ByteRange(merged.start, max(merged.end, span.end))
    return merged


def _one(spec: str, total: int) -> ByteRange | None:
    m = _SPEC.match(spec)
    if not m or (not m.group(1) and not m.group(2)):
        raise RangeNotSatisfiable(f"malformed byte range {spec.strip()[:100]!r}")
    first, last = m.groups()
    if not first:  # suffix range: the last N bytes
        n = int(last)
        return ByteRange(max(0, total - n), total) if n > 0 and total > 0 else None
    start = int(first)
    if last:
        end = int(last) + 1
        if end <= start:
            raise RangeNotSatisfiable(f"byte range {spec.strip()!r} ends before it starts")
        end = min(end, total)
    else:
        end = total
    return ByteRange(start, end) if start < total else None
