"""The generator against a real loopback server: format, resume, errors, limits, input validation."""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest
from conftest import (read_jsonl, count_lines, run_script, start_script, subprocess_env, wait_for, write_prompts)
from fake_teacher import (FakeTeacher, Reply, answer, call_tools, completion, drop, error_body, slow, status)

import generate_distillation_data as gdd

# --------------------------------------------------------------------------------------------------
# Output format
# --------------------------------------------------------------------------------------------------


def test_tool_rollout_is_written_in_training_format(run, teacher, workdir):
    write_prompts(workdir, [{"prompt": "What is 2+3?", "metadata": {"expected_answer": "5"}}])
    teacher.script("What is 2+3?", call_tools(("add", {"a": 2, "b": 3})), answer("It is 5."))
    result = run("-s", "Be brief.")
    assert result.code == 0, result.err
    [record] = result.records()
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    call_turn, tool_turn, final = record["messages"][2:]
    assert call_turn["content"] == ""  # trainers reject null content
    assert call_turn["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    assert tool_turn["tool_call_id"] == call_turn["tool_calls"][0]["id"] and tool_turn["content"] == "5"
    assert final == {"role": "assistant", "content": "It is 5."}
    meta = record["metadata"]
    assert meta["teacher"] == "openai/gpt-4o-mini" and meta["turns"] == 2 and meta["expected_answer"] == "5"
    assert len(meta["prompt_id"]) == 16 and meta["sample"] == 0
    assert record["tools"] == ["add", "shout"]
    # Sent back to the API as the API gave it: content null beside the tool calls; tools on every request.
    second = teacher.requests[1]
    assert second["messages"][2]["content"] is None
    assert all(len(body["tools"]) == 2 for body in teacher.requests)
    assert second["tools"][0]["function"]["parameters"]["required"] == ["a", "b"]


def test_tools_none_sends_no_tools_and_txt_prompts_work(run, teacher, workdir):
    (workdir / "prompts.txt").write_text("first question\n\nsecond question\n")
    result = run(prompts="prompts.txt", tools="none")
    assert result.code == 0, result.err
    records = result.records()
    assert sorted(r["messages"][0]["content"] for r in records) == ["first question", "second question"]
    assert all("tools" not in r for r in records) and all("tools" not in b for b in teacher.requests)


def test_messages_prompt_keeps_its_own_system_message_and_id(run, teacher, workdir):
    conversation = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there"}]
    write_prompts(workdir, [{"id": "conv-1", "messages": conversation, "metadata": {"source": "chat"}}])
    result = run("-s", "ignored because the conversation has its own", tools="none")
    [record] = result.records()
    assert record["messages"][:2] == conversation
    assert record["metadata"]["prompt_id"] == "conv-1" and record["metadata"]["source"] == "chat"


def test_request_carries_options_and_key(run, workdir, teacher):
    write_prompts(workdir, ["q"])
    env = subprocess_env(OPENROUTER_API_KEY="sk-or-v1-secret-test-key")
    result = run("-m", "x/model", "--max-tokens", "77", "--temperature", "0.1", tools="none", env=env, subprocess=True)
    assert result.code == 0, result.err
    body = teacher.requests[0]
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("x/model", 77, 0.1)
    assert teacher.headers[0]["authorization"] == "Bearer sk-or-v1-secret-test-key"
    assert "secret-test-key" not in result.out + result.err + (workdir / "train.jsonl").read_text()


# --------------------------------------------------------------------------------------------------
# Resume and ids
# --------------------------------------------------------------------------------------------------


def test_rerun_skips_done_prompts_and_runs_new_ones(run, teacher, workdir):
    write_prompts(workdir, ["a", "b"])
    assert run(tools="none").code == 0
    sent = len(teacher.requests)
    result = run(tools="none")
    assert result.code == 0 and len(teacher.requests) == sent  # nothing sent
    assert "Nothing to do" in result.err
    write_prompts(workdir, ["a", "b", "c"])
    result = run(tools="none")
    assert result.code == 0 and len(teacher.requests) == sent + 1
    assert sorted(r["messages"][-2]["content"] for r in result.records()) == ["a", "b", "c"]
    assert "1 new rollout written" in result.err and "2 already there" in result.err


def test_duplicate_prompts_are_kept_apart(run, workdir):
    write_prompts(workdir, ["same", "same", "other", "same"])
    result = run(tools="none")
    ids = [r["metadata"]["prompt_id"] for r in result.records()]
    assert len(ids) == 4 and len(set(ids)) == 4
    base = min(ids, key=len)  # lines are in finishing order; the first "same" has the shortest id
    assert sorted(i for i in ids if i.startswith(base)) == [base, f"{base}-2", f"{base}-3"]


def test_prompt_id_is_stable_and_depends_on_system_prompt(run, workdir):
    write_prompts(workdir, ["q"])
    first = run(tools="none").records()[0]["metadata"]["prompt_id"]
    (workdir / "train.jsonl").unlink()
    assert run(tools="none").records()[0]["metadata"]["prompt_id"] == first
    assert run("-o", "other.jsonl", "-s", "sys", tools="none").records()[0]["metadata"]["prompt_id"] != first


def test_num_limits_prompts(run, workdir):
    write_prompts(workdir, ["a", "b", "c"])
    assert len(run("-n", "2", tools="none").records()) == 2


def test_shards_split_prompts_without_overlap(run, workdir):
    write_prompts(workdir, [f"prompt {i}" for i in range(40)])
    shards = [run("--shard", f"{i}/3", "-o", f"shard{i}.jsonl", tools="none").records() for i in range(3)]
    ids = [r["metadata"]["prompt_id"] for shard in shards for r in shard]
    assert len(ids) == 40 and len(set(ids)) == 40 and all(shards)


def test_half_written_last_line_is_repaired(run, workdir):
    write_prompts(workdir, ["a", "b"])
    run(tools="none", prompts="prompts.jsonl")
    output = workdir / "train.jsonl"
    lines = output.read_text().splitlines(keepends=True)
    output.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # a crash in the middle of a write
    result = run(tools="none")
    assert result.code == 0
    records = result.records()  # every line parses
    assert sorted(r["messages"][-2]["content"] for r in records) == ["a", "b"]


def test_corrupt_line_in_the_middle_is_reported(run, teacher, workdir):
    write_prompts(workdir, ["a"])
    (workdir / "train.jsonl").write_text("not json\n")
    result = run(tools="none")
    assert result.code == 2 and "train.jsonl:1" in result.err and not teacher.requests


def test_second_run_on_same_output_is_refused(run, workdir, teacher):
    write_prompts(workdir, ["slow one"])
    teacher.script("slow one", slow(30, answer("late")))
    first = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url)
    try:
        wait_for(lambda: teacher.requests, what="first run's request")
        second = run(tools="none", subprocess=True)
        assert second.code == 2 and "another run" in second.err
    finally:
        first.kill()
        first.wait()


