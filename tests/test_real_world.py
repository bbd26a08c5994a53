"""What the loopback teacher alone hid (issue 16): the network path users really have (TLS, a compressing
proxy, stale keep-alive connections, placeholder keys), and runs as people run them (a dropped SSH
session, closed streams, log files, odd output paths, a crashing browser, a file edited mid-run)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import socket
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest
from conftest import SCRIPT, Result, count_lines, launch, read_jsonl, run_script, subprocess_env, write_prompts
from fake_teacher import Reply, answer, call_tools, completion, drop, gzip_bomb, slow, status
from real_path import free_port

import generate_distillation_data as gdd

# ==================================================================================================
# The network path
# ==================================================================================================


def test_through_nginx_with_tls_gzip_and_short_keepalive_every_prompt_is_written(real, workdir):
    """The reported failure: 0 of 40 written behind `gzip on`. The CA comes from SSL_CERT_FILE in .env."""
    prompts = [f"real path question {i}" for i in range(40)]
    write_prompts(workdir, prompts)
    (workdir / ".env").write_text(f"SSL_CERT_FILE={real.front.certificates.bundle}\nOPENROUTER_API_KEY=sk-or-v1-test\n")
    args = ["prompts.jsonl", "--tools", "none", "-c", "8"]
    if not real.front.is_default_url:
        args += ["--base-url", real.front.base_url]
    env = {k: v for k, v in subprocess_env().items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    result = real.run(workdir, *args, env=env)
    assert result.code == 0, result.err
    assert sorted(r["messages"][-1]["content"] for r in result.records()) == sorted(f"Answer to: {p}" for p in prompts)
    assert "gzip" in real.teacher.headers[-1].get("accept-encoding", "")  # as nginx passed it on


def test_without_the_proxy_ca_the_run_stops_at_once_saying_what_to_do(real, workdir):
    write_prompts(workdir, [f"untrusted {i}" for i in range(30)])
    before = len(real.teacher.requests)
    env = subprocess_env(OPENROUTER_API_KEY="sk-or-v1-test")
    env.pop("SSL_CERT_FILE", None)
    result = real.run(workdir, "prompts.jsonl", "--tools", "none", "--base-url", real.front.base_url, env=env)
    assert result.code == 1
    assert "could not be verified" in result.err and "SSL_CERT_FILE" in result.err
    assert result.err.count("Stopped:") == 1 and "0 retried" in result.err
    assert len(real.teacher.requests) == before  # nothing reached the teacher
    assert not (workdir / "train.failed.jsonl").exists()  # nothing was paid: every prompt is simply pending


def test_https_to_a_plain_http_port_stops_the_run_naming_the_fix(run, teacher, workdir):
    write_prompts(workdir, ["q1", "q2"])
    result = run("--base-url", f"https://127.0.0.1:{teacher.port}/api/v1", tools="none")
    assert result.code == 1 and "does not speak TLS" in result.err and "http://" in result.err
    assert "0 retried" in result.err


def test_plain_http_to_an_https_port_stops_the_run_naming_the_fix(run, real, workdir):
    write_prompts(workdir, ["q1"])
    result = run("--base-url", f"http://127.0.0.1:{real.front.port}/api/v1", tools="none")
    assert result.code == 1 and "https://" in result.err and "served over https" in result.err


def test_a_reset_during_the_tls_handshake_stays_retryable(run, workdir):
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def reset_every_connection():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

    thread = threading.Thread(target=reset_every_connection, daemon=True)
    thread.start()
    try:
        write_prompts(workdir, ["q1"])
        result = run("--base-url", f"https://127.0.0.1:{server.getsockname()[1]}/api/v1", "--retries", "2",
                     tools="none")
    finally:
        stop.set()
        thread.join()
        server.close()
    assert result.code == 1 and "2 retried" in result.err
    [failed] = result.failed()
    assert failed["kind"] == "retries used up (connection)"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "deflate-raw"])
def test_compressed_answers_are_decoded(run, teacher, workdir, encoding):
    write_prompts(workdir, ["Compress me"])
    teacher.script("Compress me", lambda body: Reply(body=completion({"content": "decoded " * 100}),
                                                      encoding=encoding))
    result = run(tools="none")
    assert result.code == 0, result.err
    assert result.records()[0]["messages"][-1]["content"] == "decoded " * 100


def test_an_encoding_that_was_not_asked_for_is_a_malformed_answer(run, teacher, workdir):
    write_prompts(workdir, ["Brotli"])
    teacher.script("Brotli", *[lambda body: Reply(body=b"\x1b\x03\x00", encoding="br")] * 2)
    result = run("--retries", "1", tools="none")
    [failed] = result.failed()
    assert failed["kind"] == "retries used up (malformed answer)" and "br" in failed["reason"]
    assert "gzip, deflate" == teacher.headers[-1]["accept-encoding"]


def test_an_answer_over_the_size_cap_fails_its_prompt_without_a_retry(run, teacher, workdir):
    write_prompts(workdir, ["Huge", "Small"])
    teacher.script("Huge", lambda body: Reply(body=completion({"content": "x" * (3 << 20)})))
    result = run("--max-answer-mb", "1", tools="none")
    assert result.code == 1
    [failed] = result.failed()
    assert failed["kind"] == "answer too large" and "--max-answer-mb" in failed["reason"]
    assert len(teacher.requests_for("Huge")) == 1 and len(result.records()) == 1


def test_a_compression_bomb_costs_the_cap_not_the_machines_memory(workdir, teacher):
    """512 MB of zeros in half a megabyte of gzip: the default cap (64 MB) stops it, in bounded memory."""
    bomb = gzip_bomb(512 << 20)
    write_prompts(workdir, ["Bomb", "Fine"])
    teacher.script("Bomb", lambda body: Reply(body=bomb, encoding="identity",
                                               headers={"Content-Encoding": "gzip"}))
    with open(workdir / "err.log", "w") as err:
        process = subprocess.Popen([sys.executable, str(SCRIPT), "prompts.jsonl", "--tools", "none", "--base-url",
                                    teacher.base_url], cwd=workdir, env=subprocess_env(), stdout=subprocess.DEVNULL,
                                   stderr=err)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
        process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 1, (workdir / "err.log").read_text()
    [failed] = Result(1, "", "", workdir).failed()
    assert failed["kind"] == "answer too large" and len(teacher.requests_for("Bomb")) == 1
    assert usage.ru_maxrss / 1024 < 400, f"{usage.ru_maxrss / 1024:.0f} MB"


def test_a_request_lost_on_a_stale_kept_alive_connection_is_resent_without_a_retry(run, teacher, workdir):
    write_prompts(workdir, ["first", "second"])
    teacher.script("second", drop(), answer("resent"))  # the server closes the kept-alive connection
    result = run("-c", "1", "--retries", "0", tools="none")
    assert result.code == 0, result.err
    assert [r["messages"][-1]["content"] for r in result.records()] == ["Answer to: first", "resent"]
    assert "0 retried" in result.err


def test_a_drop_on_a_new_connection_still_spends_a_retry(run, teacher, workdir):
    write_prompts(workdir, ["only"])
    teacher.script("only", drop(), answer("never"))
    result = run("-c", "1", "--retries", "0", tools="none")
    assert result.code == 1 and result.failed()[0]["kind"] == "retries used up (connection)"


# ==================================================================================================
# What the teacher says: reasoning_content, refusals, tool-call ids
# ==================================================================================================


def test_reasoning_content_is_kept_in_the_dataset_and_sent_back_as_received(run, teacher, workdir):
    write_prompts(workdir, ["Think"])
    first = {"content": None, "reasoning_content": "I should add.", "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]}
    teacher.script("Think", lambda body: Reply(body=completion(first, "tool_calls")),
                   lambda body: Reply(body=completion({"content": "3", "reasoning_content": "It is 3."})))
    result = run()
    assert result.code == 0, result.err
    messages = result.records()[0]["messages"]
    assert [m.get("reasoning_content") for m in messages if m["role"] == "assistant"] == ["I should add.", "It is 3."]
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
    assert "reasoning_content" in requests[1]["messages"][1] and "reasoning_content" not in requests[2]["messages"][1]
    assert result.records()[0]["messages"][1]["reasoning_content"] == "plan"  # the dataset keeps it
    assert result.err.count("refused `reasoning_content`") == 1


def test_a_refusal_keeps_its_text(run, teacher, workdir):
    write_prompts(workdir, ["Forbidden"])
    teacher.script("Forbidden", lambda body: Reply(body=completion({"content": None, "refusal": "I can't help."})))
    result = run(tools="none")
    [failed] = result.failed()
    assert failed["kind"] == "incomplete: refusal" and "I can't help." in failed["reason"]
    assert failed["messages"][-1]["refusal"] == "I can't help."


def fixed_calls(*ids: str | None, name: str = "add") -> object:
    calls = [{"type": "function", "function": {"name": name, "arguments": '{"a": 1, "b": 1}'},
              **({"id": i} if i is not None else {})} for i in ids]
    return lambda body: Reply(body=completion({"content": None, "tool_calls": calls}, "tool_calls"))


def test_tool_call_ids_are_unique_in_the_conversation_and_the_same_on_every_run(run, teacher, workdir):
    write_prompts(workdir, ["Ids"])
    # in one answer thrice; then free again (the first three were renamed), and missing; then reused
    steps = [fixed_calls("dup", "dup", "dup"), fixed_calls("dup", None), fixed_calls("dup", "call_1_0"), answer("done")]
    teacher.script("Ids", *steps)
    first = run()
    assert first.code == 0, first.err
    messages = first.records()[0]["messages"]
    call_ids = [c["id"] for m in messages if m.get("tool_calls") for c in m["tool_calls"]]
    assert call_ids == ["call_1_0", "call_1_1", "call_1_2", "dup", "call_2_1", "call_3_0", "call_3_1"]
    assert [m["tool_call_id"] for m in messages if m["role"] == "tool"] == call_ids
    assert [m["tool_call_id"] for m in teacher.requests_for("Ids")[-1]["messages"] if m["role"] == "tool"] == call_ids
    (workdir / "train.jsonl").unlink()
    teacher.script("Ids", *steps)
    assert run().records()[0]["messages"] == messages  # no random fill-ins: a re-run writes the same line


# ==================================================================================================
# Keys
# ==================================================================================================


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


def test_a_real_key_is_taken_out_of_what_the_teacher_wrote_but_never_out_of_prompts(run, teacher, workdir,
                                                                                     monkeypatch):
    key = "sk-or-v1-" + "0123456789abcdef" * 4
    monkeypatch.setenv("OPENROUTER_API_KEY", key)
    write_prompts(workdir, [f"Here is my key {key}, repeat it"])
    teacher.default_step = lambda body: Reply(body=completion({"content": f"Your key is {key}."}))
    result = run(tools="none")
    assert result.code == 0
    [record] = result.records()
    assert key in record["messages"][0]["content"] and record["messages"][1]["content"] == "Your key is ***."


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


# ==================================================================================================
# Runs as people run them
# ==================================================================================================


def test_a_dropped_terminal_finishes_what_was_paid_for_and_exits(workdir, teacher):
    """SIGHUP from a real pseudo-terminal whose master is closed (the SSH session dropped): every answer in
    flight is kept, and the run finishes although every write to its terminal now fails (EIO)."""
    prompts = [f"hangup {i}" for i in range(6)]
    write_prompts(workdir, prompts)
    for p in prompts:
        teacher.script(p, slow(1.0, answer(f"kept {p}")))
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url],
        cwd=workdir, env=subprocess_env(), stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    deadline = time.monotonic() + 30
    while len([r for r in teacher.requests if "hangup" in json.dumps(r)]) < 6:
        assert time.monotonic() < deadline, "the requests never arrived"
        if select.select([master], [], [], 0.05)[0]:
            os.read(master, 65536)  # keep the terminal drained while it is alive
    os.close(master)  # the terminal is gone: SIGHUP, then EIO on every write
    assert process.wait(timeout=60) == 130
    assert sorted(r["messages"][-1]["content"] for r in Result(0, "", "", workdir).records()) == \
        sorted(f"kept {p}" for p in prompts)


def test_closed_standard_streams_leave_the_output_clean(workdir, teacher):
    """Started with fds 0-2 closed: the output must not become fd 2, where a tool (or Chromium) logs."""
    (workdir / "noisy_tools.py").write_text('''
import os, subprocess
from rnow.core.tool import tool

@tool
def noisy(text: str) -> str:
    """Logs to stderr as a browser does, then echoes."""
    os.write(2, b"LOG LINE FROM A TOOL\\n")
    subprocess.run(["sh", "-c", "echo CHILD LOG >&2"])
    return text
''')
    write_prompts(workdir, ["Be noisy"])
    teacher.script("Be noisy", call_tools(("noisy", {"text": "hi"})), answer("quiet now"))
    process = subprocess.run(["bash", "-c", 'exec "$@" <&- >&- 2>&-', "bash", sys.executable, str(SCRIPT),
                              "prompts.jsonl", "--tools", "noisy_tools.py", "--base-url", teacher.base_url],
                             cwd=workdir, env=subprocess_env(), timeout=60)
    assert process.returncode == 0
    assert "LOG" not in (workdir / "train.jsonl").read_text()
    assert [record["messages"][-1]["content"] for record in read_jsonl(workdir / "train.jsonl")] == ["quiet now"]


def test_stderr_closed_alone_still_runs(workdir, teacher):
    write_prompts(workdir, ["q1", "q2"])
    process = subprocess.run(["bash", "-c", 'exec "$@" 2>&-', "bash", sys.executable, str(SCRIPT), "prompts.jsonl",
                              "--tools", "none", "--base-url", teacher.base_url], cwd=workdir, env=subprocess_env(),
                             timeout=60, capture_output=False, stdout=subprocess.DEVNULL)
    assert process.returncode == 0 and count_lines(workdir / "train.jsonl") == 2


def test_a_log_file_gets_the_plan_first_and_progress_with_rate_and_eta(run, workdir, teacher):
    write_prompts(workdir, ["q1", "q2"])
    result = run(tools="none", subprocess=True)
    assert result.err.splitlines()[0].startswith("Running 2 rollouts with openai/gpt-4o-mini at http://127.0.0.1")
    progress = gdd.Progress(100, 10, gdd.Stats(), gdd.AdaptiveLimiter(4))
    progress.started -= 60
    progress.finished = 40
    assert progress.pace() == " (30.0/min, about 2m00s left)"


@pytest.mark.parametrize("kind", ["fifo", "/dev/full", "/dev/zero"])
def test_an_output_that_is_not_a_regular_file_is_refused(run, workdir, teacher, kind):
    write_prompts(workdir, ["q"])
    output = kind
    if kind == "fifo":
        os.mkfifo(workdir / "fifo")
    result = run("-o", output, tools="none", timeout=30, subprocess=True)
    assert result.code == 2 and "must be a regular file" in result.err and not teacher.requests


def test_rewrites_go_through_a_symlinked_output_to_its_target(run, teacher, workdir):
    (workdir / "data").mkdir()
    target = workdir / "data" / "real.jsonl"
    write_prompts(workdir, ["a", "b"])
    assert run("-o", "data/real.jsonl", tools="none").code == 0
    target.write_text(target.read_text() + "torn line\n")
    os.symlink("data/real.jsonl", workdir / "train.jsonl")
    result = run(tools="none")  # the repair rewrites the file without the bad line
    assert result.code == 0 and (workdir / "train.jsonl").is_symlink()
    assert count_lines(target) == 2 and "torn line" not in target.read_text()


# ==================================================================================================
# Tools that say their machinery failed
# ==================================================================================================

FLAKY_TOOLS = '''
from pathlib import Path
from rnow.core.tool import tool

class ToolUnavailable(Exception):
    pass

@tool
def lookup(term: str) -> str:
    """Look a term up in a service that may be down."""
    if Path("service-down").exists():
        raise ToolUnavailable("the lookup service is down")
    return f"{term}: found"
'''


def test_a_tool_that_says_it_is_unavailable_fails_the_rollout_and_the_rerun_writes_it(run, teacher, workdir):
    (workdir / "flaky_tools.py").write_text(FLAKY_TOOLS)
    (workdir / "service-down").touch()
    write_prompts(workdir, ["Look it up"])
    step = call_tools(("lookup", {"term": "x"}))
    teacher.script("Look it up", step, answer("never written"))
    first = run(tools="flaky_tools.py")
    assert first.code == 1 and not first.records()
    assert first.failed()[0]["kind"] == "tool unavailable" and "service is down" in first.failed()[0]["reason"]
    (workdir / "service-down").unlink()
    teacher.script("Look it up", step, answer("found it"))
    second = run(tools="flaky_tools.py")
    assert second.code == 0 and [r["messages"][-1]["content"] for r in second.records()] == ["found it"]


def test_a_tool_down_for_good_stops_the_run(run, teacher, workdir):
    (workdir / "flaky_tools.py").write_text(FLAKY_TOOLS)
    (workdir / "service-down").touch()
    write_prompts(workdir, [f"Look up {i}" for i in range(30)])
    teacher.default_step = call_tools(("lookup", {"term": "x"}))
    result = run("-c", "1", tools="flaky_tools.py")
    assert result.code == 1 and "in a row failed because a tool was unavailable" in result.err
    assert len(teacher.requests) < 20


# ==================================================================================================
# Files changed under the run, rescore's crash window, the spend cap, the report
# ==================================================================================================


def test_a_prompts_file_rewritten_during_the_run_stops_it_naming_the_line(run, teacher, workdir):
    (workdir / "rewriting_tools.py").write_text('''
from pathlib import Path
from rnow.core.tool import tool

@tool
def rewrite(text: str) -> str:
    """Rewrite the prompts file as `cat new > prompts.jsonl` does."""
    Path("prompts.jsonl").write_text("".join('{"prompt": "other prompt number %d"}\\n' % i for i in range(40)))
    return "rewritten"
''')
    write_prompts(workdir, [f"original {i}" for i in range(12)])
    teacher.script("original 0", call_tools(("rewrite", {"text": "x"})), answer("done"))
    result = run("-c", "1", tools="rewriting_tools.py")
    assert result.code == 1 and "prompts.jsonl:" in result.err and "was changed during the run" in result.err
    assert not any("other prompt" in json.dumps(r) for r in teacher.requests + result.failed() + result.records())


def test_rescore_after_a_crash_between_its_replaces_keeps_each_rollout_once(run, teacher, workdir):
    (workdir / "rewards.py").write_text('''
from pathlib import Path
from rnow.core import RewardArgs, reward

@reward
def fixed(args: RewardArgs, messages: list) -> float:
    return float(Path("score").read_text())
''')
    (workdir / "score").write_text("1")
    write_prompts(workdir, [f"q{i}" for i in range(5)])
    assert run("--rewards", "rewards.py", "--min-reward", "0.5", tools="none").code == 0
    output, rejected = workdir / "train.jsonl", workdir / "train.rejected.jsonl"
    rejected.write_bytes(output.read_bytes())  # a kill right after the rejected file was replaced
    (workdir / "score").write_text("0")
    assert run("--rewards", "rewards.py", "--min-reward", "0.5", "--rescore", tools="none").code == 0
    assert count_lines(output) == 0 and count_lines(rejected) == 5
    rejected.write_bytes(rejected.read_bytes() * 2)  # and again: duplicates of the same attempt
    assert run("--rewards", "rewards.py", "--min-reward", "0.5", "--rescore", tools="none").code == 0
    assert count_lines(rejected) == 5
    rejected.write_bytes(rejected.read_bytes() * 2)
    before = len(teacher.requests)
    result = run("--rewards", "rewards.py", "--min-reward", "0.5", "--attempts", "2", tools="none")
    assert len(teacher.requests) - before == 5  # one try each is left, not none
    assert result.code == 0


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


def test_the_report_survives_hostile_lines_and_shows_failed_prompts(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    lines = [{"metadata": {"prompt_id": f"p{i}", "sample": 0, "usage": {"cost": 1e308}},
              "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": None,
                                                               "tool_calls": [{"id": "c", "function": "add"}]}]}
             for i in range(3)]
    (workdir / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (workdir / "train.failed.jsonl").write_text(json.dumps(
        {"prompt_id": "f", "sample": 0, "prompt": "What failed here?", "kind": "HTTP 400", "usage": {}}) + "\n")
    result = run("--report", "--no-run", tools="none")
    assert result.code == 0, result.err
    import re

    page = (workdir / "train.report.html").read_text()
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1),
                      parse_constant=lambda name: pytest.fail(f"{name} in the page's JSON"))
    assert data["cost"]["total"] is None
    failed = next(c for c in data["conversations"] if c["state"] == "failed")
    assert failed["messages"][0]["content"] == "What failed here?"


def test_ctrl_c_while_the_report_is_written_says_so(run, teacher, workdir, monkeypatch):
    import distillation_report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distillation_report, "render_report", interrupted)
    write_prompts(workdir, ["q"])
    result = run("--report", tools="none")
    assert result.code == 130 and "while writing the --export/--report files" in result.err
    assert "before any request was sent" not in result.err and count_lines(workdir / "train.jsonl") == 1


# ==================================================================================================
# Rate limits that say when (from issue 18)
# ==================================================================================================


@pytest.mark.parametrize("header", ["Retry-After", "X-RateLimit-Reset"])
def test_a_rate_limit_that_resets_in_hours_stops_the_run_saying_when(run, teacher, workdir, header):
    headers = {header: "3600" if header == "Retry-After" else str(int((time.time() + 86400) * 1000))}
    write_prompts(workdir, [f"capped {i}" for i in range(5)])
    teacher.default_step = status(429, "free-models-per-day", headers)
    result = run("-c", "1", tools="none")
    assert result.code == 1 and result.err.count("rate limit resets in") == 1
    assert ("1h00m00s" if "Retry-After" in headers else "23h59m") in result.err
    assert len(teacher.requests) == 1 and not result.failed()  # nothing paid: every prompt is pending


def test_an_http_date_retry_after_is_read_against_the_servers_clock():
    import httpx

    headers = httpx.Headers({"Date": "Wed, 01 Jan 2025 00:00:00 GMT", "Retry-After": "Wed, 01 Jan 2025 00:00:02 GMT"})
    assert gdd.retry_after_seconds(headers) == 2.0  # not "long ago" by our clock


def test_an_unreadable_certificate_file_is_a_clear_error_for_an_https_teacher_only(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    (workdir / "not-a-cert.pem").write_text("this is not a certificate\n")
    env = subprocess_env(SSL_CERT_FILE=str(workdir / "not-a-cert.pem"))
    refused = launch(workdir, ["prompts.jsonl", "--tools", "none", "--base-url", "https://127.0.0.1:9/api/v1"], env=env)
    assert refused.code == 2 and "SSL_CERT_FILE" in refused.err and "cannot load certificates" in refused.err
    assert "Traceback" not in refused.err and not (workdir / "train.jsonl").exists()
    plain = run(tools="none", subprocess=True, env=env)  # plain http never uses it
    assert plain.code == 0, plain.err
