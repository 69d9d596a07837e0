"""Kill: SIGKILL the mapping node at random moments, restart it, and count what the database kept.

    .venv/bin/python -m bench.kill --kills 100 --json out/bench/kill.json

Node kills: ``reloc_vggt_node`` runs in its own process in mapping mode (``mapping.enabled``,
every posed image a keyframe) on a database that starts empty and persists across
``--kills-per-db`` kills (then a new one: each restart re-indexes the whole map).
The bench streams the real 640x480 images of ``middlebury-temple-ring`` with their poses on
``keyframe_pose`` (5 Hz) while the node also localizes (``max_rate_hz`` 1: the map re-index
writes feature blobs too), and SIGKILLs it at a seeded random moment (``--max-run-s``) after it
became active; then restarts it. A keyframe counts as *committed* when the node reported it
added before the kill: ``keyframes_added`` and ``last_keyframe_reason`` (``keyframe ID added``)
of its ``/diagnostics`` (20 Hz), both updated only after the SQLite commit returned. After every
kill the bench opens the file (``KeyframeStore.open``, which also recovers the WAL) and runs the
full ``db check`` (SQLite integrity, per-row and per-blob CRC32, every image decodes), then
checks that every committed keyframe is there and that every stored keyframe is one that was
sent, with the pose it was sent with. ``keyframes_lost`` and ``open_failures`` must be 0.

Build and save kills (``--build-kills``, ``--save-kills``): SIGKILL ``reloc-vggt db build --out X
--overwrite`` and the node's ``~/save_database`` (to ``save_path`` X) at a random moment of their
work; the file previously at X must be byte for byte unchanged, or (the work finished first)
the complete new database.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from reloc_vggt_ros.dds import ensure_localhost_dds, localhost_env

from .node_rate import SCENE, build_db
from ._probe import BenchProbe, frame_messages

ROOT = Path(__file__).resolve().parents[1]
T0_NS = 1_700_000_000 * 10**9
KEYFRAME_HZ = 5.0
NODE_PARAMS: dict[str, Any] = {"mapping.enabled": True, "mapping.min_distance_m": 0.0, "mapping.min_angle_rad": 0.0,
                               "diagnostics_rate_hz": 20.0, "max_rate_hz": 1.0, "geometric.preset": "realtime",
                               "base_frame": "''"}   # keyframe_pose is the camera pose (no base_link TF here)
_ADDED = re.compile(r"^keyframe (\d+) added$")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inspect_db(db: Path, sent: dict[int, np.ndarray]) -> dict[str, Any]:
    """Open ``db`` as the restarted node would and check it whole (module doc).

    ``sent``: stamp -> pose of every keyframe the bench published. Returns ``ids`` (the stored
    keyframe ids), ``problems`` (``db check`` lines and keyframes that were never sent or carry
    another pose) and ``open_error`` (the KeyframeDBError text, or None).
    """
    from reloc_vggt_ros.errors import KeyframeDBError
    from reloc_vggt_ros.keyframes import KeyframeStore

    try:
        store = KeyframeStore.open(db)
    except KeyframeDBError as err:
        return {"ids": set(), "problems": [], "open_error": str(err)}
    with store:
        problems = store.check()
        ids = set(store.keyframe_ids())
        for kf in store.iter_keyframes():
            stamp = int(kf.name.removeprefix("live_")) if kf.name.startswith("live_") else None
            if stamp not in sent:
                problems.append(f"keyframe {kf.name!r} was never sent")
            elif not np.allclose(kf.T_world_cam, sent[stamp], atol=1e-9):
                problems.append(f"keyframe {kf.name!r} holds another pose than was sent")
    return {"ids": ids, "problems": problems, "open_error": None}


@contextlib.contextmanager
def node_until_sigkill(db: Path, domain: int, log: Path, params: dict[str, Any],
                       keyframes: bool = False) -> Iterator[tuple[subprocess.Popen, BenchProbe]]:
    """The node process (active) and a probe on ``domain``; the node is SIGKILLed on exit."""
    from reloc_vggt_ros.ros.evaluate import start_node

    proc = start_node(db, None, domain, log, params)
    probe = BenchProbe(domain, "kill_bench")
    try:
        probe.wait_for_node(proc, 180.0, log, keyframes=keyframes)
        yield proc, probe
    finally:
        probe.close()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc._log.close()  # type: ignore[attr-defined]


class NodeKills:
    """The node-kill loop (module doc) on one database; ``run_one`` is one start, stream and kill."""

    def __init__(self, db: Path, domain: int, out_dir: Path, rng: random.Random, max_run_s: float) -> None:
        from reloc_vggt_ros.data.posed_folder import read_posed_folder

        self.db, self.domain, self.out_dir, self.rng, self.max_run_s = db, domain, out_dir, rng, max_run_s
        recs = read_posed_folder(SCENE, None)
        self.frames = frame_messages([(r.path, r.intrinsics, r.T_world_cam) for r in recs])
        self.sent: dict[int, np.ndarray] = {}
        self.committed: set[int] = set()      # ids the node reported added
        self.stamp = T0_NS
        self.rows: list[dict[str, Any]] = []
        self.ids = inspect_db(db, self.sent)["ids"]   # what the database holds now

    def run_one(self) -> dict[str, Any]:
        k = len(self.rows)
        before = self.ids
        delay = self.rng.uniform(0.0, self.max_run_s)
        added, claimed_ids = 0, set()
        with node_until_sigkill(self.db, self.domain, self.out_dir / f"kill_node_{k % 2}.log", NODE_PARAMS,
                                keyframes=True) as (proc, probe):
            kill_at = time.monotonic() + delay
            next_kf = time.monotonic()
            while time.monotonic() < kill_at:
                if time.monotonic() >= next_kf:
                    self.stamp += 10**8
                    frame = self.frames[(self.stamp // 10**8) % len(self.frames)]
                    self.sent[self.stamp] = frame.T_world_cam
                    probe.publish_keyframe_pose(frame.T_world_cam, self.stamp)
                    probe.publish_frame(frame, self.stamp)
                    next_kf += 1.0 / KEYFRAME_HZ
                probe.spin(min(0.005, max(0.0, kill_at - time.monotonic())))
                added = max(added, probe.counter("keyframes_added"))
                m = _ADDED.match(probe.diag.get("last_keyframe_reason", ""))
                if m:
                    claimed_ids.add(int(m.group(1)))
        code = proc.returncode
        wal_left = Path(f"{self.db}-wal").exists()
        after = inspect_db(self.db, self.sent)
        self.committed |= claimed_ids
        self.ids = after["ids"]
        lost_ids = sorted(self.committed - after["ids"])
        lost = max(len(lost_ids), len(before) + added - len(after["ids"]))
        row = {"kill": k, "after_active_s": round(delay, 3), "exit_code": code, "keyframes_before": len(before),
               "keyframes_after": len(after["ids"]), "added_reported": added, "lost": lost,
               "lost_ids": lost_ids[:20], "open_error": after["open_error"], "problems": after["problems"][:5],
               "wal_left": wal_left}
        self.rows.append(row)
        return row


def node_kills(kills: int, work: Path, domain: int, seed: int = 0, max_run_s: float = 4.0, kills_per_db: int = 10,
               verbose: bool = True, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """``kills`` SIGKILLs of the mapping node, a new empty database in ``work`` every
    ``kills_per_db`` kills (each restart re-indexes the map: its cost grows with the map);
    ``progress`` gets the figures so far after every kill. Returns the figures."""
    from reloc_vggt_ros.keyframes import KeyframeStore

    rng = random.Random(seed)
    loops: list[NodeKills] = []
    t0 = time.monotonic()
    for k in range(kills):
        if k % kills_per_db == 0:
            db = work / f"map-{k // kills_per_db}.db"
            KeyframeStore.create(db, creator="bench.kill").close()
            loops.append(NodeKills(db, domain, work, rng, max_run_s))
        row = loops[-1].run_one()
        if verbose:
            print(f"  kill {k:3d} at +{row['after_active_s']:.2f} s: keyframes {row['keyframes_before']:4d}"
                  f" -> {row['keyframes_after']:4d} (reported added {row['added_reported']:3d}), lost {row['lost']}"
                  + (f", OPEN FAILED: {row['open_error']}" if row["open_error"] else "")
                  + (f", PROBLEMS: {row['problems']}" if row["problems"] else ""), flush=True)
        figures = _kill_figures(loops)
        figures.update(seed=seed, max_run_s=max_run_s, kills_per_db=kills_per_db, duration_s=time.monotonic() - t0,
                       database=str(loops[-1].db))
        if progress is not None:
            progress(figures)
    return figures


def _kill_figures(loops: list[NodeKills]) -> dict[str, Any]:
    rows = [r for loop in loops for r in loop.rows]
    return {"kills": len(rows), "keyframes_committed": sum(len(loop.committed) for loop in loops),
            "keyframes_reported_added": sum(r["added_reported"] for r in rows),
            "keyframes_in_databases": sum(loop.rows[-1]["keyframes_after"] for loop in loops if loop.rows),
            "keyframes_lost": sum(r["lost"] for r in rows),
            "open_failures": sum(1 for r in rows if r["open_error"]),
            "check_failures": sum(1 for r in rows if r["problems"]),
            "kills_with_wal_left": sum(1 for r in rows if r["wal_left"]),
            "kills_not_sigkilled": sum(1 for r in rows if r["exit_code"] != -signal.SIGKILL), "rows": rows}


def _intact(target: Path, previous_sha: str, finished: bool, expect_keyframes: int) -> tuple[bool, str]:
    """Is ``target`` the previous file byte for byte, or (the work finished) a complete database?"""
    from reloc_vggt_ros.errors import KeyframeDBError
    from reloc_vggt_ros.keyframes import KeyframeStore

    if target.exists() and sha256(target) == previous_sha:
        return True, "previous file"
    if not finished:
        return False, "target changed although the work did not finish"
    try:
        with KeyframeStore.open(target, readonly=True) as store:
            problems, n = store.check(), len(store)
    except KeyframeDBError as err:
        return False, f"new file does not open: {err}"
    if problems or n != expect_keyframes:
        return False, f"new file: {n} keyframes (expected {expect_keyframes}), problems {problems[:3]}"
    return True, "new file"


def build_kills(kills: int, work: Path, rng: random.Random) -> dict[str, Any]:
    """SIGKILL ``reloc-vggt db build --overwrite`` over an existing database at random moments."""
    from reloc_vggt_ros.keyframes import build_keyframe_db
    from reloc_vggt_ros.keyframes.files import remove_db_files

    target = work / "built.db"
    remove_db_files(target)
    build_keyframe_db(SCENE, target, split="db", backend="none")      # the previous file
    n_new = sum(1 for line in (SCENE / "split.txt").read_text().splitlines() if line.startswith("query "))
    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "reloc_vggt_ros.cli", "db", "build", "--images", str(SCENE), "--split", "query",
                "--out", str(out), "--overwrite", "--backend", "geometric"]

    t = time.monotonic()
    (work / "build-timing").mkdir(exist_ok=True)
    subprocess.run(cmd(work / "build-timing" / target.name), env=localhost_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    duration = time.monotonic() - t                    # one whole build: kills land anywhere in it
    previous = sha256(target)
    rows = []
    for k in range(kills):
        proc = subprocess.Popen(cmd(target), env=localhost_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(0.0, 1.1 * duration)
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        finished = proc.returncode == 0
        ok, what = _intact(target, previous, finished, n_new)
        rows.append({"kill": k, "delay_s": round(delay, 3), "finished": finished, "intact": ok, "what": what,
                     "leftovers": sorted(p.name for p in work.glob(f".{target.name}.*"))})
        if finished:  # the new file is the one the next build replaces
            previous = sha256(target)
    return {"build_kills": kills, "build_previous_intact": sum(r["intact"] for r in rows),
            "build_finished_before_kill": sum(r["finished"] for r in rows), "build_rows": rows,
            "build_one_s": duration, "build_duration_s": time.monotonic() - t}


def save_kills(kills: int, db: Path, work: Path, domain: int, rng: random.Random) -> dict[str, Any]:
    """SIGKILL the node while ``~/save_database`` copies ``db`` over a previous copy (module doc)."""
    from std_srvs.srv import Trigger

    from reloc_vggt_ros.keyframes import KeyframeStore

    target = work / "saved.db"
    with KeyframeStore.open(db, readonly=True) as store:
        n = len(store)
        store.backup(target)
    previous = sha256(target)
    rows: list[dict[str, Any]] = []
    durations: list[float] = []
    log = work / "save_node.log"
    for k in range(kills):
        with node_until_sigkill(db, domain, log, {"save_path": str(target), "base_frame": "''"}) as (_, probe):
            client = probe.node.create_client(Trigger, "/reloc_vggt_node/save_database")
            while not client.service_is_ready():
                probe.spin(0.05)
            probe.spin(0.5)
            delay = rng.uniform(0.0, 1.5 * max(durations) if durations else 1.0)
            sent = time.monotonic()
            future = client.call_async(Trigger.Request())
            while time.monotonic() - sent < delay and not future.done():
                probe.spin(0.001)
            finished = future.done() and future.result().success
            if finished:
                durations.append(time.monotonic() - sent)
        ok, what = _intact(target, previous, finished, n)
        if not ok and not finished and target.exists():  # the reply may have been lost with the node
            ok, what = _intact(target, previous, True, n)
        rows.append({"kill": k, "delay_s": round(delay, 3), "finished": finished, "intact": ok, "what": what,
                     "leftovers": sorted(p.name for p in work.glob(f".{target.name}.*"))})
        previous = sha256(target) if target.exists() else previous
    return {"save_kills": kills, "save_previous_intact": sum(r["intact"] for r in rows),
            "save_finished_before_kill": sum(r["finished"] for r in rows), "save_rows": rows,
            "save_database_mb": db.stat().st_size / 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=100, help="SIGKILLs of the mapping node")
    ap.add_argument("--build-kills", type=int, default=5, help="SIGKILLs of db build --overwrite")
    ap.add_argument("--save-kills", type=int, default=10, help="SIGKILLs during ~/save_database")
    ap.add_argument("--max-run-s", type=float, default=4.0, help="kill uniformly within this long after activation")
    ap.add_argument("--kills-per-db", type=int, default=10, help="start a new empty database after this many kills")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--domain-id", type=int, default=95)
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "bench" / "kill",
                    help="scratch folder (emptied first): databases, node logs")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    ensure_localhost_dds()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = random.Random(args.seed + 1)
    print(f"kill: {args.kills} SIGKILLs of the mapping node ({SCENE.name} 640x480 keyframes at {KEYFRAME_HZ:g} Hz, "
          f"a new database every {args.kills_per_db})", flush=True)

    def save(figures: dict[str, Any]) -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(figures, indent=1) + "\n")

    result: dict[str, Any] = {"kills": 0}
    if args.kills:
        result = node_kills(args.kills, work, args.domain_id, args.seed, args.max_run_s, args.kills_per_db,
                            progress=save)
    db = Path(result["database"]) if args.kills else build_db(ROOT / "out" / "bench" / "temple-db.db")
    if args.build_kills:
        print(f"{args.build_kills} SIGKILLs of `reloc-vggt db build --overwrite`", flush=True)
        result.update(build_kills(args.build_kills, work, rng))
        save(result)
    if args.save_kills:
        print(f"{args.save_kills} SIGKILLs during ~/save_database", flush=True)
        result.update(save_kills(args.save_kills, db, work, args.domain_id, rng))
    result.update(load_average_1min=os.getloadavg()[0], cpu_count=os.cpu_count())
    print_table(result)
    if args.json:
        save(result)
        print(f"wrote {args.json}")
    ok = (result.get("keyframes_lost", 0) == 0 and result.get("open_failures", 0) == 0
          and result.get("check_failures", 0) == 0
          and result.get("build_previous_intact", 0) == args.build_kills
          and result.get("save_previous_intact", 0) == args.save_kills)
    return 0 if ok else 1


def print_table(r: dict[str, Any]) -> None:
    rows: list[tuple[str, Any]] = []
    if r["kills"]:
        rows += [("node SIGKILLs (mapping, restarted each time)", r["kills"]),
                 ("keyframes committed (reported added by the node)", r["keyframes_committed"]),
                 ("keyframes in the databases at the end", r["keyframes_in_databases"]),
                 ("keyframes lost", r["keyframes_lost"]),
                 ("open failures", r["open_failures"]),
                 ("db check failures (partial / foreign keyframes)", r["check_failures"]),
                 ("kills that left a WAL to recover", r["kills_with_wal_left"])]
    if "build_kills" in r:
        rows.append(("db build SIGKILLs: previous file intact", f"{r['build_previous_intact']}/{r['build_kills']} "
                     f"({r['build_finished_before_kill']} finished first)"))
    if "save_kills" in r:
        rows.append(("save_database SIGKILLs: previous file intact", f"{r['save_previous_intact']}/{r['save_kills']} "
                     f"({r['save_finished_before_kill']} finished first, {r['save_database_mb']:.0f} MB)"))
    for name, value in rows:
        print(f"{name:<52} {value}")
    print(f"load average {r['load_average_1min']:.1f} on {r['cpu_count']} cores")


if __name__ == "__main__":
    raise SystemExit(main())
