"""Posed-image folders and rosbag2 files."""

from .posed_folder import PosedImage, load_image, read_posed_folder

__all__ = ["PosedImage", "load_image", "read_posed_folder"]
