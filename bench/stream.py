"""A 30 Hz camera stream with odometry through a real scene, localized by the node over loopback DDS.

    .venv/bin/python -m bench.stream [--rate 30] [--frames N] [--kidnap-at K] --json FILE

The stream (:func:`make_stream`) is built from real images: a trajectory around the
``middlebury-temple-ring`` object through its 47 posed views in azimuth order, ``--speed-deg-s``
around the object. The orientation is slerped smoothly from view to view; the camera centre is
that of the nearest real view (it steps to the next view's centre half way between them), so
every frame is the nearest real image re-rendered at 640x480 by the homography of a pure
rotation, which is exact for any scene: the ground truth of every frame is exact, and the step
between views is a real viewpoint change (7.7 deg around the object, in one frame).
Odometry is the true motion with noise (5 % of each step's translation and rotation plus a
random walk), published as TF ``odom -> camera`` at every frame stamp. ``--kidnap-at K`` moves
the camera half way round the ring at frame K while odometry goes on as if nothing happened.

The node (``tracking.enabled``, ``geometric.preset: realtime``, ``odom_frame: odom``) runs in its
own process; each frame is published at the stream rate and the pose (if any) recorded with its
arrival time. ``--in-process`` runs no node: tracking and per-frame relocalization alternate frame
by frame on the same frames in this process (their cost ratio under the same load). ``--paced
{process,thread}`` runs no node either: the frames at the stream rate through the node's worker
queue into ``TrackingLocalizer`` with background relocalizations in the worker process or on a
thread, and reports the tracked frames' compute while a background relocalization runs and
otherwise (what the worker process is for). Reported: latency publish -> pose p50/p95/max (all frames and tracked frames only),
frames answered vs sent, error against the ground truth over time, the share of frames served by
tracking, and (kidnap) the largest error published between the kidnap and the first pose again
within the gate, plus a plot (``--plot``). ``--no-tracking`` runs the same stream with per-frame
relocalization (the comparison baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from reloc_vggt_ros.data import PosedImage, load_image, read_posed_folder
from reloc_vggt_ros.dds import ensure_localhost_dds
from reloc_vggt_ros.geometry import Intrinsics, invert_T, make_T, pose_error, so3_exp, so3_log

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT.parent / "shared" / "data" / "middlebury-temple-ring"
SIZE = (640, 480)


@dataclass(frozen=True)
class StreamFrame:
    stamp_ns: int
    T_world_cam: np.ndarray      # ground truth
    T_odom_cam: np.ndarray       # noisy odometry
    source: int                  # index of the real image it is rendered from
    kidnapped: bool              # at or after the kidnap


def object_centre(recs: list[PosedImage]) -> np.ndarray:
    """The point closest (least squares) to every optical axis: what the ring looks at."""
    A, b = np.zeros((3, 3)), np.zeros(3)
    for r in recs:
        d = r.T_world_cam[:3, 2]
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ r.T_world_cam[:3, 3]
    return np.linalg.solve(A, b)


def ring_order(recs: list[PosedImage], centre: np.ndarray) -> list[int]:
    """The views sorted by azimuth around ``centre`` (in the plane of the camera centres)."""
    C = np.stack([r.T_world_cam[:3, 3] for r in recs]) - centre
    normal = np.linalg.svd(C - C.mean(0))[2][2]
    u = C[0] - normal * (C[0] @ normal)
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    return [int(i) for i in np.argsort(np.arctan2(C @ v, C @ u))]


def interpolate(T_a: np.ndarray, T_b: np.ndarray, s: float) -> np.ndarray:
    R = so3_exp(s * so3_log(T_b[:3, :3] @ T_a[:3, :3].T)) @ T_a[:3, :3]
    return make_T(R, (1 - s) * T_a[:3, 3] + s * T_b[:3, 3])


def make_stream(recs: list[PosedImage], frames: int, rate_hz: float, speed_deg_s: float, kidnap_at: int | None,
                odom_noise: float = 0.05, seed: int = 0, start_stamp_ns: int = 1_700_000_000 * 10**9
                ) -> list[StreamFrame]:
    """The trajectory, its ground truth and odometry (module doc)."""
    rng = np.random.default_rng(seed)
    centre = object_centre(recs)
    order = ring_order(recs, centre)
    poses = [recs[i].T_world_cam for i in order]
    gaps = [float(np.linalg.norm(so3_log(poses[(i + 1) % len(poses)][:3, :3] @ poses[i][:3, :3].T)))
            for i in range(len(poses))]
    cum = np.concatenate([[0.0], np.cumsum(gaps)])            # ring angle at each view (rad)
    step = np.radians(speed_deg_s) / rate_hz
    out: list[StreamFrame] = []
    T_odom = np.eye(4)
    prev_gt = None
    for k in range(frames):
        kid = kidnap_at is not None and k >= kidnap_at
        a = (k * step + (np.pi if kid else 0.0)) % cum[-1]
        i = int(np.searchsorted(cum, a, side="right") - 1)
        s = (a - cum[i]) / gaps[i]
        src = order[i] if s < 0.5 else order[(i + 1) % len(poses)]
        T_gt = make_T(interpolate(poses[i], poses[(i + 1) % len(poses)], s)[:3, :3], recs[src].T_world_cam[:3, 3])
        if prev_gt is not None:
            D = invert_T(prev_gt) @ T_gt
            if kid and k == kidnap_at:            # odometry does not see the teleport
                D = invert_T(out[-2].T_world_cam) @ out[-1].T_world_cam if len(out) > 1 else np.eye(4)
            w, t = so3_log(D[:3, :3]), D[:3, 3]
            w = w + rng.normal(0, odom_noise * np.linalg.norm(w) + 1e-4, 3)
            t = t + rng.normal(0, odom_noise * np.linalg.norm(t) + 1e-4, 3)
            T_odom = T_odom @ make_T(so3_exp(w), t)
        out.append(StreamFrame(start_stamp_ns + int(round(k * 1e9 / rate_hz)), T_gt, T_odom.copy(), src, kid))
        prev_gt = T_gt
    return out


class Renderer:
    """Frames at ``SIZE`` from the real images (cached), by the plane homography (module doc)."""

    def __init__(self, recs: list[PosedImage]) -> None:
        self.recs = recs
        self.centre = object_centre(recs)
        self._images: dict[int, tuple[np.ndarray, Intrinsics]] = {}
        self.intrinsics = self._image(0)[1]

    def _image(self, i: int) -> tuple[np.ndarray, Intrinsics]:
        if i not in self._images:
            img, intr = load_image(self.recs[i].path), self.recs[i].intrinsics
            if (img.shape[1], img.shape[0]) != SIZE:
                intr = intr.scaled(SIZE[0] / img.shape[1], SIZE[1] / img.shape[0])
                img = cv2.resize(img, SIZE, interpolation=cv2.INTER_AREA)
            self._images[i] = (img, intr)
        return self._images[i]

    def render(self, f: StreamFrame) -> np.ndarray:
        img, K_src = self._image(f.source)
        T_src = self.recs[f.source].T_world_cam
        depth = float((invert_T(T_src)[:3, :3] @ self.centre + invert_T(T_src)[:3, 3])[2])
        T_dst_src = invert_T(f.T_world_cam) @ T_src
        n = np.array([0.0, 0.0, 1.0])
        H = self.intrinsics.K @ (T_dst_src[:3, :3] + np.outer(T_dst_src[:3, 3], n) / depth) @ np.linalg.inv(K_src.K)
        return cv2.warpPerspective(img, H / H[2, 2], SIZE, flags=cv2.INTER_LINEAR)


def frames_in_stream(recs: list[PosedImage], stream: list[StreamFrame]) -> Iterator[tuple[StreamFrame, np.ndarray]]:
    r = Renderer(recs)
    for f in stream:
        yield f, r.render(f)


# ----------------------------------------------------------------------------- the node run
NODE_PARAMS = {"geometric.preset": "realtime", "odom_frame": "odom", "camera_frame": "camera", "base_frame": "''",
               "diagnostics_rate_hz": 50.0, "tracking.enabled": True}


def run(stream: list[StreamFrame], recs: list[PosedImage], rate_hz: float, domain: int, out_dir: Path,
        params: dict[str, Any]) -> dict[str, Any]:
    """Publish ``stream`` to a node process at ``rate_hz``; per-frame answers (module doc)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from bench.node_rate import BenchNode, build_db
    from reloc_vggt_ros.ros.convert import (bgr_to_image, intrinsics_to_camera_info, ns_to_stamp, pose_to_T,
                                            stamp_to_ns, transform_stamped)
    from reloc_vggt_ros.ros.evaluate import start_node, stop_node
    from reloc_vggt_ros.ros.qos import DIAGNOSTICS_QOS, TF_QOS

    db = build_db(out_dir / "temple-db.db")
    renderer = Renderer(recs)
    images = [renderer.render(f) for f in stream]          # rendered ahead: the publisher only publishes
    proc = start_node(db, None, domain, out_dir / "stream_node.log", params)
    bench = BenchNode("stream_bench", domain)
    node = bench.node
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    img_pub = node.create_publisher(Image, "image", reliable)
    info_pub = node.create_publisher(CameraInfo, "camera_info", reliable)
    tf_pub = node.create_publisher(TFMessage, "/tf", TF_QOS)
    answered: dict[int, tuple[float, np.ndarray]] = {}
    labels: dict[int, tuple[str, str]] = {}
    diag: dict[str, str] = {}

    def on_pose(m: Any) -> None:
        answered.setdefault(stamp_to_ns(m.header.stamp), (time.monotonic(), pose_to_T(m.pose.pose)))

    def on_diag(m: Any) -> None:
        for st in m.status:
            if st.name.startswith("reloc_vggt_node"):
                diag.update({kv.key: kv.value for kv in st.values})
                stamp = int(diag.get("last_stamp_ns", 0))
                labels.setdefault(stamp, (diag.get("served_by", ""), diag.get("tracking_state", "")))

    node.create_subscription(PoseWithCovarianceStamped, "/relocalized_pose", on_pose, reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, DIAGNOSTICS_QOS)

    def spin(seconds: float) -> None:
        bench.spin(seconds, 0.002)

    sent: dict[int, float] = {}
    try:
        while img_pub.get_subscription_count() == 0:
            if proc.poll() is not None:
                raise RuntimeError(f"node exited; see {out_dir / 'stream_node.log'}")
            spin(0.1)
        spin(1.0)
        info = intrinsics_to_camera_info(renderer.intrinsics, CameraInfo())
        info.header.frame_id = "camera"
        msgs = [bgr_to_image(img, Image()) for img in images]
        dropped0 = int(diag.get("dropped", 0))
        t_next = time.monotonic()
        for f, im in zip(stream, msgs):
            spin(max(0.0, t_next - time.monotonic()))
            tf = TFMessage(transforms=[transform_stamped(f.T_odom_cam, f.stamp_ns, "odom", "camera")])
            tf_pub.publish(tf)
            ns_to_stamp(f.stamp_ns, im.header.stamp)
            ns_to_stamp(f.stamp_ns, info.header.stamp)
            im.header.frame_id = "camera"
            info_pub.publish(info)
            img_pub.publish(im)
            sent[f.stamp_ns] = time.monotonic()
            t_next += 1.0 / rate_hz
        end = time.monotonic() + 30
        while time.monotonic() < end and int(diag.get("last_stamp_ns", 0)) < stream[-1].stamp_ns:
            spin(0.05)
        spin(0.5)
        dropped = int(diag.get("dropped", 0)) - dropped0
        frames_tracked = int(diag.get("frames_tracked", 0))
    finally:
        bench.close()
        stop_node(proc)
    rows = []
    for k, f in enumerate(stream):
        row: dict[str, Any] = {"frame": k, "stamp_ns": f.stamp_ns, "kidnapped": f.kidnapped,
                               "served_by": labels.get(f.stamp_ns, ("", ""))[0],
                               "tracking_state": labels.get(f.stamp_ns, ("", ""))[1]}
        if f.stamp_ns in answered:
            t_ans, T = answered[f.stamp_ns]
            t_err, r_err = pose_error(T, f.T_world_cam)
            row.update(latency_ms=1e3 * (t_ans - sent[f.stamp_ns]), t_err_m=t_err, r_err_deg=r_err)
        rows.append(row)
    return {"rows": rows, "dropped": dropped, "frames_tracked": frames_tracked}


