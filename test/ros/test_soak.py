"""A short soak of the node process (``bench.soak``): memory, threads and fds stay flat, and
every frame the node receives is published, rejected with a reason or counted as a drop
(or, at the end, still waits in the stamp matcher for a camera_info DDS lost).

600 frames at 30 Hz (20 s of stream) instead of the bench's 10,000: the suite must stay within
its time budget on 2 cores; the judging (warm-up, then flat) is the bench's own code.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import pytest

pytest.importorskip("rclpy")

from bench import soak  # noqa: E402
from bench.node_rate import SCENE  # noqa: E402
from reloc_vggt_ros.data.posed_folder import read_posed_folder  # noqa: E402
from reloc_vggt_ros.keyframes import KeyframeStore  # noqa: E402
from reloc_vggt_ros.keyframes.build import keyframe_from_posed  # noqa: E402
from reloc_vggt_ros.localizer.registry import index_database  # noqa: E402

from ros_harness import next_domain_id  # noqa: E402

pytestmark = pytest.mark.ros

FRAMES = 600


@pytest.fixture(scope="module")
def temple_map(tmp_path_factory) -> Path:
    """8 real temple keyframes, indexed (a full 31-keyframe build takes a minute on a loaded machine)."""
    path = tmp_path_factory.mktemp("soak") / "temple8.db"
    with KeyframeStore.create(path, creator="test") as store:
        store.add_keyframes([keyframe_from_posed(r) for r in read_posed_folder(SCENE, "db")[:8]])
        index_database(store, "geometric")
    return path


@pytest.mark.slow
def test_short_soak_is_flat_and_accounts_for_every_frame(tmp_path: Path, temple_map: Path) -> None:
    r = soak.run(FRAMES, 30.0, next_domain_id(), tmp_path, {"geometric.preset": "realtime"},
                 warmup_s=8.0, window_s=5.0, db=temple_map)
    assert r["node_exit_code"] == 0, Path(r["node_log"]).read_text()[-3000:]
    assert r["frames_sent"] == FRAMES
    # best-effort image subscription: DDS may lose a frame on a loaded machine before the node sees it
    assert r["frames_received"] >= 0.95 * FRAMES, r
    # published + rejected + dropped == received, but for images still waiting for a lost camera_info
    assert 0 <= r["frames_unaccounted"] <= soak.SYNC_DEPTH, r
    v = r["verdicts"]
    assert v["rss_flat"], (r["rss_mb_first"], r["rss_mb_max_after_warmup"], r["rss_mb_last"])
    assert v["threads_constant"], r["threads_min_max_after_warmup"]
    assert v["fds_constant"], r["fds_min_max_after_warmup"]
    assert r["frames_published"] >= 5 and r["frames_answered"] >= 5, r   # the node localized (20 at load 25)
    assert r["backlog_max_after_warmup"] <= soak.MAX_BACKLOG, r["backlog_max_after_warmup"]
    assert len(r["curves"]["samples"]) >= 15                # one sample a second over the whole run
    png = soak.plot(r, tmp_path / "soak.png")
    assert png.stat().st_size > 10_000


def test_every_image_the_stamp_matcher_drops_is_counted(tmp_path: Path) -> None:
    """Found by the soak: camera_info that overtakes older images drops them all at once; each
    must count as a rejection, or received - processed - dropped grows for ever (no real queue)."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    from reloc_vggt_ros.ros.convert import bgr_to_image, intrinsics_to_camera_info, ns_to_stamp
    from reloc_vggt_ros.ros.node import RelocNode

    db = tmp_path / "empty.db"
    KeyframeStore.create(db, creator="test").close()
    rec = read_posed_folder(SCENE, "db")[0]
    image = bgr_to_image(cv2.imread(str(rec.path)), Image())
    info = intrinsics_to_camera_info(rec.intrinsics, CameraInfo())
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = RelocNode(context=context, parameter_overrides=[Parameter("database_path", value=str(db))])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        t0 = 1_700_000_000 * 10**9
        for k in range(4):                       # four images, their camera_info not (yet) there
            ns_to_stamp(t0 + k * 33_000_000, image.header.stamp)
            node.image_callback(image)
        ns_to_stamp(t0 + 3 * 33_000_000, info.header.stamp)
        node.camera_info_callback(info)          # pairs the newest; the three older ones can never pair
        end = time.monotonic() + 30
        while node.stats.processed < 4 and time.monotonic() < end:
            time.sleep(0.05)
        s = node.stats
        assert (s.received, s.unmatched_images) == (4, 3)
        assert s.processed + s.dropped == s.received, (s.received, s.processed, s.dropped)
        node.trigger_shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
