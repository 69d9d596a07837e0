"""The node's parameters, derived from one frozen dataclass and the backend registry.

:class:`NodeConfig` is the policy of :class:`~reloc_vggt_ros.session.SessionConfig` plus the
wiring settings; every field carries its default and description (``config.setting``), and the
ROS parameters are its leaves with dotted names for sections (``mapping.enabled``). There is no
second table: declarations, defaults, descriptors, the shipped YAML and docs/ros.md are checked
against these fields.

The configured backend's own settings are a nested namespace named after it, derived from
``localizer.registry``: ``<backend>.preset`` (where the backend has presets) and one parameter
per config leaf, ``<backend>.<section>.<field>``, whose default is the chosen preset's value, so
an unset leaf keeps the preset. Only the configured backend's namespace is declared (learned
backends' configs import torch). Leaves that node-level parameters set (``top_k``, ``engine``,
``engine_kind``, ``engine_fallback`` under their registry aliases) are not repeated there.
The flat ``backend_options`` YAML string is still read for one release, with a warning.
"""

from __future__ import annotations

import array
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ..config import (flatten, from_mapping, leaf_fields, merge, require_non_negative, require_positive, setting,
                      to_mapping, unflatten)
from ..engine.factory import check_engine_choice
from ..errors import ConfigError
from ..keyframes.sync import FleetConfig
from ..session import SessionConfig
from ..session.map_free import MapFreeConfig
from .rig_sync import RigConfig

__all__ = ["NodeConfig", "COMMON_BACKEND_KEYS", "node_parameters", "config_from_parameters",
           "backend_parameters", "backend_config", "declare_params", "declare_backend", "read_params",
           "read_backend_config", "check_overrides", "parse_backend_options"]

# node-level parameters every backend receives (mapped onto its own field names by registry aliases)
COMMON_BACKEND_KEYS = ("top_k", "engine", "engine_kind", "engine_fallback")


