"""Hostile requests against a live server: each asserts the exact status and envelope code.

Raw sockets where httpx would normalise the request (header limits, bytes that are not
UTF-8, a connection dropped half-way through a body).
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.security.conftest import Target
from tunevault.server.blob import SNDBUF

UNKNOWN = "ft-00000000-0000-0000-0000-000000000000"


def call(t: Target, method: str, path: str, token: str | None = "", **kw: Any) -> httpx.Response:
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token or t.token}")
    return httpx.request(method, t.url + path, headers=headers, timeout=60, **kw)


def envelope(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]
    return err  # type: ignore[no-any-return]


def raw(t: Target, request: bytes, limit: int = 1 << 16) -> bytes:
    """Send bytes as they are; the answer up to `limit` bytes, b"" if the server hung up."""
    u = urlparse(t.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        try:
            s.sendall(request)
            out = b""
            while len(out) < limit and (chunk := s.recv(65536)):
                out += chunk
        except ConnectionResetError:
            return b""
    return out


def raw_status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


def raw_head(t: Target, path: str, extra: bytes = b"") -> tuple[int, bytes]:
    """HEAD over a raw socket (httpx never reads a HEAD body): the status and whatever
    followed the headers before the server closed, which must be nothing."""
    answer = raw(
        t,
        b"HEAD " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer " + t.token.encode() + b"\r\n" + extra + b"\r\n",
    )
    return raw_status(answer), answer.partition(b"\r\n\r\n")[2]


def dl_path(ft_id: str, rest: str = "&checkpoint=model_output_path") -> str:
    return f"/v1/finetune/download?ft_id={ft_id}{rest}"


# -- other organizations' ids: exactly like unknown ones ------------------------------------

FT_ROUTES = [
    ("GET", "/v1/fine-tunes/{id}", None),
    ("GET", "/v1/fine-tunes/{id}/events", None),
    ("GET", "/v1/fine-tunes/{id}/checkpoints", None),
    ("GET", "/v1/fine-tunes/{id}/metrics", None),
    ("DELETE", "/v1/fine-tunes/{id}", None),
    ("POST", "/v1/fine-tunes/{id}/cancel", None),
    ("POST", "/v1/publish/fine-tunes/{id}/checkpoints", {"step": 1, "kind": "adapter"}),
    ("POST", "/v1/publish/fine-tunes/{id}/events", {"events": [{"type": "X"}]}),
    ("POST", "/v1/publish/fine-tunes/{id}/metrics", {"metrics": [{"step": 1}]}),
    ("POST", "/v1/publish/fine-tunes/{id}/status", {"status": "error"}),
]


@pytest.mark.parametrize(("method", "route", "body"), FT_ROUTES)
def test_foreign_ids_answer_like_unknown_ones(
    target: Target, method: str, route: str, body: Any
) -> None:
    foreign = target.foreign_ft_ids[0]
    e1 = envelope(
        call(target, method, route.format(id=foreign), json=body), 404, "fine_tune_not_found"
    )
    e2 = envelope(
        call(target, method, route.format(id=UNKNOWN), json=body), 404, "fine_tune_not_found"
    )
    assert e1["message"].replace(foreign, "X") == e2["message"].replace(UNKNOWN, "X")
    assert e1["param"] == e2["param"]
    # The owner still sees it untouched (DELETE and status above were refused).
    r = call(target, "GET", f"/v1/fine-tunes/{foreign}", token=target.other_token)
    assert r.status_code == 200 and r.json()["status"] == "completed"


def test_foreign_ids_on_the_download_route(target: Target) -> None:
    foreign = target.foreign_ft_ids[0]
    for rest in ("&checkpoint=merged", "&checkpoint_step=10", ":10"):
        e1 = envelope(call(target, "GET", dl_path(foreign, rest)), 404, "fine_tune_not_found")
        e2 = envelope(call(target, "GET", dl_path(UNKNOWN, rest)), 404, "fine_tune_not_found")
        assert e1["message"].replace(foreign, "X") == e2["message"].replace(UNKNOWN, "X")
    assert raw_head(target, dl_path(foreign, "&checkpoint=merged")) == (404, b"")


# -- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer  ",
        "Basic x",
        "bearer\tx",
        "Token tv_0000000000000000_aaaaaaaaaaaaaaaaaaaa",
        "Bearer " + "A" * 8_000,  # 10 KB is past aiohttp's header limit: see HTTP_LIMITS
        "Bearer tv_0000000000000000_aaaaaaaaaaaaaaaaaaaa",  # well-formed, unknown id
        "Bearer tv_0000000000000000_aaaaaaaaaaaaaaaaaaaa' OR '1'='1",
    ],
)
def test_malformed_and_unknown_keys(target: Target, header: str) -> None:
    # Raw: httpx refuses to send a header value with trailing whitespace.
    answer = raw(
        target,
        b"GET /v1/fine-tunes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: " + header.encode() + b"\r\n\r\n",
    )
    assert raw_status(answer) == 401, answer[:300]
    assert b'"code": "invalid_api_key"' in answer
    assert b"WWW-Authenticate: Bearer" in answer


def test_revoked_key_and_wrong_secret(target: Target) -> None:
    key_id = target.token.split("_")[1]
    wrong = f"tv_{key_id}_{'x' * 40}"  # a real key id with another secret
    for token in (target.revoked_token, wrong, target.token + "x", target.token.upper()):
        for method, path in (("GET", "/v1/fine-tunes"), ("GET", dl_path(target.ft_ids[0]))):
            envelope(call(target, method, path, token=token), 401, "invalid_api_key")


def test_non_ascii_and_non_utf8_keys(target: Target) -> None:
    for key in ("tv_é".encode(), b"tv_\xff\xfe", "Bearer \u202etv_".encode()):
        answer = raw(
            target,
            b"GET /v1/fine-tunes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer " + key + b"\r\n\r\n",
        )
        assert raw_status(answer) == 401, answer[:200]
        assert b'"code": "invalid_api_key"' in answer


def test_scopes(target: Target) -> None:
    ft = target.ft_ids[0]
    r = call(target, "POST", f"/v1/fine-tunes/{ft}/cancel", token=target.read_token)
    envelope(r, 403, "insufficient_scope")
    r = call(target, "GET", "/metrics", token=target.token)
    envelope(r, 403, "insufficient_scope")


# -- ids with path characters, SQL, NUL ------------------------------------------------------

HOSTILE_IDS = [
    "ft-..%2F..%2Fetc",
    "ft-%2e%2e",
    "%2e%2e",
    "ft-1;DROP TABLE fine_tunes",
    "ft-1' OR '1'='1",
    "ft-%00",
    "ft-%00" + "a" * 10,
    "ft-" + "a" * 5000,
    "ft-%ED%A0%80",  # an encoded lone surrogate
    "ft-%FF",
    UNKNOWN.upper(),
]


@pytest.mark.parametrize("ft_id", HOSTILE_IDS)
@pytest.mark.parametrize(("method", "route", "body"), FT_ROUTES[:6])
def test_hostile_ids_in_the_path_are_unknown(
    target: Target, ft_id: str, method: str, route: str, body: Any
) -> None:
    r = call(target, method, route.format(id=ft_id), json=body)
    envelope(r, 404, "fine_tune_not_found")


@pytest.mark.parametrize(
    "ft_id", [*HOSTILE_IDS, "ft-../../etc", "ft-1%0Ax", "ft-%20" + UNKNOWN[3:]]
)
def test_hostile_ids_in_the_download_query(target: Target, ft_id: str) -> None:
    err = envelope(call(target, "GET", dl_path(ft_id)), 400, "invalid_request")
    assert err["param"] == "ft_id"


def test_path_traversal_in_blob_names(target: Target) -> None:
    for name in (
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "0" * 63 + "%00",
        "0" * 64 + "%2F..",
        "0" * 64 + "%0A",  # a regex's $ matches before a trailing newline
    ):
        status, body = raw_head(target, f"/v1/publish/blobs/{name}")
        assert status in (400, 404) and body == b""
        r = call(target, "PUT", f"/v1/publish/blobs/{name}", headers={"Upload-Length": "1"})
        assert r.status_code in (400, 404)
        envelope(r, r.status_code, "invalid_request" if r.status_code == 400 else "not_found")


# -- steps and parameters ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rest", "param"),
    [
        ("&checkpoint_step=-1", "checkpoint_step"),
        ("&checkpoint_step=2147483648", "checkpoint_step"),
        ("&checkpoint_step=" + "9" * 5000, "checkpoint_step"),
        ("&checkpoint_step=%EF%BC%95", "checkpoint_step"),  # a fullwidth 5
        ("&checkpoint_step=0x5", "checkpoint_step"),
        (":-1", "ft_id"),
        (":" + "9" * 5000, "ft_id"),
        (":5&checkpoint_step=6", "checkpoint_step"),
        ("&checkpoint_step=5&checkpoint_step=6", "checkpoint_step"),
        ("&checkpoint=adapter&checkpoint=merged", "checkpoint"),
        ("&checkpoint=merged%00", "checkpoint"),
    ],
)
def test_bad_steps_and_conflicting_parameters(target: Target, rest: str, param: str) -> None:
    err = envelope(call(target, "GET", dl_path(target.ft_ids[0], rest)), 400, "invalid_request")
    assert err["param"] == param


def test_repeated_ids_with_different_values(target: Target) -> None:
    path = dl_path(target.ft_ids[0], f"&ft_id={UNKNOWN}&checkpoint=model_output_path")
    assert envelope(call(target, "GET", path), 400, "invalid_request")["param"] == "ft_id"
    # The same value twice is one value.
    path = dl_path(target.ft_ids[0], f"&ft_id={target.ft_ids[0]}&checkpoint=model_output_path")
    assert call(target, "GET", path, headers={"Range": "bytes=0-0"}).status_code == 206


def test_huge_steps_in_metrics_filters(target: Target) -> None:
    ft = target.ft_ids[0]
    for q in ("global_step_from=-1", "global_step_to=" + "9" * 5000, "global_step_from=x"):
        r = call(target, "GET", f"/v1/fine-tunes/{ft}/metrics?{q}")
        envelope(r, 400, "invalid_request")
    # Checked before the fine-tune is looked up.
    r = call(target, "GET", f"/v1/fine-tunes/{UNKNOWN}/metrics?global_step_to=x")
    assert envelope(r, 400, "invalid_request")["param"] == "global_step_to"


# -- bodies ---------------------------------------------------------------------------------


def test_oversized_json_body_is_413(target: Target) -> None:
    body = b'{"sha256": [' + b'"' + b"0" * 64 + b'",' * 1 + b" " * (33 << 20) + b"]}"
    r = call(target, "POST", "/v1/publish/blobs/check", content=body)
    envelope(r, 413, "payload_too_large")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # was a 500: RecursionError
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"a":' * 900 + b'"\\u0000"' + b"}" * 900,  # parses; the NUL is 900 levels down
        b'{"model": "\\ud800", "model_output_name": "x", "training_type": {"type": "Full"}}',
        b'{"model": "m\\u0000", "model_output_name": "x", "training_type": {"type": "Full"}}',
        b"\xff\xfe{}",
        b'{"model": 1e999999}',
        b'{"a": ' + b"1" * 5000 + b"}",
        b"",
        b"null",
    ],
)
def test_json_bodies_that_no_database_stores_are_400(target: Target, body: bytes) -> None:
    r = call(target, "POST", "/v1/publish/fine-tunes", content=body)
    envelope(r, 400, "invalid_request")


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("events", {"events": [{"type": "X", "message": "a\u0000b"}]}),  # was a 500 on PostgreSQL
        ("events", {"events": [{"type": "X", "message": "\ud800"}]}),  # was a 500
        ("metrics", {"metrics": [{"step": 1, "a\u0000": 1.0}]}),
        ("metrics", {"metrics": [{"step": 1, "\udfff": 1.0}]}),
        ("metrics", {"metrics": [{"step": 1, "loss": 10**399}]}),  # was a 500: OverflowError
        ("metrics", {"metrics": [{"step": 1, "loss": -(10**399)}]}),
    ],
)
def test_unstorable_strings_in_publish_bodies(target: Target, route: str, body: Any) -> None:
    text = json.dumps(body).encode()  # ASCII: lone surrogates and NUL travel as \u escapes
    r = call(
        target,
        "POST",
        f"/v1/publish/fine-tunes/{target.ft_ids[0]}/{route}",
        content=text,
        headers={"Content-Type": "application/json"},
    )
    envelope(r, 400, "invalid_request")


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [  # each once accepted: re.match with `$` matches before a final newline
        (
            "",
            {"model": "m\n", "model_output_name": "x", "training_type": {"type": "Full"}},
            "model",
        ),
        ("events", {"events": [{"type": "X\n"}]}, "events"),
        ("events", {"events": [{"type": "X", "id": "r1\n"}]}, "events"),
        (
            "checkpoints",
            {
                "step": 1,
                "kind": "model_output_path",
                "files": [{"path": "a", "size": 1, "sha256": "0" * 64 + "\n"}],
            },
            None,
        ),
    ],
)
def test_a_final_newline_is_not_part_of_a_name(
    target: Target, route: str, body: Any, param: str | None
) -> None:
    path = (
        f"/v1/publish/fine-tunes/{target.ft_ids[0]}/{route}" if route else "/v1/publish/fine-tunes"
    )
    r = call(target, "POST", path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_backslash_then_u0000_is_text_not_nul(target: Target) -> None:
    # A backslash, then "u0000" (on the wire "C:\\u0000x"): text any database stores, once
    # refused as a NUL.
    message = "C:\\u0000x"
    ft = target.ft_ids[0]
    events = {"events": [{"type": "X", "message": message}]}
    r = call(target, "POST", f"/v1/publish/fine-tunes/{ft}/events", json=events)
    assert r.status_code == 201, r.text
    listed = call(target, "GET", f"/v1/fine-tunes/{ft}/events").json()["data"]
    assert message in [e["message"] for e in listed]


def test_suffix_longer_than_its_column_is_400(target: Target) -> None:
    # Was a 500 on PostgreSQL: the column holds 100 characters, the API took 300.
    body = {"model": "m", "model_output_name": "x", "training_type": {"type": "Full"}}
    r = call(target, "POST", "/v1/publish/fine-tunes", json={**body, "suffix": "s" * 101})
    assert envelope(r, 400, "invalid_request")["param"] == "suffix"
    r = call(target, "POST", "/v1/publish/fine-tunes", json={**body, "suffix": "s" * 100})
    assert r.status_code == 201


def test_lying_uploads(target: Target) -> None:
    data = b"the bytes"
    digest = hashlib.sha256(data).hexdigest()
    path = f"/v1/publish/blobs/{digest}"
    # Upload-Length shorter than the body, and absurd or negative lengths and offsets.
    for headers in (
        {"Upload-Length": "3"},
        {"Upload-Length": "-1"},
        {"Upload-Length": "9" * 5000},
        {"Upload-Length": str(1 << 41)},
        {"Upload-Length": "9", "Upload-Offset": "-5"},
        {"Upload-Length": "٩".encode()},  # an Arabic-Indic 9
    ):
        envelope(call(target, "PUT", path, content=data, headers=headers), 400, "invalid_request")
    # An offset past what is kept.
    r = call(
        target, "PUT", path, content=data, headers={"Upload-Length": "9", "Upload-Offset": "4"}
    )
    envelope(r, 409, "upload_offset_mismatch")
    assert r.headers["upload-offset"] == "0"
    # Bytes of another digest: nothing kept.
    r = call(
        target, "PUT", f"/v1/publish/blobs/{'1' * 64}", content=data, headers={"Upload-Length": "9"}
    )
    envelope(r, 400, "digest_mismatch")
    r = call(target, "HEAD", f"/v1/publish/blobs/{'1' * 64}")
    assert r.status_code == 404 and r.headers["upload-offset"] == "0"


@pytest.mark.parametrize(
    "path",
    [
        "a/",
        ".",
        "a/./b",
        "a\u0000b",
        "x" * 1001,
        "\ud800",  # was a 500: path.encode() raised
    ],
)
def test_manifest_paths(target: Target, path: str) -> None:
    body = {
        "step": 1,
        "kind": "model_output_path",
        "files": [{"path": path, "size": 1, "sha256": "0" * 64}],
    }
    text = json.dumps(body).encode()  # ASCII: lone surrogates and NUL travel as \u escapes
    r = call(
        target,
        "POST",
        f"/v1/publish/fine-tunes/{target.ft_ids[0]}/checkpoints",
        content=text,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] in ("invalid_manifest", "invalid_request")


@pytest.mark.parametrize("path", ["a/" + "x" * 256, "\u00e9" * 128 + "/b", "x" * 300])
def test_path_components_over_255_bytes_are_refused(target: Target, path: str) -> None:
    # Were accepted: the archive then failed to extract with ENAMETOOLONG.
    body = {"step": 1, "kind": "adapter", "files": [{"path": path, "size": 1, "sha256": "0" * 64}]}
    r = call(target, "POST", f"/v1/publish/fine-tunes/{target.ft_ids[0]}/checkpoints", json=body)
    assert "longer than 255 bytes" in envelope(r, 400, "invalid_manifest")["message"]


@pytest.mark.parametrize(
    "twins",
    [
        ("caf\u00e9.json", "cafe\u0301.json"),  # NFC and NFD: one name on APFS
        ("d/caf\u00e9/x", "d/cafe\u0301/x"),
        ("Caf\u00e9", "cafe\u0301"),  # case and normalization together
    ],
)
def test_manifest_twins_are_refused_and_nothing_stored(
    target: Target, twins: tuple[str, str]
) -> None:
    assert unicodedata.normalize("NFC", twins[1]).casefold() == twins[0].casefold()
    ft = target.ft_ids[0]
    files = [{"path": p, "size": 1, "sha256": "0" * 64} for p in twins]
    body = {"step": 77, "kind": "adapter", "files": files}
    r = call(target, "POST", f"/v1/publish/fine-tunes/{ft}/checkpoints", json=body)
    assert "normalization" in envelope(r, 400, "invalid_manifest")["message"]
    listed = call(target, "GET", f"/v1/fine-tunes/{ft}/checkpoints").json()["data"]
    assert 77 not in [c["step"] for c in listed]


def test_name_of_255_bytes_passes_the_manifest_check(target: Target) -> None:
    # Refused later only because no such blob was uploaded: the path itself is fine.
    body = {
        "step": 1,
        "kind": "model_output_path",
        "files": [{"path": "a/" + "x" * 255, "size": 1, "sha256": "0" * 64}],
    }
    r = call(target, "POST", f"/v1/publish/fine-tunes/{target.ft_ids[0]}/checkpoints", json=body)
    assert "255" not in envelope(r, 400, r.json()["error"]["code"])["message"]


# -- methods, HEAD, ranges ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/fine-tunes", "GET"),
        ("POST", "/v1/finetune/download", "GET"),
        ("PATCH", "/v1/fine-tunes/" + UNKNOWN, "DELETE"),
        ("DELETE", "/v1/publish/blobs/" + "0" * 64, "PUT"),
        ("TRACE", "/v3/whoami", "GET"),
        ("PROPFIND", "/v1/fine-tunes", "GET"),
    ],
)
def test_methods_not_allowed(target: Target, method: str, path: str, allow: str) -> None:
    r = call(target, method, path)
    envelope(r, 405, "method_not_allowed")
    assert allow in r.headers["allow"]


def test_head_on_the_download_route(target: Target) -> None:
    path = dl_path(target.ft_ids[0])
    get = call(target, "GET", path, headers={"Range": "bytes=0-0"})
    size = int(get.headers["content-range"].rsplit("/", 1)[1])
    r = call(target, "HEAD", path)
    assert r.status_code == 200
    assert r.headers["content-length"] == str(size) and r.headers["etag"] == get.headers["etag"]
    assert raw_head(target, path) == (200, b"")
    r = call(target, "HEAD", path, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.headers["content-length"] == "10"
    assert raw_head(target, path, b"Range: bytes=10-19\r\n") == (206, b"")
    assert raw_head(target, path, f"Range: bytes={size}-\r\n".encode()) == (416, b"")


@pytest.mark.parametrize(
    "value",
    [
        "bytes=" + ",".join(["0-0"] * 1000),
        "bytes=" + "9" * 5000 + "-",  # was a 500: int() over 4300 digits
        "bytes=0-" + "9" * 5000,
        "bytes=-" + "9" * 5000,
        "bytes=-1-2",
        "bytes=5--6",
        "bytes=--1",
        "bytes=99999999999999999999-",
        "bytes=0-1, 5-x",
        "bytes=0-1;2-3",
        "bits=0-1",
        "bytes=\u0660-\u0661",
        "bytes" + "=" * 1000,
    ],
)
def test_range_abuse(target: Target, value: str) -> None:
    r = call(target, "GET", dl_path(target.ft_ids[0]), headers={"Range": value.encode()})
    envelope(r, 416, "range_not_satisfiable")
    assert r.headers["content-range"].startswith("bytes */")


def test_far_apart_ranges_answer_200_with_the_whole_body(target: Target) -> None:
    # Was a 206 with the whole file under Content-Range 0-LAST. RFC 9110 lets a server
    # ignore Range (200) and keeps 416 for unsatisfiable or excessive ranges.
    path = dl_path(target.ft_ids[0])
    size = int(call(target, "HEAD", path).headers["content-length"])
    for value in (f"bytes=0-0,{size - 1}-{size - 1}", "bytes=-1,0-0", "bytes=0-0,1000-1000"):
        r = call(target, "GET", path, headers={"Range": value})
        assert r.status_code == 200 and "content-range" not in r.headers, value
        assert len(r.content) == size
    # Close together: one span that covers both, as before.
    r = call(target, "GET", path, headers={"Range": "bytes=0-0,40-49"})
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes 0-49/{size}"


def test_huge_ranges_within_limits_still_answer_206(target: Target) -> None:
    path = dl_path(target.ft_ids[0])
    r = call(target, "GET", path, headers={"Range": "bytes=0-" + "9" * 30})
    assert r.status_code == 206  # RFC 9110: a last position past the end means the end
    r = call(target, "GET", path, headers={"Range": "bytes=" + ",".join(["0-0"] * 100)})
    assert r.status_code == 206 and len(r.content) == 1  # coalesced into one span
    assert r.headers["content-range"].startswith("bytes 0-0/")


# -- limits of the HTTP layer ---------------------------------------------------------------


def _head_request(t: Target, extra: bytes, target_path: bytes = b"/v1/fine-tunes") -> bytes:
    return (
        b"GET " + target_path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer " + t.token.encode() + b"\r\n" + extra + b"\r\n"
    )


HTTP_LIMITS = {
    "one huge header": b"X-Big: " + b"a" * 20_000 + b"\r\n",
    "many headers": b"".join(b"X-H%d: v\r\n" % i for i in range(500)),
    "huge cookie": b"Cookie: " + b"a=b; " * 5000 + b"\r\n",
    "10 KB token": b"Authorization: Bearer " + b"A" * 10_000 + b"\r\n",
}


@pytest.mark.parametrize("case", sorted(HTTP_LIMITS))
def test_oversized_headers_never_5xx(target: Target, case: str) -> None:
    answer = raw(target, _head_request(target, HTTP_LIMITS[case]))
    assert raw_status(answer) in (0, 400, 431), answer[:200]


def test_very_long_urls_never_5xx(target: Target) -> None:
    for n in (8_000, 20_000, 100_000):
        path = dl_path(target.ft_ids[0], "&x=" + "a" * n).encode()
        answer = raw(target, _head_request(target, b"", path))
        assert raw_status(answer) in (0, 400, 414, 431), answer[:200]


# aiohttp's parser refuses these before our code runs; they still answer our envelope.
PARSER_ERRORS = {
    "one huge header": (HTTP_LIMITS["one huge header"], 431, "headers_too_large"),
    "10 KB token": (HTTP_LIMITS["10 KB token"], 431, "headers_too_large"),
    "101 headers": (
        b"".join(b"X-H%d: v\r\n" % i for i in range(101)),
        400,
        "malformed_request",
    ),
    "NUL in a header": (b"X-Bad: a\x00b\r\n", 400, "malformed_request"),
    "letters in Content-Length": (b"Content-Length: 12abc\r\n", 400, "malformed_request"),
    "negative Content-Length": (b"Content-Length: -1\r\n", 400, "malformed_request"),
    "two Content-Lengths": (
        b"Content-Length: 1\r\nContent-Length: 2\r\n",
        400,
        "malformed_request",
    ),
}


def _server_log(t: Target) -> Path:
    return t.server.data_dir / f"server-{urlparse(t.url).port}.log"


def _answer_envelope(answer: bytes, status: int, code: str) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert raw_status(answer) == status, answer[:300]
    assert b"Content-Type: application/json" in head, head
    err = json.loads(body)["error"]
    assert err["code"] == code and err["message"], err


@pytest.mark.parametrize("case", sorted(PARSER_ERRORS))
def test_parser_errors_answer_our_envelope_and_log_no_error(target: Target, case: str) -> None:
    extra, status, code = PARSER_ERRORS[case]
    before = _server_log(target).stat().st_size
    _answer_envelope(raw(target, _head_request(target, extra)), status, code)
    with _server_log(target).open("rb") as f:
        f.seek(before)
        logged = f.read()
    assert b"Traceback" not in logged and b'"level": "error"' not in logged, logged[:500]


def test_over_long_request_line_answers_our_envelope(target: Target) -> None:
    path = dl_path(target.ft_ids[0], "&x=" + "a" * 20_000).encode()
    _answer_envelope(raw(target, _head_request(target, b"", path)), 431, "headers_too_large")


@pytest.mark.parametrize(
    ("method", "path", "length"),
    [
        ("POST", "/v1/publish/fine-tunes", 10**12),
        ("POST", "/v1/publish/blobs/check", (32 << 20) + 1),
        ("GET", "/v1/fine-tunes", 10**12),
        ("PUT", "/v1/publish/blobs/" + "0" * 64, (1 << 40) + 1),
    ],
)
def test_declared_bodies_past_the_limit_are_413_at_once(
    target: Target, method: str, path: str, length: int
) -> None:
    # No body follows: the answer must not wait for it (the socket's timeout would fail this).
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {target.token}\r\n"
        f"Content-Type: application/json\r\nUpload-Length: 1\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    u = urlparse(target.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(request)
        answer = s.recv(65536)
    _answer_envelope(answer, 413, "payload_too_large")


# -- dropped connections --------------------------------------------------------------------


def test_dropped_downloads_free_their_slots_and_others_are_served(target: Target) -> None:
    path = dl_path(target.ft_ids[0]).encode()
    request = (
        b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + target.token.encode() + b"\r\n\r\n"
    )
    u = urlparse(target.url)
    # More than the per-key download slots (32 by default): a leaked slot would show.
    for _ in range(40):
        with socket.create_connection((u.hostname, u.port), timeout=30) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(request)
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            # Close with unread data: the kernel answers with a reset, mid-body.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    r = call(target, "GET", path.decode())
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == r.headers["etag"].strip('"')
    assert call(target, "GET", "/v1/fine-tunes").status_code == 200


def test_dropped_uploads_keep_what_arrived_and_refuse_nothing_else(target: Target) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256(data).hexdigest()
    u = urlparse(target.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(
            f"PUT /v1/publish/blobs/{digest} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {target.token}\r\nUpload-Length: {len(data)}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[: len(data) // 2]
        )
    r = call(target, "GET", "/v1/fine-tunes")
    assert r.status_code == 200
    # The server may still be reaping the dropped request: 409 conflict, then the offset.
    for _ in range(100):
        head = call(target, "HEAD", f"/v1/publish/blobs/{digest}")
        offset = int(head.headers.get("upload-offset", "-1"))
        r = call(
            target,
            "PUT",
            f"/v1/publish/blobs/{digest}",
            content=data[offset:],
            headers={"Upload-Length": str(len(data)), "Upload-Offset": str(offset)},
        )
        if r.status_code != 409:
            break
    assert r.status_code == 201, r.text


# -- audit ----------------------------------------------------------------------------------


def test_downloads_with_binary_user_agents_are_audited(target: Target) -> None:
    path = dl_path(target.ft_ids[0]).encode()
    answer = raw(
        target,
        b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nRange: bytes=0-0\r\n"
        b"Authorization: Bearer " + target.token.encode() + b"\r\nUser-Agent: evil\xff\xfe\r\n\r\n",
    )
    assert raw_status(answer) == 206
    for _ in range(50):  # the audit is written in batches, off the request path
        rows = call(target, "GET", "/v1/admin/audit/downloads", token=target.admin_token)
        if any("evil" in (row["user_agent"] or "") for row in rows.json()["data"]):
            return
        time.sleep(0.1)
    raise AssertionError("the download was not audited")


def test_dropped_downloads_are_audited_with_their_range(target: Target) -> None:
    path = dl_path(target.ft_ids[0])
    size = int(call(target, "HEAD", path).headers["content-length"])
    # Not above SNDBUF: the server keeps its default send buffer, which holds far less.
    start = size - SNDBUF
    agent = f"dropper-{time.time_ns()}"
    u = urlparse(target.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes={start}-\r\n"
            f"User-Agent: {agent}\r\nAuthorization: Bearer {target.token}\r\n\r\n".encode()
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 206")
        # Close with unread data: the kernel answers with a reset, mid-body.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    for _ in range(50):  # the audit is written in batches, off the request path
        rows = call(target, "GET", "/v1/admin/audit/downloads", token=target.admin_token)
        mine = [row for row in rows.json()["data"] if row["user_agent"] == agent]
        if mine:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the dropped download was not audited")
    assert mine[0]["status"] == 499
    assert mine[0]["range_start"] == start and mine[0]["bytes_planned"] == size - start
