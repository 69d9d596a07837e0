"""A real temple-ring map for the tracking tests: the db views near the stream's start and half way
round the ring (where the kidnap lands), geometric ``realtime`` localizer, and the stream helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.stream import Renderer, make_stream, object_centre, ring_order
from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.keyframes import KeyframeStore
from reloc_vggt_ros.keyframes.build import keyframe_from_posed
from reloc_vggt_ros.localizer.registry import index_database, make_localizer

TEMPLE = Path(__file__).parents[2] / ".." / "shared" / "data" / "middlebury-temple-ring"


@pytest.fixture(scope="session")
def temple():
    """(all posed views, renderer) of the temple ring."""
    recs = read_posed_folder(TEMPLE)
    return recs, Renderer(recs)


@pytest.fixture(scope="session")
def temple_store(tmp_path_factory: pytest.TempPathFactory, temple) -> KeyframeStore:
    recs, _ = temple
    order = ring_order(recs, object_centre(recs))
    split = {name: kind for kind, name in (line.split() for line in (TEMPLE / "split.txt").read_text().splitlines())}
    n = len(order)
    near = [order[i % n] for i in range(-3, 9)] + [order[i % n] for i in range(n // 2 - 4, n // 2 + 10)]
    chosen = sorted({i for i in near if split[recs[i].name] == "db"})
    path = tmp_path_factory.mktemp("temple") / "temple.db"
    store = KeyframeStore.create(path, units="m", creator="test_tracking")
    store.add_keyframes([keyframe_from_posed(recs[i]) for i in chosen])
    index_database(store, "geometric", preset="realtime")
    yield store
    store.close()


@pytest.fixture(scope="session")
def realtime(temple_store):
    return make_localizer("geometric", temple_store, preset="realtime", top_k=5)


@pytest.fixture(scope="session")
def stream(temple):
    """``stream(frames, kidnap_at=None)``: [(StreamFrame, image, intrinsics)] of the 30 Hz stream."""
    recs, renderer = temple

    def frames(n: int, kidnap_at: int | None = None, speed_deg_s: float = 10.0) -> list:
        return [(f, renderer.render(f), renderer.intrinsics) for f in make_stream(recs, n, 30.0, speed_deg_s, kidnap_at)]
    return frames