@dataclass(frozen=True)
class NodeConfig(SessionConfig):
    """Validated node configuration; each field is the parameter of the same (dotted) name."""

    mode: str = setting("map", "map: localize against database_path; map_free: against one posed reference "
                               "image (map_free.*)")
    database_path: str = setting("", "keyframe database (.db) to localize against; required in mode map")
    backend: str = setting("geometric", "localizer backend name (see localizer.registry); its own settings "
                                        "are the <backend>.* parameters")
    engine: str = setting("", "weights / ONNX / TensorRT engine file for learned backends; '' for geometric")
    engine_kind: str = setting("auto", "inference backend for engine: auto (by file suffix), torch, "
                                       "onnxruntime, tensorrt")
    engine_fallback: tuple[str, ...] = setting((), "engine kinds to try in order when engine_kind cannot run "
                                                   "here; [] = fail with an error naming what is missing")
    top_k: int = setting(5, "keyframes retrieved per query")
    backend_options: str = setting("", "DEPRECATED, read for one release: flat backend options as a YAML "
                                       "mapping; use the <backend>.* parameters")
    autostart: bool = setting(True, "configure and activate at start (else wait for lifecycle transitions)")
    map_frame: str = setting("map", "fixed frame of the keyframe database and of /relocalized_pose")
    base_frame: str = setting("base_link", "robot base frame (REP-105): /relocalized_pose is its pose in map_frame, "
                                           "through the TF base_frame -> camera at the image stamp; "
                                           "'' = publish the camera pose (no base frame)")
    odom_frame: str = setting("", "if set, publish map->odom using odom->base_frame at the image stamp, and "
                                  "feed that odometry to tracking / map-free Track 2; else map->base_frame")
    camera_frame: str = setting("", "optical frame of the camera; '' = header.frame_id of the images")
    publish_tf: bool = setting(True, "publish the map->odom (or map->camera) transform")
    use_compressed: bool = setting(False, "subscribe to image/compressed (jpeg/png) instead of raw image")
    sync_slop_s: float = setting(0.01, "max stamp difference image<->camera_info and image<->keyframe_pose (s)")
    qos_depth: int = setting(5, "queue depth of the image and camera_info subscriptions")
    max_rate_hz: float = setting(0.0, "process at most this many frames per second; 0 = as fast as possible")
    transform_tolerance_s: float = setting(0.1, "map->odom is future-dated by this much (as nav2 AMCL)")
    tf_publish_rate_hz: float = setting(20.0, "rate at which the last map->odom is republished between fixes")
    tf_lookup_timeout_s: float = setting(0.05, "max extrapolation of TF lookups (camera extrinsic, "
                                               "odom->base_frame) beyond the newest/oldest transform (s)")
    diagnostics_rate_hz: float = setting(1.0, "rate of /diagnostics")
    save_path: str = setting("", "copy target of the save_database service; '' = checkpoint in place")
    fleet: FleetConfig = setting(factory=FleetConfig, doc="optional sync of database_path with a fleet map server")
    map_free: MapFreeConfig = setting(factory=MapFreeConfig, doc="mode map_free: backend and reference")
    rig: RigConfig = setting(factory=RigConfig, doc="a camera rig: several cameras, one base pose per instant")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("map", "map_free"):
            raise ConfigError(f"mode must be 'map' or 'map_free', got {self.mode!r}")
        if self.mode == "map" and not self.database_path.strip():
            raise ConfigError("database_path is required (a keyframe .db file, see `reloc-vggt db build`)")
        if self.mode == "map_free" and (self.mapping.enabled or self.tracking.enabled):
            raise ConfigError("mapping.enabled and tracking.enabled need a keyframe database: not available in "
                              "mode map_free")
        if not self.backend.strip():
            raise ConfigError("backend must name a localizer backend, got ''")
        if self.rig.cameras:
            if self.mode != "map" or self.tracking.enabled:
                raise ConfigError("rig.cameras localizes a rig against a keyframe database, one query per instant: "
                                  "it needs mode map and tracking.enabled false")
            if not self.base_frame or self.camera_frame:
                raise ConfigError("rig.cameras needs base_frame (each camera's extrinsic is the TF base_frame -> "
                                  "its images' header.frame_id) and camera_frame ''")
        check_engine_choice(self.engine_kind, self.engine_fallback)
        if not self.engine and (self.engine_kind != "auto" or self.engine_fallback):
            raise ConfigError("engine_kind / engine_fallback choose how the engine file runs, but engine is ''")
        self.legacy_options()  # raises ConfigError if backend_options is not a mapping
        if not 1 <= self.top_k <= 100:
            raise ConfigError(f"top_k must be in 1..100, got {self.top_k}")
        if not self.map_frame.strip():
            raise ConfigError("map_frame must be non-empty")
        for name in ("map_frame", "odom_frame", "base_frame", "camera_frame"):
            if getattr(self, name).startswith("/"):
                raise ConfigError(f"{name} must not start with '/' (tf2 frame ids), got {getattr(self, name)!r}")
        if self.odom_frame and self.odom_frame == self.map_frame:
            raise ConfigError(f"odom_frame must differ from map_frame ({self.map_frame!r})")
        if self.base_frame and self.base_frame in (self.map_frame, self.odom_frame):
            raise ConfigError(f"base_frame must differ from map_frame and odom_frame, got {self.base_frame!r}")
        require_positive(self, "", "tf_publish_rate_hz", "diagnostics_rate_hz")
        require_non_negative(self, "", "sync_slop_s", "max_rate_hz", "transform_tolerance_s", "tf_lookup_timeout_s")
        if not 1 <= self.qos_depth <= 1000:
            raise ConfigError(f"qos_depth must be in 1..1000, got {self.qos_depth}")

    def common_options(self) -> dict[str, Any]:
        """The node-level options for the registry: top_k, engine (+ engine_kind/engine_fallback
        when not the defaults, so backends without engines never see them)."""
        engine: dict[str, Any] = {"engine": self.engine} if self.engine else {}
        if self.engine_kind != "auto":
            engine["engine_kind"] = self.engine_kind
        if self.engine_fallback:
            engine["engine_fallback"] = list(self.engine_fallback)
        return {"top_k": self.top_k, **engine}

    def legacy_options(self) -> dict[str, Any]:
        """The deprecated ``backend_options`` YAML mapping (flat option names), {} when unset."""
        return parse_backend_options(self.backend_options)


