"""JSON round trip shared by the model configs saved beside weights.

A config file names its ``architecture`` so a checkpoint can never be loaded into the wrong
model; unknown fields are an error rather than silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..config import from_mapping
from ..errors import ConfigError

__all__ = ["JsonConfig"]

C = TypeVar("C", bound="JsonConfig")


class JsonConfig:
    """Mixin for frozen config dataclasses: ``from_dict`` / ``to_json`` / ``from_json``.

    Built with :func:`reloc_vggt_ros.config.from_mapping` (nested configs recurse). Subclasses set ``ARCHITECTURE`` (the value of the ``architecture`` key), ``LABEL`` (used in
    messages) and implement ``to_dict``; ``ARCHITECTURE_REQUIRED`` says whether a dict without the
    key is refused (True) or taken to be this architecture (False).
    """

    ARCHITECTURE: ClassVar[str]
    LABEL: ClassVar[str]
    ARCHITECTURE_REQUIRED: ClassVar[bool] = True

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def prepare_mapping(cls, d: Mapping[str, Any]) -> dict[str, Any]:
        """Check and strip the ``architecture`` tag (hook of :func:`reloc_vggt_ros.config.from_mapping`)."""
        d = dict(d)
        arch = d.pop("architecture", None if cls.ARCHITECTURE_REQUIRED else cls.ARCHITECTURE)
        if arch != cls.ARCHITECTURE:
            raise ConfigError(f"config describes architecture {arch!r}, not {cls.ARCHITECTURE!r}")
        return d

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """Built by the package's one config mechanism; unknown fields are errors."""
        return from_mapping(cls, d, cls.LABEL)

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read {cls.LABEL} config {path}: {err}") from err
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.LABEL} config {path} is not a JSON object")
        return cls.from_dict(d)
