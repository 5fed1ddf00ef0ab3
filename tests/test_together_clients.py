"""The real `together` 3.x SDK and CLI, pointed at a live tunevault, unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import together

from tests.conftest import Demo
from tests.support.together import TOGETHER_CLI, together_download
from tunevault.models import Kind


def sdk(demo: Demo, token: str | None = None) -> together.Together:
    return together.Together(api_key=token or demo.token, base_url=demo.url, max_retries=0)


@pytest.mark.parametrize(
    ("which", "kwargs", "step", "kind"),
    [
        ("lora", {"checkpoint": "merged"}, 20, Kind.MERGED),
        ("lora", {"checkpoint": "adapter"}, 20, Kind.ADAPTER),
        ("lora", {"checkpoint": "merged", "checkpoint_step": 10}, 10, Kind.ADAPTER),
        ("full", {"checkpoint": "model_output_path"}, 20, Kind.MODEL_OUTPUT),
    ],
)
def test_sdk_content(
    demo: Demo, which: str, kwargs: dict[str, object], step: int, kind: Kind
) -> None:
    ft = demo.lora if which == "lora" else demo.full
    expected = demo.archive_bytes(ft, step, kind)
    assert sdk(demo).fine_tuning.content(ft_id=ft.id, **kwargs).read() == expected  # type: ignore[arg-type]
    with sdk(demo).fine_tuning.with_streaming_response.content(
        ft_id=ft.id,
        **kwargs,  # type: ignore[arg-type]
    ) as resp:
        assert resp.status_code == 200
        assert b"".join(resp.iter_bytes()) == expected


def test_sdk_read_routes(demo: Demo) -> None:
    client = sdk(demo)
    ft = client.fine_tuning.retrieve(demo.lora.id)
    assert ft.id == demo.lora.id and ft.x_model_output_name == "demo/tiny-llama-lora"
    assert ft.training_type is not None and ft.training_type.type == "Lora"
    assert {f.id for f in client.fine_tuning.list().data} == {demo.lora.id, demo.full.id}
    ckpts = client.fine_tuning.list_checkpoints(demo.lora.id).data
    assert [c.step for c in ckpts] == [20, 20, 10]
    assert client.fine_tuning.list_events(demo.lora.id).data[0].type == "JOB_START"
    metrics = client.fine_tuning.list_metrics(demo.lora.id).metrics
    assert metrics is not None and metrics[0]["train/global_step"] == 1
    window = client.fine_tuning.list_metrics(demo.lora.id, global_step_from=5, global_step_to=7)
    assert [m["train/global_step"] for m in window.metrics or []] == [5, 6, 7]


def test_sdk_errors(demo: Demo) -> None:
    with pytest.raises(together.NotFoundError, match="not found"):
        sdk(demo).fine_tuning.content(ft_id=demo.other_ft.id, checkpoint="merged").read()
    with pytest.raises(together.AuthenticationError):
        sdk(demo, token=demo.revoked_token).fine_tuning.retrieve(demo.lora.id)
    with pytest.raises(together.BadRequestError, match="checkpoint"):
        sdk(demo).fine_tuning.content(ft_id=demo.lora.id).read()


def run_cli(demo: Demo, out: Path, *args: str, project: bool = False) -> Path:
    return together_download(demo.url, demo.token, out, *args, project="demo" if project else None)


@pytest.mark.skipif(shutil.which(TOGETHER_CLI) is None, reason="together CLI not installed")
@pytest.mark.parametrize(
    ("which", "args", "step", "kind", "project"),
    [
        ("lora", (), 20, Kind.MERGED, False),
        ("lora", ("-c", "adapter"), 20, Kind.ADAPTER, True),
        ("lora", ("-s", "10"), 10, Kind.ADAPTER, False),
        ("full", (), 20, Kind.MODEL_OUTPUT, False),
    ],
)
def test_cli_download(
    demo: Demo,
    tmp_path: Path,
    which: str,
    args: tuple[str, ...],
    step: int,
    kind: Kind,
    project: bool,
) -> None:
    ft = demo.lora if which == "lora" else demo.full
    saved = run_cli(demo, tmp_path / "out", ft.id, *args, project=project)
    assert saved.name.endswith(".tar.zst")
    assert saved.read_bytes() == demo.archive_bytes(ft, step, kind)


def test_cli_step_in_the_id(demo: Demo, tmp_path: Path) -> None:
    saved = run_cli(demo, tmp_path / "out", f"{demo.lora.id}:10")
    assert saved.read_bytes() == demo.archive_bytes(demo.lora, 10, Kind.ADAPTER)
