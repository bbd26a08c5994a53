"""OpenRouter as documented in 2026 (../shared/reference/openrouter.md, issue 24): availability errors judged
by `retryable`, any status that says when to retry waited out, X-RateLimit-Reset read on the server's clock,
context compression asked off; and the x-ratelimit-*-requests headers other gateways send, used before
their 429s come."""

from __future__ import annotations

import email.utils
import json
import time

import pytest
from conftest import run_script, subprocess_env, write_prompts
from fake_teacher import FakeTeacher, Reply, answer, completion, status


def availability(code: str, retryable: bool, **extra) -> dict:
    return {"code": code, "retryable": retryable, "requested_models": ["openai/gpt-4o-mini"],
            "docs_url": "https://openrouter.ai/docs/api-reference/errors", **extra}


def test_an_unknown_model_stops_the_run_at_once_naming_the_suggested_models(run, teacher, workdir):
    write_prompts(workdir, [f"q{i}" for i in range(20)])
    teacher.default_step = status(400, "openai/gpt-4o-mni is not a valid model ID", availability=availability(
        "model_not_found", False, fallback_models=["openai/gpt-4o-mini", "openai/gpt-4.1-mini"]))
    result = run(subprocess=True)
    assert result.code == 1, result.err
    assert result.err.count("OpenRouter suggests instead: openai/gpt-4o-mini, openai/gpt-4.1-mini") == 1
    assert len(teacher.requests) <= 4  # the first requests of slow start, not one per prompt
    assert not result.failed()  # not the prompts' fault: they stay pending
    assert "Traceback" not in result.err


@pytest.mark.parametrize("code", ["model_deprecated", "no_endpoints", "region_restricted", "free_variant_ended"])
def test_availability_errors_about_the_model_stop_the_run(run, teacher, workdir, code):
    write_prompts(workdir, ["a", "b"])
    teacher.default_step = status(404, "gone", availability=availability(code, False))
    result = run()
    assert result.code == 1 and code in result.err and "--model" in result.err


def test_a_conversation_too_long_for_the_context_fails_only_its_rollout(run, teacher, workdir):
    write_prompts(workdir, ["long one", "short one"])
    teacher.script("long one", status(404, "no endpoint fits", availability=availability(
        "constraint_filtered", False, constraint="context_length")))
    result = run()
    assert result.code == 1  # one failed
    assert [r["metadata"]["prompt_id"] for r in result.records()] and len(result.records()) == 1
    [failed] = result.failed()
    assert "does not fit the context" in json.dumps(failed)


def test_a_retryable_availability_error_waits_its_retry_after(run, teacher, workdir):
    write_prompts(workdir, ["busy"])
    teacher.script("busy", status(503, "capacity", availability=availability(
        "temporarily_unavailable", True, retry_after=0.2)), answer("after the wait"))
    result = run()
    assert result.code == 0, result.err
    assert result.records()[0]["messages"][-1]["content"] == "after the wait"
    first, second = teacher.received_at[:2]
    assert second - first >= 0.2  # waited what it was told, not the backoff


def test_a_402_that_says_when_to_retry_is_waited_out_and_a_plain_one_stops(run, teacher, workdir):
    write_prompts(workdir, ["later", "never"])
    teacher.script("later", status(402, "budget refills soon", {"Retry-After": "1"}), answer("paid later"))
    result = run("-c", "1", "-n", "1")
    assert result.code == 0, result.err
    assert result.records()[0]["messages"][-1]["content"] == "paid later"
    teacher.script("never", status(402, "no credits"))
    result = run("-c", "1")
    assert result.code == 1 and "out of credits" in result.err


def test_a_server_clock_11_minutes_ahead_does_not_turn_a_short_window_into_a_stop(run, teacher, workdir):
    """X-RateLimit-Reset is epoch ms on the server's clock: read against its Date, a 1 s window is 1 s."""
    write_prompts(workdir, ["skewed"])
    ahead = time.time() + 660

    def refused(body: dict) -> Reply:
        return Reply(429, {"error": {"code": 429, "message": "rate limited"}},
                     {"X-RateLimit-Reset": str(int((ahead + 1) * 1000)), "Date": email.utils.formatdate(ahead, usegmt=True)})

    teacher.script("skewed", refused, answer("after the window"))
    result = run()
    assert result.code == 0, result.err
    assert result.records()[0]["messages"][-1]["content"] == "after the window"


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


class RemainingRequests:
    """A gateway's requests-per-window meter that says what is left on every answer, as OpenAI, Groq and
    LiteLLM's proxy do (x-ratelimit-limit-requests, x-ratelimit-remaining-requests, and OpenAI's
    x-ratelimit-reset-requests), and answers 429 without Retry-After once the window is spent."""

    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.started, self.count = time.monotonic(), 0

    def _roll(self) -> None:
        now = time.monotonic()
        if now - self.started >= self.window:
            self.started += (now - self.started) // self.window * self.window
            self.count = 0

    def headers(self) -> dict:
        self._roll()
        left = self.started + self.window - time.monotonic()
        return {"x-ratelimit-limit-requests": str(self.limit),
                "x-ratelimit-remaining-requests": str(self.limit - self.count),
                "x-ratelimit-reset-requests": f"{max(left, 0.001):.3f}s"}

    def admit(self) -> dict | None:
        self._roll()
        if self.count < self.limit:
            self.count += 1
            return None
        return {}  # a 429 that says nothing about when


def test_remaining_requests_headers_hold_requests_for_the_window_instead_of_429s(workdir):
    meter = RemainingRequests(limit=10, window=1.0)

    def with_budget(body: dict) -> Reply:
        return Reply(body=completion({"content": "ok"}), headers=meter.headers())

    server = FakeTeacher(default_step=with_budget, meter=meter, latency=0.02).start()
    try:
        write_prompts(workdir, [f"q{i}" for i in range(40)])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url, "-c", "16")
        assert result.code == 0, result.err
        assert len(result.records()) == 40
        assert server.rejected <= 4, f"{server.rejected} refused: the headers said what was left"
    finally:
        server.stop()
