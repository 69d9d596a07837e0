"""Learned backends built on the VGGT model: ``reloc_vggt`` (pose tokens) and ``vggt_align``."""