# --------------------------------------------------------------------------------------------------
# Errors: retried, failed, fatal
# --------------------------------------------------------------------------------------------------

TRANSIENT = {
    "429 with Retry-After": status(429, "rate limited", {"Retry-After": "0"}),
    "429 with HTTP-date Retry-After": status(429, "rate limited", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
    "500": status(500), "502": status(502), "503": status(503), "504": status(504), "524": status(524),
    "529": status(529), "408": status(408),
    "dropped connection": drop(),
    "200 with error body": error_body(),
    "finish_reason error": lambda body: Reply(body={**completion({"content": "partial"}, "error"),
                                                    "error": {"message": "upstream died"}}),
    "no choices": lambda body: Reply(body={"id": "x", "choices": []}),
    "not JSON": lambda body: Reply(body=b"<html>gateway</html>"),
}


@pytest.mark.parametrize("kind", list(TRANSIENT))
def test_transient_errors_are_retried_inside_the_rollout(run, teacher, workdir, kind):
    write_prompts(workdir, ["q"])
    teacher.script("q", call_tools(("add", {"a": 1, "b": 1})), TRANSIENT[kind], answer("two"))
    result = run()
    assert result.code == 0, result.err
    [record] = result.records()
    assert record["messages"][-1]["content"] == "two" and record["metadata"]["turns"] == 2
    # The rollout was not restarted: the retry carried the tool result, and the tool ran once.
    assert len(teacher.requests) == 3 and teacher.requests[2]["messages"][-1]["role"] == "tool"


def test_slow_answer_times_out_and_is_retried(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    teacher.script("q", slow(5, answer("too late")), answer("on time"))
    result = run("--timeout", "0.3")
    assert result.code == 0 and result.records()[0]["messages"][-1]["content"] == "on time"


@pytest.mark.parametrize("code", [400, 404, 413, 422])
def test_permanent_errors_fail_the_prompt_and_the_run_goes_on(run, teacher, workdir, code):
    write_prompts(workdir, ["bad", "good"])
    teacher.script("bad", status(code, "bad request"))
    result = run(tools="none")
    assert result.code == 1
    assert [r["messages"][-2]["content"] for r in result.records()] == ["good"]
    [failed] = result.failed()
    assert failed["prompt"] == "bad" and failed["status"] == code and failed["attempts"] == 1
    assert "bad request" in failed["reason"]
    assert len(teacher.requests_for("bad")) == 1  # not retried
    assert "Failed: 1" in result.err and "train.failed.jsonl" in result.err


def test_retries_used_up_fail_the_prompt(run, teacher, workdir):
    write_prompts(workdir, ["flaky"])
    teacher.script("flaky", *[status(503)] * 3)
    result = run("--retries", "2", tools="none")
    assert result.code == 1 and len(teacher.requests) == 3
    [failed] = result.failed()
    assert failed["attempts"] == 3 and "503" in failed["reason"]


def test_failed_prompts_are_retried_on_rerun_and_leave_the_failed_file(run, teacher, workdir):
    write_prompts(workdir, ["a", "b"])
    teacher.script("a", status(400))
    assert run(tools="none").code == 1
    assert len(run(tools="none").records()) == 2  # 'a' answers this time
    assert not (workdir / "train.failed.jsonl").exists()


@pytest.mark.parametrize("code,advice", [(401, "OPENROUTER_API_KEY"), (402, "credits"), (403, "access denied")])
def test_key_and_credit_errors_stop_the_run(run, teacher, workdir, code, advice):
    write_prompts(workdir, [f"p{i}" for i in range(50)])
    teacher.script("p0", status(code, "nope"))
    for i in range(1, 50):
        teacher.script(f"p{i}", status(code, "nope"))
    result = run("-c", "2", tools="none")
    assert result.code == 1 and advice in result.err and "re-run" in result.err
    assert len(teacher.requests) <= 4  # no hammering: only what was already in flight
    assert not result.failed()  # nothing marked failed: all of it runs on the next run
    assert "Traceback" not in result.err


def test_moderation_403_fails_only_that_prompt(run, teacher, workdir):
    write_prompts(workdir, ["flagged", "fine"])
    teacher.script("flagged", status(403, "Input was flagged by moderation", metadata={"reasons": ["x"]}))
    result = run(tools="none")
    assert result.code == 1 and len(result.records()) == 1 and result.failed()[0]["status"] == 403


# --------------------------------------------------------------------------------------------------
# Adaptive concurrency
# --------------------------------------------------------------------------------------------------


def test_capped_server_all_done_once_and_cap_respected_after_adaptation(workdir):
    server = FakeTeacher(latency=0.02, max_in_flight=4).start()
    try:
        write_prompts(workdir, [f"task {i}" for i in range(150)])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url,
                            "-c", "32", "--backoff", "0.02")
        assert result.code == 0, result.err
        ids = Counter(r["metadata"]["prompt_id"] for r in result.records())
        assert len(ids) == 150 and set(ids.values()) == {1}
        answered = [b for b in server.requests]
        assert server.rejected > 0  # it did overshoot at the start (-c 32 against a cap of 4)...
        last_half = answered[len(answered) // 2:]
        rejected_late = sum(1 for b in last_half if "_rejected" in b)
        assert rejected_late == 0 or rejected_late / len(last_half) < 0.2
        assert server.rejected / len(answered) < 0.5  # ...and then stayed mostly under it
    finally:
        server.stop()


def test_limiter_halves_once_per_wave_and_regrows_to_last_safe_level():
    import asyncio

    import generate_distillation_data as gdd

    async def scenario():
        limiter = gdd.AdaptiveLimiter(16, slow_start=16)
        slots = [await limiter.acquire(i) for i in range(16)]
        assert limiter.in_flight == 16
        for slot in slots[:8]:
            limiter.admit(slot)  # the teacher took 8...
        for slot in slots[8:]:
            limiter.release(slot, gdd.Answered.RATE_LIMITED)  # one wave of 429s: the 9th..16th in flight
        assert limiter.limit == 8 and limiter.ceiling == 8
        for slot in slots[:8]:
            limiter.release(slot, gdd.Answered.OK)
        assert limiter.pace is None  # above every level taken: the number in flight, not the rate
        assert limiter.limit == 8  # already taken, they do not grow it again
        for i in range(8 * 16):  # probing above it is slow
            limiter.release(await limiter.acquire(0), gdd.Answered.OK)
        assert 8 < limiter.limit < 10

    asyncio.run(scenario())


def test_retry_after_pauses_new_requests():
    import asyncio
    import time

    import generate_distillation_data as gdd

    async def scenario():
        limiter = gdd.AdaptiveLimiter(4)
        limiter.pause_until(time.monotonic() + 0.2)
        started = time.monotonic()
        slot = await limiter.acquire(0)
        limiter.release(slot, gdd.Answered.OK)
        return time.monotonic() - started

    assert asyncio.run(scenario()) >= 0.19


# --------------------------------------------------------------------------------------------------
# Crashes and signals, as users run it
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", ["1", "2"])
def test_kill_9_mid_run_then_resume_gives_every_prompt_exactly_once(workdir, samples):
    server = FakeTeacher(latency=0.01).start()
    try:
        write_prompts(workdir, [f"question {i}" for i in range(300)])
        args = ("prompts.jsonl", "--tools", "none", "--base-url", server.base_url, "-c", "8", "--samples", samples)
        process = start_script(workdir, *args)
        wait_for(lambda: count_lines(workdir / "train.jsonl") >= 40, what="some output")
        process.kill()
        process.wait()
        killed_at = count_lines(workdir / "train.jsonl")
        assert killed_at < 300 * int(samples)
        result = run_script(workdir, *args)
        assert result.code == 0, result.err
        keys = Counter((r["metadata"]["prompt_id"], r["metadata"]["sample"]) for r in result.records())
        assert len(keys) == 300 * int(samples) and set(keys.values()) == {1}
    finally:
        server.stop()


def test_ctrl_c_finishes_rollouts_in_flight_then_stops(run, workdir, teacher):
    write_prompts(workdir, [f"q{i}" for i in range(20)])
    teacher.script("q0", slow(1.0, answer("finished after Ctrl-C")))
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url, "-c", "1")
    wait_for(lambda: teacher.requests, what="the first request")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "Stopping" in err and "Re-run the same command" in err and "Traceback" not in err
    records = read_jsonl(workdir / "train.jsonl")
    assert [r["messages"][-1]["content"] for r in records] == ["finished after Ctrl-C"]
    result = run(tools="none", subprocess=True)
    assert result.code == 0 and len(result.records()) == 20


def test_second_ctrl_c_quits_at_once(workdir, teacher):
    write_prompts(workdir, ["stuck"])
    teacher.script("stuck", slow(60, answer("never")))
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url)
    wait_for(lambda: teacher.requests, what="the request")
    process.send_signal(signal.SIGINT)
    while "Stopping" not in (line := process.stderr.readline()):  # the first Ctrl-C has landed
        assert line, "the script exited before printing its stopping message"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=15)
    assert process.returncode == 130 and "Traceback" not in err


