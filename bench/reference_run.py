"""The reference run: one deterministic run through most of the generator, for "no behaviour changed".

A restructure of the generator must leave what it writes unchanged. This script runs a generator (this
checkout's, or another one given with --generator) against the loopback teacher with tools, rewards,
--attempts 2, a failed prompt, a 402 that pauses a rollout mid-conversation, the re-run that resumes it,
and both exports; then prints a digest of every file the runs left, with the fields that change from run
to run (timestamps, durations, temporary ports) put to fixed values. Two generators that behave alike
print the same digests:

    python bench/reference_run.py --generator /tmp/before/generate_distillation_data.py > before.txt
    python bench/reference_run.py > after.txt && diff before.txt after.txt

It runs at -c 1, so the teacher sees the requests in one order and numbers its answers the same way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "tests" / "support"))

from fake_teacher import FakeTeacher, answer, call_tools, status  # noqa: E402

TOOLS = '''
from rnow.core.tool import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

@tool
def shout(text: str) -> str:
    """Upper-case a text."""
    if text == "boom":
        raise ValueError("no booms")
    return text.upper()
'''

REWARDS = '''
from rnow.core.reward import RewardArgs, reward

@reward
def says_yes(args: RewardArgs, messages: list) -> float:
    """1 when the final answer says yes."""
    return 1.0 if "yes" in (messages[-1].get("content") or "").lower() else 0.0
'''

PROMPTS = [
    {"prompt": "plain question"},
    {"prompt": "add things", "id": "adder"},
    {"prompt": "shout boom"},
    {"prompt": "say no first"},
    {"prompt": "fails for good"},
    {"prompt": "paused midway"},
    {"prompt": "with a system", "system": "Be brief."},
]

# Volatile values: when, how long, which port.
VOLATILE = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d)?(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?")
PORT = re.compile(r"127\.0\.0\.1:\d+")


def script(teacher: FakeTeacher) -> None:
    teacher.script("plain question", answer("Yes, plainly."))
    teacher.script("add things", call_tools(("add", {"a": 2, "b": 40})), answer("Yes: 42."))
    teacher.script("shout boom", call_tools(("shout", {"text": "boom"}), ("shout", {"text": "hi"})),
                   answer("Yes, one failed."))
    teacher.script("say no first", answer("No."), answer("Yes, on the second try."))
    teacher.script("fails for good", *[status(400, "bad request for this prompt")] * 2)
    teacher.script("paused midway", call_tools(("add", {"a": 1, "b": 1})), status(402, "out of credits"),
                   answer("Yes, resumed."))


def run(generator: Path, workdir: Path, teacher: FakeTeacher, *more: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER", "BROWSE"))}
    env.update(OPENROUTER_API_KEY="sk-or-v1-reference", PYTHONHASHSEED="0", NO_COLOR="1")
    command = [sys.executable, str(generator), "prompts.jsonl", "--tools", "tools.py",
               "--rewards", "rewards.py", "--min-reward", "1", "--attempts", "2", "-c", "1",
               "--start-concurrency", "1", "--retries", "0", "--backoff", "0.01",
               "--base-url", teacher.base_url, "--export", "hf,openai", *more]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, PORT.sub("127.0.0.1:PORT", done.stderr)


def digest(workdir: Path, generator: Path) -> list[str]:
    # The run record and the card name the generator by its file's hash, which any edit changes: the same
    # value for every generator, so only what the generator does is compared.
    own_hash = hashlib.sha256(generator.read_bytes()).hexdigest()[:16]
    rows = []
    for path in sorted(workdir.iterdir()):
        if path.name in ("prompts.jsonl", "tools.py", "rewards.py", "__pycache__") or path.is_dir():
            continue
        text = PORT.sub("127.0.0.1:PORT", VOLATILE.sub("TIME", path.read_text(errors="replace")))
        text = text.replace(own_hash, "GENERATOR")
        rows.append(f"{path.name} {hashlib.sha256(text.encode()).hexdigest()[:16]} {len(text.splitlines())} "
                    "lines")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", type=Path, default=HERE / "generate_distillation_data.py")
    parser.add_argument("--keep", type=Path, help="run in this folder and leave it (to diff the files)")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="reference-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    (workdir / "tools.py").write_text(TOOLS)
    (workdir / "rewards.py").write_text(REWARDS)
    teacher = FakeTeacher().start()
    try:
        script(teacher)
        first, _ = run(args.generator.resolve(), workdir, teacher)
        second, _ = run(args.generator.resolve(), workdir, teacher)
        third, _ = run(args.generator.resolve(), workdir, teacher, "--no-run", "--report")
    finally:
        teacher.stop()
    print(f"exit codes: {first}, {second}, {third}; requests: {len(teacher.requests)}")
    print("\n".join(digest(workdir, args.generator.resolve())))


if __name__ == "__main__":
    main()