def parse_backend_options(text: str) -> dict[str, Any]:
    """The deprecated ``backend_options`` string as a mapping; ConfigError unless YAML mapping."""
    try:
        extra = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as err:
        raise ConfigError(f"backend_options is not valid YAML: {err}") from err
    if not isinstance(extra, dict):
        raise ConfigError(f"backend_options must be a YAML mapping like '{{preset: realtime}}', got {extra!r}")
    return extra

# ----------------------------------------------------------------------------- node level
def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def node_parameters() -> dict[str, tuple[Any, str]]:
    """Dotted parameter name -> (default, description) of every NodeConfig leaf."""
    return {name: (_default(f), f.metadata.get("doc", "")) for name, (_, f) in leaf_fields(NodeConfig).items()}


def _plain(value: Any) -> Any:
    """A ROS parameter value as plain Python (rclpy hands arrays as array.array)."""
    return list(value) if isinstance(value, (array.array, tuple)) else value


def config_from_parameters(values: Mapping[str, Any]) -> NodeConfig:
    """NodeConfig from dotted parameter names to values; unknown names are an error."""
    known = node_parameters()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown parameters: {', '.join(unknown)}")
    plain = {}
    for name, value in values.items():  # rcl's YAML reads '[]' as an unset value
        plain[name] = [] if value is None and isinstance(known[name][0], tuple) else _plain(value)
    return from_mapping(NodeConfig, unflatten(plain))


# ----------------------------------------------------------------------------- backend namespace
def _ros_value(value: Any) -> bool:
    """True if ``value`` can be a ROS parameter (scalar or list of scalars of one type)."""
    scalar = (bool, int, float, str)
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, scalar) for v in value) and len({type(v) for v in value}) <= 1
    return isinstance(value, scalar)


def _excluded(backend: str) -> set[str]:
    from ..localizer.registry import BACKENDS

    aliases = BACKENDS[backend].aliases if backend in BACKENDS else {}
    return {aliases.get(key, key) for key in COMMON_BACKEND_KEYS}


def _preset_base(backend: str, preset: str | None) -> Any:
    from ..localizer import registry

    table = registry.presets(backend)
    if preset is not None and preset in table:
        return table[preset]
    return table["default"] if "default" in table else from_mapping(registry.config_type(backend), {}, backend)


def backend_parameters(backend: str, preset: str | None = None) -> dict[str, tuple[Any, str]]:
    """``<backend>.<leaf>`` -> (default, description): ``<backend>.preset`` first where the
    backend has presets, then every leaf the node does not set itself whose value is a ROS
    parameter type, with ``preset``'s value as default (an unknown preset: the default's)."""
    from ..localizer import registry

    cls = registry.config_type(backend)
    table = registry.presets(backend)
    out: dict[str, tuple[Any, str]] = {}
    if table:
        out[f"{backend}.preset"] = (preset if preset is not None else "default",
                                    f"{backend} preset, one of {sorted(table)}; fixed at start (each "
                                    f"{backend}.* leaf defaults to its value)")
    values = flatten(to_mapping(_preset_base(backend, preset)))
    excluded = _excluded(backend)
    for leaf, (_, f) in leaf_fields(cls).items():
        if leaf in excluded or leaf not in values or not _ros_value(values[leaf]):
            continue  # set node-level, or not representable (e.g. an optional section left unset)
        out[f"{backend}.{leaf}"] = (values[leaf], f.metadata.get("doc", "") or f"{backend} setting {leaf}")
    return out


