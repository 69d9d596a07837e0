"""Covisibility tuples on real posed scenes and on synthetic scenes with known geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data.posed_folder import read_posed_folder
from reloc_vggt_ros.errors import ConfigError, DataError
from reloc_vggt_ros.training.sampler import CovisibilityIndex, SamplerConfig
from reloc_vggt_ros.training.synthetic import generate_scene

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"


def _index(folder: str, **kw) -> CovisibilityIndex:
    recs = read_posed_folder(DATA / folder)
    return CovisibilityIndex([r.T_world_cam for r in recs], [r.intrinsics for r in recs], SamplerConfig(**kw))


def test_real_scene_neighbours_are_covisible() -> None:
    """fountain-P11 is a sweep around one facade: neighbours in the sweep overlap, the ends less."""
    idx = _index("fountain-P11", num_frames=4, min_overlap=0.3)
    assert np.allclose(idx.overlap, idx.overlap.T)
    for i in range(10):
        assert idx.overlap[i, i + 1] > idx.overlap[0, 10]
    assert idx.ok[5].sum() >= 3


def test_tuples_are_distinct_covisible_and_seeded() -> None:
    idx = _index("middlebury-temple-ring", num_frames=5, min_overlap=0.3, max_angle_deg=60)
    rng = np.random.default_rng(0)
    for _ in range(50):
        ids = idx.sample(rng)
        assert len(ids) == 5 and len(set(ids)) == 5
        anchor, query = ids[0], ids[-1]
        if idx.ok[anchor].sum() >= 4:
            assert idx.ok[anchor, query]
            assert all(idx.ok[anchor, j] for j in ids[1:])
    a = [idx.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [idx.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b


def test_synthetic_overlap_agrees_with_rendered_geometry() -> None:
    """Pairs the sampler calls covisible share more viewing direction than pairs it rejects."""
    scene = generate_scene(4)
    T = [v[0] for v in scene.views]
    idx = CovisibilityIndex(T, [v[1] for v in scene.views], SamplerConfig(nominal_depth=2.5))
    ang = np.degrees(np.arccos(np.clip(np.einsum("id,jd->ij", [t[:3, 2] for t in T], [t[:3, 2] for t in T]), -1, 1)))
    assert idx.ok.any() and (~idx.ok).any()
    assert np.median(ang[idx.ok]) < np.median(ang[~idx.ok & ~np.eye(len(T), dtype=bool)])


def test_errors() -> None:
    with pytest.raises(ConfigError, match="num_frames"):
        SamplerConfig(num_frames=1)
    with pytest.raises(DataError, match="fewer than num_frames"):
        _index("Herz-Jesus-P8", num_frames=9)
