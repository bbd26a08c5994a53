"""Prompt caching against a loopback teacher that caches only when asked, like Anthropic's models."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import write_prompts
from fake_teacher import FakeTeacher, Reply, answer, call_tools, completion

import generate_distillation_data as gdd

PAGE_TOOLS = '''
from rnow.core.tool import tool

@tool
def browse(url: str) -> str:
    """Open a page (a stand-in for the real browse: a 20,000-character page)."""
    return f"Page {url}: " + "clinical trial results and dosing tables. " * 480
'''


REASONING = [{"type": "reasoning.encrypted", "data": "opaque-signature", "id": "r1"}]


def six_turn_script(teacher: FakeTeacher, prompt: str) -> None:
    """Five browse calls, then the answer: each turn resends every page read so far."""
    turns = [call_tools(("browse", {"url": f"https://example.org/{i}"})) for i in range(5)]
    teacher.script(prompt, *[with_reasoning(turn) for turn in turns], answer("Dose: 200 mg."))


def with_reasoning(step):
    def step_with_reasoning(body):
        reply = step(body)
        reply.body["choices"][0]["message"]["reasoning_details"] = REASONING
        return reply

    return step_with_reasoning


def without_ids(messages: list[dict]) -> str:
    """The conversation with tool-call ids blanked (the loopback teacher numbers them across runs)."""
    text = json.dumps(messages)
    for message in messages:
        for call in message.get("tool_calls", []):
            text = text.replace(call["id"], "ID")
    return text


@pytest.fixture
def caching_teacher():
    server = FakeTeacher(caching=True).start()
    yield server
    server.stop()


def run_rollout(run, workdir, teacher, *args: str, output: str) -> dict:
    six_turn_script(teacher, "What is the dose?")
    result = run("--base-url", teacher.base_url, "-o", output, "-s", "You are a careful pharmacist.", *args,
                 tools="page_tools.py")
    assert result.code == 0, result.err
    [record] = result.records()
    return record


def test_caching_makes_a_six_turn_browse_rollout_cheaper_by_the_teachers_own_cost(run, workdir,
                                                                                  caching_teacher):
    (workdir / "page_tools.py").write_text(PAGE_TOOLS)
    write_prompts(workdir, ["What is the dose?"])
    cached = run_rollout(run, workdir, caching_teacher, "--cache", "on", output="cached.jsonl")
    plain = run_rollout(run, workdir, caching_teacher, "--cache", "off", output="plain.jsonl")
    with_cache, without = cached["metadata"]["usage"], plain["metadata"]["usage"]
    assert with_cache["requests"] == without["requests"] == 6
    assert with_cache["prompt_tokens"] == without["prompt_tokens"]  # the same conversation either way
    assert with_cache["cached_tokens"] > 0.5 * with_cache["prompt_tokens"] and without["cached_tokens"] == 0
    assert with_cache["cost"] < 0.6 * without["cost"]  # by the teacher's own usage.cost
    assert with_cache["cache_savings"] == pytest.approx(without["cost"] - with_cache["cost"], rel=1e-6)
    # the same dataset, and no marker
    assert without_ids(cached["messages"]) == without_ids(plain["messages"])
    assert "cache_control" not in (workdir / "cached.jsonl").read_text()


def test_markers_go_on_the_system_prompt_and_the_newest_message_and_nothing_else_changes(run, workdir,
                                                                                        caching_teacher):
    (workdir / "page_tools.py").write_text(PAGE_TOOLS)
    write_prompts(workdir, ["What is the dose?"])
    run_rollout(run, workdir, caching_teacher, "--cache", "on", "--cache-ttl", "1h", output="cached.jsonl")
    requests = caching_teacher.requests_for("What is the dose?")
    assert len(requests) == 6
    for body in requests:
        marked = [i for i, m in enumerate(body["messages"]) if isinstance(m["content"], list)]
        assert marked == [0, len(body["messages"]) - 1]
        for i in marked:
            [part] = body["messages"][i]["content"]
            assert part["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
        for message in body["messages"]:  # assistant messages go back exactly as the API gave them
            if message["role"] == "assistant":
                assert message["reasoning_details"] == REASONING and message["content"] is None
    last = requests[-1]["messages"]
    assert last[-1]["role"] == "tool" and last[-1]["content"][0]["text"].startswith("Page https://example.org/4")


def test_a_messages_prompt_with_text_parts_is_marked_on_its_last_text_part(run, workdir, caching_teacher):
    parts = [{"type": "text", "text": "Read this:"}, {"type": "text", "text": "the long document"},
             {"type": "image_url", "image_url": {"url": "https://example.org/x.png"}}]
    write_prompts(workdir, [{"messages": [{"role": "user", "content": parts}]}])
    result = run("--base-url", caching_teacher.base_url, "--cache", "on", tools="none")
    assert result.code == 0, result.err
    [body] = caching_teacher.requests
    sent = body["messages"][0]["content"]
    assert ("cache_control" not in sent[0] and sent[1]["cache_control"] == {"type": "ephemeral"}
            and sent[2] == parts[2])
    assert result.records()[0]["messages"][0]["content"] == parts


def test_the_loopback_teacher_is_as_strict_as_a_real_provider(caching_teacher):
    url = f"{caching_teacher.base_url}/chat/completions"
    bad_bodies = [
        {"messages": [{"role": "user", "content": "x", "cache_control": {"type": "ephemeral"}}]},
        {"messages": [{"role": "user",
                       "content": [{"type": "text", "text": "x", "cache_control": {"type": "x"}}]}]},
        {"messages": [{"role": "user",
                       "content": [{"type": "text", "text": "", "cache_control": {"type": "ephemeral"}}]}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "x",
                                                    "cache_control": {"type": "ephemeral"}}] * 5}]},
    ]
    for body in bad_bodies:
        assert httpx.post(url, json=body).status_code == 400, body
    assert httpx.post(url, json={"messages": [{"role": "user", "content": "x"}]}).status_code == 200


@pytest.mark.parametrize("model, base_url, flag, asked", [
    ("anthropic/claude-sonnet-4.5", None, "auto", True),
    ("google/gemini-2.5-pro", None, "auto", True),
    ("openai/gpt-4o-mini", None, "auto", False),  # caches by itself
    ("deepseek/deepseek-chat", None, "auto", False),
    ("anthropic/claude-sonnet-4.5", "http://127.0.0.1:8000/v1", "auto", False),  # unknown server: not asked
    ("anthropic/claude-sonnet-4.5", None, "off", False),
    ("Qwen/Qwen3-8B", "http://127.0.0.1:8000/v1", "on", True),
])
def test_caching_is_asked_for_where_the_teacher_needs_asking(monkeypatch, workdir, model, base_url, flag,
                                                             asked):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-test")
    args = (["prompts.jsonl", "--tools", "none", "-m", model, "--cache", flag]
            + (["--base-url", base_url] if base_url else []))
    cfg = gdd.parse_config(args)
    assert gdd.cache_plan(cfg.requests, cfg.teacher.base_url).enabled is asked


def test_dry_run_says_whether_and_how_caching_is_asked_for(workdir, capsys, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-test")
    write_prompts(workdir, ["q"])
    assert gdd.main(["prompts.jsonl", "--tools", "none", "-m", "anthropic/claude-sonnet-4.5",
                     "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "Prompt caching: on: anthropic/claude-sonnet-4.5 caches only when asked" in err
    sent = json.loads(out[out.index("{"):])
    assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert gdd.main(["prompts.jsonl", "--tools", "none", "-m", "openai/gpt-4o", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert ("Prompt caching: not asked for: openai/gpt-4o caches by itself" in err
            and "cache_control" not in out)


def test_the_summary_reports_cached_share_and_savings(run, workdir, caching_teacher):
    (workdir / "page_tools.py").write_text(PAGE_TOOLS)
    write_prompts(workdir, ["What is the dose?"])
    six_turn_script(caching_teacher, "What is the dose?")
    result = run("--base-url", caching_teacher.base_url, "--cache", "on", tools="page_tools.py")
    assert result.code == 0
    assert "cached, " in result.err and "Prompt caching (on (--cache on)): saved $" in result.err
    assert "without caching this run would have cost $" in result.err


def test_the_summary_reports_a_teacher_that_caches_by_itself(run, workdir, teacher):
    usage = {"prompt_tokens": 2000, "completion_tokens": 10, "cost": 0.002,
             "prompt_tokens_details": {"cached_tokens": 1500}}
    teacher.script("q", lambda body: Reply(body=completion({"content": "a"}, usage=usage)))
    write_prompts(workdir, ["q"])
    result = run(tools="none")
    assert "(1.5k cached, 75%)" in result.err and "75% of prompt tokens read from cache" in result.err
