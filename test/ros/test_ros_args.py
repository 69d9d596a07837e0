"""ROS arguments as ROS users type them: ``reloc-vggt run ... --ros-args ...`` like ``ros2 run``.

Two real node processes over loopback DDS (remaps + namespace + parameters answering with a
pose; the deprecated ``-- ARGS`` form with a bad backend value failing configure), and pure checks
of the argv that ``run``, the console script and the launch file build.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg")

from reloc_vggt_ros.cli import build_parser  # noqa: E402
from reloc_vggt_ros.dds import localhost_env  # noqa: E402
from reloc_vggt_ros.ros.commands import DEFAULT_PARAMS, run_argv  # noqa: E402

from ros_harness import NodeProcess, Probe, next_domain_id  # noqa: E402
from test_node_localize import scene  # noqa: E402,F401  (the fountain database + query fixture)

ROOT = Path(__file__).parents[2]
YAML = ROOT / "config" / "reloc_vggt.yaml"
LAUNCH = ROOT / "launch" / "reloc_vggt.launch.py"
S = 1_000_000_000
T0 = 1_700_000_000 * S


class RunProcess(NodeProcess):
    """``python -m reloc_vggt_ros.cli run ARGS`` on a private domain (the user's command line)."""

    def __init__(self, tmp_path: Path, domain_id: int, args: list[str], name: str = "run") -> None:
        self.log_path = tmp_path / f"{name}.log"
        env = localhost_env()
        env["ROS_DOMAIN_ID"] = str(domain_id)
        env["PYTHONUNBUFFERED"] = "1"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "reloc_vggt_ros.cli", "run", *args],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)


def _get_parameters(probe: Probe, node: NodeProcess, fqn: str, names: list[str]) -> list:
    """Values through the node's parameter service (what `ros2 param get` reads)."""
    from rcl_interfaces.srv import GetParameters

    client = probe.node.create_client(GetParameters, f"{fqn}/get_parameters")
    probe.spin_until(client.service_is_ready, 20, f"{fqn}/get_parameters", node)
    future = client.call_async(GetParameters.Request(names=names))
    probe.spin_until(future.done, 20, "get_parameters response", node)
    probe.node.destroy_client(client)
    return list(future.result().values)


@pytest.mark.ros
def test_run_with_ros_args_remaps_namespace_and_parameters(tmp_path, scene):  # noqa: F811
    from sensor_msgs.msg import CameraInfo, Image

    from reloc_vggt_ros.ros.convert import bgr_to_image, intrinsics_to_camera_info, ns_to_stamp

    db, img, intr, _ = scene
    domain = next_domain_id()
    probe = Probe(domain)
    node = RunProcess(tmp_path, domain, [
        "--params-file", str(YAML), "--ros-args",
        "-r", "image:=/cam/image_raw", "-r", "camera_info:=/cam/camera_info", "-r", "__ns:=/robot1",
        "-p", "top_k:=8", "-p", f"database_path:={db}", "-p", "geometric.preset:=fast",
        "-p", "diagnostics_rate_hz:=10.0", "-p", "base_frame:=''", "--log-level", "warn"])
    try:
        reliable = probe.image_pub.qos_profile
        image_pub = probe.node.create_publisher(Image, "/cam/image_raw", reliable)
        info_pub = probe.node.create_publisher(CameraInfo, "/cam/camera_info", reliable)
        probe.spin_until(lambda: image_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0,
                         60, "the node's /cam subscriptions", node)
        probe.spin(1.0)
        # the node and its relative names live under /robot1; remapped and absolute ones do not
        assert ("reloc_vggt_node", "/robot1") in probe.node.get_node_names_and_namespaces()
        subs = {name for name, _ in probe.node.get_subscriber_names_and_types_by_node("reloc_vggt_node", "/robot1")}
        assert {"/cam/image_raw", "/cam/camera_info", "/robot1/initialpose"} <= subs, subs   # keyframe_pose: mapping only
        assert not {"/image", "/robot1/image", "/camera_info"} & subs, subs
        services = {n for n, _ in probe.node.get_service_names_and_types_by_node("reloc_vggt_node", "/robot1")}
        assert "/robot1/reloc_vggt_node/save_database" in services, services
        top_k, preset, path = _get_parameters(probe, node, "/robot1/reloc_vggt_node",
                                              ["top_k", "geometric.preset", "database_path"])
        assert (top_k.integer_value, preset.string_value, path.string_value) == (8, "fast", str(db))
        # images on the remapped topics are answered with a pose on the absolute /relocalized_pose
        cam = intrinsics_to_camera_info(intr, CameraInfo())
        msg = bgr_to_image(img, Image())
        for m in (cam, msg):
            m.header.frame_id = "camera"
            ns_to_stamp(T0, m.header.stamp)
        info_pub.publish(cam)
        image_pub.publish(msg)
        probe.spin_until(lambda: probe.poses, 90, "/relocalized_pose", node)
        assert probe.poses[0].header.frame_id == "map"
        d = probe.wait_diag("localized", node=node)
        assert d["state"] == "active"
    finally:
        code = node.stop()
        probe.close()
    assert code == 0, node.log()
    log = node.log()
    assert "database=" not in log, "--log-level warn did not reach rclpy (the INFO start line was printed)"
    assert "deprecated" not in log


