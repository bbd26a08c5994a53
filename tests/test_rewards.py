"""The quality gate: rnow rewards files score every finished rollout; --min-reward sends low scores to the
rejected file; --attempts samples until one passes; all against the loopback teacher."""

from __future__ import annotations

import shutil
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
import rnow.core.reward  # noqa: F401  (imported for its side effect: the module is registered)

from conftest import (
    count_lines,
    read_jsonl,
    run_script,
    start_script,
    subprocess_env,
    wait_for,
    write_prompts,
)
from fake_teacher import answer, call_tools, slow
from test_tools import without_rnow

import generate_distillation_data as gdd

rnow_reward = sys.modules["rnow.core.reward"]


TEMPLATES = Path(rnow_reward.__file__).resolve().parent.parent / "templates"


SAYS_42 = '''
from rnow.core import RewardArgs, get_response, reward

@reward
def says_42(args: RewardArgs, messages: list) -> float:
    """1 when the final answer holds the expected answer."""
    return 1.0 if args.metadata.get("expected_answer", "42") in get_response(messages) else 0.0
'''


def gate(run, *args: str, rewards: str = "rewards.py", tools: str = "none", env: dict | None = None):
    return run("--rewards", rewards, *args, tools=tools, subprocess=True, env=subprocess_env(**(env or {})))


def test_every_finished_rollout_is_scored_and_low_ones_rejected(run, workdir, teacher):
    (workdir / "rewards.py").write_text(SAYS_42)
    write_prompts(workdir, [{"prompt": "right", "metadata": {"expected_answer": "42"}},
                            {"prompt": "wrong", "metadata": {"expected_answer": "42"}}])
    teacher.script("right", answer("It is 42."))
    teacher.script("wrong", answer("It is 41."))
    result = gate(run, "--min-reward", "1")
    assert result.code == 0, result.err
    [kept] = read_jsonl(workdir / "train.jsonl")
    [rejected] = read_jsonl(workdir / "train.rejected.jsonl")
    assert kept["metadata"]["rewards"] == {"says_42": 1.0} and kept["metadata"]["reward"] == 1.0
    assert rejected["metadata"]["reward"] == 0.0 and rejected["messages"][-1]["content"] == "It is 41."
    assert "passed --min-reward 1: 1/2 on the first try" in result.err
    # finished work: a re-run pays for neither
    sent = len(teacher.requests)
    again = gate(run, "--min-reward", "1")
    assert again.code == 0 and len(teacher.requests) == sent and "Nothing to do" in again.err


def test_attempts_until_one_passes_exactly_three_paid(run, workdir, teacher):
    (workdir / "rewards.py").write_text(SAYS_42)
    write_prompts(workdir, ["hard", "easy"])
    teacher.script("hard", answer("40"), answer("41"), answer("42"), answer("never asked"))
    teacher.script("easy", answer("42"))
    result = gate(run, "--min-reward", "1", "--attempts", "5")
    assert result.code == 0, result.err
    assert len(teacher.requests_for("hard")) == 3 and len(teacher.requests_for("easy")) == 1
    output, rejected = read_jsonl(workdir / "train.jsonl"), read_jsonl(workdir / "train.rejected.jsonl")
    assert (sorted((r["messages"][0]["content"], r["metadata"]["attempt"]) for r in output)
            == [("easy", 1), ("hard", 3)])
    assert ([(r["messages"][-1]["content"], r["metadata"]["attempt"]) for r in rejected]
            == [("40", 1), ("41", 2)])
    assert "2/2 overall" in result.err and "1/2 on the first try" in result.err


def test_attempts_all_rejected_finish_the_prompt(run, workdir, teacher):
    (workdir / "rewards.py").write_text(SAYS_42)
    write_prompts(workdir, ["impossible"])
    teacher.script("impossible", answer("1"), answer("2"), answer("3"))
    result = gate(run, "--min-reward", "1", "--attempts", "2", "--samples", "1")
    assert result.code == 0, result.err
    assert count_lines(workdir / "train.jsonl") == 0 and count_lines(workdir / "train.rejected.jsonl") == 2
    assert "finished as rejected" in result.err
    sent = len(teacher.requests)
    assert gate(run, "--min-reward", "1", "--attempts", "2").code == 0 and len(teacher.requests) == sent
    # a larger budget later gives the prompt one more try, counting the two spent
    teacher.script("impossible", answer("42"))
    assert gate(run, "--min-reward", "1", "--attempts", "3").code == 0
    assert (len(teacher.requests) == sent + 1
            and read_jsonl(workdir / "train.jsonl")[0]["metadata"]["attempt"] == 3)


