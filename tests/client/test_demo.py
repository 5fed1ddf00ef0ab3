"""The client on the demo's real models: every listed checkpoint, saved and extracted."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.conftest import Demo
from tunevault.client import Client, download
from tunevault.client.extract import download_extract
from tunevault.models import Kind


def test_every_listed_checkpoint_downloads_and_extracts(demo: Demo, tmp_path: Path) -> None:
    client = Client(demo.url, demo.token)
    seen = 0
    for ft in (demo.lora, demo.full):
        raw = Kind.ADAPTER if ft.is_lora else Kind.MODEL_OUTPUT
        for c in client.list_checkpoints(ft.id):
            query = parse_qs(urlsplit(c.path).query)
            kind = Kind(query["checkpoint"][0]) if "checkpoint" in query else raw
            step = None if "checkpoint" in query else c.step
            how = {"step": step, "checkpoint": kind.value}
            out = tmp_path / f"{ft.id}-{c.step}-{kind.value}"
            result = download(client, ft.id, output=out / "x.tar.zst", connections=2, **how)
            expected = demo.archive_bytes(ft, c.step, kind)
            assert Path(result.path).read_bytes() == expected and result.verified
            tree = download_extract(client, ft.id, out / "tree", **how)
            names = {p.name for p in (out / "tree").iterdir()}
            assert tree.sha256 == result.sha256 and "SHA256SUMS" in names
            assert (
                "adapter_config.json" in names if kind == Kind.ADAPTER else "config.json" in names
            )
            seen += 1
    assert seen == len(demo.archives)
