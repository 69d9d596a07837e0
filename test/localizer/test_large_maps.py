"""Large maps: what opening a map reads, the byte-bounded keyframe cache, the stored global
index, the k-d tree prior and neighbour selection (same answers as the all-pairs code), the
memory budget, the LK warm-up bound.

Real data: the sample fountain-P11 map at 320 px (7 keyframes, built and indexed by `db build`)
and its query images; the exactness checks also on real poses of the shared scenes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data import read_posed_folder
from reloc_vggt_ros.errors import ConfigError
from reloc_vggt_ros.geometry import make_T, so3_exp
from reloc_vggt_ros.keyframes import KeyframeStore, build_keyframe_db, pack_arrays, unpack_arrays
from reloc_vggt_ros.keyframes.build import keyframe_from_posed
from reloc_vggt_ros.localizer.geometric.config import TriangulationConfig
from reloc_vggt_ros.localizer.geometric.features import extract_features
from reloc_vggt_ros.localizer.geometric.indexing import all_neighbours
from reloc_vggt_ros.localizer.geometric.lk_refine import KeyframeImages
from reloc_vggt_ros.localizer.geometric.triangulation import select_neighbours
from reloc_vggt_ros.localizer.registry import make_localizer
from reloc_vggt_ros.localizer.retrieval import GlobalIndex, PoseIndex, nearest_by_pose

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample" / "fountain-P11-small"
DATA = ROOT / ".." / "shared" / "data"
SIDE = 320


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_keyframe_db(SAMPLE, tmp_path_factory.mktemp("large") / "map.db", split="db", max_side=SIDE,
                             backend="geometric")


@pytest.fixture(scope="module")
def queries() -> list:
    return [keyframe_from_posed(r, SIDE) for r in read_posed_folder(SAMPLE, "query")]


class CountingStore(KeyframeStore):
    """Counts the per-keyframe blob and image reads."""

    reads: list[tuple[int, str]]

    def get_blob(self, kf_id, backend, key, fingerprint):  # type: ignore[no-untyped-def]
        self.reads.append((int(kf_id), key))
        return super().get_blob(kf_id, backend, key, fingerprint)


def _open_counting(path: Path) -> CountingStore:
    store = CountingStore.open(path, readonly=True)
    store.reads = []
    return store  # type: ignore[return-value]


def test_open_reads_nothing_per_keyframe_and_queries_load_what_they_retrieve(sample_db: Path, queries: list) -> None:
    """With a cache smaller than the map: opening reads the stored graph and index only, a query
    reads the keyframes it retrieved, the cache stays within its bytes, and every answer equals
    the one of a map held whole (cache large enough: loaded at open, as before)."""
    whole = make_localizer("geometric", KeyframeStore.open(sample_db, readonly=True), preset="realtime")
    store = _open_counting(sample_db)
    cache_mb = 1.5                                  # ~1 keyframe of 320 px
    loc = make_localizer("geometric", store, preset="realtime", map={"cache_mb": cache_mb}, query={"top_k": 3})
    assert store.reads == [] and loc._map.computed == {"features": 0, "points": 0, "vocabulary": 0, "vlad": 0}
    assert len(loc._map.entries) == 7
    for q in queries:
        store.reads.clear()
        got = loc.localize(q.decode_image(), q.intrinsics)
        want = make_localizer("geometric", whole.store, preset="realtime", query={"top_k": 3}).localize(
            q.decode_image(), q.intrinsics)
        assert (got.status, got.num_inliers) == (want.status, want.num_inliers)
        np.testing.assert_array_equal(got.T_world_cam, want.T_world_cam)
        touched = {i for i, _ in store.reads}
        assert touched <= set(got.diagnostics["retrieved"]) and len(touched) <= 3, (touched, got.diagnostics)
        assert loc._map.cache.nbytes <= cache_mb * 2**20
    assert {k for _, k in store.reads} <= {"features", "points"}


def test_stored_index_and_graph_are_reused_and_refreshed(sample_db: Path, tmp_path: Path, queries: list) -> None:
    """A keyframe added to the map: the refresh extends the stored index (one new VLAD), and the
    next open reads it back (no VLAD recomputed, the new keyframe retrievable)."""
    import shutil

    db = tmp_path / "grow.db"
    shutil.copy(sample_db, db)
    q = queries[0]
    with KeyframeStore.open(db) as store:
        loc = make_localizer("geometric", store)
        kf_id = store.add_keyframe(q)
        loc.refresh()
        assert loc._map.computed["vlad"] == 1 and loc._map.computed["features"] == 1
        assert kf_id in loc._state.retriever.index.ids
    store = _open_counting(db)
    again = make_localizer("geometric", store, map={"cache_mb": 1.0})
    assert store.reads == [] and len(again._map.entries) == 8
    feats = extract_features(q.decode_image(), again.config.query.features)
    assert again._state.retriever.retrieve(feats.descriptors, 1) == [kf_id]       # itself, found first


def test_a_database_from_before_gets_its_graph_and_index_without_recomputing(sample_db: Path, tmp_path: Path
                                                                              ) -> None:
    """A map indexed before the stored graph and index existed: the first writable open adds
    them from the blobs as they are (no feature, point or VLAD recomputed), the next reads them."""
    import shutil
    import sqlite3

    db = tmp_path / "old.db"
    shutil.copy(sample_db, db)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM map_blobs WHERE key IN ('graph', 'global_index')")
    with KeyframeStore.open(db) as store:
        assert make_localizer("geometric", store)._map.computed == {"features": 0, "points": 0, "vocabulary": 0,
                                                                     "vlad": 0}
        assert {"graph", "global_index"} <= {k for k, in store._conn.execute("SELECT key FROM map_blobs")}
    store = _open_counting(db)
    make_localizer("geometric", store, map={"cache_mb": 1.0})
    assert store.reads == []


def test_a_map_over_the_memory_budget_is_refused_naming_the_knob(sample_db: Path) -> None:
    with KeyframeStore.open(sample_db, readonly=True) as store:
        with pytest.raises(ConfigError, match=r"geometric\.map\.memory_budget_mb = 0\.6 MB: raise memory_budget_mb"):
            make_localizer("geometric", store, map={"memory_budget_mb": 0.6, "cache_mb": 0.5})


def test_global_index_round_trips_and_the_approximate_one_finds_the_same_neighbours() -> None:
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(512, 48)))[0].T       # VLADs of a map span few directions
    desc = (rng.normal(size=(3000, 48)) @ basis + 1e-3 * rng.normal(size=(3000, 512))).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    ids = np.arange(1000, 4000)
    exact = GlobalIndex(512, backend="numpy", normalize=False)
    exact.add(ids, desc)
    approx = GlobalIndex.approximate(512, desc[::3], n_lists=30, n_probe=8, normalize=False)
    approx.add(ids, desc)
    q = desc[::97] + 0.01 * rng.normal(size=(31, 512)).astype(np.float32)
    import faiss

    legacy = pack_arrays({"ids": ids, "dim": np.array(512), "normalize": np.array(False),  # whole faiss bytes
                          "kind": np.array("ivf-sq8"), "faiss": faiss.serialize_index(approx._faiss)})
    for index, blob in ((exact, exact.to_bytes()), (approx, approx.to_bytes()), (approx, legacy)):
        back = GlobalIndex.from_bytes(blob)
        assert back.kind == index.kind and np.array_equal(back.ids, index.ids)
        for a, b in zip(back.search(q, 5), index.search(q, 5)):
            np.testing.assert_array_equal(a, b)
    cut = unpack_arrays(approx.to_bytes())
    cut["ivf_ids"] = cut["ivf_ids"][:-1]                                 # lists that do not add up
    with pytest.raises(ValueError, match="global index blob: 30 lists of 3000 entries"):
        GlobalIndex.from_bytes(pack_arrays(cut))
    want, _ = exact.search(q, 10)
    got, scores = approx.search(q, 10)
    assert (got[:, 0] == want[:, 0]).mean() == 1.0                       # each finds its own vector first
    assert np.all(np.diff(scores, axis=1) <= 1e-6)                       # best first
    every = GlobalIndex.approximate(512, desc[::3], n_lists=30, n_probe=30, normalize=False)
    every.add(ids, desc)                                                 # all lists scanned: the exact top 10
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(every.search(q, 10)[0], want)]) > 0.95
    with pytest.raises(ValueError, match="not a global index blob"):
        GlobalIndex.from_bytes(b"garbage")


def test_approximate_index_reranked_retrieves_what_the_exact_one_does(sample_db: Path, tmp_path: Path,
                                                                       queries: list) -> None:
    """A map above ``exact_index_max`` gets the inverted-list index; its candidates are re-ranked by
    the stored VLADs, so retrieval (and every answer) equals the exact index's."""
    import shutil

    db = tmp_path / "approx.db"
    shutil.copy(sample_db, db)
    with KeyframeStore.open(db) as store, KeyframeStore.open(sample_db, readonly=True) as ref:
        approx = make_localizer("geometric", store, preset="realtime", map={"exact_index_max": 3}, query={"top_k": 3})
        exact = make_localizer("geometric", ref, preset="realtime", query={"top_k": 3})
        assert (approx._state.retriever.index.kind, exact._state.retriever.index.kind) == ("ivf-sq8", "flat")
        for q in queries:
            d = extract_features(q.decode_image(), approx.config.query.features).descriptors
            assert approx._state.retriever.retrieve(d, 3) == exact._state.retriever.retrieve(d, 3)
            got, want = approx.localize(q.decode_image(), q.intrinsics), exact.localize(q.decode_image(), q.intrinsics)
            assert (got.status, got.num_inliers) == (want.status, want.num_inliers)
            np.testing.assert_array_equal(got.T_world_cam, want.T_world_cam)