def test_kill_9_between_attempts_resumes_with_the_tries_spent(workdir, teacher):
    (workdir / "rewards.py").write_text(SAYS_42)
    write_prompts(workdir, ["q"])
    teacher.script("q", answer("0"), slow(60, answer("never delivered")), answer("42"))
    args = ("prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url, "--rewards", "rewards.py",
            "--min-reward", "1", "--attempts", "4")
    process = start_script(workdir, *args)
    wait_for(lambda: len(teacher.requests_for("q")) == 2, what="the second try to be in flight")
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert count_lines(workdir / "train.rejected.jsonl") == 1
    result = run_script(workdir, *args)
    assert result.code == 0, result.err
    [line] = read_jsonl(workdir / "train.jsonl")
    assert line["metadata"]["attempt"] == 2  # the killed try sent a request but never finished: tried again
    assert len(read_jsonl(workdir / "train.rejected.jsonl")) == 1 and len(teacher.requests_for("q")) == 3


HOSTILE_REWARDS = '''
import asyncio, sys, threading
from rnow.core import RewardArgs, reward

@reward
def raises(args: RewardArgs, messages: list) -> float:
    """Raises."""
    raise ValueError("no expected answer")

@reward(timeout=1)
def hangs(args: RewardArgs, messages: list) -> float:
    """Never returns (a sync reward blocked for ever)."""
    threading.Event().wait()

@reward(timeout=1)
async def hangs_async(args: RewardArgs, messages: list) -> float:
    """Never returns, and swallows its cancellation."""
    while True:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass

@reward
def exits(args: RewardArgs, messages: list) -> float:
    """Calls sys.exit."""
    sys.exit(0)

@reward
def text(args: RewardArgs, messages: list) -> float:
    """Returns a string."""
    return "1.0"

@reward
def nan(args: RewardArgs, messages: list) -> float:
    """Returns NaN."""
    return float("nan")

@reward
def edits(args: RewardArgs, messages: list) -> float:
    """Edits what it was given."""
    messages.clear()
    args.metadata.clear()
    return 0.5

@reward
async def fine(args: RewardArgs, messages: list) -> float:
    """A good async reward."""
    return 2.0

@reward
def fraction(args: RewardArgs, messages: list) -> float:
    """A real number that is not a float: counted."""
    from fractions import Fraction
    return Fraction(1, 4)

@reward
def infinite(args: RewardArgs, messages: list) -> float:
    """Infinity: not counted."""
    return float("inf")
'''


def test_hostile_rewards_never_lose_a_rollout_or_stop_the_run(run, workdir, teacher):
    (workdir / "rewards.py").write_text(HOSTILE_REWARDS)
    write_prompts(workdir, [{"prompt": "a", "metadata": {"k": 1}}, "b"])
    result = gate(run, "--reward-timeout", "5")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    records = read_jsonl(workdir / "train.jsonl")
    assert len(records) == 2
    for record in records:
        m = record["metadata"]
        assert m["rewards"] == {"raises": 0.0, "hangs": 0.0, "hangs_async": 0.0, "exits": 0.0, "text": 0.0,
                                "nan": 0.0, "edits": 0.5, "fine": 2.0, "fraction": 0.25, "infinite": 0.0}
        assert m["reward"] == 2.75 and len(record["messages"]) == 2  # the edit changed nothing written
        errors = m["reward_errors"]
        assert errors["raises"] == "failed: ValueError: no expected answer"
        assert errors["hangs"] == errors["hangs_async"] == "timed out after 1 s"
        assert errors["exits"].startswith("failed: ToolExit: SystemExit")
        assert (errors["text"] == "returned '1.0', not a float"
                and errors["nan"] == "returned nan, not a float")
        assert errors["infinite"] == "returned inf, not a float" and "fraction" not in errors
    assert records[0]["metadata"].get("k", 1) == 1


