"""The generic config mechanism: nested build, presets as bases, strict types, dotted names."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from reloc_vggt_ros.config import (descriptions, flatten, from_mapping, leaf_fields, parse_overrides, setting,
                                   to_mapping, unflatten)
from reloc_vggt_ros.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    size: int = setting(3, "how many")
    ratio: float = 0.5
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"size must be >= 1, got {self.size}")


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    other: Inner | None = None
    label: str = "x"
    flag: bool = False
    hw: tuple[int, int] | None = None


def test_nested_build_keeps_unset_defaults():
    cfg = from_mapping(Outer, {"inner": {"size": 7}, "label": "y"})
    assert cfg == Outer(Inner(size=7), None, "y")
    assert cfg.inner.ratio == 0.5


def test_base_instance_is_a_preset():
    preset = Outer(Inner(size=9, ratio=0.25), label="preset")
    cfg = from_mapping(Outer, {"inner": {"ratio": 0.75}}, base=preset)
    assert cfg.inner == Inner(size=9, ratio=0.75) and cfg.label == "preset"


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sise'\] in cfg.inner; valid: \['names', 'ratio', 'size'\]"):
        from_mapping(Outer, {"inner": {"sise": 1}}, "cfg")


@pytest.mark.parametrize("data, message", [
    ({"flag": 1}, "flag must be true or false"),
    ({"inner": {"size": 2.5}}, "inner.size must be an integer"),
    ({"inner": {"size": True}}, "inner.size must be an integer"),
    ({"inner": {"ratio": "abc"}}, "inner.ratio must be a number"),
    ({"inner": {"ratio": float("nan")}}, "inner.ratio must be finite"),
    ({"label": 3}, "label must be a string"),
    ({"hw": [1, 2, 3]}, "hw must have 2 entries"),
    ({"inner": 5}, "inner must be a mapping"),
    ({"inner": {"size": 0}}, "size must be >= 1"),
])
def test_wrong_values_are_clear_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(Outer, data)


def test_lenient_only_where_safe():
    cfg = from_mapping(Outer, {"inner": {"ratio": 1, "names": ["a", "b"]}, "hw": [4, 3], "other": {"size": 2}})
    assert cfg.inner.ratio == 1.0 and isinstance(cfg.inner.ratio, float)
    assert cfg.inner.names == ("a", "b") and cfg.hw == (4, 3) and cfg.other == Inner(size=2)
    assert from_mapping(Inner, {"ratio": "1e-3"}).ratio == 1e-3     # YAML 1.1 reads 1e-3 as a string


def test_round_trip_and_dotted_names():
    cfg = Outer(Inner(4, 0.1, ("q",)), Inner(), "z", True, (2, 1))
    assert from_mapping(Outer, to_mapping(cfg)) == cfg
    flat = flatten(cfg)
    assert flat["inner.size"] == 4 and flat["other.ratio"] == 0.5 and flat["hw"] == [2, 1]
    assert from_mapping(Outer, unflatten(flat)) == cfg


def test_overrides_parse_as_yaml():
    assert parse_overrides(["inner.size=5", "label=hello", "inner.names=[a, b]", "flag=true"]) == {
        "inner": {"size": 5, "names": ["a", "b"]}, "label": "hello", "flag": True}
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_overrides(["novalue"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        unflatten({"a": 1, "a.b": 2})


def test_leaf_fields_and_descriptions():
    leaves = leaf_fields(Outer)
    assert "inner.size" in leaves and "other" in leaves and "label" in leaves
    assert descriptions(Outer)["inner.size"] == "how many"


def test_require_positive_and_non_negative_name_the_field_with_its_section() -> None:
    from reloc_vggt_ros.config import require_non_negative, require_positive

    @dataclass
    class S:
        a: float = 1.0
        b: float = 0.0

    require_positive(S(), "sec", "a")
    require_non_negative(S(), "sec", "a", "b")
    with pytest.raises(ConfigError, match=r"^sec\.b must be > 0, got 0\.0$"):
        require_positive(S(), "sec", "a", "b")
    with pytest.raises(ConfigError, match=r"^b must be >= 0, got -1\.0$"):
        require_non_negative(S(b=-1.0), "", "b")
    with pytest.raises(ConfigError, match=r"must be >= 0, got nan"):
        require_non_negative(S(a=float("nan")), "sec", "a")
