"""The Batch API (--batch): every request of a run through OpenRouter's batches, tool rollouts advancing in
waves. The loopback teacher speaks the batch endpoint (validating, in progress, completed after a delay;
expired and failed batches; per-request errors; billing at half the price); the generator runs as users run
it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import (
    SCRIPT,
    read_jsonl,
    run_script,
    secrets_used,
    start_script,
    subprocess_env,
    wait_for,
    write_prompts,
)
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
    # whatever a test made the service answer, no request went out in more batches than the bound
    assert max(server.batch_submissions.values(), default=0) <= 3, server.batch_submissions


def batch_run(workdir, teacher, *extra: str, tools: str = "tools_small.py"):
    return run_script(workdir, "prompts.jsonl", "--tools", tools, "--base-url", teacher.base_url,
                      "--backoff", "0.01", "--batch", "--batch-poll", "0.05", *extra)


def without_costs(path) -> list[dict]:
    lines = read_jsonl(path)
    for line in lines:
        del line["metadata"]["usage"]["cost"]
    return sorted(lines, key=lambda line: line["metadata"]["prompt_id"])


def answers_billed(teacher: FakeTeacher) -> int:
    return sum(len(b["results"] or ()) for b in teacher.batches.values())


def killed_while_waiting(workdir, teacher: FakeTeacher, *extra: str) -> None:
    """A --batch run killed (kill -9) while it waits on its first batch, which takes an hour."""
    teacher.batch_latency, looks = 3600.0, teacher.batch_looks
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                           "--batch", "--batch-poll", "0.05", *extra)
    wait_for(lambda: teacher.batch_looks > looks, what="the run waiting on its batch")
    process.kill()
    process.wait()


@pytest.mark.parametrize("tools", ["tools_small.py", "none"])
def test_rollouts_through_batches_write_the_dataset_a_live_run_writes_at_half_the_cost(workdir,
                                                                                       tmp_path_factory,
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
    sent_in_batches = len(batch_teacher.requests) - live_requests
    assert sent_in_batches == len(prompts) * turns == answers_billed(batch_teacher)
    assert len(batch_teacher.batches) == turns  # one wave a turn: every rollout's next turn in one batch
    assert without_costs(workdir / "train.jsonl") == without_costs(live_dir / "train.jsonl")
    live_cost = sum(r["metadata"]["usage"]["cost"] for r in read_jsonl(live_dir / "train.jsonl"))
    batch_cost = sum(r["metadata"]["usage"]["cost"] for r in read_jsonl(workdir / "train.jsonl"))
    assert batch_cost == pytest.approx(live_cost / 2)
    assert f"Batches: {turns} submitted by this run ({len(prompts) * turns} requests)." in batched.err
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
    # the records naming their batch (the file holds a line before each too)
    recorded = [r for r in read_jsonl(workdir / "train.batches.jsonl") if "batch" in r]
    assert [r["batch"] for r in recorded] == ["batch_1"] and len(recorded[0]["custom_ids"]) == len(prompts)
    batch_teacher.batch_latency = 0.1  # it completes while no run is there
    result = batch_run(workdir, batch_teacher)
    assert result.code == 0, result.err
    assert len(result.records()) == len(prompts)
    assert answers_billed(batch_teacher) == len(prompts) * TURNS  # every answer paid once
    assert len(batch_teacher.batches) == TURNS  # the first wave was the killed run's batch, picked up
    # the picked-up one is counted, not sent, and its answers billed once: by this run, which first read them
    assert "Batches: 5 submitted by this run (25 requests), 1 picked up from earlier runs" in result.err


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
    # the second and third waves' first tries
    batch_teacher.batch_fates = ["completed", "expired", "cancelled"]
    result = batch_run(workdir, batch_teacher)
    assert result.code == 0, result.err
    assert len(result.records()) == 3 and answers_billed(batch_teacher) == 3 * TURNS
    assert len(batch_teacher.batches) == TURNS + 2
    assert "6 of them sent again: 3 expired, 3 cancelled" in result.err


def test_each_requests_error_in_a_batch_is_judged_as_the_live_api_would(workdir, batch_teacher):
    write_prompts(workdir, ["transient", "refused", "fine"])
    batch_teacher.script("transient", status(503, "overloaded"),
                         lambda body: Reply(body=completion({"content": "ok"})))
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


def test_max_cost_with_no_price_listed_starts_small_and_never_passes_the_cap(workdir, batch_teacher):
    prompts = [f"question {i}" for i in range(10)]
    write_prompts(workdir, prompts)
    # an answer costs $0.0005 in a batch: 60 answers are $0.03, so a cap of $0.012 stops the run midway
    result = batch_run(workdir, batch_teacher, "--max-cost", "0.012")
    assert result.code == 1, result.err
    assert "no price for openai/gpt-4o-mini is listed" in result.err and "at most 4 requests" in result.err
    first = next(iter(batch_teacher.batches.values()))
    assert len(first["requests"]) == 4  # the small first batch; the next grow with the billed price
    billed = sum(b["cost"] for b in batch_teacher.batches.values())
    assert billed <= 0.012 and "spend cap was reached" in result.err
    assert f"Billed ${billed:.4f} by this run" in result.err and f"${billed:.4f} billed" in result.err
    again = batch_run(workdir, batch_teacher)
    assert again.code == 0, again.err
    # the paid turns were saved and not sent again
    assert answers_billed(batch_teacher) == len(prompts) * TURNS


def test_max_cost_sizes_the_first_batch_by_the_listed_batch_price(workdir, batch_teacher):
    """Before any answer is billed, the model's `:batch` entry in the models list prices the requests (their
    prompt bytes / 4, and --max-tokens for the answer): the first batch is as large as the cap allows."""
    batch_teacher.models = [{"id": "openai/gpt-4o-mini",
                             "pricing": {"prompt": "0.000002", "completion": "0.000002"}},
                            {"id": "openai/gpt-4o-mini:batch",
                             "pricing": {"prompt": "0.000001", "completion": "0.000001"}}]
    write_prompts(workdir, [f"question {i}" for i in range(10)])
    result = batch_run(workdir, batch_teacher, "--max-cost", "0.012", "--max-tokens", "1000")
    assert result.code == 1, result.err
    first = next(iter(batch_teacher.batches.values()))
    size = len(json.dumps(first["requests"][0]["body"])) / 4
    assert len(first["requests"]) == int(0.012 // ((size + 1000) * 0.000001))  # what fits at the listed price
    assert sum(b["cost"] for b in batch_teacher.batches.values()) <= 0.012
    assert any("models" in asked for asked in batch_teacher.models_asked)


@pytest.mark.parametrize("extra, said", [
    (["--extra-body", '{"models": ["a/b", "c/d"]}'], "`models` cannot go in a batch"),
    (["--extra-body", '{"stream": true}'], "`stream` cannot go in a batch"),
    (["--extra-body", '{"model": "other/model"}'], "`model` cannot go in a batch"),
])
def test_what_a_batch_cannot_carry_is_refused_at_the_start(workdir, batch_teacher, extra, said):
    write_prompts(workdir, ["q"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                        "--batch", *extra)
    assert result.code == 2 and said in result.err and "Traceback" not in result.err
    assert not batch_teacher.requests and not batch_teacher.batches


def test_a_prompt_with_an_image_is_refused_at_the_start_naming_its_line(workdir, batch_teacher):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "see"}, image]}]
    write_prompts(workdir, ["fine", {"messages": messages}])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                        "--batch")
    assert result.code == 2 and "prompts.jsonl:2: has a part of type image_url" in result.err, result.err
    assert not batch_teacher.batches and not (workdir / "train.jsonl").exists()


def test_dry_run_says_how_batches_go_and_that_caching_needs_an_hour(workdir, batch_teacher):
    write_prompts(workdir, ["q"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                        "--batch", "--cache", "on", "--dry-run")
    assert result.code == 0, result.err
    assert "/api/v1/batches (or, if it has none, " in result.err and "/api/beta/batches) in batches of up " \
        "to 1000 requests and 180 MB" in result.err and "up to 24 h a turn" in result.err
    assert "not asked for in batch mode" in result.err and '"stream"' not in result.out
    hour = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                      "--batch", "--cache", "on", "--cache-ttl", "1h", "--dry-run")
    assert '"ttl": "1h"' in hour.out


def test_a_batch_completed_with_results_of_every_wrong_shape_sends_its_requests_again(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    batch_teacher.batch_fates = ["garbage"]
    batch_teacher.batch_window = 1.0  # its results may still come until its window ends: then they go again
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0, result.err
    assert (len(result.records()) == 2 and len(batch_teacher.batches) == 2
            and answers_billed(batch_teacher) == 2)
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
    result = batch_run(workdir, batch_teacher, "--rewards", "rewards.py", "--min-reward", "1",
                       "--attempts", "2", tools="none")
    assert result.code == 0, result.err
    assert (sorted(r["messages"][-1]["content"] for r in result.records())
            == ["yes, on the second try", "yes, sampled"])
    assert len(read_jsonl(workdir / "train.rejected.jsonl")) == 1
    samples = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                         "--batch", "--batch-poll", "0.05", "--samples", "2", "-o", "samples.jsonl")
    assert samples.code == 0, samples.err
    assert sorted(r["metadata"]["sample"] for r in read_jsonl(workdir / "samples.jsonl")) == [0, 0, 1, 1]
    last = list(batch_teacher.batches.values())[-1]
    assert len({r["custom_id"] for r in last["requests"]}) == 4  # the same body twice is two requests


def test_progress_shows_the_batches_in_progress_instead_of_a_request_limit():
    import generate_distillation_data as gdd

    settings = gdd.TeacherSettings(secret=gdd._Secret(None), base_url="http://127.0.0.1:9/api/v1")
    record = gdd.BatchRecord(Path("unused.batches.jsonl"), None, print)
    queue = gdd.BatchQueue(settings, "m", 10, record, gdd.Stats(), None)
    queue.batches["b1"] = gdd.Batch("b1", "http://127.0.0.1:9/api/v1/batches", ["x", "y", "z"], [None] * 3,
                                    sent=0.0, status="in_progress", counts={"total": 3, "completed": 1})
    queue.queued["w"] = b"{}"
    progress = gdd.Progress(3, 0, gdd.Stats(), gdd.AdaptiveLimiter(4), queue.status)
    assert progress.status().startswith("batches: 1 in progress (in_progress 1/3), 1 queued, retries 0")
    assert queue.pending_requests == 4
    assert gdd.Progress(3, 0, gdd.Stats(), gdd.AdaptiveLimiter(4)).status().startswith("limit 4")


def test_answers_without_a_cost_get_their_share_of_the_batchs_by_tokens(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1", "q2"])
    # only the batch's usage.cost: $0.0015 for three equal answers
    batch_teacher.batch_costs_per_answer = False
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0, result.err
    assert [r["metadata"]["usage"]["cost"] for r in result.records()] == [pytest.approx(0.0005)] * 3
    assert "Billed $0.0015 by this run" in result.err


# -- the whole lifecycle: what a batch service may do (OpenRouter's docs) and what a busy one does ---------
# The bound: no request goes out in more than 3 batches a run, whatever the service answers.
MOST_SUBMISSIONS = 3


def submitted_within_the_bound(teacher: FakeTeacher) -> bool:
    return max(teacher.batch_submissions.values(), default=0) <= MOST_SUBMISSIONS


def test_batches_go_to_the_v1_path_and_fall_back_to_the_beta_one_once(workdir, batch_teacher):
    """The guide and the API reference say /api/v1/batches, the quickstart /api/beta/batches: the first is
    tried, and where it has none (404 or 405), the second, once; the run then stays there."""
    write_prompts(workdir, ["q0", "q1"])
    batch_teacher.batch_paths, batch_teacher.batch_path_refusal = {"beta"}, 405
    result = batch_run(workdir, batch_teacher)
    assert result.code == 0, result.err
    assert batch_teacher.batch_posts == ["/api/v1/batches"] + ["/api/beta/batches"] * TURNS
    assert answers_billed(batch_teacher) == 2 * TURNS


def test_a_teacher_without_a_batch_api_stops_the_run_saying_so(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    batch_teacher.batch_paths = set()
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1 and "the teacher has no Batch API (404 at" in result.err, result.err
    assert "Run without --batch" in result.err and "Traceback" not in result.err
    assert (batch_teacher.batch_posts == ["/api/v1/batches", "/api/beta/batches"]
            and not batch_teacher.requests)
    assert not read_jsonl(workdir / "train.failed.jsonl")  # nothing failed: it runs as soon as it can


def test_results_attached_a_moment_late_are_looked_for_again_not_bought_again(workdir, batch_teacher):
    write_prompts(workdir, [f"q{i}" for i in range(5)])
    # "completed", with no results inline or in pages, three looks running
    batch_teacher.batch_results_late = 3
    result = batch_run(workdir, batch_teacher)
    assert result.code == 0, result.err
    assert len(batch_teacher.batches) == TURNS and set(batch_teacher.batch_submissions.values()) == {1}
    assert answers_billed(batch_teacher) == 5 * TURNS


def test_results_past_the_first_page_are_read_every_page(workdir, batch_teacher):
    write_prompts(workdir, [f"q{i}" for i in range(6)])
    batch_teacher.batch_inline, batch_teacher.batch_page_size = 1, 2  # one result inline, pages of two
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0, result.err
    assert len(result.records()) == 6 and len(batch_teacher.batches) == 1
    assert set(batch_teacher.batch_submissions.values()) == {1}  # none bought again


def test_a_completed_batch_that_never_attaches_a_result_sends_it_again_once_its_window_ends(workdir,
                                                                                            batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    batch_teacher.batch_results_late, batch_teacher.batch_window = 10**6, 1.0
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1, result.err
    assert submitted_within_the_bound(batch_teacher) and len(batch_teacher.batches) == MOST_SUBMISSIONS
    failed = read_jsonl(workdir / "train.failed.jsonl")
    assert len(failed) == 2 and all("completed without a result" in f["reason"] for f in failed)
    assert "2 of them sent again: 2 completed without their results" not in result.err  # 4 went again, not 2
    assert "4 of them sent again: 4 completed without their results" in result.err


def test_a_failed_validation_fails_the_request_it_names_and_sends_the_rest_again(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1", "q2"])
    # "request <the first one's custom_id> is invalid: unknown parameter"
    batch_teacher.batch_fates = ["failed"]
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1, result.err
    assert "Batch batch_1 failed: request " in result.err and "is invalid: unknown parameter." in result.err
    [failed] = read_jsonl(workdir / "train.failed.jsonl")
    assert failed["kind"] == "HTTP 400" and "is invalid: unknown parameter" in failed["reason"]
    assert len(result.records()) == 2 and len(batch_teacher.batches) == 2
    assert "2 of them sent again: 2 failed" in result.err


def test_a_failed_validation_naming_no_request_goes_again_within_the_bound_then_fails_with_its_reason(
        workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    batch_teacher.batch_fates = ["failed"] * 10
    batch_teacher.batch_failure_reason = "Model openai/gpt-4o-mini has no batch endpoint"
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1, result.err
    assert len(batch_teacher.batches) == MOST_SUBMISSIONS and submitted_within_the_bound(batch_teacher)
    failed = read_jsonl(workdir / "train.failed.jsonl")
    assert [f["kind"] for f in failed] == ["batch failed"] * 2
    assert all("sent in 3 batches without an answer" in f["reason"] and "has no batch endpoint" in f["reason"]
               for f in failed)
    assert result.err.count("has no batch endpoint.") >= 1 and "Traceback" not in result.err


@pytest.mark.parametrize("fate", ["expired", "cancelled"])
def test_batches_that_end_unanswered_again_and_again_are_bounded(workdir, batch_teacher, fate):
    write_prompts(workdir, ["q0", "q1"])
    batch_teacher.batch_fates = [fate] * 20
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1 and len(batch_teacher.batches) == MOST_SUBMISSIONS, result.err
    assert all(f["kind"] == f"batch {fate}" for f in read_jsonl(workdir / "train.failed.jsonl"))
    assert f"4 of them sent again: 4 {fate}" in result.err


def test_an_expired_batch_keeps_the_answers_it_gave_and_sends_only_the_rest_again(workdir, batch_teacher):
    write_prompts(workdir, [f"q{i}" for i in range(4)])
    batch_teacher.batch_fates = ["expired-partial"]  # the first two requests answered before it expired
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0, result.err
    assert [len(b["requests"]) for b in batch_teacher.batches.values()] == [4, 2]
    assert answers_billed(batch_teacher) == 4


def test_a_404_just_after_the_submission_is_the_store_lagging_not_a_lost_batch(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    batch_teacher.batch_404_looks = 3
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0, result.err
    assert len(batch_teacher.batches) == 1 and set(batch_teacher.batch_submissions.values()) == {1}


def test_a_batch_the_service_no_longer_knows_ten_minutes_on_goes_again(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    killed_while_waiting(workdir, batch_teacher)
    [entry] = [r for r in read_jsonl(workdir / "train.batches.jsonl") if "batch" in r]
    entry["sent"] -= 3600  # submitted an hour ago, by its record
    (workdir / "train.batches.jsonl").write_text(json.dumps(entry) + "\n")
    batch_teacher.batches.clear()  # and the service has no such batch
    batch_teacher.batch_latency = 0.1
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0, result.err
    assert ("2 of them sent again: 2 gone" in result.err
            and set(batch_teacher.batch_submissions.values()) == {2})


@pytest.mark.parametrize("refusal, said", [
    ((401, "User not found."), "the API key was rejected while looking at batch batch_"),
    ((403, "Key budget exceeded"), "a key or workspace budget is spent (403: Key budget exceeded)"),
    ((402, "Insufficient credits"), "out of credits (402: Insufficient credits)"),
])
def test_a_key_that_fails_while_a_batch_runs_stops_the_run_and_its_answers_are_read_next_run(
        workdir, batch_teacher, refusal, said):
    write_prompts(workdir, ["q0", "q1"])
    batch_teacher.batch_get_refusal = refusal  # the submission went through; every look is refused
    process = start_script(workdir, "prompts.jsonl", "--tools", "tools_small.py", "--base-url",
                           batch_teacher.base_url, "--batch", "--batch-poll", "0.05")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1 and said in err, err
    assert "their answers are read, not bought again" in err and "Traceback" not in err
    assert len(batch_teacher.batches) == 1 and read_jsonl(workdir / "train.batches.jsonl")
    batch_teacher.batch_get_refusal = None  # a working key
    result = batch_run(workdir, batch_teacher)
    assert result.code == 0, result.err
    assert answers_billed(batch_teacher) == 2 * TURNS and set(batch_teacher.batch_submissions.values()) == {1}


def test_a_moderation_403_inside_one_result_fails_only_that_request(workdir, batch_teacher):
    write_prompts(workdir, ["flagged", "fine"])
    batch_teacher.script("flagged",
                         status(403, "Input was flagged by moderation", metadata={"reasons": ["x"]}))
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1, result.err
    assert [r["messages"][0]["content"] for r in result.records()] == ["fine"]
    [failed] = read_jsonl(workdir / "train.failed.jsonl")
    assert failed["kind"] == "HTTP 403" and "stopped" not in result.err.lower().split("summary")[0]


def test_a_batch_refused_as_too_large_is_split_until_it_fits(workdir, batch_teacher):
    write_prompts(workdir, [f"q{i}" for i in range(5)])
    batch_teacher.batch_413_over = 2
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0, result.err
    assert sorted(len(b["requests"]) for b in batch_teacher.batches.values()) == [1, 2, 2]
    assert set(batch_teacher.batch_submissions.values()) == {1}


def test_a_request_refused_as_too_large_alone_fails_saying_so(workdir, batch_teacher):
    write_prompts(workdir, ["q0"])
    batch_teacher.batch_413_over = 0
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1, result.err
    [failed] = read_jsonl(workdir / "train.failed.jsonl")
    assert failed["kind"] == "HTTP 413" and "too large even alone" in failed["reason"]
    assert "without --batch" in failed["reason"] and not batch_teacher.batches


def test_a_batch_is_cut_under_both_of_the_services_limits():
    import generate_distillation_data as gdd

    assert gdd.batch_cut([10] * 5000, 1000) == 1000  # the count
    # 180 MB, with the framing: two fit
    assert gdd.batch_cut([100_000_000, 70_000_000, 20_000_000], 1000) == 2
    assert gdd.batch_cut([190_000_000, 1], 1000) == 1  # a lone request over the limit goes alone (and fails)
    assert gdd.batch_cut([60, 60, 60], 1000, most_bytes=300) == 2  # 2 x (60 + framing) fit in 300 bytes
    assert gdd.batch_cut([], 1000) == 0


def test_a_requests_name_in_a_batch_is_its_rollout_and_the_exact_bytes_of_its_body():
    import generate_distillation_data as gdd

    key = gdd.RolloutKey("p1", 0, 1)
    body = b'{"messages":[{"role":"user","content":"What is 2+2?"}]}'
    assert gdd.batch_custom_id(key, body) == gdd.batch_custom_id(gdd.RolloutKey("p1", 0, 1), bytes(body))
    others = {gdd.batch_custom_id(key, body.replace(b"2+2", b"2+3")),  # the prompt's text changed, same id
              gdd.batch_custom_id(key, body.replace(b"user", b"system")),
              gdd.batch_custom_id(gdd.RolloutKey("p1", 1, 1), body),
              gdd.batch_custom_id(gdd.RolloutKey("p1", 0, 2), body)}
    assert gdd.batch_custom_id(key, body) not in others and len(others) == 4


def test_a_requests_name_is_the_one_earlier_runs_recorded():
    """A batch on record names its requests by these exact names (issue 36 kept the bytes they hash): a
    different spelling of the rollout's key would send every recorded request again, and pay for it twice."""
    import generate_distillation_data as gdd

    assert gdd.batch_custom_id(gdd.RolloutKey("p1", 0, 1), b'{"model":"m","messages":[]}') == \
        "017707d3138c1a9054129f7493a597c1"
    assert gdd.batch_custom_id(gdd.RolloutKey("caf\u00e9", 2, 3), b"{}") == "056f67b6637452a252537a9bc7452244"


