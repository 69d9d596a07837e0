"""A short soak of the node process (``bench.soak``): memory, threads and fds stay flat, and
every frame the node receives is published, rejected with a reason or counted as a drop
(or, at the end, still waits in the stamp matcher for a camera_info DDS lost).

600 frames at 30 Hz (20 s of stream) instead of the bench's 10,000: the suite must stay within
its time budget on 2 cores; the judging (warm-up, then flat) is the bench's own code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from bench import soak  # noqa: E402
from bench.node_rate import SCENE  # noqa: E402
from reloc_vggt_ros.data.posed_folder import read_posed_folder  # noqa: E402
from reloc_vggt_ros.keyframes import KeyframeStore  # noqa: E402
from reloc_vggt_ros.keyframes.build import keyframe_from_posed  # noqa: E402
from reloc_vggt_ros.localizer.registry import index_database  # noqa: E402

from ros_harness import next_domain_id  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FRAMES = 600


@pytest.fixture(scope="module")
def temple_map(tmp_path_factory) -> Path:
    """8 real temple keyframes, indexed (a full 31-keyframe build takes a minute on a loaded machine)."""
    path = tmp_path_factory.mktemp("soak") / "temple8.db"
    with KeyframeStore.create(path, creator="test") as store:
        store.add_keyframes([keyframe_from_posed(r) for r in read_posed_folder(SCENE, "db")[:8]])
        index_database(store, "geometric")
    return path


def test_short_soak_is_flat_and_accounts_for_every_frame(tmp_path: Path, temple_map: Path) -> None:
    r = soak.run(FRAMES, 30.0, next_domain_id(), tmp_path, {"geometric.preset": "realtime"},
                 warmup_s=8.0, window_s=5.0, db=temple_map)
    assert r["node_exit_code"] == 0, Path(r["node_log"]).read_text()[-3000:]
    assert r["frames_sent"] == FRAMES
    # best-effort image subscription: DDS may lose a frame on a loaded machine before the node sees it
    assert r["frames_received"] >= 0.95 * FRAMES, r
    # published + rejected + dropped == received, but for images still waiting for a lost camera_info
    assert 0 <= r["frames_unaccounted"] <= soak.SYNC_DEPTH, r
    v = r["verdicts"]
    assert v["rss_flat"], (r["rss_mb_first"], r["rss_mb_max_after_warmup"], r["rss_mb_last"])
    assert v["threads_constant"], r["threads_min_max_after_warmup"]
    assert v["fds_constant"], r["fds_min_max_after_warmup"]
    assert r["frames_published"] > 20 and r["frames_answered"] > 20, r
    assert r["backlog_max_after_warmup"] <= soak.MAX_BACKLOG, r["backlog_max_after_warmup"]
    assert len(r["curves"]["samples"]) >= 15                # one sample a second over the whole run
    png = soak.plot(r, tmp_path / "soak.png")
    assert png.stat().st_size > 10_000
