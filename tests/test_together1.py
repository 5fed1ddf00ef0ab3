"""The together 1.x SDK (strict pydantic parsing, `download()`), in its own virtualenv.

scripts/bootstrap --test installs it into .venv-together1; it cannot share a venv with 3.x.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Demo
from tunevault.models import Kind

PYTHON1 = Path(__file__).parent.parent / ".venv-together1" / "bin" / "python"
SCRIPT = """
import json, sys, together
base, token, ft_id, out = sys.argv[1:5]
client = together.Together(api_key=token, base_url=base + "/v1")
job = client.fine_tuning.retrieve(ft_id)
ckpts = client.fine_tuning.list_checkpoints(ft_id)
events = client.fine_tuning.list_events(ft_id).data
final = client.fine_tuning.download(ft_id, output=out + "/final.tar.zst")
step = client.fine_tuning.download(ft_id, output=out + "/s10.tar.zst", checkpoint_step=10)
adapter = client.fine_tuning.download(ft_id, output=out + "/a.tar.zst", checkpoint_type="adapter")
print(json.dumps({
    "status": str(job.status.value), "type": job.training_type.type,
    "ckpts": [c.type for c in ckpts], "events": [str(e.type.value) for e in events],
    "sizes": [final.size, step.size, adapter.size],
}))
"""


@pytest.mark.skipif(not PYTHON1.exists(), reason="together 1.x venv not installed")
def test_together1_sdk_download(demo: Demo, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(PYTHON1), "-c", SCRIPT, demo.url, demo.token, demo.lora.id, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["status"] == "completed" and got["type"] == "Lora"
    assert got["ckpts"] == ["Final Merged", "Final Adapter", "Intermediate"]
    assert got["events"][0] == "JOB_START"
    expected = {
        "final.tar.zst": demo.archive_bytes(demo.lora, 20, Kind.MERGED),
        "s10.tar.zst": demo.archive_bytes(demo.lora, 10, Kind.ADAPTER),
        "a.tar.zst": demo.archive_bytes(demo.lora, 20, Kind.ADAPTER),
    }
    for name, body in expected.items():
        assert (tmp_path / name).read_bytes() == body, name
    assert got["sizes"] == [len(b) for b in expected.values()]
