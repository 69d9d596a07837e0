"""Keyframe selection thresholds on real camera poses."""

from pathlib import Path

import numpy as np

from reloc_vggt_ros.data.posed_folder import read_posed_folder
from reloc_vggt_ros.geometry import make_T, so3_exp
from reloc_vggt_ros.session.mapping import is_new_keyframe

SCENE = Path(__file__).parents[2] / ".." / "shared" / "data" / "fountain-P11"


def test_thresholds_on_real_poses():
    poses = [r.T_world_cam for r in read_posed_folder(SCENE, check_images=False)]
    assert is_new_keyframe(poses[0], [], 0.25, 0.26)
    assert not is_new_keyframe(poses[3], poses, 0.25, 0.26)           # already in the map
    nudged = poses[3] @ make_T(so3_exp(np.array([0.0, 0.05, 0.0])), np.array([0.1, 0.0, 0.0]))
    assert not is_new_keyframe(nudged, poses, 0.25, 0.26)             # 10 cm, 2.9 deg: same place
    assert is_new_keyframe(nudged, poses, 0.05, 0.26)                 # ... unless 5 cm is enough
    turned = poses[3] @ make_T(so3_exp(np.array([0.0, 0.4, 0.0])), np.zeros(3))
    assert is_new_keyframe(turned, poses, 0.25, 0.26)                 # same place, new direction
    gaps = [np.linalg.norm(a[:3, 3] - b[:3, 3]) for a, b in zip(poses, poses[1:])]
    assert is_new_keyframe(poses[5], poses[:5], min(gaps) * 0.9, np.pi)   # the next real view is new
    assert not is_new_keyframe(poses[5], poses[:5], max(gaps) * 1.1, np.pi)  # ... unless views are sparse
