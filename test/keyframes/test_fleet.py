"""The fleet store on a real PostgreSQL 15 + PostGIS 3 server (started here, on loopback).

A private cluster is started once for this module by ``tools/pg_test_server.sh`` (which installs
the Debian packages when they are missing), each test gets its own database, and the cluster is
removed at the end. The map is the shipped sample scene (db split, geometric blobs). The file is
also the writer / reader process of the concurrency test (``python test_fleet.py writer ...``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.errors import ConfigError, KeyframeDBError
from reloc_vggt_ros.geometry import make_T, so3_exp
from reloc_vggt_ros.keyframes import Keyframe, KeyframeStore
from reloc_vggt_ros.keyframes.base import KeyframeDatabase, keyframe_uuid
from reloc_vggt_ros.keyframes.postgres import PostgresStore, Record, ServerUnavailable
from reloc_vggt_ros.keyframes.sync import FleetConfig, FleetSync, Region, pull, push, retry

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample" / "fountain-P11-small"
SCRIPT = ROOT / "tools" / "pg_test_server.sh"
PSQL = "/usr/lib/postgresql/15/bin/psql"


# --------------------------------------------------------------------------- server and map
class Server:
    """The private cluster: ``url(db)``, ``new_database()``, ``restart()`` (immediate = a crash)."""

    def __init__(self, pgdir: str, url: str) -> None:
        self.pgdir, self.base = pgdir, url.rsplit("/", 1)[0]

    def url(self, db: str = "fleet") -> str:
        return f"{self.base}/{db}"

    def sql(self, db: str, statement: str) -> str:
        return subprocess.run([PSQL, "-qtA", self.url(db), "-c", statement], check=True, capture_output=True,
                              text=True).stdout.strip()

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        # a copy of `fleet` (PostGIS already in it; FILE_COPY writes little WAL, so crash recovery stays short)
        self.sql("postgres", f"CREATE DATABASE {name} TEMPLATE fleet STRATEGY FILE_COPY")
        return self.url(name)

    def restart(self) -> None:
        subprocess.run([str(SCRIPT), "restart", self.pgdir], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def server() -> Server:
    if os.geteuid() != 0 and not Path("/usr/lib/postgresql/15/bin/pg_ctl").exists():
        pytest.skip("PostgreSQL 15 + PostGIS 3 missing and not root to install them: run `make pg-setup` as root")
    out = subprocess.run([str(SCRIPT), "start"], check=True, capture_output=True, text=True, timeout=600).stdout
    env = dict(line.split("=", 1) for line in out.split())
    try:
        yield Server(env["PGDIR"], env["URL"])
    finally:
        subprocess.run([str(SCRIPT), "stop", env["PGDIR"]], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's db split with geometric and thumbnail blobs (built once)."""
    from reloc_vggt_ros.keyframes import build_keyframe_db

    return build_keyframe_db(SAMPLE, tmp_path_factory.mktemp("fleet") / "sample.db", split="db",
                             backend="geometric")


def contents(store: KeyframeDatabase) -> dict[str, tuple]:
    """name -> (pose bytes, image sha256, intrinsics, {(backend, key): (fingerprint, sha256)})."""
    out = {}
    for kf in store.iter_keyframes():
        blobs = {}
        for backend, fps in store.backends().items():
            if backend == "fleet":
                continue
            for fp in fps:
                for key in ("features", "points", "vlad", "global"):
                    data = store.get_blob(kf.kf_id, backend, key, fp)
                    if data is not None:
                        blobs[(backend, key)] = (fp, hashlib.sha256(data).hexdigest())
        out[kf.name] = (np.asarray(kf.T_world_cam, "<f8").tobytes(), hashlib.sha256(kf.image_jpeg).hexdigest(),
                        kf.intrinsics, blobs)
    return out


def cli(*argv: str) -> subprocess.CompletedProcess:
    """``reloc-vggt ARGV`` in this process (its exit code, stdout and stderr)."""
    from reloc_vggt_ros.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def centre_of(db: Path) -> str:
    with KeyframeStore.open(db, readonly=True) as store:
        return ",".join(f"{v:.3f}" for v in store.poses()[1][:, :3, 3].mean(axis=0))


