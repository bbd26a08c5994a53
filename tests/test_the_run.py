"""The run: signals (Ctrl-C, a second Ctrl-C, SIGTERM, a dropped terminal), closed standard streams, a full
disk or a failing write, and a hostile mix of everything: every prompt ends in exactly one place."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import resource
import select
import signal
import subprocess
import sys
import termios
import threading
import time

import orjson
import pytest

from conftest import (
    SCRIPT,
    Result,
    assert_no_traceback,
    count_lines,
    prompt_counts,
    read_all_that_came,
    read_jsonl,
    run_script,
    start_script,
    stopped,
    subprocess_env,
    wait_for,
    write_prompts,
)
from fake_teacher import (
    MALFORMED_ANSWERS,
    FakeTeacher,
    Reply,
    adjusted,
    answer,
    call_tools,
    completion,
    raw,
    slow,
    status,
)

import generate_distillation_data as gdd


def test_ctrl_c_finishes_rollouts_in_flight_then_stops(run, workdir, teacher):
    write_prompts(workdir, [f"q{i}" for i in range(20)])
    teacher.script("q0", slow(1.0, answer("finished after Ctrl-C")))
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                           "-c", "1")
    wait_for(lambda: teacher.requests, what="the first request")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "Stopping" in err and "Re-run the same command" in err and "Traceback" not in err
    records = read_jsonl(workdir / "train.jsonl")
    assert [r["messages"][-1]["content"] for r in records] == ["finished after Ctrl-C"]
    result = run(tools="none", subprocess=True)
    assert result.code == 0 and len(result.records()) == 20


def test_second_ctrl_c_quits_at_once(workdir, teacher):
    write_prompts(workdir, ["stuck"])
    teacher.script("stuck", slow(60, answer("never")))
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url)
    wait_for(lambda: teacher.requests, what="the request")
    process.send_signal(signal.SIGINT)
    while "Stopping" not in (line := process.stderr.readline()):  # the first Ctrl-C has landed
        assert line, "the script exited before printing its stopping message"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=15)
    assert process.returncode == 130 and "Traceback" not in err


def test_sigterm_behaves_like_ctrl_c(workdir, teacher):
    write_prompts(workdir, ["q0", "q1"])
    teacher.script("q0", slow(0.5, answer("done")))
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                           "-c", "1")
    wait_for(lambda: teacher.requests, what="the request")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130 and count_lines(workdir / "train.jsonl") == 1


IMPORT_WAITS = """
import time
from pathlib import Path
from rnow.core.tool import tool

Path("importing").touch()
while not Path("go").exists():  # the run is still starting: reading tools.py, as it plans a big prompts file
    time.sleep(0.01)


@tool
def add(a: int, b: int) -> int:
    \"\"\"Add two integers.\"\"\"
    return a + b
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda sig: sig.name)
def test_every_stop_signal_before_the_run_is_said_and_exits_130(workdir, teacher, sig):
    """SIGTERM (scancel, a pod deleted) or SIGHUP while the run was still starting (planning a big prompts
    file, reading tools.py) killed it silently (-15, -1), where Ctrl-C said so and exited 130. All three now
    do the same."""
    write_prompts(workdir, ["q0", "q1"])
    (workdir / "slow_tools.py").write_text(IMPORT_WAITS)
    process = start_script(workdir, "prompts.jsonl", "--tools", "slow_tools.py",
                           "--base-url", teacher.base_url)
    try:
        wait_for(lambda: (workdir / "importing").exists(), what="tools.py to be read")
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.count("Interrupted before any request was sent.") == 1 and err.strip().count("\n") == 0, err
    assert not teacher.requests and not list(workdir.glob("train*"))