@pytest.mark.ros
def test_deprecated_double_dash_form_and_bad_parameter_fail_configure(tmp_path, scene):  # noqa: F811
    db = scene[0]
    domain = next_domain_id()
    probe = Probe(domain)
    node = RunProcess(tmp_path, domain, ["-p", f"database_path:={db}", "--", "-p", "geometric.preset:=warp",
                                         "-p", "diagnostics_rate_hz:=10.0"])
    try:
        d = probe.wait_diag("configure failed: .*warp", timeout=60, node=node)
        assert d["state"] == "unconfigured"
        assert probe.image_pub.get_subscription_count() == 0       # not configured: no input
        assert node.alive()
    finally:
        code = node.stop()
        probe.close()
    assert code == 0, node.log()
    log = node.log()
    assert "`reloc-vggt run -- -p geometric.preset:=warp -p diagnostics_rate_hz:=10.0` is deprecated" in log
    assert "write `reloc-vggt run --ros-args -p geometric.preset:=warp" in log
    assert "configure failed: unknown geometric preset 'warp'; choose from" in log


def _run_args(*argv: str):
    return build_parser().parse_args(["run", *argv])


def test_run_passes_everything_after_ros_args_unchanged():
    ros = ["-r", "image:=/cam/image_raw", "-p", "top_k:=8", "-p", "geometric.preset:=fast",
           "--params-file", "extra.yaml", "-r", "__ns:=/robot1", "-r", "__node:=loc", "--log-level", "debug"]
    a = _run_args("--params-file", str(YAML), "-p", "database_path:=m.db", "--ros-args", *ros)
    assert (a.params_file, a.param, a.ros_args, a.legacy_ros_args) == (YAML, ["database_path:=m.db"], ros, [])
    # the file first, then -p, then the ROS arguments: later ones win in rcl
    assert run_argv(a.params_file, a.param, a.ros_args) == [
        "reloc_vggt_node", "--ros-args", "--params-file", str(YAML), "-p", "database_path:=m.db", *ros]
    a = _run_args("--", "-r", "image:=/x")                      # deprecated form still parsed
    assert (a.params_file, a.ros_args, a.legacy_ros_args) == (DEFAULT_PARAMS, [], ["--", "-r", "image:=/x"])


def test_run_rejects_flags_that_are_not_its_own(capsys):
    with pytest.raises(SystemExit) as exc:
        _run_args("-r", "image:=/x")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown argument(s) -r" in err and "ROS arguments go after --ros-args" in err


def test_console_script_refuses_non_ros_and_unknown_ros_arguments(capsys):
    from reloc_vggt_ros.ros.node import main

    assert main(["reloc_vggt_node", "--top-k", "8"]) == 2
    assert "takes no arguments of its own, got '--top-k 8'" in capsys.readouterr().err
    assert main(["reloc_vggt_node", "--ros-args", "--top-k", "8"]) == 2
    assert "unknown ROS argument(s) ['--top-k', '8'] after --ros-args" in capsys.readouterr().err
    assert main(["reloc_vggt_node", "--ros-args", "-p", "top_k"]) == 2
    assert "bad ROS arguments '--ros-args -p top_k'" in capsys.readouterr().err


def _launch_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("reloc_vggt_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # launch/launch_ros are imported only by generate_launch_description
    return module


def test_launch_arguments_map_onto_the_same_ros_args():
    import rclpy

    launch = _launch_module()
    argv = launch.node_ros_args({"image": "/cam/image_raw", "camera_info": "/cam/camera_info",
                                 "namespace": "robot1", "use_sim_time": "true"})
    assert argv == ["--ros-args", "-r", "__node:=reloc_vggt_node", "-r", "__ns:=/robot1",
                    "--params-file", str(YAML.resolve()), "-p", "use_sim_time:=true",
                    "-r", "image:=/cam/image_raw", "-r", "image/compressed:=/cam/image_raw/compressed",
                    "-r", "camera_info:=/cam/camera_info", "-r", "keyframe_pose:=keyframe_pose",
                    "-r", "initialpose:=/initialpose"]
    assert launch.node_ros_args()[4] == "__ns:=/"
    with pytest.raises(ValueError, match="unknown launch argument.*imag"):
        launch.node_ros_args({"imag": "/x"})
    # rcl reads it as launch_ros means it: node name, namespace, remaps, the shipped parameters
    context = rclpy.Context()
    rclpy.init(context=context, args=["reloc_vggt_node", *argv])
    try:
        node = rclpy.create_node("anything", context=context)
        assert node.get_fully_qualified_name() == "/robot1/reloc_vggt_node"
        resolved = {t: node.resolve_topic_name(t) for t in ("image", "image/compressed", "camera_info",
                                                             "keyframe_pose", "initialpose")}
        assert resolved == {"image": "/cam/image_raw", "image/compressed": "/cam/image_raw/compressed",
                            "camera_info": "/cam/camera_info", "keyframe_pose": "/robot1/keyframe_pose",
                            "initialpose": "/initialpose"}
        node.declare_parameter("top_k", 0)
        assert node.get_parameter("top_k").value == 5           # from the shipped YAML under /robot1
        assert node.get_parameter("use_sim_time").value is True
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
