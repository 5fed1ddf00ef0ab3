"""Pieces of the client that need no server: spans, file names, the progress bar."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunevault.client import progress
from tunevault.client.progress import Bar
from tunevault.client.state import Spans
from tunevault.client.target import disposition_filename, parse_ft_arg

SIZE = 200


@given(st.lists(st.tuples(st.integers(0, SIZE), st.integers(0, SIZE)), max_size=30))
def test_spans_match_a_set_of_bytes(ranges: list[tuple[int, int]]) -> None:
    spans, present = Spans(), set()
    for a, b in ranges:
        spans.add(a, b)
        present |= set(range(a, b))
    gaps = spans.gaps(SIZE)
    assert {i for a, b in gaps for i in range(a, b)} == set(range(SIZE)) - present
    assert spans.total() == len(present)
    prefix = next((i for i in range(SIZE + 1) if i not in present), SIZE)
    assert spans.prefix() == min(prefix, max(present, default=-1) + 1)


def test_disposition_names_are_plain() -> None:
    assert disposition_filename('attachment; filename="a-step1-adapter.tar.zst"') == (
        "a-step1-adapter.tar.zst"
    )
    assert disposition_filename('attachment; filename="../../etc/passwd"') == "passwd"
    assert disposition_filename("attachment; filename=.hidden") == "hidden"
    assert disposition_filename("attachment; filename*=UTF-8''caf%C3%A9 x.tar") == "caf_x.tar"
    assert disposition_filename('attachment; filename="/"') is None
    assert disposition_filename(None) is None


def test_ft_argument() -> None:
    assert parse_ft_arg("ft-1") == ("ft-1", None)
    assert parse_ft_arg("ft-1:500") == ("ft-1", 500)


def test_progress_bar_shows_speed_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: now[0]))
    out = io.StringIO()
    bar = Bar("ft-1", out)
    bar.start(4 << 20, 1 << 20)  # 1 MiB from an earlier run: not part of the speed
    now[0] = 102.0
    bar.update(2 << 20)  # 1 MiB in 2 s: 2 MiB left take 4 s
    now[0] = 104.0
    bar.update(4 << 20)
    bar.finish()
    lines = out.getvalue().split("\r")[1:]
    assert "0 B/s ETA --:--" in lines[0]
    assert " 50.0% 2.0 MiB/4.0 MiB 512.0 KiB/s ETA 0:04 " in lines[1]
    assert "100.0% 4.0 MiB/4.0 MiB 768.0 KiB/s ETA 0:00 " in lines[2]
