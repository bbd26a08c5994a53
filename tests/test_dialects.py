"""Every server's dialect (issue 24): a whole answer is written once and paid once, a cut one never
written. Each server of docs/dialects.md streams a tool-calling rollout here as it writes it
(tests/support/dialects.py, from its source); then the streams proxies and broken servers make of them."""

from __future__ import annotations

import json

import pytest

from conftest import write_prompts
from dialects import CASES, CONTEXT_OVERFLOW, SERVERS
from fake_teacher import Reply, answer, call_tools, completion

PROMPT = "What is 20 + 22?"


def tool_rollout(dialect):
    """First turn: reason, then call add(20, 22); second: answer from its result. Streamed in `dialect`."""

    def step(body: dict) -> Reply:
        if not any(m["role"] == "tool" for m in body["messages"]):
            message = {"content": None, "reasoning": "I should add them.",
                       "tool_calls": [{"id": "call_abc123xyz", "type": "function",
                                       "function": {"name": "add", "arguments": '{"a": 20, "b": 22}'}}]}
            return Reply(body=completion(message, "tool_calls"), dialect=dialect)
        return Reply(body=completion({"content": "It is 42 😀.", "reasoning": "20 + 22 = 42."}),
                     dialect=dialect)

    return step


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_each_server_streams_a_tool_rollout_written_whole_and_paid_once(run, teacher, workdir, server):
    write_prompts(workdir, [PROMPT])
    teacher.default_step = tool_rollout(SERVERS[server])
    result = run("--stall-timeout", "20")
    assert result.code == 0, result.err
    assert len(teacher.requests) == 2  # one per turn: nothing paid twice
    [record] = result.records()
    user, call, tool, final = record["messages"]
    assert call["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 20, "b": 22}'}
    assert call["reasoning_content"] == "I should add them."
    assert tool["content"] == "42" and tool["tool_call_id"] == call["tool_calls"][0]["id"]
    assert final["content"] == "It is 42 😀." and final["reasoning_content"] == "20 + 22 = 42."
    assert isinstance(final["content"], str) and "internal error" not in result.err
    assert record["metadata"]["usage"]["cost"] == pytest.approx(0.002)  # both usages counted
    # what was sent back to the teacher on the second turn: the first answer, assembled whole
    sent_back = teacher.requests[1]["messages"][1]
    assert json.loads(sent_back["tool_calls"][0]["function"]["arguments"]) == {"a": 20, "b": 22}


@pytest.mark.parametrize("case", list(CASES))
def test_streams_as_proxies_and_broken_servers_send_them(run, teacher, workdir, case):
    spec = CASES[case]
    write_prompts(workdir, [PROMPT])
    teacher.script(PROMPT, lambda body: Reply(body=completion({"content": "It is 42."}),
                                              dialect=spec.dialect),
                   answer("second try"))
    result = run("--stall-timeout", "20", tools="none")
    assert result.code == 0, result.err
    [record] = result.records()
    assert "internal error" not in result.err
    if spec.kept:
        assert len(teacher.requests) == 1, "a whole answer must be paid once"
        assert record["messages"][-1]["content"] == "It is 42." + (" 😀" if "surrogate" in case else "")
        assert ("ended before its usage came" in result.err) == spec.usage_lost
    else:
        assert len(teacher.requests) == 2 and record["messages"][-1]["content"] == "second try"
        assert "1 retried" in result.err


@pytest.mark.parametrize("index", [{"i": 0}, "0", 1.5, True])
def test_a_tool_call_index_that_is_not_an_integer_is_a_malformed_answer(run, teacher, workdir, index):
    from dialects import Dialect, call_index

    write_prompts(workdir, [PROMPT])
    broken = Dialect("bad index", call_index(index))
    teacher.script(PROMPT, lambda body: Reply(body=completion(
        {"content": None, "tool_calls": [{"id": "c1", "type": "function",
                                          "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]},
        "tool_calls"), dialect=broken), answer("retried"))
    result = run()
    assert result.code == 0, result.err
    assert "internal error" not in result.err and "1 retried" in result.err and len(teacher.requests) == 2
    assert result.records()[0]["messages"][-1]["content"] == "retried"


@pytest.mark.parametrize("shape", ["no index at all", "null beside integers"])
def test_argument_pieces_without_an_index_continue_their_call(run, teacher, workdir, shape):
    from dialects import Dialect, calls_without_index, null_index_beside_integers

    write_prompts(workdir, [PROMPT])
    writes = calls_without_index if shape == "no index at all" else null_index_beside_integers
    calls = [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}},
             {"id": "c2", "type": "function", "function": {"name": "shout", "arguments": '{"text": "hi"}'}}]

    def both_calls(body):
        return Reply(body=completion({"content": None, "tool_calls": calls}, "tool_calls"),
                     dialect=Dialect(shape, writes))

    teacher.script(PROMPT, both_calls, answer("done"))
    result = run()
    assert result.code == 0, result.err
    call = result.records()[0]["messages"][1]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in call["tool_calls"]] == [
        ("add", '{"a": 1, "b": 2}'), ("shout", '{"text": "hi"}')]
    assert len(teacher.requests) == 2


def test_mistral_content_lists_unstreamed_are_text_and_reasoning(run, teacher, workdir):
    """Unstreamed, Mistral's answer carries the list itself: the dataset's content is its text, its
    thinking part the reasoning; streamed and unstreamed give the same line."""
    write_prompts(workdir, [PROMPT])
    parts = [{"type": "thinking", "thinking": [{"type": "text", "text": "20 + 22 = 42."}]},
             {"type": "text", "text": "It is "}, {"type": "text", "text": "42."}]
    teacher.default_step = lambda body: Reply(body=completion({"content": parts}))
    result = run("--no-stream", tools="none")
    assert result.code == 0, result.err
    final = result.records()[0]["messages"][-1]
    assert final["content"] == "It is 42." and final["reasoning_content"] == "20 + 22 = 42."


def test_n_above_one_is_refused_naming_samples(run, teacher, workdir):
    write_prompts(workdir, [PROMPT])
    result = run("--extra-body", '{"n": 2}', subprocess=True)
    assert result.code == 2 and "--samples 2" in result.err and "Traceback" not in result.err
    assert teacher.requests == [] and not (workdir / "train.jsonl").exists()


def test_max_answer_mb_caps_what_a_stream_holds_not_its_framing(run, teacher, workdir):
    """60,000 one-character deltas are ~8 MB of events and a 60 KB answer: kept under a 0.1 MB cap; a
    200 KB answer is not."""
    from dialects import Dialect, one_character_deltas

    write_prompts(workdir, ["small answer, many events", "large answer"])
    chatty = Dialect("one character an event", one_character_deltas)
    teacher.script("small answer, many events", lambda body: Reply(body=completion({"content": "x" * 60_000}),
                                                                   dialect=chatty))
    teacher.script("large answer", lambda body: Reply(body=completion({"content": "y" * 200_000})))
    result = run("--max-answer-mb", "0.1", tools="none")
    assert result.code == 1  # the large one failed, not retried
    [kept] = result.records()
    assert kept["messages"][-1]["content"] == "x" * 60_000
    [failed] = result.failed()
    assert "answer too large" in json.dumps(failed)
    assert len(teacher.requests) == 2


@pytest.mark.parametrize("server", list(CONTEXT_OVERFLOW))
def test_a_context_overflow_in_each_servers_error_shape_is_named_and_no_rerun_advised(run, teacher, workdir,
                                                                                      server):
    """SGLang and Mistral's API put the error at the top of the body, not under "error", TGI makes it a
    string, Gemini a list of one: its message is read all the same, so the rollout is named as not fitting,
    and the summary does not advise a re-run that would pay the same turns and fail the same way.
    (A --max-tokens above what TGI allows is not one:
    test_a_max_tokens_above_the_models_is_not_a_context_overflow.)"""
    write_prompts(workdir, [PROMPT])
    body = CONTEXT_OVERFLOW[server]
    teacher.script(PROMPT, call_tools(("add", {"a": 20, "b": 22})),
                   lambda request: Reply(422 if server == "tgi" else 400, json.dumps(body).encode()))
    result = run(subprocess=True)
    assert result.code == 1 and "Traceback" not in result.err
    [failed] = result.failed()
    error = (body[0] if isinstance(body, list) else body)
    error = error.get("error", error)
    message = error if isinstance(error, str) else error["message"]
    assert failed["kind"] == "does not fit the context" and message[:40] in failed["reason"]
    assert ("Cannot finish as they are: 1 rollout" in result.err
            and "Re-run the same command" not in result.err)


def test_a_max_tokens_above_the_models_is_not_a_context_overflow(run, teacher, workdir):
    """TGI's MaxNewTokens ("`max_new_tokens` must be <= N") is fixed by --max-tokens alone: a plain HTTP
    422."""
    write_prompts(workdir, [PROMPT])
    teacher.script(PROMPT, lambda request: Reply(422, {"error": "Input validation error: `max_new_tokens` "
                                                       "must be <= 4096. Given: 8192",
                                                       "error_type": "validation"}))
    result = run(tools="none")
    [failed] = result.failed()
    assert failed["kind"] == "HTTP 422" and "max_new_tokens" in failed["reason"]
