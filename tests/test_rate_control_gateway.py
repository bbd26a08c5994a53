"""A real gateway in the path (issue 24): LiteLLM's proxy, in front of the loopback teacher, as teams run it
to share one provider key (tests/support/gateway.py). Its 429s carry no standard Retry-After; its answers say
how many requests the minute has left (x-ratelimit-remaining-requests), and the generator uses that before
the 429s come. Through it, every rollout is written once, and few requests are refused."""

from __future__ import annotations

import os
import re

import pytest

from conftest import SMALL_TOOLS, run_script, subprocess_env, write_prompts
from fake_teacher import FakeTeacher, Reply, call_tools, completion
from gateway import MASTER_KEY, MODEL, LiteLLMGateway, litellm_binary


def one_tool_call(body: dict) -> Reply:
    if not any(m["role"] == "tool" for m in body["messages"]):
        return call_tools(("add", {"a": 20, "b": 22}))(body)
    return Reply(body=completion({"content": "It is 42."}))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    if litellm_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("LiteLLM's proxy is missing: the README's test command installs it (.venv-gateway)")
        pytest.skip("LiteLLM's proxy is not installed (.venv-gateway, made by the README's test command)")
    teacher = FakeTeacher(default_step=one_tool_call, latency=0.05).start()
    proxy = LiteLLMGateway(teacher.base_url, rpm=12, folder=tmp_path_factory.mktemp("litellm")).start()
    yield proxy, teacher
    proxy.stop()
    teacher.stop()


def test_tool_rollouts_through_litellm_with_an_rpm_limit_are_written_once_with_few_refused(gateway, workdir):
    proxy, teacher = gateway
    (workdir / "tools_small.py").write_text(SMALL_TOOLS)
    write_prompts(workdir, [f"Add for me, {i}" for i in range(9)])  # 18 requests: two windows of 12
    result = run_script(workdir, "prompts.jsonl", "--tools", "tools_small.py", "--base-url", proxy.base_url,
                        "--model", MODEL, env=subprocess_env(OPENROUTER_API_KEY=MASTER_KEY), timeout=150)
    assert result.code == 0, result.err
    records = result.records()
    assert (sorted(r["metadata"]["prompt_id"] for r in records)
            == sorted({r["metadata"]["prompt_id"] for r in records}))
    assert len(records) == 9 and all(r["messages"][-1]["content"] == "It is 42." for r in records)
    requests, refused = map(int, re.search(r"(\d+) requests, (\d+) answered 429", result.err).groups())
    assert refused <= 0.10 * requests, result.err
    assert MASTER_KEY not in (workdir / "train.jsonl").read_text()
