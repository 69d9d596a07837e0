"""reloc_vggt_ros: visual relocalization against posed keyframes (core importable without ROS)."""
__version__ = "0.1.0"