# --------------------------------------------------------------------------- tests
def test_both_stores_are_keyframe_databases(server: Server, sample_db: Path) -> None:
    with KeyframeStore.open(sample_db, readonly=True) as local, \
            PostgresStore.open(server.new_database(), create=True) as fleet:
        assert isinstance(local, KeyframeDatabase) and isinstance(fleet, KeyframeDatabase)


def test_push_pull_round_trip_is_bit_exact_and_idempotent(server: Server, sample_db: Path, tmp_path: Path) -> None:
    url = server.new_database()
    robot_b = tmp_path / "robot_b.db"
    shutil.copy(sample_db, robot_b)         # a second robot seeded with the same map file
    first = cli("db", "push", str(sample_db), url, "--source", "robot-a")
    assert first.returncode == 0, first.stderr
    assert "7 copied, 0 already there" in first.stdout and "holds 7 keyframes" in first.stdout
    again = cli("db", "push", str(sample_db), url)
    assert "0 copied, 7 already there" in again.stdout, again.stdout + again.stderr
    other = cli("db", "push", str(robot_b), url, "--source", "robot-b")   # same keyframes: same global ids
    assert "0 copied, 7 already there" in other.stdout, other.stdout + other.stderr

    cache = tmp_path / "cache.db"
    got = cli("db", "pull", url, "--out", str(cache), f"--near={centre_of(sample_db)}", "--radius", "100")
    assert got.returncode == 0, got.stderr
    assert "7 copied" in got.stdout
    assert "0 copied, 7 already there" in cli("db", "pull", url, "--out", str(cache),
                                               f"--near={centre_of(sample_db)}", "--radius", "100").stdout

    with KeyframeStore.open(sample_db, readonly=True) as a, KeyframeStore.open(cache, readonly=True) as b, \
            PostgresStore.open(url, readonly=True) as fleet:
        original = contents(a)
        assert len(original) == 7 and all(len(v[3]) == 4 for v in original.values())   # features/points/vlad/thumb
        assert contents(b) == original            # poses bit for bit, image and blob bytes identical
        assert contents(fleet) == original
        assert {kf.name for kf in fleet.iter_keyframes()} == set(original)
        assert b.check() == []                    # the cache passes `db check` (checksums, integrity)
    # the pulled copy pushed back is the same keyframes (global ids from content): nothing new
    assert "0 copied, 7 already there" in cli("db", "push", str(cache), url).stdout
    assert "0 copied, 0 already there" in cli("db", "push", str(cache), url, "--near=0,0,500", "--radius", "10").stdout
    # a route: the keyframes within 2 m of the straight line from the first camera to the last
    with KeyframeStore.open(sample_db, readonly=True) as a:
        ids, poses = a.poses()
        centres, first_name = poses[:, :3, 3], a.get_keyframe(int(ids[0])).name
    route = ";".join(",".join(f"{v:.6f}" for v in c) for c in centres[[0, -1]])
    ends = tuple(tuple(float(f"{v:.6f}") for v in c) for c in centres[[0, -1]])
    expected = int(Region(ends[0], 2.0, ends).contains(centres).sum())
    assert 2 <= expected < 7
    along = cli("db", "pull", url, "--out", str(tmp_path / "route.db"), f"--route={route}", "--radius", "2")
    assert f"{expected} copied" in along.stdout, along.stdout + along.stderr

    # the cache shrinks to a new region, but never loses a keyframe only it has
    with KeyframeStore.open(cache) as c:
        kf = c.get_keyframe(c.keyframe_ids()[0])
        T = kf.T_world_cam.copy()
        T[2, 3] += 500.0
        c.add_keyframe(replace(kf, kf_id=None, name="mapped-here", T_world_cam=T))   # not pushed
    near_first = ",".join(f"{v:.6f}" for v in centres[0])
    moved = cli("db", "pull", url, "--out", str(cache), f"--near={near_first}", "--radius", "0.1", "--evict")
    assert "0 copied, 1 already there" in moved.stdout and "6 outside the region evicted" in moved.stdout, moved.stdout
    with KeyframeStore.open(cache, readonly=True) as c:
        assert sorted(k.name for k in c.iter_keyframes()) == sorted([first_name, "mapped-here"])