def run_in_process(stream: list[StreamFrame], recs: list[PosedImage], out_dir: Path) -> dict[str, Any]:
    """The same frames through ``TrackingLocalizer`` and through the plain backend (per-frame
    relocalization), alternating frame by frame in this process (no DDS, no drops), so that the
    two costs are compared under the same load: compute per frame, error, tracking share."""
    from bench.node_rate import build_db
    from reloc_vggt_ros.keyframes import KeyframeStore
    from reloc_vggt_ros.localizer.registry import make_localizer
    from reloc_vggt_ros.localizer.tracking import TrackingConfig, TrackingLocalizer

    renderer = Renderer(recs)
    with KeyframeStore.open(build_db(out_dir / "temple-db.db"), readonly=True) as store:
        plain = make_localizer("geometric", store, preset="realtime", top_k=5)
        tracking = TrackingLocalizer(make_localizer("geometric", store, preset="realtime", top_k=5),
                                     TrackingConfig(enabled=True))
        rows = []
        for f in stream:
            img = renderer.render(f)
            t0 = time.perf_counter()
            res = tracking.localize(img, renderer.intrinsics, f.stamp_ns, T_odom_cam=f.T_odom_cam)
            t1 = time.perf_counter()
            ref = plain.localize(img, renderer.intrinsics, f.stamp_ns)
            t2 = time.perf_counter()
            rows.append({"served_by": res.diagnostics.get("served_by", ""), "tracking_ms": 1e3 * (t1 - t0),
                         "relocalization_ms": 1e3 * (t2 - t1),
                         "tracking_t_err_m": pose_error(res.T_world_cam, f.T_world_cam)[0] if res.ok else None,
                         "relocalization_t_err_m": pose_error(ref.T_world_cam, f.T_world_cam)[0] if ref.ok else None})
    tracked = [r["tracking_ms"] for r in rows if r["served_by"] == "tracking"]
    reloc = [r["relocalization_ms"] for r in rows]
    med = lambda key: float(np.median([r[key] for r in rows if r[key] is not None]))  # noqa: E731
    return {"frames": len(rows), "answered_tracking": sum(r["tracking_t_err_m"] is not None for r in rows),
            "answered_relocalization": sum(r["relocalization_t_err_m"] is not None for r in rows),
            "tracking_fraction": len(tracked) / len(rows),
            "tracked_ms_p50": float(np.percentile(tracked, 50)), "tracked_ms_p95": float(np.percentile(tracked, 95)),
            "all_frames_tracking_ms_p50": float(np.percentile([r["tracking_ms"] for r in rows], 50)),
            "relocalization_ms_p50": float(np.percentile(reloc, 50)),
            "relocalization_ms_p95": float(np.percentile(reloc, 95)),
            "tracked_over_relocalization_p50": float(np.percentile(tracked, 50) / np.percentile(reloc, 50)),
            "median_translation_m_tracking": med("tracking_t_err_m"),
            "median_translation_m_relocalization": med("relocalization_t_err_m"), "per_frame": rows}


