"""The benchmark at a tiny size, so it cannot rot. Its speed figures are not asserted here."""

import subprocess
import sys

from conftest import ROOT


def test_benchmark_runs_at_tiny_size():
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--tiny"], capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "figure" not in line]
    assert len(rows) == 61
    lossless = [row for row in rows if "duplicates or missing" in row]
    assert len(lossless) == 9 and all(row.endswith("| PASS |") for row in lossless)


def test_the_prompt_hygiene_benchmark_runs_at_a_small_size(tmp_path):
    """Figure 18 (bench/hygiene.py) on 10,000 prompts (its 100,000 benchmark items: fewer would leave each
    shared instruction in fewer than the 50 items that make it boilerplate): it runs, and its planted sets
    come out as they must (counts, not speeds)."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "hygiene.py"), "--n", "10000",
                             "--data", str(tmp_path / "corpus")], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 18.")]
    assert len(rows) == 19 and not any(row.endswith("| FAIL |") for row in rows)
