"""HTTP transport: TLS and proxies (nginx in the path), connections kept alive and lost, decoding and the size
cap, streams (server-sent events) cut, stalled or hostile, slow and dripping teachers. Judging answers: what a
status, an error body and its headers mean (judge_answer's table)."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading

import httpx
import pytest

import real_path
from conftest import (
    FAILURES,
    SCRIPT,
    Result,
    launch,
    read_all_that_came,
    read_jsonl,
    stopped,
    subprocess_env,
    write_prompts,
)
from fake_teacher import FakeTeacher, Reply, adjusted, answer, call_tools, completion, drip, drop, gzip_bomb

import generate_distillation_data as gdd


def test_a_teacher_that_drips_bytes_is_cut_at_the_deadline_and_retried(run, teacher, workdir):
    write_prompts(workdir, ["slow drip"])
    teacher.script("slow drip", drip(0.5, answer("a long answer " * 20)), answer("second try"))
    result = run("--timeout", "1", tools="none")
    assert result.code == 0, result.err
    [record] = read_jsonl(workdir / "train.jsonl")
    assert record["messages"][-1]["content"] == "second try" and len(teacher.requests) == 2
    assert "1 retried" in result.err


def test_through_nginx_with_tls_gzip_and_short_keepalive_every_prompt_is_written(real, workdir):
    """The reported failure: 0 of 40 written behind `gzip on`. The CA comes from SSL_CERT_FILE in .env."""
    prompts = [f"real path question {i}" for i in range(40)]
    write_prompts(workdir, prompts)
    result = real.run_as_users_do(workdir, "prompts.jsonl", "--tools", "none", "-c", "8")
    assert result.code == 0, result.err
    assert (sorted(r["messages"][-1]["content"] for r in result.records())
            == sorted(f"Answer to: {p}" for p in prompts))
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
        process = subprocess.Popen([sys.executable, str(SCRIPT), "prompts.jsonl", "--tools", "none",
                                    "--base-url", teacher.base_url], cwd=workdir, env=subprocess_env(),
                                   stdout=subprocess.DEVNULL, stderr=err)
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


def test_two_dead_kept_alive_connections_in_a_row_are_both_resent_without_a_retry(run, teacher, workdir):
    """Two connections kept alive from two answers at once, both dead when the next turn goes out (as a real
    llama-server at -c 8 did, about 1 request in 800): the turn goes on a third, new connection."""
    write_prompts(workdir, ["two turns", "quick"])
    teacher.script("two turns", adjusted(call_tools(("add", {"a": 1, "b": 2})), delay=0.3),
                   drop(), drop(), answer("on a new connection"))
    teacher.script("quick", adjusted(answer("first"), delay=0.1))
    result = run("-c", "2", "--start-concurrency", "2", "--retries", "0", "--no-stream")
    assert result.code == 0, result.err
    assert "internal error" not in result.err and "0 retried" in result.err
    assert {r["messages"][-1]["content"] for r in result.records()} == {"first", "on a new connection"}
    assert len(teacher.requests_for("two turns")) == 4


def test_a_server_that_takes_the_request_and_says_nothing_is_left_after_the_stall_timeout(run, teacher,
                                                                                          workdir):
    """llama-server after SIGTERM keeps connections open and sends nothing: a streamed request is retried
    after --stall-timeout, not after the whole --timeout (the test's own timeout would end first); an
    unstreamed one may rightly send nothing until its answer is whole, so it has the whole --timeout."""
    write_prompts(workdir, ["silent"])
    silent = adjusted(answer("too late"), delay=120, cut_after=10**6)  # no status line for two minutes
    teacher.script("silent", silent, answer("on the retry"))
    result = run("--stall-timeout", "1", "--retries", "1", subprocess=True, timeout=60)
    assert result.code == 0, result.err
    assert result.records()[0]["messages"][-1]["content"] == "on the retry" and "1 retried" in result.err
    write_prompts(workdir, ["quiet"])
    teacher.script("quiet", adjusted(answer("whole, after 2 s"), delay=2))
    unstreamed = run("--no-stream", "--stall-timeout", "1", "-o", "whole.jsonl", subprocess=True)
    assert unstreamed.code == 0 and "0 retried" in unstreamed.err, unstreamed.err


LLAMA_CPP_CONTEXT = {"error": {"code": 400, "message": "request (4476 tokens) exceeds the available context "
                               "size (4096 tokens)", "type": "exceed_context_size_error",
                               "n_prompt_tokens": 4476, "n_ctx": 4096}}


def test_a_context_overflow_mid_rollout_is_named_and_no_rerun_is_advised(run, teacher, workdir):
    """llama.cpp's server answers 400 naming the context when a rollout's turns outgrow it: the rollout fails
    as "does not fit the context", once, and the summary does not send the user round again."""
    write_prompts(workdir, ["grows", "fits"])
    teacher.script("grows", call_tools(("add", {"a": 1, "b": 2})), lambda body: Reply(400, LLAMA_CPP_CONTEXT))
    result = run(subprocess=True)
    assert result.code == 1
    [failed] = result.failed()
    assert failed["kind"] == "does not fit the context" and "4096 tokens" in failed["reason"]
    assert len(teacher.requests_for("grows")) == 2  # not retried: it cannot fit on another try
    assert "Cannot finish as they are: 1 rollout whose conversation does not fit" in result.err
    assert "Re-run the same command" not in result.err and "Traceback" not in result.err


def test_a_drop_on_a_new_connection_still_spends_a_retry(run, teacher, workdir):
    write_prompts(workdir, ["only"])
    teacher.script("only", drop(), answer("never"))
    result = run("-c", "1", "--retries", "0", tools="none")
    assert result.code == 1 and result.failed()[0]["kind"] == "retries used up (connection)"


def test_an_unreadable_certificate_file_is_a_clear_error_for_an_https_teacher_only(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    (workdir / "not-a-cert.pem").write_text("this is not a certificate\n")
    env = subprocess_env(SSL_CERT_FILE=str(workdir / "not-a-cert.pem"))
    refused = launch(workdir, ["prompts.jsonl", "--tools", "none", "--base-url",
                               "https://127.0.0.1:9/api/v1"],
                     env=env)
    assert refused.code == 2 and "SSL_CERT_FILE" in refused.err and "cannot load certificates" in refused.err
    assert "Traceback" not in refused.err and not (workdir / "train.jsonl").exists()
    plain = run(tools="none", subprocess=True, env=env)  # plain http never uses it
    assert plain.code == 0, plain.err


def tool_then_reasoned_answer(body: dict) -> Reply:
    """A rollout that exercises every streamed piece: reasoning, a tool call with a missing id and
    arguments in pieces, reasoning_details, then an answer with reasoning_content."""
    if not any(m["role"] == "tool" for m in body["messages"]):
        message = {"content": None, "reasoning": "I should add.",
                   "reasoning_details": [{"type": "reasoning.text", "text": "I should add."}],
                   "tool_calls": [{"type": "function",
                                   "function": {"name": "add", "arguments": '{"a": 20, "b": 22}'}},
                                  {"id": "given", "type": "function",
                                   "function": {"name": "shout", "arguments": '{"text": "done"}'}}]}
        return Reply(body=completion(message, "tool_calls"))
    return Reply(body=completion({"content": "It is 42.", "reasoning_content": "20 + 22 = 42."}))


def test_streamed_and_unstreamed_runs_write_the_same_dataset_and_send_the_same_requests(workdir):
    prompts = [f"stream or not {i}" for i in range(3)]
    write_prompts(workdir, prompts)
    datasets, follow_ups = {}, {}
    for mode in ("streamed", "unstreamed"):
        teacher = FakeTeacher(default_step=tool_then_reasoned_answer).start()
        try:
            extra = [] if mode == "streamed" else ["--no-stream"]

            result = launch(workdir, ["prompts.jsonl", "--tools", "tools_small.py", "--base-url",
                                      teacher.base_url, "-c", "1", "-o", f"{mode}.jsonl", *extra])
            assert result.code == 0, result.err
            datasets[mode] = (workdir / f"{mode}.jsonl").read_bytes()
            follow_ups[mode] = [json.dumps({k: v for k, v in body.items()
                                            if k not in ("stream", "stream_options")}, sort_keys=False)
                                for body in teacher.requests]
            assert all(body.get("stream") is (mode == "streamed") or mode == "unstreamed"
                       for body in teacher.requests)
        finally:
            teacher.stop()
    assert datasets["streamed"] == datasets["unstreamed"]
    assert follow_ups["streamed"] == follow_ups["unstreamed"]  # every message sent back, byte for byte
    record = read_jsonl(workdir / "streamed.jsonl")[0]
    assert record["messages"][-1]["reasoning_content"] == "20 + 22 = 42."
    assert [c["id"] for c in record["messages"][1]["tool_calls"]] == ["call_1_0", "given"]


@pytest.mark.parametrize("fault, label", [
    ({"sse_error": {"code": 502, "message": "upstream died"}}, "HTTP 502"),
    ({"sse_error": {"code": 429, "message": "rate limited mid-stream"}}, "HTTP 429"),
    ({"sse_cut": True}, "connection"),
])
def test_a_stream_that_fails_midway_is_retried(run, teacher, workdir, fault, label):
    write_prompts(workdir, ["Faulty stream"])
    teacher.script("Faulty stream", adjusted(answer("first try"), **fault), answer("second try"))
    result = run(tools="none")
    assert result.code == 0, result.err
    assert result.records()[0]["messages"][-1]["content"] == "second try" and "1 retried" in result.err
    if label == "HTTP 429":
        assert "1 answered 429" in result.err  # a 429 that comes late still counts as one
    if "sse_cut" in fault:
        assert "ended before its usage came" in result.err


def test_comments_keep_the_connection_but_a_stream_without_data_stalls(run, teacher, workdir):
    write_prompts(workdir, ["Thinks long", "Stalls"])
    teacher.script("Thinks long", adjusted(answer("worth the wait"), delay=2, keepalive=0.5))
    teacher.script("Stalls", adjusted(answer("never"), sse_stall=6, keepalive=0.3), answer("after a stall"))
    result = run("--stall-timeout", "3", tools="none")
    assert result.code == 0, result.err
    # thinking silently for less than the stall timeout is fine; 6 s of nothing but comments is a stall
    assert (sorted(r["messages"][-1]["content"] for r in result.records())
            == ["after a stall", "worth the wait"])
    assert "1 retried" in result.err and "1 streamed answer ended before its usage came" in result.err


def test_an_answer_whose_usage_event_is_lost_is_kept_and_its_cost_said_unknown(run, teacher, workdir):
    write_prompts(workdir, ["No usage"])
    teacher.script("No usage", adjusted(answer("whole answer"), sse_no_usage=True))
    result = run(tools="none")
    assert result.code == 0 and result.records()[0]["messages"][-1]["content"] == "whole answer"
    assert "0 retried" in result.err and result.err.count("ended before its usage came") == 1


def test_a_server_that_refuses_streams_is_asked_for_whole_answers(workdir):
    teacher = FakeTeacher(streaming=False).start()
    try:
        write_prompts(workdir, [f"q{i}" for i in range(5)])

        result = launch(workdir, ["prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url])
        assert result.code == 0 and len(result.records()) == 5
        assert result.err.count("refused streamed answers") == 1
        assert sum(1 for body in teacher.requests if body.get("stream")) <= 20  # the first wave, then none
    finally:
        teacher.stop()


def test_behind_nginx_with_a_5_s_read_timeout_an_8_s_teacher_writes_every_prompt(workdir, tmp_path):
    """nginx's proxy_read_timeout closes silent requests: streamed answers are never silent."""
    if real_path.nginx_binary() is None:
        pytest.skip("needs nginx, as .ci/run installs it")
    teacher = FakeTeacher(latency=8.0).start()
    front = real_path.NginxFront(teacher.port, tmp_path / "nginx", port=real_path.free_port(),
                                 read_timeout="5s").start()
    try:
        write_prompts(workdir, [f"slow question {i}" for i in range(3)])

        plain = f"http://127.0.0.1:{front.plain_port}/api/v1"
        result = launch(workdir, ["prompts.jsonl", "--tools", "none", "--base-url", plain], timeout=120,
                        env=subprocess_env())
        assert result.code == 0, result.err
        assert len(result.records()) == 3 and "0 retried" in result.err
        unstreamed = launch(workdir, ["prompts.jsonl", "--tools", "none", "--base-url", plain, "--no-stream",
                                      "--retries", "0", "-o", "unstreamed.jsonl", "-n", "1"], timeout=120)
        assert unstreamed.code == 1 and "HTTP 504" in unstreamed.err  # what happened before streaming
    finally:
        front.stop()
        teacher.stop()


def raw_stream(*events: bytes) -> Reply:
    body = b"".join(b"data: " + event + b"\n\n" for event in events) + b"data: [DONE]\n\n"
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
    return Reply(raw_response=head + body)


@pytest.mark.parametrize("event", [
    b"not json at all",
    b"[1, 2, 3]",
    b'{"choices": [{"index": 0, "delta": {"tool_calls": ["not an object"]}}]}',
    b'{"choices": [{"index": 0, "delta": {"reasoning_details": [7]}}]}',
    b'{"choices": [{"index": 0, "delta": {"content": "bad \\ud800 text"}, "finish_reason": "stop"}]}',
])
def test_a_hostile_stream_event_is_a_malformed_answer_and_is_retried(run, teacher, workdir, event):
    write_prompts(workdir, ["Hostile stream"])
    teacher.script("Hostile stream", lambda body: raw_stream(event), answer("clean second try"))
    result = run(tools="none")
    assert result.code == 0, result.err
    assert result.records()[0]["messages"][-1]["content"] == "clean second try" and "1 retried" in result.err


@pytest.mark.parametrize("kind", list(FAILURES))
def test_each_failure_is_retried_on_the_same_connection_pool(run, teacher, workdir, kind):
    write_prompts(workdir, ["flaky", "fine"])
    teacher.script("flaky", FAILURES[kind], answer("second try"))
    result = run("--timeout", "1", tools="none")
    assert "Traceback" not in result.err
    assert result.code == 0, result.err
    assert sorted(r["messages"][-1]["content"] for r in result.records()) == ["Answer to: fine", "second try"]
    assert len(teacher.requests_for("flaky")) == 2 and "1 retried" in result.err


def test_more_connections_than_the_process_may_open_is_a_clear_error(workdir, teacher):
    import resource
    import subprocess
    import sys

    from conftest import SCRIPT

    write_prompts(workdir, ["q"])

    def low():
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    result = subprocess.run([sys.executable, str(SCRIPT), "prompts.jsonl", "--tools", "none", "--base-url",
                             teacher.base_url, "-c", "1000"], cwd=workdir, env=subprocess_env(),
                            capture_output=True, text=True, timeout=60, preexec_fn=low)
    assert result.returncode == 2 and "-c 1000 needs about 1272 open files" in result.stderr
    assert "ulimit -n 1272" in result.stderr and not teacher.requests

    def raised():  # soft < hard: raised
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 4096))

    result = subprocess.run([sys.executable, str(SCRIPT), "prompts.jsonl", "--tools", "none", "--base-url",
                             teacher.base_url, "-c", "1000"], cwd=workdir, env=subprocess_env(),
                            capture_output=True, text=True, timeout=60, preexec_fn=raised)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("hard, said", [
    (256, "too few for any run (the least, -c 1 --tool-concurrency 1, needs about 258)"),
    (270, "room for 14 connections and tool calls together: run with -c 11 --tool-concurrency 3")])
