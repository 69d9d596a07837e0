"""eval.metrics.summarize / median_baseline: the shared metrics.json keys and threshold semantics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.eval.metrics import DEFAULT_THRESHOLDS, median_baseline, summarize

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"


def test_summarize_keys_recalls_and_unlocalized() -> None:
    t = [0.01, 0.04, 0.20, np.inf]
    r = [0.5, 1.5, 0.1, np.inf]
    m = summarize(t, r, [10.0, 20.0, 30.0, 40.0], scene_scale=2.0)
    for key in ("n_queries", "n_localized", "median_translation_m", "median_rotation_deg",
                "latency_ms_p50", "latency_ms_p95", "recall"):
        assert key in m
    assert (m["n_queries"], m["n_localized"]) == (4, 3)
    assert m["median_translation_m"] == pytest.approx(0.04)
    assert m["median_rotation_deg"] == pytest.approx(0.5)
    rec = m["recall"]
    assert set(rec) == {name for name, _, _ in DEFAULT_THRESHOLDS}
    assert rec["5cm_1deg"] == pytest.approx(0.25)       # 0.04 m fails on 1.5 deg; inf never counts
    assert rec["25cm_2deg"] == pytest.approx(0.75)
    assert rec["1pct_1deg"] == pytest.approx(0.25)      # 1% of 2.0 = 2 cm
    assert rec["5pct_1deg"] == pytest.approx(0.25)      # 10 cm, but 0.04 m has 1.5 deg
    assert m["recall_thresholds"]["1pct_1deg"] == [pytest.approx(0.02), 1.0]
    assert m["latency_ms_p50"] == pytest.approx(25.0)


def test_custom_thresholds_and_nothing_localized() -> None:
    m = summarize([np.inf, np.inf], [np.inf, np.inf], [], thresholds=[("2pct_3deg", "2pct", 3.0)])
    assert m["n_localized"] == 0 and m["median_translation_m"] is None and m["latency_ms_p50"] is None
    assert m["recall"] == {"2pct_3deg": 0.0}


def test_bad_inputs_raise() -> None:
    with pytest.raises(ConfigError, match="translation errors but"):
        summarize([0.1], [0.1, 0.2], [])
    with pytest.raises(ConfigError, match="scene_scale"):
        summarize([0.1], [0.1], [], scene_scale=0.0)
    with pytest.raises(ConfigError, match="1pct"):
        summarize([0.1], [0.1], [], thresholds=[("x", "1percent", 1.0)])


def test_median_baseline_of_real_scenes() -> None:
    fountain = read_posed_folder(DATA / "fountain-P11", "db", check_images=False)
    b = median_baseline(np.stack([r.T_world_cam for r in fountain]))
    assert 1.0 < b < 3.0                      # Strecha views are ~1.7 m apart
    temple = read_posed_folder(DATA / "middlebury-temple-ring", "db", check_images=False)
    # templeR0001 and templeR0030 coincide: a zero distance must not become the baseline
    assert median_baseline(np.stack([r.T_world_cam for r in temple])) > 0.01
    with pytest.raises(ConfigError, match="at least two"):
        median_baseline(np.eye(4)[None])


def test_median_baseline_chunks_give_the_same_answer() -> None:
    rng = np.random.default_rng(3)
    C = rng.normal(size=(50, 3))
    C[7] = C[3]                                          # coincident cameras are ignored
    assert median_baseline(C, chunk=7) == median_baseline(C) == median_baseline(C, chunk=1000)
    T = np.tile(np.eye(4), (50, 1, 1))
    T[:, :3, 3] = C
    assert median_baseline(T) == median_baseline(C)