def unanswered_while_tracking(rows: list[dict[str, Any]]) -> int:
    """Frames without a pose inside a tracked stretch: the answered frame before them was tracked
    and the one after is not a relocalization (start-up before the first fix, a kidnap until the
    fix is confirmed, and the frames that wait for a relocalization without a track are not
    counted; a frame whose label the 50 Hz diagnostics missed does not start a stretch)."""
    answered = [k for k, r in enumerate(rows) if "latency_ms" in r]
    n = 0
    for a, b in zip(answered, answered[1:]):
        if b - a > 1 and rows[a]["served_by"] == "tracking" and rows[b]["served_by"] != "relocalization" \
                and not any(rows[k]["tracking_state"] == "lost" for k in range(a + 1, b)):
            n += b - a - 1
    return n


def run_paced(stream: list[StreamFrame], recs: list[PosedImage], out_dir: Path, background: str, rate_hz: float
              ) -> dict[str, Any]:
    """The frames at the stream rate through the node's :class:`Worker` into ``TrackingLocalizer``
    (background relocalizations in the worker process or on a thread), in this process: tracked
    latency, and tracked compute while a background relocalization runs vs otherwise."""
    import threading

    from bench.node_rate import build_db
    from reloc_vggt_ros.keyframes import KeyframeStore
    from reloc_vggt_ros.localizer.registry import make_localizer
    from reloc_vggt_ros.localizer.tracking import TrackingConfig, TrackingLocalizer
    from reloc_vggt_ros.ros.worker import Worker

    renderer = Renderer(recs)
    images = [renderer.render(f) for f in stream]
    cfg = TrackingConfig(enabled=True, background_process=background == "process")
    with KeyframeStore.open(build_db(out_dir / "temple-db.db"), readonly=True) as store:
        loc = TrackingLocalizer(make_localizer("geometric", store, preset="realtime", top_k=5), cfg)
        if loc._process is not None:
            loc._process.ready.wait(60)
        t0 = time.perf_counter()
        spans: list[list[float]] = []            # [start, end] of each background relocalization
        submit = loc._submit_background

        def timed_submit(*args: Any) -> Any:
            fut, span = submit(*args), [time.perf_counter() - t0, float("inf")]
            spans.append(span)
            fut.add_done_callback(lambda _: span.__setitem__(1, time.perf_counter() - t0))
            return fut
        loc._submit_background = timed_submit      # type: ignore[method-assign]
        sent: dict[int, float] = {}
        done: dict[int, tuple[float, float, str]] = {}
        lock = threading.Lock()

        def handle(k: int) -> None:
            a = time.perf_counter() - t0
            res = loc.localize(images[k], renderer.intrinsics, stream[k].stamp_ns, T_odom_cam=stream[k].T_odom_cam)
            with lock:
                done[k] = (a, time.perf_counter() - t0, res.diagnostics.get("served_by", ""))
        worker = Worker(handle, lambda _: None, max_queries=cfg.queue_depth, keep_backlog=lambda: loc.has_track)
        worker.start()
        t_next = time.perf_counter()
        for k in range(len(stream)):
            time.sleep(max(0.0, t_next - time.perf_counter()))
            sent[k] = time.perf_counter() - t0
            worker.offer_query(k)
            t_next += 1.0 / rate_hz
        time.sleep(1.0)
        worker.stop()
        loc.close()
    during, other, latency = [], [], []
    for k, (a, b, served) in done.items():
        if served != "tracking":
            continue
        latency.append(1e3 * (b - sent[k]))
        (during if any(s < b and e > a for s, e in spans) else other).append(1e3 * (b - a))
    pct = lambda v, q: float(np.percentile(v, q)) if v else None  # noqa: E731
    return {"background": background, "frames": len(stream), "answered": len(done), "dropped": worker.dropped,
            "tracked_latency_ms_p50": pct(latency, 50), "tracked_latency_ms_p95": pct(latency, 95),
            "tracked_ms_during_background_p50": pct(during, 50), "tracked_ms_during_background_p95": pct(during, 95),
            "frames_during_background": len(during), "tracked_ms_otherwise_p50": pct(other, 50),
            "tracked_ms_otherwise_p95": pct(other, 95), "background_relocalizations": len(spans)}