def backend_config(cfg: NodeConfig, values: Mapping[str, Any]) -> Any:
    """The backend config from ``values`` (its namespace's parameters, names without the
    ``<backend>.`` prefix), the deprecated ``backend_options`` and the node-level options.

    Leaves equal to the preset's value are not passed (they keep the preset); ConfigError (from
    the backend's own validation) names what is wrong.
    """
    from ..localizer import registry

    backend = cfg.backend
    legacy = dict(cfg.legacy_options())
    legacy_preset = legacy.pop("preset", None)
    preset = values.get("preset")
    if legacy_preset is not None and preset is not None and legacy_preset != preset:
        raise ConfigError(f"backend_options preset {legacy_preset!r} conflicts with {backend}.preset {preset!r}; "
                          f"set only {backend}.preset (backend_options is deprecated)")
    preset = preset if preset is not None else legacy_preset
    base = {name.split(".", 1)[1]: default for name, (default, _) in backend_parameters(backend, preset).items()}
    changed = {leaf: _plain(v) for leaf, v in values.items()
               if leaf != "preset" and (leaf not in base or _plain(v) != _plain(base[leaf]))}
    nested = merge(registry.legacy_options(backend, legacy) if legacy else {}, unflatten(changed))
    options = merge(cfg.common_options(), nested)
    if preset is not None:
        options["preset"] = preset
    return registry.make_config(backend, **options)


# ----------------------------------------------------------------------------- on a node
def _declare(node: Any, name: str, default: Any, description: str) -> None:
    from rcl_interfaces.msg import ParameterDescriptor

    if not node.has_parameter(name):
        # dynamic typing so that '2' for a float is a clear ConfigError path, not a crash
        node.declare_parameter(name, _plain(default), ParameterDescriptor(description=description,
                                                                          dynamic_typing=True))


def declare_params(node: Any) -> NodeConfig:
    """Declare every node parameter and the configured backend's namespace; the validated config."""
    for name, (default, description) in node_parameters().items():
        _declare(node, name, default, description)
    backend = node.get_parameter("backend").value
    declare_backend(node, backend)
    check_overrides(node, backend)
    return read_params(node)


def declare_backend(node: Any, backend: str) -> None:
    """Declare ``<backend>.preset`` (default: the deprecated backend_options' preset, if any),
    then each leaf with the chosen preset's value as default. Idempotent."""
    legacy_preset = None
    try:
        legacy_preset = parse_backend_options(node.get_parameter("backend_options").value).get("preset")
    except (ConfigError, AttributeError):
        pass  # reported by read_params
    params = backend_parameters(backend, legacy_preset)
    preset = None
    if f"{backend}.preset" in params:
        _declare(node, f"{backend}.preset", *params.pop(f"{backend}.preset"))
        preset = node.get_parameter(f"{backend}.preset").value
        params = {k: v for k, v in backend_parameters(backend, preset).items() if k != f"{backend}.preset"}
    for name, (default, description) in params.items():
        _declare(node, name, default, description)


def check_overrides(node: Any, backend: str) -> None:
    """ConfigError for parameters given to the node (file or command line) that it does not have:
    a top-level name or a leaf in the configured backend's namespace (other backends' namespaces
    may be present in a shared file; ROS's own dotted names such as qos_overrides are left alone)."""
    given = getattr(node, "_parameter_overrides", {})  # rclpy keeps the file/CLI values here
    unknown = sorted(name for name in given if not node.has_parameter(name)
                     and ("." not in name or name.startswith(f"{backend}.")))
    if unknown:
        valid = sorted(list(node_parameters()) + [f"{backend}.{n}" for n in node.get_parameters_by_prefix(backend)])
        raise ConfigError(f"unknown parameter(s) {unknown}; valid: {valid}")


def read_params(node: Any, overrides: Mapping[str, Any] | None = None) -> NodeConfig:
    """Current node-level parameter values (plus ``overrides``, e.g. a pending set) as a NodeConfig."""
    values = {name: node.get_parameter(name).value for name in node_parameters()}
    values.update({k: v for k, v in (overrides or {}).items() if k in values})
    return config_from_parameters(values)


def read_backend_config(node: Any, cfg: NodeConfig, overrides: Mapping[str, Any] | None = None) -> Any:
    """The backend config from the node's ``<cfg.backend>.*`` parameters (plus ``overrides``)."""
    prefix = f"{cfg.backend}."
    values = {name: p.value for name, p in node.get_parameters_by_prefix(cfg.backend).items()}
    values.update({k[len(prefix):]: v for k, v in (overrides or {}).items() if k.startswith(prefix)})
    return backend_config(cfg, values)