def test_blobs_computed_after_a_push_are_pushed_by_the_next(server: Server, sample_db: Path, tmp_path: Path) -> None:
    """A robot pushes keyframes before indexing them (no features, points or VLAD yet), indexes,
    pushes again: the server's copies get those blobs, byte for byte, once."""
    import sqlite3

    url = server.new_database()
    robot = tmp_path / "robot.db"
    shutil.copy(sample_db, robot)
    conn = sqlite3.connect(robot)
    with conn:
        conn.execute("DELETE FROM blobs WHERE backend = 'geometric'")   # keyframes mapped, not indexed yet
    conn.close()
    first = cli("db", "push", str(robot), url)
    assert "7 copied, 0 already there" in first.stdout and "blobs added" not in first.stdout, first.stdout
    with KeyframeStore.open(sample_db, readonly=True) as a, KeyframeStore.open(robot) as r:
        for kf_id in r.keyframe_ids():                                   # indexed now: the original's blobs
            for backend, key, fp in a.blob_keys():
                if backend == "geometric" and (data := a.get_blob(kf_id, backend, key, fp)) is not None:
                    r.put_blob(kf_id, backend, key, data, fp)
        original = contents(a)
    again = cli("db", "push", str(robot), url)
    assert "0 copied, 7 already there, 0 damaged and skipped, 21 blobs added" in again.stdout, again.stdout + again.stderr
    with PostgresStore.open(url, readonly=True) as fleet:
        assert contents(fleet) == original                               # features, points, VLAD of all 7
    assert "blobs added" not in cli("db", "push", str(robot), url).stdout


def test_node_sync_evicts_what_the_robot_left_behind(server: Server, sample_db: Path, tmp_path: Path) -> None:
    """With ``fleet.evict_radius_m`` the node's cache follows the robot: keyframes beyond it that
    the server holds go (the node is told, to re-index); one only this robot has stays."""
    url = server.new_database()
    with KeyframeStore.open(sample_db, readonly=True) as a, PostgresStore.open(url, create=True) as fleet:
        assert push(a, fleet).sent == 7
    cache = tmp_path / "cache.db"
    shutil.copy(sample_db, cache)
    with KeyframeStore.open(cache) as c:
        kf = c.get_keyframe(c.keyframe_ids()[0])
        T = kf.T_world_cam.copy()
        T[2, 3] -= 1000.0
        c.add_keyframe(replace(kf, kf_id=None, name="mapped-far-away", T_world_cam=T))   # never pushed
        centre = c.poses()[1][:7, :3, 3].mean(axis=0)
    with pytest.raises(ConfigError, match="evict_radius_m must be 0 .* or >= fleet.radius_m"):
        FleetConfig(url=url, radius_m=100.0, evict_radius_m=50.0)
    told: list[int] = []
    where = [centre]
    sync = FleetSync(FleetConfig(url=url, push=False, radius_m=100.0, evict_radius_m=200.0), cache,
                     position=lambda: where[0], on_pulled=told.append)
    sync.sync_once()                                   # at the map: nothing to evict
    assert sync.status()["evicted"] == 0 and told == [] and sync.status()["level"] == "ok", sync.status()
    where[0] = centre + np.array([0.0, 0.0, 1000.0])  # the robot drove 1 km away
    sync.sync_once()
    assert sync.status()["evicted"] == 7 and told == [7], sync.status()
    assert "7 beyond 200 m evicted" in sync.status()["message"]
    with KeyframeStore.open(cache, readonly=True) as c:
        assert [k.name for k in c.iter_keyframes()] == ["mapped-far-away"]