def summarize(rows: list[dict[str, Any]], rate_hz: float, dropped: int, frames_tracked: int, gate_m: float
              ) -> dict[str, Any]:
    """The JSON keys of the issue plus the tracked-only latencies and the kidnap outcome."""
    ans = [r for r in rows if "latency_ms" in r]
    lat = np.array([r["latency_ms"] for r in ans])
    tracked = np.array([r["latency_ms"] for r in ans if r["served_by"] == "tracking"])
    pct = lambda v, q: float(np.percentile(v, q)) if len(v) else None  # noqa: E731
    out: dict[str, Any] = {
        "rate_hz": rate_hz, "frames_sent": len(rows), "frames_answered": len(ans), "frames_dropped": dropped,
        "latency_ms_p50": pct(lat, 50), "latency_ms_p95": pct(lat, 95),
        "latency_ms_max": float(lat.max()) if len(lat) else None,
        "tracked_latency_ms_p50": pct(tracked, 50), "tracked_latency_ms_p95": pct(tracked, 95),
        "tracking_fraction": frames_tracked / len(rows) if rows else 0.0,
        "frames_labelled": sum(1 for r in rows if r["served_by"]),
        "frames_unanswered_while_tracking": (unanswered_while_tracking(rows)
                                             if any(r["served_by"] == "tracking" for r in rows) else None),
        "median_translation_m": float(np.median([r["t_err_m"] for r in ans])) if ans else None,
        "median_rotation_deg": float(np.median([r["r_err_deg"] for r in ans])) if ans else None,
        "max_translation_m": float(max(r["t_err_m"] for r in ans)) if ans else None,
    }
    kid = [r for r in rows if r["kidnapped"]]
    if kid:
        after = [r for r in kid if "latency_ms" in r]
        lost = [r["frame"] for r in kid if r["tracking_state"] == "lost"]
        first_ok = next((r["frame"] for r in after if r["t_err_m"] <= gate_m), None)
        out["kidnap"] = {
            "at_frame": kid[0]["frame"], "jump_m": None, "first_lost_frame": lost[0] if lost else None,
            "frames_reported_lost": len(lost), "first_pose_frame": after[0]["frame"] if after else None,
            "first_pose_within_gate_frame": first_ok,
            "max_error_published_after_kidnap_m": float(max(r["t_err_m"] for r in after)) if after else None,
            "gate_m": gate_m,
            "poses_off_by_more_than_gate": sum(1 for r in after if r["t_err_m"] > gate_m)}
    return out


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for served, colour in (("tracking", "tab:blue"), ("relocalization", "tab:orange"), ("", "tab:gray")):
        sel = [r for r in rows if "latency_ms" in r and r["served_by"] == served]
        a.scatter([r["frame"] for r in sel], [r["t_err_m"] * 1e3 for r in sel], s=6, c=colour,
                  label=served or "unlabelled")
        b.scatter([r["frame"] for r in sel], [r["latency_ms"] for r in sel], s=6, c=colour)
    lost = [r["frame"] for r in rows if "latency_ms" not in r]
    a.scatter(lost, [0.0] * len(lost), s=12, c="tab:red", marker="x", label="no pose")
    a.set_yscale("symlog", linthresh=1.0)
    a.set_ylabel("translation error (mm)")
    a.legend(loc="upper right", fontsize=8)
    b.set_ylabel("latency publish -> pose (ms)")
    b.set_xlabel("frame")
    b.axhline(33.3, ls="--", c="k", lw=0.8)
    a.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _paced_line(r: dict[str, Any]) -> str:
    f = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    return (f"paced, background {r['background']}: answered {r['answered']}/{r['frames']} (dropped {r['dropped']}), "
            f"tracked latency p50/p95 {f(r['tracked_latency_ms_p50'])}/{f(r['tracked_latency_ms_p95'])} ms; tracked "
            f"compute during a background relocalization p50/p95 {f(r['tracked_ms_during_background_p50'])}/"
            f"{f(r['tracked_ms_during_background_p95'])} ms ({r['frames_during_background']} frames), otherwise "
            f"{f(r['tracked_ms_otherwise_p50'])}/{f(r['tracked_ms_otherwise_p95'])} ms (load "
            f"{r['load_average_1min']:.1f} on {r['cpu_count']} cores)")


