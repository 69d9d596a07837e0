"""Replay evaluation: the real node in its own process, a bag played into it, poses scored.

``evaluate`` starts ``reloc_vggt_node`` (``python -m reloc_vggt_ros.ros.node``) on a private
ROS domain, plays the bag's images and camera_info, records ``/relocalized_pose``, matches
each estimate to the bag's ground truth by header stamp and writes ``metrics.json``,
``poses.csv`` and ``evaluation.png`` into ``out_dir``. Latency is measured end to end: from
publishing the image to receiving its pose, both on this host's monotonic clock.

By default (``rate=0``) the player waits for the node's answer to each image (lockstep), so the
score measures accuracy, not throughput; ``rate > 0`` replays at bag speed times ``rate`` and
frames the node cannot keep up with count as not localized.

A robot-style bag (``bag from-images --robot``: ``/tf_static``, ``/tf``, the base pose as ground
truth) is played with its TF and scored as the base pose; a camera-only bag (no ``/tf_static``)
runs the node with ``base_frame: ''``. ``sim_time`` runs the node with ``use_sim_time`` and makes
the player its ``/clock`` (bag time, standing still while the node answers in lockstep).

This module drives ROS (a node process and a bag player); the scoring and reporting it ends
with are ROS-free and live in ``eval/`` (``eval.report``, ``eval.metrics``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.bag import (COMPRESSED_TOPIC, IMAGE_TOPIC, INFO_TOPIC, TF_STATIC_TOPIC, TF_TOPIC, ground_truth_from_bag,
                        has_topic)
from ..dds import localhost_env
from ..errors import DataError, RelocError
from ..eval.report import EvalRun, map_poses, score, write_outputs

__all__ = ["evaluate", "node_command", "start_node", "stop_node", "NODE_MODULE", "NODE_NAME"]

logger = logging.getLogger(__name__)

NODE_MODULE = "reloc_vggt_ros.ros.node"
NODE_NAME = "reloc_vggt_node"


def node_command(db: Path, params_file: Path | None, overrides: dict[str, Any] | None = None,
                 remap: dict[str, str] | None = None) -> list[str]:
    """argv that runs the node with ``params_file`` then node-scoped overrides (they win)."""
    cmd = [sys.executable, "-m", NODE_MODULE, "--ros-args"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    values = {"database_path": str(db), **(overrides or {})}
    for name, value in values.items():
        if isinstance(value, bool):
            value = str(value).lower()
        cmd += ["-p", f"{NODE_NAME}:{name}:={value}"]
    for src, dst in (remap or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def start_node(db: Path, params_file: Path | None, domain_id: int, log_path: Path,
               overrides: dict[str, Any] | None = None, remap: dict[str, str] | None = None) -> subprocess.Popen:
    """The node as a child process on ``domain_id`` (loopback DDS), output to ``log_path``."""
    env = localhost_env()
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop_node via the Popen
    cmd = node_command(db, params_file, overrides, remap)
    logger.debug("starting node: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc._log = log  # type: ignore[attr-defined]
    return proc


def stop_node(proc: subprocess.Popen, timeout_s: float = 20.0) -> int:
    """SIGINT, wait, then SIGKILL as a last resort; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.error("node did not stop within %.0f s; killing it", timeout_s)
            proc.kill()
            proc.wait()
    log = getattr(proc, "_log", None)
    if log is not None:
        log.close()
    return int(proc.returncode)


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def evaluate(db: Path | str, bag: Path | str, out_dir: Path | str, params_file: Path | str | None = None,
             rate: float = 0.0, domain_id: int | None = None, start_timeout_s: float = 120.0,
             frame_timeout_s: float = 60.0, overrides: dict[str, Any] | None = None,
             sim_time: bool = False) -> dict[str, Any]:
    """Run the node on ``bag`` against ``db``; write and return the metrics (see module doc)."""
    db, bag, out_dir = Path(db), Path(bag), Path(out_dir)
    if not db.is_file():
        raise DataError(f"database not found: {db}")
    out_dir.mkdir(parents=True, exist_ok=True)
    gt = ground_truth_from_bag(bag)
    domain = domain_id if domain_id is not None else int(os.environ.get("RELOC_EVAL_DOMAIN_ID", 90 + os.getpid() % 10))
    auto: dict[str, Any] = {"diagnostics_rate_hz": 20.0, "use_compressed": has_topic(bag, COMPRESSED_TOPIC)}
    if not has_topic(bag, TF_STATIC_TOPIC):
        auto["base_frame"] = "''"          # a camera-only bag: its ground truth is the camera pose
    if sim_time:
        auto["use_sim_time"] = True
    overrides = {**auto, **(overrides or {})}
    remap = {"image": IMAGE_TOPIC, "image/compressed": COMPRESSED_TOPIC, "camera_info": INFO_TOPIC}
    log_path = out_dir / "node.log"
    proc = start_node(db, Path(params_file) if params_file else None, domain, log_path, overrides, remap)
    try:
        run = _replay(bag, gt, proc, domain, rate, start_timeout_s, frame_timeout_s, log_path, sim_time)
    finally:
        code = stop_node(proc)
    if code not in (0, -signal.SIGINT):
        logger.warning("node exited with code %s; log: %s", code, log_path)
    metrics = score(run, map_poses(db))
    metrics.update(database=str(db), bag=str(bag), rate=rate, sim_time=sim_time, node_exit_code=code)
    write_outputs(run, metrics, out_dir)
    return metrics


