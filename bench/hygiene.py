#!/usr/bin/env python3
"""Figure 18: --dedup and --decontaminate over a million prompts, as users run them.

    python bench/hygiene.py              # 1,000,000 prompts, 100,000 benchmark items: ~5 minutes on 2 cores
    python bench/hygiene.py --n 10000    # seconds (the smoke test)

The corpus (bench/hygiene_corpus.py, seeded) is made once into --data (default: bench/results/hygiene-N):
prompts of ~50 words with planted near copies, exact copies, prompts that must stay (topic siblings, one-slot
variants, long-template variants), prompts holding a benchmark item and a clean control set. Each run is the
generator as users run it, a subprocess with default settings but the flag, against a loopback teacher; it is
stopped (SIGTERM) at its first request, by when the prompts are checked and the dropped-prompts file is
written. Time: start to first request, the whole process (interpreter start, output scan, the check, the
plan); memory: the process's own high-water mark (VmHWM). The same run without either flag is the yardstick.
What was dropped is read from the dropped-prompts file and scored against what was planted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from bench import Figure, PeakMemory  # noqa: E402
from fake_teacher import FakeTeacher  # noqa: E402


def corpus(data: Path, n: int, items: int) -> Path:
    if not (data / "truth.json").is_file():
        data.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(HERE / "hygiene_corpus.py"), "--n", str(n), "--items", str(items),
                        "--out", str(data)], check=True, stdout=subprocess.DEVNULL)
    return data


def run_until_first_request(data: Path, work: Path, tag: str, *flags: str) -> tuple[float, float, list[dict]]:
    """(seconds from start to the first request, peak MB, the dropped-prompts file's lines)."""
    output = work / f"{tag}.jsonl"
    for old in work.glob(f"{tag}.*"):
        old.unlink()
    server = FakeTeacher().start()
    try:
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, str(ROOT / "generate_distillation_data.py"),
                                    str(data / "prompts.jsonl"), "-o", str(output), "--tools", "none",
                                    "--base-url", server.base_url, *flags],
                                   cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak = PeakMemory(process.pid)
        while not server.requests and process.poll() is None:
            time.sleep(0.01)
        first_request = time.monotonic() - started
        peak.stop()
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate(timeout=120)[1]
        if not server.requests:
            raise SystemExit(f"the run with {flags} sent nothing: {stderr[-2000:]}")
    finally:
        server.stop()
    dropped = output.with_name(f"{tag}.dropped.jsonl")
    lines = [json.loads(line) for line in dropped.read_text().splitlines()[1:]] if dropped.exists() else []
    return first_request, peak.mb, lines


def dedup_quality(truth: dict, drops: list[dict]) -> dict:
    """Planted copies dropped (near, exact), and the drops that are none: precision leaves the one-slot and
    long-template variants out (a question of policy, counted on their own) and counts a drop of the same
    words as right (the contaminated set reuses a few tiny benchmark items word for word)."""
    dropped = {d["line"] - 1: d for d in drops}
    copies = {line: ("near", set(group["lines"])) for group in truth["near"] for line in group["lines"][1:]}
    copies.update({line: ("exact", set(group)) for group in truth["exact"] for line in group[1:]})
    found = {"near": 0, "exact": 0}
    wrong_target = 0
    for line, (kind, group) in copies.items():
        if line in dropped:
            found[kind] += 1
            wrong_target += dropped[line]["duplicate_of_line"] - 1 not in group
    slots = {line for group in truth["slots"] for line in group}
    templated = {line for group in truth["templated"] for line in group}
    others = [line for line in dropped if line not in copies]
    same_words = sum(1 for line in others if dropped[line]["dropped"] == "duplicate")
    wrong = sum(1 for line in others if dropped[line]["dropped"] != "duplicate"
                and line not in slots | templated)
    right = found["near"] + found["exact"] + same_words
    near = sum(1 for kind, _ in copies.values() if kind == "near")
    return {"near": found["near"] / near, "exact": found["exact"] / (len(copies) - near),
            "precision": right / max(1, right + wrong), "wrong_target": wrong_target,
            "slots": sum(1 for line in others if line in slots),
            "slot_count": len(slots) - len(truth["slots"]),
            "templated": sum(1 for line in others if line in templated),
            "templated_count": len(templated) - len(truth["templated"])}


