"""Output and resume: re-running the same command skips what is done and redoes the rest, every prompt exactly
once and no answer paid twice. The output file (locked, scanned, repaired), the paused file (a record per
answer, compacted as the run goes; a stopped rollout goes on from its last saved turn), the failed file, and
kills."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter

import pytest

from conftest import (
    SCRIPT,
    assert_no_traceback,
    count_lines,
    prompt_counts,
    read_jsonl,
    run_script,
    start_script,
    wait_for,
    write_prompts,
)
from fake_teacher import FakeTeacher, Reply, answer, call_tools, slow, status

import generate_distillation_data as gdd


def test_rerun_skips_done_prompts_and_runs_new_ones(run, teacher, workdir):
    write_prompts(workdir, ["a", "b"])
    assert run(tools="none").code == 0
    sent = len(teacher.requests)
    result = run(tools="none")
    assert result.code == 0 and len(teacher.requests) == sent  # nothing sent
    assert "Nothing to do" in result.err
    write_prompts(workdir, ["a", "b", "c"])
    result = run(tools="none")
    assert result.code == 0 and len(teacher.requests) == sent + 1
    assert sorted(r["messages"][-2]["content"] for r in result.records()) == ["a", "b", "c"]
    assert "1 new rollout written" in result.err and "2 already there" in result.err


def test_half_written_last_line_is_repaired(run, workdir):
    write_prompts(workdir, ["a", "b"])
    run(tools="none", prompts="prompts.jsonl")
    output = workdir / "train.jsonl"
    lines = output.read_text().splitlines(keepends=True)
    output.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # a crash in the middle of a write
    result = run(tools="none")
    assert result.code == 0
    records = result.records()  # every line parses
    assert sorted(r["messages"][-2]["content"] for r in records) == ["a", "b"]


def test_corrupt_line_in_the_middle_is_reported(run, teacher, workdir):
    write_prompts(workdir, ["a"])
    (workdir / "train.jsonl").write_text("not json\n")
    result = run(tools="none")
    assert result.code == 2 and "train.jsonl:1" in result.err and not teacher.requests


def test_second_run_on_same_output_is_refused(run, workdir, teacher):
    write_prompts(workdir, ["slow one"])
    teacher.script("slow one", slow(30, answer("late")))
    first = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url)
    try:
        wait_for(lambda: teacher.requests, what="first run's request")
        second = run(tools="none", subprocess=True)
        assert second.code == 2 and "another run" in second.err
    finally:
        first.kill()
        first.wait()


def test_failed_prompts_are_retried_on_rerun_and_leave_the_failed_file(run, teacher, workdir):
    write_prompts(workdir, ["a", "b"])
    teacher.script("a", status(400))
    assert run(tools="none").code == 1
    assert len(run(tools="none").records()) == 2  # 'a' answers this time
    assert not (workdir / "train.failed.jsonl").exists()


@pytest.mark.parametrize("samples", ["1", "2"])
def test_kill_9_mid_run_then_resume_gives_every_prompt_exactly_once(workdir, samples):
    server = FakeTeacher(latency=0.01).start()
    try:
        write_prompts(workdir, [f"question {i}" for i in range(300)])
        args = ("prompts.jsonl", "--tools", "none", "--base-url", server.base_url, "-c", "8",
                "--samples", samples)
        process = start_script(workdir, *args)
        wait_for(lambda: count_lines(workdir / "train.jsonl") >= 40, what="some output")
        process.kill()
        process.wait()
        killed_at = count_lines(workdir / "train.jsonl")
        assert killed_at < 300 * int(samples)
        result = run_script(workdir, *args)
        assert result.code == 0, result.err
        keys = Counter((r["metadata"]["prompt_id"], r["metadata"]["sample"]) for r in result.records())
        assert len(keys) == 300 * int(samples) and set(keys.values()) == {1}
    finally:
        server.stop()


def test_resume_scan_reads_fast_and_slow_lines_across_chunk_boundaries(tmp_path):
    import generate_distillation_data as gdd

    lines = [{"metadata": {"prompt_id": f"id{i}", "sample": i % 3, "teacher": "t"}, "messages": []}
             for i in range(50)]
    lines[7]["metadata"]["prompt_id"] = 'needs "escaping"'  # the regex cannot read it: slow path
    lines[20] = {"messages": [], "metadata": {"prompt_id": "keys in another order", "sample": 1}}
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"metadata": {"prompt_id": "torn')
    expected = {gdd.RolloutKey.hashed(line["metadata"]["prompt_id"], line["metadata"]["sample"])
                for line in lines}
    for chunk_size in (7, 64, 1000, 1 << 20):
        scan = gdd.OutputFile(path).scan(chunk_size)
        assert scan.done == expected and scan.tail == "cut" and not scan.bad
    path.write_text("garbage\n" + "more garbage\n")  # no line of ours: not ours to rewrite
    with pytest.raises(gdd.UsageError, match="train.jsonl:1: not valid JSON"):
        gdd.OutputFile(path).scan(16)


def test_output_that_is_a_directory_is_a_clear_error(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    (workdir / "outdir").mkdir()
    result = run("-o", "outdir", tools="none")
    assert result.code == 2 and "outdir: cannot open the output file" in result.err and not teacher.requests


def test_torn_edited_and_duplicated_lines_are_set_aside_and_their_rollouts_redone(run, teacher, workdir):
    prompts = [f"q{i}" for i in range(6)]
    write_prompts(workdir, prompts)
    assert run(tools="none").code == 0
    lines = (workdir / "train.jsonl").read_bytes().splitlines(keepends=True)
    torn = lines[1][: len(lines[1]) // 2] + b"\n"  # its prefix still looks right
    middle = len(lines[2]) // 2
    # a hand edit in the middle; the prefix is intact
    edited = lines[2][:middle] + b'"oops" ' + lines[2][middle:]
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
    assert (result.code == 2 and "notes.jsonl:1: has no metadata.prompt_id" in result.err
            and not teacher.requests)
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


def test_temporaries_left_by_a_killed_process_are_removed_and_others_kept(run, teacher, workdir):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has now
    stale = workdir / f".train.paused.jsonl.{gone.pid}-1f2e3d4c.tmp"  # as this release names them
    stale.write_text('{"messages": "a conversation"}\n')
    stale_output = workdir / f".train.jsonl.{gone.pid}.tmp"
    stale_output.write_text("half a rewrite\n")
    alive = workdir / f".train.paused.jsonl.{os.getpid()}.tmp"  # a process that still runs: not ours to touch
    alive.write_text("in use\n")
    foreign = workdir / f".notes.txt.{gone.pid}.tmp"  # not a file of this output
    foreign.write_text("someone else's\n")
    write_prompts(workdir, ["q"])
    result = run(tools="none", subprocess=True)
    assert result.code == 0, result.err
    assert not stale.exists() and not stale_output.exists()
    assert alive.exists() and foreign.exists()


def test_a_private_output_stays_private_through_repairs_and_so_are_the_files_beside_it(workdir):
    """A 0600 train.jsonl: the repair that rewrites it, and every file the runs add beside it (quarantine,
    failed, paused, runs, exports, card, report), are readable by its owner only."""
    teacher = FakeTeacher(latency=0.02, default_step=six_turns).start()
    try:
        write_prompts(workdir, ["q0", "q1", "q2"])
        teacher.script("q1", status(400, "refused"), status(400, "refused again"))
        output = workdir / "train.jsonl"
        output.write_text('{"metadata": {"prompt_id": "gone", "sample": 0}, "messages": []}\n'
                          '{"metadata": {"prompt_id": "torn", "sa\n')
        output.chmod(0o600)
        process = start_script(workdir, *args(teacher))
        wait_for(lambda: (workdir / "train.paused.jsonl").exists(), what="a saved turn")
        assert (workdir / "train.paused.jsonl").stat().st_mode & 0o077 == 0
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
        result = run_script(workdir, *args(teacher, "--export", "hf,openai", "--report"))
        assert result.code == 1, result.err  # q1 failed
    finally:
        teacher.stop()
    made = [p for p in workdir.iterdir() if p.name.startswith("train.")]
    assert {"train.quarantine.jsonl", "train.failed.jsonl", "train.runs.jsonl", "train.hf.jsonl",
            "train.hf.README.md", "train.report.html"} <= {p.name for p in made}
    assert oct(output.stat().st_mode & 0o777) == "0o600"
    assert not [p.name for p in made if p.stat().st_mode & 0o077], "readable by others"


BIG_TOOLS = '''
from rnow.core.tool import tool

@tool
def read_page(n: int) -> str:
    """Read page n."""
    return f"page {n}: " + "lorem ipsum dolor sit amet " * 740
'''


def pages_then_answer(calls: int):
    def step(body: dict) -> Reply:
        done = sum(1 for m in body["messages"] if m["role"] == "tool")
        if done < calls:
            return call_tools(("read_page", {"n": done}))(body)
        return answer(f"{body['messages'][0]['content']}: read {done} pages")(body)

    return step


def test_a_record_per_answer_holds_what_it_added_and_resume_joins_them(workdir):
    (workdir / "big_tools.py").write_text(BIG_TOOLS)
    teacher = FakeTeacher().start()
    try:
        write_prompts(workdir, ["read five"])
        steps = [pages_then_answer(5)] * 5 + [status(402, "out of credits"), pages_then_answer(5)]
        teacher.script("read five", *steps)
        args = ["prompts.jsonl", "--tools", "big_tools.py", "--base-url", teacher.base_url,
                "--backoff", "0.01"]
        stopped = run_script(workdir, *args)
        assert stopped.code == 1 and "Paused: 1 rollout" in stopped.err
        records = read_jsonl(workdir / "train.paused.jsonl")
        assert ([r["from"] for r in records] == [0, 2, 4, 6, 8]
                and [r["turns"] for r in records] == [1, 2, 3, 4, 5])
        assert "fingerprint" in records[0] and not any("fingerprint" in r for r in records[1:])
        for record in records:  # the answer and its tool result: never the conversation again
            assert [m["role"] for m in record["messages"]] == ["assistant", "tool"]
        resumed = run_script(workdir, *args)
        assert resumed.code == 0, resumed.err
        [line] = resumed.records()
        assert line["metadata"]["turns"] == 6 and len(line["messages"]) == 12
        assert len(teacher.requests) == 7  # five answers, the 402, the last answer: none paid twice
        assert not (workdir / "train.paused.jsonl").exists()
    finally:
        teacher.stop()


def test_a_paused_record_of_the_previous_release_is_resumed(workdir, teacher, run):
    """Releases before issue 26 saved the whole conversation in each record: the rollout goes on from it."""
    write_prompts(workdir, ["old"])
    messages = [{"role": "user", "content": "old"}]
    said = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "3", "name": "add"}]
    teacher.script("old", answer("it is 3"))
    cfg = gdd.parse_config(["prompts.jsonl", "--tools", "tools_small.py", "--base-url", teacher.base_url])
    toolbox = gdd.ToolBox(gdd.load_tools(cfg.tools.file)[0], cfg.tools)
    runner = gdd.RolloutRunner(cfg.requests, gdd.cache_plan(cfg.requests, cfg.teacher.base_url), None,
                               toolbox, asyncio.Event())
    job = next(gdd.iter_jobs(cfg.prompts))
    fingerprint, prompt_id = runner.body_for(job)[1].legacy, job.prompt.prompt_id  # as that release hashed it
    (workdir / "train.paused.jsonl").write_bytes(gdd.encode_line({
        "prompt_id": prompt_id, "sample": 0, "attempt": 1, "fingerprint": fingerprint, "turns": 1,
        "finish_reason": "tool_calls", "usage": gdd.Usage(cost=0.5, requests=1).to_json(),
        "messages": messages + said}))
    result = run()
    assert result.code == 0, result.err
    [line] = result.records()
    assert [m["role"] for m in line["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert len(teacher.requests_for("old")) == 1 and line["metadata"]["usage"]["cost"] >= 0.5


def outcome_for(job: gdd.RolloutJob, turns: int) -> gdd.Outcome:
    messages = [dict(m) for m in job.prompt.messages]
    for t in range(turns):
        messages += [{"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{t}", "type": "function", "function": {"name": "read_page", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": f"c{t}", "content": "x" * 20_000}]
    return gdd.Outcome(job, messages, gdd.Usage(), turns=turns)


def test_compaction_during_the_run_keeps_every_live_turn_and_what_was_appended_meanwhile(tmp_path):
    """Many rollouts save 20 KB turns and most settle: dead records outweigh live ones past 1 MB, so the
    file is compacted while the run goes on; turns saved while the copy runs are carried over, and every
    live rollout reads back whole from the new file."""
    prompts = [gdd.Prompt(prompt_id=f"p{i}", messages=[{"role": "user", "content": f"q{i}"}], metadata={},
                          source=f"q{i}") for i in range(80)]
    jobs = [gdd.RolloutJob(prompt=p, sample=0, seq=i) for i, p in enumerate(prompts)]
    paused = gdd.PausedFile(tmp_path / "train.paused.jsonl", gdd._Secret(None).scrub)

    async def scenario() -> None:
        for turn in range(1, 4):
            for job in jobs:
                assert paused.save(gdd.RolloutKey.of_job(job, 1), "f" * 16, outcome_for(job, turn))
        for job in jobs[:60]:  # settled: their records are dead
            paused.settled(gdd.RolloutKey.of_job(job, 1))
        assert paused._compacting is not None  # started by the write that tipped the balance
        for job in jobs[60:70]:  # answers keep coming while the copy runs
            paused.save(gdd.RolloutKey.of_job(job, 1), "f" * 16, outcome_for(job, 4))
        await paused._compacting
        for job in jobs[70:]:
            paused.save(gdd.RolloutKey.of_job(job, 1), "f" * 16, outcome_for(job, 4))

    asyncio.run(scenario())
    assert paused.compactions == 1
    size = (tmp_path / "train.paused.jsonl").stat().st_size
    assert size < paused.peak_bytes / 2 and size == paused.live_bytes
    for job in jobs[60:]:
        saved = paused.take(gdd.RolloutKey.of_job(job, 1), job.prompt.messages)
        assert saved is not None and saved.turns == 4 and len(saved.messages) == 9
    reloaded = gdd.PausedFile(tmp_path / "train.paused.jsonl", gdd._Secret(None).scrub)
    assert reloaded.load() == 20
    assert all(reloaded.take(gdd.RolloutKey.of_job(job, 1), job.prompt.messages).turns == 4
               for job in jobs[60:])


def saved_turns_by_prompt(path) -> dict[str, int]:
    """What a killed run left durably in the paused file: each prompt's saved turns, as the next run reads
    them."""
    paused = gdd.PausedFile(path, gdd._Secret(None).scrub)
    paused.load()
    return {key[0]: chain.said // 2 for key, chain in paused.chains.items()}


def test_kill_9_while_big_turns_are_saved_and_compacted_never_pays_a_saved_turn_twice(workdir):
    """Rollouts of 20 KB pages, killed at random points (compactions run mid-run at this size), then a clean
    run: every prompt once, the paused file gone, and no turn that a killed run had saved is asked for
    again (answers that arrived but were not yet saved when the kill came are all a kill can cost)."""
    (workdir / "big_tools.py").write_text(BIG_TOOLS)
    teacher = FakeTeacher(latency=0.01, default_step=pages_then_answer(8)).start()
    try:
        prompts = [f"question {i}" for i in range(30)]
        write_prompts(workdir, prompts)
        args = ["prompts.jsonl", "--tools", "big_tools.py", "--base-url", teacher.base_url,
                "--backoff", "0.01"]
        rng, kills, after_kill = random.Random(26), 0, []
        for _ in range(4):
            process = start_script(workdir, *args)
            target = len(teacher.requests) + rng.randint(20, 60)
            wait_for(lambda target=target, process=process: len(teacher.requests) >= target
                     or process.poll() is not None, what="requests")
            if process.poll() is not None:
                break
            process.kill()
            process.wait()
            kills += 1
            ids_by_prompt = {gdd.conversation_hash([{"role": "user", "content": p}]): p for p in prompts}
            saved = {ids_by_prompt.get(k, k): n
                     for k, n in saved_turns_by_prompt(workdir / "train.paused.jsonl").items()}
            after_kill.append((len(teacher.requests), saved))
        result = run_script(workdir, *args, timeout=120)
        assert result.code == 0, result.err
        ids = [r["metadata"]["prompt_id"] for r in result.records()]
        assert len(ids) == len(set(ids)) == len(prompts) and kills >= 2
        assert not (workdir / "train.paused.jsonl").exists()
        assert not list(workdir.glob(".train.paused.jsonl.*.tmp"))
        for sent_before, saved in after_kill:
            for body in teacher.requests[sent_before:]:
                prompt, turn = body["messages"][0]["content"], (len(body["messages"]) + 1) // 2
                assert turn > saved.get(prompt, 0), (f"{prompt!r} turn {turn} was saved, and asked for "
                                                     f"again; failed: {result.failed()}")
    finally:
        teacher.stop()


def test_paused_records_name_their_chain(workdir):
    """A hand-broken middle record: the rollout goes on from the records before it, never joins a later
    record to the wrong conversation."""
    path = workdir / "train.paused.jsonl"
    prompt = [{"role": "user", "content": "q"}]
    turn = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "add", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "1"}]
    base = {"prompt_id": "p", "sample": 0, "attempt": 1, "finish_reason": "tool_calls",
            "usage": gdd.Usage().to_json()}
    lines = [gdd.encode_line({**base, "from": 0, "fingerprint": "f", "turns": 1, "messages": turn}),
             b'{"prompt_id": "p", "sample": 0, "attempt": 1, "from": 2, "turns": 2, "messages": [oops\n',
             gdd.encode_line({**base, "from": 4, "turns": 3, "messages": turn})]
    path.write_bytes(b"".join(lines))
    paused = gdd.PausedFile(path, gdd._Secret(None).scrub)
    assert paused.load() == 1
    saved = paused.take(("p", 0, 1), prompt)
    assert saved.turns == 1 and len(saved.messages) == 3
    assert json.loads(lines[0])["from"] == 0


@pytest.mark.parametrize("kind", ["fifo", "/dev/full", "/dev/zero"])
def test_an_output_that_is_not_a_regular_file_is_refused(run, workdir, teacher, kind):
    write_prompts(workdir, ["q"])
    output = kind
    if kind == "fifo":
        os.mkfifo(workdir / "fifo")
    result = run("-o", output, tools="none", timeout=30, subprocess=True)
    assert result.code == 2 and "must be a regular file" in result.err and not teacher.requests


SIDE_FILES = ["train.failed.jsonl", "train.rejected.jsonl", "train.quarantine.jsonl", "train.paused.jsonl",
              "train.runs.jsonl", "train.batches.jsonl", "train.mcp-tools.json", "train.mcp.log",
              "train.hf.jsonl", "train.openai.jsonl", "train.hf.README.md", "train.report.html"]


@pytest.mark.parametrize("name", SIDE_FILES)
def test_a_file_of_ours_beside_the_output_that_is_a_fifo_is_refused_before_anything_is_sent(run, workdir,
                                                                                            teacher, name):
    """Read back at the start (paused, runs, failed, ...) or written at the end (exports, card, report), a
    FIFO would hang the run, a directory crash it: each is refused at once, named, exit 2."""
    write_prompts(workdir, ["q"])
    os.mkfifo(workdir / name)
    result = run("--export", "hf,openai", "--report", tools="none", timeout=30, subprocess=True)
    assert result.code == 2 and f"{name}: cannot open" in result.err and "a FIFO" in result.err, result.err
    assert "Traceback" not in result.err and not teacher.requests and not (workdir / "train.jsonl").exists()


def test_a_paused_file_that_is_a_directory_is_refused_and_a_regular_one_goes_on(run, workdir, teacher):
    write_prompts(workdir, ["q"])
    (workdir / "train.paused.jsonl").mkdir()
    refused = run(tools="none", subprocess=True)
    assert (refused.code == 2
            and "train.paused.jsonl: cannot open the paused file: it is a directory" in refused.err)
    assert "Traceback" not in refused.err and not teacher.requests
    (workdir / "train.paused.jsonl").rmdir()
    assert run(tools="none").code == 0 and len(teacher.requests) == 1


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


TURNS = 6  # five turns calling a tool, then the answer


def six_turns(body: dict) -> Reply:
    """Every prompt: a tool call on each of the first five turns, then the answer; the same conversation
    always gets the same answers, so an interrupted run and an uninterrupted one send the same requests."""
    done = sum(1 for m in body["messages"] if m["role"] == "tool")
    question = body["messages"][0]["content"]
    if done < TURNS - 1:
        return call_tools(("add", {"a": done, "b": len(question)}))(body)
    return answer(f"{question}: done after {done} tools")(body)


@pytest.fixture
def turns_teacher():
    server = FakeTeacher(latency=0.02, default_step=six_turns).start()
    yield server
    server.stop()


def args(teacher: FakeTeacher, *extra: str) -> tuple[str, ...]:
    return ("prompts.jsonl", "--tools", "tools_small.py", "--base-url", teacher.base_url, "--backoff", "0.01",
            "-c", "4", *extra)


def answers(teacher: FakeTeacher) -> int:
    return sum(1 for body in teacher.requests if "_rejected" not in body)


def same_requests_for_the_same_turn(teacher: FakeTeacher) -> None:
    """Every request for a given prompt and turn is byte-identical, across all the runs."""
    seen: dict[tuple[str, int], str] = {}
    for body in teacher.requests:
        if "_rejected" in body:
            continue
        key = (body["messages"][0]["content"], len(body["messages"]))
        text = json.dumps(body, sort_keys=True)
        assert seen.setdefault(key, text) == text, f"turn {key} was sent differently after a resume"


def test_kill_9_at_random_points_then_a_clean_run_pays_each_answer_about_once(workdir, turns_teacher):
    teacher = turns_teacher
    prompts = [f"question {i}" for i in range(8)]
    write_prompts(workdir, prompts)
    rng = random.Random(20)
    kills, in_flight = 0, 0
    for _ in range(10):
        process = start_script(workdir, *args(teacher))
        target = len(teacher.requests) + rng.randint(2, 12)
        wait_for(lambda target=target, process=process: len(teacher.requests) >= target
                 or process.poll() is not None, what="requests")
        if process.poll() is not None:
            break
        in_flight += teacher.in_flight
        process.kill()
        process.wait()
        kills += 1
    result = run_script(workdir, *args(teacher))
    assert result.code == 0, result.err
    ids = [r["metadata"]["prompt_id"] for r in result.records()]
    assert len(ids) == len(set(ids)) == len(prompts)
    # the bound: prompts x (turns + 1) answers, plus what was in flight at each kill
    assert kills >= 5 and answers(teacher) <= len(prompts) * (TURNS + 1) + in_flight
    same_requests_for_the_same_turn(teacher)
    for record in result.records():
        assert record["metadata"]["turns"] == TURNS and record["metadata"]["usage"]["requests"] >= TURNS
    assert not (workdir / "train.paused.jsonl").exists()  # compacted away once every rollout settled


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_pauses_rollouts_between_turns_and_the_next_run_pays_no_answer_twice(workdir, turns_teacher,
                                                                                      sig):
    teacher = turns_teacher
    write_prompts(workdir, [f"question {i}" for i in range(6)])
    process = start_script(workdir, *args(teacher))
    wait_for(lambda: len(teacher.requests) >= 10, what="some turns")
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Paused:" in err and "train.paused.jsonl" in err
    paused = read_jsonl(workdir / "train.paused.jsonl")
    assert paused and all(record["turns"] < TURNS for record in paused)
    before = answers(teacher)
    result = run_script(workdir, *args(teacher))
    assert result.code == 0, result.err
    assert len(result.records()) == 6
    assert answers(teacher) == 6 * TURNS  # every answer in flight at the signal was kept: none paid twice
    assert answers(teacher) - before < 6 * TURNS
    same_requests_for_the_same_turn(teacher)
    # a line's usage counts the turns its earlier run paid for
    assert all(record["metadata"]["usage"]["requests"] == TURNS for record in result.records())


def test_out_of_credits_mid_run_pauses_and_the_next_run_goes_on(workdir):
    calls = {"n": 0}

    def credits_run_out(body):
        calls["n"] += 1
        if calls["n"] == 9:
            return status(402, "Insufficient credits")(body)
        return six_turns(body)

    teacher = FakeTeacher(latency=0.02, default_step=credits_run_out).start()
    try:
        write_prompts(workdir, [f"question {i}" for i in range(3)])
        stopped = run_script(workdir, *args(teacher))
        assert stopped.code == 1 and "out of credits" in stopped.err and "Paused:" in stopped.err
        assert not read_jsonl(workdir / "train.failed.jsonl")  # paused, not failed
        result = run_script(workdir, *args(teacher))
    finally:
        teacher.stop()
    assert result.code == 0, result.err
    assert len(result.records()) == 3
    assert answers(teacher) - 1 <= 3 * TURNS + 4  # the 402 and at most what was in flight when it came


def test_the_spend_cap_stops_between_turns_and_a_rerun_finishes_without_paying_twice(workdir, turns_teacher):
    teacher = turns_teacher  # every answer costs $0.001
    write_prompts(workdir, [f"question {i}" for i in range(10)])
    capped = run_script(workdir, *args(teacher, "--max-cost", "0.01"))
    assert capped.code == 1 and "Paused:" in capped.err
    spent = answers(teacher) * 0.001
    assert spent <= 0.01 + 4 * 0.001 + 1e-9  # the cap, plus what was in flight when it was reached
    result = run_script(workdir, *args(teacher))
    assert result.code == 0, result.err
    assert len(result.records()) == 10 and answers(teacher) == 10 * TURNS


@pytest.mark.parametrize("change, said", [
    (("--temperature", "0.3"), None), (("--max-tokens", "512"), None),
    (("--extra-body", '{"seed": 7}'), None),
    (("-m", "another/model"), "the model (--model) changed"),
    (("--extra-body", '{"top_logprobs": 2}'), "--extra-body's 'top_logprobs' changed")],
    ids=["temperature", "max tokens", "a seed", "the model", "an extra-body key"])
def test_only_what_makes_the_conversation_decides_whether_saved_turns_go_on(workdir, change, said):
    """How the next answer is sampled (temperature, answer length, a seed) does not change what the
    conversation is: its paid turns go on. What does (the model, a key of --extra-body, ...) begins it again,
    and the summary names the very setting that changed, and what the discarded turns had cost (which the line
    counts)."""
    teacher = FakeTeacher(latency=0.01, default_step=credits_run_out_at(3)).start()
    try:
        write_prompts(workdir, [{"id": "q0", "prompt": "question 0"}])
        stopped = run_script(workdir, *args(teacher, "--temperature", "0.2"))
        assert stopped.code == 1 and "Paused: 1 rollout" in stopped.err, stopped.err
        paid = answers(teacher)
        result = run_script(workdir, *args(teacher, *change))
    finally:
        teacher.stop()
    assert result.code == 0, result.err
    [line] = result.records()
    if said is None:
        assert answers(teacher) - paid == TURNS - 2 and "Started over" not in result.err  # turns 1 and 2 kept
        assert line["metadata"]["usage"]["requests"] == TURNS
        return
    assert answers(teacher) - paid == TURNS
    assert "Started over: 1 paused rollout began again from their prompt, since their saved turns answered " \
           f"another request than this run's: 1 because {said}." in result.err
    assert "Their discarded turns had cost $0.0020 (2 answers, paid by earlier runs)" in result.err
    # the discarded turns are in some file: this line
    assert line["metadata"]["usage"]["requests"] == TURNS + 2


def test_a_record_of_an_earlier_release_goes_on_only_where_its_hashes_still_tell(workdir):
    """Records written before the settings were kept part by part (one hash, sampling included), or with the
    earlier 16-digit prompt hash (whose encoding could read a text holding RS/US as other messages)."""
    prompt = gdd.Prompt("q0", [{"role": "user", "content": "question 0"}], {}, "question 0", id_given=True)
    tricky = gdd.Prompt("q1", [{"role": "user", "content": "a\x1euser\x1fb"}], {}, "a", id_given=True)
    identity = gdd.RequestIdentity.of({"model": "m", "temperature": 0.2, "max_tokens": 10})
    saved = gdd._SavedTurns([], gdd.Usage(), 1, None, identity.legacy, None, None,
                            gdd.conversation_hash(prompt.messages))
    assert gdd._why_saved_turns_cannot_go_on(saved, prompt, identity) is None
    hotter = gdd.RequestIdentity.of({"model": "m", "temperature": 0.3, "max_tokens": 10})
    # cannot say which
    assert gdd._why_saved_turns_cannot_go_on(saved, prompt, hotter) == gdd._SETTINGS_UNNAMED
    assert gdd._why_saved_turns_cannot_go_on(dataclasses.replace(saved, settings=identity.parts), prompt,
                                             hotter) is None
    ambiguous = dataclasses.replace(saved, prompt=gdd.conversation_hash(tricky.messages))
    assert gdd._why_saved_turns_cannot_go_on(ambiguous, tricky, identity) == gdd._PROMPT_AMBIGUOUS
    assert gdd.conversation_hash(tricky.messages) == gdd.conversation_hash(
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert gdd.content_hash(tricky.messages) != gdd.content_hash(
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])  # the new one does not


@pytest.mark.parametrize("edited", [False, True], ids=["as it was", "split into two messages"])
def test_a_prompt_edited_into_messages_its_old_text_spelled_never_goes_on_from_its_turns(workdir, edited):
    """A text holding the ASCII control characters RS and US, then edited into the two messages it seems to
    spell (same id): they are another conversation, begun again; the prompt left as it was goes on."""
    old = {"id": "q0", "messages": [{"role": "user", "content": "Is 7 prime?\x1euser\x1fAnswer yes or no."}]}
    new = {"id": "q0", "messages": [{"role": "user", "content": "Is 7 prime?"},
                                    {"role": "user", "content": "Answer yes or no."}]}
    teacher = FakeTeacher(latency=0.01, default_step=credits_run_out_at(3)).start()
    try:
        write_prompts(workdir, [old])
        stopped = run_script(workdir, *args(teacher))
        assert stopped.code == 1 and "Paused: 1 rollout" in stopped.err, stopped.err
        paid = answers(teacher)
        write_prompts(workdir, [new if edited else old])
        result = run_script(workdir, *args(teacher))
    finally:
        teacher.stop()
    assert result.code == 0, result.err
    assert answers(teacher) - paid == (TURNS if edited else TURNS - 2)
    assert (f"1 because {gdd._PROMPT_CHANGED}" in result.err) is edited
    [line] = result.records()
    assert [m["content"] for m in line["messages"] if m["role"] == "user"] == [
        m["content"] for m in (new if edited else old)["messages"]]


ZERO_REWARDS = ("from rnow.core import RewardArgs, reward\n\n"
                "@reward\ndef never(args: RewardArgs, messages: list) -> float:\n    return 0.0\n")


def test_a_lower_attempts_keeps_a_paused_later_try_for_a_run_with_a_higher_one(workdir):
    """Try 2 of --attempts 3 paused (out of credits); a run with --attempts 1 counts the prompt as finished by
    rejection, so it does not run that try, and says so: its paid turn is kept, and --attempts 3 goes on from
    it."""
    calls = {"A": 0}

    def step(body: dict) -> Reply:
        if body["messages"][0]["content"] == "A" and len(body["messages"]) > 1:
            calls["A"] += 1
            if calls["A"] == 6:  # try 2's second turn
                return status(402, "Insufficient credits")(body)
        return six_turns(body)

    teacher = FakeTeacher(latency=0.01, default_step=step).start()
    (workdir / "rewards.py").write_text(ZERO_REWARDS)
    gate = ("--rewards", "rewards.py", "--min-reward", "1")
    try:
        write_prompts(workdir, [{"id": "a", "prompt": "A"}, {"id": "b", "prompt": "B"}])
        stopped = run_script(workdir, *args(teacher, *gate, "--attempts", "3", "-n", "1"))
        assert stopped.code == 1 and "Paused: 1 rollout" in stopped.err, stopped.err
        assert {r["attempt"] for r in read_jsonl(workdir / "train.paused.jsonl")} == {2}
        lower = run_script(workdir, *args(teacher, *gate, "--attempts", "1"))
        assert "Kept: the saved turns of a later try beyond --attempts 1 (in train.paused.jsonl)" in lower.err
        assert {r["attempt"] for r in read_jsonl(workdir / "train.paused.jsonl") if "messages" in r} == {2}
        before = len(teacher.requests_for("A"))
        higher = run_script(workdir, *args(teacher, *gate, "--attempts", "3"))
    finally:
        teacher.stop()
    assert higher.code == 0, higher.err
    asked = [len(body["messages"]) for body in teacher.requests_for("A")[before:]]
    assert asked[0] == 3  # try 2 went on from its saved turn: the prompt, the answer, its tool result
    assert asked.count(1) == 1  # and only try 3 began from the prompt
    assert "Kept:" not in higher.err and not (workdir / "train.paused.jsonl").exists()


def credits_run_out_at(request: int):
    """six_turns, but the `request`-th request is a 402: the run stops, its rollouts paused between turns."""
    calls = {"n": 0}

    def step(body: dict) -> Reply:
        calls["n"] += 1
        return status(402, "Insufficient credits")(body) if calls["n"] == request else six_turns(body)

    return step


@pytest.mark.parametrize("edit", ["text", "system prompt", "attempt 2's text"])
def test_saved_turns_go_on_only_from_the_very_prompt_that_began_them(workdir, edit):
    """A prompt with its own id, paused mid-rollout, then fixed (its text, or --system): the next run begins
    it again from the new prompt, never writes the new question with the old one's tool calls and answer, and
    says why. With --attempts, the same for a later try."""
    runs_out_at = 9 if edit.startswith("attempt") else 3
    teacher = FakeTeacher(latency=0.01, default_step=credits_run_out_at(runs_out_at)).start()
    (workdir / "rewards.py").write_text("from rnow.core import RewardArgs, reward\n\n@reward\n"
                                        "def never(args: RewardArgs, messages: list) -> float:\n"
                                        "    return 0.0\n")
    gate = (("--rewards", "rewards.py", "--min-reward", "1", "--attempts", "2") if edit.startswith("attempt")
            else ())
    system = ("-s", "Be brief.") if edit == "system prompt" else ()
    try:
        write_prompts(workdir, [{"id": "q0", "prompt": "question 0"}])
        stopped = run_script(workdir, *args(teacher, *gate, *system))
        assert stopped.code == 1 and "Paused: 1 rollout" in stopped.err, stopped.err
        paid = answers(teacher)
        if edit == "system prompt":
            system = ("-s", "Be thorough.")
        else:
            write_prompts(workdir, [{"id": "q0", "prompt": "question 0, fixed"}])
        result = run_script(workdir, *args(teacher, *gate, *system))
    finally:
        teacher.stop()
    assert result.code == 0, result.err
    assert answers(teacher) - paid == TURNS  # the whole rollout again, from the new prompt
    assert "Started over: 1 paused rollout began again from their prompt" in result.err
    assert f"1 because {gdd._PROMPT_CHANGED}" in result.err
    [line] = result.records("train.rejected.jsonl")[-1:] if gate else result.records()
    first = line["messages"][0]["content"]
    assert first == ("Be thorough." if edit == "system prompt" else "question 0, fixed")
    calls = [json.loads(c["function"]["arguments"])
             for m in line["messages"] for c in m.get("tool_calls", [])]
    assert [c["b"] for c in calls] == [len(first)] * (TURNS - 1)  # every tool call made for the new prompt
    assert line["messages"][-1]["content"] == f"{first}: done after 5 tools"


def test_a_paused_record_edited_to_hold_tool_calls_5_begins_again_and_loses_nothing(workdir):
    teacher = FakeTeacher(latency=0.01, default_step=credits_run_out_at(3)).start()
    try:
        write_prompts(workdir, ["question 0"])
        stopped = run_script(workdir, *args(teacher))
        assert stopped.code == 1 and "Paused: 1 rollout" in stopped.err
        path = workdir / "train.paused.jsonl"
        records = read_jsonl(path)
        records[0]["messages"][0]["tool_calls"] = 5  # an edit: not what a teacher's checked answer holds
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        result = run_script(workdir, *args(teacher))
    finally:
        teacher.stop()
    assert (result.code == 0 and "Traceback" not in result.err
            and "internal error" not in result.err), result.err
    [line] = result.records()
    assert (line["metadata"]["turns"] == TURNS
            and line["messages"][-1]["content"] == "question 0: done after 5 tools")


@pytest.mark.parametrize("line", ['{"prompt_id": "x", "sample": 0, "attempt": 1, "turns": "many"}',
                                  "not json", '{"prompt_id": 7}', '{"messages": [1, 2]}'])
def test_a_hand_broken_paused_file_is_read_around(workdir, turns_teacher, line):
    teacher = turns_teacher
    write_prompts(workdir, ["question 0"])
    (workdir / "train.paused.jsonl").write_text(line + "\n")
    result = run_script(workdir, *args(teacher))
    assert result.code == 0, result.err and len(result.records()) == 1


def test_a_full_disk_pauses_rollouts_and_the_run_after_freeing_space_goes_on(workdir, turns_teacher):
    import subprocess
    import sys

    from conftest import subprocess_env

    teacher = turns_teacher
    prompts = [f"question {i}" for i in range(6)]
    write_prompts(workdir, prompts)
    # prlimit, not preexec_fn: a fork that runs Python code while the teacher's thread runs can deadlock
    full = subprocess.run(["prlimit", "--fsize=12000:12000", sys.executable, str(SCRIPT), *args(teacher)],
                          cwd=workdir, env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert full.returncode == 1 and "File too large" in full.stderr and "Traceback" not in full.stderr
    assert not read_jsonl(workdir / "train.failed.jsonl")  # stopped rollouts pause; none failed
    result = run_script(workdir, *args(teacher))
    assert result.code == 0, result.err
    assert sorted(r["messages"][0]["content"] for r in result.records()) == sorted(prompts)
    assert answers(teacher) <= len(prompts) * (TURNS + 1) + 4
    same_requests_for_the_same_turn(teacher)


SLOW_REWARDS = '''
import os, time
from rnow.core import RewardArgs, get_response, reward

@reward
def finished(args: RewardArgs, messages: list) -> float:
    """Slow while the file `slow` exists (the run is stopped meanwhile); says it began in `scoring`."""
    open("scoring", "w").close()
    while os.path.exists("slow"):
        time.sleep(0.05)
    return 1.0
'''


def routed(reply: Reply) -> Reply:
    reply.body["model"] = "routed/model"  # the model that answered, not the one asked for
    return reply


@pytest.mark.parametrize("edited", [False, True], ids=["as it was", "prompt edited"])
def test_a_final_answer_stopped_while_it_was_scored_settles_next_run_without_a_request(workdir, turns_teacher,
                                                                                       edited):
    """...unless its prompt (one with its own id) was edited meanwhile: then it begins again from the new
    text."""
    teacher = turns_teacher
    teacher.default_step = lambda body: routed(six_turns(body))
    (workdir / "rewards.py").write_text(SLOW_REWARDS)
    (workdir / "slow").write_text("")
    write_prompts(workdir, [{"id": "q0", "prompt": "question 0"}])
    process = start_script(workdir, *args(teacher, "--rewards", "rewards.py"))
    wait_for(lambda: (workdir / "scoring").exists(), what="the final answer being scored")
    process.send_signal(signal.SIGINT)  # the first stops new requests; the reward still runs...
    seen = ""
    while "Stopping" not in seen:  # (read as it is printed: a second signal sent sooner would merge into it)
        seen += process.stderr.readline()
    process.send_signal(signal.SIGINT)  # ...the second stops at once
    _, err = process.communicate(timeout=60)
    err = seen + err
    assert process.returncode == 130 and "Paused: 1 rollout" in err
    saved = read_jsonl(workdir / "train.paused.jsonl")
    assert saved[-1]["messages"][-1]["role"] == "assistant", \
        (len(saved), [r.get("turns") for r in saved], err)
    (workdir / "slow").unlink()
    before = answers(teacher)
    if edited:
        write_prompts(workdir, [{"id": "q0", "prompt": "question 0, fixed"}])
    result = run_script(workdir, *args(teacher, "--rewards", "rewards.py"))
    assert result.code == 0, result.err
    if edited:
        assert answers(teacher) == before + TURNS and f"1 because {gdd._PROMPT_CHANGED}" in result.err
        [line] = result.records()
        assert line["messages"][-1]["content"] == "question 0, fixed: done after 5 tools"
        return
    assert answers(teacher) == before == TURNS  # settled from its saved final answer, no request
    assert result.records()[0]["metadata"]["reward"] == 1.0
    assert result.records()[0]["metadata"]["model"] == "routed/model"  # kept with the saved turns


def test_a_paused_rollout_resumed_with_fewer_max_turns_ends_incomplete_not_as_a_bug(workdir, turns_teacher):
    teacher = turns_teacher
    write_prompts(workdir, ["question 0"])
    process = start_script(workdir, *args(teacher))
    wait_for(lambda: answers(teacher) >= 4, what="some turns")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    saved = read_jsonl(workdir / "train.paused.jsonl")[-1]["turns"]
    result = run_script(workdir, *args(teacher, "--max-turns", str(saved)))
    assert result.code == 1 and "internal error" not in result.err
    assert "saved turns reach --max-turns" in read_jsonl(workdir / "train.failed.jsonl")[0]["reason"]
