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