def test_the_record_outlives_a_trial_run_and_a_batch_is_billed_once_in_the_run_that_read_it(workdir,
                                                                                             batch_teacher):
    prompts = [f"question {i}" for i in range(5)]
    write_prompts(workdir, prompts)
    batch_teacher.batch_latency = 3600.0
    process = start_script(workdir, "prompts.jsonl", "--tools", "tools_small.py", "--base-url",
                           batch_teacher.base_url, "--batch", "--batch-poll", "0.05")
    wait_for(lambda: batch_teacher.batch_looks >= 1, what="the run waiting on its batch")
    process.kill()
    process.wait()
    batch_teacher.batch_latency = 0.1
    trial = batch_run(workdir, batch_teacher, "-n", "2")  # the first two prompts only, then all done
    assert trial.code == 0, trial.err
    # the killed run's batch holds three more prompts' answers
    assert (workdir / "train.batches.jsonl").exists()
    result = batch_run(workdir, batch_teacher)
    assert result.code == 0, result.err
    assert answers_billed(batch_teacher) == 5 * TURNS  # none bought twice
    assert "answers read here that earlier runs paid for" in result.err  # the trial run read and paid batch_1
    billed = [float(r.err.split("Billed $")[1].split(" ")[0]) for r in (trial, result)]
    assert sum(billed) == pytest.approx(sum(b["cost"] for b in batch_teacher.batches.values()), abs=1e-4)
    assert not (workdir / "train.batches.jsonl").exists()  # every rollout is in the output now


