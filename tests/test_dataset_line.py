"""The dataset line has one owner: the builder, the key rule, the reader and the rewrite helper agree."""

from __future__ import annotations

import json
import os

import pytest

from conftest import fixed_calls, read_jsonl, write_prompts
from fake_teacher import Reply, answer, call_tools, completion, status

import generate_distillation_data as gdd


def line(metadata) -> bytes:
    return json.dumps({"metadata": metadata, "messages": []}).encode()


SHAPES = {
    "good": line({"prompt_id": "a", "sample": 0}),
    "good, with an attempt": line({"prompt_id": "a", "sample": 1, "attempt": 2}),
    "sample a bool": line({"prompt_id": "a", "sample": True}),
    "sample a string": line({"prompt_id": "a", "sample": "0"}),
    "sample a float": line({"prompt_id": "a", "sample": 0.0}),
    "prompt_id a number": line({"prompt_id": 7, "sample": 0}),
    "attempt a string": line({"prompt_id": "a", "sample": 0, "attempt": "2"}),
    "no sample": line({"prompt_id": "a"}),
    "metadata a list": line(["a", 0]),
    "a list": b'[{"metadata": {"prompt_id": "a", "sample": 0}}]',
}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_resume_scan_and_key_of_agree_on_every_shape_of_line(tmp_path, shape):
    """The scan writes RolloutKey.of_line's rule out for speed; both must give the same answer."""
    path = tmp_path / "train.jsonl"
    path.write_bytes(SHAPES["good"].replace(b'"a"', b'"anchor"') + b"\n" + SHAPES[shape] + b"\n")
    key = gdd.RolloutKey.of_line(gdd.parse_line(SHAPES[shape]))
    try:
        scan = gdd.OutputFile(path).scan()
    except gdd.UsageError:  # valid JSON that is not a line of ours: refused as a foreign file
        assert key is None
        return
    assert (gdd.RolloutKey.hashed(key[0], key[1]) in scan.done) if key else len(scan.done) == 1


def test_a_built_line_starts_as_every_line_of_ours_and_names_only_known_keys():
    prompt = gdd.Prompt("p1", [{"role": "user", "content": "q"}], {"domain": "x", "sample": 9}, "q")
    job = gdd.RolloutJob(prompt, 0, 0)
    outcome = gdd.Outcome(job, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                          gdd.Usage(), 1, "stop")
    record = gdd.build_line(outcome, gdd.LineFormat("teacher/m", True, False, str), [])
    encoded = gdd.encode_line(record)
    assert (encoded.startswith(gdd._OUR_PREFIXES[0])
            and gdd.RolloutKey.of_line(gdd.parse_line(encoded)) == ("p1", 0, 1))
    assert set(record["metadata"]) - {"domain"} <= gdd.OUR_METADATA_KEYS
    assert {"prompt_id", "sample", "teacher", "turns", "usage", "attempt", "reward", "incomplete"} <= \
        gdd.OUR_METADATA_KEYS


def test_a_failed_entry_keys_by_its_own_fields():
    entry = {"prompt_id": "p", "sample": 2, "metadata": {"prompt_id": "not this one"}}
    assert gdd.RolloutKey.of_line(entry) == ("p", 2, 1)


def test_the_reader_drops_a_bom_and_keeps_an_unterminated_last_line_apart(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(gdd._UTF8_BOM + b'{"a": 1}\n{"b": 2}\n{"c": 3')
    reader = gdd.LineReader(path, chunk_size=5)
    records = [record for _, record in reader.records()]
    assert records == [{"a": 1}, {"b": 2}, None] and reader.bom and reader.unterminated == b'{"c": 3'
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_a_rewrite_goes_through_a_symlink_and_leaves_nothing_behind_on_error(tmp_path):
    target = tmp_path / "data.jsonl"
    target.write_text("old\n")
    os.symlink("data.jsonl", tmp_path / "link.jsonl")
    with gdd.replaced_atomically(tmp_path / "link.jsonl") as f:
        f.write(b"new\n")
    assert (tmp_path / "link.jsonl").is_symlink() and target.read_text() == "new\n"
    with pytest.raises(RuntimeError):
        with gdd.replaced_atomically(tmp_path / "link.jsonl") as f:
            f.write(b"half")
            raise RuntimeError("crash midway")
    assert (target.read_text() == "new\n"
            and sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "link.jsonl"])


def test_a_rewrite_keeps_the_mode_of_the_file_it_replaces_and_is_private_while_written(tmp_path):
    target = tmp_path / "train.jsonl"
    target.write_text("old\n")
    target.chmod(0o600)
    with gdd.replaced_atomically(target) as f:
        [temporary] = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert oct(temporary.stat().st_mode & 0o777) == "0o600"  # nobody else reads it as it is written
        f.write(b"new\n")
    assert oct(target.stat().st_mode & 0o777) == "0o600" and target.read_text() == "new\n"
    target.chmod(0o400)  # read-only, as some keep config.yml: it stays so
    with gdd.replaced_atomically(target) as f:
        f.write(b"newer\n")
    assert oct(target.stat().st_mode & 0o777) == "0o400" and target.read_text() == "newer\n"
    side = tmp_path / "train.hf.jsonl"  # a new file beside a private output is as private as it
    with gdd.replaced_atomically(side, like=target) as f:
        f.write(b"{}\n")
    assert side.stat().st_mode & 0o077 == 0
    appended = gdd.LineFile(tmp_path / "train.failed.jsonl", like=target)
    appended.append({"a": 1})
    appended.close()
    assert (tmp_path / "train.failed.jsonl").stat().st_mode & 0o077 == 0


