"""Resume inside a rollout: a stopped run's rollouts pause between turns (<stem>.paused.jsonl) and the next
run goes on from their last saved turn, so no answer is paid twice. Killed, interrupted, out of credits or
capped, as users' runs are; the generator runs as a subprocess against the loopback teacher."""

from __future__ import annotations

import json
import random
import signal

import pytest
from conftest import read_jsonl, run_script, start_script, wait_for, write_prompts
from fake_teacher import FakeTeacher, Reply, answer, call_tools, status

TURNS = 6  # five turns calling a tool, then the answer


def six_turns(body: dict) -> Reply:
    """Every prompt: a tool call on each of the first five turns, then the answer; the same conversation
    always gets the same answers, so an interrupted run and an uninterrupted one send the same requests."""
    done = sum(1 for m in body["messages"] if m["role"] == "tool")
    question = body["messages"][0]["content"]
    if done < TURNS - 1:
        return call_tools(("add", {"a": done, "b": len(question)}))(body)
    return answer(f"{question}: done after {done} tools")(body)


@pytest.fixture
def turns_teacher():
    server = FakeTeacher(latency=0.02, default_step=six_turns).start()
    yield server
    server.stop()


def args(teacher: FakeTeacher, *extra: str) -> tuple[str, ...]:
    return ("prompts.jsonl", "--tools", "tools_small.py", "--base-url", teacher.base_url, "--backoff", "0.01",
            "-c", "4", *extra)


def answers(teacher: FakeTeacher) -> int:
    return sum(1 for body in teacher.requests if "_rejected" not in body)


def same_requests_for_the_same_turn(teacher: FakeTeacher) -> None:
    """Every request for a given prompt and turn is byte-identical, across all the runs."""
    seen: dict[tuple[str, int], str] = {}
    for body in teacher.requests:
        if "_rejected" in body:
            continue
        key = (body["messages"][0]["content"], len(body["messages"]))
        text = json.dumps(body, sort_keys=True)
        assert seen.setdefault(key, text) == text, f"turn {key} was sent differently after a resume"


def test_kill_9_at_random_points_then_a_clean_run_pays_each_answer_about_once(workdir, turns_teacher):
    teacher = turns_teacher
    prompts = [f"question {i}" for i in range(8)]
    write_prompts(workdir, prompts)
    rng = random.Random(20)
    kills, in_flight = 0, 0
    for _ in range(10):
        process = start_script(workdir, *args(teacher))
        target = len(teacher.requests) + rng.randint(2, 12)
        wait_for(lambda: len(teacher.requests) >= target or process.poll() is not None, what="requests")
        if process.poll() is not None:
            break
        in_flight += teacher.in_flight
        process.kill()
        process.wait()
        kills += 1
    result = run_script(workdir, *args(teacher))
    assert result.code == 0, result.err
    ids = [r["metadata"]["prompt_id"] for r in result.records()]
    assert len(ids) == len(set(ids)) == len(prompts)
    # the bound: prompts x (turns + 1) answers, plus what was in flight at each kill
    assert kills >= 5 and answers(teacher) <= len(prompts) * (TURNS + 1) + in_flight
    same_requests_for_the_same_turn(teacher)
    for record in result.records():
        assert record["metadata"]["turns"] == TURNS and record["metadata"]["usage"]["requests"] >= TURNS
    assert not (workdir / "train.paused.jsonl").exists()  # compacted away once every rollout settled


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_pauses_rollouts_between_turns_and_the_next_run_pays_no_answer_twice(workdir, turns_teacher, sig):
    teacher = turns_teacher
    write_prompts(workdir, [f"question {i}" for i in range(6)])
    process = start_script(workdir, *args(teacher))
    wait_for(lambda: len(teacher.requests) >= 10, what="some turns")
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Paused:" in err and "train.paused.jsonl" in err
    paused = read_jsonl(workdir / "train.paused.jsonl")
    assert paused and all(record["turns"] < TURNS for record in paused)
    before = answers(teacher)
    result = run_script(workdir, *args(teacher))
    assert result.code == 0, result.err
    assert len(result.records()) == 6
    assert answers(teacher) == 6 * TURNS  # every answer in flight at the signal was kept: none paid twice
    assert answers(teacher) - before < 6 * TURNS
    same_requests_for_the_same_turn(teacher)
    # a line's usage counts the turns its earlier run paid for
    assert all(record["metadata"]["usage"]["requests"] == TURNS for record in result.records())


def test_out_of_credits_mid_run_pauses_and_the_next_run_goes_on(workdir):
    calls = {"n": 0}

    def credits_run_out(body):
        calls["n"] += 1
        if calls["n"] == 9:
            return status(402, "Insufficient credits")(body)
        return six_turns(body)

    teacher = FakeTeacher(latency=0.02, default_step=credits_run_out).start()
    try:
        write_prompts(workdir, [f"question {i}" for i in range(3)])
        stopped = run_script(workdir, *args(teacher))
        assert stopped.code == 1 and "out of credits" in stopped.err and "Paused:" in stopped.err
        assert not read_jsonl(workdir / "train.failed.jsonl")  # paused, not failed
        result = run_script(workdir, *args(teacher))
    finally:
        teacher.stop()
    assert result.code == 0, result.err
    assert len(result.records()) == 3
    assert answers(teacher) - 1 <= 3 * TURNS + 4  # the 402 and at most what was in flight when it came


