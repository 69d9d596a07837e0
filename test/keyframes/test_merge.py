"""`reloc-vggt db merge`: two real geometric maps (the sample's db and query splits) into one.

Every keyframe and blob is copied byte for byte (ids of the second map shifted), so the indexer
run after the merge extracts no feature again; what it recomputes is what the merge changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reloc_vggt_ros.cli import main
from reloc_vggt_ros.errors import KeyframeDBError
from reloc_vggt_ros.keyframes import KeyframeStore, build_keyframe_db
from reloc_vggt_ros.keyframes.build import merge_keyframe_dbs
from reloc_vggt_ros.localizer.geometric.indexing import BACKEND, fingerprints
from reloc_vggt_ros.localizer.registry import make_config, make_localizer

SAMPLE = Path(__file__).parents[2] / "sample" / "fountain-P11-small"
FEATURES_FP = fingerprints(make_config("geometric").map)["features"]


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("merge")
    a = build_keyframe_db(SAMPLE, d / "a.db", split="db", max_side=320, backend="geometric")
    b = build_keyframe_db(SAMPLE, d / "b.db", split="query", max_side=320, backend="geometric")
    return a, b


def test_merge_copies_every_keyframe_and_blob_and_reindexes_only_what_changed(
        halves: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = halves
    out = tmp_path / "merged.db"
    assert main(["db", "merge", str(a), str(b), "--out", str(out)]) == 0
    assert "keyframes:      11" in capsys.readouterr().out
    with KeyframeStore.open(a, readonly=True) as sa, KeyframeStore.open(b, readonly=True) as sb, \
            KeyframeStore.open(out, readonly=True) as merged:
        assert merged.keyframe_ids() == list(range(1, 12))
        for src, offset in ((sa, 0), (sb, 7)):
            for kf_id in src.keyframe_ids():
                got, want = merged.get_keyframe(kf_id + offset), src.get_keyframe(kf_id)
                assert (got.name, got.image_jpeg, got.intrinsics) == (want.name, want.image_jpeg, want.intrinsics)
                assert (got.T_world_cam == want.T_world_cam).all()
                blob = src.get_blob(kf_id, BACKEND, "features", FEATURES_FP)
                assert blob is not None and merged.get_blob(kf_id + offset, BACKEND, "features", FEATURES_FP) == blob
        assert merged.metadata["source"] == f"{a.resolve()} + {b.resolve()}"
        loc = make_localizer("geometric", merged)
        assert loc._map.computed == {"features": 0, "points": 0, "vocabulary": 0, "vlad": 0}  # noqa: SLF001
        assert len(loc._map.entries) == 11  # noqa: SLF001
    assert main(["db", "check", str(out)]) == 0


def test_merge_indexes_what_the_merge_changed_only(halves: tuple[Path, Path], tmp_path: Path) -> None:
    """Without the indexer at merge time: opening the merged map (writable) computes no feature,
    keeps the first map's vocabulary, recomputes the second map's VLADs (other vocabulary) and
    the points of keyframes whose neighbours changed."""
    a, b = halves
    out = merge_keyframe_dbs([a, b], tmp_path / "raw.db", backend=None)
    with KeyframeStore.open(out) as store:
        computed = make_localizer("geometric", store)._map.computed  # noqa: SLF001
    assert computed["features"] == 0 and computed["vocabulary"] == 0 and computed["vlad"] == 4, computed
    assert 1 <= computed["points"] <= 11, computed


def test_merge_refuses_bad_inputs(halves: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = halves
    with pytest.raises(KeyframeDBError, match="at least two"):
        merge_keyframe_dbs([a], tmp_path / "x.db")
    with pytest.raises(KeyframeDBError, match="exists"):
        merge_keyframe_dbs([a, b], a.parent / "b.db")
    with pytest.raises(KeyframeDBError, match="not found"):
        merge_keyframe_dbs([a, tmp_path / "missing.db"], tmp_path / "y.db")
    assert not (tmp_path / "y.db").exists()
