"""Settings, config.yml and the environment: flags and their limits, the key (from the environment or .env, checked at
start, never shown), the base URL, --extra-body, --dry-run."""

from __future__ import annotations

import json

import pytest

from conftest import fixed_calls, run_script, subprocess_env, write_prompts
from fake_teacher import Reply, completion
from real_path import free_port


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


def test_request_carries_options_and_key(run, workdir, teacher):
    write_prompts(workdir, ["q"])
    env = subprocess_env(OPENROUTER_API_KEY="sk-or-v1-secret-test-key")
    result = run("-m", "x/model", "--max-tokens", "77", "--temperature", "0.1", tools="none", env=env, subprocess=True)
    assert result.code == 0, result.err
    body = teacher.requests[0]
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("x/model", 77, 0.1)
    assert teacher.headers[0]["authorization"] == "Bearer sk-or-v1-secret-test-key"
    assert "secret-test-key" not in result.out + result.err + (workdir / "train.jsonl").read_text()


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


def test_config_yml_nested_5000_deep_aliases_and_size_are_refused_at_once(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))
    cases = {"deep": "rollout:\n  max_turns: " + "[" * 5000 + "]" * 5000 + "\n",
             "aliases": bomb + "rollout:\n  max_turns: 3\n",
             "large": "rollout:\n  max_turns: 3\n# " + "x" * (2 << 20) + "\n",
             "echo": "rollout:\n  max_turns: '" + "9" * 100_000 + "x'\n"}
    for case, text in cases.items():
        (workdir / "config.yml").write_text(text)
        result = run(tools="none", subprocess=case == "aliases", timeout=30)  # one as users run it; the rest in process
        assert result.code == 2, (case, result.err[-500:])
        assert "config.yml" in result.err and "Traceback" not in result.err, case
        assert len(result.err) < 2000, case  # no value echoed whole
    assert teacher.requests == []


def test_context_compression_is_asked_off_at_openrouter_unless_the_user_chose(workdir):
    write_prompts(workdir, ["q"])
    env = subprocess_env(OPENROUTER_API_KEY="sk-or-v1-" + "0" * 64)

    def body_sent(*extra: str) -> dict:
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--dry-run", *extra, env=env)
        assert result.code == 0, result.err
        return json.loads(result.out[result.out.index("{"):result.out.rindex("}") + 1])

    assert body_sent()["plugins"] == [{"id": "context-compression", "enabled": False}]
    web = body_sent("--extra-body", '{"plugins": [{"id": "web"}]}')["plugins"]
    assert web == [{"id": "web"}, {"id": "context-compression", "enabled": False}]
    chosen = body_sent("--extra-body", '{"plugins": [{"id": "context-compression"}]}')["plugins"]
    assert chosen == [{"id": "context-compression"}]
    other = body_sent("--base-url", "http://127.0.0.1:9/v1")
    assert "plugins" not in other  # only OpenRouter has the plugin


def deterministic_teacher(teacher) -> None:
    def step(body: dict) -> Reply:
        question = next(m["content"] for m in body["messages"] if m["role"] == "user")
        if not any(m["role"] == "tool" for m in body["messages"]):
            return fixed_calls("call_e")(body)
        return Reply(body=completion({"content": f"e, ollama, sk-1234, token-abc123: {question}"}))

    teacher.default_step = step


@pytest.mark.parametrize("key", ["e", "ollama", "sk-1234", "token-abc123"])
def test_a_placeholder_key_leaves_the_dataset_byte_identical(run, teacher, workdir, monkeypatch, key):
    deterministic_teacher(teacher)
    write_prompts(workdir, [{"id": "ab", "prompt": "How do I run ollama with key e?", "metadata": {"e": "sk-1234"}},
                            "token-abc123 and ollama", {"prompt": "metadata everywhere", "metadata": {"ollama": "e"}}])
    assert run().code == 0
    without_key = (workdir / "train.jsonl").read_bytes()
    (workdir / "train.jsonl").unlink()
    monkeypatch.setenv("OPENROUTER_API_KEY", key)
    result = run()
    assert result.code == 0, result.err
    assert (workdir / "train.jsonl").read_bytes() == without_key
    assert run().code == 0 and "Nothing to do" in run().err  # the re-run finds every prompt done


def test_a_key_with_a_line_break_is_refused_at_start_without_showing_it(run, teacher, workdir, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-secretpart\n")
    write_prompts(workdir, ["q"])
    result = run(tools="none")
    assert result.code == 2 and "line break" in result.err and "secretpart" not in result.err
    assert not teacher.requests


def test_a_password_in_the_base_url_is_never_printed(workdir, teacher):
    write_prompts(workdir, [f"q{i}" for i in range(25)])
    dead = f"http://user:HUNTER2SECRET@127.0.0.1:{free_port()}/api/v1"
    dry = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", dead, "--dry-run")
    assert dry.code == 0 and "HUNTER2SECRET" not in dry.out + dry.err and "user:***@" in dry.out
    stopped = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", dead, "-c", "1",
                         "--retries", "0", "--backoff", "0.01")
    assert stopped.code == 1 and "cannot reach" in stopped.err and "HUNTER2SECRET" not in stopped.err
