"""`tunevault push` against a real server: a full publish, a rerun, and a SIGKILL half-way."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.publisher import helpers
from tests.publisher.conftest import Live
from tunevault.publisher.layouts import detect
from tunevault.publisher.state import STATE_FILE


def tunevault(live: Live, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TUNEVAULT_URL": live.url, "TUNEVAULT_API_KEY": live.token}
    return subprocess.Popen(
        [sys.executable, "-m", "tunevault", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def push(live: Live, *args: str) -> dict[str, Any]:
    proc = tunevault(live, "push", "--json", *args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def blob_sizes(root: Path) -> dict[str, int]:
    """The distinct blobs of a push (equal files are one blob), by sha256."""
    return {
        hashlib.sha256(f.source.read_bytes()).hexdigest(): f.size
        for c in detect(root).checkpoints
        for f in c.files
    }


def settled(live: Live, ft_id: str) -> dict[str, Any]:
    """The fine-tune once its archives are built (the status reads compressing until then)."""
    for _ in range(300):
        ft: dict[str, Any] = live.get(f"/v1/fine-tunes/{ft_id}")
        if ft["status"] != "compressing":
            return ft
        time.sleep(0.1)
    pytest.fail(f"{ft_id} still compressing")


def test_push_trainer_output_then_rerun(live: Live, tmp_path: Path) -> None:
    root = helpers.trainer_output(tmp_path / "run")
    first = push(
        live,
        str(root),
        "--model",
        "org/base",
        "--external-base",
        "--name",
        "me/run",
        "--suffix",
        "s1",
    )
    assert first["resumed"] is False and first["layout"] == "trainer"
    sizes = blob_sizes(root)  # nothing was on the server before: every blob goes up once
    assert (first["blobs_uploaded"], first["bytes_uploaded"]) == (len(sizes), sum(sizes.values()))
    ft = settled(live, first["id"])
    assert ft["status"] == "completed"
    assert (ft["model"], ft["model_output_name"], ft["suffix"]) == ("org/base", "me/run", "s1")
    assert ft["training_type"]["type"] == "Lora"
    steps = {
        (c["step"], c["checkpoint_type"])
        for c in live.get(f"/v1/fine-tunes/{ft['id']}/checkpoints")["data"]
    }
    assert {(2, "Intermediate"), (4, "Intermediate")} <= steps
    events = [e["type"] for e in live.get(f"/v1/fine-tunes/{ft['id']}/events")["data"]]
    assert events.count("CHECKPOINT_SAVE") == 3 and events.count("JOB_COMPLETE") == 1
    metrics = live.get(f"/v1/fine-tunes/{ft['id']}/metrics")["metrics"]
    assert len(metrics) == 8 and metrics[0]["train/loss"] == 2.9

    again = push(live, str(root), "--model", "org/base", "--external-base")
    assert again["id"] == first["id"] and again["resumed"] is True
    assert again["bytes_uploaded"] == 0
    assert len(live.get(f"/v1/fine-tunes/{ft['id']}/metrics")["metrics"]) == 8
    assert len(live.get(f"/v1/fine-tunes/{ft['id']}/events")["data"]) == len(events)

    other = push(live, str(root), "--model", "org/base", "--external-base", "--new")
    assert other["id"] != first["id"]
    assert other["bytes_uploaded"] == 0  # the organization has every blob already


def test_push_refuses_without_base_model_name(live: Live, tmp_path: Path) -> None:
    proc = tunevault(live, "push", str(helpers.adapter(tmp_path / "a")))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "pass --model" in err


def test_push_of_a_lora_on_an_unregistered_base(live: Live, tmp_path: Path) -> None:
    root = helpers.trainer_output(tmp_path / "run")
    before = len(live.get("/v1/fine-tunes")["data"])
    proc = tunevault(live, "push", str(root), "--model", "org/missing-base")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "org/missing-base" in err
    assert "tunevault base push org/missing-base DIR" in err
    assert len(live.get("/v1/fine-tunes")["data"]) == before  # nothing was created

    external = push(live, str(root), "--model", "org/missing-base", "--external-base", "--new")
    ft = settled(live, external["id"])
    kinds = {
        c["checkpoint_type"] for c in live.get(f"/v1/fine-tunes/{ft['id']}/checkpoints")["data"]
    }
    assert kinds == {"Intermediate", "Final Adapter"}  # no merged model is listed or built


def missing(live: Live, digests: list[str]) -> set[str]:
    return set(live.post("/v1/publish/blobs/check", {"sha256": digests})["missing"])


def test_push_survives_sigkill(live: Live, tmp_path: Path) -> None:
    # Four ~3 MiB weight files plus small ones, sent at 4 MiB/s: the kill lands mid-upload.
    root = helpers.trainer_output(tmp_path / "big", nbytes=3 << 20)
    sizes = blob_sizes(root)
    digests = sorted(sizes)
    big = [d for d in digests if sizes[d] > 1 << 20]  # small files may be on the server already
    proc = tunevault(
        live,
        "push",
        str(root),
        "--model",
        "org/base",
        "--external-base",
        "--json",
        "--limit-rate",
        "4M",
    )
    try:
        for _ in range(600):
            left = missing(live, big)
            if 0 < len(left) < len(big):  # some weights committed, others not
                break
            assert proc.poll() is None, "push finished before it could be interrupted"
            time.sleep(0.02)
        else:
            pytest.fail("the upload never got half-way")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    ft_id = json.loads((root / STATE_FILE).read_text())["servers"][live.url]["fine_tune_id"]
    assert live.get(f"/v1/fine-tunes/{ft_id}")["status"] == "running"

    time.sleep(0.5)  # let the server finish writing what arrived before the connection died
    left = missing(live, digests)
    with live.http() as c:
        kept = {d: int(c.head(f"/v1/publish/blobs/{d}").headers["Upload-Offset"]) for d in left}
    owed = sum(sizes[d] - kept[d] for d in left)

    result = push(live, str(root), "--model", "org/base", "--external-base")
    assert result["id"] == ft_id and result["resumed"] is True
    assert 0 < result["bytes_uploaded"] <= owed < result["bytes_total"]
    assert result["blobs_uploaded"] == len(left)
    assert missing(live, digests) == set()
    assert settled(live, ft_id)["status"] == "completed"
    assert len(live.get(f"/v1/fine-tunes/{ft_id}/metrics")["metrics"]) == 8


def test_push_of_another_run_is_refused_before_upload(live: Live, tmp_path: Path) -> None:
    root = helpers.trainer_output(tmp_path / "run", lora=False)
    first = push(live, str(root), "--model", "org/full-base")
    again = push(live, str(root))  # the same files: resumed, the base need not be named
    assert again["id"] == first["id"] and again["resumed"] and again["bytes_uploaded"] == 0

    # Training again into the same directory rewrites the weights of every save.
    for step in (2, 4):
        shard = root / f"checkpoint-{step}" / "model-00001-of-00001.safetensors"
        helpers.weights(shard, 4096, seed=7000 + step)
    new_blob = hashlib.sha256(
        (root / "checkpoint-2" / "model-00001-of-00001.safetensors").read_bytes()
    ).hexdigest()
    proc = tunevault(live, "push", str(root), "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 8, err
    message = json.loads(out)["error"]["message"]
    assert message.startswith(f"{root} was published as {first['id']}, and its files changed")
    assert "step 2 (model_output_path): changed model-00001-of-00001.safetensors" in message
    assert "step 4 (model_output_path): changed" in message and "pass --new" in message
    assert missing(live, [new_blob]) == {new_blob}  # nothing was uploaded

    other = push(live, str(root), "--new", "--model", "org/full-base")
    assert other["id"] != first["id"] and not other["resumed"]
    assert missing(live, [new_blob]) == set()
