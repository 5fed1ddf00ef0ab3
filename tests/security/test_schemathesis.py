"""Schemathesis against the live server's OpenAPI document: every operation, generated input.

Checks on every response: no 5xx, the status code is documented for the operation, JSON
bodies match the documented schema and content type, and every 4xx/5xx body is Together's
envelope with a string code. Generation is derandomized and bounded (examples, coverage and
fuzzing phases; no stateful phase, the document declares no links), so a run is
reproducible and short.

The cases are collected from the packaged document (collection needs no server);
`test_served_document_is_the_one_fuzzed` proves the live /openapi.json is that document.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from tests.security.conftest import Target
from tunevault.server.app import openapi_document

MAX_EXAMPLES = 30
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20240607,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
    }
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)
# Filled from the `target` fixture before generation starts: real ids of both tenants.
_IDS: dict[str, tuple[str, ...]] = {"own": (), "foreign": ()}


def _ft_ids(generated: Any, *, own: bool = True) -> st.SearchStrategy[Any]:
    """The generated id, or a real one: ours (reaches 200 paths) or another tenant's (404)."""
    ours = _IDS["own"] if own else ()
    return st.sampled_from([generated, *ours, *ours, *_IDS["foreign"]])


def _hub_repos(params: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Hub routes: real repos too, at a real revision and file (fuzz's holds config.json)."""
    real = {"revision": "main", "path": "config.json"}
    tails = st.sampled_from([{}, {k: v for k, v in real.items() if k in params}])
    return st.tuples(_ft_ids(params["repo_id"]), tails).map(
        lambda t: {**params, "repo_id": t[0], **t[1]}
    )


@schema.hook
def flatmap_path_parameters(ctx: Any, path_parameters: dict[str, Any] | None) -> Any:
    if isinstance(path_parameters, dict) and "repo_id" in path_parameters:
        return _hub_repos(path_parameters)
    if not isinstance(path_parameters, dict) or "ft_id" not in path_parameters:
        return st.just(path_parameters)
    # Deleting our own fine-tune would turn every later operation into a 404 run.
    own = ctx.operation.method.upper() != "DELETE"
    return _ft_ids(path_parameters["ft_id"], own=own).map(
        lambda ft_id: {**path_parameters, "ft_id": ft_id}
    )


@schema.hook
def flatmap_query(ctx: Any, query: dict[str, Any] | None) -> Any:
    if not isinstance(query, dict) or not isinstance(query.get("ft_id"), str):
        return st.just(query)
    # Real ids alone rarely meet a real step or kind: also ask for the archives that exist.
    real = [{"ft_id": i, "checkpoint": "model_output_path"} for i in _IDS["own"]]
    real += [{"ft_id": f"{i}:5"} for i in _IDS["own"]]
    ids = _ft_ids(query["ft_id"]).map(lambda ft_id: {**query, "ft_id": ft_id})
    return st.one_of(ids, st.sampled_from(real).map(lambda q: {**query, **q}))


@pytest.fixture(scope="session")
def live(target: Target) -> Target:
    _IDS.update(own=target.ft_ids, foreign=target.foreign_ft_ids)
    return target


def test_served_document_is_the_one_fuzzed(target: Target) -> None:
    r = httpx.get(f"{target.url}/openapi.json", headers=target.auth)
    assert r.status_code == 200 and r.json() == openapi_document()


@schema.parametrize()
def test_every_operation(case: schemathesis.Case, live: Target) -> None:
    response = case.call(base_url=live.url, headers=live.auth, timeout=30)
    case.validate_response(response, checks=CHECKS)
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, body
    assert isinstance(err["code"], str) and err["code"], body
    assert isinstance(err["message"], str) and isinstance(err["type"], str), body
    assert err["param"] is None or isinstance(err["param"], str), body