def test_spatial_queries_use_the_gist_index_and_keep_utm_precision(server: Server, sample_db: Path) -> None:
    """Keyframes near a pose and along a route, answered by the server; a map at UTM-sized
    coordinates (5.4e6 m) keeps its poses bit for bit through push and pull."""
    with KeyframeStore.open(sample_db, readonly=True) as a:
        kfs = list(a.iter_keyframes())
    utm = np.array([512345.678, 5412345.125, 251.5])
    moved = [replace(kf, kf_id=None, T_world_cam=make_T(kf.T_world_cam[:3, :3], kf.T_world_cam[:3, 3] + utm))
             for kf in kfs]
    with PostgresStore.open(server.new_database(), create=True) as fleet:
        ids = fleet.add_keyframes(moved)
        centres = np.stack([kf.T_world_cam[:3, 3] for kf in moved])
        for i, c in zip(ids, centres):
            near = fleet.near(c, 0.5)
            assert near[0] == i and set(near) == {j for j, d in zip(ids, np.linalg.norm(centres - c, axis=1))
                                                  if d <= 0.5}
        assert fleet.near(centres[0] + [0.0, 0.0, 30.0], 20.0) == []
        radius = 2.0   # the scene's cameras lie on an arc: 4 of 7 are this close to the chord
        dist = Region(tuple(centres[0]), radius, (tuple(centres[0]), tuple(centres[-1]))).contains(centres)
        route = fleet.along_route([centres[0], centres[-1]], radius)
        assert set(route) == {i for i, d in zip(ids, dist) if d} and route[0] == ids[0] and route[-1] == ids[-1]
        assert 2 < len(route) < len(ids)
        x, y, z = centres[0]
        plan = server.sql(fleet.url.rsplit("/", 1)[1], "EXPLAIN SELECT id FROM keyframes WHERE ST_3DDWithin("
                          f"position, ST_MakePoint({x}, {y}, {z}), 1.0)")
        assert "Index Scan using keyframes_position" in plan, plan
        _, poses = fleet.poses()
        assert np.array_equal(poses.view(np.uint64), np.stack([kf.T_world_cam for kf in moved]).view(np.uint64))


def test_half_written_keyframe_is_invisible(server: Server, sample_db: Path) -> None:
    """A push failing after the keyframe row was written, before its blobs: nothing of it is visible."""
    with KeyframeStore.open(sample_db, readonly=True) as a:
        kf = a.get_keyframe(a.keyframe_ids()[0])
        features = a.get_blob(kf.kf_id, *next((b, k, fp) for b, k, fp in a.blob_keys() if k == "features"))
    url = server.new_database()
    with PostgresStore.open(url, create=True) as fleet, PostgresStore.open(url) as other:
        good = Record(kf, keyframe_uuid(kf), {("geometric", "features"): ("fp", features)})
        bad = Record(kf, keyframe_uuid(kf), {("geometric", "features"): ("fp", features),
                                             ("geometric", "bad\x00key"): ("fp", b"x")})  # fails at its INSERT
        with pytest.raises(KeyframeDBError):
            fleet.insert([bad])
        assert len(other) == 0 and other.ids_of([good.uuid]) == {} and other.blob_counts() == {}
        [(kf_id, inserted)] = fleet.insert([good])
        assert inserted and other.get_blob(kf_id, "geometric", "features", "fp") == features
        assert fleet.insert([good]) == [(kf_id, False)] and len(other) == 1    # idempotent by uuid


def test_schema_mismatch_is_a_clear_error(server: Server, sample_db: Path) -> None:
    url = server.new_database()
    with pytest.raises(KeyframeDBError, match="holds no fleet keyframe database"):
        PostgresStore.open(url)
    PostgresStore.open(url, create=True).close()
    server.sql(url.rsplit("/", 1)[1], "UPDATE fleet_meta SET value = '2' WHERE key = 'fleet_schema_version'")
    with pytest.raises(KeyframeDBError, match=r"fleet schema version 2, this reloc_vggt_ros speaks version 1; "
                                              r"robots and server must agree: upgrade this robot"):
        PostgresStore.open(url)
    run = cli("db", "push", str(sample_db), url)
    assert run.returncode == 1 and "ERROR:" in run.stderr and "fleet schema version 2" in run.stderr