def test_sigterm_while_the_exports_are_written_is_said_and_leaves_no_temporary(workdir, teacher):
    """After a run, the --export files: SIGTERM there killed the process silently (-15) and left a private
    temporary of the export's size in the folder (a --no-run run did not remove it either). As Ctrl-C there:
    said, exit 130, no temporary; the run's own files are whole, and the exports made again with --no-run. A
    second signal while the first is answered (SIGHUP right behind it) does not cut that short with a
    traceback."""
    line = orjson.loads(orjson.dumps({
        "metadata": {"prompt_id": "p", "sample": 0, "teacher": "test/teacher", "turns": 1,
                     "finish_reason": "stop",
                     "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.001, "requests": 1}},
        "messages": [{"role": "user", "content": "question"},
                     {"role": "assistant", "content": "answer " * 40}]}))
    with open(workdir / "train.jsonl", "wb") as f:
        for i in range(60_000):
            line["metadata"]["prompt_id"] = f"earlier {i}"
            f.write(orjson.dumps(line) + b"\n")
    write_prompts(workdir, ["one more"])
    for _ in range(3):  # until the process is caught, stopped, with an export's temporary in the folder
        for path in workdir.glob("train.*.jsonl"):
            path.unlink()
        process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                               "--export", "hf,openai")
        try:
            wait_for(lambda process=process: list(workdir.glob(".train.*.tmp")) or process.poll() is not None,
                     timeout=60, what="an export's temporary")
            process.send_signal(signal.SIGSTOP)
            wait_for(lambda process=process: stopped(process), what="the process to stop")
            caught = bool(list(workdir.glob(".train.*.tmp")))
            process.send_signal(signal.SIGTERM)  # delivered as it goes on: in the middle of the export
            process.send_signal(signal.SIGHUP)  # and another, handled as the first is answered
            process.send_signal(signal.SIGCONT)
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
        if caught:
            break
    assert caught, "the export never took long enough to be caught"
    assert process.returncode == 130, err
    assert err.count("Interrupted while writing the --export/--report files") == 1 and "Traceback" not in err
    assert not list(workdir.glob(".*.tmp")) and count_lines(workdir / "train.jsonl") == 60_001
    again = run_script(workdir, "prompts.jsonl", "--tools", "none", "--no-run", "--export", "hf,openai")
    assert again.code == 0 \
        and count_lines(workdir / "train.hf.jsonl") == count_lines(workdir / "train.openai.jsonl") == 60_001


def limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_write_error_stops_the_run_leaves_the_file_valid_and_the_rerun_completes(workdir):
    server = FakeTeacher(default_step=lambda body: Reply(body=completion({"content": "x" * 3000}))).start()
    try:
        prompts = [f"prompt {i}" for i in range(40)]
        write_prompts(workdir, prompts)
        args = [sys.executable, str(SCRIPT), "prompts.jsonl", "--tools", "none",
                "--base-url", server.base_url, "-c", "2"]
        first = subprocess.run(args, cwd=workdir, env=subprocess_env(), capture_output=True, text=True,
                               timeout=60, preexec_fn=limit_file_size(20_000))  # room for about six lines
        assert_no_traceback(first.stderr)
        assert first.returncode == 1
        assert ("cannot write train.jsonl: File too large" in first.stderr
                and "re-run the same command" in first.stderr)
        written = read_jsonl(workdir / "train.jsonl")  # every line whole, none torn
        assert 0 < len(written) < 40
        # It stopped at once: no more requests than the lines written plus the two in flight.
        assert len(server.requests) <= len(written) + 2 + 2
        second = subprocess.run(args, cwd=workdir, env=subprocess_env(), capture_output=True, text=True,
                                timeout=60)
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


def test_a_full_disk_stops_the_run_and_the_rerun_after_freeing_space_has_every_prompt_once(workdir,
                                                                                          small_disk):
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
        result = run_script(workdir, "prompts.jsonl", "--tools", "tools_small.py",
                            "--base-url", server.base_url, "--retries", "2", "--backoff", "0.01", "-c", "8")
        assert_no_traceback(result.err)
        assert result.code == 1
        written = prompt_counts(workdir)
        failed = [f["prompt"] for f in read_jsonl(workdir / "train.failed.jsonl")]
        assert set(written.values()) == {1} and len(failed) == len(set(failed))
        assert set(written) | set(failed) == set(prompts) and not set(written) & set(failed)
        assert f"Failed: {len(failed)} (" in result.err and f"Total: {len(written)}/60" in result.err
    finally:
        server.stop()


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
    assert ([record["messages"][-1]["content"] for record in read_jsonl(workdir / "train.jsonl")]
            == ["quiet now"])


def test_stderr_closed_alone_still_runs(workdir, teacher):
    write_prompts(workdir, ["q1", "q2"])
    process = subprocess.run(["bash", "-c", 'exec "$@" 2>&-', "bash", sys.executable, str(SCRIPT),
                              "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url],
                             cwd=workdir, env=subprocess_env(), timeout=60, capture_output=False,
                             stdout=subprocess.DEVNULL)
    assert process.returncode == 0 and count_lines(workdir / "train.jsonl") == 2


def test_sigterm_reaches_every_waiting_rollout_at_once(workdir, teacher):
    """Requests held by the teacher's spent window (two minutes away) and a retry's wait: SIGTERM ends every
    wait at once. Each queued rollout had to win a slot (here: wait out the window) before it saw the stop,
    and SLURM's KillWait or a pod's grace period (30 s) killed it first: no summary."""
    from fake_teacher import reset_header

    prompts = [f"held {i}" for i in range(12)]
    write_prompts(workdir, prompts)
    teacher.default_step = lambda body: status(429, "window spent", reset_header(120))(body)
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url)
    wait_for(lambda: teacher.requests, what="the first refusal")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)  # a wait that saw the stop only when its turn came: 120 s
    assert process.returncode == 130, err
    assert_no_traceback(err)
    assert "Not done: 12" in err and not (workdir / "train.failed.jsonl").exists()
    assert len(teacher.requests) <= 4  # the first round, refused; none after the stop


