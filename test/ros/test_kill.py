"""SIGKILL at random moments: the mapping node loses no committed keyframe, and a killed
``db build`` or ``~/save_database`` leaves the file previously at the target byte for byte intact.

The node-kill test is a short ``bench.kill`` run (5 kills). The build and save tests watch the
target's directory and SIGKILL the process as soon as it starts writing, so the kill lands in
the middle of the copy (a leftover temporary file proves it did).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

pytest.importorskip("rclpy")

from bench import kill  # noqa: E402
from bench.node_rate import SCENE  # noqa: E402
from reloc_vggt_ros.data.posed_folder import read_posed_folder  # noqa: E402
from reloc_vggt_ros.dds import localhost_env  # noqa: E402
from reloc_vggt_ros.keyframes import KeyframeStore, build_keyframe_db  # noqa: E402
from reloc_vggt_ros.keyframes.build import keyframe_from_posed  # noqa: E402

from ros_harness import NodeProcess, Probe, next_domain_id  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture()
def previous(tmp_path: Path) -> tuple[Path, str]:
    """A real database at the target (journal_mode DELETE, as db build leaves it) and its SHA-256."""
    (tmp_path / "maps").mkdir()
    target = tmp_path / "maps" / "target.db"        # alone in its directory: every new file there is ours
    build_keyframe_db(SCENE, target, split="query", backend="none")
    return target, kill.sha256(target)


def _kill_when_writing(start: Callable[[], subprocess.Popen], target: Path,
                       timeout_s: float = 120.0) -> tuple[subprocess.Popen, list[str]]:
    """``start()`` the work, then SIGKILL its process the moment a new file appears beside
    ``target`` or ``target`` changes; returns the process and the new names seen.
    AssertionError if it ends first."""
    before = set(os.listdir(target.parent))
    stat0 = target.stat()
    proc = start()
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        new = sorted(set(os.listdir(target.parent)) - before)
        st = target.stat()
        if new or (st.st_mtime_ns, st.st_size) != (stat0.st_mtime_ns, stat0.st_size):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            return proc, new
        assert proc.poll() is None, f"process ended (code {proc.returncode}) before writing near {target}"
        time.sleep(0.001)
    raise AssertionError(f"nothing was written near {target} within {timeout_s} s")


def _assert_intact(target: Path, sha: str, n: int) -> None:
    assert kill.sha256(target) == sha, "the file at the target changed"
    assert not Path(f"{target}-journal").exists() and not Path(f"{target}-wal").exists()
    with KeyframeStore.open(target, readonly=True) as store:      # the node opens a map read-only
        assert len(store) == n and store.check() == []


def test_sigkilled_mapping_node_loses_no_committed_keyframe(tmp_path: Path) -> None:
    r = kill.node_kills(5, tmp_path, next_domain_id(), seed=3, max_run_s=3.0, verbose=False)
    assert r["kills"] == 5 and r["kills_not_sigkilled"] == 0
    assert r["keyframes_committed"] > 0, r["rows"]                  # the node did report keyframes
    assert r["keyframes_lost"] == 0, r["rows"]
    assert r["open_failures"] == 0 and r["check_failures"] == 0, r["rows"]
    assert r["keyframes_in_databases"] >= r["keyframes_committed"]


def test_sigkill_during_db_build_keeps_the_previous_file(previous: tuple[Path, str]) -> None:
    target, sha = previous
    n_query = len(read_posed_folder(SCENE, "query"))
    cmd = [sys.executable, "-m", "reloc_vggt_ros.cli", "db", "build", "--images", str(SCENE), "--split", "db",
           "--out", str(target), "--overwrite", "--backend", "geometric"]
    proc, new = _kill_when_writing(lambda: subprocess.Popen(cmd, env=localhost_env(), stdout=subprocess.DEVNULL,
                                                            stderr=subprocess.DEVNULL), target)
    assert proc.returncode == -signal.SIGKILL
    _assert_intact(target, sha, n_query)
    assert any(name.startswith(f".{target.name}.building-") for name in new), new
    # the next build replaces it and clears the killed build's leftovers
    build_keyframe_db(SCENE, target, split="query", backend="none", overwrite=True)
    assert sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}")) == []


def test_sigkill_during_save_database_keeps_the_previous_file(tmp_path: Path, previous: tuple[Path, str]) -> None:
    """The node saves a 64 MB map (4 real keyframes with dense depth) over an earlier map file."""
    pytest.importorskip("std_srvs.srv")
    from std_srvs.srv import Trigger

    target, sha = previous
    db = tmp_path / "big.db"
    rng = np.random.default_rng(0)
    with KeyframeStore.create(db, creator="test") as store:
        for r in read_posed_folder(SCENE, "db")[:4]:
            store.add_keyframe(dataclasses.replace(keyframe_from_posed(r), depth_m=rng.random((2000, 2000), np.float32)))
    domain = next_domain_id()
    probe = Probe(domain)
    node = NodeProcess(tmp_path, domain, {"database_path": str(db), "save_path": str(target)})
    try:
        probe.wait_for_node(node, timeout=180)
        client = probe.node.create_client(Trigger, "/reloc_vggt_node/save_database")
        probe.spin_until(client.service_is_ready, 30, "save_database service", node)
        probe.spin(0.5)
        def save() -> subprocess.Popen:
            client.call_async(Trigger.Request())
            return node.proc

        _, new = _kill_when_writing(save, target, timeout_s=30)
    finally:
        probe.close()
        node.stop(signal.SIGKILL)
    assert node.proc.returncode == -signal.SIGKILL
    _assert_intact(target, sha, len(read_posed_folder(SCENE, "query")))
    assert any(name.startswith(f".{target.name}.saving-") for name in new), new   # killed mid-copy