def _replay(bag: Path, gt: dict[int, np.ndarray], proc: subprocess.Popen, domain: int, rate: float,
            start_timeout_s: float, frame_timeout_s: float, log_path: Path, sim_time: bool = False) -> EvalRun:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped

    from .convert import pose_to_T, stamp_to_ns
    from .executor import make_executor
    from .player import BagPlayer
    from .qos import DIAGNOSTICS_QOS, POSE_QOS

    run = EvalRun(gt=gt)
    context = rclpy.Context()
    rclpy.init(args=["reloc_vggt_eval"], context=context, domain_id=domain)  # not sys.argv: -p X:=Y is not a remap
    node = rclpy.create_node("reloc_vggt_eval", context=context)
    executor = make_executor(context)
    executor.add_node(node)

    def on_pose(msg: Any) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        run.estimates[stamp] = pose_to_T(msg.pose.pose)
        run.covariances[stamp] = np.asarray(msg.pose.covariance, float).reshape(6, 6)
        if stamp in run.published_at:
            run.latency_ms[stamp] = (time.monotonic() - run.published_at[stamp]) * 1e3

    def on_diag(msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith(NODE_NAME):   # + the stamp: bag time with sim time, else wall time
                run.diagnostics = {**{kv.key: kv.value for kv in status.values},
                                   "header_stamp_ns": str(stamp_to_ns(msg.header.stamp))}

    node.create_subscription(PoseWithCovarianceStamped, "/relocalized_pose", on_pose, POSE_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, DIAGNOSTICS_QOS)
    spin = lambda t: executor.spin_once(timeout_sec=t)  # noqa: E731
    try:
        player = BagPlayer(node, bag, topics={IMAGE_TOPIC, COMPRESSED_TOPIC, INFO_TOPIC, TF_TOPIC, TF_STATIC_TOPIC},
                           clock_hz=40.0 if sim_time else 0.0)
        image_topic = IMAGE_TOPIC if IMAGE_TOPIC in player.publishers else COMPRESSED_TOPIC
        if not player.wait_for_subscribers(image_topic, start_timeout_s, spin, lambda: proc.poll() is None):
            raise RelocError(f"node did not come up (exit code {proc.poll()}); last log lines:\n{_tail(log_path)}")
        if sim_time:  # the node's /clock reader must match before bag time can drive it
            player.wait_for_subscribers("/clock", start_timeout_s, spin, lambda: proc.poll() is None)
            player.publish_clock(player.messages[0].t_ns)
        spin(0.5)  # let camera_info and TF discovery settle too
        # within a stamp the image goes last, so the node pairs it (and finds TF) the moment it lands
        player.messages.sort(key=lambda m: (m.t_ns, m.topic == image_topic))

        def published(m: Any, now: float) -> None:
            if m.topic == image_topic:
                run.published_at[m.t_ns] = now

        def wait_answer(m: Any) -> None:
            deadline = time.monotonic() + frame_timeout_s
            while time.monotonic() < deadline and proc.poll() is None:
                if m.t_ns in run.estimates or int(run.diagnostics.get("last_stamp_ns", "0")) >= m.t_ns:
                    return
                player.publish_clock(m.t_ns, force=False)   # bag time stands still while the node works
                spin(0.005)
            logger.warning("no answer for image %d within %.0f s", m.t_ns, frame_timeout_s)

        player.play(rate, spin, published, wait_answer if rate == 0 else None, image_topic)
        _settle(run, spin, proc, frame_timeout_s)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return run


def _settle(run: EvalRun, spin: Any, proc: subprocess.Popen, timeout_s: float) -> None:
    """After the last image: wait until the node answered it or stopped processing."""
    last = max(run.published_at) if run.published_at else 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if last in run.estimates or int(run.diagnostics.get("last_stamp_ns", "0")) >= last:
            break
        spin(0.01)
    end = time.monotonic() + 0.3  # diagnostics of the final frame
    while time.monotonic() < end:
        spin(0.02)
