"""A writer process SIGKILLed mid-insert loses nothing it reported as committed.

The child inserts real keyframes in a loop and prints ``id sha256 i`` after each commit returns.
The parent kills it without warning (no Python cleanup, no SQLite close, WAL left behind) while
it is busy inserting, three times over on the same file, then checks every reported keyframe
byte for byte and runs ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from reloc_vggt_ros.geometry import make_T, so3_exp
from reloc_vggt_ros.keyframes import Keyframe, KeyframeStore

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SCENE = DATA / "fountain-P11"

CHILD = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from reloc_vggt_ros.data import read_posed_folder
    from reloc_vggt_ros.geometry import make_T, so3_exp
    from reloc_vggt_ros.keyframes import Keyframe, KeyframeStore

    db, start = sys.argv[1], int(sys.argv[2])
    recs = read_posed_folder(sys.argv[3], "db")
    images = [r.path.read_bytes() for r in recs]
    store = KeyframeStore.open(db)
    print("ready", flush=True)
    i = start
    while True:
        r = recs[i % len(recs)]
        image = images[i % len(recs)] + i.to_bytes(4, "little")  # unique bytes, still a valid JPEG
        T = r.T_world_cam @ make_T(so3_exp([0.0, 0.001 * i, 0.0]), [0.01 * i, 0.0, 0.0])
        depth = np.full((60, 80), 1.0 + i, np.float32)
        kf_id = store.add_keyframe(Keyframe(f"kf_{i}", image, r.intrinsics, T, stamp_ns=i, depth_m=depth))
        print(kf_id, hashlib.sha256(image).hexdigest(), i, flush=True)
        i += 1
""")


def expected_pose(T_src: np.ndarray, i: int) -> np.ndarray:
    return T_src @ make_T(so3_exp([0.0, 0.001 * i, 0.0]), [0.01 * i, 0.0, 0.0])


def run_and_kill(db: Path, start: int, min_commits: int) -> list[tuple[int, str, int]]:
    """Start the writer, let it commit at least ``min_commits`` keyframes, SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(start), str(SCENE)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reported: list[tuple[int, str, int]] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        while len(reported) < min_commits:
            line = proc.stdout.readline()
            assert line, f"writer died early: {proc.stderr.read() if proc.stderr else ''}"
            kf_id, sha, i = line.split()
            reported.append((int(kf_id), sha, int(i)))
        time.sleep(0.003 * min_commits)  # land somewhere inside a later insert
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # commits reported between our last read and the kill; a line the kill cut short reported nothing
    for line in out.splitlines(keepends=True):
        fields = line.split()
        if line.endswith("\n") and len(fields) == 3:
            reported.append((int(fields[0]), fields[1], int(fields[2])))
    assert proc.returncode == -signal.SIGKILL
    return reported


def test_sigkilled_writer_keeps_every_committed_keyframe(tmp_path: Path) -> None:
    from reloc_vggt_ros.data import read_posed_folder

    recs = read_posed_folder(SCENE, "db")
    db = tmp_path / "crash.db"
    KeyframeStore.create(db, creator="crash test").close()
    reported: list[tuple[int, str, int]] = []
    for round_, min_commits in enumerate((5, 9, 13)):
        reported += run_and_kill(db, 1000 * round_, min_commits)  # names/poses unique per round
        assert Path(f"{db}-wal").exists(), "killed writer should leave its WAL for recovery"

    with KeyframeStore.open(db) as store:
        assert store.integrity_check() == "ok"
        ids = set(store.keyframe_ids())
        assert len(ids) >= len(reported)
        for kf_id, sha, i in reported:
            assert kf_id in ids
            kf = store.get_keyframe(kf_id)
            assert kf.name == f"kf_{i}" and kf.stamp_ns == i
            assert hashlib.sha256(kf.image_jpeg).hexdigest() == sha
            assert kf.decode_image().shape == (1024, 1536, 3)
            assert np.array_equal(kf.T_world_cam, expected_pose(recs[i % len(recs)].T_world_cam, i))
            assert kf.depth_m is not None and np.all(kf.depth_m == 1.0 + i)
        # the file is still writable after recovery
        store.add_keyframe(Keyframe("after", kf.image_jpeg, kf.intrinsics, kf.T_world_cam))
        assert store.integrity_check() == "ok"