def _in_process_line(r: dict[str, Any]) -> str:
    return (f"in process, {r['frames']} frames: tracking answered {r['answered_tracking']} ({r['tracking_fraction']:.0%} "
            f"by tracking), tracked frame p50/p95 {r['tracked_ms_p50']:.1f}/{r['tracked_ms_p95']:.1f} ms; per-frame "
            f"relocalization answered {r['answered_relocalization']}, p50/p95 {r['relocalization_ms_p50']:.1f}/"
            f"{r['relocalization_ms_p95']:.1f} ms; tracked / relocalization p50 {r['tracked_over_relocalization_p50']:.2f}; "
            f"median error tracking {r['median_translation_m_tracking'] * 1e3:.2f} mm, relocalization "
            f"{r['median_translation_m_relocalization'] * 1e3:.2f} mm (load {r['load_average_1min']:.1f} on "
            f"{r['cpu_count']} cores)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=30.0, help="frames per second")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--speed-deg-s", type=float, default=10.0, help="motion around the object")
    ap.add_argument("--kidnap-at", type=int, default=None, help="jump half way round the ring at this frame")
    ap.add_argument("--no-tracking", action="store_true", help="per-frame relocalization (the baseline)")
    ap.add_argument("--paced", choices=("process", "thread"), default=None,
                    help="no node: the stream paced through the node's worker queue, background relocalizations in "
                         "the worker process or on a thread")
    ap.add_argument("--in-process", action="store_true",
                    help="no node: tracking and per-frame relocalization alternated on the same frames in this process")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE", help="node parameter")
    ap.add_argument("--domain-id", type=int, default=96)
    ap.add_argument("--plot", type=Path, default=None, help="PNG of error and latency over time")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    ensure_localhost_dds()
    from reloc_vggt_ros.geometry.gating import chi2_gate
    from reloc_vggt_ros.localizer.tracking import TrackingConfig

    params = {**NODE_PARAMS, **dict(p.split(":=", 1) for p in args.param)}
    if args.no_tracking:
        params["tracking.enabled"] = False
    out_dir = ROOT / "out" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    recs = read_posed_folder(SCENE)
    stream = make_stream(recs, args.frames, args.rate, args.speed_deg_s, args.kidnap_at)
    if args.paced or args.in_process:
        r = run_paced(stream, recs, out_dir, args.paced, args.rate) if args.paced else run_in_process(stream, recs,
                                                                                                     out_dir)
        r.update(load_average_1min=os.getloadavg()[0], cpu_count=os.cpu_count())
        print(_paced_line(r) if args.paced else _in_process_line(r))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(r, indent=2) + "\n")
        return 0
    g = TrackingConfig().gate
    gate_m = float(np.sqrt(chi2_gate(g.probability) * 2) * g.min_sigma_m)   # two floored poses, one axis
    res = run(stream, recs, args.rate, args.domain_id, out_dir, params)
    summary = summarize(res["rows"], args.rate, res["dropped"], res["frames_tracked"], gate_m)
    if "kidnap" in summary:
        k = args.kidnap_at
        summary["kidnap"]["jump_m"] = float(np.linalg.norm(stream[k].T_world_cam[:3, 3] - stream[k - 1].T_world_cam[:3, 3]))
    summary.update(tracking=not args.no_tracking, params=params, scene=SCENE.name, image_size="640x480",
                   speed_deg_s=args.speed_deg_s, load_average_1min=os.getloadavg()[0], cpu_count=os.cpu_count())
    s = summary
    f = lambda v, fmt=".0f": "n/a" if v is None else format(v, fmt)  # noqa: E731
    print(f"{'tracking' if s['tracking'] else 'per-frame relocalization'} at {s['rate_hz']:.0f} Hz: answered "
          f"{s['frames_answered']}/{s['frames_sent']} (dropped {s['frames_dropped']}, unanswered while tracking "
          f"{s['frames_unanswered_while_tracking']}), latency p50/p95/max "
          f"{f(s['latency_ms_p50'])}/{f(s['latency_ms_p95'])}/{f(s['latency_ms_max'])} ms, while tracking p50/p95 "
          f"{f(s['tracked_latency_ms_p50'])}/{f(s['tracked_latency_ms_p95'])} ms, tracked {s['tracking_fraction']:.0%}, "
          f"median error {f(s['median_translation_m'] and s['median_translation_m'] * 1e3, '.2f')} mm / "
          f"{f(s['median_rotation_deg'], '.3f')} deg (load {s['load_average_1min']:.1f} on {s['cpu_count']} cores)")
    if "kidnap" in s:
        print("kidnap: " + ", ".join(f"{k} {v if not isinstance(v, float) else round(v, 4)}" for k, v in s["kidnap"].items()))
    if args.plot:
        print(f"plot: {plot(res['rows'], args.plot, 'stream ' + ('tracking' if s['tracking'] else 'per-frame'))}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**summary, "per_frame": res["rows"]}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