def test_a_rollout_whose_batch_answer_failed_it_is_not_handed_that_answer_again(workdir, batch_teacher):
    write_prompts(workdir, ["cut"])
    batch_teacher.script("cut", lambda body: Reply(body=completion({"content": "half an ans"}, "length")),
                         lambda body: Reply(body=completion({"content": "a whole answer"})))
    first = batch_run(workdir, batch_teacher, tools="none")
    assert first.code == 1 and not (workdir / "train.batches.jsonl").exists(), first.err
    again = batch_run(workdir, batch_teacher, tools="none")
    assert again.code == 0 and again.records()[0]["messages"][-1]["content"] == "a whole answer", again.err


def test_the_record_of_batches_of_a_private_output_is_private(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    output = workdir / "train.jsonl"
    output.touch()
    output.chmod(0o600)
    batch_teacher.batch_latency = 3600.0
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                           "--batch", "--batch-poll", "0.05")
    wait_for(lambda: batch_teacher.batch_looks >= 1, what="the run waiting on its batch")
    assert (workdir / "train.batches.jsonl").stat().st_mode & 0o077 == 0  # as it was created
    process.send_signal(2)
    process.communicate(timeout=30)
    assert (workdir / "train.batches.jsonl").stat().st_mode & 0o077 == 0  # and as the stop rewrote it


