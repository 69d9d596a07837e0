"""GlobalIndex (faiss and numpy agree with brute force), pose-prior ranking, the retrievers' prior
policy, thumbnail retrieval from the descriptors db build stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data import load_image, read_posed_folder
from reloc_vggt_ros.geometry import make_T, rotation_error_deg, so3_exp
from reloc_vggt_ros.keyframes import KeyframeStore, build_keyframe_db
from reloc_vggt_ros.keyframes.build import keyframe_from_posed
from reloc_vggt_ros.localizer import retrieval
from reloc_vggt_ros.localizer.retrieval import (GLOBAL_KEY, THUMBNAIL_BACKEND, THUMBNAIL_FINGERPRINT, GlobalIndex,
                                                Retriever, ThumbnailRetriever, nearest_by_pose,
                                                store_global_descriptors, thumbnail_descriptor)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BACKENDS = ["numpy", pytest.param("faiss", marks=pytest.mark.skipif(retrieval.faiss is None,
                                                                   reason="faiss not importable"))]


def random_db(n: int = 300, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.permutation(10_000)[:n].astype(np.int64), rng.normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_search_matches_brute_force_cosine(backend: str) -> None:
    ids, desc = random_db()
    index = GlobalIndex(64, backend=backend)
    index.add(ids[:100], desc[:100])
    index.add(ids[100:], desc[100:])         # adding in two batches is the same as one
    assert len(index) == 300 and index.backend == backend
    queries = np.random.default_rng(1).normal(size=(7, 64)).astype(np.float32)
    got_ids, got_scores = index.search(queries, k=5)
    unit = desc / np.linalg.norm(desc, axis=1, keepdims=True)
    sims = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    want = np.argsort(-sims, axis=1)[:, :5]
    assert got_ids.shape == (7, 5) and np.array_equal(got_ids, ids[want])
    np.testing.assert_allclose(got_scores, np.take_along_axis(sims, want, axis=1), atol=1e-5)
    one_ids, one_scores = index.search(queries[3], k=5)   # a single [D] query gives [k]
    assert one_ids.shape == (5,) and np.array_equal(one_ids, got_ids[3])
    # a stored descriptor finds itself with cosine 1
    self_ids, self_scores = index.search(desc[42] * 3.0, k=1)
    assert self_ids[0] == ids[42] and self_scores[0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.skipif(retrieval.faiss is None, reason="faiss not importable")
def test_faiss_and_numpy_give_the_same_results_unnormalised() -> None:
    ids, desc = random_db(500, 32, seed=3)
    q = np.random.default_rng(4).normal(size=(20, 32)).astype(np.float32)
    results = []
    for backend in ("faiss", "numpy"):
        index = GlobalIndex(32, backend=backend, normalize=False)
        index.add(ids, desc)
        results.append(index.search(q, k=10))
    assert np.array_equal(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_and_empty_indices_and_bad_input(backend: str) -> None:
    index = GlobalIndex(8, backend=backend)
    ids, scores = index.search(np.ones(8), k=3)
    assert ids.shape == (0,) and scores.shape == (0,)
    index.add([7, 9], np.eye(8, dtype=np.float32)[:2])
    ids, _ = index.search(np.eye(8)[1], k=10)          # k larger than the index
    assert ids.tolist() == [9, 7]
    with pytest.raises(ValueError, match=r"\[N,8\]"):
        index.add([1], np.ones((1, 7)))
    with pytest.raises(ValueError, match="2 ids for 1"):
        index.add([1, 2], np.ones((1, 8)))
    with pytest.raises(ValueError, match="k must be positive"):
        index.search(np.ones(8), k=0)
    with pytest.raises(ValueError, match="finite"):
        index.search(np.full(8, np.nan), k=1)


def test_nearest_by_pose_on_real_poses() -> None:
    recs = read_posed_folder(DATA / "fountain-P11", "db", check_images=False)
    ids = np.arange(100, 100 + len(recs))
    Ts = np.stack([r.T_world_cam for r in recs])
    # the prior at a keyframe's own pose ranks it first with zero cost
    got, cost = nearest_by_pose(ids, Ts, Ts[3], k=3)
    assert got[0] == 103 and cost[0] == pytest.approx(0.0, abs=1e-9) and np.all(np.diff(cost) >= 0)
    # pure translation ranking equals sorting camera-centre distances
    prior = Ts[3] @ make_T(so3_exp([0.0, 0.4, 0.0]), [0.5, 0.0, 0.0])
    got, cost = nearest_by_pose(ids, Ts, prior, k=len(ids), rot_weight_m_per_rad=0.0)
    dist = np.linalg.norm(Ts[:, :3, 3] - prior[:3, 3], axis=1)
    assert np.array_equal(got, ids[np.argsort(dist)]) and np.allclose(cost, np.sort(dist))
    # a dominant rotation weight ranks by viewing-direction angle
    got, _ = nearest_by_pose(ids, Ts, prior, k=len(ids), rot_weight_m_per_rad=1e6)
    angles = [rotation_error_deg(T[:3, :3], prior[:3, :3]) for T in Ts]
    assert np.array_equal(got, ids[np.argsort(angles)])
    with pytest.raises(ValueError, match="k > 0"):
        nearest_by_pose(ids, Ts, prior, k=0)


@pytest.mark.parametrize("scene,min_hits", [("fountain-P11", 4), ("Herz-Jesus-P8", 3), ("entry-P10", 3),
                                            ("middlebury-temple-ring", 14)])
def test_thumbnail_retrieval_finds_a_neighbouring_keyframe(scene: str, min_hits: int) -> None:
    """Top-1 by thumbnail descriptor is one of the two keyframes nearest in GT pose (measured:
    4/4, 3/3, 3/3, 15/16 queries)."""
    db = read_posed_folder(DATA / scene, "db")
    queries = read_posed_folder(DATA / scene, "query")
    index = GlobalIndex(16 * 12)
    index.add(np.arange(len(db)), np.stack([thumbnail_descriptor(load_image(r.path)) for r in db]))
    Ts = np.stack([r.T_world_cam for r in db])
    hits = 0
    for q in queries:
        top, _ = index.search(thumbnail_descriptor(load_image(q.path)), k=1)
        near, _ = nearest_by_pose(np.arange(len(db)), Ts, q.T_world_cam, k=2)
        hits += int(top[0] in near)
    assert hits >= min_hits, f"{scene}: {hits}/{len(queries)}"


class _Given(Retriever):
    """A retriever whose query is its descriptor."""

    def describe(self, query: np.ndarray) -> np.ndarray:
        return query


def test_prior_policy_takes_half_by_distance_and_the_rest_by_similarity() -> None:
    ids = np.array([10, 11, 12, 13, 14, 15])
    Ts = np.stack([make_T(np.eye(3), [float(x), 0.0, 0.0]) for x in range(6)])
    desc = np.eye(6, dtype=np.float32)[::-1] + 0.1
    r = _Given(ids, Ts, desc)
    q = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 1.0], np.float32)  # similarity order 10, 11, ..., 15
    assert r.retrieve(q, 3) == [10, 11, 12]
    prior = make_T(np.eye(3), [5.2, 0.0, 0.0])               # nearest: 15, then 14
    assert r.retrieve(q, 4, prior) == [15, 14, 10, 11]
    assert r.retrieve(q, 1, prior) == [15]                   # at least one by the prior
    assert r.retrieve(q, 20, prior) == [15, 14, 13, 10, 11, 12]
    assert _Given(np.zeros(0), np.zeros((0, 4, 4)), np.zeros((0, 6))).retrieve(q, 3) == []


def test_thumbnail_retrieval_reads_what_db_build_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """db build stores the thumbnails; the VGGT backends' retriever reads them (computes none),
    and computes (and stores, unless read-only) only those of keyframes added later."""
    scene = DATA / "fountain-P11"
    db = build_keyframe_db(scene, tmp_path / "f.db", max_side=400)
    calls = []
    real = retrieval.thumbnail_descriptor
    monkeypatch.setattr(retrieval, "thumbnail_descriptor", lambda im: calls.append(1) or real(im))
    query = read_posed_folder(scene, "query")[0]              # 0001.jpg, between 0000 and 0002
    with KeyframeStore.open(db) as store:
        stored = dict(store.iter_blobs(THUMBNAIL_BACKEND, GLOBAL_KEY, THUMBNAIL_FINGERPRINT))
        assert len(stored) == 7
        r, desc = ThumbnailRetriever.from_store(store)
        assert calls == [] and len(r) == 7
        names = {i: store.get_keyframe(i).name for i in store.keyframe_ids()}
        assert {names[i] for i in r.retrieve(load_image(query.path), 2)} == {"0000.jpg", "0002.jpg"}
        calls.clear()
        new_id = store.add_keyframe(keyframe_from_posed(query, max_side=400))
        r, desc = ThumbnailRetriever.from_store(store, desc)
        assert len(calls) == 1 and len(r) == 8                     # only the new keyframe
        assert len(list(store.iter_blobs(THUMBNAIL_BACKEND, GLOBAL_KEY, THUMBNAIL_FINGERPRINT))) == 8
        assert r.retrieve(load_image(query.path), 1) == [new_id]
        # a new descriptor type is added beside; already indexed keyframes are skipped
        assert store_global_descriptors(store, "tiny", "t4x3", lambda im: real(im, (4, 3))) == 8
        assert store_global_descriptors(store, "tiny", "t4x3", lambda im: real(im, (4, 3))) == 0
    bare = build_keyframe_db(scene, tmp_path / "bare.db", max_side=400, thumbnails=False)
    calls.clear()
    with KeyframeStore.open(bare, readonly=True) as store:
        r, _ = ThumbnailRetriever.from_store(store)
        assert len(calls) == 7 and len(r) == 7                     # computed, not stored (read-only)
        assert list(store.iter_blobs(THUMBNAIL_BACKEND, GLOBAL_KEY, THUMBNAIL_FINGERPRINT)) == []
