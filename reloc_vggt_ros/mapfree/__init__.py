"""Map-free relocalization (Niantic's challenge): dataset and submission formats, converter
from posed folders, evaluation (metrics in :mod:`reloc_vggt_ros.eval.mapfree_metrics`)."""

from .dataset import MapfreeFrame, MapfreeScene, load_depth, read_dataset, read_scene
from .submission import Estimate, read_submission, write_submission

__all__ = ["MapfreeFrame", "MapfreeScene", "load_depth", "read_dataset", "read_scene", "Estimate",
           "read_submission", "write_submission"]