def test_an_answer_still_coming_after_stop_timeout_is_given_up_and_named(workdir, teacher):
    """The stop's bound: answers in flight are waited for --stop-timeout seconds after SIGTERM (20 by default,
    inside the 30 s before a cluster's SIGKILL); past it an answer still streaming is given up, its rollout
    pauses, and the summary names it as one that will be paid again."""
    write_prompts(workdir, ["quick", "endless"])
    teacher.script("endless", slow(120, answer("too late")))
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                           "--stop-timeout", "1")
    wait_for(lambda: count_lines(workdir / "train.jsonl") == 1 and len(teacher.requests) == 2,
             what="the quick answer written and the endless one asked for")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)  # waiting for the answer: 120 s
    assert process.returncode == 130, err
    assert_no_traceback(err)
    endless = gdd.conversation_hash([{"role": "user", "content": "endless"}])
    assert "--stop-timeout" in err and err.count("Given up: 1 answer still coming") == 1
    assert f"prompt {endless}" in err and "paid again" in err
    teacher.script("endless", answer("in time"))
    again = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url)
    assert again.code == 0 and prompt_counts(workdir) == {"quick": 1, "endless": 1}


def read_until(process: subprocess.Popen, text: str) -> str:
    """stderr up to the line holding `text` (the run has said it): what was read."""
    said = ""
    while text not in (line := process.stderr.readline()):
        assert line, f"the script exited before saying {text!r}: {said}"
        said += line
    return said + line


