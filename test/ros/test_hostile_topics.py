"""Hostile topics: oversized / foreign images, bad stamps, a camera_info flood, bad poses.

Unit level (no DDS): the decoders refuse a 10,000 x 10,000 image from its fields or header before
copying, and the stamp matcher stays at its depth under 1,000 unmatched camera_info. Process
level: one node per image transport (raw, then compressed) gets the hostile messages in sequence
and must stay alive, name each reason in /diagnostics, keep its memory flat and still localize a
good image afterwards. The case -> reason table is printed (``pytest -s``) for docs/ros.md.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg")

from bench.hostile_topics import MS, S, T0, build_scene, initialpose, jpeg_claiming  # noqa: E402
from reloc_vggt_ros.errors import DataError  # noqa: E402
from reloc_vggt_ros.ros.sync import StampMatcher  # noqa: E402

from ros_harness import NodeProcess, Probe, next_domain_id  # noqa: E402

@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """3 fountain keyframes at 320 px (geometric index) and the held-out query 0001.jpg."""
    return build_scene(tmp_path_factory.mktemp("db"))


# ----------------------------------------------------------------------------- no DDS
def test_raw_10k_image_is_refused_before_any_copy():
    from reloc_vggt_ros.ros.convert import decode_raw_image

    data = bytes(10_000 * 10_000)                      # an honest 100 MB mono8 buffer
    tracemalloc.start()
    with pytest.raises(DataError, match=r"image is 10000x10000 = 100.0 MP, over max_image_pixels = 25000000"):
        decode_raw_image("mono8", 10_000, 10_000, 10_000, data, max_pixels=25_000_000)
    with pytest.raises(DataError, match="over max_image_pixels"):  # a claim without the data
        decode_raw_image("bgr8", 10_000, 10_000, 30_000, bytes(640 * 480 * 3), max_pixels=25_000_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, peak
    assert decode_raw_image("mono8", 100, 100, 100, data[:10_000], max_pixels=10_000).shape == (100, 100, 3)


def test_compressed_10k_and_foreign_formats_are_refused_from_the_header(scene):
    from sensor_msgs.msg import CompressedImage

    from reloc_vggt_ros.ros.convert import compressed_to_bgr

    img = scene[1]
    with pytest.raises(DataError, match=r"jpeg image is 10000x10000 = 100.0 MP, over max_image_pixels"):
        compressed_to_bgr(CompressedImage(format="jpeg", data=jpeg_claiming(img, 10_000, 10_000)), 25_000_000)
    with pytest.raises(DataError, match="neither JPEG nor PNG"):
        compressed_to_bgr(CompressedImage(format="bmp", data=cv2.imencode(".bmp", img)[1].tobytes()), 25_000_000)
    for ext in (".jpg", ".png"):
        out = compressed_to_bgr(CompressedImage(data=cv2.imencode(ext, img)[1].tobytes()), img.shape[0] * img.shape[1])
        assert out.shape == img.shape


def test_a_camera_info_flood_stays_at_the_sync_depth():
    sync: StampMatcher = StampMatcher(10 * MS, depth=5)
    for k in range(1000):                               # 1,000 camera_info, no image
        sync.add_b(T0 + k * MS, object())
        assert sync.pending() <= (0, 5)
    assert sync.unmatched_b == 995
    image = object()
    assert sync.add_a(T0 + 999 * MS, image)[1] is image  # the newest still pairs


def test_bench_table_has_a_reason_for_every_case(tmp_path, capsys):
    """The in-process table of bench.hostile_topics (the docs' rows): every case named, then a fix."""
    from bench.hostile_topics import main

    assert main(["--json", str(tmp_path / "t.json")]) == 0
    rows = {r["case"]: r["reason"] for r in json.loads((tmp_path / "t.json").read_text())}
    assert rows["raw Image 10000x10000"].startswith("image is 10000x10000 = 100.0 MP")
    assert rows["CompressedImage BMP bytes"].startswith("compressed image does not decode: neither JPEG nor PNG")
    assert rows["1000 camera_info, no image"] == "995 camera_info dropped without a matching image (sync queue depth 5)"
    assert rows["keyframe_pose in frame base_link"] == ("keyframe rejected: keyframe_pose in frame 'base_link': no TF "
                                                        "map -> base_link (keyframe_pose) at the stamp: frames 'map' "
                                                        "and 'base_link' are not connected in TF")
    assert rows["good image afterwards"] == "localized"
    assert "raw Image 10000x10000" in capsys.readouterr().out


# ----------------------------------------------------------------------------- one node process
def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _info(intr, stamp_ns: int):
    from sensor_msgs.msg import CameraInfo

    from reloc_vggt_ros.ros.convert import intrinsics_to_camera_info, ns_to_stamp

    msg = intrinsics_to_camera_info(intr, CameraInfo())
    msg.header.frame_id = "camera"
    ns_to_stamp(stamp_ns, msg.header.stamp)
    return msg


def _send_compressed(probe: Probe, data: bytes, intr, stamp_ns: int) -> None:
    from sensor_msgs.msg import CompressedImage

    from reloc_vggt_ros.ros.convert import ns_to_stamp

    probe.info_pub.publish(_info(intr, stamp_ns))
    msg = CompressedImage(format="jpeg", data=data)
    msg.header.frame_id = "camera"
    ns_to_stamp(stamp_ns, msg.header.stamp)
    probe.compressed_pub.publish(msg)


def _send_raw_claim(probe: Probe, img: np.ndarray, intr, stamp_ns: int, width: int, height: int) -> None:
    """A raw Image whose fields claim ``width x height`` (data of the real small image)."""
    from sensor_msgs.msg import Image

    from reloc_vggt_ros.ros.convert import bgr_to_image, ns_to_stamp

    probe.info_pub.publish(_info(intr, stamp_ns))
    msg = bgr_to_image(img, Image())
    msg.width, msg.height, msg.step = width, height, width * 3
    msg.header.frame_id = "camera"
    ns_to_stamp(stamp_ns, msg.header.stamp)
    probe.image_pub.publish(msg)


@pytest.mark.ros
def test_hostile_topics_one_node_each_transport(tmp_path, scene):
    import time

    db0, img, intr, T_gt = scene
    domain = next_domain_id()
    probe = Probe(domain)
    table: list[tuple[str, str]] = []

    def expect(case: str, pattern: str, node: NodeProcess, key: str = "last_reason") -> None:
        d = probe.wait_diag(pattern, key=key, node=node, timeout=30)
        table.append((case, d[key]))

    def good_pose(node: NodeProcess, send) -> None:
        n = len(probe.poses)
        send()
        probe.spin_until(lambda: len(probe.poses) > n, 120, "a pose for the good image", node)
        from reloc_vggt_ros.geometry import pose_error
        from reloc_vggt_ros.ros.convert import pose_to_T

        t_err, _ = pose_error(pose_to_T(probe.poses[-1].pose.pose), T_gt)
        assert t_err < 0.5, t_err

    try:
        # --- raw transport, mapping on (keyframe_pose subscribed)
        db = tmp_path / "raw.db"
        shutil.copy(db0, db)
        node = NodeProcess(tmp_path, domain, {"database_path": str(db), "diagnostics_rate_hz": 20.0,
                                              "mapping.enabled": True}, name="raw")
        try:
            probe.wait_for_node(node)
            probe.spin_until(lambda: probe.kf_pub.get_subscription_count() > 0, 10, "keyframe_pose subscription", node)
            rss0 = _rss_kb(node.proc.pid)
            _send_raw_claim(probe, img, intr, T0 + 1 * S, 10_000, 10_000)
            expect("raw Image 10000x10000", r"image is 10000x10000 = 100.0 MP, over max_image_pixels", node)
            probe.send_frame(img, intr, 0)
            expect("image stamp zero", r"image stamp is zero", node)
            now = time.time_ns()
            probe.send_frame(img, intr, now + 3600 * S)
            expect("image stamp 1 h ahead", r"image stamp is 3\d{3}\.\d s in the future", node)
            for k in range(1000):                                  # ~1 s of 1 kHz camera_info, no image
                probe.info_pub.publish(_info(intr, T0 + 2 * S + k * MS))
                if k % 50 == 0:
                    probe.spin(0.05)
            expect("1000 camera_info in ~1 s, no image", r"camera_info dropped without a matching image", node,
                   key="last_warning")
            # the node may still be working through the flood (each drop rewrites last_warning): wait until
            # the warning stopped changing for 10 diagnostics (0.5 s) before the next case reads it
            probe.spin_until(lambda: len(probe.diags) >= 10 and len({d.get("last_warning") for d in probe.diags[-10:]}) == 1,
                             60, "the camera_info flood to be worked through", node)
            probe.prior_pub.publish(initialpose(x=float("nan")))
            expect("initialpose NaN position", r"ignored initialpose: pose is not finite", node, key="last_warning")
            probe.prior_pub.publish(initialpose(quat=(0.0, 0.0, 0.0, 0.0)))
            expect("initialpose zero quaternion", r"ignored initialpose: pose quaternion is zero", node,
                   key="last_warning")
            probe.send_keyframe_pose(T_gt, T0 + 3 * S, frame_id="base_link")
            expect("keyframe_pose in frame base_link", r"keyframe rejected: keyframe_pose in frame 'base_link': no TF map",
                   node, key="last_keyframe_reason")
            good_pose(node, lambda: probe.send_frame(img, intr, T0 + 4 * S))
            grown_mb = (_rss_kb(node.proc.pid) - rss0) / 1024
            table.append(("raw node RSS growth over the sequence", f"{grown_mb:.1f} MB"))
            assert grown_mb < 150, grown_mb   # a decoded 10k bgr8 image alone would be 286 MB
            assert node.alive()
        finally:
            assert node.stop() == 0, node.log()
        # --- compressed transport
        node = NodeProcess(tmp_path, domain, {"database_path": str(db0), "diagnostics_rate_hz": 20.0,
                                              "use_compressed": True}, name="compressed")
        try:
            probe.wait_for_node(node, compressed=True)
            _send_compressed(probe, jpeg_claiming(img, 10_000, 10_000), intr, T0 + 5 * S)
            expect("CompressedImage jpeg header 10000x10000", r"jpeg image is 10000x10000 = 100.0 MP", node)
            _send_compressed(probe, cv2.imencode(".bmp", img)[1].tobytes(), intr, T0 + 6 * S)
            expect("CompressedImage BMP bytes", r"neither JPEG nor PNG", node)
            good_pose(node, lambda: _send_compressed(probe, cv2.imencode(".png", img)[1].tobytes(), intr, T0 + 7 * S))
            assert node.alive()
        finally:
            assert node.stop() == 0, node.log()
    finally:
        probe.close()
        width = max(len(c) for c, _ in table) if table else 0
        print("\n" + "\n".join(f"{c:<{width}}  {r}" for c, r in table))
