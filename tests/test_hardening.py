"""Hostile teachers, tools, prompts files, output files and disks: every rollout still ends as exactly one
of a line in the output, an entry in the failed file, or pending (nothing sent); the run ends by itself,
says what happened, and never prints a traceback for something outside the program."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
from conftest import SCRIPT, read_jsonl, run_script, start_script, subprocess_env, wait_for, write_prompts
from fake_teacher import MALFORMED_ANSWERS, FakeTeacher, Reply, answer, call_tools, completion, drip, raw, status

KEY = "sk-or-v1-" + "0123456789abcdef" * 4


def prompt_counts(workdir, output: str = "train.jsonl") -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in read_jsonl(workdir / output):
        prompt = next(m["content"] for m in record["messages"] if m["role"] == "user")
        counts[prompt] = counts.get(prompt, 0) + 1
    return counts


def assert_no_traceback(err: str) -> None:
    assert "Traceback" not in err and "Task exception was never retrieved" not in err, err


# -- 1. malformed answers ----------------------------------------------------------------------------


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


@pytest.mark.parametrize("kind", ["tool_calls holds null", "lone surrogate in content", "choices is an object",
                                  "not UTF-8"])
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


def test_malformed_usage_is_ignored_not_fatal(run, teacher, workdir):
    write_prompts(workdir, ["odd usage", "nan cost"])
    teacher.script("odd usage", lambda body: Reply(body=completion({"content": "fine"}, usage={
        "prompt_tokens": "ten", "completion_tokens": None, "cost": "0.5", "prompt_tokens_details": [1],
        "completion_tokens_details": {"reasoning_tokens": {"x": 1}}, "total_tokens": -4})))
    teacher.script("nan cost", raw(b'{"choices": [{"finish_reason": "stop", "message": {"content": "ok"}}], '
                                   b'"usage": {"prompt_tokens": 7, "completion_tokens": 1e999, "cost": NaN}}'))
    result = run(tools="none")
    assert result.code == 0, result.err
    usages = {r["messages"][0]["content"]: r["metadata"]["usage"] for r in read_jsonl(workdir / "train.jsonl")}
    assert usages["odd usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "reasoning_tokens": 0,
                                   "cached_tokens": 0, "cache_write_tokens": 0, "cost": 0.0,
                                   "cache_savings": 0.0, "requests": 1}
    assert usages["nan cost"]["prompt_tokens"] == 7 and usages["nan cost"]["cost"] == 0.0
    assert b"NaN" not in (workdir / "train.jsonl").read_bytes()


# -- 2. spend of failed rollouts ----------------------------------------------------------------------


def test_spend_of_a_rollout_that_fails_later_is_counted_and_kept(run, teacher, workdir):
    write_prompts(workdir, ["fails on turn 2"])
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "cost": 0.25}
    teacher.script("fails on turn 2", call_tools(("add", {"a": 1, "b": 2}), usage=usage), status(400, "too long"))
    result = run()
    assert result.code == 1
    [failed] = read_jsonl(workdir / "train.failed.jsonl")
    assert failed["usage"]["cost"] == 0.25 and failed["usage"]["prompt_tokens"] == 100
    assert [m["role"] for m in failed["messages"]] == ["user", "assistant", "tool"]  # the partial conversation
    assert "cost $0.2500" in result.err and "100 prompt" in result.err


# -- 3. full disk -------------------------------------------------------------------------------------


def limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_write_error_stops_the_run_leaves_the_file_valid_and_the_rerun_completes(workdir):
    server = FakeTeacher(default_step=lambda body: Reply(body=completion({"content": "x" * 3000}))).start()
    try:
        prompts = [f"prompt {i}" for i in range(40)]
        write_prompts(workdir, prompts)
        args = [sys.executable, str(SCRIPT), "prompts.jsonl", "--tools", "none", "--base-url", server.base_url,
                "-c", "2"]
        first = subprocess.run(args, cwd=workdir, env=subprocess_env(), capture_output=True, text=True, timeout=60,
                               preexec_fn=limit_file_size(20_000))  # room for about six lines
        assert_no_traceback(first.stderr)
        assert first.returncode == 1
        assert "cannot write train.jsonl: File too large" in first.stderr and "re-run the same command" in first.stderr
        written = read_jsonl(workdir / "train.jsonl")  # every line whole, none torn
        assert 0 < len(written) < 40
        # It stopped at once: no more requests than the lines written plus the two in flight.
        assert len(server.requests) <= len(written) + 2 + 2
        second = subprocess.run(args, cwd=workdir, env=subprocess_env(), capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert prompt_counts(workdir) == {p: 1 for p in prompts}
    finally:
        server.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 kB filesystem (tmpfs), when this process may mount one (root, as in CI)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_a_full_disk_stops_the_run_and_the_rerun_after_freeing_space_has_every_prompt_once(workdir, small_disk):
    server = FakeTeacher(default_step=lambda body: Reply(body=completion({"content": "y" * 5000}))).start()
    try:
        prompts = [f"prompt {i}" for i in range(30)]
        write_prompts(workdir, prompts)
        (small_disk / "filler").write_bytes(b"\0" * 8192)
        args = ["prompts.jsonl", "--tools", "none", "--base-url", server.base_url, "-c", "2",
                "-o", str(small_disk / "train.jsonl")]
        first = run_script(workdir, *args)
        assert_no_traceback(first.err)
        assert first.code == 1 and "No space left on device" in first.err
        assert 0 < len(read_jsonl(small_disk / "train.jsonl")) < 30
        subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)  # space freed
        second = run_script(workdir, *args)
        assert second.code == 0, second.err
        assert prompt_counts(small_disk) == {p: 1 for p in prompts}
    finally:
        server.stop()


# -- 4. bad lines in the output -----------------------------------------------------------------------


def test_torn_edited_and_duplicated_lines_are_set_aside_and_their_rollouts_redone(run, teacher, workdir):
    prompts = [f"q{i}" for i in range(6)]
    write_prompts(workdir, prompts)
    assert run(tools="none").code == 0
    lines = (workdir / "train.jsonl").read_bytes().splitlines(keepends=True)
    torn = lines[1][: len(lines[1]) // 2] + b"\n"  # its prefix still looks right
    middle = len(lines[2]) // 2
    edited = lines[2][:middle] + b'"oops" ' + lines[2][middle:]  # a hand edit in the middle; the prefix is intact
    (workdir / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + lines[0] + torn + edited + lines[3] + lines[3]
                                          + b"\n" + lines[4] + lines[5])
    before = len(teacher.requests)
    result = run(tools="none")
    assert_no_traceback(result.err)
    assert result.code == 0, result.err
    assert len(teacher.requests) == before + 2  # the torn and the edited rollouts, nothing else
    assert prompt_counts(workdir) == {p: 1 for p in prompts}
    assert not (workdir / "train.jsonl").read_bytes().startswith(b"\xef\xbb\xbf")
    quarantined = read_jsonl(workdir / "train.quarantine.jsonl")
    assert [q["line"] for q in quarantined] == [2, 3, 5]
    assert "second copy" in quarantined[2]["reason"]
    assert "train.jsonl:2: not valid JSON" in result.err and "train.quarantine.jsonl" in result.err


def test_a_last_line_that_is_whole_but_lacks_its_newline_is_kept(run, teacher, workdir):
    write_prompts(workdir, ["a", "b"])
    assert run(tools="none").code == 0
    path = workdir / "train.jsonl"
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    sent = len(teacher.requests)
    result = run(tools="none")
    assert result.code == 0 and len(teacher.requests) == sent and len(read_jsonl(path)) == 2


def test_an_output_that_is_not_ours_is_refused_not_rewritten(run, teacher, workdir):
    write_prompts(workdir, ["a"])
    (workdir / "notes.jsonl").write_text('{"text": "my own data"}\n')
    result = run("-o", "notes.jsonl", tools="none")
    assert result.code == 2 and "notes.jsonl:1: has no metadata.prompt_id" in result.err and not teacher.requests
    assert (workdir / "notes.jsonl").read_text() == '{"text": "my own data"}\n'


def test_dry_run_reports_bad_lines_without_moving_them(run, teacher, workdir):
    write_prompts(workdir, ["a", "b"])
    assert run(tools="none").code == 0
    content = (workdir / "train.jsonl").read_bytes()
    (workdir / "train.jsonl").write_bytes(content[:20] + b"\n" + content)
    result = run("--dry-run", tools="none")
    assert result.code == 0 and "train.jsonl:1: not valid JSON" in result.err
    assert (workdir / "train.jsonl").read_bytes() == content[:20] + b"\n" + content
    assert not (workdir / "train.quarantine.jsonl").exists()


# -- 5. strict JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize("line, what", [
    ('{"prompt": "p", "metadata": {"score": NaN}}', "NaN is not valid JSON"),
    ('{"prompt": "p", "metadata": {"score": -Infinity}}', "-Infinity is not valid JSON"),
    ('{"prompt": "p", "metadata": {"score": 1e999}}', "too large for a JSON number"),
    ('{"prompt": "bad \\ud800 text"}', "lone surrogate"),
    ('{"prompt": "p", "metadata": {"note": "\\udc00"}}', "lone surrogate"),
])
def test_prompt_lines_that_are_not_strict_json_are_refused(run, teacher, workdir, line, what):
    (workdir / "prompts.jsonl").write_text('{"prompt": "fine"}\n' + line + "\n")
    result = run(tools="none")
    assert result.code == 2 and "prompts.jsonl:2: " in result.err and what in result.err, result.err
    assert_no_traceback(result.err)
    assert not teacher.requests and not (workdir / "train.jsonl").exists()


# -- 6. two runs, one output --------------------------------------------------------------------------


def test_two_runs_started_together_never_write_a_rollout_twice(workdir):
    server = FakeTeacher(latency=0.002).start()
    try:
        prompts = [f"prompt {i}" for i in range(3000)]
        write_prompts(workdir, prompts)
        args = ("prompts.jsonl", "--tools", "none", "--base-url", server.base_url, "-c", "16")
        first, second = start_script(workdir, *args), start_script(workdir, *args)
        results = [process.communicate(timeout=120) + (process.returncode,) for process in (first, second)]
        codes = sorted(code for _, _, code in results)
        assert codes == [0, 2], results
        refused = next(err for _, err, code in results if code == 2)
        assert "is being written by another run" in refused
        assert prompt_counts(workdir) == {p: 1 for p in prompts}
    finally:
        server.stop()


def test_a_second_run_is_refused_before_it_reads_anything(workdir):
    server = FakeTeacher(latency=0.5).start()
    try:
        write_prompts(workdir, [f"q{i}" for i in range(4)])
        args = ("prompts.jsonl", "--tools", "none", "--base-url", server.base_url, "-c", "1")
        first = start_script(workdir, *args)
        wait_for(lambda: server.requests, what="the first run's first request")
        sent = len(server.requests)
        second = run_script(workdir, *args, "-m", "second/run")  # its requests would name this model
        assert second.code == 2 and "being written by another run" in second.err
        assert sent and not [r for r in server.requests if r.get("model") == "second/run"]  # it sent nothing
        first.communicate(timeout=60)
        assert first.returncode == 0 and set(prompt_counts(workdir).values()) == {1}
    finally:
        server.stop()


# -- 7. tools -----------------------------------------------------------------------------------------

HOSTILE_TOOLS = '''
import asyncio, sys, threading
from rnow.core.tool import tool

@tool
def quit_sync(code: int) -> str:
    """Exit."""
    sys.exit(code)

@tool
async def quit_async(code: int) -> str:
    """Exit."""
    sys.exit(code)

@tool
def interrupt() -> str:
    """Raise KeyboardInterrupt."""
    raise KeyboardInterrupt

@tool(timeout=1)
def hang_forever() -> str:
    """Never returns."""
    threading.Event().wait()
    return "never"

@tool(timeout=1)
async def ignore_cancel() -> str:
    """Swallows cancellation."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass

