"""``reloc-vggt``: one command, sub-commands registered by each subpackage.

Each ``<subpackage>/commands.py`` exposes ``register(subparsers)`` which adds its sub-commands
with ``set_defaults(func=...)``; ``func(args) -> int`` returns the exit code. A RelocError
becomes one ``ERROR:`` line and exit code 1; the library never calls ``sys.exit``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .dds import ensure_localhost_dds
from .errors import RelocError

COMMAND_MODULES = (
    "reloc_vggt_ros.keyframes.commands",    # db build / db info
    "bench.commands",    # bench localize
    "reloc_vggt_ros.ros.commands",          # run, bag, evaluate, demo
    "reloc_vggt_ros.engine.commands",       # export onnx, engine build
    "reloc_vggt_ros.training.commands",     # train
    "reloc_vggt_ros.model.commands",        # weights info / convert
    "reloc_vggt_ros.mapfree.commands",      # mapfree convert / evaluate
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reloc-vggt", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # sub-package without commands yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    ensure_localhost_dds()  # before anything can create a ROS node
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except RelocError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