def test_under_a_hard_limit_too_low_for_c_1_the_message_says_what_the_limit_allows(workdir, teacher, hard,
                                                                                   said):
    import resource
    import subprocess
    import sys

    from conftest import SCRIPT

    write_prompts(workdir, ["q"])

    def low():
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    result = subprocess.run([sys.executable, str(SCRIPT), "prompts.jsonl", "--tools", "none", "--base-url",
                             teacher.base_url, "-c", "20"], cwd=workdir, env=subprocess_env(),
                            capture_output=True, text=True, timeout=60, preexec_fn=low)
    assert (result.returncode == 2 and said in result.stderr
            and "Lower -c to 1" not in result.stderr), result.stderr
    assert not teacher.requests and "Traceback" not in result.stderr


def test_an_answer_that_came_whole_while_the_process_was_suspended_is_kept(workdir, teacher):
    """SIGSTOP (scontrol suspend, a laptop asleep), then SIGCONT after --stall-timeout: the answer came whole
    meanwhile and waits, unread, beside a stall timer that is due. The timer runs first; the answer was thrown
    away and paid again (6 requests for 3). Whole is whole (AnswerStream.whole): kept."""
    import signal
    import time

    from conftest import start_script, wait_for

    write_prompts(workdir, ["asleep"])
    hold = threading.Event()
    teacher.script("asleep", adjusted(answer("it came while the process slept"), sse_hold=hold))
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                           "--stall-timeout", "1")
    try:
        wait_for(lambda: teacher.held, what="the answer's first piece")
        wait_for(lambda: read_all_that_came(teacher.held[0], teacher.port), what="the client to read it")
        process.send_signal(signal.SIGSTOP)
        hold.set()
        wait_for(lambda: teacher.answered_at, what="the rest of the answer, sent to the suspended process")
        time.sleep(1.5)  # suspended past --stall-timeout: the condition under test, not a synchronisation
        process.send_signal(signal.SIGCONT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert len(teacher.requests) == 1 and "0 retried" in err
    assert [r["messages"][-1]["content"] for r in read_jsonl(workdir / "train.jsonl")] == \
        ["it came while the process slept"]


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "--no-stream"])
def test_answers_that_came_whole_while_the_process_slept_past_its_timeout_are_kept(workdir, teacher,
                                                                                   streamed):
    """Suspended past --timeout (a task preempted, `scontrol suspend`) while its answers came, whole: on
    waking, the --timeout timer (and aiohttp's own read timer, at --timeout too) ran before the data beside
    it was read, and every answer was thrown away and paid again (6 requests for 3, the summary's cost
    leaving the first answers out). Every deadline reads what already came first (Deadline): each answer is
    kept, once, and counted."""
    import signal
    import time

    from conftest import start_script, wait_for

    prompts = ["asleep 0", "asleep 1", "asleep 2"]
    write_prompts(workdir, prompts)
    hold = threading.Event()
    for prompt in prompts:
        teacher.script(prompt, adjusted(answer(f"{prompt}: it came while the process slept"),
                                        **({"sse_hold": hold} if streamed else {"hold": hold})))
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                           "--timeout", "1", *(() if streamed else ("--no-stream",)))
    try:
        wait_for(lambda: len(teacher.held) == 3, what="every answer begun (or, unstreamed, asked for)")
        if streamed:
            wait_for(lambda: all(read_all_that_came(port, teacher.port) for port in teacher.held),
                     what="the client to read what came")
        process.send_signal(signal.SIGSTOP)
        wait_for(lambda: stopped(process), what="the process to stop")
        hold.set()
        wait_for(lambda: len(teacher.released) == 3, what="the answers, sent whole to the suspended process")
        time.sleep(1.5)  # suspended past --timeout: the condition under test, not a synchronisation
        process.send_signal(signal.SIGCONT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert len(teacher.requests) == 3 and "0 retried" in err, err
    assert sorted(r["messages"][-1]["content"] for r in read_jsonl(workdir / "train.jsonl")) == \
        [f"{p}: it came while the process slept" for p in prompts]
    assert "cost $0.0030" in err and "unknown" not in err  # each answer's usage came with it, and counts


def test_an_answer_that_does_not_come_is_still_left_at_the_timeout(run, teacher, workdir):
    """The other side of reading first: a deadline that comes due with nothing more arrived still ends the
    wait, one look later (--timeout 1: retried, then failed with its reason)."""
    write_prompts(workdir, ["never"])
    teacher.script("never", *[adjusted(answer("too late"), hold=threading.Event())] * 2)
    result = run("--timeout", "1", "--retries", "1", "--no-stream", tools="none", subprocess=True)
    assert result.code == 1 and len(teacher.requests) == 2
    assert result.failed()[0]["kind"] == "retries used up (timeout)" and "within 1 s (--timeout)" in \
        result.failed()[0]["reason"]


# Judging answers: judge_answer's table. Each row: an answer's status, body and headers -> the exception its
# request ends with (None: a 200 to check field by field) and that exception's fields.
KEY = "sk-or-v1-" + "5" * 64
URL = "https://teacher.example/api/v1/chat/completions"


def error(message: str, **fields) -> dict:
    return {"error": {"message": message, **fields}}


def availability(code: str, retryable: bool, **extra) -> dict:
    return {"availability": {"code": code, "retryable": retryable, **extra}}


JUDGED = [
    # 200s: an answer, or an error relayed in one (judged by its code, as 502 without one)
    ("answer", 200, {"choices": [{"message": {"content": "hi"}}]}, {}, None, {}),
    ("answer beside an error", 200, {"choices": [{"message": {}}], "error": {"code": 500}}, {}, None, {}),
    ("200 not JSON", 200, b"<html>oops</html>", {}, gdd.RetryableError,
     {"kind": "malformed answer", "detail": "malformed answer: not a JSON object"}),
    ("200 a JSON list", 200, [1, 2], {}, gdd.RetryableError, {"kind": "malformed answer"}),
    ("200 relaying a 429", 200, {"error": {"code": 429, "message": "slow down"}}, {}, gdd.RetryableError,
     {"kind": "HTTP 429", "detail": "HTTP 429: slow down", "rate_limited": True, "retry_after": None}),
    ("200 relaying a 401", 200, {"error": {"code": 401, "message": "no"}}, {}, gdd.RunStopped,
     {"kind": "key rejected"}),
    ("200 error without a code", 200, error("provider died"), {}, gdd.RetryableError,
     {"kind": "HTTP 502", "detail": "HTTP 502: provider died"}),
    ("200 error with a code not HTTP's", 200, error("odd", code="E42"), {}, gdd.RetryableError,
     {"kind": "HTTP 502"}),
    ("200 error with a bool code", 200, error("odd", code=True), {}, gdd.RetryableError,
     {"kind": "HTTP 502"}),
    ("200 error that says nothing", 200, {"error": {"where": "upstream"}}, {}, gdd.RetryableError,
     {"kind": "HTTP 502", "detail": "HTTP 502: OK"}),  # the answer's own reason phrase stands in
    # 4xx
    ("400", 400, error("bad request for this prompt"), {}, gdd.PromptFailed,
     {"kind": "HTTP 400", "detail": "HTTP 400: bad request for this prompt", "status": 400}),
    ("400 SGLang's shape", 400, {"object": "error", "message": "bad", "type": "BadRequestError", "code": 400},
     {},
     gdd.PromptFailed, {"kind": "HTTP 400", "detail": "HTTP 400: bad"}),
    ("400 without a body", 400, b"", {}, gdd.PromptFailed, {"detail": "HTTP 400: Bad Request"}),
    ("400 from nginx: plain http to https", 400,
     b"<html>The plain HTTP request was sent to HTTPS port</html>", {},
     gdd.RunStopped, {"kind": "not TLS"}),
    ("400 context overflow", 400, error("This model's maximum context length is 4096 tokens",
                                        code="context_length_exceeded"), {}, gdd.PromptFailed,
     {"kind": gdd._DOES_NOT_FIT, "status": 400}),
    ("401", 401, error("User not found."), {}, gdd.RunStopped, {"kind": "key rejected"}),
    ("402", 402, error("Insufficient credits"), {}, gdd.RunStopped, {"kind": "out of credits"}),
    ("402 with Retry-After", 402, error("Insufficient credits"), {"Retry-After": "30"}, gdd.RetryableError,
     {"kind": "HTTP 402", "retry_after": 30.0, "rate_limited": False}),
    ("403 moderation", 403, error("Input was flagged", metadata={"reasons": ["x"], "flagged_input": "..."}),
     {},
     gdd.PromptFailed, {"kind": "HTTP 403", "status": 403}),
    ("403 moderation said in words", 403, error("rejected by moderation"), {}, gdd.PromptFailed,
     {"kind": "HTTP 403"}),
    ("403 a key's budget", 403, error("Key limit exceeded"), {}, gdd.RunStopped, {"kind": "access denied"}),
    ("403 with Retry-After", 403, error("Key limit exceeded"), {"Retry-After": "3"}, gdd.RetryableError,
     {"kind": "HTTP 403", "retry_after": 3.0}),
    ("403 distillation", 403, error("the author does not allow distillation"), {}, gdd.RunStopped,
     {"kind": "not distillable"}),
    ("404", 404, error("No endpoints found"), {}, gdd.PromptFailed, {"kind": "HTTP 404", "status": 404}),
    ("408", 408, error("timeout"), {}, gdd.RetryableError,
     {"kind": "HTTP 408", "rate_limited": False, "retry_after": None, "holds_everyone": True}),
    ("413 too long for the context", 413, error("prompt is too long: 300000 tokens > 200000 maximum"), {},
     gdd.PromptFailed, {"kind": gdd._DOES_NOT_FIT, "status": 413}),
    ("413 too large otherwise", 413, error("payload too large"), {}, gdd.PromptFailed, {"kind": "HTTP 413"}),
    ("418 with Retry-After", 418, error("teapot"), {"Retry-After": "2"}, gdd.RetryableError,
     {"kind": "HTTP 418", "retry_after": 2.0}),
    ("422", 422, error("reasoning_content is not allowed"), {}, gdd.PromptFailed,
     {"kind": "HTTP 422", "status": 422}),
    # 429: who waits, and for how long
    ("429", 429, error("rate limited"), {}, gdd.RetryableError,
     {"kind": "HTTP 429", "rate_limited": True, "retry_after": None, "holds_everyone": True}),
    ("429 Retry-After 1 (rounded)", 429, error("rate limited"), {"Retry-After": "1"}, gdd.RetryableError,
     {"rate_limited": True, "retry_after": 1.0, "holds_everyone": False}),
    ("429 Retry-After 0.5 (exact)", 429, error("rate limited"), {"Retry-After": "0.5"}, gdd.RetryableError,
     {"retry_after": 0.5, "holds_everyone": True}),
    ("429 Retry-After 30", 429, error("rate limited"), {"Retry-After": "30"}, gdd.RetryableError,
     {"retry_after": 30.0, "holds_everyone": True}),
    ("429 Retry-After of hours", 429, error("daily cap"), {"Retry-After": "7200"}, gdd.RunStopped,
     {"kind": "rate limit for hours"}),
    # 5xx
    ("500", 500, error("boom"), {}, gdd.RetryableError, {"kind": "HTTP 500", "rate_limited": False}),
    ("502", 502, b"<html>Bad Gateway</html>", {}, gdd.RetryableError, {"detail": "HTTP 502: Bad Gateway"}),
    ("503", 503, error("overloaded"), {}, gdd.RetryableError, {"kind": "HTTP 503"}),
    ("529", 529, error("overloaded"), {}, gdd.RetryableError, {"kind": "HTTP 529"}),
    ("599", 599, error("odd"), {}, gdd.RetryableError, {"kind": "HTTP 599"}),
    ("503 asking to wait hours", 503, error("maintenance"), {"Retry-After": "7200"}, gdd.RunStopped,
     {"kind": "teacher away for hours"}),
    ("the key in the detail", 500, error(f"upstream said {KEY}"), {}, gdd.RetryableError,
     {"detail": "HTTP 500: upstream said ***"}),
    ("a detail cut at 300", 500, error("x" * 400), {}, gdd.RetryableError,
     {"detail": "HTTP 500: " + "x" * 300 + "..."}),
    # OpenRouter's availability errors: judged by `retryable`, not by the status
    ("availability retryable", 503,
     error("capacity", **availability("temporarily_unavailable", True, retry_after=3)),
     {}, gdd.RetryableError, {"kind": "HTTP 503 temporarily_unavailable", "retry_after": 3.0}),
    ("availability retryable, Retry-After", 503, error("capacity", **availability("busy", True)),
     {"Retry-After": "4"},
     gdd.RetryableError, {"kind": "HTTP 503 busy", "retry_after": 4.0}),
    ("availability: does not fit", 404, error("no endpoint fits", **availability(
        "constraint_filtered", False, constraint="context_length")), {}, gdd.PromptFailed,
     {"kind": gdd._DOES_NOT_FIT}),
    ("availability: the model is gone", 400, error("not a valid model ID", **availability(
        "model_not_found", False, fallback_models=["a/b", "c/d"])), {}, gdd.RunStopped,
     {"kind": "model unavailable"}),
]


@pytest.mark.parametrize("status, body, headers, raised, fields", [row[1:] for row in JUDGED],
                         ids=[row[0] for row in JUDGED])
def test_what_an_answers_status_error_and_headers_mean(status, body, headers, raised, fields):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    judged = gdd.judge_answer(status, gdd.decode_answer(raw), httpx.Headers(headers), raw,
                              lambda text: text.replace(KEY, "***"), URL)
    assert type(judged) is raised if raised is not None else judged is None
    for name, value in fields.items():
        assert getattr(judged, name) == value, name
    if isinstance(judged, gdd.RunStopped):
        assert "re-run the same command" in judged.message.lower()  # every stop says what to do next


def not_tls(reason: str) -> Exception:
    error = __import__("ssl").SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    error.reason = reason  # as OpenSSL's errors carry it
    return error


READ_FAILED = [  # an answer not read whole -> what it means
    (gdd.FirstByteStalled(), gdd.RetryableError, "stalled",
     "not even the answer's head, for 30 s (--stall-timeout)"),
    (gdd.StreamStalled(), gdd.RetryableError, "stalled", "sent no data for 30 s (--stall-timeout)"),
    (TimeoutError(), gdd.RetryableError, "timeout", "no complete answer within 600 s (--timeout)"),
    (gdd.StreamCut("no finish_reason"), gdd.RetryableError, "stream cut", "was cut (no finish_reason)"),
    (gdd.AnswerTooLarge(3 << 20, 1 << 20), gdd.PromptFailed, "answer too large", "larger than 1 MB"),
    (gdd.MalformedAnswer("no choices"), gdd.RetryableError, "malformed answer",
     "malformed answer: no choices"),
]


@pytest.mark.parametrize("error, raised, kind, says", READ_FAILED,
                         ids=[type(row[0]).__name__ for row in READ_FAILED])
def test_what_an_answer_not_read_whole_means(error, raised, kind, says):
    assert isinstance(error, gdd._READ_FAILURES)
    judged = gdd.read_failure(error, stall_timeout=30, timeout=600)
    assert type(judged) is raised and judged.kind == kind and says in judged.detail


@pytest.mark.parametrize("error, stops", [
    (not_tls("WRONG_VERSION_NUMBER"), "not TLS"),  # https:// to a plain-http port
    (not_tls("SSLV3_ALERT_HANDSHAKE_FAILURE"), None),  # a handshake that failed otherwise: retried
    (ConnectionResetError("reset during the handshake"), None),  # the network: retried
])
def test_which_tls_failures_stop_the_run(error, stops):
    judged = gdd.tls_failure(error, "teacher.example", 8443, lambda text: text)
    assert (judged.kind if judged is not None else None) == stops
    if judged is not None:
        assert "teacher.example:8443" in judged.message and "re-run the same command" in judged.message
