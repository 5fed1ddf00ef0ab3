"""Download query parsing: every client dialect of COMPAT.md, and hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunevault.errors import InvalidRequest
from tunevault.server.query import DownloadQuery, parse_download_query

FT = "ft-0123abcd-4567-89ef-0123-456789abcdef"


def q(**params: str | list[str]) -> DownloadQuery:
    return parse_download_query({k: v if isinstance(v, list) else [v] for k, v in params.items()})


def test_dialects() -> None:
    assert q(ft_id=FT, checkpoint="merged") == DownloadQuery(FT, None, "merged")
    assert q(ft_id=FT, checkpoint="modelOutputPath").checkpoint == "model_output_path"
    assert q(ft_id=FT, checkpoint="default").checkpoint == "default"
    # The step wins over checkpoint, which the 3.x CLI always sends along.
    assert q(ft_id=FT, checkpoint="merged", checkpoint_step="20") == DownloadQuery(FT, 20, None)
    assert q(ft_id=f"{FT}:7") == DownloadQuery(FT, 7, None)
    assert q(ft_id=f"{FT}:7", checkpoint_step="7").step == 7
    assert q(ft_id=FT, checkpoint=["adapter", "adapter"]).checkpoint == "adapter"
    assert q(ft_id=FT, checkpoint="bogus", checkpoint_step="3").step == 3


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "ft_id"),
        ({"ft_id": "abc"}, "ft_id"),
        ({"ft_id": "ft-../../etc/passwd", "checkpoint": "merged"}, "ft_id"),
        ({"ft_id": "ft-1' OR '1'='1", "checkpoint": "merged"}, "ft_id"),
        ({"ft_id": FT}, "checkpoint"),
        ({"ft_id": FT, "checkpoint": "bogus"}, "checkpoint"),
        ({"ft_id": FT, "checkpoint_step": "-1"}, "checkpoint_step"),
        ({"ft_id": FT, "checkpoint_step": "99999999999"}, "checkpoint_step"),
        ({"ft_id": FT, "checkpoint_step": "1e3"}, "checkpoint_step"),
        ({"ft_id": f"{FT}:x"}, "ft_id"),
        ({"ft_id": f"{FT}:3", "checkpoint_step": "4"}, "checkpoint_step"),
        ({"ft_id": FT, "checkpoint": ["merged", "adapter"]}, "checkpoint"),
        ({"ft_id": [FT, FT.replace("0", "1")], "checkpoint": "merged"}, "ft_id"),
    ],
)
def test_refusals_name_the_parameter(params: dict[str, str | list[str]], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        q(**params)
    assert e.value.param == param and e.value.status == 400


def test_missing_checkpoint_names_the_allowed_values() -> None:
    with pytest.raises(InvalidRequest, match="merged, adapter, model_output_path"):
        q(ft_id=FT)


@given(
    st.dictionaries(
        st.sampled_from(["ft_id", "checkpoint", "checkpoint_step", "merged_step", "x"]),
        st.lists(st.text(max_size=60), max_size=3),
    )
)
def test_arbitrary_queries_parse_or_refuse_with_400(params: dict[str, list[str]]) -> None:
    try:
        got = parse_download_query(params)
    except InvalidRequest as e:
        assert e.status == 400
        assert e.param in ("ft_id", "checkpoint", "checkpoint_step", "merged_step")
        return
    assert got.ft_id.startswith("ft-")
    assert (got.step is None) != (got.checkpoint is None)


def test_merged_step_is_a_merged_model_of_that_step_and_nothing_else() -> None:
    assert q(ft_id=FT, checkpoint="merged", merged_step="4") == DownloadQuery(FT, None, "merged", 4)
    assert q(ft_id=FT, checkpoint="merged").merged_step is None
    for params in (
        {"ft_id": FT, "merged_step": "4"},  # the kind is not implied
        {"ft_id": FT, "checkpoint": "adapter", "merged_step": "4"},
        {"ft_id": FT, "checkpoint": "merged", "checkpoint_step": "4", "merged_step": "4"},
        {"ft_id": f"{FT}:4", "checkpoint": "merged", "merged_step": "4"},
        {"ft_id": FT, "checkpoint": "merged", "merged_step": "four"},
    ):
        with pytest.raises(InvalidRequest) as refused:
            q(**params)
        assert refused.value.param == "merged_step"
