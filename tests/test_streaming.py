"""Streamed answers (issue 18): asked for by default, assembled into exactly what an unstreamed answer gives,
and hardened: comments, a stall, a cut, an error or a 429 mid-stream, no usage event, a server that refuses
streams, and a proxy that closes silent requests."""

from __future__ import annotations

import json

import pytest
from conftest import launch, read_jsonl, subprocess_env, write_prompts
from fake_teacher import FakeTeacher, Reply, adjusted, answer, completion

import real_path


def tool_then_reasoned_answer(body: dict) -> Reply:
    """A rollout that exercises every streamed piece: reasoning, a tool call with a missing id and
    arguments in pieces, reasoning_details, then an answer with reasoning_content."""
    if not any(m["role"] == "tool" for m in body["messages"]):
        message = {"content": None, "reasoning": "I should add.",
                   "reasoning_details": [{"type": "reasoning.text", "text": "I should add."}],
                   "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": '{"a": 20, "b": 22}'}},
                                  {"id": "given", "type": "function",
                                   "function": {"name": "shout", "arguments": '{"text": "done"}'}}]}
        return Reply(body=completion(message, "tool_calls"))
    return Reply(body=completion({"content": "It is 42.", "reasoning_content": "20 + 22 = 42."}))


def test_streamed_and_unstreamed_runs_write_the_same_dataset_and_send_the_same_requests(workdir):
    prompts = [f"stream or not {i}" for i in range(3)]
    write_prompts(workdir, prompts)
    datasets, follow_ups = {}, {}
    for mode in ("streamed", "unstreamed"):
        teacher = FakeTeacher(default_step=tool_then_reasoned_answer).start()
        try:
            extra = [] if mode == "streamed" else ["--no-stream"]

            result = launch(workdir, ["prompts.jsonl", "--tools", "tools_small.py", "--base-url", teacher.base_url,
                                      "-c", "1", "-o", f"{mode}.jsonl", *extra])
            assert result.code == 0, result.err
            datasets[mode] = (workdir / f"{mode}.jsonl").read_bytes()
            follow_ups[mode] = [json.dumps({k: v for k, v in body.items() if k not in ("stream", "stream_options")},
                                           sort_keys=False) for body in teacher.requests]
            assert all(body.get("stream") is (mode == "streamed") or mode == "unstreamed" for body in teacher.requests)
        finally:
            teacher.stop()
    assert datasets["streamed"] == datasets["unstreamed"]
    assert follow_ups["streamed"] == follow_ups["unstreamed"]  # every message sent back, byte for byte
    record = read_jsonl(workdir / "streamed.jsonl")[0]
    assert record["messages"][-1]["reasoning_content"] == "20 + 22 = 42."
    assert [c["id"] for c in record["messages"][1]["tool_calls"]] == ["call_1_0", "given"]


@pytest.mark.parametrize("fault, label", [
    ({"sse_error": {"code": 502, "message": "upstream died"}}, "HTTP 502"),
    ({"sse_error": {"code": 429, "message": "rate limited mid-stream"}}, "HTTP 429"),
    ({"sse_cut": True}, "connection"),
])
def test_a_stream_that_fails_midway_is_retried(run, teacher, workdir, fault, label):
    write_prompts(workdir, ["Faulty stream"])
    teacher.script("Faulty stream", adjusted(answer("first try"), **fault), answer("second try"))
    result = run(tools="none")
    assert result.code == 0, result.err
    assert result.records()[0]["messages"][-1]["content"] == "second try" and "1 retried" in result.err
    if label == "HTTP 429":
        assert "1 answered 429" in result.err  # a 429 that comes late still counts as one
    if "sse_cut" in fault:
        assert "ended before its usage came" in result.err


def test_comments_keep_the_connection_but_a_stream_without_data_stalls(run, teacher, workdir):
    write_prompts(workdir, ["Thinks long", "Stalls"])
    teacher.script("Thinks long", adjusted(answer("worth the wait"), delay=2, keepalive=0.5))
    teacher.script("Stalls", adjusted(answer("never"), sse_stall=6, keepalive=0.3), answer("after a stall"))
    result = run("--stall-timeout", "3", tools="none")
    assert result.code == 0, result.err
    # thinking silently for less than the stall timeout is fine; 6 s of nothing but comments is a stall
    assert sorted(r["messages"][-1]["content"] for r in result.records()) == ["after a stall", "worth the wait"]
    assert "1 retried" in result.err and "1 streamed answer ended before its usage came" in result.err