def test_the_spend_cap_stops_between_turns_and_a_rerun_finishes_without_paying_twice(workdir, turns_teacher):
    teacher = turns_teacher  # every answer costs $0.001
    write_prompts(workdir, [f"question {i}" for i in range(10)])
    capped = run_script(workdir, *args(teacher, "--max-cost", "0.01"))
    assert capped.code == 1 and "Paused:" in capped.err
    spent = answers(teacher) * 0.001
    assert spent <= 0.01 + 4 * 0.001 + 1e-9  # the cap, plus what was in flight when it was reached
    result = run_script(workdir, *args(teacher))
    assert result.code == 0, result.err
    assert len(result.records()) == 10 and answers(teacher) == 10 * TURNS


def test_a_changed_model_begins_saved_rollouts_again_and_says_so(workdir, turns_teacher):
    teacher = turns_teacher
    write_prompts(workdir, ["question 0"])
    process = start_script(workdir, *args(teacher))
    wait_for(lambda: len(teacher.requests) >= 3, what="some turns")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert read_jsonl(workdir / "train.paused.jsonl")
    result = run_script(workdir, *args(teacher, "-m", "another/model"))
    assert result.code == 0, result.err
    assert "Started over: 1 paused rollout" in result.err
    assert result.records()[0]["metadata"]["usage"]["requests"] == TURNS


@pytest.mark.parametrize("line", ['{"prompt_id": "x", "sample": 0, "attempt": 1, "turns": "many"}', "not json",
                                  '{"prompt_id": 7}', '{"messages": [1, 2]}'])
def test_a_hand_broken_paused_file_is_read_around(workdir, turns_teacher, line):
    teacher = turns_teacher
    write_prompts(workdir, ["question 0"])
    (workdir / "train.paused.jsonl").write_text(line + "\n")
    result = run_script(workdir, *args(teacher))
    assert result.code == 0, result.err and len(result.records()) == 1


def test_a_full_disk_pauses_rollouts_and_the_run_after_freeing_space_goes_on(workdir, turns_teacher):
    import subprocess
    import sys

    from conftest import SCRIPT, subprocess_env

    teacher = turns_teacher
    prompts = [f"question {i}" for i in range(6)]
    write_prompts(workdir, prompts)
    # prlimit, not preexec_fn: a fork that runs Python code while the teacher's thread runs can deadlock
    full = subprocess.run(["prlimit", "--fsize=12000:12000", sys.executable, str(SCRIPT), *args(teacher)],
                          cwd=workdir, env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert full.returncode == 1 and "File too large" in full.stderr and "Traceback" not in full.stderr
    assert not read_jsonl(workdir / "train.failed.jsonl")  # stopped rollouts pause; none failed
    result = run_script(workdir, *args(teacher))
    assert result.code == 0, result.err
    assert sorted(r["messages"][0]["content"] for r in result.records()) == sorted(prompts)
    assert answers(teacher) <= len(prompts) * (TURNS + 1) + 4
    same_requests_for_the_same_turn(teacher)


SLOW_REWARDS = '''
import os, time
from rnow.core import RewardArgs, get_response, reward

@reward
def finished(args: RewardArgs, messages: list) -> float:
    """Slow while the file `slow` exists (the run is stopped meanwhile); says it began in `scoring`."""
    open("scoring", "w").close()
    while os.path.exists("slow"):
        time.sleep(0.05)
    return 1.0
'''


def routed(reply: Reply) -> Reply:
    reply.body["model"] = "routed/model"  # the model that answered, not the one asked for
    return reply


def test_a_final_answer_stopped_while_it_was_scored_settles_next_run_without_a_request(workdir, turns_teacher):
    teacher = turns_teacher
    teacher.default_step = lambda body: routed(six_turns(body))
    (workdir / "rewards.py").write_text(SLOW_REWARDS)
    (workdir / "slow").write_text("")
    write_prompts(workdir, ["question 0"])
    process = start_script(workdir, *args(teacher, "--rewards", "rewards.py"))
    wait_for(lambda: (workdir / "scoring").exists(), what="the final answer being scored")
    process.send_signal(signal.SIGINT)  # the first stops new requests; the reward still runs...
    seen = ""
    while "Stopping" not in seen:  # (read as it is printed: a second signal sent sooner would merge into it)
        seen += process.stderr.readline()
    process.send_signal(signal.SIGINT)  # ...the second stops at once
    _, err = process.communicate(timeout=60)
    err = seen + err
    assert process.returncode == 130 and "Paused: 1 rollout" in err
    saved = read_jsonl(workdir / "train.paused.jsonl")
    assert saved[-1]["messages"][-1]["role"] == "assistant", (len(saved), [r.get("turns") for r in saved], err)
    (workdir / "slow").unlink()
    before = answers(teacher)
    result = run_script(workdir, *args(teacher, "--rewards", "rewards.py"))
    assert result.code == 0, result.err
    assert answers(teacher) == before == TURNS  # settled from its saved final answer, no request
    assert result.records()[0]["metadata"]["reward"] == 1.0
    assert result.records()[0]["metadata"]["model"] == "routed/model"  # kept with the saved turns


def test_a_paused_rollout_resumed_with_fewer_max_turns_ends_incomplete_not_as_a_bug(workdir, turns_teacher):
    teacher = turns_teacher
    write_prompts(workdir, ["question 0"])
    process = start_script(workdir, *args(teacher))
    wait_for(lambda: answers(teacher) >= 4, what="some turns")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    saved = read_jsonl(workdir / "train.paused.jsonl")[-1]["turns"]
    result = run_script(workdir, *args(teacher, "--max-turns", str(saved)))
    assert result.code == 1 and "internal error" not in result.err
    assert "saved turns reach --max-turns" in read_jsonl(workdir / "train.failed.jsonl")[0]["reason"]
