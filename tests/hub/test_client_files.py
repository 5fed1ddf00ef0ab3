"""`tunevault download --file/--include/--exclude`: files of a checkpoint over the Hub
file routes, each resumed and verified against its sha256."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Demo
from tests.hub.conftest import Big, Hub, tree_bytes
from tests.support.faultproxy import Fault, FaultProxy
from tunevault.models import Kind

MiB = 1 << 20


def tunevault(*args: str, url: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNEVAULT_", "TOGETHER_"))}
    env.update(TUNEVAULT_URL=url, TUNEVAULT_API_KEY=token)
    return subprocess.run(
        [sys.executable, "-m", "tunevault", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _get(demo: Demo, *args: str) -> subprocess.CompletedProcess[str]:
    return tunevault("download", *args, url=demo.url, token=demo.token)


def test_named_files_and_globs(hub: Hub, tmp_path: Path) -> None:
    demo, lora, full = hub.demo, hub.demo.lora, hub.demo.full
    adapter = hub.archive_files(lora, 20, Kind.ADAPTER)
    out = tmp_path / "one"
    r = _get(
        demo, lora.id, "--checkpoint", "adapter", "--file", "adapter_config.json", "-o", str(out)
    )
    assert r.returncode == 0, r.stderr
    assert tree_bytes(out) == {"adapter_config.json": adapter["adapter_config.json"]}
    assert "1 files" in r.stdout and "adapter_config.json" in r.stderr
    step10 = hub.archive_files(full, 10, Kind.MODEL_OUTPUT)
    out = tmp_path / "json"
    args = [f"{full.id}:10", "--include", "*.json", "--exclude", "tokenizer*", "-o", str(out)]
    r = _get(demo, *args, "--json")
    assert r.returncode == 0, r.stderr
    wanted = {p: d for p, d in step10.items() if p.endswith(".json") and "tokenizer" not in p}
    assert tree_bytes(out) == wanted and len(wanted) >= 2
    result = json.loads(r.stdout)
    assert result["revision"] == "step-10" and len(result["commit"]) == 40
    # Run again: every file is in place with its digest, none is fetched.
    again = json.loads(_get(demo, *args, "--json").stdout)
    assert [f["transferred"] for f in again["files"]] == [0] * len(wanted)


def test_refusals(hub: Hub, tmp_path: Path) -> None:
    lora = hub.demo.lora
    r = _get(hub.demo, lora.id, "--file", "nope.bin", "-o", str(tmp_path))
    assert r.returncode == 4 and "model.safetensors" in r.stderr  # it lists what exists
    r = _get(hub.demo, lora.id, "--include", "*.gguf", "-o", str(tmp_path))
    assert r.returncode == 2 and "no file" in r.stderr
    r = _get(hub.demo, lora.id, "--file", "config.json", "--extract", str(tmp_path / "x"))
    assert r.returncode == 2
    r = tunevault("download", lora.id, "--file", "config.json", url=hub.demo.url, token="tv_x")
    assert r.returncode == 3


def test_a_cut_and_a_kept_part_resume_and_a_bad_part_is_refused(big: Big, tmp_path: Path) -> None:
    seeded = big.seeded
    data = (seeded.data_dir / "src" / seeded.ft.id / "model.safetensors").read_bytes()
    args = ("download", seeded.ft.id, "--file", "model.safetensors", "-o", str(tmp_path), "--json")
    with FaultProxy(big.server.url) as proxy:
        proxy.push(Fault(cut_after=3 * MiB + 5))
        r = tunevault(*args, url=proxy.url, token=seeded.token)
        ranges = [e.headers.get("range") for e in proxy.downloads()]
    assert r.returncode == 0, r.stderr
    assert ranges == [None, f"bytes={3 * MiB + 5}-"]
    dest = tmp_path / "model.safetensors"
    assert dest.read_bytes() == data and not (tmp_path / "model.safetensors.part").exists()
    # A .part left by an earlier run is continued...
    dest.unlink()
    (tmp_path / "model.safetensors.part").write_bytes(data[: 5 * MiB])
    r = tunevault(*args, url=big.server.url, token=seeded.token)
    assert json.loads(r.stdout)["files"][0]["transferred"] == len(data) - 5 * MiB
    assert dest.read_bytes() == data
    # ...but bytes that are not the file's fail its digest, and are not kept.
    dest.unlink()
    (tmp_path / "model.safetensors.part").write_bytes(b"\0" * MiB)
    r = tunevault(*args, url=big.server.url, token=seeded.token)
    assert r.returncode == 5 and json.loads(r.stdout)["error"]["code"] == "integrity_error"
    assert not dest.exists() and not (tmp_path / "model.safetensors.part").exists()