@tool
def raises_surrogate() -> str:
    """Raises with a message that is not valid Unicode."""
    raise ValueError("bad \\udc80 message")

@tool
def circular() -> list:
    """Returns a list that contains itself."""
    value = []
    value.append(value)
    return value

@tool
def surrogate() -> str:
    """Returns text with a lone surrogate."""
    return "bad \\udc80 text"

@tool
def bad_str() -> dict:
    """Returns an object whose str() raises."""
    class Nasty:
        def __str__(self):
            raise RuntimeError("no str")
    return {"x": Nasty()}
'''


@pytest.mark.parametrize("tool, arguments, expected", [
    ("quit_sync", {"code": 0}, "failed: ToolExit: SystemExit(0)"),
    ("quit_async", {"code": 3}, "failed: ToolExit: SystemExit(3)"),
    ("interrupt", {}, "failed: ToolExit: KeyboardInterrupt"),
    ("hang_forever", {}, "timed out after 1 s"),
    ("ignore_cancel", {}, "timed out after 1 s"),
    ("raises_surrogate", {}, "failed: ValueError: bad \\udc80 message"),
    ("circular", {}, "cannot be encoded as text: ValueError: Circular reference"),
    ("surrogate", {}, "cannot be encoded as text: UnicodeEncodeError"),
    ("bad_str", {}, "cannot be encoded as text: RuntimeError: no str"),
])
def test_a_misbehaving_tool_is_an_error_for_that_call_and_the_run_ends_by_itself(workdir, tool, arguments,
                                                                                 expected):
    (workdir / "hostile_tools.py").write_text(HOSTILE_TOOLS)
    server = FakeTeacher().start()
    try:
        write_prompts(workdir, ["use the tool", "other"])
        server.script("use the tool", call_tools((tool, arguments)), answer("done anyway"))
        result = run_script(workdir, "prompts.jsonl", "--tools", "hostile_tools.py", "--base-url", server.base_url,
                            timeout=30)
        assert_no_traceback(result.err)
        assert result.code == 0, result.err
        records = {r["messages"][0]["content"]: r for r in read_jsonl(workdir / "train.jsonl")}
        assert set(records) == {"use the tool", "other"}
        tool_message = records["use the tool"]["messages"][2]
        assert tool_message["role"] == "tool" and expected in tool_message["content"], tool_message
        assert records["use the tool"]["messages"][-1]["content"] == "done anyway"
    finally:
        server.stop()


def test_sys_exit_while_tools_py_is_imported_is_exit_2_naming_the_file(run, teacher, workdir):
    (workdir / "exits.py").write_text("import sys\nfrom rnow.core.tool import tool\n\nsys.exit(0)\n")
    write_prompts(workdir, ["q"])
    result = run(tools="exits.py", subprocess=True)
    assert result.code == 2 and "exits.py:4: calls sys.exit(0) while being imported" in result.err
    assert not teacher.requests and not (workdir / "train.jsonl").exists()


# -- 8. --timeout is a deadline -----------------------------------------------------------------------


def test_a_teacher_that_drips_bytes_is_cut_at_the_deadline_and_retried(run, teacher, workdir):
    write_prompts(workdir, ["slow drip"])
    teacher.script("slow drip", drip(0.5, answer("a long answer " * 20)), answer("second try"))
    result = run("--timeout", "1", tools="none")
    assert result.code == 0, result.err
    [record] = read_jsonl(workdir / "train.jsonl")
    assert record["messages"][-1]["content"] == "second try" and len(teacher.requests) == 2
    assert "1 retried" in result.err


# -- 9. the key never leaks ---------------------------------------------------------------------------


def test_the_key_never_reaches_a_file_or_the_terminal(workdir):
    quoted = f"upstream said: Authorization: Bearer {KEY}"
    server = FakeTeacher().start()
    try:
        write_prompts(workdir, ["mid-answer error", "long error", "echo", "cut by teacher"])
        server.script("mid-answer error", *[lambda body: Reply(body={"choices": [{
            "finish_reason": "error", "error": {"message": quoted}, "message": {"content": ""}}]})] * 2)
        # The key straddles the 300th character, where errors are cut for the failed file.
        server.script("long error", status(400, "x" * 280 + quoted))
        server.script("echo", answer(f"Your header was {KEY}"))
        server.script("cut by teacher", status(400, f"bad key {KEY[:30]}"))
        env = subprocess_env(OPENROUTER_API_KEY=KEY)
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url,
                            "--retries", "1", "--backoff", "0.01", env=env)
        assert result.code == 1
        assert server.headers[0]["authorization"] == f"Bearer {KEY}"  # it was sent, and only sent
        written = result.out + result.err + "".join(p.read_text() for p in workdir.glob("*.jsonl"))
        assert "Authorization: Bearer ***" in written
        for start in range(len(KEY) - 24):  # no 24-character piece of the key's secret part anywhere
            assert KEY[start:start + 24] not in written
    finally:
        server.stop()


# -- 11. smaller ones ---------------------------------------------------------------------------------


def test_a_txt_file_with_a_bom_keeps_no_bom_in_its_first_prompt(run, teacher, workdir):
    (workdir / "prompts.txt").write_bytes(b"\xef\xbb\xbffirst\nsecond\n")
    assert run(tools="none", prompts="prompts.txt").code == 0
    assert sorted(prompt_counts(workdir)) == ["first", "second"]


def test_a_jsonl_file_with_a_bom_reads(run, teacher, workdir):
    (workdir / "prompts.jsonl").write_bytes(b'\xef\xbb\xbf{"prompt": "first"}\n')
    assert run(tools="none").code == 0 and prompt_counts(workdir) == {"first": 1}


def test_a_given_id_equal_to_a_computed_id_is_refused_naming_both_lines(run, teacher, workdir):
    write_prompts(workdir, ["plain"])
    assert run(tools="none").code == 0
    computed = read_jsonl(workdir / "train.jsonl")[0]["metadata"]["prompt_id"]
    write_prompts(workdir, ["plain", "other", {"id": computed, "prompt": "different"}])
    result = run(tools="none")
    assert result.code == 2
    assert f"prompts.jsonl:3: id '{computed}' is also the id of line 1" in result.err
    write_prompts(workdir, [{"id": computed, "prompt": "different"}, "other", "plain"])  # given one first
    result = run(tools="none")
    assert result.code == 2 and f"prompts.jsonl:3: id '{computed}' is also the id of line 1" in result.err


def test_a_given_id_equal_to_a_repeat_number_is_refused(run, teacher, workdir):
    write_prompts(workdir, ["same"])
    run(tools="none")
    computed = read_jsonl(workdir / "train.jsonl")[0]["metadata"]["prompt_id"]
    write_prompts(workdir, [{"id": f"{computed}-2", "prompt": "x"}, "same", "same"])
    result = run(tools="none")
    assert result.code == 2 and f"prompts.jsonl:3: id '{computed}-2' is also the id of line 1" in result.err


@pytest.mark.parametrize("reply, message", [
    (status(401, "bad key"), "the API key was rejected"),
    (status(402, "no credits"), "out of credits"),
])
def test_a_stop_message_is_printed_once_and_no_empty_output_is_left(workdir, reply, message):
    server = FakeTeacher(default_step=reply).start()
    try:
        write_prompts(workdir, ["a", "b", "c"])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url)
        assert result.code == 1 and result.err.count(message) == 1, result.err
        assert not (workdir / "train.jsonl").exists()
    finally:
        server.stop()


def test_an_unreachable_teacher_leaves_no_empty_output(workdir):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_prompts(workdir, [f"q{i}" for i in range(300)])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", f"http://127.0.0.1:{port}/v1",
                        "--retries", "0")
    assert result.code == 1 and result.err.count("Stopped:") == 1 and result.err.count("Check --") == 1
    assert not (workdir / "train.jsonl").exists()


# -- the invariant, under a mix of everything ---------------------------------------------------------


def test_under_a_hostile_mix_every_prompt_is_in_exactly_one_place(workdir):
    import random

    rng = random.Random(8)
    kinds = list(MALFORMED_ANSWERS)
    server = FakeTeacher().start()
    try:
        prompts = [f"p{i}" for i in range(60)]
        write_prompts(workdir, prompts)
        for prompt in prompts:
            steps = []
            for _ in range(rng.randint(0, 4)):
                steps.append(rng.choice([
                    raw(MALFORMED_ANSWERS[rng.choice(kinds)]), status(rng.choice([400, 422, 500, 503, 429])),
                    call_tools(("add", {"a": 1, "b": 2})), lambda body: Reply(drop=True),
                    answer(""), answer("cut", finish_reason="length")]))
            server.script(prompt, *steps)
        result = run_script(workdir, "prompts.jsonl", "--tools", "tools_small.py", "--base-url", server.base_url,
                            "--retries", "2", "--backoff", "0.01", "-c", "8")
        assert_no_traceback(result.err)
        assert result.code == 1
        written = prompt_counts(workdir)
        failed = [f["prompt"] for f in read_jsonl(workdir / "train.failed.jsonl")]
        assert set(written.values()) == {1} and len(failed) == len(set(failed))
        assert set(written) | set(failed) == set(prompts) and not set(written) & set(failed)
        assert f"Failed: {len(failed)} (" in result.err and f"Total: {len(written)}/60" in result.err
    finally:
        server.stop()

