"""GeometricLocalizer over a real SQLite keyframe store built from real scenes (reduced size for speed)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from reloc_vggt_ros.data import PosedImage, load_image, read_posed_folder
from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.geometry import Intrinsics, make_T, pose_error, so3_log
from reloc_vggt_ros.keyframes import KeyframeStore
from reloc_vggt_ros.keyframes.build import keyframe_from_posed
from reloc_vggt_ros.localizer import Localizer, PosePrior, RelocStatus
from reloc_vggt_ros.localizer.geometric.config import (PRESETS, AcceptanceSettings, GeometricConfig,
                                                      legacy_options)
from reloc_vggt_ros.localizer.geometric.indexing import BACKEND, fingerprints
from reloc_vggt_ros.localizer.geometric.localizer import GeometricLocalizer
from reloc_vggt_ros.localizer.registry import index_database, make_config, make_localizer

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
SIDE = 768
SMALL = {"max_keypoints": 2048, "max_edge_px": SIDE}
OPTIONS = {"map": {"features": SMALL}, "query": {"features": SMALL}}


def _query(rec: PosedImage) -> tuple[np.ndarray, Intrinsics]:
    img = load_image(rec.path)
    h, w = img.shape[:2]
    s = SIDE / max(w, h)
    nw, nh = round(w * s), round(h * s)
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA), rec.intrinsics.scaled(nw / w, nh / h)


@pytest.fixture(scope="module")
def fountain_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("geo") / "fountain.db"
    with KeyframeStore.create(path, creator="test") as store:
        store.add_keyframes([keyframe_from_posed(r, SIDE) for r in read_posed_folder(DATA / "fountain-P11", "db")])
        index_database(store, "geometric", **OPTIONS)
    return path


@pytest.fixture(scope="module")
def localizer(fountain_db: Path) -> GeometricLocalizer:
    store = KeyframeStore.open(fountain_db, readonly=True)
    loc = make_localizer("geometric", store, **OPTIONS)
    assert isinstance(loc, GeometricLocalizer) and isinstance(loc, Localizer)
    assert loc._map.computed == {"features": 0, "points": 0, "vocabulary": 0, "vlad": 0}  # all from blobs
    return loc


def test_config_validation_and_options() -> None:
    with pytest.raises(ConfigError, match="min_inliers must be >= 6"):
        AcceptanceSettings(min_inliers=2)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['bogus'\] in geometric.query; valid: .*'top_k'"):
        make_config("geometric", query={"bogus": 1})
    with pytest.raises(ConfigError, match="unknown geometric preset"):
        make_config("geometric", preset="nope")
    with pytest.raises(ConfigError, match="unknown localizer backend"):
        make_localizer("nope", None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'top_k' and 'query.top_k' set the same option"):
        make_config("geometric", top_k=3, query={"top_k": 4})
    cfg = make_config("geometric", preset="fast", top_k=3, map={"features": {"max_keypoints": 999},
                                                                "triangulation": {"min_tri_angle_deg": 2.0}})
    assert cfg.query == dataclasses.replace(PRESETS["fast"].query, top_k=3)
    assert (cfg.map.features.max_keypoints, cfg.map.triangulation.min_tri_angle_deg) == (999, 2.0)
    assert cfg.map.features.max_edge_px == PRESETS["fast"].map.features.max_edge_px


def test_default_map_fingerprints_are_those_of_existing_databases() -> None:
    """The map blobs' fingerprints of every preset, as databases built before the nested config
    hold them (computed on main before it): existing databases are reused, not re-indexed."""
    # geometric-4 (points solved in the map's local frame: UTM maps' old points lost precision)
    old_default = {"features": "20cbd7102b924292", "points": "15bf6e196fc6f9bd", "vocabulary": "6e6f7e47bffc0171"}
    assert {name: fingerprints(cfg.map) for name, cfg in PRESETS.items()} == {
        "default": old_default, "fast": old_default, "realtime": old_default,
        "accurate": {"features": "5ee9573faf344dc4", "points": "f6e5151f35162460",
                     "vocabulary": "3fa2c7a5501915fe"}}


def test_legacy_flat_options_give_the_configs_they_gave() -> None:
    """The deprecated flat names: a feature field set the map features, and the query's where the
    preset's query features were the map's (default, accurate); query_<field> the query's only."""
    def build(flat: dict) -> GeometricConfig:
        return make_config("geometric", **legacy_options(flat))

    cfg = build({"max_keypoints": 2048, "max_edge_px": SIDE})
    assert cfg == make_config("geometric", **OPTIONS)
    cfg = build({"preset": "realtime", "max_keypoints": 2048, "query_max_upsample": 1.25, "refine_lk": False,
                 "lk_sigma_px": 0.2, "min_tri_angle_deg": 2.0, "top_k": 3, "min_inliers": 20})
    assert cfg.map.features.max_keypoints == 2048 and cfg.query.features.max_keypoints == 1024
    assert cfg.query.features.max_upsample == 1.25 and cfg.map.features.max_upsample == 2.0
    assert (cfg.lk.enabled, cfg.lk.sigma_px, cfg.map.triangulation.min_tri_angle_deg) == (False, 0.2, 2.0)
    assert (cfg.query.top_k, cfg.acceptance.min_inliers, cfg.query.scale_weighted) == (3, 20, True)
    cfg = build({"preset": "accurate", "max_edge_px": 1024, "query_max_keypoints": 1024})
    assert (cfg.map.features.max_edge_px, cfg.query.features.max_edge_px) == (1024, 1024)
    assert (cfg.map.features.max_keypoints, cfg.query.features.max_keypoints) == (8192, 1024)
    with pytest.raises(ConfigError, match="unknown option 'bogus'"):
        legacy_options({"bogus": 1})