# -- what a hostile or broken batch service did in a tester's hands (24 of 40 attacks broke the first version)
def test_results_that_cannot_be_read_past_the_window_are_bought_again_an_hour_on(workdir, batch_teacher):
    """A batch sent yesterday (by its record, and by the service), completed, whose results endpoint answers
    500 for ever, or whose pages go round: the run says so once, then sends its requests again (within the
    bound) and ends."""
    write_prompts(workdir, ["q0", "q1"])
    for unreadable in ("500", "cycling"):
        batch_teacher.batch_age = 26 * 3600.0  # created 26 h ago: its 24-h window ended two hours ago
        killed_while_waiting(workdir, batch_teacher)
        entries = read_jsonl(workdir / "train.batches.jsonl")
        for entry in entries:
            entry["sent"] = entry.get("sent", 0) - 26 * 3600  # and submitted then, by its record
        (workdir / "train.batches.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
        old = [e["batch"] for e in entries if "batch" in e][-1]
        batch_teacher.batch_latency, batch_teacher.batch_age, batch_teacher.batch_inline = 0.0, 0.0, 0
        if unreadable == "500":
            batch_teacher.batch_results_refusal[old] = 500
        else:
            batch_teacher.batch_cursor_cycle.add(old)
        batch_teacher.batch_submissions.clear()  # the bound is a run's
        result = batch_run(workdir, batch_teacher, tools="none")
        assert result.code == 0, result.err
        assert "2 of them sent again: 2 unreadable" in result.err  # an hour past its window: given up on
        (workdir / "train.jsonl").unlink()


def test_looks_answered_410_take_the_batch_as_gone(workdir, batch_teacher):
    write_prompts(workdir, ["q0"])
    batch_teacher.batch_get_refusal = (410, "Gone")
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1 and len(batch_teacher.batches) == MOST_SUBMISSIONS, result.err
    assert read_jsonl(workdir / "train.failed.jsonl")[0]["kind"] == "batch gone"


@pytest.mark.parametrize("answer",
                         [(202, {"status": "validating"}, {}), (524, {"error": {"message": "timeout"}}, {})])
def test_a_submission_stored_but_answered_without_an_id_counts_against_the_bound(workdir, batch_teacher,
                                                                                 answer):
    write_prompts(workdir, ["q0"])
    batch_teacher.batch_submit_answer = answer
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1, result.err
    assert len(batch_teacher.batches) == MOST_SUBMISSIONS  # the fixture checks it per request, too
    assert "sent in 3 batches without an answer" in read_jsonl(workdir / "train.failed.jsonl")[0]["reason"]


def test_a_submission_told_to_wait_hours_stops_the_run_as_live(workdir, batch_teacher):
    write_prompts(workdir, ["q0"])
    batch_teacher.batch_submit_answer = (429, {"error": {"message": "daily cap"}}, {"Retry-After": "7200"})
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1 and "rate limit resets in 2h00m00s" in result.err, result.err


def test_a_batch_id_or_status_holding_the_key_is_neither_stored_nor_shown(workdir, batch_teacher):
    key = "sk-or-v1-" + "0123456789abcdef" * 4
    write_prompts(workdir, ["q0"])
    batch_teacher.batch_id, batch_teacher.batch_status = f"batch-{key}", key
    batch_teacher.batch_latency = 0.5
    env = {**subprocess_env(), "OPENROUTER_API_KEY": key}
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                        "--backoff", "0.01", "--batch", "--batch-poll", "0.05", env=env)
    assert result.code == 0, result.err
    assert "not written to train.batches.jsonl" in result.err and key not in result.err + result.out
    assert not any(key in p.read_text(errors="replace") for p in workdir.iterdir() if p.is_file())


