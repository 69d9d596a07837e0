"""Benchmarks live in one home: every ``bench/<name>.py`` runs as ``python -m bench.<name>`` and
takes ``--json FILE`` (``bench/_<name>.py`` are helpers they share); tools/ keeps only non-bench tools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reloc_vggt_ros.dds import localhost_env

ROOT = Path(__file__).parents[2]
MODULES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "commands" and not p.stem.startswith("_"))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=localhost_env(), capture_output=True, text=True,
                          timeout=180)


def test_bench_modules_and_tools() -> None:
    assert {"attention_scaling", "localize", "node_rate", "store"} <= set(MODULES)
    tools = sorted(p.name for p in (ROOT / "tools").iterdir() if p.name != "__pycache__")
    assert tools == ["build_tf2_msgs.sh", "make_sample.py", "pg_test_server.sh"]


@pytest.mark.parametrize("name", MODULES)
def test_every_bench_module_runs_with_m_and_takes_json(name: str) -> None:
    res = _run("-m", f"bench.{name}", "--help")
    assert res.returncode == 0, res.stderr[-1500:]
    assert "--json" in res.stdout


def test_store_bench_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "store.json"
    res = _run("-m", "bench.store", "--n", "3", "--json", str(out))
    assert res.returncode == 0, res.stderr[-1500:]
    assert "synchronous=FULL" in res.stdout and "synchronous=NORMAL" in res.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["synchronous"] for r in rows] == ["FULL", "NORMAL"] and all(r["add_keyframe_ms"] > 0 for r in rows)


def test_localize_module_is_the_bench_localize_command(tmp_path: Path) -> None:
    res = _run("-m", "bench.localize", "--scene", str(tmp_path))          # same parser and error handling
    assert res.returncode == 1 and "ERROR:" in res.stderr and "poses.txt" in res.stderr
