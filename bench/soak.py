"""Soak: thousands of camera frames through the node process; memory, threads, fds and latency must stay flat.

    .venv/bin/python -m bench.soak --frames 10000 --rate 30 --json out/bench/soak.json

Starts ``reloc_vggt_node`` (geometric backend, the shipped ``realtime`` preset) in its own process
against the db split of ``middlebury-temple-ring`` (640x480, real images; the database is cached
in ``out/bench/``, as ``bench.node_rate`` does), then publishes every image of the scene (query and
db splits) on a loop at ``--rate`` Hz over loopback DDS. Every second it samples the node
process from ``/proc`` (resident memory, threads, open file descriptors) and its ``/diagnostics``
counters; every frame's latency is image published -> pose received.

After ``--warmup-s`` the run is judged (printed as verdicts, written to the JSON):

* memory: every resident-memory sample within +-``--rss-tol`` (5 %) of the first one after
  warm-up; the least-squares slope over that part and over its second half (once the allocator
  has settled) is reported in MB/h;
* latency: p95 of the last ``--window-s`` no more than ``--drift`` x (+ 10 ms) the p95 of the first;
  wall-clock latency also follows the load of other processes, so the node's own CPU time per
  frame (``/proc/PID/stat``) over the same windows must not grow by more than 30 %;
* threads and file descriptors: the same count in every sample after warm-up;
* queues: the node's backlog (``received - processed - dropped`` of its diagnostics: frames
  taken but not yet answered) never above 7 (the newest-wins slot, the frame in hand, and up to
  ``qos_depth`` = 5 images its stamp matcher holds until their camera_info arrives), and every
  frame the node received is published, rejected with a reason or counted as dropped, except at
  most those 5 held at the end (``frames_unaccounted``: images whose best-effort camera_info
  was lost stay there until newer images push them out as ``unmatched_images``).
  ``frames_answered`` counts the poses the bench received (the pose topic keeps only the newest,
  like ``amcl_pose``, so a busy reader may miss one).

Writes the JSON (``--json``) and a PNG of memory and latency over time beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reloc_vggt_ros.dds import ensure_localhost_dds

from .node_rate import SCENE, build_db

ROOT = Path(__file__).resolve().parents[1]
SYNC_DEPTH = 5          # the node's qos_depth (default): images its stamp matcher holds for their camera_info
MAX_BACKLOG = 2 + SYNC_DEPTH
CPU_DRIFT = 1.3         # node CPU time per frame, last window vs first (independent of other processes' load)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """One look at the node process (``/proc``) and its latest diagnostics counters."""

    t_s: float
    rss_mb: float
    threads: int
    fds: int
    cpu_s: float
    received: int
    processed: int
    dropped: int

    @property
    def backlog(self) -> int:
        return self.received - self.processed - self.dropped


def proc_usage(pid: int) -> tuple[float, int, int, float]:
    """(resident MB, threads, open file descriptors, CPU seconds) of a running process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = int(fields["VmRSS"].split()[0])
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(stat[11]) + int(stat[12])) / _CLK_TCK    # utime + stime (fields 14, 15)
    return rss_kb / 1024.0, int(fields["Threads"]), len(os.listdir(f"/proc/{pid}/fd")), cpu_s


def stream(probe: Any, proc: Any, frames: list[Any], n: int, rate_hz: float,
           progress_s: float = 30.0) -> tuple[dict[int, float], list[Sample]]:
    """Publish ``n`` frames round-robin at ``rate_hz``; sample the node every second.

    Returns (stamp -> publish time, samples); arrival times collect in ``probe.answered``.
    """
    sent: dict[int, float] = {}
    samples: list[Sample] = []
    t0 = time.monotonic()
    stamp = 1_700_000_000 * 10**9
    next_sample = next_progress = t0
    period = 1.0 / rate_hz
    for k in range(n):
        due = t0 + k * period
        while True:
            now = time.monotonic()
            if now >= next_sample:
                samples.append(_sample(probe, proc.pid, now - t0))
                next_sample += 1.0
            if now >= due:
                break
            probe.spin(min(due - now, 0.005))
        if proc.poll() is not None:
            raise RuntimeError(f"node exited with code {proc.returncode} after {k} frames")
        stamp += int(period * 1e9)
        probe.publish_frame(frames[k % len(frames)], stamp)
        sent[stamp] = time.monotonic()
        if now >= next_progress:
            print(f"  {now - t0:6.0f} s  sent {k:6d}  answered {len(probe.answered):6d}  "
                  f"rss {samples[-1].rss_mb if samples else 0:6.1f} MB", flush=True)
            next_progress += progress_s
    stream_end = time.monotonic()
    while time.monotonic() < stream_end + 30.0:  # until the node has answered the last frame (or lost it)
        probe.spin(0.25)
        if probe.counter("last_stamp_ns") >= stamp:
            break
        if time.monotonic() > stream_end + 2.0 and _sample(probe, proc.pid, 0.0).backlog == 0:
            break
    probe.spin(1.5)  # a fresh diagnostics message with the final counters
    samples.append(_sample(probe, proc.pid, time.monotonic() - t0))
    return sent, samples