def test_sigterm_behaves_like_ctrl_c(workdir, teacher):
    write_prompts(workdir, ["q0", "q1"])
    teacher.script("q0", slow(0.5, answer("done")))
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url, "-c", "1")
    wait_for(lambda: teacher.requests, what="the request")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130 and count_lines(workdir / "train.jsonl") == 1


# --------------------------------------------------------------------------------------------------
# Bad input: exit 2, file:line, nothing sent or written
# --------------------------------------------------------------------------------------------------

BAD_LINES = {
    "invalid JSON": ('{"prompt": "ok"}\n{"prompt": oops}\n', "prompts.jsonl:2: invalid JSON"),
    "neither prompt nor messages": ('{"text": "hi"}\n', "prompts.jsonl:1: needs a \"prompt\""),
    "empty prompt": ('{"prompt": "   "}\n', "prompts.jsonl:1: \"prompt\" is empty"),
    "prompt not a string": ('{"prompt": 42}\n', "prompts.jsonl:1: \"prompt\" must be a string"),
    "metadata not an object": ('{"prompt": "a", "metadata": [1]}\n', "prompts.jsonl:1: \"metadata\" must be an object"),
    "not an object": ('["a"]\n', "prompts.jsonl:1: expected an object"),
    "bad role": ('{"messages": [{"role": "bot", "content": "x"}]}\n', "prompts.jsonl:1: messages[0].role"),
    "duplicate id": ('{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n', "prompts.jsonl:2: id 'x'"),
}


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_bad_prompt_file_stops_before_anything_is_sent(run, teacher, workdir, kind):
    content, message = BAD_LINES[kind]
    (workdir / "prompts.jsonl").write_text('{"prompt": "fine"}\n' * 3 + content if kind != "invalid JSON" else content)
    result = run(tools="none")
    assert result.code == 2
    assert (message if kind == "invalid JSON" else message.replace(":1:", ":4:").replace(":2:", ":5:")) in result.err
    assert not teacher.requests and not (workdir / "train.jsonl").exists()
    assert "Traceback" not in result.err


