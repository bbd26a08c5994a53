"""The paused file at scale (issue 26): a record per answer holds what that answer added, a rollout's
conversation is its records in order, and dead records are reclaimed during the run by a compaction that
never holds up requests and that a kill -9 at any instant cannot break."""

from __future__ import annotations

import asyncio
import json
import random

import generate_distillation_data as gdd
from conftest import read_jsonl, run_script, start_script, wait_for, write_prompts
from fake_teacher import FakeTeacher, Reply, answer, call_tools, status

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
        args = ["prompts.jsonl", "--tools", "big_tools.py", "--base-url", teacher.base_url, "--backoff", "0.01"]
        stopped = run_script(workdir, *args)
        assert stopped.code == 1 and "Paused: 1 rollout" in stopped.err
        records = read_jsonl(workdir / "train.paused.jsonl")
        assert [r["from"] for r in records] == [0, 2, 4, 6, 8] and [r["turns"] for r in records] == [1, 2, 3, 4, 5]
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
    runner = gdd.RolloutRunner(cfg.requests, gdd.cache_plan(cfg.requests, cfg.teacher.base_url), None, toolbox,
                               asyncio.Event())
    job = next(gdd.iter_jobs(cfg.prompts))
    fingerprint, prompt_id = runner.body_for(job)[1], job.prompt.prompt_id
    (workdir / "train.paused.jsonl").write_bytes(gdd.encode_line({
        "prompt_id": prompt_id, "sample": 0, "attempt": 1, "fingerprint": fingerprint, "turns": 1,
        "finish_reason": "tool_calls", "usage": gdd.Usage(cost=0.5, requests=1).to_json(), "messages": messages + said}))
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
    assert all(reloaded.take(gdd.RolloutKey.of_job(job, 1), job.prompt.messages).turns == 4 for job in jobs[60:])


def saved_turns_by_prompt(path) -> dict[str, int]:
    """What a killed run left durably in the paused file: each prompt's saved turns, as the next run reads them."""
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
        args = ["prompts.jsonl", "--tools", "big_tools.py", "--base-url", teacher.base_url, "--backoff", "0.01"]
        rng, kills, after_kill = random.Random(26), 0, []
        for _ in range(4):
            process = start_script(workdir, *args)
            target = len(teacher.requests) + rng.randint(20, 60)
            wait_for(lambda: len(teacher.requests) >= target or process.poll() is not None, what="requests")
            if process.poll() is not None:
                break
            process.kill()
            process.wait()
            kills += 1
            ids_by_prompt = {gdd._conversation_hash([{"role": "user", "content": p}]): p for p in prompts}
            saved = {ids_by_prompt.get(k, k): n for k, n in saved_turns_by_prompt(workdir / "train.paused.jsonl").items()}
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
                assert turn > saved.get(prompt, 0), (f"{prompt!r} turn {turn} was saved, and asked for again; "
                                                     f"failed: {result.failed()}")
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
    base = {"prompt_id": "p", "sample": 0, "attempt": 1, "finish_reason": "tool_calls", "usage": gdd.Usage().to_json()}
    lines = [gdd.encode_line({**base, "from": 0, "fingerprint": "f", "turns": 1, "messages": turn}),
             b'{"prompt_id": "p", "sample": 0, "attempt": 1, "from": 2, "turns": 2, "messages": [oops\n',
             gdd.encode_line({**base, "from": 4, "turns": 3, "messages": turn})]
    path.write_bytes(b"".join(lines))
    paused = gdd.PausedFile(path, gdd._Secret(None).scrub)
    assert paused.load() == 1
    saved = paused.take(("p", 0, 1), prompt)
    assert saved.turns == 1 and len(saved.messages) == 3
    assert json.loads(lines[0])["from"] == 0