def test_an_earlier_runs_402_result_is_not_handed_to_the_next_run(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    for prompt in ("q0", "q1"):
        batch_teacher.script(prompt, status(402, "Insufficient credits"))
    first = batch_run(workdir, batch_teacher, tools="none")
    assert first.code == 1 and "out of credits" in first.err, first.err
    # credits added: the same requests are answered now
    again = batch_run(workdir, batch_teacher, tools="none")
    assert again.code == 0 and len(again.records()) == 2, again.err
    assert "2 of them sent again: 2 HTTP 402" in again.err


def test_one_id_for_two_batches_keeps_both_on_record(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    batch_teacher.batch_id, batch_teacher.batch_latency = "same", 3600.0
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                           "--batch", "--batch-poll", "0.05", "-n", "1")
    wait_for(lambda: batch_teacher.batch_looks >= 1, what="the first batch")
    process.kill()
    process.wait()
    second = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                          "--batch", "--batch-poll", "0.05")

    def on_record():
        return [r["batch"] for r in read_jsonl(workdir / "train.batches.jsonl") if "batch" in r]

    wait_for(lambda: len(on_record()) >= 2, what="the second batch on record")
    second.kill()
    second.wait()
    assert on_record() == ["same", "same"]
    batch_teacher.batch_latency = 0.1
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0 and set(batch_teacher.batch_submissions.values()) == {1}, result.err