def test_each_rewrite_has_a_temporary_name_of_its_own_that_the_cleanup_still_knows(tmp_path):
    names = {gdd._temporary_beside(tmp_path / "train.jsonl").name for _ in range(50)}
    assert len(names) == 50  # PID 1 in every container: the random part keeps two rewrites apart
    name = next(iter(names))
    assert name.startswith(f".train.jsonl.{os.getpid()}-") and gdd._TEMPORARY_NAME.fullmatch(name)


DETAILS = [{"type": "reasoning.text", "text": "I should add the numbers.", "format": "anthropic-claude-v1",
            "signature": "sig-abc", "index": 0},
           {"type": "reasoning.encrypted", "data": "ENCRYPTED-BLOB", "format": "anthropic-claude-v1",
            "index": 1}]


def reasoning_tool_turn(body: dict) -> Reply:
    message = {"content": None, "reasoning": "I should add the numbers.", "reasoning_details": DETAILS,
               "tool_calls": [{"id": "call_r", "type": "function",
                               "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]}
    usage = {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140, "cost": 0.0125,
             "prompt_tokens_details": {"cached_tokens": 60},
             "completion_tokens_details": {"reasoning_tokens": 30}}
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
    assert ([m.get("reasoning_content") for m in assistant_turns]
            == ["I should add the numbers.", "Done adding."])
    assert "ENCRYPTED-BLOB" not in json.dumps(record) and "reasoning_details" not in json.dumps(record)
    assert teacher.requests[0]["reasoning"] == {"effort": "high"}
    usage = record["metadata"]["usage"]
    assert usage == {"prompt_tokens": 300, "completion_tokens": 50, "reasoning_tokens": 30,
                     "cached_tokens": 60, "cache_write_tokens": 0, "cache_savings": 0.0,
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
    "truncated tool call": ([call_tools(("add", '{"a": 1,'), finish_reason="length")],
                            "finish_reason length"),
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
    assert (failed["prompt"] == "cut" and reason in failed["reason"]
            and failed["reason"].startswith("incomplete"))
    assert (failed["messages"][0] == {"role": "user", "content": "cut"}
            and failed["messages"][1]["role"] == "assistant")
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


def test_reasoning_content_is_kept_in_the_dataset_and_sent_back_as_received(run, teacher, workdir):
    write_prompts(workdir, ["Think"])
    first = {"content": None, "reasoning_content": "I should add.", "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]}
    teacher.script("Think", lambda body: Reply(body=completion(first, "tool_calls")),
                   lambda body: Reply(body=completion({"content": "3", "reasoning_content": "It is 3."})))
    result = run()
    assert result.code == 0, result.err
    messages = result.records()[0]["messages"]
    assert ([m.get("reasoning_content") for m in messages if m["role"] == "assistant"]
            == ["I should add.", "It is 3."])
    sent_back = teacher.requests_for("Think")[1]["messages"][1]
    assert sent_back["reasoning_content"] == "I should add."


def test_a_server_that_refuses_reasoning_content_gets_messages_without_it(run, teacher, workdir):
    write_prompts(workdir, ["Strict server"])
    first = {"content": None, "reasoning_content": "plan", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]}
    teacher.script("Strict server", lambda body: Reply(body=completion(first, "tool_calls")),
                   status(400, "Extra inputs are not permitted: messages.1.reasoning_content"),
                   answer("3"))
    result = run()
    assert result.code == 0, result.err
    requests = teacher.requests_for("Strict server")
    assert ("reasoning_content" in requests[1]["messages"][1]
            and "reasoning_content" not in requests[2]["messages"][1])
    assert result.records()[0]["messages"][1]["reasoning_content"] == "plan"  # the dataset keeps it
    assert result.err.count("refused `reasoning_content`") == 1


def test_a_refusal_keeps_its_text(run, teacher, workdir):
    write_prompts(workdir, ["Forbidden"])
    teacher.script("Forbidden",
                   lambda body: Reply(body=completion({"content": None, "refusal": "I can't help."})))
    result = run(tools="none")
    [failed] = result.failed()
    assert failed["kind"] == "incomplete: refusal" and "I can't help." in failed["reason"]
    assert failed["messages"][-1]["refusal"] == "I can't help."


def test_tool_call_ids_are_unique_in_the_conversation_and_the_same_on_every_run(run, teacher, workdir):
    write_prompts(workdir, ["Ids"])
    # in one answer thrice; then free again (the first three were renamed), and missing; then reused
    steps = [fixed_calls("dup", "dup", "dup"), fixed_calls("dup", None), fixed_calls("dup", "call_1_0"),
             answer("done")]
    teacher.script("Ids", *steps)
    first = run()
    assert first.code == 0, first.err
    messages = first.records()[0]["messages"]
    call_ids = [c["id"] for m in messages if m.get("tool_calls") for c in m["tool_calls"]]
    assert call_ids == ["call_1_0", "call_1_1", "call_1_2", "dup", "call_2_1", "call_3_0", "call_3_1"]
    assert [m["tool_call_id"] for m in messages if m["role"] == "tool"] == call_ids
    assert ([m["tool_call_id"] for m in teacher.requests_for("Ids")[-1]["messages"] if m["role"] == "tool"]
            == call_ids)
    (workdir / "train.jsonl").unlink()
    teacher.script("Ids", *steps)
    assert run().records()[0]["messages"] == messages  # no random fill-ins: a re-run writes the same line
