"""The node's policy without DDS: gating, covariance, prior expiry, map->odom, live mapping, saving.

Real images and poses (sample/fountain-P11-small, 320 px); a scripted backend where the test
must control the result, the real geometric backend end to end.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from reloc_vggt_ros.config import flatten
from reloc_vggt_ros.data.posed_folder import read_posed_folder
from reloc_vggt_ros.geometry import camera_mount, invert_T, make_T, pose_error, so3_exp
from reloc_vggt_ros.keyframes import KeyframeStore
from reloc_vggt_ros.keyframes.build import keyframe_from_posed
from reloc_vggt_ros.localizer.base import PosePrior, RelocResult, RelocStatus
from reloc_vggt_ros.session import MappingConfig, Published, Rejected, Session, SessionConfig

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample" / "fountain-P11-small"
MAX_SIDE = 320


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class ScriptedLocalizer:
    """Returns the queued results in order; records the priors and refreshes it saw."""

    name = "scripted"

    def __init__(self, results: list[RelocResult] | None = None) -> None:
        self.results = list(results or [])
        self.priors: list[PosePrior | None] = []
        self.refreshes = 0

    def localize(self, image, intrinsics, stamp_ns=0, prior=None) -> RelocResult:
        self.priors.append(prior)
        item = self.results.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def refresh(self) -> None:
        self.refreshes += 1


@pytest.fixture(scope="module")
def scene():
    recs = {r.name: r for r in read_posed_folder(SAMPLE)}
    kfs = [keyframe_from_posed(recs[n], MAX_SIDE) for n in ("0000.jpg", "0002.jpg", "0003.jpg")]
    query = keyframe_from_posed(recs["0001.jpg"], MAX_SIDE)      # the query image at the keyframes' size
    return kfs, query.decode_image(), query.intrinsics, query.T_world_cam


@pytest.fixture()
def db(tmp_path, scene) -> Path:
    path = tmp_path / "fountain3.db"
    with KeyframeStore.create(path, creator="test") as store:
        store.add_keyframes(scene[0])
    return path


def _ok(T: np.ndarray, inliers: int = 3, cov: np.ndarray | None = None, confidence: float = 0.4) -> RelocResult:
    return RelocResult(RelocStatus.OK, T, np.diag([1e-4] * 3 + [1e-5] * 3) if cov is None else cov,
                       confidence, inliers, "ok")


def _session(db: Path, localizer: ScriptedLocalizer, config: SessionConfig | None = None,
             clock: Clock | None = None, readonly: bool = True) -> tuple[Session, list[str]]:
    warnings: list[str] = []
    session = Session(config or SessionConfig(), lambda store: localizer, clock=clock or Clock(),
                      on_warning=warnings.append)
    session.open(db, readonly=readonly)
    return session, warnings


def _shipped_config():
    from reloc_vggt_ros.ros.params import config_from_parameters

    doc = yaml.safe_load((ROOT / "config" / "reloc_vggt.yaml").read_text())
    values = flatten(next(iter(doc.values()))["ros__parameters"])
    return config_from_parameters({k: v for k, v in values.items() if not k.startswith("geometric.")})


def test_a_learned_backends_ok_result_is_published_with_the_shipped_config(db, scene):
    """vggt_align counts keyframes as inliers (3 here): the backend said OK, so it is published
    (the node's old min_inliers 12 / min_confidence 0.3 rejected every such result)."""
    _, img, intr, T_gt = scene
    cfg = _shipped_config()
    loc = ScriptedLocalizer([_ok(T_gt, inliers=3, confidence=0.2)])
    session, _ = _session(db, loc, cfg)
    decision = session.localize(img, intr, 5)
    assert isinstance(decision, Published), decision
    np.testing.assert_array_equal(decision.T_map_cam, T_gt)
    assert decision.result.num_inliers == 3 and decision.T_map_odom is None


def test_only_ok_results_with_a_usable_covariance_are_published(db, scene):
    _, img, intr, T = scene
    indefinite = np.diag([1e-4, 1e-4, 1e-4, 1e-5, 1e-5, 1e-5])
    indefinite[0, 1] = indefinite[1, 0] = 1.0
    loc = ScriptedLocalizer([
        RelocResult(RelocStatus.LOW_CONFIDENCE, T, None, 0.9, 500, "confidence 0.10 < 0.5"),
        RelocResult(RelocStatus.NO_MATCH, reason="no keyframe shares 30 matches"),
        RelocResult(RelocStatus.OK, T, None, 0.9, 100),
        _ok(T, cov=np.full((6, 6), np.nan)),
        _ok(T, cov=indefinite),
        _ok(T, cov=np.zeros((6, 6))),
        RuntimeError("CUDA out of memory"),
    ])
    cfg = SessionConfig(min_variance_m2=1e-4, min_variance_rad2=1e-5)
    session, _ = _session(db, loc, cfg)
    reasons = [session.localize(img, intr, k) for k in range(7)]
    assert [type(d) for d in reasons] == [Rejected] * 5 + [Published, Rejected]
    assert reasons[0].reason == "low_confidence: confidence 0.10 < 0.5" and reasons[0].result.num_inliers == 500
    assert reasons[1].reason == "no_match: no keyframe shares 30 matches" and not reasons[1].warn
    assert reasons[2].reason == "unusable covariance: backend returned no covariance"
    assert reasons[3].reason == "unusable covariance: backend covariance is not finite"
    assert reasons[4].reason == "unusable covariance: covariance is not positive definite"
    np.testing.assert_array_equal(np.diag(reasons[5].covariance), [1e-4] * 3 + [1e-5] * 3)  # floors
    assert reasons[6].reason == "localizer failed: CUDA out of memory" and reasons[6].warn
    assert isinstance(reasons[6].error, RuntimeError)


def test_bad_inputs_and_an_empty_map_are_rejected_before_the_backend(tmp_path, db, scene):
    _, img, intr, T = scene
    loc = ScriptedLocalizer([_ok(T), _ok(T)])
    session, warnings = _session(db, loc)
    small = cv2.resize(img, (intr.width // 2, intr.height // 2))
    d = session.localize(small, intr, 1)
    assert isinstance(d, Rejected) and d.warn and d.result is None
    assert d.reason == f"camera_info is for {intr.width}x{intr.height} but the image is {small.shape[1]}x{small.shape[0]}"
    assert isinstance(session.localize(img, intr, 2), Published)
    half = intr.scaled(0.5, 0.5)
    assert isinstance(session.localize(cv2.resize(img, (half.width, half.height)), half, 3), Published)
    assert warnings == [f"image size changed from {intr.width}x{intr.height} to {half.width}x{half.height}"]
    assert loc.results == []
    empty = tmp_path / "empty.db"
    KeyframeStore.create(empty).close()
    built: list[int] = []
    session = Session(SessionConfig(), lambda store: built.append(len(store)) or loc)
    session.open(empty, readonly=True)
    d = session.localize(img, intr, 4)
    assert d.reason == "keyframe database is empty" and d.warn and built == []


def test_map_to_odom_maths(db, scene):
    """map->odom = T_map_cam inv(T_odom_cam): composing it with odom->camera gives the pose."""
    _, img, intr, T_map_cam = scene
    loc = ScriptedLocalizer([_ok(T_map_cam), _ok(T_map_cam), _ok(T_map_cam)])
    session, warnings = _session(db, loc)
    T_odom_cam = make_T(so3_exp(np.array([0.0, 0.3, 0.05])), np.array([1.4, 0.1, 2.5]))
    d = session.localize(img, intr, 1, T_odom_base=T_odom_cam)
    np.testing.assert_allclose(d.T_map_odom @ T_odom_cam, T_map_cam, atol=1e-12)
    np.testing.assert_allclose(d.T_map_odom, T_map_cam @ invert_T(T_odom_cam), atol=1e-12)
    asked: list[int] = []
    d2 = session.localize(img, intr, 2, T_odom_base=lambda: asked.append(1) or T_odom_cam @ make_T(np.eye(3), [0, 0, 1]))
    assert asked == [1]
    np.testing.assert_allclose(d2.T_map_odom @ T_odom_cam @ make_T(np.eye(3), [0, 0, 1]), T_map_cam, atol=1e-12)

    def missing() -> np.ndarray:
        raise LookupError("no TF odom -> camera at the image stamp: stamp is 2.000 s after the newest transform")
    d3 = session.localize(img, intr, 3, T_odom_base=missing)
    assert isinstance(d3, Published) and d3.T_map_odom is None   # the pose is still good
    assert warnings == ["no TF odom -> camera at the image stamp: stamp is 2.000 s after the newest transform"]


T_BASE_CAM = camera_mount([0.3, 0.0, 1.2], pitch_deg=20.0)   # 0.3 m forward, 1.2 m up, pitched 20 deg down


def test_base_pose_covariance_and_map_odom_through_the_extrinsic(db, scene):
    """The published pose is base_link's, its covariance the camera's carried through the
    extrinsic; map->odom comes from odom->base; a missing extrinsic rejects, never identity."""
    from reloc_vggt_ros.geometry import transform_pose_covariance

    _, img, intr, T_map_cam = scene
    cov_cam = np.diag([1e-4, 2e-4, 3e-4, 4e-5, 5e-5, 6e-5])
    loc = ScriptedLocalizer([_ok(T_map_cam, cov=cov_cam)] * 4)
    session, warnings = _session(db, loc)
    T_odom_base = make_T(so3_exp(np.array([0.0, 0.0, 0.7])), np.array([3.0, -1.0, 0.0]))
    d = session.localize(img, intr, 1, T_odom_base=T_odom_base, T_base_cam=lambda: T_BASE_CAM)
    assert isinstance(d, Published)
    np.testing.assert_allclose(d.T_map_base @ T_BASE_CAM, T_map_cam, atol=1e-12)
    np.testing.assert_array_equal(d.T_map_cam, T_map_cam)
    np.testing.assert_allclose(d.T_map_odom @ T_odom_base, d.T_map_base, atol=1e-12)
    np.testing.assert_allclose(d.covariance, transform_pose_covariance(cov_cam, T_map_cam, T_c_d=invert_T(T_BASE_CAM)),
                               atol=1e-15)
    assert not np.allclose(d.covariance[:3, :3], cov_cam[:3, :3])      # the 1.25 m lever arm shows
    np.testing.assert_allclose(d.covariance[3:, 3:], cov_cam[3:, 3:])  # rotation is the same rigid body's

    def missing() -> np.ndarray:
        raise LookupError("no TF base_link -> camera at the image stamp: frames are not connected in TF")
    d2 = session.localize(img, intr, 2, T_base_cam=missing)
    assert isinstance(d2, Rejected) and d2.warn and "no TF base_link -> camera" in d2.reason
    assert not warnings
    # a "static" extrinsic that moves between frames is reported, and the TF at the stamp is used
    moved = T_BASE_CAM @ make_T(np.eye(3), np.array([0.0, 0.02, 0.0]))
    d3 = session.localize(img, intr, 3, T_base_cam=moved)
    assert isinstance(d3, Published) and any("camera extrinsic changed by 20.0 mm" in w for w in warnings)
    np.testing.assert_allclose(d3.T_map_base @ moved, T_map_cam, atol=1e-12)


def test_a_base_prior_reaches_the_backend_as_the_camera_prior(db, scene):
    """/initialpose is the base's pose; each query hands the backend the camera's, through that
    query's extrinsic (so a prior may come before the camera is known)."""
    _, img, intr, T_map_cam = scene
    loc = ScriptedLocalizer([_ok(T_map_cam)] * 2)
    session, _ = _session(db, loc)
    T_map_base = T_map_cam @ invert_T(T_BASE_CAM)
    cov = np.diag([0.25, 0.25, 0.01, 0.001, 0.001, 0.07])
    session.set_prior(T_map_base, cov)
    session.localize(img, intr, 1, T_base_cam=lambda: T_BASE_CAM)
    prior = loc.priors[-1]
    np.testing.assert_allclose(prior.T_world_cam, T_map_cam, atol=1e-9)
    from reloc_vggt_ros.geometry import transform_pose_covariance
    np.testing.assert_allclose(prior.covariance, transform_pose_covariance(cov, T_map_base, T_c_d=T_BASE_CAM))

    def missing() -> np.ndarray:
        raise LookupError("no TF base_link -> camera (the camera extrinsic) at the stamp")
    d = session.localize(img, intr, 2, T_base_cam=missing)
    assert isinstance(d, Rejected) and "no TF base_link -> camera" in d.reason and len(loc.priors) == 1


def test_camera_pose_of_a_base_pose_in_another_frame():
    """/initialpose and keyframe_pose: base_link in odom -> camera in map, covariance carried."""
    from reloc_vggt_ros.geometry import perturb_pose, pose_covariance_jacobian, pose_delta
    from reloc_vggt_ros.session import camera_pose

    T_map_odom = make_T(so3_exp(np.array([0.0, 0.0, 1.2])), np.array([10.0, 5.0, 0.0]))
    T_odom_base = make_T(so3_exp(np.array([0.0, 0.0, -0.4])), np.array([2.0, 1.0, 0.0]))
    cov = np.diag([0.25, 0.25, 0.01, 0.001, 0.001, 0.07])
    T, C = camera_pose(T_odom_base, cov, T_map_odom, T_BASE_CAM)
    np.testing.assert_allclose(T, T_map_odom @ T_odom_base @ T_BASE_CAM, atol=1e-12)
    # first order: a small base perturbation maps through the same Jacobian
    xi = np.array([1e-4, -2e-4, 1e-4, 1e-5, -1e-5, 2e-5])
    T_moved, _ = camera_pose(perturb_pose(T_odom_base, xi), None, T_map_odom, T_BASE_CAM)
    J = pose_covariance_jacobian(T_odom_base, T_map_odom, T_BASE_CAM)
    np.testing.assert_allclose(pose_delta(T, T_moved), J @ xi, atol=1e-8)
    np.testing.assert_allclose(C, J @ cov @ J.T, atol=1e-14)
    assert camera_pose(T_odom_base, np.zeros((6, 6)))[1] is not None   # no covariance given: left as is


def test_prior_expires_after_prior_timeout(db, scene):
    _, img, intr, T = scene
    clock = Clock()
    loc = ScriptedLocalizer([_ok(T) for _ in range(4)])
    session, _ = _session(db, loc, SessionConfig(prior_timeout_s=30.0), clock)
    session.set_prior(T, np.zeros((6, 6)))                        # all-zero covariance = none given
    for dt in (0.0, 29.0, 1.5, 0.0):                              # at 1000, 1029, 1030.5, 1030.5
        clock.t += dt
        session.localize(img, intr, int(clock.t))
    assert [p is not None for p in loc.priors] == [True, True, False, False]
    assert loc.priors[0].covariance is None
    np.testing.assert_array_equal(loc.priors[0].T_world_cam, T)


def test_prior_without_timeout_lasts_until_the_next_fix(db, scene):
    _, img, intr, T = scene
    clock = Clock()
    loc = ScriptedLocalizer([RelocResult(RelocStatus.NO_MATCH, reason="x"), _ok(T), _ok(T)])
    session, _ = _session(db, loc, SessionConfig(prior_timeout_s=0.0), clock)
    prior = session.set_prior(T, np.eye(6) * 0.25)
    clock.t += 1e6                                                # no expiry by time
    for k in range(3):
        session.localize(img, intr, k)
    assert loc.priors == [prior, prior, None]                     # kept through the miss, used by the fix


def test_live_mapping_acceptance_and_one_refresh_per_burst(tmp_path, scene):
    """Keyframes far enough apart are stored; the map is re-indexed once the burst is written."""
    kfs, img, intr, _ = scene
    poses = [r.T_world_cam for r in read_posed_folder(ROOT / ".." / "shared" / "data" / "fountain-P11",
                                                      check_images=False)]
    db = tmp_path / "live.db"
    KeyframeStore.create(db).close()
    loc = ScriptedLocalizer([_ok(poses[0]) for _ in range(3)])
    built: list[int] = []
    session = Session(SessionConfig(mapping=MappingConfig(enabled=True)),
                      lambda store: built.append(len(store)) or loc)
    session.open(db, readonly=False)
    assert session.localize(img, intr, 0).reason == "keyframe database is empty"
    out = [session.add_keyframe(img, intr, T, 10 + k) for k, T in enumerate(poses[:3])]
    assert [o.added for o in out] == [True] * 3 and out[0].reason == f"keyframe {out[0].kf_id} added"
    nudged = poses[1] @ make_T(so3_exp(np.array([0.0, 0.05, 0.0])), np.array([0.1, 0.0, 0.0]))
    close = session.add_keyframe(img, intr, nudged, 20)
    assert not close.added and close.reason == "keyframe skipped: too close to an existing one"
    turned = poses[1] @ make_T(so3_exp(np.array([0.0, 0.4, 0.0])), np.zeros(3))
    assert session.add_keyframe(img, intr, turned, 21).added         # same place, new direction
    bad = session.add_keyframe(cv2.resize(img, (100, 80)), intr, poses[5], 22)
    assert not bad.added and bad.warn and bad.reason.startswith("keyframe rejected: camera_info is for")
    # still mid-burst: no index yet; burst written: the map is built once, then not again
    assert isinstance(session.localize(img, intr, 30, keyframes_pending=2), Rejected) and built == []
    assert isinstance(session.localize(img, intr, 31), Published) and built == [4]
    assert isinstance(session.localize(img, intr, 32), Published) and built == [4] and loc.refreshes == 0
    assert session.add_keyframe(img, intr, poses[6], 33).added
    assert isinstance(session.localize(img, intr, 34), Published) and loc.refreshes == 1
    session.close()
    with KeyframeStore.open(db, readonly=True) as store:
        assert len(store) == 5
        np.testing.assert_allclose(store.poses()[1][3], turned, atol=1e-9)
        assert store.get_keyframe(store.keyframe_ids()[0]).name == "live_10"
    ro_session, _ = _session(db, ScriptedLocalizer())
    refused = ro_session.add_keyframe(img, intr, poses[8], 40)
    assert not refused.added and refused.reason.startswith("keyframe rejected by the database:") and "read-only" in refused.reason


class BlockingRefreshLocalizer(ScriptedLocalizer):
    """A backend that swaps its map in atomically, whose refresh waits for the test's signal."""

    concurrent_refresh = True

    def __init__(self, results: list[RelocResult]) -> None:
        super().__init__(results)
        import threading

        self.release = threading.Event()
        self.refreshing = threading.Event()

    def refresh(self) -> None:
        self.refreshing.set()
        assert self.release.wait(30)
        self.refreshes += 1


def test_live_refresh_runs_off_the_frame_path(tmp_path, db, scene):
    """A keyframe burst's re-index runs on a background thread: queries keep being answered
    (from the map before it) while it runs; the next burst waits for it. With the refresh on the
    frame path (as before), the second query would wait for the release and the test times out."""
    import threading

    _, img, intr, T = scene
    loc = BlockingRefreshLocalizer([_ok(T) for _ in range(4)])
    session = Session(SessionConfig(mapping=MappingConfig(enabled=True)), lambda store: loc)
    session.open(db, readonly=False)
    assert session.add_keyframe(img, intr, make_T(np.eye(3), np.array([50.0, 0.0, 0.0])), 7).added
    answers: list[object] = []
    worker = threading.Thread(target=lambda: answers.extend(session.localize(img, intr, k) for k in (8, 9)))
    worker.start()
    assert loc.refreshing.wait(10)                  # the first query started the refresh ...
    worker.join(10)
    assert not worker.is_alive() and [type(a) for a in answers] == [Published, Published]   # ... and both answered
    assert session.refreshing and loc.refreshes == 0
    assert session.add_keyframe(img, intr, make_T(np.eye(3), np.array([90.0, 0.0, 0.0])), 10).added
    assert isinstance(session.localize(img, intr, 11), Published)    # one refresh at a time: no second one yet
    loc.release.set()
    assert session.wait_for_refresh(10) and loc.refreshes == 1 and not session.refreshing
    assert isinstance(session.localize(img, intr, 12), Published)    # the pending burst starts the next
    assert session.wait_for_refresh(10) and loc.refreshes == 2
    session.close()


def test_real_geometric_backend_through_the_session(tmp_path, scene):
    """The whole path on real images: index, localize, accept, covariance floors, map->odom."""
    from reloc_vggt_ros.localizer.registry import index_database, make_localizer

    kfs, img, intr, T_gt = scene
    db = tmp_path / "geo.db"
    with KeyframeStore.create(db) as store:
        store.add_keyframes(kfs)
        index_database(store, "geometric")
    session = Session(SessionConfig(), lambda store: make_localizer("geometric", store, top_k=5))
    session.open(db, readonly=True)
    T_odom_cam = make_T(so3_exp(np.array([0.0, 0.1, 0.0])), np.array([1.0, 0.0, 2.0]))
    d = session.localize(img, intr, 1, T_odom_base=T_odom_cam)
    assert isinstance(d, Published), d
    t_err, r_err = pose_error(d.T_map_cam, T_gt)
    assert t_err < 0.10 and r_err < 1.0, (t_err, r_err)
    assert d.result.num_inliers >= 30 and np.all(np.diag(d.covariance) >= 1e-6)
    np.testing.assert_allclose(d.T_map_odom @ T_odom_cam, d.T_map_cam, atol=1e-9)


def test_save_copies_or_checkpoints_through_the_store(tmp_path, db, scene):
    _, img, intr, T = scene
    session, _ = _session(db, ScriptedLocalizer(), SessionConfig(mapping=MappingConfig(enabled=True)),
                          readonly=False)
    far = make_T(np.eye(3), np.array([50.0, 0.0, 0.0]))
    assert session.add_keyframe(img, intr, far, 7).added
    wal = Path(f"{db}-wal")
    assert wal.stat().st_size > 0                                 # the keyframe is in the WAL so far
    copy = tmp_path / "copy.db"
    assert session.save(copy) == f"copied 4 keyframes to {copy}"
    assert session.save(None) == f"4 keyframes checkpointed in {db}"
    alone = tmp_path / "alone.db"                                 # the main file alone holds everything
    alone.write_bytes(db.read_bytes())
    for path in (copy, alone):
        with KeyframeStore.open(path, readonly=True) as store:
            assert len(store) == 4 and store.integrity_check() == "ok", path
            np.testing.assert_allclose(store.poses()[1][-1], far)
    session.close()