HUGE_REWARDS = '''
from rnow.core import RewardArgs, reward

@reward
def huge(args: RewardArgs, messages: list) -> float:
    """An integer too large for a float."""
    return 10**400

@reward
def big(args: RewardArgs, messages: list) -> float:
    """Finite alone; the sum of two is not."""
    return 1e308

@reward
def bigger(args: RewardArgs, messages: list) -> float:
    return 1e308
'''


def test_a_reward_of_10_to_the_400_is_named_and_its_paid_answers_are_never_lost(run, workdir, teacher):
    (workdir / "rewards.py").write_text(HUGE_REWARDS)
    write_prompts(workdir, ["two paid answers"])
    teacher.script("two paid answers", call_tools(("add", {"a": 1, "b": 2})), answer("3"))
    result = gate(run, "--min-reward", "0.5", tools="tools_small.py")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err and len(teacher.requests) == 2
    [line] = read_jsonl(workdir / "train.rejected.jsonl")  # scored 0: below the gate, but kept, not lost
    m = line["metadata"]
    assert m["rewards"] == {"huge": 0.0, "big": 1e308, "bigger": 1e308} and m["reward"] == 0.0
    assert (m["reward_errors"]["huge"].startswith("returned 1000")
            and m["reward_errors"]["huge"].endswith("not a float"))
    assert "too large for a float" in m["reward_errors"]["(total)"]
    again = gate(run, "--min-reward", "0.5", tools="tools_small.py")
    assert again.code == 0 and len(teacher.requests) == 2  # finished: nothing is bought again
    rescored = gate(run, "--min-reward", "0.5", "--rescore", tools="tools_small.py")
    assert rescored.code == 0 and "Traceback" not in rescored.err, rescored.err


def test_precondition_at_zero_makes_the_total_zero(run, workdir, teacher):
    (workdir / "rewards.py").write_text(textwrap.dedent('''
        from rnow.core import RewardArgs, reward

        @reward(precondition=True)
        def used_a_tool(args: RewardArgs, messages: list) -> float:
            """Gate."""
            return 1.0 if any(m["role"] == "tool" for m in messages) else 0.0

        @reward
        def length(args: RewardArgs, messages: list) -> float:
            """Something positive."""
            return 0.25
    '''))
    write_prompts(workdir, ["tool", "plain"])
    teacher.script("tool", call_tools(("add", {"a": 1, "b": 2})), answer("3"))
    result = gate(run, tools="tools_small.py")
    assert result.code == 0, result.err
    totals = {r["messages"][0]["content"]: r["metadata"]["reward"]
              for r in read_jsonl(workdir / "train.jsonl")}
    assert totals == {"tool": 1.25, "plain": 0.0}


TEMPLATE_CASES = {  # template: (metadata, answer, expected total)
    "tutorial-reward": ({"expected_answer": "4"}, "\\boxed{4}", 0.0),  # its body is `pass`: returns None
    "tutorial-tool": ({"expected_answer": "4"}, "\\boxed{4}", None),
    "rl-tools": ({"expected_answer": "Paris"}, "Final Answer: Paris", 1.0),
    "mcp-tavily": ({"expected_answer": "Paris"}, "Final Answer: Pariss", 1.0),  # jaro-winkler > 0.9
    "rl-browser": ({"expected_answer": "Paris"}, "Final Answer: Paris", 0.0),  # gate: no browser_ tool used
    "rl-single": ({"expected_answer": "42"}, "So $\\boxed{42}$", 1.0),  # async, math-verify
}