def _poses(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([make_T(so3_exp(rng.normal(size=3) * 1.2), rng.uniform(-50, 50, 3)) for _ in range(n)])


@pytest.mark.parametrize("rot_weight", [0.0, 1.0, 200.0])
def test_pose_index_equals_the_pass_over_every_keyframe(rot_weight: float) -> None:
    """Random poses (a large rotation weight makes far keyframes win: the candidate set grows)
    and the real poses of all four shared scenes."""
    Ts = _poses(500, 1)
    ids = np.arange(7, 507)
    index = PoseIndex(ids, Ts)
    for T in _poses(20, 2):
        for k in (1, 4, 30):
            got, cost = index.nearest(T, k, rot_weight)
            want, want_cost = nearest_by_pose(ids, Ts, T, k, rot_weight)
            assert np.array_equal(got, want) and np.array_equal(cost, want_cost)
    for scene in ("fountain-P11", "Herz-Jesus-P8", "entry-P10", "middlebury-temple-ring"):
        recs = read_posed_folder(DATA / scene, check_images=False)
        Ts = np.stack([r.T_world_cam for r in recs])
        ids = np.arange(len(Ts))
        for T in Ts[::3]:
            assert np.array_equal(PoseIndex(ids, Ts).nearest(T, 4, rot_weight)[0],
                                  nearest_by_pose(ids, Ts, T, 4, rot_weight)[0])


def test_kd_tree_neighbours_equal_the_all_pairs_selection() -> None:
    for config in (TriangulationConfig(), TriangulationConfig(max_view_angle_deg=20.0, max_neighbours=5)):
        Ts = _poses(400, 3)
        assert all_neighbours(Ts, config) == [select_neighbours(p, Ts, config) for p in range(len(Ts))]
        recs = read_posed_folder(DATA / "middlebury-temple-ring", check_images=False)
        Ts = np.stack([r.T_world_cam for r in recs])
        assert all_neighbours(Ts, config) == [select_neighbours(p, Ts, config) for p in range(len(Ts))]
    limited = TriangulationConfig(max_neighbour_distance_m=20.0)
    Ts = _poses(300, 4)
    got = all_neighbours(Ts, limited)
    assert got == [select_neighbours(p, Ts, limited) for p in range(len(Ts))]
    assert all(np.linalg.norm(Ts[j, :3, 3] - Ts[p, :3, 3]) <= 20.0 for p, nb in enumerate(got) for j in nb)


def test_warm_stops_when_the_next_image_does_not_fit(sample_db: Path) -> None:
    """A capacity of 2.5 images: the warm-up decodes 3 (the third pushes the first out) and stops;
    before the fix it decoded every keyframe, each evicting the one before."""
    with KeyframeStore.open(sample_db, readonly=True) as store:
        ids = store.keyframe_ids()
        w, h = store.intrinsics()[ids[0]].width, store.intrinsics()[ids[0]].height
        decoded: list[int] = []
        images = KeyframeImages(store, capacity_bytes=int(2.5 * w * h))
        real_get = store.get_keyframe
        store.get_keyframe = lambda i: decoded.append(i) or real_get(i)  # type: ignore[method-assign]
        images.warm(ids)
        assert decoded == ids[:3] and len(images) == 2
