"""ament_python package: also a plain pip-installable package (no ROS needed to import the core)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "reloc_vggt_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "bench"]),  # bench: `reloc-vggt bench`
    package_data={PACKAGE: ["py.typed", "engine/data/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "opencv-python-headless", "PyYAML"],
    zip_safe=True,
    maintainer="reloc_vggt_ros developers",
    maintainer_email="dev@example.invalid",
    description="Real-time ROS 2 visual relocalization against a database of posed keyframes.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "reloc-vggt = reloc_vggt_ros.cli:main",
            "reloc_vggt_node = reloc_vggt_ros.ros.node:main",
        ],
    },
)
