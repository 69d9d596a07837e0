"""The shipped sample scene reads on its own and matches its source in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from reloc_vggt_ros.data import load_image, read_posed_folder
from reloc_vggt_ros.geometry import invert_T, is_valid_T

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample" / "fountain-P11-small"
SOURCE = ROOT / ".." / "shared" / "data" / "fountain-P11"
needs_source = pytest.mark.skipif(not SOURCE.is_dir(), reason=f"source scene {SOURCE} not present")


def test_sample_reads_standalone_and_is_small() -> None:
    recs = read_posed_folder(SAMPLE)
    assert len(recs) == 11 and len(read_posed_folder(SAMPLE, "db")) == 7
    assert len(read_posed_folder(SAMPLE, "query")) == 4
    for r in recs:
        assert (r.intrinsics.width, r.intrinsics.height) == (640, 427) and is_valid_T(r.T_world_cam, tol=1e-9)
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 1_000_000, f"sample is {total} bytes"
    readme = (SAMPLE / "README.md").read_text()
    assert "Strecha" in readme and "research use" in readme and "make_sample.py" in readme


@needs_source
def test_sample_poses_equal_source_and_intrinsics_are_scaled_exactly() -> None:
    src, smp = read_posed_folder(SOURCE), read_posed_folder(SAMPLE)
    assert [r.name for r in src] == [r.name for r in smp] and [r.split for r in src] == [r.split for r in smp]
    for s, m in zip(src, smp):
        assert np.array_equal(s.T_world_cam, m.T_world_cam)          # camera centres identical
        assert m.intrinsics == s.intrinsics.scaled(640 / 1536, 427 / 1024)
        resized = cv2.resize(load_image(s.path), (640, 427), interpolation=cv2.INTER_AREA)
        assert np.abs(load_image(m.path).astype(int) - resized).mean() < 3.0   # JPEG loss only


def test_sample_poses_explain_real_matches() -> None:
    """SIFT matches between two sample views lie on the epipolar lines of the GT poses."""
    a, b = read_posed_folder(SAMPLE)[0], read_posed_folder(SAMPLE)[2]
    sift = cv2.SIFT_create()
    kp_a, d_a = sift.detectAndCompute(cv2.cvtColor(load_image(a.path), cv2.COLOR_BGR2GRAY), None)
    kp_b, d_b = sift.detectAndCompute(cv2.cvtColor(load_image(b.path), cv2.COLOR_BGR2GRAY), None)
    good = [m for m, n in cv2.BFMatcher().knnMatch(d_a, d_b, k=2) if m.distance < 0.75 * n.distance]
    assert len(good) > 100
    xa = np.array([kp_a[m.queryIdx].pt for m in good])
    xb = np.array([kp_b[m.trainIdx].pt for m in good])

    def epipolar_px(T_world_b: np.ndarray) -> np.ndarray:
        T_b_a = invert_T(T_world_b) @ a.T_world_cam
        t = T_b_a[:3, 3]
        E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ T_b_a[:3, :3]
        F = np.linalg.inv(b.intrinsics.K).T @ E @ np.linalg.inv(a.intrinsics.K)
        ha, hb = np.c_[xa, np.ones(len(xa))], np.c_[xb, np.ones(len(xb))]
        la, lb = ha @ F.T, hb @ F                     # epipolar lines in b and in a
        num = np.abs(np.sum(hb * la, axis=1))
        return 0.5 * (num / np.hypot(la[:, 0], la[:, 1]) + num / np.hypot(lb[:, 0], lb[:, 1]))

    dist = epipolar_px(b.T_world_cam)
    assert np.median(dist) < 0.3, f"median epipolar distance {np.median(dist):.3f} px"   # measured 0.126
    assert np.median(epipolar_px(read_posed_folder(SAMPLE)[9].T_world_cam)) > 5.0         # wrong pose
