"""The node in this process (no second process, no DDS traffic): configure from the shipped YAML,
then one frame through the worker-side handler with a scripted learned-style backend."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from reloc_vggt_ros.data.posed_folder import read_posed_folder  # noqa: E402
from reloc_vggt_ros.keyframes import KeyframeStore  # noqa: E402
from reloc_vggt_ros.keyframes.build import keyframe_from_posed  # noqa: E402
from reloc_vggt_ros.localizer.base import RelocResult, RelocStatus  # noqa: E402

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample" / "fountain-P11-small"


class Scripted:
    name = "scripted"

    def __init__(self, result: RelocResult) -> None:
        self.result = result

    def localize(self, image, intrinsics, stamp_ns=0, prior=None) -> RelocResult:
        return self.result

    def refresh(self) -> None:
        pass


def test_an_ok_result_with_three_inliers_is_published_with_the_shipped_yaml(tmp_path, monkeypatch):
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    from reloc_vggt_ros.localizer import registry
    from reloc_vggt_ros.ros.convert import bgr_to_image, intrinsics_to_camera_info, ns_to_stamp
    from reloc_vggt_ros.ros.node import RelocNode, _Frame

    recs = read_posed_folder(SAMPLE)
    db = tmp_path / "map.db"
    with KeyframeStore.create(db) as store:
        store.add_keyframes([keyframe_from_posed(r, 320) for r in recs[:2]])
    q = recs[2]
    img = cv2.imread(str(q.path))
    result = RelocResult(RelocStatus.OK, q.T_world_cam, np.diag([1e-3] * 3 + [1e-4] * 3), 0.2, 3, "3 keyframes agree")
    seen = {}

    def fake_make_localizer(name, store, **options):
        seen.update(name=name, config=options["config"])
        return Scripted(result)

    monkeypatch.setattr(registry, "make_localizer", fake_make_localizer)
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(ROOT / "config" / "reloc_vggt.yaml")])
    try:
        node = RelocNode(context=context, parameter_overrides=[Parameter("database_path", value=str(db)),
                                                               Parameter("base_frame", value="")])  # camera pose
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert seen["config"] == registry.make_config("geometric", preset="realtime", top_k=5)
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        image = bgr_to_image(img, Image())
        image.header.frame_id = "camera"
        info = intrinsics_to_camera_info(q.intrinsics, CameraInfo())
        stamp = 1_700_000_000 * 10**9
        ns_to_stamp(stamp, image.header.stamp)
        node._handle_frame(_Frame(stamp, image, info, time.monotonic()))
        assert (node.stats.published, node.stats.last_reason, node.stats.last_inliers) == (1, "localized", 3)
        result.status, result.reason = RelocStatus.LOW_CONFIDENCE, "keyframes disagree"
        node._handle_frame(_Frame(stamp + 1, image, info, time.monotonic()))
        assert (node.stats.published, node.stats.rejected) == (1, 1)
        assert node.stats.last_reason == "low_confidence: keyframes disagree"
        node.trigger_shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize("override, reason", [
    (("geometric.preset", "bogus"), "unknown geometric preset 'bogus'"),
    (("geometric.bogus", 1), "unknown parameter(s) ['geometric.bogus']"),
    (("backend", "nope"), "unknown localizer backend 'nope'"),
])
def test_a_bad_start_value_fails_configure_with_the_reason(tmp_path, override, reason):
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from reloc_vggt_ros.ros.node import RelocNode

    db = tmp_path / "empty.db"
    KeyframeStore.create(db).close()
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "-p", f"{override[0]}:={override[1]}"])
    try:
        node = RelocNode(context=context, parameter_overrides=[Parameter("database_path", value=str(db))])
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.stats.last_reason.startswith("configure failed: ") and reason in node.stats.last_reason
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
