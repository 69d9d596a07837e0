"""Node parameters from one dataclass: validator, backend namespace, shipped YAML, docs, launch,
and validation on a real rclpy node (set-time refusal of a bad nested value)."""

import ast
import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy")

from reloc_vggt_ros.config import flatten  # noqa: E402
from reloc_vggt_ros.errors import ConfigError  # noqa: E402
from reloc_vggt_ros.localizer import registry  # noqa: E402
from reloc_vggt_ros.ros.params import (backend_config, backend_parameters,  # noqa: E402
                                       config_from_parameters, declare_params, node_parameters,
                                       read_backend_config)

ROOT = Path(__file__).parents[2]
YAML = ROOT / "config" / "reloc_vggt.yaml"
LAUNCH = ROOT / "launch" / "reloc_vggt.launch.py"
DOCS = ROOT / "docs" / "ros.md"


def test_parameters_are_the_dataclass_leaves():
    params = node_parameters()
    assert "mapping.enabled" in params and "mapping" not in params
    assert params["top_k"] == (5, "keyframes retrieved per query")
    assert "min_inliers" not in params and "min_confidence" not in params   # one judge: the backend
    cfg = config_from_parameters({"database_path": "x.db"})
    for name, (default, doc) in params.items():
        value = cfg
        for part in name.split("."):
            value = getattr(value, part)
        assert name == "database_path" or value == default, name
        assert doc, f"{name} has no description"


@pytest.mark.parametrize("values, message", [
    ({}, "database_path is required"),
    ({"top_k": 0}, "top_k must be in 1..100, got 0"),
    ({"top_k": "5"}, "top_k must be an integer, got str"),
    ({"odom_frame": "map"}, "odom_frame must differ from map_frame"),
    ({"camera_frame": "/cam"}, "must not start with '/'"),
    ({"qos_depth": 0}, "qos_depth must be in 1..1000"),
    ({"tf_publish_rate_hz": 0.0}, "tf_publish_rate_hz must be > 0"),
    ({"transform_tolerance_s": -0.1}, "transform_tolerance_s must be >= 0"),
    ({"prior_timeout_s": -1.0}, "prior_timeout_s must be >= 0"),
    ({"min_variance_m2": 0.0}, "min_variance_m2 must be > 0"),
    ({"mapping.min_angle_rad": 15.0}, "radians"),
    ({"mapping.max_queue": 0}, "mapping.max_queue must be >= 1"),
    ({"use_compressed": 1}, "use_compressed must be true or false"),
    ({"top_kk": 3}, "unknown parameters: top_kk"),
    ({"min_inliers": 12}, "unknown parameters: min_inliers"),
    ({"backend_options": "[1, 2]"}, "backend_options must be a YAML mapping"),
    ({"backend_options": "{a: [1"}, "backend_options is not valid YAML"),
    ({"engine": "m.onnx", "engine_kind": "trt"}, r"engine_kind must be one of \('auto', 'torch', 'onnxruntime', 'tensorrt'\), got 'trt'"),
    ({"engine": "m.onnx", "engine_fallback": ["onnxruntime", "cuda"]}, "engine_fallback entries must be in .*got 'cuda'"),
    ({"engine": "m.onnx", "engine_fallback": "onnxruntime"}, "engine_fallback must be a list"),
    ({"engine_kind": "tensorrt"}, "engine_kind / engine_fallback choose how the engine file runs, but engine is ''"),
])
def test_invalid_values_name_the_parameter(values, message):
    values = {"database_path": "x.db", **values} if "database_path" not in values and values else values
    with pytest.raises(ConfigError, match=message):
        config_from_parameters(values)


def test_common_options_and_ros_forms():
    cfg = config_from_parameters({"database_path": "x.db", "engine": "m.onnx"})
    assert cfg.common_options() == {"top_k": 5, "engine": "m.onnx"}
    # engine_kind / engine_fallback only when not the defaults (backends without engines never see them)
    cfg = config_from_parameters({"database_path": "x.db", "engine": "m.plan", "engine_kind": "tensorrt",
                                  "engine_fallback": ["onnxruntime"]})
    assert cfg.common_options() == {"top_k": 5, "engine": "m.plan", "engine_kind": "tensorrt",
                                    "engine_fallback": ["onnxruntime"]}
    assert config_from_parameters({"database_path": "x.db", "engine_fallback": None}).engine_fallback == ()  # ROS '[]'
    assert config_from_parameters({"database_path": "x.db", "transform_tolerance_s": 1}).transform_tolerance_s == 1.0


