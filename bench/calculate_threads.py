"""Stress check: the bundled `calculate` tool called from many threads at once, as a run's tool calls are.

    python bench/calculate_threads.py            # 16 threads x 3,000 calls each; exit 1 on any wrong result

CPython 3.11's ast.parse shares its recursion count between threads, and two parses at once could fail with
"SystemError: AST constructor recursion depth mismatch" (1 call in 48 in real runs). tools.py parses one at a
time; this counts, over many racing calls, the results that are not the exact answer. Not in the test suite:
a race that rare is no reliable test on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import generate_distillation_data as gdd  # noqa: E402

EXPRESSIONS = {"(" * 90 + "1" + " + 1)" * 90: "91", "(1250 * 0.07) / 12": str((1250 * 0.07) / 12),
               "((2 + 3) * (4 - 1)) ** 2": "225", "-(-(-(7))) + 8 // 3": "-5",
               "((((((1 + 2) * 3) - 4) / 5) + 6) * 7) % 8": str(((((((1 + 2) * 3) - 4) / 5) + 6) * 7) % 8)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--calls", type=int, default=3000, help="calls per thread")
    args = parser.parse_args()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can: the race, if any, shows
    gdd._install_rnow_stand_in()
    calculate = gdd.import_user_file(ROOT / "tools.py", "tools").calculate
    wrong: Counter = Counter()
    start = threading.Barrier(args.threads)

    def hammer(index: int) -> None:
        items = list(EXPRESSIONS.items())
        start.wait()
        for i in range(args.calls):
            expression, expected = items[(index + i) % len(items)]
            result = calculate(expression)
            if result != expected:
                wrong[result[:80]] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = args.threads * args.calls
    print(f"calculate from {args.threads} threads: {total} calls, {sum(wrong.values())} wrong results "
          f"(target: 0) {'PASS' if not wrong else 'FAIL'}")
    for result, count in wrong.most_common(5):
        print(f"  {count} x {result}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
