"""Range header parsing: properties over arbitrary sizes and specs, plus the contract cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunevault.errors import RangeNotSatisfiable
from tunevault.server.ranges import parse_range

sizes = st.integers(min_value=0, max_value=10**12)


def test_contract_cases() -> None:
    assert parse_range("bytes=0-1", 100).content_range(100) == "bytes 0-1/100"
    assert parse_range("bytes=40-", 100).content_range(100) == "bytes 40-99/100"
    assert parse_range("bytes=-10", 100).content_range(100) == "bytes 90-99/100"
    assert parse_range("bytes=90-1000", 100).content_range(100) == "bytes 90-99/100"
    assert parse_range("bytes=0-1,5-6", 100).content_range(100) == "bytes 0-6/100"
    for bad in ("bytes=100-", "bytes=-0", "bytes=5-4", "items=0-1", "bytes=", "bytes=a-b", "0-1"):
        with pytest.raises(RangeNotSatisfiable) as e:
            parse_range(bad, 100)
        assert e.value.headers["Content-Range"] == "bytes */100"
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-0,999-999", None),  # was bytes 0-999: the whole file for two bytes
        ("bytes=-1,0-0", None),
        ("bytes=0-0,82-82", None),
        ("bytes=0-0,81-81", (0, 82)),  # a gap of MAX_GAP bytes: cheaper than a second part
        ("bytes=50-60,0-9,5-20", (0, 61)),  # unsorted and overlapping
        ("bytes=0-0,2000-", (0, 1)),  # the unsatisfiable part is dropped
    ],
)
def test_several_ranges(header: str, span: tuple[int, int] | None) -> None:
    got = parse_range(header, 1000)
    assert (None if got is None else (got.start, got.end)) == span


@given(total=sizes, start=sizes)
def test_open_range_is_the_exact_rest(total: int, start: int) -> None:
    if start >= total:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(f"bytes={start}-", total)
        return
    span = parse_range(f"bytes={start}-", total)
    assert (span.start, span.end, span.length) == (start, total, total - start)


@given(total=sizes, a=sizes, b=sizes)
def test_closed_range_stays_inside_the_body(total: int, a: int, b: int) -> None:
    try:
        span = parse_range(f"bytes={a}-{b}", total)
    except RangeNotSatisfiable:
        assert a >= total or b < a
        return
    assert 0 <= span.start < span.end <= total
    assert span.start == a and span.end == min(b + 1, total)


@given(text=st.text(max_size=200), total=sizes)
def test_arbitrary_headers_parse_or_refuse_cleanly(text: str, total: int) -> None:
    try:
        span = parse_range(text, total)
    except RangeNotSatisfiable:
        return
    assert 0 <= span.start < span.end <= total


@given(
    digits=st.integers(min_value=1, max_value=6000),
    side=st.sampled_from(["{n}-", "-{n}", "0-{n}"]),
    total=sizes,
)
def test_numbers_of_any_length_refuse_or_parse_never_crash(
    digits: int, side: str, total: int
) -> None:
    # Past 4300 digits int() raises ValueError: that was a 500 on the download route.
    try:
        span = parse_range("bytes=" + side.format(n="9" * digits), total)
    except RangeNotSatisfiable:
        return
    assert 0 <= span.start < span.end <= total


def test_only_ascii_digits() -> None:
    for spec in (
        "bytes=\u0660-\u0661",
        "bytes=\uff10-",
        "bytes=-\u0969",
    ):  # Arabic-Indic, fullwidth
        with pytest.raises(RangeNotSatisfiable):
            parse_range(spec, 100)
