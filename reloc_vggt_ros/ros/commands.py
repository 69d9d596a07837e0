"""CLI: ``run``, ``bag from-images``, ``bag play``, ``evaluate`` and ``demo``.

Handlers only parse arguments and call library functions (data.bag, ros.evaluate, eval.report,
ros.node); they return exit codes.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__ = ["register", "REPO_ROOT", "DEFAULT_PARAMS", "SAMPLE_DIR"]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PARAMS = REPO_ROOT / "config" / "reloc_vggt.yaml"
SAMPLE_DIR = REPO_ROOT / "sample"


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="start reloc_vggt_node (same as the launch file)", epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="reloc-vggt run [--params-file FILE] [-p NAME:=VALUE ...] [--ros-args ROS_ARGS ...]")
    run.__class__ = _RunParser  # its own message for arguments it does not know (see _RunParser)
    run.add_argument("--params-file", type=Path, default=DEFAULT_PARAMS, help="ROS 2 parameter YAML, loaded first")
    run.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                     help="same as -p NAME:=VALUE after --ros-args")
    run.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=[], metavar="ROS_ARGS",
                     help="everything after it goes to rclpy unchanged, as with `ros2 run`")
    run.add_argument("legacy_ros_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # `-- ARGS`, deprecated
    run.set_defaults(func=cmd_run)

    bag = subparsers.add_parser("bag", help="rosbag2 (.mcap) tools").add_subparsers(dest="bag_command", required=True)
    fi = bag.add_parser("from-images", help="posed image folder -> bag (image, camera_info, ground truth)")
    fi.add_argument("folder", type=Path)
    fi.add_argument("--split", default="query", choices=["db", "query", "all"])
    fi.add_argument("--out", type=Path, required=True, help="output .mcap file")
    fi.add_argument("--fps", type=float, default=2.0, help="image rate encoded in the stamps")
    fi.add_argument("--max-side", type=int, default=None, help="downsize so the longer side is at most this")
    fi.add_argument("--compressed", action="store_true", help="JPEG CompressedImage instead of raw bgr8")
    fi.add_argument("--overwrite", action="store_true")
    fi.add_argument("--distortion", nargs="+", default=None, metavar=("MODEL", "D"),
                    help="show the images through this lens: plumb_bob K1 K2 P1 P2 K3, rational_polynomial (8 "
                         "coefficients) or equidistant K1..K4; CameraInfo carries it")
    robot = fi.add_argument_group("robot-style bag (camera on a base; /tf, /tf_static; ground truth = base pose)")
    robot.add_argument("--robot", action="store_true", help="write /tf_static base_link->camera and /tf "
                       "odom->base_link; ground truth is the base pose")
    robot.add_argument("--mount", type=float, nargs=4, default=None, metavar=("X", "Y", "Z", "PITCH_DEG"),
                       help="camera on the base: position (m, x forward, z up) and downward pitch (default 0.3 0 1.2 20)")
    robot.add_argument("--drift", type=float, nargs=2, default=None, metavar=("M_PER_S", "DEG_PER_S"),
                       help="odometry drift: map->odom grows this much per second (default 0.02 0.2)")
    robot.add_argument("--tf-rate", type=float, default=None, metavar="HZ", help="odom->base_link rate (default 20)")
    fi.set_defaults(func=cmd_bag_from_images)
    play = bag.add_parser("play", help="publish a bag's messages on live topics")
    play.add_argument("bag", type=Path)
    play.add_argument("--rate", type=float, default=1.0, help="speed factor; 0 = as fast as possible")
    play.add_argument("--wait-for-subscribers", type=float, default=10.0, metavar="S",
                      help="wait up to S seconds for a subscriber of the image topic")
    play.add_argument("--remap", action="append", default=[], metavar="FROM:=TO")
    play.add_argument("--clock", type=float, nargs="?", const=40.0, default=0.0, metavar="HZ",
                      help="publish /clock from the bag time (default 40 Hz when given), as ros2 bag play --clock: "
                           "the time source of nodes with use_sim_time")
    play.add_argument("-l", "--loop", action="store_true", help="play the bag again and again (bag time jumps back)")
    play.set_defaults(func=cmd_bag_play)

    ev = subparsers.add_parser("evaluate", help="replay a bag through the node and score its poses")
    _add_eval_args(ev)
    ev.add_argument("--db", type=Path, required=True, help="keyframe database")
    ev.add_argument("--bag", type=Path, required=True, help="bag with ground truth (bag from-images)")
    ev.add_argument("--out", type=Path, required=True, help="output directory")
    ev.add_argument("--sim-time", action="store_true",
                    help="the node runs with use_sim_time and the player publishes /clock from the bag")
    ev.set_defaults(func=cmd_evaluate)

    demo = subparsers.add_parser("demo", help="sample scene: database, bag, node, replay, error table, plot")
    _add_eval_args(demo)
    demo.add_argument("--scene", type=Path, default=None, help="posed folder (default: the shipped sample)")
    demo.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "demo")
    demo.set_defaults(func=cmd_demo)


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="node parameter YAML")
    p.add_argument("--rate", type=float, default=0.0,
                   help="replay speed; 0 = lockstep (each image waits for the node's answer)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS domain for the node (default: free-ish 90-99)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="node parameter override")


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    """``name:=value`` pairs; values parsed as YAML scalars like ROS does."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if ":=" not in item:
            raise DataError(f"expected NAME:=VALUE, got {item!r}")
        name, value = item.split(":=", 1)
        out[name] = yaml.safe_load(value)
    return out