def test_backend_namespace_comes_from_the_registry():
    params = backend_parameters("vggt_align")
    cls = registry.config_type("vggt_align")
    assert list(params) == [f"vggt_align.{n}" for n in ("image_hw", "ransac_threshold_rel", "max_rot_residual_deg",
                                                         "min_inliers", "min_confidence", "device")]
    assert params["vggt_align.image_hw"][0] == list(cls().image_hw)        # num_keyframes/weights: top_k/engine
    geo = backend_parameters("geometric", "realtime")
    assert next(iter(geo)) == "geometric.preset" and geo["geometric.preset"][0] == "realtime"
    assert "geometric.query.top_k" not in geo and "geometric.query.match_ratio" in geo                                   # node-level top_k sets it
    realtime = flatten(registry.presets("geometric")["realtime"])
    for name, (default, _) in geo.items():                                 # leaves default to the preset
        if name != "geometric.preset":
            assert realtime[name.split(".", 1)[1]] == default, name


def test_backend_config_keeps_the_preset_and_validates_leaves():
    cfg = config_from_parameters({"database_path": "x.db", "backend": "vggt_align", "top_k": 4})
    built = backend_config(cfg, {n.split(".", 1)[1]: d for n, (d, _) in backend_parameters("vggt_align").items()})
    assert built == registry.make_config("vggt_align", num_keyframes=4)
    assert backend_config(cfg, {"min_inliers": 5}).min_inliers == 5
    with pytest.raises(ConfigError, match="image_hw must be two positive multiples of 14"):
        backend_config(cfg, {"image_hw": [392, 517]})
    with pytest.raises(ConfigError, match="has no presets"):
        backend_config(cfg, {"preset": "fast"})
    geo = config_from_parameters({"database_path": "x.db"})
    assert backend_config(geo, {"preset": "realtime"}) == registry.make_config("geometric", preset="realtime", top_k=5)
    with pytest.raises(ConfigError, match="unknown geometric preset 'bogus'"):
        backend_config(geo, {"preset": "bogus"})


def test_deprecated_backend_options_still_reach_the_backend():
    cfg = config_from_parameters({"database_path": "x.db", "backend_options": "{preset: fast, num_threads: 1}"})
    expected = registry.make_config("geometric", preset="fast", top_k=5,
                                    **registry.legacy_options("geometric", {"num_threads": 1}))
    assert backend_config(cfg, {}) == expected
    with pytest.raises(ConfigError, match="conflicts with geometric.preset"):
        backend_config(cfg, {"preset": "realtime"})


def test_shipped_yaml_sets_known_parameters_with_valid_values():
    doc = yaml.safe_load(YAML.read_text())
    assert list(doc) == ["/**/reloc_vggt_node"]
    values = flatten(doc["/**/reloc_vggt_node"]["ros__parameters"])
    node_level = {k: v for k, v in values.items() if not k.startswith("geometric.")}
    assert set(node_level) == set(node_parameters()) - {"backend_options"}   # deprecated: not shipped
    cfg = config_from_parameters(node_level)
    assert cfg.backend == "geometric" and cfg.map_frame == "map" and cfg.backend_options == ""
    namespace = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("geometric.")}
    assert namespace == {"preset": "realtime"}
    assert backend_config(cfg, namespace) == registry.make_config("geometric", preset="realtime", top_k=cfg.top_k)


def test_docs_table_lists_every_parameter_with_its_default():
    rows = dict(re.findall(r"^\| `([a-z0-9_.<>]+)` \| `([^`]*)` \|", DOCS.read_text(), re.M))
    for name, (default, _) in node_parameters().items():
        assert name in rows, f"docs/ros.md has no row for {name}"
        shown = float(rows[name]) if isinstance(default, float) else yaml.safe_load(rows[name])
        assert shown == (list(default) if isinstance(default, tuple) else default), name


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