def _sample(probe: Any, pid: int, t_s: float) -> Sample:
    return Sample(t_s, *proc_usage(pid), probe.counter("received"), probe.counter("processed"),
                  probe.counter("dropped"))


def summarize(sent: dict[int, float], answered: dict[int, float], samples: list[Sample], diag: dict[str, str],
              warmup_s: float, window_s: float, rss_tol: float = 0.05, drift: float = 1.5) -> dict[str, Any]:
    """Figures and verdicts of a soak run (module doc); times are seconds since the first frame."""
    t0 = min(sent.values())
    rows = sorted((t - t0, (answered[s] - t) * 1e3) for s, t in sent.items() if s in answered)
    lat_t = np.array([r[0] for r in rows])
    lat_ms = np.array([r[1] for r in rows])
    end = max(sent.values()) - t0
    after = [s for s in samples if s.t_s >= warmup_s] or samples[-1:]
    first_win = lat_ms[(lat_t >= warmup_s) & (lat_t < warmup_s + window_s)]
    last_win = lat_ms[lat_t >= end - window_s]
    p95 = lambda a: float(np.percentile(a, 95)) if a.size else float("nan")  # noqa: E731

    def cpu_ms_per_frame(lo: float, hi: float) -> float:
        win = [s for s in samples if lo <= s.t_s <= hi]
        frames = win[-1].processed - win[0].processed if len(win) >= 2 else 0
        return (win[-1].cpu_s - win[0].cpu_s) * 1e3 / frames if frames > 0 else float("nan")
    t = np.array([s.t_s for s in after])
    rss = np.array([s.rss_mb for s in after])
    def slope(k: np.ndarray) -> float:    # least-squares MB/h over the samples where k
        return float(np.polyfit(t[k], rss[k], 1)[0] * 3600.0) if k.sum() >= 3 and np.ptp(t[k]) > 0 else 0.0

    rss_dev = float(np.max(np.abs(rss / rss[0] - 1.0)))
    received, published, dropped, rejected = (int(diag.get(k, 0))
                                              for k in ("received", "published", "dropped", "rejected"))
    answered_n = sum(1 for s in sent if s in answered)
    out: dict[str, Any] = {
        "frames_sent": len(sent), "frames_received": received, "frames_published": published,
        "frames_answered": answered_n, "frames_dropped": dropped, "frames_rejected": rejected,
        "frames_unaccounted": received - published - dropped - rejected,
        "duration_s": end, "input_rate_hz": len(sent) / end if end > 0 else float("nan"),
        "output_rate_hz": answered_n / end if end > 0 else float("nan"),
        "warmup_s": warmup_s, "window_s": window_s,
        "rss_mb_start": samples[0].rss_mb, "rss_mb_first": after[0].rss_mb, "rss_mb_last": after[-1].rss_mb,
        "rss_mb_max_after_warmup": float(rss.max()), "rss_max_deviation_after_warmup": rss_dev,
        "rss_slope_mb_per_h": slope(t >= t[0]),
        "rss_slope_mb_per_h_last_half": slope(t >= (t[0] + t[-1]) / 2),   # the allocator has settled
        "latency_ms_p50": float(np.percentile(lat_ms, 50)) if lat_ms.size else float("nan"),
        "latency_ms_p95": p95(lat_ms),
        "latency_ms_p95_first": p95(first_win), "latency_ms_p95_last": p95(last_win),
        "cpu_ms_per_frame_first": cpu_ms_per_frame(warmup_s, warmup_s + window_s),
        "cpu_ms_per_frame_last": cpu_ms_per_frame(end - window_s, end),
        "threads_first": after[0].threads, "threads_last": after[-1].threads,
        "threads_min_max_after_warmup": [min(s.threads for s in after), max(s.threads for s in after)],
        "fds_first": after[0].fds, "fds_last": after[-1].fds,
        "fds_min_max_after_warmup": [min(s.fds for s in after), max(s.fds for s in after)],
        "backlog_max_after_warmup": max(s.backlog for s in after),
    }
    out["verdicts"] = {
        "rss_flat": rss_dev <= rss_tol,
        "latency_no_drift": out["latency_ms_p95_last"] <= drift * out["latency_ms_p95_first"] + 10.0,
        "cpu_per_frame_no_drift": out["cpu_ms_per_frame_last"] <= CPU_DRIFT * out["cpu_ms_per_frame_first"],
        "threads_constant": out["threads_min_max_after_warmup"][0] == out["threads_min_max_after_warmup"][1],
        "fds_constant": out["fds_min_max_after_warmup"][0] == out["fds_min_max_after_warmup"][1],
        "no_queue_growth": out["backlog_max_after_warmup"] <= MAX_BACKLOG and out["frames_unaccounted"] <= SYNC_DEPTH,
    }
    out["limits"] = {"rss_tol": rss_tol, "latency_drift": drift, "latency_slack_ms": 10.0,
                     "cpu_per_frame_drift": CPU_DRIFT, "max_backlog": MAX_BACKLOG, "max_unaccounted": SYNC_DEPTH}
    out["curves"] = {"samples": [asdict(s) for s in samples],
                     "latency": [[round(a, 3), round(b, 2)] for a, b in rows]}
    return out


