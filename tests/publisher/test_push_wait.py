"""`push --wait`: the push returns once every archive is built, with the download commands."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.publisher.conftest import Live
from tests.publisher.test_push import tunevault
from tunevault.models import DownloadRecord
from tunevault.service.context import open_services
from tunevault.settings import Settings

training = pytest.importorskip("tests.publisher.training")  # needs transformers, peft, torch

BASE = "tiny/wait-base"


@pytest.fixture(scope="module")
def lora_dir(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real PEFT adapter of a registered base: its merged archive can be built."""
    tmp = tmp_path_factory.mktemp("push-wait")
    base = training.tiny_llama()
    base.save_pretrained(tmp / "base")
    proc = tunevault(live, "base", "push", BASE, str(tmp / "base"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    training.with_lora(base).save_pretrained(tmp / "adapter")
    return tmp / "adapter"


def test_push_wait_returns_once_every_archive_is_built(live: Live, lora_dir: Path) -> None:
    proc = tunevault(live, "push", str(lora_dir), "--model", BASE, "--wait", "120", "--json")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    result = json.loads(out)
    ft_id = result["id"]
    assert sorted(result["downloads"]) == [
        f"tunevault download {ft_id} --checkpoint adapter",
        f"tunevault download {ft_id} --checkpoint merged",
    ]
    # Nothing is still being built: the status is final and the merged archive is there.
    assert live.get(f"/v1/fine-tunes/{ft_id}")["status"] == "completed"
    with live.http() as c:
        r = c.get("/v1/finetune/download", params={"ft_id": ft_id, "checkpoint": "merged"})
    assert r.status_code == 200, r.text
    # The wait asked with HEADs, which are not downloads: the audit holds this GET alone.
    assert [(r.kind, r.status) for r in audited(live, ft_id)] == [("merged", 200)]


def audited(live: Live, ft_id: str) -> list[DownloadRecord]:
    """The fine-tune's audit rows, once some arrived (written in batches, off the request)."""
    deadline = time.monotonic() + 30
    with open_services(Settings(data_dir=live.server.data_dir)) as svc:
        org = svc.store.get_org_by_name("trainers")
        assert org is not None
        while True:
            found = [r for r in svc.store.list_downloads(org.id, limit=1000) if r.ft_id == ft_id]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def test_push_wait_prints_the_commands(live: Live, lora_dir: Path) -> None:
    proc = tunevault(live, "push", str(lora_dir), "--model", BASE, "--new", "--wait", "120")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    ft_id = out.strip()
    assert f"  tunevault download {ft_id} --checkpoint merged" in err.splitlines()
