"""Look-alike places: a map holding fountain-P11 twice must never answer OK in the wrong copy.

The db split goes in twice (``bench.look_alike``): copy 0 at the stored poses, copy 1 (the same
images) turned 90 degrees about the vertical and moved 100 m. Every query matches both copies
equally, so without a prior the answer must be LOW_CONFIDENCE "ambiguous" naming both poses, and
with a prior in either copy it must be OK in that copy. Before ``places`` existed, 5 of the 12
answers at this size were OK in the wrong copy; with the place search off they still are. The
relative-pose fallback (a map without points) mixed both copies into poses 67-81 m off, OK.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.look_alike import copy_transform, run_look_alike
from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.geometry import pose_error
from reloc_vggt_ros.localizer.geometric.config import AcceptanceSettings
from reloc_vggt_ros.localizer.geometric.judge import choose_place

FOUNTAIN = Path(__file__).parents[2] / ".." / "shared" / "data" / "fountain-P11"
SIZE = (768, 512)
NO_POINTS = {"map": {"triangulation": {"max_view_angle_deg": 1e-3}}}    # no neighbours: relative fallback


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("look-alike") / "two.db"


@pytest.fixture(scope="module")
def table(db_path: Path) -> dict[str, Any]:
    return run_look_alike(FOUNTAIN, SIZE, options={"preset": "realtime"}, db_path=db_path)


def test_no_prior_is_ambiguous_and_names_both_copies(table: dict[str, Any]) -> None:
    D = copy_transform(read_posed_folder(FOUNTAIN, "db"), 100.0, 90.0)
    queries = {q.name: q for q in read_posed_folder(FOUNTAIN, "query")}
    rows = [r for r in table["per_query"] if r["prior"] is None]
    assert len(rows) == 4
    for r in rows:
        assert r["status"] == "low_confidence" and r["reason"].startswith("ambiguous: 2 look-alike places"), r
        assert "no pose prior" in r["reason"]
        gts = [queries[r["name"]].T_world_cam, D @ queries[r["name"]].T_world_cam]
        # the two candidate poses (world frame): one in each copy, each at that copy's ground truth
        copies = []
        for p in r["places"]:
            errs = [pose_error(np.array(p["T_world_cam"]), gt) for gt in gts]
            c = int(np.argmin([e[0] for e in errs]))
            assert errs[c][0] < 0.05 and errs[c][1] < 1.0, (r["name"], errs)
            copies.append(c)
        assert sorted(copies) == [0, 1], r


def test_a_prior_picks_its_copy(table: dict[str, Any]) -> None:
    rows = [r for r in table["per_query"] if r["prior"] is not None]
    assert len(rows) == 8
    for r in rows:
        assert r["status"] == "ok" and r["copy"] == r["prior"], r
        assert r["t_err_m"] < 0.05 and r["r_err_deg"] < 1.0, r
    assert table["n_ok_but_wrong"] == 0


def test_without_the_place_search_answers_are_ok_in_the_wrong_copy(table: dict[str, Any], db_path: Path) -> None:
    """The tests above can fail: with the search off the same map publishes wrong copies."""
    off = run_look_alike(FOUNTAIN, SIZE, options={"preset": "realtime", "acceptance": {"place_radius": 0.0}},
                         db_path=db_path)
    assert off["n_ok_but_wrong"] >= 2, off["per_query"]


def test_relative_fallback_answers_per_place() -> None:
    """Without map points (relative-pose fallback) the copies' keyframes are not mixed in one answer."""
    m = run_look_alike(FOUNTAIN, SIZE, options={"preset": "realtime", **NO_POINTS})
    assert m["n_ok_but_wrong"] == 0, m["per_query"]
    for r in m["per_query"]:
        if r["prior"] is None:
            assert r["status"] == "low_confidence" and r["ambiguous"], r
        else:
            assert r["status"] == "ok" and r["copy"] == r["prior"] and r["t_err_m"] < 0.05, r


def test_choose_place_rules() -> None:
    acc = AcceptanceSettings()
    c = [np.zeros(3), np.array([100.0, 0, 0])]
    assert choose_place([100, 40], c, 30.0, acc).reason == ""                  # rival below ambiguity_ratio
    assert choose_place([100, 90], [np.zeros(3), np.array([10.0, 0, 0])], 30.0, acc).reason == ""  # same place
    amb = choose_place([100, 90], c, 30.0, acc)
    assert amb.index == 0 and amb.rivals == [0, 1] and amb.reason.startswith("ambiguous: 2")
    pick = choose_place([100, 90], c, 30.0, acc, prior_centre=np.array([98.0, 0, 0]))
    assert pick.index == 1 and pick.reason == ""
    wide = np.diag([1e4, 1e4, 1e4, 1, 1, 1])                                   # 100 m sigma: fits both
    assert "fits 2 of them" in choose_place([100, 90], c, 30.0, acc, np.zeros(3), wide).reason
    assert "fits 0 of them" in choose_place([100, 90], c, 30.0, acc, np.array([0, 500.0, 0])).reason
    with pytest.raises(ConfigError, match="ambiguity_ratio"):
        AcceptanceSettings(ambiguity_ratio=0.0)