def test_server_down_or_slow_is_retried_and_the_cache_keeps_working(server: Server, sample_db: Path,
                                                                     tmp_path: Path) -> None:
    down = server.base.rsplit(":", 1)[0] + ":9/fleet"          # nothing listens on port 9
    with pytest.raises(ServerUnavailable, match="cannot connect"):
        PostgresStore.open(down, connect_timeout_s=1)
    delays: list[float] = []
    with pytest.raises(ServerUnavailable):
        retry(lambda: PostgresStore.open(down, connect_timeout_s=1), "test", attempts=4, base_delay_s=1.0,
              sleep=delays.append)
    assert len(delays) == 3 and 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2 and 2 <= delays[2] <= 4

    # slow: a write waits on a lock held elsewhere longer than the statement timeout
    url = server.new_database()
    PostgresStore.open(url, create=True).close()
    holder = subprocess.Popen([PSQL, "-q", url, "-c", "BEGIN; LOCK TABLE fleet_meta IN SHARE MODE; SELECT pg_sleep(3); COMMIT;"],
                              stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        with PostgresStore.open(url, statement_timeout_s=0.5) as slow, KeyframeStore.open(sample_db,
                                                                                          readonly=True) as a:
            kf = a.get_keyframe(a.keyframe_ids()[0])
            with pytest.raises(ServerUnavailable, match="QueryCanceled"):
                slow.add_keyframe(kf)
            holder.wait(10)
            assert slow.add_keyframe(kf) > 0          # the same store reconnects and succeeds
    finally:
        holder.kill()

    # the node's background sync: unavailable -> says so, the cache is untouched and usable
    cache = tmp_path / "cache.db"
    shutil.copy(sample_db, cache)
    sync = FleetSync(FleetConfig(url=down, timeout_s=1.0), cache, position=lambda: np.zeros(3))
    sync.sync_once()
    status = sync.status()
    assert status["level"] == "warn" and "localizing from the local cache" in status["message"], status
    assert status["last_ok_age_s"] is None
    with KeyframeStore.open(cache, readonly=True) as c:
        assert len(c) == 7
    # and once the server is there, the same object syncs
    sync.config = FleetConfig(url=url, timeout_s=5.0)
    sync.sync_once()
    assert sync.status()["level"] == "ok" and sync.status()["pushed"] == 6, sync.status()  # 1 was added above


def test_node_pulls_its_region_and_keeps_localizing_while_the_server_is_down(server: Server, sample_db: Path,
                                                                            tmp_path: Path) -> None:
    """A robot joins with an empty cache: the /initialpose prior tells the node's fleet sync where
    to pull, the pulled keyframes are indexed and a real query localizes; with the server gone the
    node keeps localizing from its cache and /diagnostics says so; it recovers when the server is back."""
    pytest.importorskip("rclpy")
    import cv2
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    from reloc_vggt_ros.data import read_posed_folder
    from reloc_vggt_ros.ros.convert import bgr_to_image, intrinsics_to_camera_info, ns_to_stamp
    from reloc_vggt_ros.ros.node import RelocNode, _Frame

    url = server.new_database()
    dbname = url.rsplit("/", 1)[1]
    with KeyframeStore.open(sample_db, readonly=True) as a, PostgresStore.open(url, create=True) as fleet:
        assert push(a, fleet).sent == 7
    cache = tmp_path / "cache.db"
    KeyframeStore.create(cache).close()
    query = read_posed_folder(SAMPLE, "query")[0]
    image = bgr_to_image(cv2.imread(str(query.path)), Image())
    image.header.frame_id = "camera"
    info = intrinsics_to_camera_info(query.intrinsics, CameraInfo())

    def wait_for(condition, what: str, timeout_s: float = 60.0) -> None:
        t0 = time.monotonic()
        while not condition():
            assert time.monotonic() - t0 < timeout_s, f"timed out waiting for {what}: {node._fleet.status()}"
            time.sleep(0.1)

    def frame(stamp: int) -> None:
        ns_to_stamp(stamp, image.header.stamp)
        node._handle_frame(_Frame(stamp, image, info, time.monotonic()))

    def fleet_diagnostics():  # noqa: ANN202 - the second DiagnosticStatus
        sent = []
        node._diag_pub.publish = sent.append
        node.publish_diagnostics()
        return sent[0].status[1]

    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(ROOT / "config" / "reloc_vggt.yaml")])
    try:
        node = RelocNode(context=context, parameter_overrides=[
            Parameter("database_path", value=str(cache)), Parameter("fleet.url", value=url),
            Parameter("fleet.period_s", value=0.5), Parameter("fleet.timeout_s", value=2.0),
            Parameter("base_frame", value="")])   # publish the camera pose (no TF tree here)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        node._session.set_prior(query.T_world_cam)          # what an /initialpose does
        wait_for(lambda: node._fleet.status()["pulled"] == 7, "the region to be pulled")
        frame(1_700_000_000 * 10**9)
        assert (node.stats.published, node.stats.last_reason) == (1, "localized"), node.stats.last_reason
        diag = fleet_diagnostics()
        assert diag.name.endswith("fleet sync") and diag.level == b"\x00" and "in sync" in diag.message

        server.sql("postgres", f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")   # the server is gone
        server.sql("postgres", f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'")
        node._fleet.poke()
        wait_for(lambda: node._fleet.status()["level"] == "warn", "the sync to notice")
        frame(1_700_000_001 * 10**9)
        assert (node.stats.published, node.stats.last_reason) == (2, "localized"), node.stats.last_reason
        diag = fleet_diagnostics()
        assert diag.level == b"\x01" and "localizing from the local cache" in diag.message, diag.message

        server.sql("postgres", f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
        node._fleet.poke()
        wait_for(lambda: node._fleet.status()["level"] == "ok", "the sync to recover", timeout_s=60)
        node.trigger_shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.slow
def test_two_writers_and_a_reader_through_a_server_crash(server: Server, sample_db: Path, tmp_path: Path) -> None:
    """Two robots map (insert + push) concurrently while a third pulls the region and localizes a
    real query against what they pushed; once both writers have committed a few keyframes the
    server is crashed (``pg_ctl restart -m immediate``) and they go on. Every keyframe a writer saw
    committed is on the server, none twice; the reader pulled whole keyframes from both writers and
    localizes within 5 cm."""
    url = server.new_database()
    PostgresStore.open(url, create=True).close()
    server.sql("postgres", "CHECKPOINT")    # crash recovery replays only this test's writes
    flag = tmp_path / "crashed"
    roles = {"w0": ["writer", url, str(sample_db), str(tmp_path / "w0.db"), "0", str(flag)],
             "w1": ["writer", url, str(sample_db), str(tmp_path / "w1.db"), "1", str(flag)],
             "reader": ["reader", url, str(tmp_path / "r.db"), str(flag)]}
    logs = {name: (tmp_path / f"{name}.out", tmp_path / f"{name}.err") for name in roles}
    with contextlib.ExitStack() as files:
        procs = {name: subprocess.Popen([sys.executable, __file__, *args],
                                        stdout=files.enter_context(open(logs[name][0], "w")),
                                        stderr=files.enter_context(open(logs[name][1], "w")))
                 for name, args in roles.items()}
        try:
            t0 = time.monotonic()
            while min(len(logs[w][0].read_text().splitlines()) for w in ("w0", "w1")) < 3:
                assert time.monotonic() - t0 < 180 and all(p.poll() is None for p in procs.values()), \
                    {n: logs[n][1].read_text()[-2000:] for n in procs}
                time.sleep(0.2)
            server.restart()
            flag.touch()
            for p in procs.values():
                p.wait(timeout=240)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
    outs = {name: (out.read_text(), err.read_text()) for name, (out, err) in logs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}: {outs[name][1][-3000:]}"
    reported = {name: [json.loads(line) for line in outs[name][0].splitlines()] for name in ("w0", "w1")}
    committed = {r["uuid"] for rs in reported.values() for r in rs}
    rows = [line.split("|") for line in server.sql(url.rsplit("/", 1)[1],
                                                   "SELECT uuid, name, source FROM keyframes").splitlines()]
    names = [r[1] for r in rows]
    assert committed <= {r[0] for r in rows}, "a committed keyframe was lost"
    assert len(names) == len(set(names)), "a keyframe is on the server twice"
    assert all(any(r["after_crash"] for r in rs) for rs in reported.values()), "a writer stopped at the crash"
    retries = sum(outs[w][1].count("retry") for w in ("w0", "w1"))
    assert retries > 0, "the crash did not interrupt the writers"
    result = json.loads(outs["reader"][0].splitlines()[-1])
    assert result["incomplete"] == 0 and set(result["sources"]) == {"w0", "w1"}, result
    assert result["ok"] and result["error_m"] < 0.05 and result["error_deg"] < 1.0, result
    print(f"\nfleet: {len(rows)} keyframes on the server, {len(committed)} reported committed "
          f"(w0 {len(reported['w0'])}, w1 {len(reported['w1'])}), {retries} retries through the crash; "
          f"reader: {result}")


# --------------------------------------------------------------------------- worker processes
def _open(url: str) -> PostgresStore:
    return retry(lambda: PostgresStore.open(url), "open", attempts=200, base_delay_s=0.1, max_delay_s=1.0)


def _writer(url: str, src_db: str, cache: str, w: int, flag: Path) -> None:
    """Map half of the sample (copy 0 with its blobs, then copies 1 km apart), pushing after each
    keyframe; print each keyframe once its push returned (= committed on the server); stop 4
    keyframes after the crash."""
    src = KeyframeStore.open(src_db, readonly=True)
    keys = sorted(src.blob_keys())
    local = KeyframeStore.create(cache)
    fleet = _open(url)
    after = 0
    for copy in range(1000):
        for kf_id in src.keyframe_ids()[w::2]:
            kf = src.get_keyframe(kf_id)
            T = kf.T_world_cam.copy()
            T[0, 3] += 1000.0 * copy
            kf = replace(kf, kf_id=None, name=f"w{w}-c{copy}-{kf.name}", T_world_cam=T)
            crashed = flag.exists()
            new = local.add_keyframe(kf)
            for b, k, fp in keys if copy == 0 else ():
                local.put_blob(new, b, k, src.get_blob(kf_id, b, k, fp), fp)
            retry(lambda: push(local, fleet, source=f"w{w}"), "push", attempts=200, base_delay_s=0.1,
                  max_delay_s=1.0)
            print(json.dumps({"uuid": str(keyframe_uuid(kf)), "after_crash": crashed}), flush=True)
            after += crashed
            if after >= 4:
                return


def _reader(url: str, cache: str, flag: Path) -> None:
    """Pull the sample's region until both writers' copy-0 keyframes are in and the crash is past,
    then localize a query of the sample against them."""
    import cv2

    from reloc_vggt_ros.data import read_posed_folder
    from reloc_vggt_ros.geometry import pose_error
    from reloc_vggt_ros.localizer.registry import make_localizer

    query = read_posed_folder(SAMPLE, "query")[0]
    db_centres = np.stack([r.T_world_cam[:3, 3] for r in read_posed_folder(SAMPLE, "db")])
    region = Region(tuple(db_centres.mean(axis=0)), 100.0)
    local = KeyframeStore.create(cache)
    fleet = _open(url)
    incomplete, t0 = 0, time.monotonic()
    while not (len(local) >= len(db_centres) and flag.exists()):
        assert time.monotonic() - t0 < 300, f"only {len(local)} of {len(db_centres)} keyframes arrived"
        before = set(local.keyframe_ids())
        retry(lambda: pull(fleet, local, region), "pull", attempts=200, base_delay_s=0.1, max_delay_s=1.0)
        keys = [key for key in local.blob_keys() if key[0] != "fleet"]
        for kf_id in set(local.keyframe_ids()) - before:   # each arrives whole: keyframe + its 4 blobs
            incomplete += sum(local.get_blob(kf_id, *key) is not None for key in keys) != 4
        time.sleep(0.3)
    localizer = make_localizer("geometric", local)
    result = localizer.localize(cv2.imread(str(query.path)), query.intrinsics)
    err_m, err_deg = pose_error(result.T_world_cam, query.T_world_cam) if result.ok else (np.inf, np.inf)
    names = [kf.name for kf in local.iter_keyframes()]
    print(json.dumps({"ok": bool(result.ok), "error_m": float(err_m), "error_deg": float(err_deg),
                      "keyframes": len(names), "sources": sorted({n.split("-")[0] for n in names}),
                      "incomplete": int(incomplete)}), flush=True)


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "writer":
        _writer(rest[0], rest[1], rest[2], int(rest[3]), Path(rest[4]))
    else:
        _reader(rest[0], rest[1], Path(rest[2]))