def plot(result: dict[str, Any], png: Path) -> Path:
    """Resident memory and per-frame latency over time (warm-up shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["curves"]["samples"]
    lat = np.array(result["curves"]["latency"]).reshape(-1, 2)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.plot([s["t_s"] for s in samples], [s["rss_mb"] for s in samples], lw=1.2)
    ax1.set_ylabel("node RSS (MB)")
    ax1.set_title(f"soak: {result['frames_sent']} frames at {result['rate_hz']:g} Hz, "
                  f"{result['frames_answered']} answered; threads {result['threads_last']}, fds {result['fds_last']}")
    ax2.plot(lat[:, 0], lat[:, 1], ".", ms=1.5, alpha=0.5, label="per frame")
    if len(lat):
        step = max(1.0, float(lat[-1, 0]) / 60)
        bins = np.floor(lat[:, 0] / step)
        edges = np.unique(bins)
        ax2.plot((edges + 1) * step, [np.percentile(lat[bins == b, 1], 95) for b in edges], "r-", lw=1.2,
                 label=f"p95 per {step:.0f} s")
    ax2.set_ylabel("latency publish -> pose (ms)")
    ax2.set_xlabel("time since the first frame (s)")
    ax2.legend(loc="upper right")
    for ax in (ax1, ax2):
        ax.axvspan(0, result["warmup_s"], color="0.9", zorder=0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def run(frames: int, rate_hz: float, domain: int, out_dir: Path, params: dict[str, str] | None = None,
        warmup_s: float = 30.0, window_s: float = 30.0, rss_tol: float = 0.05, drift: float = 1.5,
        db: Path | None = None) -> dict[str, Any]:
    """The whole soak (module doc) with the node in its own process against ``db`` (default: the
    scene's db split, built once into ``out_dir``); returns the figures."""
    from reloc_vggt_ros.data.posed_folder import read_posed_folder
    from reloc_vggt_ros.ros.evaluate import start_node, stop_node

    from ._probe import BenchProbe, frame_messages

    db = db or build_db(out_dir / "temple-db.db")
    recs = read_posed_folder(SCENE, None)
    log = out_dir / "soak_node.log"
    proc = start_node(db, None, domain, log, {"diagnostics_rate_hz": 2.0, "base_frame": "''", **(params or {})})
    probe = BenchProbe(domain, "soak_bench")
    try:
        msgs = frame_messages([(r.path, r.intrinsics, r.T_world_cam) for r in recs])
        probe.wait_for_node(proc, 120.0, log)
        sent, samples = stream(probe, proc, msgs, frames, rate_hz)
        diag = dict(probe.diag)
    finally:
        probe.close()
        code = stop_node(proc)
    result = summarize(sent, probe.answered, samples, diag, warmup_s, window_s, rss_tol, drift)
    result.update(scene=SCENE.name, image_size="640x480", images_in_loop=len(msgs), rate_hz=rate_hz,
                  node_params=params or {}, node_exit_code=code, node_log=str(log),
                  load_average_1min=os.getloadavg()[0], cpu_count=os.cpu_count())
    return result


def print_table(r: dict[str, Any]) -> None:
    v = r["verdicts"]
    ok = lambda b: "OK " if b else "FAIL"  # noqa: E731
    lines = [
        ("frames sent / received / published / answered", f"{r['frames_sent']} / {r['frames_received']} / "
         f"{r['frames_published']} / {r['frames_answered']}", ""),
        ("dropped (newest wins) / rejected / unaccounted",
         f"{r['frames_dropped']} / {r['frames_rejected']} / {r['frames_unaccounted']}", ""),
        ("input / output rate", f"{r['input_rate_hz']:.1f} / {r['output_rate_hz']:.1f} Hz", ""),
        ("RSS start / first / last after warm-up",
         f"{r['rss_mb_start']:.1f} / {r['rss_mb_first']:.1f} / {r['rss_mb_last']:.1f} MB "
         f"(max dev {100 * r['rss_max_deviation_after_warmup']:.1f} %, slope {r['rss_slope_mb_per_h']:+.0f} MB/h, "
         f"last half {r['rss_slope_mb_per_h_last_half']:+.0f})",
         ok(v["rss_flat"])),
        ("latency p95 first / last window",
         f"{r['latency_ms_p95_first']:.0f} / {r['latency_ms_p95_last']:.0f} ms (p50 {r['latency_ms_p50']:.0f})",
         ok(v["latency_no_drift"])),
        ("node CPU per frame first / last window",
         f"{r['cpu_ms_per_frame_first']:.0f} / {r['cpu_ms_per_frame_last']:.0f} ms", ok(v["cpu_per_frame_no_drift"])),
        ("threads first / last (min..max)", f"{r['threads_first']} / {r['threads_last']} "
         f"({r['threads_min_max_after_warmup'][0]}..{r['threads_min_max_after_warmup'][1]})", ok(v["threads_constant"])),
        ("fds first / last (min..max)", f"{r['fds_first']} / {r['fds_last']} "
         f"({r['fds_min_max_after_warmup'][0]}..{r['fds_min_max_after_warmup'][1]})", ok(v["fds_constant"])),
        ("node backlog max after warm-up / unaccounted at the end",
         f"{r['backlog_max_after_warmup']} / {r['frames_unaccounted']} (limits {MAX_BACKLOG} / {SYNC_DEPTH})",
         ok(v["no_queue_growth"])),
    ]
    for name, value, verdict in lines:
        print(f"{name:<48} {value:<62} {verdict}")
    print(f"load average {r['load_average_1min']:.1f} on {r['cpu_count']} cores")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=30.0, help="input rate (Hz)")
    ap.add_argument("--warmup-s", type=float, default=30.0, help="seconds not judged at the start")
    ap.add_argument("--window-s", type=float, default=30.0, help="length of the first/last latency windows")
    ap.add_argument("--rss-tol", type=float, default=0.05, help="allowed RSS deviation after warm-up")
    ap.add_argument("--drift", type=float, default=1.5, help="allowed p95 growth, last vs first window")
    ap.add_argument("--domain-id", type=int, default=96)
    ap.add_argument("-p", "--param", action="append", default=["geometric.preset:=realtime"], metavar="NAME:=VALUE",
                    help="node parameter, repeatable (default geometric.preset:=realtime, the shipped config)")
    ap.add_argument("--json", type=Path, help="write the figures here (and the PNG beside it)")
    ap.add_argument("--png", type=Path, help="curve PNG (default: the JSON path with .png, or out/bench/soak.png)")
    args = ap.parse_args(argv)
    ensure_localhost_dds()
    out_dir = ROOT / "out" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    params = dict(p.split(":=", 1) for p in args.param)
    print(f"soak: {args.frames} frames at {args.rate:g} Hz through the node ({SCENE.name}, 640x480)", flush=True)
    result = run(args.frames, args.rate, args.domain_id, out_dir, params, args.warmup_s, args.window_s,
                 args.rss_tol, args.drift)
    png = args.png or (args.json.with_suffix(".png") if args.json else out_dir / "soak.png")
    result["png"] = str(plot(result, png))
    print_table(result)
    print(f"wrote {png}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(result["verdicts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