def _ros_node(args: list[str]):
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", *args])
    return context


def test_declare_params_on_a_real_node():
    import rclpy
    from rclpy.parameter import Parameter

    context = _ros_node(["-p", "database_path:=/tmp/x.db", "-p", "top_k:=7", "-p", "transform_tolerance_s:=1",
                         "-p", "engine:=m.plan", "-p", "engine_fallback:=[onnxruntime]",
                         "-p", "geometric.preset:=fast", "-p", "mapping.enabled:=true"])
    try:
        node = rclpy.create_node("params_probe", context=context)
        cfg = declare_params(node)
        assert (cfg.database_path, cfg.top_k, cfg.transform_tolerance_s) == ("/tmp/x.db", 7, 1.0)
        assert (cfg.engine_kind, cfg.engine_fallback, cfg.mapping.enabled) == ("auto", ("onnxruntime",), True)
        assert node.describe_parameter("top_k").description == node_parameters()["top_k"][1]
        fast = registry.presets("geometric")["fast"]
        assert node.get_parameter("geometric.preset").value == "fast"
        assert node.get_parameter("geometric.query.match_ratio").value == fast.query.match_ratio    # the preset's value
        node.set_parameters([Parameter("top_k", value=0)])
        with pytest.raises(ConfigError, match="top_k must be in 1..100"):
            declare_params(node)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_unknown_parameters_are_reported():
    import rclpy

    context = _ros_node(["-p", "database_path:=/tmp/x.db", "-p", "min_inliers:=12", "-p", "geometric.bogus:=1",
                         "-p", "vggt_align.min_inliers:=4"])                  # other backends' settings: fine
    try:
        node = rclpy.create_node("params_probe", context=context)
        with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['geometric.bogus', 'min_inliers'\]"):
            declare_params(node)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_shipped_yaml_loads_through_the_ros_parser():
    """rcl's YAML parser turns ``engine_fallback: []`` into an unset value; that still means ()."""
    import rclpy

    context = _ros_node(["--params-file", str(YAML)])
    try:
        node = rclpy.create_node("reloc_vggt_node", context=context)
        cfg = declare_params(node)
        assert (cfg.engine_kind, cfg.engine_fallback, cfg.backend) == ("auto", (), "geometric")
        assert node.get_parameter("geometric.preset").value == "realtime"
        assert read_backend_config(node, cfg) == registry.make_config("geometric", preset="realtime", top_k=cfg.top_k)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_the_node_validates_nested_parameters_when_set(tmp_path):
    """In-process RelocNode: a bad backend leaf and a runtime preset change are refused with the
    reason; a good leaf is accepted; the database is not opened before configure."""
    import rclpy
    from rclpy.parameter import Parameter

    from reloc_vggt_ros.ros.node import RelocNode

    for backend, bad, reason in [
        ("vggt_align", Parameter("vggt_align.image_hw", value=[392, 517]), "image_hw must be two positive multiples of 14"),
        ("vggt_align", Parameter("vggt_align.min_inliers", value=1), "min_inliers must be >= 2, got 1"),
        ("geometric", Parameter("geometric.preset", value="fast"), "geometric.preset is fixed at start"),
        ("geometric", Parameter("mapping.max_queue", value=0), "mapping.max_queue must be >= 1"),
    ]:
        context = _ros_node([])
        try:
            node = RelocNode(context=context, parameter_overrides=[
                Parameter("database_path", value=str(tmp_path / "none.db")), Parameter("backend", value=backend)])
            assert node.cfg is not None and node.cfg.backend == backend
            result = node.set_parameters([bad])[0]
            assert not result.successful and reason in result.reason, result.reason
            good = Parameter("vggt_align.min_inliers", value=4) if backend == "vggt_align" else Parameter("top_k", value=8)
            assert node.set_parameters([good])[0].successful
            node.destroy_node()
        finally:
            rclpy.try_shutdown(context=context)
