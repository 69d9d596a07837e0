"""The loopback DDS guard: applied by default, opt-out only where documented."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reloc_vggt_ros.dds import NETWORK_OPT_OUT, PROFILE_PATH, localhost_env

CHECK = ("import os; from reloc_vggt_ros.dds import ensure_localhost_dds; "
         "from reloc_vggt_ros.distro import profile_variable, ros_distro; "
         "print(ensure_localhost_dds(), os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE'), "
         "os.environ.get(profile_variable(ros_distro())))")


def _run(env: dict[str, str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def _bare_env() -> dict[str, str]:
    env = dict(os.environ)
    for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
              NETWORK_OPT_OUT):
        env.pop(k, None)
    return env


def test_shipped_profile_is_loopback_only() -> None:
    xml = PROFILE_PATH.read_text()
    assert "<address>127.0.0.1</address>" in xml and "<useBuiltinTransports>false" in xml


def test_guard_applies_by_default_and_replaces_a_missing_profile() -> None:
    env = _bare_env()
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = "/nonexistent/profile.xml"
    applied, rng, profile = _run(env)
    assert applied == "True" and rng == "LOCALHOST" and Path(profile) == PROFILE_PATH


def test_network_opt_out_leaves_user_settings_alone() -> None:
    env = _bare_env()
    env[NETWORK_OPT_OUT] = "1"
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"
    applied, rng, profile = _run(env)
    assert (applied, rng, profile) == ("False", "SUBNET", "None")


def test_localhost_env_ignores_the_opt_out_for_children() -> None:
    env = localhost_env({NETWORK_OPT_OUT: "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and NETWORK_OPT_OUT not in env


@pytest.mark.parametrize("distro, variable", [("kilted", "FASTDDS_DEFAULT_PROFILES_FILE"),
                                              ("jazzy", "FASTRTPS_DEFAULT_PROFILES_FILE"),
                                              ("humble", "FASTRTPS_DEFAULT_PROFILES_FILE")])
def test_profile_goes_where_the_distribution_reads_it(distro: str, variable: str) -> None:
    """Jazzy's Fast DDS 2 ignores FASTDDS_DEFAULT_PROFILES_FILE (77 % of frames lost without the profile)."""
    env = localhost_env({"ROS_DISTRO": distro, "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE_PATH)})
    assert Path(env[variable]) == PROFILE_PATH
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env.get("ROS_LOCALHOST_ONLY") == ("1" if distro == "humble" else None)

