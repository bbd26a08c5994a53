"""The HTTP transport (httpx over aiohttp) maps every way a connection can fail to a retry, against the
loopback teacher: the rollout is written once the teacher answers, nothing is lost, no traceback."""

from __future__ import annotations

import pytest
from conftest import subprocess_env, run_script, write_prompts
from fake_teacher import FakeTeacher, Reply, adjusted, answer, drip, raw, status

FAILURES = {
    "dropped before answering": lambda body: Reply(drop=True),
    "dropped mid-body": adjusted(answer("a long answer " * 50), cut_after=40),
    "connection reset": lambda body: Reply(reset=True),
    "garbage instead of HTTP": lambda body: Reply(raw_response=b"HELLO THERE\r\n\r\n"),
    "a bad status line": lambda body: Reply(raw_response=b"HTTP/1.1 abc Broken\r\nContent-Length: 0\r\n\r\n"),
    "429 with Retry-After": status(429, "slow down", headers={"Retry-After": "0"}),
    "non-JSON 200": raw(b"<html>gateway hiccup</html>"),
    "slow drip past the deadline": drip(0.5, answer("dripped " * 40)),
    "503": status(503, "overloaded"),
}


@pytest.mark.parametrize("kind", list(FAILURES))
def test_each_failure_is_retried_on_the_same_connection_pool(run, teacher, workdir, kind):
    write_prompts(workdir, ["flaky", "fine"])
    teacher.script("flaky", FAILURES[kind], answer("second try"))
    result = run("--timeout", "1", tools="none")
    assert "Traceback" not in result.err
    assert result.code == 0, result.err
    assert sorted(r["messages"][-1]["content"] for r in result.records()) == ["Answer to: fine", "second try"]
    assert len(teacher.requests_for("flaky")) == 2 and "1 retried" in result.err


def test_connection_errors_never_carry_the_key(workdir):
    key = "sk-or-v1-" + "fedcba9876543210" * 4
    server = FakeTeacher(default_step=FAILURES["garbage instead of HTTP"]).start()
    try:
        write_prompts(workdir, ["q"])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url, "--retries",
                            "1", "--backoff", "0.01", env=subprocess_env(OPENROUTER_API_KEY=key))
        assert result.code == 1 and "connection problem" in (workdir / "train.failed.jsonl").read_text()
        everything = result.err + result.out + (workdir / "train.failed.jsonl").read_text()
        assert key[12:40] not in everything
    finally:
        server.stop()


def test_more_connections_than_the_process_may_open_is_a_clear_error(workdir, teacher):
    import resource
    import subprocess
    import sys

    from conftest import SCRIPT

    write_prompts(workdir, ["q"])
    low = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))  # noqa: E731
    result = subprocess.run([sys.executable, str(SCRIPT), "prompts.jsonl", "--tools", "none", "--base-url",
                             teacher.base_url, "-c", "1000"], cwd=workdir, env=subprocess_env(), capture_output=True,
                            text=True, timeout=60, preexec_fn=low)
    assert result.returncode == 2 and "-c 1000 needs about 1272 open files" in result.stderr
    assert "ulimit -n 1272" in result.stderr and not teacher.requests
    raised = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, 4096))  # noqa: E731  (soft < hard: raised)
    result = subprocess.run([sys.executable, str(SCRIPT), "prompts.jsonl", "--tools", "none", "--base-url",
                             teacher.base_url, "-c", "1000"], cwd=workdir, env=subprocess_env(), capture_output=True,
                            text=True, timeout=60, preexec_fn=raised)
    assert result.returncode == 0, result.stderr
