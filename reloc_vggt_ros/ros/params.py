"""The node's parameters: one table, one validator (nav2 style, but invalid values are errors).

``PARAMETERS`` lists every parameter with its default and meaning; :class:`NodeConfig` is the
frozen, validated result. ``declare_params(node)`` declares them all up front and returns the
config; a bad value raises ConfigError naming the parameter, which ``on_configure`` turns into
FAILURE with that text. Nothing is silently replaced by a default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from ..engine.base import ENGINE_KINDS
from ..errors import ConfigError

__all__ = ["PARAMETERS", "NodeConfig", "declare_params", "read_params", "config_from_dict"]

# name: (default, description). Dotted names are nested YAML keys.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "database_path": ("", "keyframe database (.db) to localize against; required"),
    "backend": ("geometric", "localizer backend name (see localizer.registry)"),
    "engine": ("", "weights / ONNX / TensorRT engine file for learned backends; '' for geometric"),
    "engine_kind": ("auto", "inference backend for engine: auto (by file suffix), torch, onnxruntime, tensorrt"),
    "engine_fallback": ((), "engine kinds to try in order when engine_kind cannot run here; [] = fail "
                            "with an error naming what is missing"),
    "top_k": (5, "keyframes retrieved per query"),
    "backend_options": ("", "extra backend options as a YAML mapping, e.g. '{preset: realtime, num_threads: 1}'"),
    "autostart": (True, "configure and activate at start (else wait for lifecycle transitions)"),
    "map_frame": ("map", "fixed frame of the keyframe database and of /relocalized_pose"),
    "odom_frame": ("", "if set, publish map->odom using odom->camera at the image stamp; else map->camera"),
    "camera_frame": ("", "optical frame of the camera; '' = header.frame_id of the images"),
    "publish_tf": (True, "publish the map->odom (or map->camera) transform"),
    "use_compressed": (False, "subscribe to image/compressed (jpeg/png) instead of raw image"),
    "min_confidence": (0.3, "results below this confidence (0..1) are not published"),
    "min_inliers": (12, "results with fewer inliers are not published"),
    "min_variance_m2": (1e-6, "floor on positional variances of the published covariance (m^2)"),
    "min_variance_rad2": (1e-6, "floor on rotational variances of the published covariance (rad^2)"),
    "sync_slop_s": (0.01, "max stamp difference image<->camera_info and image<->keyframe_pose (s)"),
    "qos_depth": (5, "queue depth of the image and camera_info subscriptions"),
    "max_rate_hz": (0.0, "process at most this many frames per second; 0 = as fast as possible"),
    "transform_tolerance_s": (0.1, "map->odom is future-dated by this much (as nav2 AMCL)"),
    "tf_publish_rate_hz": (20.0, "rate at which the last map->odom is republished between fixes"),
    "tf_lookup_timeout_s": (0.05, "max extrapolation when looking up odom->camera (s)"),
    "diagnostics_rate_hz": (1.0, "rate of /diagnostics"),
    "prior_timeout_s": (30.0, "an /initialpose prior narrows retrieval this long; 0 = until the next fix"),
    "mapping.enabled": (False, "add keyframes from keyframe_pose + images"),
    "mapping.min_distance_m": (0.25, "a new keyframe must be this far from every keyframe ..."),
    "mapping.min_angle_rad": (0.26, "... or rotated this much from the nearest one"),
    "mapping.max_queue": (1000, "keyframes waiting to be written before new ones are refused"),
    "save_path": ("", "copy target of the save_database service; '' = checkpoint in place"),
}


@dataclass(frozen=True)
class NodeConfig:
    """Validated node configuration (names as in PARAMETERS with '.' -> '_')."""

    database_path: str
    backend: str = "geometric"
    engine: str = ""
    engine_kind: str = "auto"
    engine_fallback: tuple[str, ...] = ()
    top_k: int = 5
    backend_options: str = ""
    autostart: bool = True
    map_frame: str = "map"
    odom_frame: str = ""
    camera_frame: str = ""
    publish_tf: bool = True
    use_compressed: bool = False
    min_confidence: float = 0.3
    min_inliers: int = 12
    min_variance_m2: float = 1e-6
    min_variance_rad2: float = 1e-6
    sync_slop_s: float = 0.01
    qos_depth: int = 5
    max_rate_hz: float = 0.0
    transform_tolerance_s: float = 0.1
    tf_publish_rate_hz: float = 20.0
    tf_lookup_timeout_s: float = 0.05
    diagnostics_rate_hz: float = 1.0
    prior_timeout_s: float = 30.0
    mapping_enabled: bool = False
    mapping_min_distance_m: float = 0.25
    mapping_min_angle_rad: float = 0.26
    mapping_max_queue: int = 1000
    save_path: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        if not self.database_path.strip():
            raise ConfigError("database_path is required (a keyframe .db file, see `reloc-vggt db build`)")
        if not self.backend.strip():
            raise ConfigError("backend must name a localizer backend, got ''")
        if self.engine_kind not in ("auto", *ENGINE_KINDS):
            raise ConfigError(f"engine_kind must be one of {('auto', *ENGINE_KINDS)}, got {self.engine_kind!r}")
        for kind in self.engine_fallback:
            if kind not in ENGINE_KINDS:
                raise ConfigError(f"engine_fallback entries must be in {ENGINE_KINDS}, got {kind!r}")
        if not self.engine and (self.engine_kind != "auto" or self.engine_fallback):
            raise ConfigError("engine_kind / engine_fallback choose how the engine file runs, but engine is ''")
        self.options()  # raises ConfigError if backend_options is not a mapping
        if not 1 <= self.top_k <= 100:
            raise ConfigError(f"top_k must be in 1..100, got {self.top_k}")
        if not self.map_frame.strip():
            raise ConfigError("map_frame must be non-empty")
        for name in ("map_frame", "odom_frame", "camera_frame"):
            if getattr(self, name).startswith("/"):
                raise ConfigError(f"{name} must not start with '/' (tf2 frame ids), got {getattr(self, name)!r}")
        if self.odom_frame and self.odom_frame == self.map_frame:
            raise ConfigError(f"odom_frame must differ from map_frame ({self.map_frame!r})")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.min_inliers < 0:
            raise ConfigError(f"min_inliers must be >= 0, got {self.min_inliers}")
        for name in ("min_variance_m2", "min_variance_rad2", "tf_publish_rate_hz", "diagnostics_rate_hz"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("sync_slop_s", "max_rate_hz", "transform_tolerance_s", "tf_lookup_timeout_s",
                     "prior_timeout_s", "mapping_min_distance_m", "mapping_min_angle_rad"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 1 <= self.qos_depth <= 1000:
            raise ConfigError(f"qos_depth must be in 1..1000, got {self.qos_depth}")
        if self.mapping_max_queue < 1:
            raise ConfigError(f"mapping.max_queue must be >= 1, got {self.mapping_max_queue}")
        if self.mapping_min_angle_rad > math.pi:
            raise ConfigError(f"mapping.min_angle_rad is in radians (<= pi), got {self.mapping_min_angle_rad}")


    def options(self) -> dict[str, Any]:
        """Keyword options for the localizer registry: top_k, engine (+ engine_kind/engine_fallback
        when not the defaults, so backends without engines never see them) and backend_options."""
        import yaml

        try:
            extra = yaml.safe_load(self.backend_options) if self.backend_options.strip() else {}
        except yaml.YAMLError as err:
            raise ConfigError(f"backend_options is not valid YAML: {err}") from err
        if not isinstance(extra, dict):
            raise ConfigError(f"backend_options must be a YAML mapping like '{{preset: realtime}}', got {extra!r}")
        engine: dict[str, Any] = {"engine": self.engine} if self.engine else {}
        if self.engine_kind != "auto":
            engine["engine_kind"] = self.engine_kind
        if self.engine_fallback:
            engine["engine_fallback"] = list(self.engine_fallback)
        return {"top_k": self.top_k, **engine, **extra}


def _check_type(name: str, value: Any, type_name: Any) -> None:
    """Strict types with one leniency: an integer where a float is expected (YAML '2' for 2.0)."""
    pname = name.replace("mapping_", "mapping.", 1)
    if str(type_name) == "tuple[str, ...]":
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"parameter {pname} must be a string array, got {value!r}")
        return
    kind = {"str": str, "int": int, "float": float, "bool": bool}[str(type_name)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"parameter {pname} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"parameter {pname} must be finite, got {value}")


def config_from_dict(values: dict[str, Any]) -> NodeConfig:
    """NodeConfig from parameter names (dotted) to values; unknown names are an error."""
    unknown = set(values) - set(PARAMETERS)
    if unknown:
        raise ConfigError(f"unknown parameters: {', '.join(sorted(unknown))}")
    merged = {name: default for name, (default, _) in PARAMETERS.items()}
    merged.update(values)
    kwargs = {name.replace(".", "_"): v for name, v in merged.items()}
    for name, v in kwargs.items():  # float fields accept ints
        if NodeConfig.__dataclass_fields__[name].type == "float" and isinstance(v, int) and not isinstance(v, bool):
            kwargs[name] = float(v)
    fallback = kwargs["engine_fallback"]   # ROS gives a list, or None for '[]' in a params file
    kwargs["engine_fallback"] = () if fallback is None else (
        tuple(fallback) if isinstance(fallback, (list, tuple)) else fallback)
    return NodeConfig(**kwargs)


def declare_params(node: Any) -> NodeConfig:
    """Declare every parameter (once) on ``node`` and return the validated config."""
    from rcl_interfaces.msg import ParameterDescriptor

    for name, (default, description) in PARAMETERS.items():
        if not node.has_parameter(name):
            # dynamic typing so that '2' for a float is a clear ConfigError path, not a crash
            value = list(default) if isinstance(default, tuple) else default
            node.declare_parameter(name, value, ParameterDescriptor(description=description,
                                                                    dynamic_typing=True))
    return read_params(node)


def read_params(node: Any, overrides: dict[str, Any] | None = None) -> NodeConfig:
    """Current parameter values (plus ``overrides``, e.g. a pending set) as a NodeConfig."""
    values = {name: node.get_parameter(name).value for name in PARAMETERS}
    values.update(overrides or {})
    return config_from_dict(values)
