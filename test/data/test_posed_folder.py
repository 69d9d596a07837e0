"""read_posed_folder on the real scenes, and each bad input on a tmp_path copy of one."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from reloc_vggt_ros.data import load_image, read_posed_folder
from reloc_vggt_ros.errors import DataError
from reloc_vggt_ros.geometry import is_valid_T

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SCENES = sorted(p.name for p in DATA.iterdir() if (p / "poses.txt").is_file())


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """A private copy of fountain-P11 to break."""
    return Path(shutil.copytree(DATA / "fountain-P11", tmp_path / "fountain-P11"))


def edit_line(folder: Path, name: str, fn) -> int:  # type: ignore[no-untyped-def]
    """Rewrite the poses.txt line of ``name`` with ``fn(fields) -> line``; returns its line number."""
    path = folder / "poses.txt"
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.split() and line.split()[0] == name:
            lines[i] = fn(line.split())
            path.write_text("\n".join(lines) + "\n")
            return i + 1
    raise AssertionError(name)


@pytest.mark.parametrize("scene_name", SCENES)
def test_real_scenes_read(scene_name: str) -> None:
    folder = DATA / scene_name
    all_recs = read_posed_folder(folder)
    db, query = read_posed_folder(folder, "db"), read_posed_folder(folder, "query")
    assert len(db) + len(query) == len(all_recs) and len(query) > 0
    assert [r.name for r in all_recs] == sorted(r.name for r in all_recs)
    assert {r.split for r in db} == {"db"} and {r.split for r in query} == {"query"}
    split_lines = [ln.split() for ln in (folder / "split.txt").read_text().splitlines() if ln.strip()]
    assert sorted(r.name for r in query) == sorted(n for s, n in split_lines if s == "query")
    for r in all_recs[:3]:
        img = load_image(r.path)
        assert img.shape == (r.intrinsics.height, r.intrinsics.width, 3) and img.dtype == np.uint8
        assert is_valid_T(r.T_world_cam, tol=1e-9)


def test_copy_reads_and_comments_are_ignored(scene: Path) -> None:
    poses = scene / "poses.txt"
    poses.write_text(poses.read_text() + "\n# trailing comment\n\n")
    recs = read_posed_folder(scene)
    assert len(recs) == 11 and recs[0].path == scene / "images" / "0000.jpg"
    assert (recs[0].intrinsics.width, recs[0].intrinsics.height) == (1536, 1024)


def test_missing_image(scene: Path) -> None:
    (scene / "images" / "0003.jpg").unlink()
    with pytest.raises(DataError, match=r"poses.txt:5: image .*0003.jpg not found"):
        read_posed_folder(scene)
    assert len(read_posed_folder(scene, check_images=False)) == 11   # poses alone still readable
    assert len(read_posed_folder(scene, "query")) == 4                 # 0003 is a db image


def test_undecodable_image(scene: Path) -> None:
    (scene / "images" / "0001.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match="cannot decode image: .*0001.jpg"):
        read_posed_folder(scene)


@pytest.mark.parametrize("edit,match", [
    (lambda f: " ".join(f[:-1]), r"poses.txt:3: expected 12 fields .* got 11"),
    (lambda f: " ".join(f + ["7"]), r"poses.txt:3: expected 12 fields .* got 13"),
    (lambda f: " ".join(f[:2] + ["abc"] + f[3:]), r"poses.txt:3: non-numeric field"),
    (lambda f: " ".join(f[:9] + ["nan"] + f[10:]), r"poses.txt:3: non-finite value"),
    (lambda f: " ".join(f[:5] + [str(2 * float(f[5]))] + f[6:]), r"poses.txt:3: quaternion norm 1\.\d+ is not 1"),
    (lambda f: " ".join(f[:5] + ["0", "0", "0", "0"] + f[9:]), r"poses.txt:3: quaternion norm 0\.0+ is not 1"),
    (lambda f: " ".join(f[:1] + ["0"] + f[2:]), r"poses.txt:3: non-positive focal length fx=0.0"),
    (lambda f: " ".join(f[:2] + ["-1382.08"] + f[3:]), r"poses.txt:3: non-positive focal length .*fy=-1382.08"),
])
def test_malformed_pose_lines(scene: Path, edit, match: str) -> None:  # type: ignore[no-untyped-def]
    assert edit_line(scene, "0001.jpg", edit) == 3       # line 1 is the header
    with pytest.raises(DataError, match=match):
        read_posed_folder(scene)


def test_duplicate_name(scene: Path) -> None:
    edit_line(scene, "0002.jpg", lambda f: " ".join(["0001.jpg"] + f[1:]))
    with pytest.raises(DataError, match=r"poses.txt:4: duplicate image name '0001.jpg' \(first on line 3\)"):
        read_posed_folder(scene)


def test_missing_files_and_bad_splits(scene: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no poses.txt"):
        read_posed_folder(tmp_path / "nowhere")
    with pytest.raises(DataError, match="unknown split 'train'"):
        read_posed_folder(scene, "train")
    split = scene / "split.txt"
    split.write_text(split.read_text() + "val 0003.jpg\n")
    with pytest.raises(DataError, match=r"split.txt:12: expected 'db <name>' or 'query <name>'"):
        read_posed_folder(scene)
    split.unlink()
    assert {r.split for r in read_posed_folder(scene)} == {"db"}      # no split.txt: all database
    with pytest.raises(DataError, match="split 'query' requested but .*split.txt is missing"):
        read_posed_folder(scene, "query")
