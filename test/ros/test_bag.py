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


def _bag_play(bag: Path, domain: int, args: list[str], subscribe, while_playing=None) -> str:
    """`reloc-vggt bag play BAG ARGS` as a process while a listener node spins; ``subscribe(node)``
    creates its subscriptions, ``while_playing(node)`` runs on each spin. Returns the CLI output."""
    import subprocess
    import sys
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from reloc_vggt_ros.dds import localhost_env

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("listener", context=context)
    ex = SingleThreadedExecutor(context=context)
    ex.add_node(node)
    subscribe(node)
    env = localhost_env()
    env["ROS_DOMAIN_ID"] = str(domain)
    proc = subprocess.Popen([sys.executable, "-m", "reloc_vggt_ros.cli", "bag", "play", str(bag), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.02)
            if while_playing is not None:
                while_playing(node)
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
    return out


@pytest.mark.ros
def test_bag_play_command_delivers_every_image(tmp_path):
    """`reloc-vggt bag play` publishes the bag's raw CDR; a subscriber receives all of it."""
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import Image

    from reloc_vggt_ros.ros.qos import sensor_qos

    bag = write_bag_from_folder(SAMPLE, tmp_path / "q.mcap", split="query", fps=10.0, max_side=320)
    got = []
    out = _bag_play(bag, 99, ["--rate", "2"],
                    lambda node: node.create_subscription(Image, "/camera/image_raw", got.append, sensor_qos(20)))
    assert "published 12 messages" in out                 # image, camera_info, ground truth per query
    assert len(got) == 4 and [(m.width, m.height) for m in got] == [(320, 214)] * 4


@pytest.mark.ros
def test_bag_play_clock_and_a_late_joiner_gets_the_static_tree(tmp_path):
    """`reloc-vggt bag play --clock` of a robot bag: /clock follows the bag time; a /tf_static
    reader created after the player published it still gets the mount (transient local)."""
    pytest.importorskip("rclpy")
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from tf2_msgs.msg import TFMessage

    from reloc_vggt_ros.data.bag import START_NS, RobotBag
    from reloc_vggt_ros.ros.convert import stamp_to_ns
    from reloc_vggt_ros.ros.qos import TF_QOS, TF_STATIC_QOS, sensor_qos

    bag = write_bag_from_folder(SAMPLE, tmp_path / "r.mcap", max_side=160, robot=RobotBag(tf_rate_hz=10.0))
    images, clock, tf, static = [], [], [], []

    def subscribe(node) -> None:
        node.create_subscription(Image, "/camera/image_raw", images.append, sensor_qos(20))
        node.create_subscription(Clock, "/clock", lambda m: clock.append(stamp_to_ns(m.clock)),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
        node.create_subscription(TFMessage, "/tf", tf.append, TF_QOS)

    def join_late(node) -> None:
        if tf and not hasattr(join_late, "sub"):       # /tf_static was published before any /tf
            join_late.sub = node.create_subscription(TFMessage, "/tf_static", static.append, TF_STATIC_QOS)

    _bag_play(bag, 97, ["--rate", "1", "--clock", "50"], subscribe, join_late)
    assert hasattr(join_late, "sub"), "no /tf from the player"
    assert len(images) == 4 and len(static) == 1, (len(images), len(static))
    assert [(t.header.frame_id, t.child_frame_id) for t in static[0].transforms] == [("base_link", "camera")]
    assert clock == sorted(clock) and len(clock) > 30, len(clock)        # ~1.5 s at 50 Hz, never backwards
    assert START_NS - 1 <= clock[0] and clock[-1] == START_NS + 1_500_000_000


@pytest.mark.ros
def test_player_loops_and_its_clock_jumps_back_at_each_start(tmp_path):
    """BagPlayer with loops=2 (what `bag play --loop` repeats): every message twice, /clock back
    to the bag start at the second pass — the bag loop a use_sim_time node must survive."""
    pytest.importorskip("rclpy")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    from reloc_vggt_ros.data.bag import START_NS
    from reloc_vggt_ros.ros.convert import stamp_to_ns
    from reloc_vggt_ros.ros.player import BagPlayer

    bag = write_bag_from_folder(SAMPLE, tmp_path / "q.mcap", fps=10.0, max_side=64)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=96)
    node = rclpy.create_node("looper", context=context)
    ex = SingleThreadedExecutor(context=context)
    ex.add_node(node)
    clock: list[int] = []
    node.create_subscription(Clock, "/clock", lambda m: clock.append(stamp_to_ns(m.clock)),
                             QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    try:
        player = BagPlayer(node, bag, clock_hz=100.0)
        spin = lambda t: ex.spin_once(timeout_sec=t)  # noqa: E731
        assert player.wait_for_subscribers("/clock", 10, spin)
        assert player.play(2.0, spin, loops=2) == 2 * 12
        for _ in range(50):
            spin(0.01)
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    back = [i for i in range(1, len(clock)) if clock[i] < clock[i - 1]]
    assert len(back) == 1 and clock[back[0]] == START_NS, back       # one jump: to the start, once
    assert clock[back[0] - 1] == START_NS + 300_000_000 == clock[-1]
