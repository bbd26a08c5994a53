"""What we keep of the teacher: reasoning, usage and cost, incomplete rollouts, samples, extra body, dry run."""

from __future__ import annotations

import json

import pytest
from conftest import subprocess_env, write_prompts
from fake_teacher import Reply, answer, call_tools, completion, status

DETAILS = [{"type": "reasoning.text", "text": "I should add the numbers.", "format": "anthropic-claude-v1",
            "signature": "sig-abc", "index": 0},
           {"type": "reasoning.encrypted", "data": "ENCRYPTED-BLOB", "format": "anthropic-claude-v1", "index": 1}]


def reasoning_tool_turn(body: dict) -> Reply:
    message = {"content": None, "reasoning": "I should add the numbers.", "reasoning_details": DETAILS,
               "tool_calls": [{"id": "call_r", "type": "function",
                               "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]}
    usage = {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140, "cost": 0.0125,
             "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 30}}
    return Reply(body=completion(message, "tool_calls", usage=usage))


def requires_echoed_details(body: dict) -> Reply:
    assistant = next(m for m in body["messages"] if m["role"] == "assistant")
    if assistant.get("reasoning_details") != DETAILS:
        return Reply(400, {"error": {"code": 400, "message": "reasoning details must be preserved"}})
    usage = {"prompt_tokens": 200, "completion_tokens": 10, "total_tokens": 210, "cost": 0.0025}
    return Reply(body=completion({"content": "3", "reasoning": "Done adding."}, usage=usage))


def test_reasoning_details_are_echoed_unchanged_and_reasoning_is_kept(run, teacher, workdir):
    write_prompts(workdir, ["sum"])
    teacher.script("sum", reasoning_tool_turn, requires_echoed_details)
    result = run("--reasoning-effort", "high")
    assert result.code == 0, result.err
    [record] = result.records()
    assistant_turns = [m for m in record["messages"] if m["role"] == "assistant"]
    assert [m.get("reasoning_content") for m in assistant_turns] == ["I should add the numbers.", "Done adding."]
    assert "ENCRYPTED-BLOB" not in json.dumps(record) and "reasoning_details" not in json.dumps(record)
    assert teacher.requests[0]["reasoning"] == {"effort": "high"}
    usage = record["metadata"]["usage"]
    assert usage == {"prompt_tokens": 300, "completion_tokens": 50, "reasoning_tokens": 30, "cached_tokens": 60, "cache_write_tokens": 0, "cache_savings": 0.0,
                     "cost": 0.015, "requests": 2}
    assert record["metadata"]["finish_reason"] == "stop" and record["metadata"]["model"] == "test/teacher"
    assert "cost $0.0150 ($0.01500 per sample)" in result.err


def test_no_reasoning_leaves_it_out(run, teacher, workdir):
    write_prompts(workdir, ["sum"])
    teacher.script("sum", reasoning_tool_turn, requires_echoed_details)
    result = run("--no-reasoning", "--reasoning-max-tokens", "500")
    assert result.code == 0
    assert "reasoning_content" not in json.dumps(result.records()[0])
    assert teacher.requests[0]["reasoning"] == {"max_tokens": 500}


INCOMPLETE = {
    "max turns": ([call_tools(("add", {"a": 1, "b": 1}))] * 2, "reached --max-turns 2"),
    "length": ([answer("The answer is", finish_reason="length")], "finish_reason length"),
    "content filter": ([answer("", finish_reason="content_filter")], "finish_reason content_filter"),
    "empty answer": ([answer("   ")], "empty answer"),
    "truncated tool call": ([call_tools(("add", '{"a": 1,'), finish_reason="length")], "finish_reason length"),
}


@pytest.mark.parametrize("kind", list(INCOMPLETE))
def test_incomplete_rollouts_go_to_the_failed_file_not_train(run, teacher, workdir, kind):
    steps, reason = INCOMPLETE[kind]
    write_prompts(workdir, ["cut", "whole"])
    teacher.script("cut", *steps)
    result = run("--max-turns", "2")
    assert result.code == 1
    assert [r["messages"][0]["content"] for r in result.records()] == ["whole"]
    [failed] = result.failed()
    assert failed["prompt"] == "cut" and reason in failed["reason"] and failed["reason"].startswith("incomplete")
    assert failed["messages"][0] == {"role": "user", "content": "cut"} and failed["messages"][1]["role"] == "assistant"
    assert failed["usage"]["requests"] == len(steps)
    # the next run tries it again
    teacher.script("cut", answer("complete now"))
    again = run("--max-turns", "2")
    assert again.code == 0 and len(again.records()) == 2 and not again.failed()


def test_keep_incomplete_writes_them_marked(run, teacher, workdir):
    write_prompts(workdir, ["cut"])
    teacher.script("cut", answer("The answer is", finish_reason="length"))
    result = run("--keep-incomplete")
    assert result.code == 0
    [record] = result.records()
    assert record["metadata"]["incomplete"].startswith("finish_reason length")


def test_samples_are_independent_lines(run, teacher, workdir):
    write_prompts(workdir, ["a", "b"])
    result = run("--samples", "3", tools="none")
    keys = sorted((r["messages"][0]["content"], r["metadata"]["sample"]) for r in result.records())
    assert keys == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    assert len({r["metadata"]["prompt_id"] for r in result.records()}) == 2
    more = run("--samples", "4", tools="none")  # asking for one more sample runs only that one
    assert len(more.records()) == 8 and len(teacher.requests) == 8


def test_extra_body_reaches_the_server_inline_and_from_a_file(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    routing = {"provider": {"sort": "throughput", "data_collection": "deny"}, "models": ["a/b", "c/d"], "seed": 7}
    run("--extra-body", json.dumps(routing), tools="none")
    assert {k: teacher.requests[-1][k] for k in routing} == routing
    (workdir / "body.json").write_text(json.dumps({"max_tokens": 99}))
    run("-o", "other.jsonl", "--extra-body", "@body.json", tools="none")
    assert teacher.requests[-1]["max_tokens"] == 99


def test_extra_body_must_be_an_object(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    result = run("--extra-body", "[1, 2]", tools="none")
    assert result.code == 2 and "must be a JSON object" in result.err and not teacher.requests


def test_dry_run_sends_nothing_and_shows_the_request(run, workdir, teacher):
    write_prompts(workdir, ["first", "second"])
    env = subprocess_env(OPENROUTER_API_KEY="sk-or-v1-abcdefghijklmnopqrstuvwxyz")
    result = run("--dry-run", "--samples", "2", env=env, subprocess=True)
    assert result.code == 0, result.err
    assert not teacher.requests and not (workdir / "train.jsonl").exists()
    body = json.loads(result.out[result.out.index("{"):])
    assert body["messages"] == [{"role": "user", "content": "first"}]
    assert [t["function"]["name"] for t in body["tools"]] == ["add", "shout"]
    assert "sk-or-v1...wxyz" in result.out and "abcdefghijklmnop" not in result.out + result.err
    assert "4 rollouts to run" in result.err


def test_fatal_error_in_a_200_body_stops_the_run(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    teacher.script("q", lambda body: Reply(200, {"error": {"code": 402, "message": "Insufficient credits"}}))
    result = run(tools="none")
    assert result.code == 1 and "out of credits" in result.err


def test_answer_with_bad_status_reason_is_failed_with_detail(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    teacher.script("q", status(422, "unprocessable: messages too long"))
    result = run(tools="none")
    assert result.failed()[0]["reason"] == "HTTP 422: unprocessable: messages too long"
