"""Node throughput at 640x480: latency p50/p95 per input rate, and the highest sustainable rate.

    .venv/bin/python -m bench.node_rate --json bench/results/node_rate.json

Starts ``reloc_vggt_node`` (geometric backend) in its own process against the db split of
``middlebury-temple-ring`` (640x480, real images; database cached in ``out/bench/``), then
publishes the query images round-robin at each input rate for ``--frames`` frames, and records
for every frame whether a pose came back and after how long (publish -> pose received, end to
end over loopback DDS). A rate is *sustained* when no frame is dropped by the newest-wins queue
and p95 latency stays within ``--growth`` x the p95 at the lowest rate.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from reloc_vggt_ros.dds import ensure_localhost_dds

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT.parent / "shared" / "data" / "middlebury-temple-ring"


def build_db(path: Path) -> Path:
    from reloc_vggt_ros.keyframes import build_keyframe_db

    if not path.exists():
        build_keyframe_db(SCENE, path, split="db", backend="geometric")
    return path


class BenchNode:
    """The bench's own rclpy node on a private context and ROS domain, spun by :meth:`spin`."""

    def __init__(self, name: str, domain: int) -> None:
        import rclpy

        from reloc_vggt_ros.ros.executor import make_executor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = make_executor(self.context)
        self.executor.add_node(self.node)

    def spin(self, seconds: float, step_s: float = 0.005) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=min(left, step_s))

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def run(rates: list[float], frames: int, domain: int, growth: float, out_dir: Path,
        backend_params: dict[str, str] | None = None) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from reloc_vggt_ros.data.posed_folder import read_posed_folder
    from reloc_vggt_ros.ros.evaluate import start_node, stop_node
    from reloc_vggt_ros.geometry import pose_error
    from reloc_vggt_ros.ros.convert import bgr_to_image, intrinsics_to_camera_info, ns_to_stamp, pose_to_T, stamp_to_ns
    from reloc_vggt_ros.ros.qos import DIAGNOSTICS_QOS, POSE_QOS

    db = build_db(out_dir / "temple-db.db")
    queries = read_posed_folder(SCENE, "query")
    images = [(cv2.imread(str(q.path)), q.intrinsics, q.T_world_cam) for q in queries]
    proc = start_node(db, None, domain, out_dir / "node_rate.log",
                      {"diagnostics_rate_hz": 5.0, "base_frame": "''", **(backend_params or {})})
    bench = BenchNode("node_rate_bench", domain)
    node, spin = bench.node, bench.spin
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    img_pub = node.create_publisher(Image, "image", qos)
    info_pub = node.create_publisher(CameraInfo, "camera_info", qos)
    answered: dict[int, float] = {}
    estimates: dict[int, np.ndarray] = {}
    diag: dict[str, str] = {}
    def on_pose(m: PoseWithCovarianceStamped) -> None:
        answered.setdefault(stamp_to_ns(m.header.stamp), time.monotonic())
        estimates[stamp_to_ns(m.header.stamp)] = pose_to_T(m.pose.pose)

    node.create_subscription(PoseWithCovarianceStamped, "/relocalized_pose", on_pose, POSE_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics",
                             lambda m: diag.update({kv.key: kv.value for kv in m.status[0].values}), DIAGNOSTICS_QOS)

    rows = []
    try:
        while img_pub.get_subscription_count() == 0:
            if proc.poll() is not None:
                raise RuntimeError(f"node exited; see {out_dir / 'node_rate.log'}")
            spin(0.1)
        spin(1.0)
        stamp = 1_700_000_000 * 10**9
        msgs = []
        for img, intr, T in images:
            msgs.append((bgr_to_image(img, Image()), intrinsics_to_camera_info(intr, CameraInfo()), T))
        for rate in rates:
            sent: dict[int, float] = {}
            gt: dict[int, np.ndarray] = {}
            dropped0 = int(diag.get("dropped", 0))
            t_next = time.monotonic()
            for k in range(frames):
                spin(max(0.0, t_next - time.monotonic()))
                stamp += 10**8
                im, info, gt[stamp] = msgs[k % len(msgs)]
                ns_to_stamp(stamp, im.header.stamp)
                ns_to_stamp(stamp, info.header.stamp)
                im.header.frame_id = info.header.frame_id = "camera"
                info_pub.publish(info)
                img_pub.publish(im)
                sent[stamp] = time.monotonic()
                t_next += 1.0 / rate
            settle_end = time.monotonic() + 30
            while time.monotonic() < settle_end and int(diag.get("last_stamp_ns", 0)) < stamp:
                spin(0.05)
            spin(0.5)
            lat = np.array([(answered[s] - t) * 1e3 for s, t in sent.items() if s in answered])
            dropped = int(diag.get("dropped", 0)) - dropped0
            errs = np.array([pose_error(estimates[s], gt[s]) for s in sent if s in estimates]).reshape(-1, 2)
            row = {"input_hz": rate, "frames": frames, "poses": int(lat.size), "dropped": dropped,
                   "median_translation_m": float(np.median(errs[:, 0])) if len(errs) else None,
                   "median_rotation_deg": float(np.median(errs[:, 1])) if len(errs) else None,
                   "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
                   "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else None,
                   "output_hz": float(lat.size / max(1e-9, (max(answered[s] for s in sent if s in answered)
                                                            - min(sent.values())))) if lat.size else 0.0}
            rows.append(row)
            print(_fmt_row(row), flush=True)
    finally:
        bench.close()
        stop_node(proc)
    base = rows[0]["latency_ms_p95"] or float("inf")
    sustained = [r["input_hz"] for r in rows
                 if r["dropped"] == 0 and r["latency_ms_p95"] is not None and r["latency_ms_p95"] <= growth * base]
    return {"scene": SCENE.name, "image_size": "640x480", "backend": "geometric", "rows": rows,
            "max_sustained_hz": max(sustained) if sustained else None, "growth_limit": growth,
            "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count()}


def _fmt_row(r: dict) -> str:
    f = lambda v: "  n/a" if v is None else f"{v:5.0f}"  # noqa: E731
    return (f"{r['input_hz']:8.2f} Hz  poses {r['poses']:3d}/{r['frames']:<3d} dropped {r['dropped']:3d}  "
            f"latency p50 {f(r['latency_ms_p50'])} ms  p95 {f(r['latency_ms_p95'])} ms  output {r['output_hz']:.2f} Hz"
            + ("" if r["median_translation_m"] is None else
               f"  median error {r['median_translation_m'] * 1000:.1f} mm / {r['median_rotation_deg']:.2f} deg"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--frames", type=int, default=12, help="frames per rate")
    ap.add_argument("--domain-id", type=int, default=97)
    ap.add_argument("--growth", type=float, default=1.5, help="allowed p95 growth vs the lowest rate")
    ap.add_argument("-p", "--param", action="append", default=["geometric.preset:=realtime"], metavar="NAME:=VALUE",
                    help="node parameter, repeatable (default geometric.preset:=realtime, what "
                         "config/reloc_vggt.yaml ships)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    ensure_localhost_dds()
    out_dir = ROOT / "out" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{'input':>11}  answered   dropped  latency (publish -> pose)           throughput")
    params = dict(p.split(":=", 1) for p in args.param)
    result = run(sorted(args.rates), args.frames, args.domain_id, args.growth, out_dir, params)
    print(f"highest input rate sustained without drops or growing latency: {result['max_sustained_hz']} Hz "
          f"(load average {result['load_average_1min']:.1f} on {result['cpu_count']} cores)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