def test_localizes_every_fountain_query(localizer: GeometricLocalizer) -> None:
    for rec in read_posed_folder(DATA / "fountain-P11", "query"):
        img, intr = _query(rec)
        res = localizer.localize(img, intr, stamp_ns=7)
        assert res.status is RelocStatus.OK, (rec.name, res.reason)
        t_err, r_err = pose_error(res.T_world_cam, rec.T_world_cam)
        assert t_err < 0.02 and r_err < 0.2, (rec.name, t_err, r_err)
        C = res.covariance
        assert C.shape == (6, 6) and np.all(np.isfinite(C)) and np.allclose(C, C.T)
        assert np.linalg.eigvalsh(C).min() > 0
        assert res.confidence >= 0.5 and res.num_inliers >= 30
        assert res.diagnostics["method"] == "pnp" and res.diagnostics["stamp_ns"] == 7


def test_covariance_is_of_plausible_magnitude(localizer: GeometricLocalizer) -> None:
    """Per-axis z-scores of the real errors: neither absurdly over- nor under-confident.

    Measured (docs/geometric.md): with the map-error inflation the |z| are O(1); without it
    (pure 2D noise) they are ~4x larger. The bounds below are wide on purpose: a factor 10.
    """
    z = []
    for rec in read_posed_folder(DATA / "fountain-P11", "query"):
        res = localizer.localize(*_query(rec))
        e = np.concatenate([res.T_world_cam[:3, 3] - rec.T_world_cam[:3, 3],
                            so3_log(res.T_world_cam[:3, :3] @ rec.T_world_cam[:3, :3].T)])
        z.extend(e / np.sqrt(np.diag(res.covariance)))
    rms = float(np.sqrt(np.mean(np.square(z))))
    assert 0.1 < rms < 10.0, rms


def test_query_from_another_scene_is_rejected(localizer: GeometricLocalizer) -> None:
    """Includes entry-P10, whose building shows in fountain's last views (partial real overlap)."""
    for scene in ("Herz-Jesus-P8", "middlebury-temple-ring", "entry-P10"):
        for rec in read_posed_folder(DATA / scene, "query")[:3]:
            res = localizer.localize(*_query(rec))
            assert res.status is not RelocStatus.OK, (scene, rec.name, res.num_inliers, res.confidence)
            assert res.reason


def test_bad_inputs_and_prior(localizer: GeometricLocalizer) -> None:
    rec = read_posed_folder(DATA / "fountain-P11", "query")[0]
    img, intr = _query(rec)
    res = localizer.localize(img[:100], intr)
    assert res.status is RelocStatus.INVALID_INPUT and "intrinsics" in res.reason
    prior = PosePrior(rec.T_world_cam @ make_T(np.eye(3), [0.3, 0.0, 0.0]))
    res = localizer.localize(img, intr, prior=prior)
    assert res.ok and pose_error(res.T_world_cam, rec.T_world_cam)[0] < 0.02


