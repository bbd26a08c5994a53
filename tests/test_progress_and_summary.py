"""Progress and the summary: what the user sees (stderr only, a readable log, each message once, --help), and
the summary that says where every rollout went."""

from __future__ import annotations

import pytest

from conftest import run_script, write_prompts
from fake_teacher import FakeTeacher, answer, status

import generate_distillation_data as gdd


def test_help_reads_well(workdir):
    result = run_script(workdir, "--help")
    assert result.code == 0
    for option in ("--output", "--tools", "--model", "--concurrency", "--max-turns", "--base-url",
                   "--retries", "--timeout", "--samples", "--shard", "--dry-run", "exit codes"):
        assert option in result.out


def test_summary_goes_to_stderr_and_stdout_stays_clean(run, workdir, teacher):
    write_prompts(workdir, ["a", "b"])
    teacher.script("b", status(400, "nope"))
    result = run(tools="none", subprocess=True)
    assert result.code == 1 and result.out == ""
    assert "Done: 1 new rollout written" in result.err and "Failed: 1 (HTTP 400 x1)" in result.err
    assert "details in train.failed.jsonl" in result.err and "Time:" in result.err


@pytest.mark.parametrize("reply, message", [
    (status(401, "bad key"), "the API key was rejected"),
    (status(402, "no credits"), "out of credits"),
])
def test_a_stop_message_is_printed_once_and_no_empty_output_is_left(workdir, reply, message):
    server = FakeTeacher(default_step=reply).start()
    try:
        write_prompts(workdir, ["a", "b", "c"])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url)
        assert result.code == 1 and result.err.count(message) == 1, result.err
        assert not (workdir / "train.jsonl").exists()
    finally:
        server.stop()


def test_the_progress_line_shows_the_projection_with_the_spends_precision():
    stats = gdd.Stats(written=1, billed=0.0015)
    stats.usage.cost = 0.0015
    progress = gdd.Progress(total=3, finished=1, stats=stats, limiter=gdd.AdaptiveLimiter(4))
    assert "$0.0015 of ~$0.0045" in progress.status()


def test_a_log_file_gets_the_plan_first_and_progress_with_rate_and_eta(run, workdir, teacher):
    write_prompts(workdir, ["q1", "q2"])
    result = run(tools="none", subprocess=True)
    assert result.err.splitlines()[0].startswith("Running 2 rollouts with openai/gpt-4o-mini at "
                                                 "http://127.0.0.1")
    progress = gdd.Progress(100, 10, gdd.Stats(), gdd.AdaptiveLimiter(4))
    progress.started -= 60
    progress.finished = 40
    assert progress.pace() == " (30.0/min, about 2m00s left)"


ZERO_REWARDS = '''
from rnow.core import RewardArgs, get_response, reward

@reward
def score(args: RewardArgs, messages: list) -> float:
    return 1.0 if "good" in get_response(messages) else 0.0
'''


def test_the_summary_tells_rollouts_in_the_output_from_those_finished_as_rejected(run, workdir, teacher):
    """A rollout finished as rejected (no try left) is not "already there" in the output: each run's summary,
    "Nothing to do" and --dry-run say where the finished ones are."""
    (workdir / "rewards.py").write_text(ZERO_REWARDS)
    write_prompts(workdir, ["A", "B", "C"])
    teacher.script("C", answer("good"))
    gate = ("--rewards", "rewards.py", "--min-reward", "1")
    assert run(*gate, "-n", "1", tools="none").code == 0  # A: rejected, its one try spent
    second = run(*gate, "-n", "2", tools="none", subprocess=True)
    assert ("Done: 0 new rollouts written to train.jsonl (1 finished as rejected before, skipped)"
            in second.err)
    assert "Total: 0/2 rollouts in train.jsonl, 2 finished as rejected" in second.err
    third = run(*gate, tools="none", subprocess=True)  # C passes; A and B were rejected before
    assert "Done: 1 new rollout written to train.jsonl (2 finished as rejected before, skipped)" in third.err
    fourth = run(*gate, tools="none", subprocess=True)
    assert ("Nothing to do: all 3 rollouts are finished: 1 in train.jsonl, 2 finished as rejected (in "
            "train.rejected.jsonl; a higher --attempts tries them again).") in fourth.err
    dry = run(*gate, "--dry-run", tools="none", subprocess=True)
    assert "Dry run: 0 rollouts to run, 1 already in train.jsonl, 2 finished as rejected" in dry.err
    write_prompts(workdir, ["A", "B", "C", "D"])
    fifth = run(*gate, tools="none", subprocess=True)
    assert "(1 already there, 2 finished as rejected before, skipped)" in fifth.err
