"""One exit-code table, one error format and one `--json` behaviour for every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.client.conftest import Live
from tests.publisher import helpers

DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port


def tv(*args: str, url: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNEVAULT_", "TOGETHER_"))}
    env["TUNEVAULT_URL"] = url
    if token is not None:
        env["TUNEVAULT_API_KEY"] = token
    return subprocess.run(
        [sys.executable, "-m", "tunevault", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def failure(r: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON object of a failed `--json` run, checked against the exit code."""
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    body: dict[str, Any] = json.loads(lines[0])
    assert body["exit_code"] == r.returncode
    assert r.stderr.splitlines()[-1] == f"error: {body['error']['message']}"
    return body


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("exit-codes")
    (tmp / "empty").mkdir()
    return {
        "adapter": str(helpers.adapter(tmp / "adapter")),  # names no base model
        # names its base by a path on the training machine: not a base anyone can merge into
        "local": str(helpers.adapter(tmp / "local", base="/scratch/run-7/llama")),
        "full": str(helpers.full(tmp / "full")),
        "empty": str(tmp / "empty"),
        "data": str(tmp / "data"),
    }


# (command line, server, key, exit code, error code); {x} is filled from `dirs`.
CASES: dict[str, tuple[list[str], str, str, int, str]] = {
    "download usage": (["download", "ft-1:abc"], "live", "good", 2, "usage_error"),
    "download auth": (["download", "{ft}"], "live", "bad", 3, "invalid_api_key"),
    "download not found": (["download", "ft-nope"], "live", "good", 4, "fine_tune_not_found"),
    "download network": (
        ["download", "ft-1", "--retries", "0"],
        "dead",
        "good",
        6,
        "network_error",
    ),
    "download not ready": (
        ["download", "{pending}", "--wait", "0"],
        "live",
        "good",
        7,
        "archive_not_ready",
    ),
    "checkpoints usage": (["checkpoints"], "live", "good", 2, "usage_error"),
    "checkpoints auth": (["checkpoints", "{ft}"], "live", "bad", 3, "invalid_api_key"),
    "checkpoints not found": (["checkpoints", "ft-nope"], "live", "good", 4, "fine_tune_not_found"),
    "checkpoints network": (
        ["checkpoints", "ft-1", "--retries", "0"],
        "dead",
        "good",
        6,
        "network_error",
    ),
    "ls usage": (["ls", "extra"], "live", "good", 2, "usage_error"),
    "ls auth": (["ls"], "live", "bad", 3, "invalid_api_key"),
    "ls network": (["ls", "--retries", "0"], "dead", "good", 6, "network_error"),
    "push usage": (["push", "{empty}/nope"], "live", "good", 2, "usage_error"),
    "push without --model": (["push", "{adapter}"], "live", "good", 2, "invalid_layout"),
    "push local base": (["push", "{local}"], "live", "good", 2, "invalid_layout"),
    "push no key": (["push", "{full}", "--model", "b"], "live", "none", 3, "invalid_api_key"),
    "push auth": (["push", "{full}", "--model", "b"], "live", "bad", 3, "invalid_api_key"),
    "push network": (
        ["push", "{full}", "--model", "b", "--retries", "0"],
        "dead",
        "good",
        6,
        "network_error",
    ),
    "base push layout": (["base", "push", "b", "{empty}"], "live", "good", 2, "invalid_layout"),
    "base push auth": (["base", "push", "b", "{full}"], "live", "bad", 3, "invalid_api_key"),
    "base ls network": (["base", "ls", "--retries", "0"], "dead", "good", 6, "network_error"),
    "merge refused": (
        ["merge", "{full}", "{empty}", "{data}/m"],
        "live",
        "good",
        2,
        "merge_refused",
    ),
    "gc usage": (["gc", "--grace-hours", "-1"], "live", "good", 2, "usage_error"),
    "keys list not found": (
        ["keys", "list", "--data-dir", "{data}", "--org", "nope"],
        "live",
        "good",
        4,
        "not_found",
    ),
    "keys revoke not found": (
        ["keys", "revoke", "--data-dir", "{data}", "k-none"],
        "live",
        "good",
        4,
        "not_found",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_failure(live: Live, dirs: dict[str, str], case: str) -> None:
    args, server, key, code, error = CASES[case]
    names = {**dirs, "ft": live.ft, "pending": live.pending_ft}
    argv = [a.format(**names) for a in args]
    token = {"good": live.seeded.token, "bad": "tv_wrong", "none": None}[key]
    url = live.url if server == "live" else DEAD
    r = tv(*argv, "--json", url=url, token=token)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert failure(r)["error"]["code"] == error
    plain = tv(*argv, url=url, token=token)
    assert plain.returncode == code and plain.stdout == ""
    assert plain.stderr.splitlines()[-1].startswith("error: ")


def test_unknown_fine_tune_is_one_answer(live: Live) -> None:
    """`download` and `checkpoints` say the same about an id the server does not know,
    well-formed or not."""
    answers = set()
    for ft in ("ft-nope", "ft-00000000-0000"):
        for command in ("download", "checkpoints"):
            r = tv(command, ft, "--json", url=live.url, token=live.seeded.token)
            body = failure(r)
            answers.add((r.returncode, body["error"]["code"], body["error"]["message"]))
        assert answers == {
            (4, "fine_tune_not_found", f"fine-tune {ft} not found; `tunevault ls` lists yours")
        }
        answers.clear()


def test_success_prints_one_object(live: Live, dirs: dict[str, str], tmp_path: Path) -> None:
    token = live.seeded.token
    for argv in (
        ["ls"],
        ["checkpoints", live.ft],
        ["download", live.ft, "-o", str(tmp_path)],
        ["base", "ls"],
        ["gc", "--data-dir", dirs["data"], "--dry-run"],
        ["keys", "create", "--data-dir", dirs["data"], "--org", "scripts"],
        ["keys", "list", "--data-dir", dirs["data"]],
    ):
        r = tv(*argv, "--json", url=live.url, token=token)
        assert r.returncode == 0, (argv, r.stderr)
        assert len(r.stdout.splitlines()) == 1
        assert isinstance(json.loads(r.stdout), dict)


@pytest.mark.parametrize(
    "argv",
    [
        ["download", "ft-1"],
        ["checkpoints", "ft-1"],
        ["ls"],
        ["push", "{full}", "--model", "b"],
        ["base", "ls"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_unreachable_server_is_announced_at_each_retry(
    dirs: dict[str, str], argv: list[str]
) -> None:
    r = tv(*[a.format(**dirs) for a in argv], "--retries", "2", url=DEAD, token="tv_any")
    assert r.returncode == 6
    *notices, last = r.stderr.splitlines()
    assert [n.split(";")[0] for n in notices] == [f"cannot reach {DEAD}: connection refused"] * 2
    assert [n.rsplit(", ", 1)[1] for n in notices] == ["1/2", "2/2"]
    assert last.startswith(f"error: cannot reach {DEAD} (") and "connection refused" in last