RUN_EPILOG = """\
ROS arguments go after --ros-args, exactly as for `ros2 run reloc_vggt_ros reloc_vggt_node`;
they come after --params-file and -p, so they win:
  reloc-vggt run --params-file config/reloc_vggt.yaml --ros-args \\
      -r image:=/cam/image_raw -r camera_info:=/cam/camera_info -r __ns:=/robot1 \\
      -p top_k:=8 -p geometric.preset:=fast --log-level debug
"""


class _RunParser(argparse.ArgumentParser):
    """``run``'s parser: a flag it does not know (``-r`` before ``--ros-args``, a typo) is an
    error that says where ROS arguments go, instead of argparse's bare "unrecognized arguments"."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        ns, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(f"unknown argument(s) {' '.join(unknown)}: `reloc-vggt run` takes only --params-file and "
                       "-p NAME:=VALUE; ROS arguments go after --ros-args "
                       "(e.g. --ros-args -r image:=/cam/image_raw -p top_k:=8)")
        return ns, unknown


def run_argv(params_file: Path, params: list[str], ros_args: list[str]) -> list[str]:
    """The node's argv: the params file, then the ``-p`` overrides, then the ROS arguments as given
    (later ones win in rcl, so the command line beats the file)."""
    for item in params:
        if ":=" not in item:
            raise DataError(f"-p expects NAME:=VALUE, got {item!r}")
    argv = ["reloc_vggt_node", "--ros-args", "--params-file", str(params_file)]
    for item in params:
        argv += ["-p", item]
    return argv + list(ros_args)


def cmd_run(args: argparse.Namespace) -> int:
    from .node import main

    if not args.params_file.is_file():
        raise DataError(f"params file not found: {args.params_file}")
    ros_args = list(args.ros_args)
    legacy = list(args.legacy_ros_args)
    if legacy:
        if legacy[0] != "--":
            raise DataError(f"unexpected argument(s) {' '.join(legacy)}: ROS arguments go after --ros-args "
                            "(e.g. reloc-vggt run --ros-args -r image:=/cam/image_raw)")
        legacy = legacy[1:]
        legacy = legacy[1:] if legacy[:1] == ["--ros-args"] else legacy
        logger.warning("`reloc-vggt run -- %s` is deprecated and will be removed in the next release: "
                       "write `reloc-vggt run --ros-args %s`", " ".join(legacy), " ".join(legacy))
    return main(run_argv(args.params_file, args.param, legacy + ros_args))


def cmd_bag_from_images(args: argparse.Namespace) -> int:
    from ..data.bag import RobotBag, write_bag_from_folder

    robot_args = {"--mount": args.mount, "--drift": args.drift, "--tf-rate": args.tf_rate}
    robot = None
    if args.robot:
        options: dict[str, Any] = {}
        if args.mount is not None:
            options.update(mount_xyz=tuple(args.mount[:3]), mount_pitch_deg=args.mount[3])
        if args.drift is not None:
            options.update(drift_m_per_s=args.drift[0], drift_deg_per_s=args.drift[1])
        if args.tf_rate is not None:
            options.update(tf_rate_hz=args.tf_rate)
        robot = RobotBag(**options)
    elif any(v is not None for v in robot_args.values()):
        given = [k for k, v in robot_args.items() if v is not None]
        raise DataError(f"{', '.join(given)} describe a robot-style bag: add --robot")
    distortion = None
    if args.distortion:
        from ..geometry import Distortion

        try:
            distortion = Distortion(args.distortion[0], tuple(float(c) for c in args.distortion[1:]))
        except ValueError as err:
            raise DataError(f"--distortion: {err}") from err
    out = write_bag_from_folder(args.folder, args.out, None if args.split == "all" else args.split, args.fps,
                                args.max_side, args.compressed, overwrite=args.overwrite, robot=robot,
                                distortion=distortion)
    print(f"wrote {out}")
    return 0


def cmd_bag_play(args: argparse.Namespace) -> int:
    import rclpy

    from ..data.bag import COMPRESSED_TOPIC, IMAGE_TOPIC
    from .executor import make_executor
    from .player import BagPlayer

    remap = dict(r.split(":=", 1) for r in args.remap)
    rclpy.init(args=["reloc_vggt_bag_player"])  # not sys.argv: --remap FROM:=TO is applied by the player
    node = rclpy.create_node("reloc_vggt_bag_player")
    executor = make_executor()
    executor.add_node(node)
    spin = lambda t: executor.spin_once(timeout_sec=t)  # noqa: E731
    try:
        player = BagPlayer(node, args.bag, remap, clock_hz=args.clock)
        image_topic = next((t for t in (IMAGE_TOPIC, COMPRESSED_TOPIC) if t in player.publishers), None)
        if image_topic and args.wait_for_subscribers > 0:
            if not player.wait_for_subscribers(image_topic, args.wait_for_subscribers, spin):
                logger.warning("no subscriber on %s after %.0f s; playing anyway", image_topic, args.wait_for_subscribers)
        t0 = time.monotonic()
        n = player.play(args.rate, spin, loops=0 if args.loop else 1)
        spin(0.5)  # let reliable publishers flush
        print(f"published {n} messages from {args.bag} in {time.monotonic() - t0:.1f} s")
    except KeyboardInterrupt:
        return 130
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..eval.report import format_table
    from .evaluate import evaluate

    metrics = evaluate(args.db, args.bag, args.out, args.params, rate=args.rate, domain_id=args.domain_id,
                       overrides=_parse_overrides(args.param), sim_time=args.sim_time)
    print(format_table(metrics))
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'evaluation.png'}")
    return 0


def find_sample_scene() -> Path:
    """The shipped sample scene (``sample/<scene>/poses.txt``)."""
    scenes = sorted(p.parent for p in SAMPLE_DIR.glob("*/poses.txt"))
    if not scenes:
        raise DataError(f"no sample scene under {SAMPLE_DIR} (expected sample/<scene>/poses.txt)")
    return scenes[0]


def cmd_demo(args: argparse.Namespace) -> int:
    from ..data.bag import write_bag_from_folder
    from ..eval.report import format_table
    from .evaluate import evaluate
    from ..keyframes import build_keyframe_db

    t_start = time.monotonic()
    scene = args.scene or find_sample_scene()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    db, bag = out / "sample.db", out / "sample-query.mcap"  # the names config/reloc_vggt.yaml uses
    print(f"[demo] scene {scene}")
    build_keyframe_db(scene, db, split="db", overwrite=True, backend="geometric")
    print(f"[demo] database {db} built in {time.monotonic() - t_start:.1f} s")
    write_bag_from_folder(scene, bag, split="query", overwrite=True)
    print(f"[demo] query bag {bag}")
    metrics = evaluate(db, bag, out, args.params, rate=args.rate, domain_id=args.domain_id,
                       overrides=_parse_overrides(args.param))
    print(format_table(metrics))
    print(f"[demo] wrote {out / 'metrics.json'} and {out / 'evaluation.png'} "
          f"({time.monotonic() - t_start:.0f} s total)")
    return 0