@pytest.mark.parametrize("rnow_installed", [True, False], ids=["rnow", "stand-in"])
@pytest.mark.parametrize("template", list(TEMPLATE_CASES))
def test_rnow_template_rewards_load_and_run_as_they_are(workdir, teacher, template, rnow_installed):
    shutil.copy(TEMPLATES / template / "rewards.py", workdir / "rewards.py")
    metadata, text, expected = TEMPLATE_CASES[template]
    write_prompts(workdir, [{"prompt": "q", "metadata": metadata}])
    teacher.script("q", answer(text))
    args = ("prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url, "--rewards", "rewards.py")
    result = run_script(workdir, *args) if rnow_installed else without_rnow(workdir, *args)
    assert result.code == 0, result.err
    [record] = read_jsonl(workdir / "train.jsonl")
    if expected is not None:
        assert record["metadata"]["reward"] == expected, record["metadata"]


REWARD_SIGNATURES = {
    "three parameters": "def r(args: RewardArgs, messages: list, extra: int) -> float:",
    "no hint on args": "def r(args, messages: list) -> float:",
    "args is a dict": "def r(args: dict, messages: list) -> float:",
    "no hint on messages": "def r(args: RewardArgs, messages) -> float:",
    "messages is a str": "def r(args: RewardArgs, messages: str) -> float:",
    "List[dict] is fine": "def r(args: RewardArgs, messages: List[dict]) -> float:",
    "no return type": "def r(args: RewardArgs, messages: list):",
    "returns int": "def r(args: RewardArgs, messages: list) -> int:",
    "async is fine": "async def r(args: RewardArgs, messages: list) -> float:",
}


def reward_verdict(decorate: Callable, signature: str) -> str:
    from typing import List

    namespace: dict[str, Any] = {"RewardArgs": sys.modules["rnow.models"].RewardArgs, "List": List}
    exec(f'{signature}\n    """Doc."""\n    return 1.0\n', namespace)
    try:
        decorate(namespace["r"])
    except TypeError as e:
        return str(e)
    return "ok"


@pytest.mark.parametrize("case", list(REWARD_SIGNATURES))
def test_stand_in_reward_decorator_says_what_rnow_says(case):
    rnow_reward.clear_reward_registry()
    assert reward_verdict(gdd._rnow_reward_decorator, REWARD_SIGNATURES[case]) == \
        reward_verdict(rnow_reward.reward, REWARD_SIGNATURES[case])


@pytest.mark.parametrize("rnow_installed", [True, False], ids=["rnow", "stand-in"])
def test_bad_rewards_file_stops_at_start_naming_the_line(workdir, teacher, rnow_installed):
    (workdir / "rewards.py").write_text("from rnow.core import RewardArgs, reward\n\n@reward\n"
                                        "def r(args: RewardArgs, messages: list) -> int:\n    return 1\n")
    write_prompts(workdir, ["q"])
    args = ("prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url, "--rewards", "rewards.py")
    result = run_script(workdir, *args) if rnow_installed else without_rnow(workdir, *args)
    assert result.code == 2 and "rewards.py:3:" in result.err and "must return 'float'" in result.err
    assert "Traceback" not in result.err and not teacher.requests


@pytest.mark.parametrize("args, message", [
    (("--attempts", "3", "--min-reward", "1"), "--min-reward needs --rewards"),
    (("--rewards", "rewards.py", "--attempts", "3"), "--attempts needs --min-reward"),
    (("--rewards", "missing.py"), "rewards file missing.py not found"),
    (("--rewards", "empty.py"), "no @reward functions found"),
    (("--rewards", "rewards.py", "--min-reward", "nan"), "expected a finite number"),
    (("--rewards", "rewards.py", "--rescore", "--dry-run"), "--rescore already sends nothing"),
])
def test_gate_usage_errors(run, workdir, teacher, args, message):
    (workdir / "rewards.py").write_text(SAYS_42)
    (workdir / "empty.py").write_text("x = 1\n")
    write_prompts(workdir, ["q"])
    result = run(*args, tools="none", subprocess=True)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err, result.err
    assert not teacher.requests


def test_rescore_moves_lines_both_ways_and_sends_nothing(run, workdir, teacher):
    (workdir / "rewards.py").write_text(SAYS_42)
    write_prompts(workdir, [{"prompt": p, "metadata": {"expected_answer": "42"}} for p in ("a", "b", "c")])
    teacher.script("a", answer("42 and 7"))  # passes now; fails once 7 is expected
    teacher.script("b", answer("7"), answer("42"))  # rejected first, then passes; once 7 is expected the
    teacher.script("c", answer("7"), answer("8"))  # rejected try passes and the accepted one fails
    assert gate(run, "--min-reward", "1", "--attempts", "2").code == 0
    assert sorted(r["messages"][0]["content"] for r in read_jsonl(workdir / "train.jsonl")) == ["a", "b"]
    sent = len(teacher.requests)
    (workdir / "rewards.py").write_text(SAYS_42.replace('"42"', '"7"').replace("args.metadata.get", "{}.get"))
    # no key, no base URL: nothing is sent
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--rewards", "rewards.py",
                        "--min-reward", "1", "--rescore", env=subprocess_env())
    assert result.code == 0, result.err
    assert len(teacher.requests) == sent and "Nothing was sent" in result.err
    output = {r["messages"][0]["content"]: r["messages"][-1]["content"]
              for r in read_jsonl(workdir / "train.jsonl")}
    rejected = sorted((r["messages"][0]["content"], r["messages"][-1]["content"])
                      for r in read_jsonl(workdir / "train.rejected.jsonl"))
    assert output == {"a": "42 and 7", "b": "7", "c": "7"}
    assert rejected == [("b", "42"), ("c", "8")]
    assert all(r["metadata"]["reward"] == 1.0 for r in read_jsonl(workdir / "train.jsonl"))
    assert "moved 1 to train.rejected.jsonl and 2 to train.jsonl" in result.err
    # without --min-reward: scores are updated, nothing moves
    again = run_script(workdir, "prompts.jsonl", "--tools", "none", "--rewards", "rewards.py", "--rescore",
                       env=subprocess_env())
    assert again.code == 0 and "moved 0 to train.rejected.jsonl and 0 to train.jsonl" in again.err


def test_max_cost_stops_within_one_wave_of_the_cap_and_resumes(workdir, teacher):
    # each answer costs $0.001 (the teacher's usage.cost)
    write_prompts(workdir, [f"q{i}" for i in range(60)])
    args = ("prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url, "-c", "4",
            "--max-cost", "0.01")
    result = run_script(workdir, *args)
    assert result.code == 1, result.err
    paid = len(teacher.requests)
    assert 10 - 4 <= paid <= 10 + 4, paid  # the cap, within one wave of requests (4 in flight)
    assert count_lines(workdir / "train.jsonl") == paid  # what was paid for is written
    assert "the spend cap was reached" in result.err and "--max-cost 0.01" in result.err
    assert "re-run the same command to continue" in result.err
    rest = run_script(workdir, *args[:-2])
    assert rest.code == 0 and count_lines(workdir / "train.jsonl") == 60 and len(teacher.requests) == 60


def test_max_cost_says_it_cannot_apply_when_the_teacher_reports_no_cost(run, workdir, teacher):
    write_prompts(workdir, [f"q{i}" for i in range(8)])
    for i in range(8):
        teacher.script(f"q{i}", answer("ok", usage={"prompt_tokens": 10, "completion_tokens": 5}))
    result = run("--max-cost", "0.001", tools="none", subprocess=True)
    assert result.code == 0, result.err
    assert result.err.count("--max-cost cannot apply: the teacher reports no cost") == 1
    assert count_lines(workdir / "train.jsonl") == 8


def test_the_docs_rewards_example_scores_as_it_says(run, workdir, teacher):
    page = (Path(__file__).resolve().parent.parent / "docs" / "quality-and-cost.md").read_text()
    example = page[page.index("## Quality gate and spend"):].split("```python\n", 1)[1].split("```", 1)[0]
    (workdir / "rewards.py").write_text(example)
    (workdir / "page_tool.py").write_text(textwrap.dedent('''
        from rnow.core.tool import tool

        @tool
        def browse(url: str) -> str:
            """Open a page."""
            return "FDA: approved 2014-09-04 for advanced melanoma"
    '''))
    meta = {"expected_answer": "2014-09-04, advanced melanoma"}
    write_prompts(workdir, [{"prompt": "read", "metadata": meta}, {"prompt": "guess", "metadata": meta}])
    teacher.script("read", call_tools(("browse", {"url": "https://www.fda.gov/x"})),
                   answer("Approved 2014-09-04, for advanced melanoma."))
    teacher.script("guess", answer("Approved 2014-09-04, for advanced melanoma."))
    result = gate(run, "--min-reward", "1.5", tools="page_tool.py")
    assert result.code == 0, result.err
    [kept] = read_jsonl(workdir / "train.jsonl")
    [rejected] = read_jsonl(workdir / "train.rejected.jsonl")
    assert kept["metadata"]["rewards"] == {"read_a_page": 1.0, "expected_answer": 1.0}
    assert kept["metadata"]["reward"] == 2.0 and rejected["metadata"]["reward"] == 0.0  # the gate at 0


def test_attempts_apply_to_each_sample(run, workdir, teacher):
    (workdir / "rewards.py").write_text(SAYS_42)
    write_prompts(workdir, ["q"])
    teacher.script("q", answer("1"), answer("42"), answer("42"), answer("never asked"))
    result = gate(run, "--min-reward", "1", "--attempts", "2", "--samples", "2", "-c", "1")
    assert result.code == 0, result.err
    output = read_jsonl(workdir / "train.jsonl")
    assert sorted(r["metadata"]["sample"] for r in output) == [0, 1] and len(teacher.requests_for("q")) == 3
    assert len(read_jsonl(workdir / "train.rejected.jsonl")) == 1


def test_rewards_that_never_return_do_not_starve_the_others(run, workdir, teacher):
    (workdir / "rewards.py").write_text(textwrap.dedent('''
        import threading
        from rnow.core import RewardArgs, reward

        @reward(timeout=1)
        def stuck(args: RewardArgs, messages: list) -> float:
            """Never returns: its thread is lost for good."""
            threading.Event().wait()

        @reward
        def quick(args: RewardArgs, messages: list) -> float:
            """Returns at once."""
            return 1.0
    '''))
    write_prompts(workdir, [f"q{i}" for i in range(12)])
    result = gate(run, "-c", "12", "--reward-timeout", "30")
    assert result.code == 0, result.err
    records = read_jsonl(workdir / "train.jsonl")
    assert len(records) == 12 and all(r["metadata"]["rewards"] == {"stuck": 0.0, "quick": 1.0}
                                      for r in records)


def test_torn_last_line_of_the_rejected_file_is_cut_and_its_try_runs_again(run, workdir, teacher):
    (workdir / "rewards.py").write_text(SAYS_42)
    write_prompts(workdir, ["q", "r"])
    teacher.script("q", answer("1"), answer("42"))
    teacher.script("r", answer("42"))
    assert gate(run, "--min-reward", "1").code == 0
    rejected = workdir / "train.rejected.jsonl"
    whole = rejected.read_bytes()
    assert whole.count(b"\n") == 1
    rejected.write_bytes(whole[: len(whole) // 2])  # a crash in the middle of writing the only line
    result = gate(run, "--min-reward", "1")
    assert result.code == 0, result.err
    assert not rejected.exists() or rejected.read_bytes() == b""  # the torn piece is gone
    assert sorted(r["messages"][0]["content"] for r in read_jsonl(workdir / "train.jsonl")) == ["q", "r"]
    assert len(teacher.requests_for("q")) == 2


def test_rescore_keeps_lines_it_cannot_read_and_survives_a_reward_that_raises(run, workdir, teacher):
    (workdir / "rewards.py").write_text(SAYS_42)
    write_prompts(workdir, ["a", "b"])
    teacher.script("a", answer("42"))
    teacher.script("b", answer("42"))
    assert gate(run, "--min-reward", "1").code == 0
    with (workdir / "train.jsonl").open("a") as f:
        f.write('{"metadata": {"prompt_id": "edited by hand"\n')
    broken = SAYS_42.replace('return 1.0 if', 'raise RuntimeError("broken")\n    return 1.0 if')
    (workdir / "rewards.py").write_text(broken)
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--rewards", "rewards.py",
                        "--min-reward", "1", "--rescore", env=subprocess_env())
    assert result.code == 0 and "Traceback" not in result.err, result.err
    rejected = read_jsonl(workdir / "train.rejected.jsonl")
    assert (len(rejected) == 2
            and all(r["metadata"]["reward_errors"]["says_42"].startswith("failed: RuntimeError")
                    for r in rejected))
    assert (workdir / "train.jsonl").read_text() == '{"metadata": {"prompt_id": "edited by hand"\n'
