"""Nothing in the dataset or beside it that should not be there (issue 25): the input is never deleted or
rewritten, temporaries a kill -9 left are cleaned, the progress line shows one precision, and outside
input that cannot be used is a clear error, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import generate_distillation_data as gdd
from conftest import write_prompts


def test_the_failed_file_given_as_the_prompts_file_is_refused_and_left_as_it_is(run, teacher, workdir):
    failed = workdir / "train.failed.jsonl"
    failed.write_text('{"prompt_id": "p1", "sample": 0, "prompt": "retry me", "metadata": {}, "kind": "HTTP 500"}\n')
    before = failed.read_bytes()
    result = run(prompts="train.failed.jsonl", tools="none", subprocess=True)
    assert result.code == 2 and "train.failed.jsonl" in result.err and "cp " in result.err
    assert "Traceback" not in result.err and teacher.requests == []
    assert failed.read_bytes() == before and not (workdir / "train.jsonl").exists()


def test_temporaries_left_by_a_killed_process_are_removed_and_others_kept(run, teacher, workdir):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has now
    stale = workdir / f".train.paused.jsonl.{gone.pid}.tmp"
    stale.write_text('{"messages": "a conversation"}\n')
    stale_output = workdir / f".train.jsonl.{gone.pid}.tmp"
    stale_output.write_text("half a rewrite\n")
    alive = workdir / f".train.paused.jsonl.{os.getpid()}.tmp"  # a process that still runs: not ours to touch
    alive.write_text("in use\n")
    foreign = workdir / f".notes.txt.{gone.pid}.tmp"  # not a file of this output
    foreign.write_text("someone else's\n")
    write_prompts(workdir, ["q"])
    result = run(tools="none", subprocess=True)
    assert result.code == 0, result.err
    assert not stale.exists() and not stale_output.exists()
    assert alive.exists() and foreign.exists()


def test_the_progress_line_shows_the_projection_with_the_spends_precision():
    stats = gdd.Stats(written=1, billed=0.0015)
    stats.usage.cost = 0.0015
    progress = gdd.Progress(total=3, finished=1, stats=stats, limiter=gdd.AdaptiveLimiter(4))
    assert "$0.0015 of ~$0.0045" in progress.status()


def test_a_prompt_line_nested_2000_deep_is_exit_2_naming_its_line(run, teacher, workdir):
    (workdir / "prompts.jsonl").write_text('{"prompt": "fine"}\n{"prompt": "deep", "metadata": '
                                           + "[" * 2000 + "]" * 2000 + "}\n")
    result = run(tools="none", subprocess=True)
    assert result.code == 2 and "prompts.jsonl:2" in result.err and "nested" in result.err
    assert "Traceback" not in result.err and teacher.requests == []


def test_a_prompt_line_nested_150_deep_is_refused_too(run, teacher, workdir):
    (workdir / "prompts.jsonl").write_text('{"prompt": "deep", "metadata": {"x": ' + "[" * 150 + "]" * 150 + "}}\n")
    result = run(tools="none", subprocess=True)
    assert result.code == 2 and "nested more than 100 levels" in result.err


def test_config_yml_nested_5000_deep_aliases_and_size_are_refused_at_once(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))
    cases = {"deep": "rollout:\n  max_turns: " + "[" * 5000 + "]" * 5000 + "\n",
             "aliases": bomb + "rollout:\n  max_turns: 3\n",
             "large": "rollout:\n  max_turns: 3\n# " + "x" * (2 << 20) + "\n",
             "echo": "rollout:\n  max_turns: '" + "9" * 100_000 + "x'\n"}
    for case, text in cases.items():
        (workdir / "config.yml").write_text(text)
        result = run(tools="none", subprocess=case == "aliases", timeout=30)  # one as users run it; the rest in process
        assert result.code == 2, (case, result.err[-500:])
        assert "config.yml" in result.err and "Traceback" not in result.err, case
        assert len(result.err) < 2000, case  # no value echoed whole
    assert teacher.requests == []
