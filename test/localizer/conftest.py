"""Shared fixtures of the VGGT-localizer tests: a small real keyframe database."""

from pathlib import Path

import pytest

from reloc_vggt_ros.keyframes import KeyframeStore, build_keyframe_db

FOUNTAIN = Path(__file__).parents[2] / ".." / "shared" / "data" / "fountain-P11"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyframeStore:
    """fountain-P11 db split at 320 px (no backend indexing), opened read-only."""
    db = build_keyframe_db(FOUNTAIN, tmp_path_factory.mktemp("db") / "fountain.db", split="db", max_side=320)
    s = KeyframeStore.open(db, readonly=True)
    yield s
    s.close()
