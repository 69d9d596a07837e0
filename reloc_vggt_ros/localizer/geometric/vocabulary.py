"""Weights-free global image descriptor: VLAD over local descriptors, vocabulary from the map.

The visual words are a faiss k-means over the database's own (Root)SIFT descriptors, so the
descriptor adapts to the scene with no training data. Training never holds the whole map:
:func:`keyframe_sample` keeps a bounded random share of each keyframe's descriptors as the map is
streamed (at most ``4 * MAX_TRAINING_DESCRIPTORS`` rows in all, ~200 MB), and k-means sees
``MAX_TRAINING_DESCRIPTORS`` of them; a map small enough to fit is sampled exactly as before. VLAD with intra-normalisation and signed
square root (Arandjelovic & Zisserman, "All about VLAD", CVPR 2013); cosine similarity compares.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

__all__ = ["train_vocabulary", "keyframe_sample", "vlad", "MAX_TRAINING_DESCRIPTORS"]

logger = logging.getLogger(__name__)

MAX_TRAINING_DESCRIPTORS = 100_000


def keyframe_sample(descriptors: np.ndarray, n_keyframes: int, seed: int) -> np.ndarray:
    """At most ``ceil(4 * MAX_TRAINING_DESCRIPTORS / n_keyframes)`` random rows of one keyframe's
    descriptors (all of them when it has fewer), so the training set of a map of any size is
    bounded while every keyframe is represented (rows kept in their order)."""
    cap = -(-4 * MAX_TRAINING_DESCRIPTORS // max(int(n_keyframes), 1))
    if len(descriptors) <= cap:
        return descriptors
    rows = np.sort(np.random.default_rng(seed).choice(len(descriptors), cap, replace=False))
    return descriptors[rows]


def train_vocabulary(descriptors: list[np.ndarray], n_words: int, seed: int = 0) -> np.ndarray:
    """Centroids [K,D] float32 of a k-means over (a sample of) the stacked descriptors.

    ``K = min(n_words, N // 8)`` so that tiny maps still get a usable vocabulary.
    """
    stacked = np.concatenate([d for d in descriptors if len(d)], axis=0).astype(np.float32)
    rng = np.random.default_rng(seed)
    if len(stacked) > MAX_TRAINING_DESCRIPTORS:
        stacked = stacked[rng.choice(len(stacked), MAX_TRAINING_DESCRIPTORS, replace=False)]
    k = max(1, min(n_words, len(stacked) // 8))
    kmeans = faiss.Kmeans(stacked.shape[1], k, niter=20, seed=seed, verbose=False,
                          max_points_per_centroid=1024)
    kmeans.train(np.ascontiguousarray(stacked))
    logger.info("trained a %d-word vocabulary on %d descriptors", k, len(stacked))
    return np.asarray(kmeans.centroids, np.float32)


def vlad(descriptors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Unit-norm VLAD vector [K*D] float32 of local descriptors [N,D] (zeros if N == 0)."""
    k, dim = centroids.shape
    out = np.zeros((k, dim), np.float32)
    if len(descriptors) == 0:
        return out.reshape(-1)
    desc = np.asarray(descriptors, np.float32)
    # nearest word: argmin |d - c|^2 = argmax (d.c - |c|^2 / 2)
    scores = desc @ centroids.T - 0.5 * np.einsum("kd,kd->k", centroids, centroids)
    words = scores.argmax(axis=1)
    np.add.at(out, words, desc - centroids[words])
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)   # intra-normalisation
    out = np.sign(out) * np.sqrt(np.abs(out))
    flat = out.reshape(-1)
    return flat / max(float(np.linalg.norm(flat)), 1e-12)
