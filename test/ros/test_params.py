"""Parameter table, validator, shipped YAML and launch file agree; declare_params on a real node."""

import ast
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy")

from reloc_vggt_ros.errors import ConfigError  # noqa: E402
from reloc_vggt_ros.ros.params import PARAMETERS, NodeConfig, config_from_dict, declare_params  # noqa: E402

ROOT = Path(__file__).parents[2]
YAML = ROOT / "config" / "reloc_vggt.yaml"
LAUNCH = ROOT / "launch" / "reloc_vggt.launch.py"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_defaults_table_matches_dataclass():
    cfg = config_from_dict({"database_path": "x.db"})
    for name, (default, _) in PARAMETERS.items():
        field = NodeConfig.__dataclass_fields__[name.replace(".", "_")]
        if name != "database_path":
            assert getattr(cfg, field.name) == default == field.default, name
    assert {n.replace(".", "_") for n in PARAMETERS} == set(NodeConfig.__dataclass_fields__)


@pytest.mark.parametrize("values, message", [
    ({}, "database_path is required"),
    ({"top_k": 0}, "top_k must be in 1..100, got 0"),
    ({"top_k": "5"}, "parameter top_k must be int, got str"),
    ({"min_confidence": 1.5}, r"min_confidence must be in \[0, 1\]"),
    ({"odom_frame": "map"}, "odom_frame must differ from map_frame"),
    ({"camera_frame": "/cam"}, "must not start with '/'"),
    ({"qos_depth": 0}, "qos_depth must be in 1..1000"),
    ({"tf_publish_rate_hz": 0.0}, "tf_publish_rate_hz must be > 0"),
    ({"transform_tolerance_s": -0.1}, "transform_tolerance_s must be >= 0"),
    ({"mapping.min_angle_rad": 15.0}, "radians"),
    ({"use_compressed": 1}, "use_compressed must be bool"),
    ({"top_kk": 3}, "unknown parameters: top_kk"),
    ({"backend_options": "[1, 2]"}, "backend_options must be a YAML mapping"),
    ({"backend_options": "{a: [1"}, "backend_options is not valid YAML"),
    ({"engine": "m.onnx", "engine_kind": "trt"}, r"engine_kind must be one of \('auto', 'torch', 'onnxruntime', 'tensorrt'\), got 'trt'"),
    ({"engine": "m.onnx", "engine_fallback": ["onnxruntime", "cuda"]}, "engine_fallback entries must be in .*got 'cuda'"),
    ({"engine": "m.onnx", "engine_fallback": "onnxruntime"}, "parameter engine_fallback must be a string array"),
    ({"engine_kind": "tensorrt"}, "engine_kind / engine_fallback choose how the engine file runs, but engine is ''"),
])
def test_invalid_values_name_the_parameter(values, message):
    values = {"database_path": "x.db", **values} if "database_path" not in values and values else values
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_backend_options_reach_the_registry():
    cfg = config_from_dict({"database_path": "x.db", "top_k": 3, "backend_options": "{preset: fast, num_threads: 1}"})
    assert cfg.options() == {"top_k": 3, "preset": "fast", "num_threads": 1}
    assert config_from_dict({"database_path": "x.db", "engine": "m.onnx"}).options() == {"top_k": 5, "engine": "m.onnx"}
    # engine_kind / engine_fallback only when not the defaults (backends without engines never see them)
    cfg = config_from_dict({"database_path": "x.db", "engine": "m.plan", "engine_kind": "tensorrt",
                            "engine_fallback": ("onnxruntime",)})
    assert cfg.options() == {"top_k": 5, "engine": "m.plan", "engine_kind": "tensorrt",
                             "engine_fallback": ["onnxruntime"]}
    assert config_from_dict({"database_path": "x.db", "engine_fallback": None}).engine_fallback == ()  # ROS '[]'


def test_int_for_float_is_accepted():
    assert config_from_dict({"database_path": "x.db", "transform_tolerance_s": 1}).transform_tolerance_s == 1.0


def test_shipped_yaml_sets_known_parameters_with_valid_values():
    doc = yaml.safe_load(YAML.read_text())
    assert list(doc) == ["/**/reloc_vggt_node"]
    values = _flatten(doc["/**/reloc_vggt_node"]["ros__parameters"])
    assert set(values) == set(PARAMETERS)
    cfg = config_from_dict(values)
    assert cfg.backend == "geometric" and cfg.map_frame == "map"


def test_launch_file_names_installed_executable_and_shipped_params():
    tree = ast.parse(LAUNCH.read_text())
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    assert consts["PACKAGE"] == "reloc_vggt_ros"
    assert consts["EXECUTABLE"] == "reloc_vggt_node"
    assert (ROOT / "config" / consts["PARAMS_FILE"]).resolve() == YAML.resolve()
    setup = (ROOT / "setup.py").read_text()
    assert '"reloc_vggt_node = reloc_vggt_ros.ros.node:main"' in setup     # the executable exists
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup  # both installed
    src = LAUNCH.read_text()
    for remapped in ('"image"', '"camera_info"', '"keyframe_pose"', '"initialpose"'):
        assert remapped in src


def test_declare_params_on_a_real_node():
    import rclpy
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "database_path:=/tmp/x.db", "-p", "top_k:=7",
                                      "-p", "transform_tolerance_s:=1", "-p", "engine:=m.plan",
                                      "-p", "engine_fallback:=[onnxruntime]"])
    try:
        node = rclpy.create_node("params_probe", context=context)
        cfg = declare_params(node)
        assert (cfg.database_path, cfg.top_k, cfg.transform_tolerance_s) == ("/tmp/x.db", 7, 1.0)
        assert (cfg.engine_kind, cfg.engine_fallback) == ("auto", ("onnxruntime",))
        assert node.describe_parameter("top_k").description == PARAMETERS["top_k"][1]
        node.set_parameters([Parameter("top_k", value=0)])
        with pytest.raises(ConfigError, match="top_k must be in 1..100"):
            declare_params(node)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_shipped_yaml_loads_through_the_ros_parser():
    """rcl's YAML parser turns ``engine_fallback: []`` into an unset value; that still means ()."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(YAML)])
    try:
        node = rclpy.create_node("reloc_vggt_node", context=context)
        cfg = declare_params(node)
        assert (cfg.engine_kind, cfg.engine_fallback, cfg.backend) == ("auto", (), "geometric")
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
