"""The one configuration mechanism: nested frozen dataclasses built from plain mappings.

Every setting in the package — node parameters, backend options, CLI ``-o`` overrides, training
YAML, model JSON — is a frozen dataclass (nested dataclasses for sections) whose
``__post_init__`` checks its own values. This module turns mappings into them and back:

* :func:`from_mapping` builds ``cls`` from a (nested) mapping, recursively, starting from the
  field defaults or from a ``base`` instance (a preset); an unknown key is a ConfigError that
  lists the valid ones; values are type-checked against the field annotations (an int is
  accepted for a float, a YAML list for a tuple; nothing else is coerced silently).
* :func:`to_mapping` is the inverse (plain dicts, lists, scalars: YAML/JSON-ready).
* :func:`flatten` / :func:`unflatten` convert between nested mappings and dotted names, which
  is how ROS parameters (``geometric.query.max_keypoints``) and ``-o`` overrides spell them.
* :func:`parse_overrides` reads ``dotted.key=value`` strings (value parsed as YAML).
* :func:`setting` attaches a one-line description to a field; :func:`descriptions` reads them
  (node parameter descriptors and generated docs come from there).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, Union

import yaml

from .errors import ConfigError

__all__ = ["from_mapping", "to_mapping", "flatten", "unflatten", "parse_overrides", "merge", "setting",
           "descriptions", "leaf_fields", "require_positive", "require_non_negative"]

T = TypeVar("T")
_MISSING = object()


def setting(default: Any = _MISSING, doc: str = "", *, factory: Any = None) -> Any:
    """A dataclass field with a description (``default`` or ``factory`` as in ``field``)."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"doc": doc})
    if default is _MISSING:
        return dataclasses.field(metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _optional_inner(tp: Any) -> tuple[bool, Any]:
    """(True, X) for ``X | None`` / ``Optional[X]``, else (False, tp)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) + 1 == len(typing.get_args(tp)) and len(args) == 1:
            return True, args[0]
    return False, tp


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str, base: Any = _MISSING) -> Any:
    """``value`` checked (and, for dataclasses/tuples, built) as annotation ``tp``."""
    optional, inner = _optional_inner(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{where} must not be null")
    tp = inner
    if tp is Any:
        return value
    if _is_dataclass_type(tp):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} settings, got {value!r}")
        start = base if dataclasses.is_dataclass(base) else None
        return from_mapping(tp, value, where, base=start)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{where} must have {len(args)} entries, got {list(value)!r}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value))) if args \
            else tuple(value)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):              # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be finite, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        try:
            return tp(value)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}: {err}") from err
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str = "", base: T | None = None) -> T:
    """``cls`` from ``data``, recursing into dataclass-typed fields; unknown keys are errors.

    Fields missing from ``data`` keep the value of ``base`` (a preset) or the field default.
    ``where`` names the section in error messages (e.g. ``"geometric"`` or a file name). A class
    may define ``prepare_mapping(data) -> data`` (classmethod) to check and strip keys that are
    not fields, such as the ``architecture`` tag of a saved model config.
    """
    if data is None:
        data = {}
    label = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label} must be a mapping, got {type(data).__name__} {data!r}")
    prepare = getattr(cls, "prepare_mapping", None)     # e.g. a saved model config's "architecture" tag
    if prepare is not None:
        data = prepare(data)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {label}; valid: {sorted(fields)}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        sub_base = getattr(base, name) if base is not None else _MISSING
        if sub_base is None or sub_base is _MISSING:
            default = fields[name].default
            if default is dataclasses.MISSING and fields[name].default_factory is not dataclasses.MISSING:
                default = fields[name].default_factory()
            sub_base = default if dataclasses.is_dataclass(default) else _MISSING
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}" if where else name, sub_base)
    try:
        if base is not None:
            return dataclasses.replace(base, **kwargs)  # type: ignore[type-var]
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{label}: {err}") from err


def to_mapping(obj: Any) -> Any:
    """Plain nested dicts/lists/scalars of a config dataclass (the inverse of from_mapping)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, Mapping):
        return {k: to_mapping(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    return obj


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (a dataclass is taken through :func:`to_mapping`)."""
    if dataclasses.is_dataclass(mapping):
        mapping = to_mapping(mapping)
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": 2}`` -> ``{"a": {"b": 1}, "c": 2}``; a name that is both leaf and section fails."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name!r}: {part!r} is a value, not a section")
        if isinstance(node.get(leaf), dict) and not isinstance(value, Mapping):
            raise ConfigError(f"{name!r} is a section, not a value")
        node[leaf] = merge(node[leaf], value) if isinstance(node.get(leaf), dict) else value
    return out


def merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge of two nested mappings; ``b`` wins."""
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Nested mapping of ``dotted.key=value`` strings (each value parsed as YAML)."""
    flat: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override must be dotted.key=value, got {item!r}")
        try:
            flat[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from err
    return unflatten(flat)


def leaf_fields(cls: type, prefix: str = "") -> dict[str, tuple[Any, dataclasses.Field]]:
    """Dotted name -> (annotation, field) of every non-dataclass field of ``cls``, recursively."""
    out: dict[str, tuple[Any, dataclasses.Field]] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        name = f"{prefix}.{f.name}" if prefix else f.name
        optional, inner = _optional_inner(hints[f.name])
        if _is_dataclass_type(inner) and not optional:
            out.update(leaf_fields(inner, name))
        else:
            out[name] = (hints[f.name], f)
    return out


def descriptions(cls: type) -> dict[str, str]:
    """Dotted name -> the ``doc`` given with :func:`setting` ('' where none)."""
    return {name: f.metadata.get("doc", "") for name, (_, f) in leaf_fields(cls).items()}


def _require(obj: object, prefix: str, names: Iterable[str], ok: Any, bound: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not ok(value):     # NaN fails every comparison, so it is refused too
            raise ConfigError(f"{prefix + '.' if prefix else ''}{name} must be {bound}, got {value}")


def require_positive(obj: object, prefix: str, *names: str) -> None:
    """ConfigError naming the first field of ``names`` that is not > 0 (as ``prefix.name``; the
    section's dotted name, '' at the top level): the check every settings dataclass repeats."""
    _require(obj, prefix, names, lambda v: v > 0, "> 0")


def require_non_negative(obj: object, prefix: str, *names: str) -> None:
    """ConfigError naming the first field of ``names`` that is not >= 0 (see :func:`require_positive`)."""
    _require(obj, prefix, names, lambda v: v >= 0, ">= 0")
