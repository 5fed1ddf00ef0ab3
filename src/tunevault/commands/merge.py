"""`tunevault merge BASE_DIR ADAPTER_DIR OUT_DIR`: the merge engine on the command line."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from tunevault.merge import merge_lora

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("merge")
@click.argument("base_dir", type=_DIR)
@click.argument("adapter_dir", type=_DIR)
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    default=None,
    help="Cast floating tensors to this dtype (default: keep the base model's).",
)
@click.option(
    "--max-shard-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Largest output shard, in GiB.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def merge(
    base_dir: Path,
    adapter_dir: Path,
    out_dir: Path,
    dtype: str | None,
    max_shard_gb: float,
    as_json: bool,
) -> None:
    """Merge the PEFT LoRA adapter in ADAPTER_DIR into the model in BASE_DIR, writing OUT_DIR."""
    # A MergeRefused (exit 2) says which tensor or option cannot be merged exactly.
    report = merge_lora(
        base_dir, adapter_dir, out_dir, dtype=dtype, max_shard_bytes=int(max_shard_gb * 2**30)
    )
    if as_json:
        click.echo(json.dumps({**asdict(report), "out_dir": str(report.out_dir)}))
        return
    click.echo(
        f"merged {report.tensors_merged} tensors, replaced {report.tensors_replaced}, "
        f"copied {report.tensors_copied}; wrote {len(report.output_files)} files "
        f"({report.total_bytes / 2**30:.2f} GiB of weights) to {report.out_dir}"
    )