def decontamination_quality(truth: dict, drops: list[dict]) -> dict:
    flagged = {d["line"] - 1: d["item"] for d in drops}
    planted = {c["line"]: c["item"] for c in truth["contaminated"]}
    clean = {c["line"] for c in truth["clean"]}
    return {"found": sum(1 for line in planted if line in flagged), "planted": len(planted),
            "right_item": sum(1 for line, item in planted.items() if flagged.get(line) == item),
            "clean": sum(1 for line in clean if line in flagged), "clean_count": len(clean),
            "others": sum(1 for line in flagged if line not in planted and line not in clean)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="prompts (default: 1,000,000)")
    parser.add_argument("--items", type=int, default=100_000, help="benchmark items (default: 100,000)")
    parser.add_argument("--data", type=Path, default=None, help="the corpus folder (made if it holds none)")
    args = parser.parse_args()
    data = corpus(args.data or ROOT / "bench" / "results" / f"hygiene-{args.n}", args.n, args.items)
    truth = json.loads((data / "truth.json").read_text())
    full = args.n >= 1_000_000  # the targets are for a million prompts
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base, base_mb, _ = run_until_first_request(data, work, "plain")
        dedup_s, dedup_mb, drops = run_until_first_request(data, work, "dedup", "--dedup")
        decon_s, decon_mb, flagged = run_until_first_request(data, work, "decon", "--decontaminate",
                                                             str(data / "bench.jsonl"))
        both_s, both_mb, both = run_until_first_request(data, work, "both", "--dedup", "--decontaminate",
                                                        str(data / "bench.jsonl"))
    q, d = dedup_quality(truth, drops), decontamination_quality(truth, flagged)
    n = f"{args.n:,}"
    figures = [
        Figure(f"18. neither flag, {n}: start to first request", base, "", None, "s"),
        Figure("18. neither flag: peak memory", base_mb, "", None, "MB"),
        Figure(f"18. --dedup, {n}: start to first request", dedup_s,
               "< 180", dedup_s < 180 if full else None, "s"),
        Figure("18. --dedup: peak memory", dedup_mb, "< 2000", dedup_mb < 2000 if full else None, "MB"),
        Figure("18. --dedup: planted near copies dropped (recall)", q["near"], "", None),
        Figure("18. --dedup: exact copies dropped", q["exact"], "== 1", q["exact"] == 1),
        Figure("18. --dedup: drops that are copies (precision)", q["precision"], ">= 0.99",
               q["precision"] >= 0.99),
        Figure("18. --dedup: copies listed against another group", q["wrong_target"], "== 0",
               q["wrong_target"] == 0),
        Figure("18. --dedup: one-slot variants dropped", q["slots"], "", None, f"of {q['slot_count']}"),
        Figure("18. --dedup: long-template variants dropped", q["templated"], "", None,
               f"of {q['templated_count']}"),
        Figure(f"18. --decontaminate {args.items:,} items: to 1st request", decon_s, "< 120",
               decon_s < 120 if full else None, "s"),
        Figure("18. --decontaminate: peak memory", decon_mb, "", None, "MB"),
        Figure("18. --decontaminate: planted prompts found", d["found"] / d["planted"], "== 1",
               d["found"] == d["planted"], f"of {d['planted']}"),
        Figure("18. --decontaminate: ... matched to their item", d["right_item"] / d["planted"], "", None),
        Figure("18. --decontaminate: clean control flagged", d["clean"], "== 0", d["clean"] == 0,
               f"of {d['clean_count']}"),
        Figure("18. --decontaminate: other prompts flagged", d["others"], "", None),
        Figure("18. both flags: start to first request", both_s, "", None, "s"),
        Figure("18. both flags: peak memory", both_mb, "< 2000", both_mb < 2000 if full else None, "MB"),
        Figure("18. both flags: prompts dropped vs each alone", len(both) / max(1, len(drops) + len(flagged)),
               "", None, f"of {len(drops) + len(flagged)}")]
    print(f"| {'figure':<52} | {'value':>21} | {'target':<14} | ok   |")
    print(f"|{'-' * 54}|{'-' * 23}|{'-' * 16}|------|")
    for figure in figures:
        print(figure.row())
    print(f"\n2 cores; load average {os.getloadavg()[0]:.1f} at the end", file=sys.stderr)
    return 1 if any(f.ok is False for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