@pytest.mark.parametrize("second_signal", [False, True], ids=["--stop-timeout 1", "a second SIGTERM"])
def test_an_answer_whole_before_a_stop_gives_up_is_kept_though_its_connection_stays_open(workdir, teacher,
                                                                                         second_signal):
    """The whole answer came (its finish_reason), and the teacher held the connection open before its usage (a
    proxy, slow accounting); then SIGTERM, and the stop's bound ran out (or a second SIGTERM came): the
    answers were "given up" and paid again. Whole is whole: kept (the rollout pauses with it; the next run
    settles it, sending nothing), its cost unknown since its usage never came. Tool-call answers are kept too,
    their tools run next run."""
    prompts = ["whole 0", "whole 1", "calls tools"]
    write_prompts(workdir, prompts)
    held = threading.Event()
    for prompt in prompts[:2]:
        teacher.script(prompt, adjusted(answer(f"{prompt}, kept"), sse_hold_whole=held))
    teacher.script("calls tools", adjusted(call_tools(("add", {"a": 2, "b": 3})), sse_hold_whole=held),
                   answer("2 + 3 is 5"))
    process = start_script(workdir, "prompts.jsonl", "--tools", "tools_small.py", "--base-url",
                           teacher.base_url, *(("--stop-timeout", "1") if not second_signal else ()))
    try:
        wait_for(lambda: len(teacher.held_whole) == 3,
                 what="three whole answers, their connections held open")
        process.send_signal(signal.SIGTERM)
        read_until(process, "Stopping")
        if second_signal:
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        held.set()
        process.kill()
    assert process.returncode == 130, err
    assert_no_traceback(err)
    assert "Given up" not in err and "Paused: 3 rollouts" in err, err
    sent = len(teacher.requests)
    again = run_script(workdir, "prompts.jsonl", "--tools", "tools_small.py", "--base-url", teacher.base_url)
    assert again.code == 0, again.err
    # its tools ran; its next turn asked
    assert [first_user(b) for b in teacher.requests[sent:]] == ["calls tools"]
    assert prompt_counts(workdir) == {p: 1 for p in prompts}
    line = next(r for r in read_jsonl(workdir / "train.jsonl") if first_user(r) == "calls tools")
    assert [m["role"] for m in line["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert line["messages"][2]["content"] == "5" and line["metadata"]["usage"]["requests"] == 2


def first_user(record: dict) -> str:
    return next(m["content"] for m in record["messages"] if m["role"] == "user")


def test_answers_that_came_whole_while_a_stopping_process_slept_are_kept(workdir, teacher):
    """SIGTERM, then the process suspended (SIGSTOP) past --stop-timeout while its answers came whole;
    SIGCONT: the stop's bound, due on waking, ran before the answers beside it were read, and gave them up
    (paid again). The bound reads what already came first, like every deadline: the answers are written."""
    prompts = ["slept 0", "slept 1", "slept 2"]
    write_prompts(workdir, prompts)
    hold = threading.Event()
    for prompt in prompts:
        teacher.script(prompt, adjusted(answer(f"{prompt}: whole while asleep"), sse_hold=hold))
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                           "--stop-timeout", "1")
    try:
        wait_for(lambda: len(teacher.held) == 3 and all(read_all_that_came(p, teacher.port)
                                                        for p in teacher.held),
                 what="every answer begun, and what came read")
        process.send_signal(signal.SIGTERM)
        read_until(process, "Stopping")
        process.send_signal(signal.SIGSTOP)
        wait_for(lambda: stopped(process), what="the process to stop")
        hold.set()
        wait_for(lambda: len(teacher.released) == 3, what="the answers, sent whole to the suspended process")
        time.sleep(2)  # suspended past --stop-timeout: the condition under test, not a synchronisation
        process.send_signal(signal.SIGCONT)
        out, err = process.communicate(timeout=60)
    finally:
        hold.set()
        process.kill()
    assert process.returncode == 130, err
    assert "Given up" not in err and "Gave up" not in err, err
    assert sorted(r["messages"][-1]["content"] for r in read_jsonl(workdir / "train.jsonl")) == \
        [f"{p}: whole while asleep" for p in prompts]


SLOW_REWARD = '''
import time
from pathlib import Path
from rnow.core import RewardArgs, reward


@reward(timeout=120)
def slow(args: RewardArgs, messages: list) -> float:
    Path("scoring").touch()
    while Path("slow").exists():
        time.sleep(0.01)
    return 1.0
'''


def test_a_stop_that_gives_up_on_rollouts_being_scored_says_only_what_is_true(workdir, teacher):
    """SIGTERM while rewards score answers already whole, and the stop's bound runs out: the log said "what is
    still coming will be paid again next run", though nothing was coming and the next run paid for nothing.
    The messages say what is so: the rollouts stop now, none is named as given up, the next run sends
    nothing."""
    prompts = ["scored 0", "scored 1"]
    write_prompts(workdir, prompts)
    (workdir / "rewards.py").write_text(SLOW_REWARD)
    (workdir / "slow").touch()
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                           "--rewards", "rewards.py", "--stop-timeout", "1")
    try:
        wait_for(lambda: len(teacher.requests) == 2 and (workdir / "scoring").exists(),
                 what="the rewards to start")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        (workdir / "slow").unlink()
    assert process.returncode == 130, err
    assert "a rollout they do not finish pauses" in err and "in progress pause," not in err
    assert "Gave up waiting after 1 s (--stop-timeout): 2 rollouts still in progress stop now" in err
    assert "will be paid again" not in err and "Given up" not in err and "Paused: 2 rollouts" in err, err
    again = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                       "--rewards", "rewards.py")
    assert (again.code == 0 and len(teacher.requests) == 2
            and prompt_counts(workdir) == {p: 1 for p in prompts})


def test_a_rollout_whose_tools_run_when_a_stop_gives_up_keeps_its_answer(workdir, teacher):
    """Past the stop's bound, a rollout still running the tools its answer asked for was given up with that
    answer, paid again next run. The answer is kept with its calls; the next run runs them, then asks for the
    next turn."""
    write_prompts(workdir, ["waits on a tool"])
    (workdir / "waiting_tools.py").write_text(WAITING_TOOLS)
    teacher.script("waits on a tool", call_tools(("wait_here", {})), answer("the tool came back"))
    (workdir / "hold").touch()
    process = start_script(workdir, "prompts.jsonl", "--tools", "waiting_tools.py",
                           "--base-url", teacher.base_url, "--stop-timeout", "1")
    try:
        wait_for(lambda: (workdir / "waiting").exists(), what="the tool to start")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        (workdir / "hold").unlink()
    assert process.returncode == 130 and "Given up" not in err and "Paused: 1 rollout" in err, err
    again = run_script(workdir, "prompts.jsonl", "--tools", "waiting_tools.py",
                       "--base-url", teacher.base_url)
    assert again.code == 0, again.err
    assert len(teacher.requests) == 2  # the first answer once, then the next turn
    line = read_jsonl(workdir / "train.jsonl")[0]
    assert [m["role"] for m in line["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert line["messages"][2]["content"] == "done waiting" and line["metadata"]["usage"]["requests"] == 2


WAITING_TOOLS = '''
import asyncio
from pathlib import Path
from rnow.core.tool import tool


@tool
async def wait_here() -> str:
    """Wait while the test holds it."""
    Path("waiting").touch()
    while Path("hold").exists():
        await asyncio.sleep(0.01)
    return "done waiting"
'''
