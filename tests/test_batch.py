"""The Batch API (--batch): every request of a run through OpenRouter's batches, tool rollouts advancing in
waves. The loopback teacher speaks the batch endpoint (validating, in progress, completed after a delay;
expired and failed batches; per-request errors; billing at half the price); the generator runs as users run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import read_jsonl, run_script, start_script, wait_for, write_prompts
from fake_teacher import FakeTeacher, Reply, completion, status

TURNS = 6


def deterministic_turns(body: dict) -> Reply:
    """Five tool calls, then the answer; ids and texts follow from the conversation alone, so a live run and a
    batch run of it write the same lines."""
    done = sum(1 for m in body["messages"] if m["role"] == "tool")
    question = next(m["content"] for m in body["messages"] if m["role"] == "user")
    if done < TURNS - 1 and "tools" in body:  # without tools: a single-turn answer
        call = {"id": f"call_{done}", "type": "function",
                "function": {"name": "add", "arguments": json.dumps({"a": done, "b": len(question)})}}
        return Reply(body=completion({"content": None, "tool_calls": [call]}, "tool_calls"))
    return Reply(body=completion({"content": f"{question}: {done} tools"}))


@pytest.fixture
def batch_teacher():
    server = FakeTeacher(default_step=deterministic_turns).start()
    yield server
    server.stop()


def batch_run(workdir, teacher, *extra: str, tools: str = "tools_small.py"):
    return run_script(workdir, "prompts.jsonl", "--tools", tools, "--base-url", teacher.base_url, "--backoff", "0.01",
                      "--batch", "--batch-poll", "0.05", *extra)


def without_costs(path) -> list[dict]:
    lines = read_jsonl(path)
    for line in lines:
        del line["metadata"]["usage"]["cost"]
    return sorted(lines, key=lambda line: line["metadata"]["prompt_id"])


def answers_billed(teacher: FakeTeacher) -> int:
    return sum(len(b["results"] or ()) for b in teacher.batches.values())


@pytest.mark.parametrize("tools", ["tools_small.py", "none"])
def test_rollouts_through_batches_write_the_dataset_a_live_run_writes_at_half_the_cost(workdir, tmp_path_factory,
                                                                                       batch_teacher, tools):
    prompts = [f"question {i}" for i in range(7)]
    live_dir = tmp_path_factory.mktemp("live")
    (live_dir / "tools_small.py").write_text((workdir / "tools_small.py").read_text())
    write_prompts(live_dir, prompts)
    live = run_script(live_dir, "prompts.jsonl", "--tools", tools, "--base-url", batch_teacher.base_url)
    assert live.code == 0, live.err
    live_requests = len(batch_teacher.requests)

    write_prompts(workdir, prompts)
    batched = batch_run(workdir, batch_teacher, tools=tools)
    assert batched.code == 0, batched.err
    turns = TURNS if tools != "none" else 1
    assert len(batch_teacher.requests) - live_requests == len(prompts) * turns == answers_billed(batch_teacher)
    assert len(batch_teacher.batches) == turns  # one wave a turn: every rollout's next turn in one batch
    assert without_costs(workdir / "train.jsonl") == without_costs(live_dir / "train.jsonl")
    live_cost = sum(r["metadata"]["usage"]["cost"] for r in read_jsonl(live_dir / "train.jsonl"))
    batch_cost = sum(r["metadata"]["usage"]["cost"] for r in read_jsonl(workdir / "train.jsonl"))
    assert batch_cost == pytest.approx(live_cost / 2)
    assert f"Batches: {turns} ({len(prompts) * turns} requests sent by this run, 0 of them again" in batched.err
    assert not (workdir / "train.batches.jsonl").exists()  # all done: nothing left to pick up
    assert all("stream" not in body for body in batch_teacher.requests[live_requests:])


def test_kill_9_while_waiting_on_a_batch_then_the_rerun_pays_nothing_twice(workdir, batch_teacher):
    prompts = [f"question {i}" for i in range(5)]
    write_prompts(workdir, prompts)
    batch_teacher.batch_latency = 3600.0  # the first batch takes its time
    process = start_script(workdir, "prompts.jsonl", "--tools", "tools_small.py", "--base-url",
                           batch_teacher.base_url, "--batch", "--batch-poll", "0.05")
    wait_for(lambda: batch_teacher.batch_looks >= 2, what="the run waiting on its batch")
    process.kill()
    process.wait()
    recorded = read_jsonl(workdir / "train.batches.jsonl")
    assert [r["batch"] for r in recorded] == ["batch_1"] and len(recorded[0]["custom_ids"]) == len(prompts)
    batch_teacher.batch_latency = 0.1  # it completes while no run is there
    result = batch_run(workdir, batch_teacher)
    assert result.code == 0, result.err
    assert len(result.records()) == len(prompts)
    assert answers_billed(batch_teacher) == len(prompts) * TURNS  # every answer paid once
    assert len(batch_teacher.batches) == TURNS  # the first wave was the killed run's batch, picked up
    assert "Batches: 6 (25 requests sent by this run" in result.err  # the picked-up one is counted, not sent


def test_ctrl_c_does_not_wait_for_a_batch_and_the_next_run_picks_it_up(workdir, batch_teacher):
    write_prompts(workdir, ["question 0", "question 1"])
    batch_teacher.batch_latency = 3600.0
    process = start_script(workdir, "prompts.jsonl", "--tools", "tools_small.py", "--base-url",
                           batch_teacher.base_url, "--batch", "--batch-poll", "0.05")
    wait_for(lambda: batch_teacher.batch_looks >= 2, what="the run waiting on its batch")
    process.send_signal(2)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "Batches in progress: 1 (2 requests)" in err and "sends none of them again" in err
    batch_teacher.batch_latency = 0.1
    result = batch_run(workdir, batch_teacher)
    assert result.code == 0 and answers_billed(batch_teacher) == 2 * TURNS, result.err


def test_an_expired_batch_sends_its_requests_again_in_a_new_one(workdir, batch_teacher):
    write_prompts(workdir, [f"question {i}" for i in range(3)])
    batch_teacher.batch_fates = ["completed", "expired", "failed"]  # the second and third waves' first tries
    result = batch_run(workdir, batch_teacher)
    assert result.code == 0, result.err
    assert len(result.records()) == 3 and answers_billed(batch_teacher) == 3 * TURNS
    assert len(batch_teacher.batches) == TURNS + 2
    assert "6 of them again after a batch expired or failed" in result.err


def test_each_requests_error_in_a_batch_is_judged_as_the_live_api_would(workdir, batch_teacher):
    write_prompts(workdir, ["transient", "refused", "fine"])
    batch_teacher.script("transient", status(503, "overloaded"), lambda body: Reply(body=completion({"content": "ok"})))
    batch_teacher.script("refused", status(400, "this prompt is refused"))
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1, result.err
    assert sorted(r["messages"][0]["content"] for r in result.records()) == ["fine", "transient"]
    [failed] = read_jsonl(workdir / "train.failed.jsonl")
    assert failed["kind"] == "HTTP 400" and "this prompt is refused" in failed["reason"]
    assert len(batch_teacher.batches) == 2  # the 503 went again, in the next batch


def test_out_of_credits_in_a_batch_stops_the_run_as_live(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    batch_teacher.script("q0", status(402, "Insufficient credits"))
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1 and "out of credits" in result.err


def test_max_cost_counts_the_batches_sent_and_stops_before_the_next_wave(workdir, batch_teacher):
    prompts = [f"question {i}" for i in range(10)]
    write_prompts(workdir, prompts)
    # an answer costs $0.0005 in a batch: a wave of 10 is $0.005; after two, the third would pass $0.012
    result = batch_run(workdir, batch_teacher, "--max-cost", "0.012")
    assert result.code == 1, result.err
    assert "spend cap was reached" in result.err and len(batch_teacher.batches) == 2
    assert answers_billed(batch_teacher) == 20
    again = batch_run(workdir, batch_teacher)
    assert again.code == 0, again.err
    assert answers_billed(batch_teacher) == len(prompts) * TURNS  # the paid turns were saved and not sent again


@pytest.mark.parametrize("extra, said", [
    (["--base-url", "http://127.0.0.1:9/api"], "--batch needs a Batch API beside the base URL's /v1"),
    (["--extra-body", '{"models": ["a/b", "c/d"]}'], "`models` cannot go in a batch"),
])
def test_what_a_batch_cannot_carry_is_refused_at_the_start(workdir, batch_teacher, extra, said):
    write_prompts(workdir, ["q"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                        "--batch", *extra)
    assert result.code == 2 and said in result.err and "Traceback" not in result.err
    assert not batch_teacher.requests and not batch_teacher.batches


def test_a_prompt_with_an_image_is_refused_at_the_start_naming_its_line(workdir, batch_teacher):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    write_prompts(workdir, ["fine", {"messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, image]}]}])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url, "--batch")
    assert result.code == 2 and "prompts.jsonl:2: has a part of type image_url" in result.err, result.err
    assert not batch_teacher.batches and not (workdir / "train.jsonl").exists()


def test_dry_run_says_how_batches_go_and_that_caching_needs_an_hour(workdir, batch_teacher):
    write_prompts(workdir, ["q"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url, "--batch",
                        "--cache", "on", "--dry-run")
    assert result.code == 0, result.err
    assert "/api/beta/batches in batches of up to 1000" in result.err and "up to 24 h a turn" in result.err
    assert "not asked for in batch mode" in result.err and '"stream"' not in result.out
    hour = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url, "--batch",
                      "--cache", "on", "--cache-ttl", "1h", "--dry-run")
    assert '"ttl": "1h"' in hour.out


def test_a_batch_completed_with_results_of_every_wrong_shape_sends_its_requests_again(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    batch_teacher.batch_fates = ["garbage"]
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0, result.err
    assert len(result.records()) == 2 and len(batch_teacher.batches) == 2 and answers_billed(batch_teacher) == 2
    assert "Traceback" not in result.err


YES_REWARDS = '''
from rnow.core import RewardArgs, get_response, reward

@reward
def says_yes(args: RewardArgs, messages: list) -> float:
    """1 when the answer says yes."""
    return 1.0 if "yes" in get_response(messages) else 0.0
'''


def test_samples_are_independent_requests_and_attempts_go_in_the_next_batch(workdir, batch_teacher):
    (workdir / "rewards.py").write_text(YES_REWARDS)
    write_prompts(workdir, ["sampled", "gated"])
    batch_teacher.script("sampled", *[lambda body: Reply(body=completion({"content": "yes, sampled"}))] * 2)
    batch_teacher.script("gated", lambda body: Reply(body=completion({"content": "no"})),
                         lambda body: Reply(body=completion({"content": "yes, on the second try"})))
    result = batch_run(workdir, batch_teacher, "--rewards", "rewards.py", "--min-reward", "1", "--attempts", "2",
                       tools="none")
    assert result.code == 0, result.err
    assert sorted(r["messages"][-1]["content"] for r in result.records()) == ["yes, on the second try", "yes, sampled"]
    assert len(read_jsonl(workdir / "train.rejected.jsonl")) == 1
    samples = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url, "--batch",
                         "--batch-poll", "0.05", "--samples", "2", "-o", "samples.jsonl")
    assert samples.code == 0, samples.err
    assert sorted(r["metadata"]["sample"] for r in read_jsonl(workdir / "samples.jsonl")) == [0, 0, 1, 1]
    last = list(batch_teacher.batches.values())[-1]
    assert len({r["custom_id"] for r in last["requests"]}) == 4  # the same body twice is two requests


def test_progress_shows_the_batches_in_progress_instead_of_a_request_limit():
    import generate_distillation_data as gdd

    queue = gdd.BatchQueue(gdd.TeacherSettings(secret=gdd._Secret(None), base_url="http://127.0.0.1:9/api/v1"),
                           "m", 10, Path("unused.batches.jsonl"), None)
    queue.batches["b1"] = gdd._Batch("b1", ["x", "y", "z"], status="in_progress", counts={"total": 3, "completed": 1})
    queue.queued["w"] = b"{}"
    progress = gdd.Progress(3, 0, gdd.Stats(), gdd.AdaptiveLimiter(4), queue.status)
    assert progress.status().startswith("batches: 1 in progress (in_progress 1/3), 1 queued, retries 0")
    assert queue.pending_requests == 4
    assert gdd.Progress(3, 0, gdd.Stats(), gdd.AdaptiveLimiter(4)).status().startswith("limit 4")


def test_answers_without_a_cost_get_their_share_of_the_batchs_by_tokens(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1", "q2"])
    batch_teacher.batch_costs_per_answer = False  # only the batch's usage.cost: $0.0015 for three equal answers
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0, result.err
    assert [r["metadata"]["usage"]["cost"] for r in result.records()] == [pytest.approx(0.0005)] * 3
    assert "billed $0.0015" in result.err
