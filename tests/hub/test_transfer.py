"""A cut download resumes with Range; every file download is audited and counted; the
key is a Hub user to `whoami`; the `hf` command line downloads revisions."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx

from tests.hub.conftest import Big, Hub, audited, tree_bytes
from tests.support.faultproxy import Fault, FaultProxy
from tunevault.models import Kind, Scope
from tunevault.service.context import open_services

MiB = 1 << 20


def test_a_cut_download_resumes_where_it_stopped(hub: Hub, big: Big) -> None:
    seeded = big.seeded
    data = (seeded.data_dir / "src" / seeded.ft.id / "model.safetensors").read_bytes()
    chunk = 10 * MiB  # huggingface_hub writes what it received in chunks of this size
    with FaultProxy(big.server.url) as proxy:
        proxy.push(Fault(cut_after=chunk + 17))
        path = hub.run(
            "download",
            seeded.ft.id,
            "main",
            "model.safetensors",
            endpoint=proxy.url,
            token=seeded.token,
        )
        gets = proxy.downloads()
    assert Path(path).read_bytes() == data
    assert [g.headers.get("range") for g in gets] == [None, f"bytes={chunk}-"]
    assert [g.status for g in gets] == [200, 206]
    with open_services(seeded.settings) as svc:
        records = svc.store.list_downloads(seeded.ft.org_id)
    resumed = [r for r in records if r.range_start == chunk]
    assert [(r.status, r.kind, r.ft_id, r.bytes_sent) for r in resumed] == [
        (206, "hub:model_output_path", seeded.ft.id, len(data) - chunk)
    ]


def test_downloads_are_counted_in_the_metrics(hub: Hub) -> None:
    with open_services(hub.demo.settings) as svc:  # /metrics is the operator's
        ops = svc.store.get_org_by_name("operators") or svc.store.create_org("operators")
        _, operator = svc.store.create_key(ops.id, "metrics", [Scope.OPERATOR])
    lora = hub.demo.lora
    url = f"{hub.demo.url}/{lora.id}/resolve/adapter/adapter_config.json"
    body = httpx.get(url, headers={"Authorization": f"Bearer {hub.demo.token}"}).content
    metrics = httpx.get(f"{hub.demo.url}/metrics", headers={"Authorization": f"Bearer {operator}"})
    route = '{repo_id}/resolve/{revision}/{path}",status="200"'
    assert re.search(re.escape(route) + r"\} [1-9]", metrics.text), metrics.text[-3000:]
    served = re.search(r'tunevault_bytes_served_total\{mode="proxy"\} (\S+)', metrics.text)
    assert served is not None and float(served.group(1)) >= len(body)
    sha = hashlib.sha256(body).hexdigest()
    assert audited(hub.demo, lambda r: r.archive_sha256 == sha and r.kind == "hub:adapter")


def test_whoami_and_the_hf_command_line(hub: Hub, tmp_path: Path) -> None:
    me = hub.run("whoami")
    assert me["orgs"][0]["name"] == "demo" and me["auth"]["accessToken"]["role"] == "write"
    who = hub.hf("auth", "whoami")
    assert who.returncode == 0 and "demo" in who.stdout, who.stderr
    lora = hub.demo.lora
    out = tmp_path / "adapter"
    done = hub.hf(
        "download", lora.model_output_name, "--revision", "adapter", "--local-dir", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert tree_bytes(out) == hub.archive_files(lora, 20, Kind.ADAPTER)
    refused = hub.hf("download", lora.id, "--revision", "step-3", token=hub.demo.other_token)
    assert refused.returncode != 0 and f"Model '{lora.id}' not found" in refused.stderr
