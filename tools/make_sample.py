#!/usr/bin/env python3
"""Regenerate the shipped sample scene ``sample/fountain-P11-small`` from ``../shared/data``.

    .venv/bin/python tools/make_sample.py [--src ../shared/data/fountain-P11]
                                          [--out sample/fountain-P11-small] [--width 640] [--quality 90]

Images are downscaled with ``cv2.INTER_AREA`` to ``--width`` pixels (height rounded to keep the
aspect ratio) and re-encoded as JPEG. Intrinsics are scaled with ``Intrinsics.scaled`` by the exact
per-axis ratio of the output size (pixel-centre convention) and written with ``repr`` so they read
back bit-exactly; the pose fields of ``poses.txt`` and all of ``split.txt`` are copied verbatim.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reloc_vggt_ros.data import load_image, read_posed_folder  # noqa: E402

README = """\
# {name}: a small real scene shipped with reloc_vggt_ros

All {n} views of the Strecha/EPFL **fountain-P11** scene ({db} database / {query} query images, see
`split.txt`), downscaled so the demo and tests run without `../shared/data`. Same format as the
shared scenes: `images/*.jpg`, `poses.txt` (`name fx fy cx cy qw qx qy qz tx ty tz`, world-to-camera
`x_cam = R(q) x_world + t`, OpenCV camera frame, Hamilton quaternion w-first, metres), `split.txt`.

* Images: {width} x {height} px JPEG quality {quality} ({size_kb} kB in total), made from the
  1536 x 1024 images of `../shared/data/fountain-P11` with `cv2.resize(..., INTER_AREA)`.
* Intrinsics: scaled by sx = {width}/{src_w}, sy = {height}/{src_h} in the OpenCV pixel-centre
  convention, `f' = s f`, `c' = (c + 0.5) s - 0.5` (`Intrinsics.scaled`).
* Poses and split: copied unchanged, so camera centres equal the source's. Units: metres.
* Regenerate: `.venv/bin/python tools/make_sample.py` (from the repository root, with `../shared`
  beside it); `test/data/test_sample.py` checks this folder against the source.

## Source

Strecha/EPFL multi-view benchmark, scene fountain-P11 (11 views of an ornate wall fountain, cameras
on an arc 8-10 m from it), via the mirror openMVG/SfM_quality_evaluation@348a981ef51112e9848acfb20004f4ed6fbc6ce3,
folder `Benchmarking_Camera_Calibration_2008/fountain-P11/` (3072 x 2048 images and
`gt_dense_cameras/*.camera`), converted to this format and downscaled 2x in `../shared/data/fountain-P11`
(see its README for the conversion and an epipolar verification of the poses: median symmetric
epipolar distance 0.116 px over 18849 RANSAC-consistent SIFT matches at 1536 x 1024).

## Terms

The mirror contains no license file. Its `Readme.txt` credits the data to the EPFL CVLab multi-view
benchmark (http://cvlabwww.epfl.ch/data/multiview/) and asks to cite:

C. Strecha, W. von Hansen, L. Van Gool, P. Fua, U. Thoennessen, "On Benchmarking Camera Calibration
and Multi-View Stereo for High Resolution Imagery", CVPR 2008.

Terms: research use. The original EPFL CVLab distribution is for research purposes; treat these
images as research-use-only, do not redistribute them outside that purpose, and cite the paper.
"""


def make_sample(src: Path, out: Path, width: int, quality: int) -> Path:
    """Write the downscaled copy of ``src`` to ``out`` (replacing it) and return ``out``."""
    recs = read_posed_folder(src)
    raw = {}
    header = ""
    for line in (src / "poses.txt").read_text().splitlines():
        if line.startswith("#"):
            header = header or line
        elif line.strip():
            raw[line.split()[0]] = line.split()
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    lines = [header]
    for rec in recs:
        img = load_image(rec.path)
        h, w = img.shape[:2]
        nw, nh = width, round(h * width / w)
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        if not cv2.imwrite(str(out / "images" / rec.name), small, [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise SystemExit(f"cannot write {out / 'images' / rec.name}")
        k = rec.intrinsics.scaled(nw / w, nh / h)
        lines.append(" ".join([rec.name, repr(k.fx), repr(k.fy), repr(k.cx), repr(k.cy)] + raw[rec.name][5:]))
    (out / "poses.txt").write_text("\n".join(lines) + "\n")
    shutil.copyfile(src / "split.txt", out / "split.txt")
    size_kb = sum(p.stat().st_size for p in (out / "images").iterdir()) // 1024
    n_query = sum(1 for r in read_posed_folder(out) if r.split == "query")
    (out / "README.md").write_text(README.format(
        name=out.name, n=len(recs), db=len(recs) - n_query, query=n_query, width=nw, height=nh,
        quality=quality, size_kb=size_kb, src_w=recs[0].intrinsics.width, src_h=recs[0].intrinsics.height))
    print(f"wrote {len(recs)} images ({size_kb} kB) to {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data" / "fountain-P11")
    parser.add_argument("--out", type=Path, default=ROOT / "sample" / "fountain-P11-small")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args(argv)
    make_sample(args.src, args.out, args.width, args.quality)
    return 0


if __name__ == "__main__":
    sys.exit(main())
