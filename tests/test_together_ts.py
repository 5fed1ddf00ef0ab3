"""The together-ai TypeScript SDK (npm), unchanged: its fine-tuning download returns the
bytes the Python SDK gets. Installed by `scripts/bootstrap --test` into tests/ts."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import together

from tests.conftest import Demo

TS = Path(__file__).parent / "ts"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (TS / "node_modules" / "together-ai").is_dir(),
    reason="node or the together-ai npm package is missing (scripts/bootstrap --test)",
)


def ts_content(demo: Demo, out: Path, **query: object) -> subprocess.CompletedProcess[str]:
    """tests/ts/content.mjs: the SDK's `fineTuning.content(query)`, saved to `out`."""
    return subprocess.run(
        ["node", str(TS / "content.mjs"), demo.url, demo.token, str(out), json.dumps(query)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("which", "query"),
    [
        ("lora", {"checkpoint": "merged"}),
        ("lora", {"checkpoint": "adapter"}),
        ("lora", {"checkpoint": "merged", "checkpoint_step": 10}),
        ("full", {"checkpoint": "model_output_path"}),
    ],
)
def test_the_ts_sdk_downloads_what_the_python_sdk_does(
    demo: Demo, tmp_path: Path, which: str, query: dict[str, object]
) -> None:
    ft = demo.lora if which == "lora" else demo.full
    python = together.Together(api_key=demo.token, base_url=demo.url, max_retries=0)
    expected = python.fine_tuning.content(ft_id=ft.id, **query).read()  # type: ignore[arg-type]
    out = tmp_path / "archive.tar.zst"
    done = ts_content(demo, out, ft_id=ft.id, **query)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"status": 200, "size": len(expected)}
    assert out.read_bytes() == expected


def test_the_ts_sdk_sees_no_foreign_fine_tune(demo: Demo, tmp_path: Path) -> None:
    done = ts_content(demo, tmp_path / "x", ft_id=demo.other_ft.id, checkpoint="merged")
    assert done.returncode != 0 and "NotFoundError" in done.stderr
    assert not (tmp_path / "x").exists()
