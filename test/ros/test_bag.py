"""Bags from a real posed folder: round trip of images, intrinsics and ground truth; errors;
`reloc-vggt bag play` into a live subscriber."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from reloc_vggt_ros.data.bag import (COMPRESSED_TOPIC, GT_TOPIC, IMAGE_TOPIC, INFO_TOPIC, ground_truth_from_bag,
                                     read_bag, typestore, write_bag_from_folder)
from reloc_vggt_ros.data.posed_folder import read_posed_folder
from reloc_vggt_ros.errors import DataError

SCENE = Path(__file__).parents[2] / ".." / "shared" / "data" / "Herz-Jesus-P8"
SAMPLE = Path(__file__).parents[2] / "sample" / "fountain-P11-small"


def test_query_split_round_trip_with_resize(tmp_path):
    out = write_bag_from_folder(SCENE, tmp_path / "q.mcap", split="query", fps=4.0, max_side=384)
    assert out.is_file()                      # one bare .mcap file, not a directory
    recs = read_posed_folder(SCENE, "query")
    msgs = list(read_bag(out))
    assert [m.topic for m in msgs[:3]] == [IMAGE_TOPIC, INFO_TOPIC, GT_TOPIC]
    assert len(msgs) == 3 * len(recs)
    ts = typestore()
    images = [ts.deserialize_cdr(m.raw, m.msgtype) for m in msgs if m.topic == IMAGE_TOPIC]
    infos = [ts.deserialize_cdr(m.raw, m.msgtype) for m in msgs if m.topic == INFO_TOPIC]
    stamps = [m.t_ns for m in msgs if m.topic == IMAGE_TOPIC]
    assert np.all(np.diff(stamps) == 250_000_000)
    for img_msg, info, rec in zip(images, infos, recs):
        assert (img_msg.width, img_msg.height, img_msg.encoding) == (384, 256, "bgr8")
        ref = cv2.resize(cv2.imread(str(rec.path)), (384, 256), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(img_msg.data.reshape(256, 384, 3), ref)
        expect = rec.intrinsics.scaled(0.25)
        np.testing.assert_allclose(info.k.reshape(3, 3), expect.K)
    gt = ground_truth_from_bag(out)
    assert sorted(gt) == stamps
    for s, rec in zip(stamps, recs):
        np.testing.assert_allclose(gt[s], rec.T_world_cam, atol=1e-9)


def test_compressed_bag_decodes_with_rclpy(tmp_path):
    pytest.importorskip("rclpy")
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage

    from reloc_vggt_ros.ros.convert import compressed_to_bgr

    out = write_bag_from_folder(SCENE, tmp_path / "c.mcap", split="db", compressed=True, max_side=256)
    msgs = [m for m in read_bag(out, {COMPRESSED_TOPIC})]
    assert len(msgs) == len(read_posed_folder(SCENE, "db"))
    img = compressed_to_bgr(deserialize_message(msgs[0].raw, CompressedImage))
    assert img.shape == (171, 256, 3)


def test_errors_name_the_problem(tmp_path):
    out = write_bag_from_folder(SCENE, tmp_path / "q.mcap", max_side=128)
    with pytest.raises(DataError, match="exists"):
        write_bag_from_folder(SCENE, out)
    with pytest.raises(DataError, match="bag not found"):
        list(read_bag(tmp_path / "missing.mcap"))
    (tmp_path / "junk.mcap").write_bytes(b"not a bag")
    with pytest.raises(DataError, match="cannot read bag"):
        list(read_bag(tmp_path / "junk.mcap"))
    with pytest.raises(DataError, match="no ground truth"):
        ground_truth_from_bag(out, topic="/nope")


@pytest.mark.ros
def test_bag_play_command_delivers_every_image(tmp_path):
    """`reloc-vggt bag play` publishes the bag's raw CDR; a subscriber receives all of it."""
    pytest.importorskip("rclpy")
    import subprocess
    import sys
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from reloc_vggt_ros.dds import localhost_env
    from reloc_vggt_ros.ros.qos import sensor_qos

    bag = write_bag_from_folder(SAMPLE, tmp_path / "q.mcap", split="query", fps=10.0, max_side=320)
    domain = 99
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("listener", context=context)
    ex = SingleThreadedExecutor(context=context)
    ex.add_node(node)
    got = []
    node.create_subscription(Image, "/camera/image_raw", got.append, sensor_qos(20))
    env = localhost_env()
    env["ROS_DOMAIN_ID"] = str(domain)
    proc = subprocess.Popen([sys.executable, "-m", "reloc_vggt_ros.cli", "bag", "play", str(bag), "--rate", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.02)
        for _ in range(50):
            ex.spin_once(timeout_sec=0.02)
        out = proc.communicate(timeout=10)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert proc.returncode == 0, out
    assert "published 12 messages" in out                 # image, camera_info, ground truth per query
    assert len(got) == 4 and [(m.width, m.height) for m in got] == [(320, 214)] * 4
