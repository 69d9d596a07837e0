"""Converters on tiny fixtures that mimic the 7-Scenes and Cambridge Landmarks layouts.

The fixtures carry real images and real ground-truth poses from ../shared/data, written the way
each dataset documents them; the converted folder must give back exactly those poses.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from reloc_vggt_ros.data.posed_folder import load_image, read_posed_folder
from reloc_vggt_ros.errors import DataError
from reloc_vggt_ros.geometry import invert_T, R_to_quat
from reloc_vggt_ros.training.converters import convert_7scenes, convert_cambridge, read_nvm_focals

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"


def _seven_scenes_fixture(root: Path) -> list[np.ndarray]:
    recs = read_posed_folder(DATA / "Herz-Jesus-P8")
    poses = []
    for i, rec in enumerate(recs):
        seq = root / f"seq-0{1 + (i >= 5)}"
        seq.mkdir(parents=True, exist_ok=True)
        stem = f"frame-{i % 5:06d}"
        cv2.imwrite(str(seq / f"{stem}.color.png"), cv2.resize(load_image(rec.path), (640, 480)))
        np.savetxt(seq / f"{stem}.pose.txt", rec.T_world_cam)        # camera-to-world, 4x4
        poses.append(rec.T_world_cam)
    (root / "TrainSplit.txt").write_text("sequence1\n")
    (root / "TestSplit.txt").write_text("sequence2\n")
    return poses


def test_7scenes(tmp_path: Path) -> None:
    poses = _seven_scenes_fixture(tmp_path / "chess")
    bad = tmp_path / "chess" / "seq-02" / "frame-000002.pose.txt"
    bad.write_text("inf " * 16)                                      # invalid frame: skipped
    recs = convert_7scenes(tmp_path / "chess", tmp_path / "out")
    assert len(recs) == 7
    assert [r.split for r in recs].count("query") == 2
    by_name = {r.name: r for r in recs}
    for i, T in enumerate(poses):
        name = f"seq-0{1 + (i >= 5)}_frame-{i % 5:06d}.png"
        if i == 7:
            assert name not in by_name
            continue
        np.testing.assert_allclose(by_name[name].T_world_cam, T, atol=1e-8)
        K = by_name[name].intrinsics
        assert (K.fx, K.fy, K.cx, K.cy, K.width, K.height) == (585, 585, 320, 240, 640, 480)
    assert read_posed_folder(tmp_path / "out", "query")[0].path.resolve().is_file()


def test_7scenes_missing_split(tmp_path: Path) -> None:
    _seven_scenes_fixture(tmp_path / "s")
    (tmp_path / "s" / "TestSplit.txt").unlink()
    with pytest.raises(DataError, match="TestSplit.txt"):
        convert_7scenes(tmp_path / "s", tmp_path / "out")


def _cambridge_fixture(root: Path, skip_nvm: str | None = None) -> list[tuple[np.ndarray, float]]:
    recs = read_posed_folder(DATA / "fountain-P11")[:6]
    nvm: list[str] = []
    lists = {"dataset_train.txt": [], "dataset_test.txt": []}
    truth = []
    for i, rec in enumerate(recs):
        rel = f"seq{1 + i % 2}/frame{i + 1:05d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), cv2.resize(load_image(rec.path), (480, 270)))
        T_cw = invert_T(rec.T_world_cam)
        q, C = R_to_quat(T_cw[:3, :3]), rec.T_world_cam[:3, 3]         # world-to-camera rotation, centre
        focal_1920 = 1650.0 + 10 * i
        lists["dataset_test.txt" if i % 3 == 2 else "dataset_train.txt"].append(
            f"{rel} " + " ".join(f"{v:.12g}" for v in (*C, *q)))
        if rel != skip_nvm:
            nvm.append(f"{rel.replace('.png', '.jpg')} {focal_1920} " + " ".join(f"{v:.12g}" for v in (*q, *C)) + " 0 0")
        truth.append((rec.T_world_cam, focal_1920 * 480 / 1920))
    for name, rows in lists.items():
        (root / name).write_text("Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"
                                 + "\n".join(rows) + "\n")
    (root / "reconstruction.nvm").write_text("\n".join(["NVM_V3", "", str(len(nvm)), *nvm]) + "\n0\n")
    return truth


def test_cambridge(tmp_path: Path) -> None:
    truth = _cambridge_fixture(tmp_path / "KingsCollege")
    assert len(read_nvm_focals(tmp_path / "KingsCollege" / "reconstruction.nvm")) == 6
    recs = convert_cambridge(tmp_path / "KingsCollege", tmp_path / "out")
    by_name = {r.name: r for r in recs}
    for i, (T, f) in enumerate(truth):
        rec = by_name[f"seq{1 + i % 2}_frame{i + 1:05d}.png"]
        np.testing.assert_allclose(rec.T_world_cam, T, atol=1e-8)
        assert rec.intrinsics.fx == pytest.approx(f) and rec.intrinsics.cx == pytest.approx(239.5)
        assert rec.split == ("query" if i % 3 == 2 else "db")


def test_cambridge_errors(tmp_path: Path) -> None:
    _cambridge_fixture(tmp_path / "a", skip_nvm="seq2/frame00002.png")
    with pytest.raises(DataError, match="no camera in reconstruction.nvm"):
        convert_cambridge(tmp_path / "a", tmp_path / "out_a")
    recs = convert_cambridge(tmp_path / "a", tmp_path / "out_b", focal=400.0)   # explicit focal: no NVM needed
    assert all(r.intrinsics.fx == 400.0 for r in recs)
    lst = tmp_path / "a" / "dataset_train.txt"
    lst.write_text(lst.read_text() + "seq1/frame00001.png 1 2 3\n")
    with pytest.raises(DataError, match=r"dataset_train.txt:\d+: expected"):
        convert_cambridge(tmp_path / "a", tmp_path / "out_c", focal=400.0)