def test_an_answer_whose_usage_event_is_lost_is_kept_and_its_cost_said_unknown(run, teacher, workdir):
    write_prompts(workdir, ["No usage"])
    teacher.script("No usage", adjusted(answer("whole answer"), sse_no_usage=True))
    result = run(tools="none")
    assert result.code == 0 and result.records()[0]["messages"][-1]["content"] == "whole answer"
    assert "0 retried" in result.err and result.err.count("ended before its usage came") == 1


def test_a_server_that_refuses_streams_is_asked_for_whole_answers(workdir):
    teacher = FakeTeacher(streaming=False).start()
    try:
        write_prompts(workdir, [f"q{i}" for i in range(5)])

        result = launch(workdir, ["prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url])
        assert result.code == 0 and len(result.records()) == 5
        assert result.err.count("refused streamed answers") == 1
        assert sum(1 for body in teacher.requests if body.get("stream")) <= 20  # the first wave, then none
    finally:
        teacher.stop()


def test_behind_nginx_with_a_5_s_read_timeout_an_8_s_teacher_writes_every_prompt(workdir, tmp_path):
    """nginx's proxy_read_timeout closes silent requests: streamed answers are never silent."""
    if real_path.nginx_binary() is None:
        pytest.skip("needs nginx, as .ci/run installs it")
    teacher = FakeTeacher(latency=8.0).start()
    front = real_path.NginxFront(teacher.port, tmp_path / "nginx", port=real_path.free_port(),
                                 read_timeout="5s").start()
    try:
        write_prompts(workdir, [f"slow question {i}" for i in range(3)])

        plain = f"http://127.0.0.1:{front.plain_port}/api/v1"
        result = launch(workdir, ["prompts.jsonl", "--tools", "none", "--base-url", plain], timeout=120,
                        env=subprocess_env())
        assert result.code == 0, result.err
        assert len(result.records()) == 3 and "0 retried" in result.err
        unstreamed = launch(workdir, ["prompts.jsonl", "--tools", "none", "--base-url", plain, "--no-stream",
                                      "--retries", "0", "-o", "unstreamed.jsonl", "-n", "1"], timeout=120)
        assert unstreamed.code == 1 and "HTTP 504" in unstreamed.err  # what happened before streaming
    finally:
        front.stop()
        teacher.stop()


def test_slow_start_grows_when_a_request_is_taken_not_when_its_answer_ends():
    """Admission (the first streamed data, or no refusal within the window) grows the limit; the answer's end
    does not grow it again; a 429 after admission still counts as one."""
    import asyncio

    import generate_distillation_data as gdd

    async def go():
        limiter = gdd.AdaptiveLimiter(64, slow_start=4)
        slots = [await limiter.acquire(0) for _ in range(4)]
        for slot in slots:
            limiter.admit(slot)
            limiter.admit(slot)  # once only
        assert limiter.limit == 12  # doubled: two more each, since these four still hold their slots
        late = await limiter.acquire(0)  # the fifth in flight, above every level taken
        limiter.admit(late)
        limiter.release(late, gdd.Answered.RATE_LIMITED)
        assert limiter.limit <= 6.5
        for slot in slots:
            limiter.release(slot, gdd.Answered.OK)
        assert limiter.limit <= 6.5  # taken already: their ends do not grow it

    asyncio.run(go())


def raw_stream(*events: bytes) -> Reply:
    body = b"".join(b"data: " + event + b"\n\n" for event in events) + b"data: [DONE]\n\n"
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n")
    return Reply(raw_response=head + body)


@pytest.mark.parametrize("event", [
    b"not json at all",
    b"[1, 2, 3]",
    b'{"choices": [{"index": 0, "delta": {"tool_calls": ["not an object"]}}]}',
    b'{"choices": [{"index": 0, "delta": {"reasoning_details": [7]}}]}',
    b'{"choices": [{"index": 0, "delta": {"content": "bad \\ud800 text"}, "finish_reason": "stop"}]}',
])
def test_a_hostile_stream_event_is_a_malformed_answer_and_is_retried(run, teacher, workdir, event):
    write_prompts(workdir, ["Hostile stream"])
    teacher.script("Hostile stream", lambda body: raw_stream(event), answer("clean second try"))
    result = run(tools="none")
    assert result.code == 0, result.err
    assert result.records()[0]["messages"][-1]["content"] == "clean second try" and "1 retried" in result.err
