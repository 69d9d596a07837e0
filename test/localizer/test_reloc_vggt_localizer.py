"""reloc_vggt and vggt_align localizers end to end on a real keyframe database.

With no trained weights here: a random tiny model proves the plumbing yields a finite pose with
low confidence, and an *oracle network* (returns the true cameras in the network's own frame)
proves the composition T_world<-query, anchor choice and metric scale on real poses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reloc_vggt_ros.data import load_image, read_posed_folder
from reloc_vggt_ros.errors import ModelLoadError
from reloc_vggt_ros.geometry import invert_T, pose_error
from reloc_vggt_ros.keyframes import KeyframeStore, build_keyframe_db
from reloc_vggt_ros.localizer import Localizer, RelocStatus
from reloc_vggt_ros.localizer.vggt.reloc_vggt import RelocVGGTLocalizer, RelocVGGTLocalizerConfig
from reloc_vggt_ros.localizer.vggt.vggt_align import VGGTAlignConfig, VGGTAlignLocalizer
from reloc_vggt_ros.model.config import VGGTConfig
from reloc_vggt_ros.model.pose_encoding import T_world_cam_to_pose_encoding
from reloc_vggt_ros.model.reloc_vggt import RelocVGGT, RelocVGGTConfig
from reloc_vggt_ros.model.vggt import VGGT

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
SCENE = DATA / "fountain-P11"


@pytest.fixture(scope="module")
def query() -> tuple[np.ndarray, object]:
    rec = read_posed_folder(SCENE, "query")[1]
    return load_image(rec.path), rec


def _check_result(res, T_gt=None) -> None:  # noqa: ANN001
    assert res.T_world_cam is not None and np.all(np.isfinite(res.T_world_cam))
    assert np.allclose(res.T_world_cam[:3, :3] @ res.T_world_cam[:3, :3].T, np.eye(3), atol=1e-6)
    assert np.all(np.linalg.eigvalsh(res.covariance) > 0)
    assert 0.0 <= res.confidence <= 1.0


def test_random_tiny_reloc_vggt_gives_finite_pose_with_low_confidence(store, query) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    for mask in ("sparse", "cached"):
        model = RelocVGGT(RelocVGGTConfig.tiny(mask=mask))
        with torch.no_grad():
            model.pose_projector.fc2.weight.normal_(0, 0.2)
            model.query_token.normal_(0, 0.5)
        loc = RelocVGGTLocalizer(store, RelocVGGTLocalizerConfig(num_keyframes=4), model=model)
        assert isinstance(loc, Localizer)
        res = loc.localize(query[0], query[1].intrinsics)
        _check_result(res)
        assert res.status is RelocStatus.LOW_CONFIDENCE and res.confidence < 0.3, res
        assert len(res.diagnostics["keyframes"]) == 4
        if mask == "cached":
            cache = loc.kv_cache.value
            res2 = loc.localize(query[0], query[1].intrinsics)
            assert loc.kv_cache.value is cache             # same keyframes: K/V reused
            np.testing.assert_allclose(res2.T_world_cam, res.T_world_cam, atol=1e-6)


def test_reloc_vggt_judge_alone_decides_ok_whatever_the_keyframe_count(store, query) -> None:  # noqa: ANN001
    """result.ok follows the backend's own thresholds; num_inliers counts consistent keyframes,
    so an accepted result has at most num_keyframes of them (the node's old min_inliers: 12
    rejected every learned result)."""
    torch.manual_seed(0)
    model = RelocVGGT(RelocVGGTConfig.tiny(mask="sparse"))
    with torch.no_grad():
        model.pose_projector.fc2.weight.normal_(0, 0.2)
    lenient = dict(consistency_t_rel=100.0, consistency_rot_deg=1000.0, consistent_t_rel=100.0,
                   consistent_rot_deg=180.0, min_confidence=0.5)
    for k in (2, 4):
        loc = RelocVGGTLocalizer(store, RelocVGGTLocalizerConfig(num_keyframes=k, **lenient), model=model)
        res = loc.localize(query[0], query[1].intrinsics)
        _check_result(res)
        assert res.ok and res.reason == "" and res.num_inliers == k < 12, res
        assert res.diagnostics["consistent_keyframes"] == k and res.confidence >= 0.5
        # the same prediction, judged stricter, is rejected with a reason
        strict = RelocVGGTLocalizer(store, RelocVGGTLocalizerConfig(num_keyframes=k, **{
            **lenient, "min_consistent_keyframes": k + 1}), model=model).localize(query[0], query[1].intrinsics)
        np.testing.assert_allclose(strict.T_world_cam, res.T_world_cam)
        assert not strict.ok and f"{k} of {k} keyframes consistent < min_consistent_keyframes {k + 1}" in strict.reason
    default = RelocVGGTLocalizer(store, RelocVGGTLocalizerConfig(num_keyframes=4), model=model)
    res = default.localize(query[0], query[1].intrinsics)
    assert not res.ok and "min_confidence 0.3" in res.reason and res.confidence < 0.3, res
    tight = RelocVGGTLocalizer(store, RelocVGGTLocalizerConfig(num_keyframes=4, **{
        **lenient, "consistent_t_rel": 1e-9}), model=model).localize(query[0], query[1].intrinsics)
    assert not tight.ok and tight.num_inliers == 0 and "0 of 4 keyframes consistent" in tight.reason


class _OracleRelocVGGT(torch.nn.Module):
    """Stands in for a perfectly trained network: returns the true anchor-relative encodings."""

    def __init__(self, T_world_query: np.ndarray) -> None:
        super().__init__()
        self.config = RelocVGGTConfig.tiny(mask="sparse")
        self.T_world_query = T_world_query
        self.T_world_anchor = np.eye(4)      # set once the test knows which keyframe is the anchor
        self.scale_from_known = 1.0
        self.seen_known: torch.Tensor | None = None

    def forward(self, images: torch.Tensor, known: torch.Tensor) -> dict:
        self.seen_known = known
        scale = self.scale_from_known
        T_anchor_q = invert_T(self.T_world_anchor) @ self.T_world_query
        q_enc = T_world_cam_to_pose_encoding(T_anchor_q[None], np.diag([50.0, 50.0, 1.0]),
                                             self.config.image_hw)[0]
        q_enc[:3] /= scale
        enc = torch.cat([known, torch.from_numpy(q_enc).float()[None, None]], dim=1)
        return {"pose_enc": enc, "pose_enc_list": [enc]}


def test_oracle_network_recovers_the_real_query_pose(store, query) -> None:  # noqa: ANN001
    img, rec = query
    oracle = _OracleRelocVGGT(rec.T_world_cam)
    loc = RelocVGGTLocalizer(store, RelocVGGTLocalizerConfig(num_keyframes=5), model=oracle)
    kf_ids = loc.keyframes.retrieve(img, 5)
    oracle.T_world_anchor = loc.keyframes.pose(kf_ids[0])
    Ts = [loc.keyframes.pose(i) for i in kf_ids]
    oracle.scale_from_known = float(np.mean([np.linalg.norm(T[:3, 3] - Ts[0][:3, 3]) for T in Ts[1:]]))
    res = loc.localize(img, rec.intrinsics)
    _check_result(res)
    t_err, r_err = pose_error(res.T_world_cam, rec.T_world_cam)
    assert t_err < 1e-4 and r_err < 1e-3, (t_err, r_err)
    assert res.status is RelocStatus.OK and res.confidence > 0.99 and res.num_inliers == 5
    assert oracle.seen_known.shape == (1, 5, 9)
    torch.testing.assert_close(oracle.seen_known[0, 0, :7], torch.tensor([0, 0, 0, 0, 0, 0, 1.0]))


def test_vggt_align_random_tiny_vggt_and_oracle(store, query) -> None:  # noqa: ANN001
    img, rec = query
    cfg = VGGTConfig(img_size=70, embed_dim=64, depth=2, num_heads=4, camera_num_heads=4, patch_embed="conv",
                     dpt_layers=(0, 1, 1, 1), enable_depth=False, enable_point=False, enable_track=False)
    torch.manual_seed(0)
    loc = VGGTAlignLocalizer(store, VGGTAlignConfig(num_keyframes=5, image_hw=(56, 70)), model=VGGT(cfg).eval())
    res = loc.localize(img, rec.intrinsics)
    _check_result(res)
    assert res.status is RelocStatus.LOW_CONFIDENCE and res.confidence < 0.3, res   # untrained: no agreement
    assert "keyframes agree with the predicted cameras (need 3)" in res.reason
    assert len(res.diagnostics["keyframes"]) == 5

    # oracle cameras: the truth in a scaled, rotated frame anchored at the first keyframe
    kf_ids = res.diagnostics["keyframes"]
    T_true = np.stack([loc.keyframes.pose(i) for i in kf_ids] + [rec.T_world_cam])
    T_frame0 = np.stack([invert_T(T_true[0]) @ T for T in T_true])
    T_frame0[:, :3, 3] *= 0.2
    loc.predict_cameras = lambda images: T_frame0   # type: ignore[method-assign]
    res = loc.localize(img, rec.intrinsics)
    t_err, r_err = pose_error(res.T_world_cam, rec.T_world_cam)
    assert t_err < 1e-6 and r_err < 1e-4 and res.status is RelocStatus.OK and res.num_inliers == 5


def test_missing_weights_stop_construction(store, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(ModelLoadError, match=r"reloc_vggt needs weights: file .*none.safetensors not found"):
        RelocVGGTLocalizer(store, RelocVGGTLocalizerConfig(weights=str(tmp_path / "none.safetensors")))
    with pytest.raises(ModelLoadError, match="vggt_align needs weights"):
        VGGTAlignLocalizer(store, VGGTAlignConfig(weights=""))


def test_reloc_vggt_localizer_loads_saved_checkpoint(store, query, tmp_path: Path) -> None:  # noqa: ANN001
    path = RelocVGGT(RelocVGGTConfig.tiny(mask="cached")).save(tmp_path / "tiny.safetensors")
    loc = RelocVGGTLocalizer(store, RelocVGGTLocalizerConfig(weights=str(path), num_keyframes=3))
    assert loc.image_hw == (56, 70) and loc.model.config.mask == "cached"
    _check_result(loc.localize(query[0], query[1].intrinsics))


def test_registry_builds_both_backends_from_node_options(store, query, tmp_path: Path) -> None:  # noqa: ANN001
    from reloc_vggt_ros.errors import ConfigError
    from reloc_vggt_ros.localizer.registry import make_localizer

    path = RelocVGGT(RelocVGGTConfig.tiny(mask="sparse")).save(tmp_path / "tiny.safetensors")
    loc = make_localizer("reloc_vggt", store, top_k=3, engine=str(path))      # what the node passes
    assert loc.name == "reloc_vggt" and loc.config.num_keyframes == 3
    assert len(loc.localize(query[0], query[1].intrinsics).diagnostics["keyframes"]) == 3
    with pytest.raises(ModelLoadError, match="reloc_vggt needs weights: file .*absent.safetensors not found"):
        make_localizer("reloc_vggt", store, engine=str(tmp_path / "absent.safetensors"))
    with pytest.raises(ModelLoadError, match="vggt_align needs weights"):
        make_localizer("vggt_align", store, top_k=4)
    # a VGGT checkpoint with every head: vggt_align builds only aggregator + camera head
    from reloc_vggt_ros.model.weights import save_vggt_weights

    cfg = VGGTConfig(img_size=70, embed_dim=32, depth=2, num_heads=2, camera_num_heads=4, patch_embed="conv",
                     dpt_layers=(0, 1, 1, 1), dpt_features=16, dpt_out_channels=(8, 16, 32, 32),
                     track_features=16, track_hidden=32, track_corr_levels=4)
    vggt_path = save_vggt_weights(VGGT(cfg), tmp_path / "vggt_tiny.safetensors")
    align = make_localizer("vggt_align", store, engine=str(vggt_path), top_k=4, image_hw=[56, 70])
    assert align.model.depth_head is None and align.model.track_head is None
    res = align.localize(query[0], query[1].intrinsics)
    assert res.T_world_cam is not None and np.all(np.isfinite(res.T_world_cam))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['ransac'\] in vggt_align; valid: \["):
        make_localizer("vggt_align", store, ransac=3)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning", "ignore::UserWarning")
@pytest.mark.parametrize("mask", ["sparse", "cached"])
def test_exported_onnx_graphs_localize_like_torch(mask: str, store, query, tmp_path: Path) -> None:  # noqa: ANN001
    pytest.importorskip("onnxruntime")
    from reloc_vggt_ros.engine.export import ExportConfig, KeyframeRange
    from reloc_vggt_ros.engine.reloc_graphs import export_reloc_vggt

    torch.manual_seed(1)
    model = RelocVGGT(RelocVGGTConfig.tiny(mask=mask))
    with torch.no_grad():
        model.pose_projector.fc2.weight.normal_(0, 0.2)
    paths = export_reloc_vggt(model, tmp_path, ExportConfig(keyframes=KeyframeRange(3, 3, 3)))
    ref = RelocVGGTLocalizer(store, RelocVGGTLocalizerConfig(num_keyframes=3), model=model)
    onnx = RelocVGGTLocalizer(store, RelocVGGTLocalizerConfig(weights=str(paths[-1]), num_keyframes=5))
    assert onnx.engine is not None and onnx.mask == mask and onnx.image_hw == (56, 70)
    a, b = ref.localize(query[0], query[1].intrinsics), onnx.localize(query[0], query[1].intrinsics)
    assert a.diagnostics["keyframes"] == b.diagnostics["keyframes"]      # clamped to the export's K = 3
    np.testing.assert_allclose(b.T_world_cam, a.T_world_cam, atol=1e-4)
    assert b.confidence == pytest.approx(a.confidence, abs=1e-4)


def test_keyframe_set_refresh_sees_added_and_removed_keyframes(tmp_path: Path) -> None:
    from reloc_vggt_ros.keyframes.build import keyframe_from_posed
    from reloc_vggt_ros.localizer.vggt.common import KeyframeSet

    recs = read_posed_folder(DATA / "Herz-Jesus-P8")
    db = build_keyframe_db(DATA / "Herz-Jesus-P8", tmp_path / "hj.db", split="db", max_side=200)
    with KeyframeStore.open(db) as s:
        kfs = KeyframeSet(s, (56, 70))
        n = len(kfs)
        query = next(r for r in recs if r.split == "query")
        new_id = s.add_keyframe(keyframe_from_posed(query, max_side=200))
        kfs.refresh()
        assert len(kfs) == n + 1
        # the new keyframe is the query image itself: retrieval must rank it first
        assert kfs.retrieve(load_image(query.path), 3)[0] == new_id
        np.testing.assert_allclose(kfs.pose(new_id), query.T_world_cam)
        s.remove_keyframe(new_id)
        kfs.refresh()
        assert len(kfs) == n and new_id not in kfs.retrieve(load_image(query.path), n)
