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
from tunevault.client.target import (
    DownloadRequest,
    WrongCheckpoint,
    disposition_filename,
    parse_ft_arg,
)
from tunevault.client.waiting import POLL_CAP, POLL_FLOOR, WaitLine, not_ready_after, poll_pause
from tunevault.errors import ArchiveNotReady

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


@pytest.mark.parametrize(
    ("retry_after", "pause"),
    [("30", POLL_CAP), ("1", 1.0), ("0.5", 0.5), ("0", POLL_FLOOR), ("soon", POLL_CAP)],
)
def test_a_build_is_polled_as_the_server_says_within_bounds(retry_after: str, pause: float) -> None:
    e = ArchiveNotReady("building", headers={"Retry-After": retry_after})
    assert poll_pause(e) == pause


def test_a_build_about_to_end_is_looked_at_when_it_should_end() -> None:
    e = ArchiveNotReady("building", headers={"Retry-After": "1", "Tunevault-Build-Eta": "0.3"})
    assert poll_pause(e) == 0.3


def test_wait_line_shows_the_server_state_not_its_retry_hint() -> None:
    out = io.StringIO()
    line = WaitLine("ft-1 (merged)", out)
    message = "merged archive: building, 40%, about 3 s; retry in 3 s"
    line.waiting(message, 2.0, 0.0, 600)
    line.waiting(message, 2.0, 2.0, 600)  # unchanged: not repeated off a terminal
    line.done(3.2, ready=True)
    assert out.getvalue().splitlines() == [
        "ft-1 (merged): merged archive: building, 40%, about 3 s; checking again in 2.0 s "
        "(waited 0 s of 600 s)",
        "ft-1 (merged): ready after waiting 3.2 s",
    ]
    assert not_ready_after(ArchiveNotReady(message), 0).message == (
        "merged archive: building, 40%, about 3 s; not waiting (--wait 0): "
        "run the same command again later, or pass a longer --wait"
    )


def test_merged_at_a_step_is_asked_with_its_own_parameter() -> None:
    assert DownloadRequest("ft-1", 4, "merged").params() == {
        "ft_id": "ft-1",
        "checkpoint": "merged",
        "merged_step": "4",
    }
    assert DownloadRequest("ft-1", 4, "adapter").params() == {
        "ft_id": "ft-1",
        "checkpoint_step": "4",
    }
    assert DownloadRequest("ft-1", None, "merged").params() == {
        "ft_id": "ft-1",
        "checkpoint": "merged",
    }


@pytest.mark.parametrize(
    ("step", "kind", "filename", "ok"),
    [
        (None, "merged", "run-step6-merged.tar.zst", True),
        (None, "merged", "run-step6-adapter.tar.zst", False),
        (4, "merged", "run-step4-merged.tar.zst", True),
        (4, "merged", "run-step6-merged.tar.zst", False),  # a server that ignored merged_step
        (4, "merged", "run-step4-adapter.tar.zst", False),
        (4, "default", "run-step4-adapter.tar.zst", True),
        (4, "default", "run-step5-adapter.tar.zst", False),
        (None, "adapter", "archive.tar.zst", True),  # a name of another scheme: not checkable
    ],
)
def test_the_archive_asked_for_is_the_one_kept(
    step: int | None, kind: str, filename: str, ok: bool
) -> None:
    request = DownloadRequest("ft-1", step, kind)
    if ok:
        request.check_answer(filename)
    else:
        with pytest.raises(WrongCheckpoint, match=f"the server sent {filename}"):
            request.check_answer(filename)