@pytest.mark.parametrize("args,message", [
    (["-c", "0"], "--concurrency: must be at least 1"),
    (["--max-turns", "-1"], "--max-turns: must be at least 1"),
    (["--temperature", "3"], "--temperature: must be between 0 and 2"),
    (["--timeout", "abc"], "--timeout: expected a number"),
    (["--shard", "3/3"], "--shard"),
    (["--tools", "missing_tools.py"], "tools file missing_tools.py not found"),
    (["--extra-body", "{not json"], "--extra-body: not valid JSON"),
])
def test_nonsense_options_exit_2(workdir, teacher, args, message):
    write_prompts(workdir, ["q"])
    result = run_script(workdir, "prompts.jsonl", "--base-url", teacher.base_url, *(["--tools", "none"] + args))
    assert result.code == 2 and message in result.err and "Traceback" not in result.err
    assert not teacher.requests and not (workdir / "train.jsonl").exists()


def test_missing_input_and_missing_key(workdir, teacher):
    result = run_script(workdir, "nope.jsonl", "--tools", "none", "--base-url", teacher.base_url)
    assert result.code == 2 and "nope.jsonl: cannot read" in result.err
    write_prompts(workdir, ["q"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none")  # OpenRouter, no key
    assert result.code == 2 and "OPENROUTER_API_KEY is not set" in result.err and ".env" in result.err


def test_key_from_dotenv_file(run, workdir, teacher):
    write_prompts(workdir, ["q"])
    (workdir / ".env").write_text("OPENROUTER_API_KEY=sk-from-dotenv\n")
    result = run(tools="none", subprocess=True)
    assert result.code == 0 and teacher.headers[0]["authorization"] == "Bearer sk-from-dotenv"


# --------------------------------------------------------------------------------------------------
# What the user sees
# --------------------------------------------------------------------------------------------------


def test_help_reads_well(workdir):
    result = run_script(workdir, "--help")
    assert result.code == 0
    for option in ("--output", "--tools", "--model", "--concurrency", "--max-turns", "--base-url", "--retries",
                   "--timeout", "--samples", "--shard", "--dry-run", "exit codes"):
        assert option in result.out


def test_summary_goes_to_stderr_and_stdout_stays_clean(run, workdir, teacher):
    write_prompts(workdir, ["a", "b"])
    teacher.script("b", status(400, "nope"))
    result = run(tools="none", subprocess=True)
    assert result.code == 1 and result.out == ""
    assert "Done: 1 new rollout written" in result.err and "Failed: 1 (HTTP 400 x1)" in result.err
    assert "details in train.failed.jsonl" in result.err and "Time:" in result.err


def test_resume_of_repeated_prompts_keeps_their_numbering(run, teacher, workdir):
    write_prompts(workdir, ["same", "other", "same", "same"])
    teacher.script("same", answer("one"), status(400), answer("three"))  # the second "same" fails
    first = run("-c", "1", tools="none")  # one request at a time, in file order: the script meets them in order
    assert first.code == 1 and len(first.records()) == 3
    result = run(tools="none")
    assert result.code == 0
    ids = [r["metadata"]["prompt_id"] for r in result.records()]
    assert len(ids) == 4 and len(set(ids)) == 4
    base = min((i for i in ids if "-" not in i and i != ids_of(first, "other")), key=len)
    assert ids[-1] == base + "-2"  # the one retried is the second occurrence, as the first run named it


def ids_of(result, prompt: str) -> str:
    return next(r["metadata"]["prompt_id"] for r in result.records() if r["messages"][0]["content"] == prompt)


def test_non_utf8_prompt_file(run, teacher, workdir):
    (workdir / "prompts.txt").write_bytes(b"fine\n\xff\xfe broken\n")
    result = run(prompts="prompts.txt", tools="none")
    assert result.code == 2 and "prompts.txt:2: not UTF-8" in result.err and not teacher.requests


def test_resume_scan_reads_fast_and_slow_lines_across_chunk_boundaries(tmp_path):
    import generate_distillation_data as gdd

    lines = [{"metadata": {"prompt_id": f"id{i}", "sample": i % 3, "teacher": "t"}, "messages": []} for i in range(50)]
    lines[7]["metadata"]["prompt_id"] = 'needs "escaping"'  # the regex cannot read it: slow path
    lines[20] = {"messages": [], "metadata": {"prompt_id": "keys in another order", "sample": 1}}
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"metadata": {"prompt_id": "torn')
    expected = {gdd.RolloutKey.hashed(line["metadata"]["prompt_id"], line["metadata"]["sample"]) for line in lines}
    for chunk_size in (7, 64, 1000, 1 << 20):
        scan = gdd.OutputFile(path).scan(chunk_size)
        assert scan.done == expected and scan.tail == "cut" and not scan.bad
    path.write_text("garbage\n" + "more garbage\n")  # no line of ours: not ours to rewrite
    with pytest.raises(gdd.UsageError, match="train.jsonl:1: not valid JSON"):
        gdd.OutputFile(path).scan(16)


def test_unreachable_teacher_stops_the_run_quickly(run, workdir):
    import socket

    with socket.socket() as probe:  # a port on loopback with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_prompts(workdir, [f"q{i}" for i in range(500)])
    result = run("--base-url", f"http://127.0.0.1:{port}/v1", "-c", "4", tools="none")
    assert result.code == 1 and "cannot reach" in result.err and "--base-url" in result.err
    assert not result.failed()  # nothing marked failed: the next run starts over


def test_every_prompt_failing_from_the_start_stops_the_run(run, teacher, workdir):
    write_prompts(workdir, [f"q{i}" for i in range(500)])
    for i in range(500):
        teacher.script(f"q{i}", status(404, "No endpoints found for x/nonexistent"))
    result = run("-c", "4", tools="none")
    assert result.code == 1
    assert "teacher has not answered once" in result.err and "No endpoints found" in result.err
    assert len(teacher.requests) < 40  # not 500


def test_output_that_is_a_directory_is_a_clear_error(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    (workdir / "outdir").mkdir()
    result = run("-o", "outdir", tools="none")
    assert result.code == 2 and "outdir: cannot open the output file" in result.err and not teacher.requests


def test_slow_start_doubles_each_round_trip_until_the_first_429():
    import asyncio

    async def scenario():
        limiter = gdd.AdaptiveLimiter(64, slow_start=4)
        levels = []
        for _ in range(4):  # a round trip: every request in flight answers
            slots = [await limiter.acquire(0) for _ in range(int(limiter.limit))]
            levels.append(len(slots))
            for slot in slots:
                limiter.release(slot, gdd.Answered.OK)
        slots = [await limiter.acquire(0) for _ in range(int(limiter.limit))]
        limiter.release(slots.pop(), gdd.Answered.RATE_LIMITED)  # the first 429 ends it
        return levels, limiter.limit

    levels, after = asyncio.run(scenario())
    assert levels == [4, 8, 16, 32] and after == 63  # just below the level refused


def test_rate_limit_reset_header_holds_the_retry(workdir, teacher, run):
    import time as clock

    write_prompts(workdir, ["q"])
    reset = lambda body: status(429, headers={"X-RateLimit-Reset": str(int((clock.time() + 0.4) * 1000))})(body)  # noqa: E731
    teacher.script("q", reset, answer("ok"))
    result = run()
    assert result.code == 0
    first, second = teacher.received_at[-2:]
    assert second - first >= 0.35  # not before the window reset, whatever --backoff says (0.01 here)


@pytest.mark.parametrize("meter", ["token bucket", "fixed window"])
def test_metered_teachers_lose_nothing(workdir, meter):
    from fake_teacher import FixedWindow, TokenBucket

    limit = TokenBucket(40, 4) if meter == "token bucket" else FixedWindow(8, 0.5)
    server = FakeTeacher(latency=0.02, meter=limit).start()
    try:
        write_prompts(workdir, [f"q{i}" for i in range(30)])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url, "-c", "16")
    finally:
        server.stop()
    assert result.code == 0, result.err
    assert len(result.records()) == 30 and server.rejected > 0
