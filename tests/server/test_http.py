"""The live server on a real socket: every route, header and error of COMPAT.md."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
import pytest

from tests.conftest import Demo, FreshOrg
from tunevault.models import Kind
from tunevault.service.context import open_services


def get(demo: Demo, path: str, token: str | None = "", **kw: Any) -> httpx.Response:
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token or demo.token}"
    return httpx.get(demo.url + path, headers=headers, timeout=30, **kw)


def dl(demo: Demo, query: str, **kw: Any) -> httpx.Response:
    return get(demo, f"/v1/finetune/download?{query}", **kw)


def assert_envelope(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]
    return err  # type: ignore[no-any-return]


def test_health_is_public_everything_else_needs_a_key(demo: Demo) -> None:
    assert httpx.get(demo.url + "/healthz").json() == {"status": "ok"}
    for path in ("/openapi.json", "/v1/fine-tunes", "/v3/whoami", "/v1/finetune/download"):
        r = get(demo, path, token=None)
        assert_envelope(r, 401, "invalid_api_key")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert get(demo, "/openapi.json").json()["openapi"].startswith("3.1")


@pytest.mark.parametrize(
    ("which", "query", "step", "kind"),
    [
        ("lora", "checkpoint=merged", 20, Kind.MERGED),
        ("lora", "checkpoint=adapter", 20, Kind.ADAPTER),
        ("lora", "checkpoint=default", 20, Kind.MERGED),
        ("lora", "checkpoint_step=10&checkpoint=merged", 10, Kind.ADAPTER),
        ("full", "checkpoint=model_output_path", 20, Kind.MODEL_OUTPUT),
        ("full", "checkpoint=modelOutputPath", 20, Kind.MODEL_OUTPUT),
        ("full", "checkpoint=default", 20, Kind.MODEL_OUTPUT),
        ("full", "checkpoint_step=10", 10, Kind.MODEL_OUTPUT),
    ],
)
def test_full_download_of_every_kind(
    demo: Demo, which: str, query: str, step: int, kind: Kind
) -> None:
    ft = demo.lora if which == "lora" else demo.full
    r = dl(demo, f"ft_id={ft.id}&{query}")
    assert r.status_code == 200, r.text
    body = demo.archive_bytes(ft, step, kind)
    assert r.content == body
    sha = hashlib.sha256(body).hexdigest()
    assert r.headers["content-length"] == str(len(body))
    assert r.headers["content-type"] == "application/octet-stream"
    assert "content-encoding" not in r.headers
    assert r.headers["etag"] == f'"{sha}"'
    assert r.headers["repr-digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(sha)).decode()}:"
    assert f"-step{step}-{kind.value}.tar.zst" in r.headers["content-disposition"]


def test_step_in_the_id_and_raw_query_order(demo: Demo) -> None:
    body = demo.archive_bytes(demo.lora, 10, Kind.ADAPTER)
    assert dl(demo, f"ft_id={demo.lora.id}:10").content == body
    assert dl(demo, f"checkpoint_step=10&ft_id={demo.lora.id}").content == body
    assert dl(demo, f"ft_id={demo.lora.id}%3A10&checkpoint=adapter").content == body


def test_ranges(demo: Demo) -> None:
    body = demo.archive_bytes(demo.lora, 20, Kind.MERGED)
    total, q = len(body), f"ft_id={demo.lora.id}&checkpoint=merged"
    r = dl(demo, q, headers={"Range": "bytes=0-1"})
    assert r.status_code == 206 and r.content == body[:2]
    assert r.headers["content-range"] == f"bytes 0-1/{total}"
    mid = total // 2
    r = dl(demo, q, headers={"Range": f"bytes={mid}-"})
    assert r.status_code == 206 and r.content == body[mid:]
    assert r.headers["content-length"] == str(total - mid)
    r = dl(demo, q, headers={"Range": "bytes=-100"})
    assert r.status_code == 206 and r.content == body[-100:]
    for bad in (f"bytes={total}-", "bytes=-0", "bytes=9-3", "lines=1-2"):
        r = dl(demo, q, headers={"Range": bad})
        assert_envelope(r, 416, "range_not_satisfiable")
        assert r.headers["content-range"] == f"bytes */{total}"


def test_conditional_requests_use_the_sha256_etag(demo: Demo) -> None:
    body = demo.archive_bytes(demo.full, 20, Kind.MODEL_OUTPUT)
    q = f"ft_id={demo.full.id}&checkpoint=model_output_path"
    etag = f'"{hashlib.sha256(body).hexdigest()}"'
    r = dl(demo, q, headers={"Range": "bytes=100-", "If-Range": etag})
    assert r.status_code == 206 and r.content == body[100:]
    r = dl(demo, q, headers={"Range": "bytes=100-", "If-Range": '"' + "0" * 64 + '"'})
    assert r.status_code == 200 and r.content == body  # client holds other bytes: start over
    assert dl(demo, q, headers={"If-None-Match": etag}).status_code == 304
    assert dl(demo, q, headers={"If-Match": '"nope"'}).status_code == 412


def test_parameter_errors_are_400_with_the_parameter(demo: Demo) -> None:
    cases = {
        "": "ft_id",
        "ft_id=abc&checkpoint=merged": "ft_id",
        f"ft_id={demo.lora.id}": "checkpoint",
        f"ft_id={demo.lora.id}&checkpoint=everything": "checkpoint",
        f"ft_id={demo.lora.id}&checkpoint_step=-3": "checkpoint_step",
        f"ft_id={demo.lora.id}&checkpoint=merged&checkpoint=adapter": "checkpoint",
    }
    for query, param in cases.items():
        err = assert_envelope(dl(demo, query), 400, "invalid_request")
        assert err["param"] == param


def test_unknown_and_foreign_fine_tunes_are_the_same_404(demo: Demo) -> None:
    unknown = "ft-00000000-0000-0000-0000-000000000000"
    foreign = demo.other_ft.id
    e1 = assert_envelope(dl(demo, f"ft_id={unknown}&checkpoint=merged"), 404, "fine_tune_not_found")
    e2 = assert_envelope(dl(demo, f"ft_id={foreign}&checkpoint=merged"), 404, "fine_tune_not_found")
    assert e1["message"].replace(unknown, "X") == e2["message"].replace(foreign, "X")
    for path in ("", "/events", "/checkpoints", "/metrics"):
        assert_envelope(get(demo, f"/v1/fine-tunes/{foreign}{path}"), 404, "fine_tune_not_found")
    assert foreign not in get(demo, "/v1/fine-tunes").text
    # The owner sees it.
    assert get(demo, f"/v1/fine-tunes/{foreign}", token=demo.other_token).status_code == 200


def test_missing_checkpoints_are_404(demo: Demo) -> None:
    err = assert_envelope(
        dl(demo, f"ft_id={demo.lora.id}&checkpoint_step=999"), 404, "checkpoint_not_found"
    )
    assert "10, 20" in err["message"]
    assert_envelope(
        dl(demo, f"ft_id={demo.lora.id}&checkpoint=model_output_path"), 404, "checkpoint_not_found"
    )


def test_bad_and_revoked_keys(demo: Demo) -> None:
    q = f"ft_id={demo.lora.id}&checkpoint=merged"
    for token in ("nonsense", demo.revoked_token, demo.token[:-3] + "AAA"):
        assert_envelope(dl(demo, q, token=token), 401, "invalid_api_key")
    r = httpx.get(
        f"{demo.url}/v1/finetune/download?{q}", headers={"Authorization": f"Basic {demo.token}"}
    )
    assert_envelope(r, 401, "invalid_api_key")


def test_client_aliases(demo: Demo) -> None:
    body = demo.archive_bytes(demo.lora, 20, Kind.ADAPTER)
    r = get(demo, f"/v1/v1/finetune/download?ft_id={demo.lora.id}&checkpoint=adapter")
    assert r.content == body
    assert get(demo, "/v1/v3/whoami").json() == get(demo, "/v3/whoami").json()
    assert get(demo, f"/v1/v1/fine-tunes/{demo.lora.id}").json()["id"] == demo.lora.id


def test_whoami(demo: Demo) -> None:
    v3 = get(demo, "/v3/whoami").json()
    assert v3["type"] == "project_api_key"
    assert v3["organization"]["name"] == "demo" and v3["project"]["slug"] == "demo"
    v1 = get(demo, "/v1/whoami").json()
    assert set(v1) == {
        "api_key_id",
        "organization_id",
        "organization_name",
        "project_id",
        "project_name",
        "project_slug",
    }
    assert v1["api_key_id"] == v3["api_key"]["id"]


def test_fine_tune_routes(demo: Demo) -> None:
    listed = get(demo, "/v1/fine-tunes").json()["data"]
    assert {ft["id"] for ft in listed} == {demo.lora.id, demo.full.id}
    ft = get(demo, f"/v1/fine-tunes/{demo.lora.id}").json()
    assert ft["status"] == "completed" and ft["model_output_name"] == "demo/tiny-llama-lora"
    assert ft["training_type"] == {
        "type": "Lora",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "lora_trainable_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
    }
    assert all(e["type"].isupper() and e["level"] == "info" for e in ft["events"])
    assert get(demo, f"/v1/fine-tunes/{demo.full.id}").json()["training_type"] == {"type": "Full"}
    ckpts = get(demo, f"/v1/fine-tunes/{demo.lora.id}/checkpoints").json()["data"]
    assert [(c["step"], c["checkpoint_type"]) for c in ckpts] == [
        (20, "Final Merged"),
        (20, "Final Adapter"),
        (10, "Intermediate"),
    ]
    for c in ckpts:  # every listed path downloads
        assert get(demo, c["path"], headers={"Range": "bytes=0-1"}).status_code == 206
    events = get(demo, f"/v1/fine-tunes/{demo.lora.id}/events").json()["data"]
    assert events[0]["type"] == "JOB_START"
    metrics = get(demo, f"/v1/fine-tunes/{demo.lora.id}/metrics").json()["metrics"]
    assert len(metrics) == 20 and all("train/global_step" in m for m in metrics)


def test_delete_and_cancel_need_publish_scope_and_ownership(
    demo: Demo, fresh_org: FreshOrg
) -> None:
    with open_services(demo.settings) as svc:
        ft = svc.store.create_fine_tune(
            fresh_org.id, model="m", model_output_name="tmp", training_type="Full", status="running"
        )
    url = f"{demo.url}/v1/fine-tunes/{ft.id}"
    auth = {"Authorization": f"Bearer {fresh_org.read_token}"}
    assert_envelope(httpx.delete(url, headers=auth), 403, "insufficient_scope")
    assert_envelope(httpx.post(url + "/cancel", headers=auth), 403, "insufficient_scope")
    other = {"Authorization": f"Bearer {demo.other_token}"}
    assert_envelope(httpx.delete(url, headers=other), 404, "fine_tune_not_found")
    rw = {"Authorization": f"Bearer {fresh_org.token}"}
    r = httpx.post(url + "/cancel", headers=rw)
    assert r.status_code == 200 and r.json()["status"] == "cancel_requested"
    assert httpx.post(url + "/cancel", headers=rw).json()["status"] == "cancel_requested"
    done = f"{demo.url}/v1/fine-tunes/{demo.lora.id}/cancel"
    demo_rw = {"Authorization": f"Bearer {demo.token}"}
    assert_envelope(httpx.post(done, headers=demo_rw), 409, "conflict")
    assert httpx.delete(url, headers=rw).json()["id"] == ft.id
    assert_envelope(httpx.get(url, headers=rw), 404, "fine_tune_not_found")


def test_unknown_routes_and_methods_use_the_envelope(demo: Demo) -> None:
    assert_envelope(get(demo, "/v1/nothing"), 404, "not_found")
    r = httpx.put(f"{demo.url}/v1/fine-tunes", headers={"Authorization": f"Bearer {demo.token}"})
    assert_envelope(r, 405, "method_not_allowed")
