"""Spend: tokens and cost of each answer, counted whatever the rollout's fate, and what malformed usage
does."""

from __future__ import annotations

from conftest import read_jsonl, write_prompts
from fake_teacher import Reply, answer, call_tools, completion, raw, status


def test_malformed_usage_is_ignored_not_fatal(run, teacher, workdir):
    write_prompts(workdir, ["odd usage", "nan cost"])
    teacher.script("odd usage", lambda body: Reply(body=completion({"content": "fine"}, usage={
        "prompt_tokens": "ten", "completion_tokens": None, "cost": "0.5", "prompt_tokens_details": [1],
        "completion_tokens_details": {"reasoning_tokens": {"x": 1}}, "total_tokens": -4})))
    teacher.script("nan cost", raw(b'{"choices": [{"finish_reason": "stop", "message": {"content": "ok"}}], '
                                   b'"usage": {"prompt_tokens": 7, "completion_tokens": 1e999, '
                                   b'"cost": NaN}}'))
    result = run(tools="none")
    assert result.code == 0, result.err
    usages = {r["messages"][0]["content"]: r["metadata"]["usage"]
              for r in read_jsonl(workdir / "train.jsonl")}
    # its cost: unknown, not $0
    assert usages["odd usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "reasoning_tokens": 0,
                                   "cached_tokens": 0, "cache_write_tokens": 0, "cost": 0.0,
                                   "cache_savings": 0.0, "requests": 1, "uncosted": 1}
    assert usages["nan cost"]["prompt_tokens"] == 7 and usages["nan cost"]["cost"] == 0.0
    assert usages["nan cost"]["uncosted"] == 1
    assert b"NaN" not in (workdir / "train.jsonl").read_bytes()


def test_spend_of_a_rollout_that_fails_later_is_counted_and_kept(run, teacher, workdir):
    write_prompts(workdir, ["fails on turn 2"])
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "cost": 0.25}
    teacher.script("fails on turn 2", call_tools(("add", {"a": 1, "b": 2}), usage=usage),
                   status(400, "too long"))
    result = run()
    assert result.code == 1
    [failed] = read_jsonl(workdir / "train.failed.jsonl")
    assert failed["usage"]["cost"] == 0.25 and failed["usage"]["prompt_tokens"] == 100
    # the partial conversation
    assert [m["role"] for m in failed["messages"]] == ["user", "assistant", "tool"]
    assert "cost $0.2500" in result.err and "100 prompt" in result.err


def test_answers_without_a_usable_cost_do_not_switch_the_spend_cap_off(run, teacher, workdir):
    write_prompts(workdir, [f"q{i}" for i in range(30)])
    teacher.default_step = answer("ok", usage={"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.01})
    bad_costs = [None, -5, "0.01"]
    for i, cost in enumerate(bad_costs):
        usage = {"prompt_tokens": 10, "completion_tokens": 5} | ({} if cost is None else {"cost": cost})
        teacher.script(f"q{i}", answer("ok", usage=usage))
    result = run("-c", "1", "--max-cost", "0.05", tools="none")
    assert result.code == 1 and "spend cap was reached" in result.err
    assert len(teacher.requests) < 12
    assert result.err.count("--max-cost cannot apply") == 1  # said once as it happened,
    assert result.err.count("3 of ") == 1 and result.err.count("carried no usable cost") == 1  # and counted