def test_short_first_answers_do_not_make_the_long_ones_look_cheap(workdir, batch_teacher):
    """The cap learns a price a token, never an answer's length: six short answers, then long ones, at the
    listed price, never pass the cap."""
    batch_teacher.models = [{"id": "openai/gpt-4o-mini:batch",
                             "pricing": {"prompt": "0.000001", "completion": "0.000002"}}]

    def short(body):
        return Reply(body=completion({"content": "ok"},
                                     usage={"prompt_tokens": 50, "completion_tokens": 5, "cost": 0.000120}))

    def long(body):
        return Reply(body=completion({"content": "long " * 400}, usage={
            "prompt_tokens": 50, "completion_tokens": 1000, "cost": 0.004100}))

    prompts = [f"q{i}" for i in range(30)]
    write_prompts(workdir, prompts)
    for i, prompt in enumerate(prompts):
        batch_teacher.script(prompt, short if i < 6 else long)
    result = batch_run(workdir, batch_teacher, "--max-cost", "0.03", "--max-tokens", "1000", tools="none")
    assert result.code == 1 and "spend cap was reached" in result.err, result.err
    assert sum(b["cost"] for b in batch_teacher.batches.values()) <= 0.03


def test_the_cap_reached_by_the_last_answers_is_not_a_stop(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1", "q2"])
    result = batch_run(workdir, batch_teacher, "--max-cost", "0.0015", tools="none")  # 3 answers of $0.0005
    assert result.code == 0 and len(result.records()) == 3, result.err
    assert "Stopped" not in result.err and "re-run" not in result.err.lower()


@pytest.mark.parametrize("poll", ["inf", "nan", "0", "7200"])
def test_a_batch_poll_that_is_not_a_sane_number_of_seconds_is_refused(workdir, batch_teacher, poll):
    write_prompts(workdir, ["q0"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                        "--batch", "--batch-poll", poll)
    assert result.code == 2 and "--batch-poll" in result.err and not batch_teacher.batches


def test_a_record_whose_sent_is_in_the_future_is_taken_as_sent_now(workdir, batch_teacher):
    write_prompts(workdir, ["q0"])
    killed_while_waiting(workdir, batch_teacher)
    entries = read_jsonl(workdir / "train.batches.jsonl")
    for entry in entries:
        entry["sent"] = entry.get("sent", 0) + 86400 * 365  # a year ahead of the clock
    (workdir / "train.batches.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    batch_teacher.batch_latency = 0.1
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0 and set(batch_teacher.batch_submissions.values()) == {1}, result.err


def test_a_record_that_cannot_be_written_buys_no_batch(workdir, batch_teacher):
    """A full disk, as a file-size limit makes one: the line written before each submission fails, so no
    batch is bought that could not be recorded; the run stops saying so, and the next one pays once."""
    import resource
    import subprocess
    import sys

    write_prompts(workdir, ["q0", "q1"])
    record = workdir / "train.batches.jsonl"
    record.write_text("\n" * 8192)  # blank lines, at the size limit below: nothing more fits

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    first = subprocess.run([sys.executable, str(SCRIPT), "prompts.jsonl", "--tools", "none", "--base-url",
                            batch_teacher.base_url, "--batch", "--batch-poll", "0.05"], cwd=workdir,
                           env=subprocess_env(), capture_output=True, text=True, timeout=60, preexec_fn=limit)
    assert first.returncode == 1 and "train.batches.jsonl could not be written" in first.stderr, first.stderr
    assert "No new batch was sent" in first.stderr and not batch_teacher.batches
    record.write_text("")
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0 and set(batch_teacher.batch_submissions.values()) == {1}, result.err


# -- a second tester's 38 attacks, other cases of the same classes and new ones (15 broke) -------------------
def test_a_stop_while_a_submission_is_answered_waits_for_its_id_and_records_it(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    # stored, its 202 slow to come
    batch_teacher.batch_submit_delay, batch_teacher.batch_latency = 2.0, 3600.0
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                           "--batch", "--batch-poll", "0.05")
    wait_for(lambda: batch_teacher.batches, what="the batch stored")
    process.send_signal(2)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert [r["batch"] for r in read_jsonl(workdir / "train.batches.jsonl") if "batch" in r] == ["batch_1"]
    batch_teacher.batch_submit_delay, batch_teacher.batch_latency = 0.0, 0.1
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0 and set(batch_teacher.batch_submissions.values()) == {1}, result.err


def test_a_request_two_recorded_batches_carry_is_not_sent_again_when_one_of_them_ends_unanswered(
        workdir, batch_teacher):
    write_prompts(workdir, ["q0"])
    batch_teacher.batch_fates, batch_teacher.batch_latency = ["expired", "overdue"], 0.0
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                           "--batch", "--batch-poll", "0.05")

    def on_record():
        return [r["batch"] for r in read_jsonl(workdir / "train.batches.jsonl") if "batch" in r]

    wait_for(lambda: on_record() == ["batch_1", "batch_2"], what="the second batch on record")
    process.kill()  # it had no time to drop batch_1 from its record
    process.wait()
    first = {**batch_teacher.batches["batch_1"]}
    batch_teacher.batches["batch_2"]["fate"] = "completed"
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0 and len(batch_teacher.batches) == 2 and first["fate"] == "expired", result.err


@pytest.mark.parametrize("only_the_batch_says", [False, True])
def test_the_cap_learns_a_price_from_costs_that_come_without_their_tokens(workdir, batch_teacher,
                                                                          only_the_batch_says):
    """Answers saying their cost but not their tokens, or only the batch's usage.cost saying anything: the cap
    learns the most an answer cost, and holds."""
    prompts = [f"q{i}" for i in range(12)]
    write_prompts(workdir, prompts)
    for prompt in prompts:  # $0.003 an answer in a batch
        batch_teacher.script(prompt, lambda body: Reply(body={**completion({"content": "ok"}),
                                                              "usage": {"cost": 0.006}}))
    batch_teacher.batch_costs_per_answer = not only_the_batch_says
    result = batch_run(workdir, batch_teacher, "--max-cost", "0.02", tools="none")
    assert result.code == 1 and "spend cap was reached" in result.err, result.err
    assert sum(b["cost"] for b in batch_teacher.batches.values()) <= 0.02


def test_a_batch_price_of_0_beside_a_live_price_sizes_by_the_live_one(workdir, batch_teacher):
    batch_teacher.models = [{"id": "openai/gpt-4o-mini",
                             "pricing": {"prompt": "0.000001", "completion": "0.000001"}},
                            {"id": "openai/gpt-4o-mini:batch", "pricing": {"prompt": "0", "completion": "0"}}]
    write_prompts(workdir, [f"q{i}" for i in range(10)])
    result = batch_run(workdir, batch_teacher, "--max-cost", "0.004", "--max-tokens", "500", tools="none")
    assert sum(b["cost"] for b in batch_teacher.batches.values()) <= 0.004, result.err
    assert "no price" not in result.err  # the live price was listed, and used


def test_an_answer_over_max_answer_mb_in_a_batch_fails_its_prompt_as_live(workdir, batch_teacher):
    write_prompts(workdir, ["big", "small"])
    batch_teacher.script("big", lambda body: Reply(body=completion({"content": "x" * (2 << 20)})))
    result = batch_run(workdir, batch_teacher, "--max-answer-mb", "1", tools="none")
    assert result.code == 1, result.err
    [failed] = read_jsonl(workdir / "train.failed.jsonl")
    assert (failed["kind"] == "answer too large"
            and [r["messages"][0]["content"] for r in result.records()] == ["small"])


def test_a_window_that_ends_before_it_begins_is_not_believed(workdir, batch_teacher):
    write_prompts(workdir, ["q0"])
    batch_teacher.batch_window, batch_teacher.batch_results_late = -2 * 3600, 3  # results a moment late
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0 and set(batch_teacher.batch_submissions.values()) == {1}, result.err


def test_a_base_urls_password_is_not_written_to_the_record(workdir, batch_teacher):
    password = "pw-" + "Q7r8S9t0" * 3
    secrets_used(password)
    write_prompts(workdir, ["q0"])
    url = batch_teacher.base_url.replace("http://", f"http://user:{password}@")
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", url, "--batch",
                           "--batch-poll", "0.05")
    batch_teacher.batch_latency = 3600.0
    wait_for(lambda: batch_teacher.batch_looks >= 1, what="the run waiting on its batch")
    process.send_signal(2)
    _, err = process.communicate(timeout=30)
    written = (workdir / "train.batches.jsonl").read_text()
    assert '"endpoint":0' in written and password not in written + err


def test_a_malformed_answer_in_a_batch_is_the_reason_its_rollout_gives(workdir, batch_teacher):
    write_prompts(workdir, ["q0"])
    batch_teacher.batch_results_as_text = True  # every body a JSON string holding the completion
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1, result.err
    [failed] = read_jsonl(workdir / "train.failed.jsonl")
    assert "malformed answer" in failed["reason"] and "answered 202" not in failed["reason"]


def test_submissions_stored_but_answered_with_a_page_are_counted_in_the_summary(workdir, batch_teacher):
    write_prompts(workdir, ["q0"])
    batch_teacher.batch_submit_answer = (200, b"<html><body>Gateway</body></html>",
                                         {"Content-Type": "text/html"})
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1 and "Batches: 3 submitted by this run (3 requests" in result.err, result.err
    assert "; 3 requests," in result.err


def test_an_earlier_runs_batch_in_flight_counts_against_this_runs_cap(workdir, batch_teacher):
    write_prompts(workdir, [f"q{i}" for i in range(10)])
    killed_while_waiting(workdir, batch_teacher, "--max-cost", "1")  # a first batch of 4: no price is listed
    batch_teacher.batch_latency = 0.1
    result = batch_run(workdir, batch_teacher, "--max-cost", "0.002", tools="none")  # what 4 answers cost
    assert result.code == 1 and "spend cap was reached" in result.err, result.err
    assert float(result.err.split("Billed $")[1].split(" ")[0]) <= 0.002
    assert len(batch_teacher.batches) == 1  # nothing went beside the picked-up batch, which took the cap


def test_a_damaged_record_line_neither_hangs_nor_stops_the_run(workdir, batch_teacher):
    write_prompts(workdir, ["q0", "q1"])
    (workdir / "train.batches.jsonl").write_text(
        '{"batch": "b", "custom_ids": ["x"], "sent": [1], "rollouts": 5, "endpoint": "v1"}\n'
        '{"batch": "b", "sent": {"a": 1}, "billed": "lots"}\n{"batch": 7}\n\xef\xbb\xbf{"batch"\n')
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 0 and len(result.records()) == 2, result.err


def test_a_teacher_that_reports_no_cost_cannot_be_capped_and_its_batches_grow(workdir, batch_teacher):
    prompts = [f"q{i}" for i in range(12)]
    write_prompts(workdir, prompts)
    for prompt in prompts:
        batch_teacher.script(prompt, lambda body: Reply(body=completion({"content": "ok"}, usage={
            "prompt_tokens": 10, "completion_tokens": 5})))
    result = batch_run(workdir, batch_teacher, "--max-cost", "0.01", tools="none")
    assert result.code == 0, result.err
    assert result.err.count("--max-cost cannot apply") == 1
    assert [len(b["requests"]) for b in batch_teacher.batches.values()] == [4, 8]


def test_a_submission_refused_for_one_request_it_names_fails_only_that_one(workdir, batch_teacher):
    write_prompts(workdir, ["good0", "bad", "good1"])
    batch_teacher.batch_refused_prompt = "bad"
    result = batch_run(workdir, batch_teacher, tools="none")
    assert result.code == 1, result.err
    assert sorted(r["messages"][0]["content"] for r in result.records()) == ["good0", "good1"]
    [failed] = read_jsonl(workdir / "train.failed.jsonl")
    assert failed["kind"] == "HTTP 400" and "invalid content" in failed["reason"]


def test_ctrl_c_while_the_models_list_is_slow_stops_at_once(workdir, batch_teacher):
    batch_teacher.models, batch_teacher.models_delay = [], 3600.0
    write_prompts(workdir, ["q0"])
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", batch_teacher.base_url,
                           "--batch", "--batch-poll", "0.05", "--max-cost", "1")
    wait_for(lambda: batch_teacher.models_asked, what="the models list asked for")
    process.send_signal(2)
    _, err = process.communicate(timeout=30)  # the list's own bound is 30 s: a stop does not wait for it
    assert process.returncode == 130 and not batch_teacher.batches, err