def test_refresh_indexes_only_the_new_keyframe(fountain_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "copy.db"
    shutil.copy(fountain_db, path)
    with KeyframeStore.open(path) as store:
        loc = GeometricLocalizer(store, make_config("geometric", **OPTIONS))
        n = len(store)
        first_id = store.keyframe_ids()[0]
        first_features = loc._map.entries[first_id].features
        rec = read_posed_folder(DATA / "fountain-P11", "query")[1]
        store.add_keyframe(keyframe_from_posed(rec, SIDE))
        loc.refresh()
        assert loc._map.entries[first_id].features is first_features     # reused, not re-read
        computed = loc._map.computed
        assert computed["features"] == 1 and computed["vlad"] == 1 and computed["vocabulary"] == 0
        assert 1 <= computed["points"] <= n + 1          # the new one + those it became a neighbour of
        assert len(loc._map.entries) == n + 1
        loc.refresh()                                    # nothing changed: nothing recomputed
        assert loc._map.computed["features"] == 0 or loc._map.revision == store.revision
        res = loc.localize(*_query(rec))
        assert res.ok and pose_error(res.T_world_cam, rec.T_world_cam)[0] < 0.005
        # another feature setting -> other fingerprints -> everything recomputed, old blobs untouched
        other = make_config("geometric", map={"features": {"max_keypoints": 1024, "max_edge_px": SIDE}})
        assert fingerprints(other.map)["features"] != fingerprints(loc.config.map)["features"]
        loc2 = GeometricLocalizer(store, other)
        assert loc2._map.computed["features"] == n + 1
        assert len(store.backends()[BACKEND]) >= 2


def test_empty_database(tmp_path: Path) -> None:
    with KeyframeStore.create(tmp_path / "empty.db") as store:
        loc = make_localizer("geometric", store)
        rec = read_posed_folder(DATA / "fountain-P11", "query")[0]
        res = loc.localize(*_query(rec))
        assert res.status is RelocStatus.EMPTY_DATABASE


def test_relative_pose_fallback_without_map_points(fountain_db: Path) -> None:
    """No neighbours, so no map points: essential matrices to >= 2 keyframes take over."""
    with KeyframeStore.open(fountain_db, readonly=True) as store:
        loc = GeometricLocalizer(store, make_config("geometric", map={"features": SMALL, "triangulation": {
            "max_view_angle_deg": 1e-3}}, query={"features": SMALL}))
        assert sum(len(e.point_index) for e in loc._map.entries.values()) == 0
        errors, n_ok, z = [], 0, []
        for rec in read_posed_folder(DATA / "fountain-P11", "query"):
            res = loc.localize(*_query(rec))
            assert res.diagnostics["method"] == "relative"
            n_ok += res.ok
            if res.T_world_cam is not None:
                errors.append(pose_error(res.T_world_cam, rec.T_world_cam))
                assert np.linalg.eigvalsh(res.covariance).min() > 0
                e = np.concatenate([res.T_world_cam[:3, 3] - rec.T_world_cam[:3, 3],
                                    so3_log(res.T_world_cam[:3, :3] @ rec.T_world_cam[:3, :3].T)])
                z.extend(e / np.sqrt(np.diag(res.covariance)))
        assert 0.1 < float(np.sqrt(np.mean(np.square(z)))) < 10.0, z
        assert len(errors) >= 3 and n_ok >= 3
        t_err = np.array([e[0] for e in errors])
        r_err = np.array([e[1] for e in errors])
        # measured (768 px): 0.13-0.6 cm, 0.01-0.05 deg after the joint generalized refinement
        assert np.median(t_err) < 0.02 and np.median(r_err) < 0.2, errors


def test_realtime_preset_localizes_every_fountain_query(fountain_db: Path) -> None:
    """The shipped query settings (on this fixture's smaller map): every query OK within 2 cm /
    0.2 deg with a covariance of plausible size (the size-weighted one), and matching on 2
    threads finds exactly the matches of 1 thread."""
    z = []
    with KeyframeStore.open(fountain_db, readonly=True) as store:
        loc = make_localizer("geometric", store, preset="realtime", map={"features": SMALL})
        one = make_localizer("geometric", store, preset="realtime", map={"features": SMALL},
                             query={"match_threads": 1})
        assert isinstance(loc, GeometricLocalizer) and loc.config.query.features == PRESETS["realtime"].query.features
        for rec in read_posed_folder(DATA / "fountain-P11", "query"):
            img, intr = _query(rec)
            res = loc.localize(img, intr)
            assert res.status is RelocStatus.OK, (rec.name, res.reason)
            t_err, r_err = pose_error(res.T_world_cam, rec.T_world_cam)
            assert t_err < 0.02 and r_err < 0.2, (rec.name, t_err, r_err)
            assert np.linalg.eigvalsh(res.covariance).min() > 0
            e = np.concatenate([res.T_world_cam[:3, 3] - rec.T_world_cam[:3, 3],
                                so3_log(res.T_world_cam[:3, :3] @ rec.T_world_cam[:3, :3].T)])
            z.extend(e / np.sqrt(np.diag(res.covariance)))
            ref = one.localize(img, intr)
            assert ref.diagnostics["num_matches_2d3d"] == res.diagnostics["num_matches_2d3d"]
            np.testing.assert_allclose(ref.T_world_cam, res.T_world_cam, atol=1e-9)
    assert 0.1 < float(np.sqrt(np.mean(np.square(z)))) < 10.0, z
