"""``reloc-vggt bench localize`` as a real process on a real scene (reduced size for speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reloc_vggt_ros.dds import localhost_env

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
OPTIONS = {"top_k": 4, "map": {"features": {"max_keypoints": 1024}}, "query": {"features": {"max_keypoints": 1024}}}


@pytest.mark.slow
def test_bench_localize_cli_writes_metrics_json(tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    proc = subprocess.run(
        [sys.executable, "-m", "reloc_vggt_ros.cli", "bench", "localize", "--scene", str(DATA / "fountain-P11"),
         "--backend", "geometric", "--size", "480x320", "--top-k", "4", "-o", "map.features.max_keypoints=1024",
         "-o", "query.features.max_keypoints=1024",
         "--json", str(out)],
        env=localhost_env(), capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "localized 4/4" in proc.stdout and "recall" in proc.stdout
    m = json.loads(out.read_text())
    for key in ("n_queries", "n_localized", "median_translation_m", "median_rotation_deg", "latency_ms_p50",
                "latency_ms_p95"):
        assert key in m, key
    assert set(m["recall"]) >= {"5cm_1deg", "10cm_1deg", "25cm_2deg", "1pct_1deg", "5pct_1deg"}
    assert m["n_queries"] == 4 and m["n_localized"] == 4 and m["n_ok_but_wrong"] == 0
    assert m["median_translation_m"] < 0.05 and m["median_rotation_deg"] < 0.5
    assert m["options"] == {"top_k": 4, "map": {"features": {"max_keypoints": 1024}},
                            "query": {"features": {"max_keypoints": 1024}}} and m["image_size"] == [480, 320]


def test_bench_localize_cli_reports_bad_scene(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "reloc_vggt_ros.cli", "bench", "localize", "--scene",
                           str(tmp_path)], env=localhost_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "ERROR:" in proc.stderr and "poses.txt" in proc.stderr


def test_bench_localize_reuses_its_database_for_the_same_scene_and_size(tmp_path: Path) -> None:
    from reloc_vggt_ros.keyframes import KeyframeStore
    from bench.localize import bench_localize

    db, scene = tmp_path / "bench.db", DATA / "fountain-P11"
    small = {"features": {"max_keypoints": 1024}}
    first = bench_localize(scene, "geometric", (480, 320), db, {"top_k": 4, "map": small, "query": small})
    again = bench_localize(scene, "geometric", (480, 320), db, {"top_k": 4, "map": small, "preset": "realtime"})
    assert again["index_s"] < 0.2 * first["index_s"], (first["index_s"], again["index_s"])  # blobs reused
    assert again["n_localized"] == 4 and again["n_ok_but_wrong"] == 0
    bench_localize(scene, "geometric", (400, 300), db, {"top_k": 4, "map": {"features": {"max_keypoints": 512}}})
    with KeyframeStore.open(db, readonly=True) as store:
        assert '"size": [400, 300]' in store.metadata["bench_source"]


@pytest.mark.slow
def test_bench_localize_reuses_a_db_build_database_of_the_db_split(tmp_path: Path) -> None:
    from bench.localize import bench_localize
    from reloc_vggt_ros.keyframes import KeyframeStore, build_keyframe_db

    scene = DATA / "fountain-P11"
    db = build_keyframe_db(scene, tmp_path / "built.db", split="db", max_side=480)   # 3072x2048 -> 480x320
    with KeyframeStore.open(db, readonly=True) as store:
        ids_before = store.keyframe_ids()
        assert "bench_source" not in store.metadata
    m = bench_localize(scene, "geometric", (480, 320), db, dict(OPTIONS))
    assert m["n_localized"] == 4 and m["n_ok_but_wrong"] == 0 and m["db_creator"] == "reloc-vggt db build"
    with KeyframeStore.open(db, readonly=True) as store:        # the same keyframes, now with blobs
        assert store.keyframe_ids() == ids_before
        assert "bench_source" not in store.metadata and store.metadata["creator"] == "reloc-vggt db build"
        assert "geometric" in store.backends()


def test_bench_localize_refuses_a_foreign_database_and_leaves_it_untouched(tmp_path: Path) -> None:
    from bench.localize import bench_localize
    from reloc_vggt_ros.errors import DataError
    from reloc_vggt_ros.keyframes import build_keyframe_db

    scene = DATA / "fountain-P11"
    db = build_keyframe_db(scene, tmp_path / "all.db", split=None, max_side=64, thumbnails=False)
    before, mtime = db.read_bytes(), db.stat().st_mtime_ns
    with pytest.raises(DataError) as err:
        bench_localize(scene, "geometric", (480, 320), db, dict(OPTIONS))
    message = str(err.value)
    assert "4 keyframe(s) not in the db split: 0001.jpg" in message       # the queries
    assert "image sizes differ (480x320 wanted): 0000.jpg is 64x43" in message
    assert "left untouched" in message and "another --db path" in message and "db build" in message
    assert db.read_bytes() == before and db.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.db"]          # no -wal/-shm left behind
    # a db-split database of another size is refused too, naming the size
    other = build_keyframe_db(scene, tmp_path / "db64.db", split="db", max_side=64, thumbnails=False)
    with pytest.raises(DataError, match=r"image sizes differ \(480x320 wanted\)") as err:
        bench_localize(scene, "geometric", (480, 320), other, dict(OPTIONS))
    assert "not in the db split" not in str(err.value) and "missing" not in str(err.value)
