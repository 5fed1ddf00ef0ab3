"""snapshot_download of a model in four shards: tunevault's Hub routes versus nginx serving
the same files, with the same client (huggingface_hub) in the same run.

nginx plays a static Hub: the model info and tree answers tunevault gave, stored as files,
and the shards from disk with the `X-Repo-Commit` the client needs, so both sides answer
the very same calls (info, tree, then a HEAD and a GET per file, four files at once).
Each timed download goes to a fresh cache; what it wrote is then checked against the
shards' sha256, untimed.

    .venv/bin/python -m bench.hub_bench [--size-mib 2048] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from bench.common import random_file
from tests.support.nginx import run_nginx
from tests.support.server import run_server
from tunevault.models import Kind, Scope
from tunevault.publisher.files import sha256_file
from tunevault.service.context import open_services
from tunevault.service.publishing import publish_directory
from tunevault.settings import Settings

REPO = "bench/big"
SHARDS = 4
# Timed inside the child, around the call: the interpreter's start and imports are not.
CLIENT = """
import json, sys, time
from huggingface_hub import snapshot_download
t0 = time.perf_counter()
folder = snapshot_download(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t0, "folder": folder}))
"""


def prepare(tmp: Path, size: int) -> tuple[str, Path]:
    """The shards and a config, published as a fine-tune named REPO; (token, source dir)."""
    src = tmp / "src"
    src.mkdir(parents=True)
    for i in range(SHARDS):
        random_file(src / f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors", size // SHARDS)
    (src / "config.json").write_text('{"model_type": "llama"}\n')
    with open_services(Settings(data_dir=tmp / "data")) as svc:
        org = svc.store.create_org("bench")
        _, token = svc.store.create_key(org.id, "bench", [Scope.READ])
        ft = svc.store.create_fine_tune(
            org.id, model="base", model_output_name=REPO, training_type="Full", status="completed"
        )
        # The archive job it queues is never run: the server below has no build worker.
        publish_directory(svc, ft, src, step=1, kind=Kind.MODEL_OUTPUT, final=True)
    return token, src


def static_hub(tv_url: str, token: str, src: Path, meta: Path, digests: dict[str, str]) -> str:
    """nginx locations answering REPO's Hub calls as tunevault answered them. Each file
    gets its sha256 as ETag, as on the Hub: the client names its cache blobs by ETag, and
    nginx's own (mtime-size) is the same for shards written in the same second."""
    meta.mkdir()
    auth = {"Authorization": f"Bearer {token}"}
    info = httpx.get(f"{tv_url}/api/models/{REPO}/revision/main", headers=auth).json()
    tree = httpx.get(f"{tv_url}/api/models/{REPO}/tree/{info['sha']}?recursive=true", headers=auth)
    (meta / "info.json").write_text(json.dumps(info))
    (meta / "tree.json").write_text(tree.text)
    files = "".join(
        f"""
        location = /files/{name} {{
            alias {src / name};
            default_type application/octet-stream;
            etag off;
            add_header ETag '"{sha}"' always;
            add_header X-Repo-Commit {info["sha"]} always;
        }}"""
        for name, sha in digests.items()
    )
    return f"""
        default_type application/json;
        rewrite ^/api/models/{REPO}/revision/ /meta/info.json last;
        rewrite ^/api/models/{REPO}/tree/ /meta/tree.json last;
        rewrite ^/{REPO}/resolve/[^/]+/(.*)$ /files/$1 last;
        location /meta/ {{ alias {meta}/; }}{files}"""


def timed_snapshot(endpoint: str, token: str, home: Path, digests: dict[str, str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_TOKEN=token, HF_HOME=str(home))
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, REPO], env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    folder = Path(result["folder"])
    got = {p.name: sha256_file(p) for p in folder.iterdir()}
    assert got == digests, f"{endpoint} served other bytes"
    subprocess.run(["rm", "-rf", str(home)], check=True)
    return float(result["seconds"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tv-hub-bench-") as tmp_name:
        tmp = Path(tmp_name)
        token, src = prepare(tmp, args.size_mib << 20)
        digests = {p.name: sha256_file(p) for p in src.iterdir()}
        total = sum(p.stat().st_size for p in src.iterdir())
        tv_s, ng_s = [], []
        with run_server(tmp / "data", env={"TUNEVAULT_BUILD_WORKERS": "0"}) as server:
            locations = static_hub(server.url, token, src, tmp / "meta", digests)
            with run_nginx(tmp / "nginx", locations) as ng:
                for i in range(args.repeat):  # interleaved: a busy moment hits both
                    tv_s.append(timed_snapshot(server.url, token, tmp / f"tv{i}", digests))
                    ng_s.append(timed_snapshot(ng, token, tmp / f"ng{i}", digests))
                    print(f"run {i + 1}: tunevault {tv_s[-1]:.2f} s, nginx {ng_s[-1]:.2f} s")
    tv, ng_t = statistics.median(tv_s), statistics.median(ng_s)
    print(f"\n{total / 2**30:.2f} GiB in {SHARDS} shards, median of {args.repeat} runs:\n")
    print("| server | seconds | MB/s |")
    print("|---|---|---|")
    print(f"| tunevault | {tv:.2f} | {total / tv / 1e6:.0f} |")
    print(f"| nginx | {ng_t:.2f} | {total / ng_t / 1e6:.0f} |")
    print(f"\ntunevault / nginx throughput: {ng_t / tv:.2f}x")


if __name__ == "__main__":
    main()
