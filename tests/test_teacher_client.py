"""The teacher client: which errors are retried, which fail a prompt and which stop the run (OpenRouter's own
among them), malformed answers, and a 200 whose body is an error."""

from __future__ import annotations

import email.utils
import json
import time

import pytest

from conftest import assert_no_traceback, prompt_counts, read_jsonl, run_script, subprocess_env, write_prompts
from fake_teacher import (
    MALFORMED_ANSWERS,
    FakeTeacher,
    Reply,
    answer,
    call_tools,
    completion,
    drop,
    error_body,
    raw,
    slow,
    status,
)


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


TRANSIENT = {
    "429 with Retry-After": status(429, "rate limited", {"Retry-After": "0"}),
    "429 with HTTP-date Retry-After": status(429, "rate limited",
                                             {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
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


@pytest.mark.parametrize("code,advice",
                         [(401, "OPENROUTER_API_KEY"), (402, "credits"), (403, "access denied")])
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


@pytest.mark.parametrize("kind", list(MALFORMED_ANSWERS))
def test_a_malformed_answer_is_retried_then_the_rollout_goes_on(run, teacher, workdir, kind):
    write_prompts(workdir, ["hostile", "fine"])
    teacher.script("hostile", raw(MALFORMED_ANSWERS[kind]), answer("recovered"))
    result = run()
    assert_no_traceback(result.err)
    assert result.code == 0, result.err
    assert sorted(r["messages"][-1]["content"] for r in read_jsonl(workdir / "train.jsonl")) == [
        "Answer to: fine", "recovered"]
    assert len(teacher.requests_for("hostile")) == 2


@pytest.mark.parametrize("kind", ["tool_calls holds null", "lone surrogate in content",
                                  "choices is an object", "not UTF-8"])
def test_a_teacher_that_only_answers_garbage_fails_the_prompt_with_a_reason(run, teacher, workdir, kind):
    write_prompts(workdir, ["hostile", "fine"])
    teacher.script("hostile", *[raw(MALFORMED_ANSWERS[kind])] * 3)
    result = run("--retries", "2")
    assert_no_traceback(result.err)
    assert result.code == 1
    assert [r["messages"][-1]["content"] for r in read_jsonl(workdir / "train.jsonl")] == ["Answer to: fine"]
    [failed] = read_jsonl(workdir / "train.failed.jsonl")
    assert failed["prompt"] == "hostile" and failed["kind"] == "retries used up (malformed answer)"
    assert "malformed" in failed["reason"] or "surrogate" in failed["reason"]
    assert "retries used up (malformed answer) x1" in result.err
    again = run("--retries", "2")  # pending work is retried on the next run, and then it is done
    assert again.code == 0 and set(prompt_counts(workdir).values()) == {1}


def test_an_unreachable_teacher_leaves_no_empty_output(workdir):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_prompts(workdir, [f"q{i}" for i in range(300)])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none",
                        "--base-url", f"http://127.0.0.1:{port}/v1", "--retries", "0")
    assert result.code == 1 and result.err.count("Stopped:") == 1 and result.err.count("Check --") == 1
    assert not (workdir / "train.jsonl").exists()


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


@pytest.mark.parametrize("code", ["model_deprecated", "no_endpoints", "region_restricted",
                                  "free_variant_ended"])
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
                     {"X-RateLimit-Reset": str(int((ahead + 1) * 1000)),
                      "Date": email.utils.formatdate(ahead, usegmt=True)})

    teacher.script("skewed", refused, answer("after the window"))
    result = run()
    assert result.code == 0, result.err
    assert result.records()[0]["messages"][-1]["content"] == "after the window"


# --------------------------------------------------------------------------------------------------
# The teacher's licence: --distillable (OpenRouter's provider.enforce_distillable_text)
# --------------------------------------------------------------------------------------------------

MODELS = [{"id": "open/allowed", "is_trainable_text": True},
          {"id": "closed/forbidden", "is_trainable_text": False}]


def test_distillable_routes_every_request_to_models_that_allow_training_and_says_so(run, teacher, workdir):
    teacher.models = MODELS
    write_prompts(workdir, ["q0", "q1"])
    teacher.script("q0", call_tools(("add", {"a": 1, "b": 2})), answer("3"))
    result = run("-m", "open/allowed", "--distillable", "--extra-body", '{"provider": {"sort": "price"}}',
                 "--export", "hf", subprocess=True)
    assert result.code == 0, result.err
    assert teacher.models_asked == ["/api/v1/models?distillable=true"]
    assert all(body["provider"] == {"sort": "price", "enforce_distillable_text": True}
               for body in teacher.requests)
    assert len(teacher.requests) == 3
    assert result.err.count("Teacher's licence: open/allowed is on OpenRouter's list") == 1
    run_record = read_jsonl(workdir / "train.runs.jsonl")[0]["teacher"]
    assert run_record["licence"] is True and run_record["distillable"] is True
    card = (workdir / "train.hf.README.md").read_text()
    assert "the model is on OpenRouter's list" in card and "enforce_distillable_text" in card


def test_distillable_with_a_teacher_not_on_the_list_stops_before_anything_is_sent(run, teacher, workdir):
    teacher.models = MODELS
    write_prompts(workdir, ["q"])
    result = run("-m", "closed/forbidden", "--distillable", tools="none", subprocess=True)
    assert result.code == 2 and not teacher.requests
    assert "closed/forbidden is not on OpenRouter's list" in result.err
    assert "https://openrouter.ai/models?distillable=true" in result.err and "Traceback" not in result.err
    assert not (workdir / "train.jsonl").exists() and not (workdir / "train.runs.jsonl").exists()
    # nor is anything repaired or added on the way to that exit 2: a torn output, a torn rejected file, a
    # config.yml without the project id rnow needs are all as they were
    write_prompts(workdir, ["q", "r"])
    assert run("-m", "open/allowed", "-n", "1", tools="none").code == 0
    for name in ("train.jsonl", "train.rejected.jsonl"):
        with open(workdir / name, "a") as f:
            f.write('{"metadata": {"prompt_id": "torn"')
    (workdir / "config.yml").write_text("dataset_type: sft\n")
    before = {p.name: p.read_bytes() for p in workdir.iterdir()}
    again = run("-m", "closed/forbidden", "--distillable", tools="none", subprocess=True)
    assert again.code == 2 and {p.name: p.read_bytes() for p in workdir.iterdir()} == before


def vllm_models(path: str) -> dict:
    """vLLM's /v1/models: every model it serves, no `distillable` filter, no licence marks."""
    return {"object": "list", "data": [{"id": "open/allowed", "object": "model", "owned_by": "vllm"}]}


def two_pages(path: str) -> dict:
    """A list in pages (OpenAI's has_more and after): the model is on the second."""
    if "after=" not in path:
        return {"data": [{"id": "a/first", "is_trainable_text": True}], "has_more": True,
                "last_id": "a/first"}
    return {"data": [{"id": "open/allowed", "is_trainable_text": True}], "has_more": False}


def string_mark(path: str) -> dict:
    return {"data": [{"id": "open/allowed", "is_trainable_text": "false"}]}


@pytest.mark.parametrize("models, said, licence", [
    (vllm_models, "the models list could not tell", None),
    (two_pages, "open/allowed is on OpenRouter's list", True),
    (string_mark, "the models list could not tell", None),
], ids=["filter ignored", "in pages", "a string mark"])
def test_distillable_says_only_what_the_models_list_showed(run, teacher, workdir, models, said, licence):
    teacher.models_answer = models
    write_prompts(workdir, ["q"])
    result = run("-m", "open/allowed", "--distillable", "--export", "hf", tools="none", subprocess=True)
    assert result.code == 0, result.err
    assert said in result.err and "Traceback" not in result.err
    assert read_jsonl(workdir / "train.runs.jsonl")[0]["teacher"]["licence"] is licence
    card = (workdir / "train.hf.README.md").read_text()
    assert ("the model is on OpenRouter's list" in card) is (licence is True)
    if models is two_pages:
        assert teacher.models_asked == ["/api/v1/models?distillable=true",
                                        "/api/v1/models?distillable=true&after=a%2Ffirst"]


def deep_list(path: str) -> bytes:
    return b'{"data": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"


def one_byte_at_a_time(path: str) -> Reply:
    """Its head, then a few bytes every 0.2 s: each read comes well within any read timeout."""
    models = {"data": [{"id": "open/allowed", "is_trainable_text": True}] * 50}
    return Reply(200, json.dumps(models).encode(), drip=0.2)


@pytest.mark.parametrize("hostile",
                         ["200,000 levels deep", "next page on another origin", "one byte at a time"])
def test_a_hostile_models_list_never_crashes_holds_or_gets_the_key_elsewhere(run, teacher, workdir, hostile):
    """The list cannot tell, said so; the run goes on (every request still asks for distillable routing)."""
    elsewhere = FakeTeacher().start()
    elsewhere.models = MODELS
    teacher.models_answer = {
        "200,000 levels deep": deep_list, "one byte at a time": one_byte_at_a_time,
        "next page on another origin": lambda path: {"data": [{"id": "a/first", "is_trainable_text": True}],
                                                     "next": elsewhere.base_url + "/models?page=2"}}[hostile]
    write_prompts(workdir, ["q"])
    key = "sk-or-v1-" + "5e" * 32
    try:
        result = run("-m", "open/allowed", "--distillable", "--timeout", "2", tools="none", subprocess=True,
                     env=subprocess_env(OPENROUTER_API_KEY=key))
    finally:
        elsewhere.stop()
    assert result.code == 0, result.err
    assert_no_traceback(result.err)
    assert "Teacher's licence: the models list could not tell" in result.err
    assert not elsewhere.headers  # the key (or anything) never went to the other origin
    assert teacher.requests[0]["provider"] == {"enforce_distillable_text": True}


def test_a_403_naming_distillation_is_a_licence_refusal_not_a_key_problem(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    teacher.script("q", status(403, "This model's outputs may not be used for distillation"))
    result = run("--distillable", tools="none", subprocess=True)
    assert result.code == 1 and "refused the request for its licence (403" in result.err
    assert "access denied" not in result.err and "key's permissions" not in result.err


def test_at_openrouter_the_licence_is_said_without_distillable_too_and_the_card_warns(real, workdir):
    """Through nginx with TLS for openrouter.ai (the models list is asked with the same CA and proxy settings
    as the requests); another server's list cannot tell, so it is asked only with --distillable."""
    real.teacher.models = [*MODELS, {"id": "openai/gpt-4o-mini", "is_trainable_text": False}]
    try:
        write_prompts(workdir, ["licence question"])
        result = real.run_as_users_do(workdir, "prompts.jsonl", "--tools", "none", "--export", "hf")
        assert result.code == 0, result.err
        assert real.teacher.models_asked[-1] == "/api/v1/models?distillable=true"
        # nothing asked of the routing
        assert "provider" not in real.teacher.requests_for("licence question")[0]
        assert "openai/gpt-4o-mini is not on OpenRouter's list" in result.err
        assert "**not** on OpenRouter's list" in (workdir / "train.hf.README.md").read_text()
    finally:
        real.teacher.models = None


def test_another_server_is_not_asked_for_a_models_list_without_distillable(run, teacher, workdir):
    teacher.models = MODELS
    write_prompts(workdir, ["q"])
    result = run("-m", "closed/forbidden", tools="none")
    assert result.code == 0 and not teacher.models_asked and "licence" not in result.err


def test_a_refusal_for_the_licence_mid_run_stops_the_run_saying_what_to_do(run, teacher, workdir):
    # The models list cannot tell here (no such endpoint); the teacher refuses, in words of its own
    write_prompts(workdir, [f"q{i}" for i in range(6)])
    for i in range(6):
        teacher.script(f"q{i}", status(404, "No endpoints found for this model that allow distillation"))
    result = run("--distillable", "-c", "1", "--start-concurrency", "1", tools="none", subprocess=True)
    assert result.code == 1 and len(teacher.requests) == 1, result.err
    assert "Teacher's licence: the models list could not tell" in result.err
    assert "refused the request for its licence" in result.err and "--model" in result.err
    assert result.err.count("refused the request for its licence") == 1


def test_retries_are_spent_with_backoff_until_patience_is_spent():
    """The one owner of both retry loops (a request's, a batch submission's): `retries` retries after the
    first try, each after its backoff (never sooner than the server said); waiting on a busy teacher spends
    none, for as long as the backoff left would have waited in all, then gives up."""
    import generate_distillation_data as gdd

    retries = gdd.Retries(backoff=1.0, retries=2)
    assert retries.left and 0.5 <= retries.next_wait() <= 1.0  # 1 s, with jitter down to half
    assert retries.left and retries.next_wait(retry_after=7.0) == 7.0  # the server's word wins over 2 s
    assert not retries.left and retries.next_wait() is None
    patient = gdd.Retries(backoff=30.0, retries=3)
    assert patient.next_wait() is not None  # one spent: patience is two retries' backoff, 30 + 60 s
    assert patient.wait_within_patience(None) == 0.0 and patient.wait_within_patience(2.5) == 2.5
    assert patient.spent == 1 and patient.left
    impatient = gdd.Retries(backoff=1.0, retries=0)  # no backoff left at all: no patience either
    assert impatient.wait_within_patience(1.0) is None and not impatient.left
