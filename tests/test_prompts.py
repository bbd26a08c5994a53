"""Prompts: reading and checking the prompts file (.txt, .jsonl, messages, BOMs, strict JSON, nesting), prompt
ids and repeats, --num, shards from the command line and from schedulers (SLURM, Kubernetes), a file changed
under the run."""

from __future__ import annotations

import json
import os

import pytest

from conftest import assert_no_traceback, prompt_counts, read_jsonl, run_script, subprocess_env, write_prompts
from fake_teacher import answer, call_tools, status

import generate_distillation_data as gdd


def test_tools_none_sends_no_tools_and_txt_prompts_work(run, teacher, workdir):
    (workdir / "prompts.txt").write_text("first question\n\nsecond question\n")
    result = run(prompts="prompts.txt", tools="none")
    assert result.code == 0, result.err
    records = result.records()
    assert sorted(r["messages"][0]["content"] for r in records) == ["first question", "second question"]
    assert all("tools" not in r for r in records) and all("tools" not in b for b in teacher.requests)


def test_messages_prompt_keeps_its_own_system_message_and_id(run, teacher, workdir):
    conversation = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there"}]
    write_prompts(workdir, [{"id": "conv-1", "messages": conversation, "metadata": {"source": "chat"}}])
    result = run("-s", "ignored because the conversation has its own", tools="none")
    [record] = result.records()
    assert record["messages"][:2] == conversation
    assert record["metadata"]["prompt_id"] == "conv-1" and record["metadata"]["source"] == "chat"


def test_duplicate_prompts_are_kept_apart(run, workdir):
    write_prompts(workdir, ["same", "same", "other", "same"])
    result = run(tools="none")
    ids = [r["metadata"]["prompt_id"] for r in result.records()]
    assert len(ids) == 4 and len(set(ids)) == 4
    base = min(ids, key=len)  # lines are in finishing order; the first "same" has the shortest id
    assert sorted(i for i in ids if i.startswith(base)) == [base, f"{base}-2", f"{base}-3"]


def test_prompt_id_is_stable_and_depends_on_system_prompt(run, workdir):
    write_prompts(workdir, ["q"])
    first = run(tools="none").records()[0]["metadata"]["prompt_id"]
    (workdir / "train.jsonl").unlink()
    assert run(tools="none").records()[0]["metadata"]["prompt_id"] == first
    assert run("-o", "other.jsonl", "-s", "sys", tools="none").records()[0]["metadata"]["prompt_id"] != first


def test_num_limits_prompts(run, workdir):
    write_prompts(workdir, ["a", "b", "c"])
    assert len(run("-n", "2", tools="none").records()) == 2


def test_shards_split_prompts_without_overlap(run, workdir):
    write_prompts(workdir, [f"prompt {i}" for i in range(40)])
    shards = [run("--shard", f"{i}/3", "-o", f"shard{i}.jsonl", tools="none").records() for i in range(3)]
    ids = [r["metadata"]["prompt_id"] for shard in shards for r in shard]
    assert len(ids) == 40 and len(set(ids)) == 40 and all(shards)


BAD_LINES = {
    "invalid JSON": ('{"prompt": "ok"}\n{"prompt": oops}\n', "prompts.jsonl:2: invalid JSON"),
    "neither prompt nor messages": ('{"text": "hi"}\n', "prompts.jsonl:1: needs a \"prompt\""),
    "empty prompt": ('{"prompt": "   "}\n', "prompts.jsonl:1: \"prompt\" is empty"),
    "prompt not a string": ('{"prompt": 42}\n', "prompts.jsonl:1: \"prompt\" must be a string"),
    "metadata not an object": ('{"prompt": "a", "metadata": [1]}\n',
                               "prompts.jsonl:1: \"metadata\" must be an object"),
    "not an object": ('["a"]\n', "prompts.jsonl:1: expected an object"),
    "bad role": ('{"messages": [{"role": "bot", "content": "x"}]}\n', "prompts.jsonl:1: messages[0].role"),
    "duplicate id": ('{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n', "prompts.jsonl:2: id 'x'"),
}


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_bad_prompt_file_stops_before_anything_is_sent(run, teacher, workdir, kind):
    content, message = BAD_LINES[kind]
    text = '{"prompt": "fine"}\n' * 3 + content if kind != "invalid JSON" else content
    (workdir / "prompts.jsonl").write_text(text)
    result = run(tools="none")
    assert result.code == 2
    assert (message if kind == "invalid JSON"
            else message.replace(":1:", ":4:").replace(":2:", ":5:")) in result.err
    assert not teacher.requests and not (workdir / "train.jsonl").exists()
    assert "Traceback" not in result.err


def test_resume_of_repeated_prompts_keeps_their_numbering(run, teacher, workdir):
    write_prompts(workdir, ["same", "other", "same", "same"])
    teacher.script("same", answer("one"), status(400), answer("three"))  # the second "same" fails
    # one request at a time, in file order: the script meets them in order
    first = run("-c", "1", tools="none")
    assert first.code == 1 and len(first.records()) == 3
    result = run(tools="none")
    assert result.code == 0
    ids = [r["metadata"]["prompt_id"] for r in result.records()]
    assert len(ids) == 4 and len(set(ids)) == 4
    base = min((i for i in ids if "-" not in i and i != ids_of(first, "other")), key=len)
    assert ids[-1] == base + "-2"  # the one retried is the second occurrence, as the first run named it


def ids_of(result, prompt: str) -> str:
    return next(r["metadata"]["prompt_id"] for r in result.records() if r["messages"][0]["content"] == prompt)


def test_non_utf8_prompt_file(run, teacher, workdir):
    (workdir / "prompts.txt").write_bytes(b"fine\n\xff\xfe broken\n")
    result = run(prompts="prompts.txt", tools="none")
    assert result.code == 2 and "prompts.txt:2: not UTF-8" in result.err and not teacher.requests


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


def test_the_failed_file_given_as_the_prompts_file_is_refused_and_left_as_it_is(run, teacher, workdir):
    failed = workdir / "train.failed.jsonl"
    failed.write_text('{"prompt_id": "p1", "sample": 0, "prompt": "retry me", "metadata": {}, '
                      '"kind": "HTTP 500"}\n')
    before = failed.read_bytes()
    result = run(prompts="train.failed.jsonl", tools="none", subprocess=True)
    assert result.code == 2 and "train.failed.jsonl" in result.err and "cp " in result.err
    assert "Traceback" not in result.err and teacher.requests == []
    assert failed.read_bytes() == before and not (workdir / "train.jsonl").exists()


def test_a_prompt_line_nested_2000_deep_is_exit_2_naming_its_line(run, teacher, workdir):
    (workdir / "prompts.jsonl").write_text('{"prompt": "fine"}\n{"prompt": "deep", "metadata": '
                                           + "[" * 2000 + "]" * 2000 + "}\n")
    result = run(tools="none", subprocess=True)
    assert result.code == 2 and "prompts.jsonl:2" in result.err and "nested" in result.err
    assert "Traceback" not in result.err and teacher.requests == []


def test_a_prompt_line_nested_150_deep_is_refused_too(run, teacher, workdir):
    deep = '{"prompt": "deep", "metadata": {"x": ' + "[" * 150 + "]" * 150 + "}}\n"
    (workdir / "prompts.jsonl").write_text(deep)
    result = run(tools="none", subprocess=True)
    assert result.code == 2 and "nested more than 100 levels" in result.err


def test_a_prompts_file_rewritten_during_the_run_stops_it_naming_the_line(run, teacher, workdir):
    (workdir / "rewriting_tools.py").write_text('''
from pathlib import Path
from rnow.core.tool import tool

@tool
def rewrite(text: str) -> str:
    """Rewrite the prompts file as `cat new > prompts.jsonl` does."""
    lines = ('{"prompt": "other prompt number %d"}\\n' % i for i in range(40))
    Path("prompts.jsonl").write_text("".join(lines))
    return "rewritten"
''')
    write_prompts(workdir, [f"original {i}" for i in range(12)])
    teacher.script("original 0", call_tools(("rewrite", {"text": "x"})), answer("done"))
    result = run("-c", "1", tools="rewriting_tools.py")
    assert result.code == 1 and "prompts.jsonl:" in result.err and "was changed during the run" in result.err
    assert not any("other prompt" in json.dumps(r)
                   for r in teacher.requests + result.failed() + result.records())


PROMPTS = [f"question {i}" for i in range(30)]


def run_task(run, env: dict, *args: str):
    """A task of a job array: the scheduler's variables in its environment, run as the scheduler would."""
    return run(*args, tools="none", subprocess=True, env=subprocess_env(**env))


def prompt_ids(path) -> list[str]:
    return [record["metadata"]["prompt_id"] for record in read_jsonl(path)]


@pytest.mark.parametrize("array", [(0, 1, 4), (1, 1, 4), (0, 2, 3)], ids=["0-3", "1-4", "0-4:2"])
def test_slurm_job_array_tasks_split_the_prompts(run, workdir, teacher, array):
    first, step, tasks = array
    write_prompts(workdir, PROMPTS)
    for k in range(tasks):
        env = {"SLURM_ARRAY_TASK_ID": str(first + k * step), "SLURM_ARRAY_TASK_MIN": str(first),
               "SLURM_ARRAY_TASK_STEP": str(step), "SLURM_ARRAY_TASK_COUNT": str(tasks)}
        result = run_task(run, env, "--shard", "auto")
        assert result.code == 0, result.err
    outputs = sorted(workdir.glob(f"train.shard-*-of-{tasks}.jsonl"))
    assert [p.name for p in outputs] == [f"train.shard-{k}-of-{tasks}.jsonl" for k in range(tasks)]
    ids = [i for path in outputs for i in prompt_ids(path)]
    assert len(ids) == len(PROMPTS) == len(set(ids)) and all(prompt_ids(p) for p in outputs)
    # the same split as --shard I/N: a task re-run by hand resumes its own file
    rerun = run_task(run, {}, "--shard", f"1/{tasks}", "-o", "train.shard-{shard}.jsonl")
    assert rerun.code == 0 and "Nothing to do" in rerun.err


def test_kubernetes_indexed_job_takes_its_index_and_the_completions_given_once(run, workdir, teacher):
    write_prompts(workdir, PROMPTS)
    for index in range(3):
        result = run_task(run, {"JOB_COMPLETION_INDEX": str(index)}, "--shard", "auto/3",
                          "-o", "out/train.{shard}.jsonl")
        assert result.code == 0, result.err
    ids = [i for k in range(3) for i in prompt_ids(workdir / "out" / f"train.{k}-of-3.jsonl")]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == len(PROMPTS)


@pytest.mark.parametrize("env, shard, message", [
    ({}, "auto", "neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set"),
    ({"JOB_COMPLETION_INDEX": "2"}, "auto", "pass the Job's completions as --shard auto/N"),
    ({"JOB_COMPLETION_INDEX": "5"}, "auto/3", "JOB_COMPLETION_INDEX=5 is not in 0..2"),
    ({"JOB_COMPLETION_INDEX": "x"}, "auto/3", "JOB_COMPLETION_INDEX='x' is not a number"),
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, "auto",
     "task 7 is not one of 3 evenly spaced tasks"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"}, "auto/3", "the SLURM array has 4 tasks"),
])
def test_shard_auto_outside_a_scheduler_or_with_a_bad_environment(run, workdir, teacher, env, shard, message):
    write_prompts(workdir, PROMPTS)
    result = run_task(run, env, "--shard", shard)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err, result.err
    assert not teacher.requests and not list(workdir.glob("train*.jsonl"))


@pytest.mark.parametrize("env, named", [
    ({"SLURM_ARRAY_TASK_STEP": "-1"}, "SLURM_ARRAY_TASK_STEP=-1 is not a step"),
    ({"SLURM_ARRAY_TASK_STEP": "0"}, "SLURM_ARRAY_TASK_STEP=0 is not a step"),
    ({"SLURM_ARRAY_TASK_COUNT": "0"}, "SLURM_ARRAY_TASK_COUNT=0 is not a number of tasks"),
    ({"SLURM_ARRAY_TASK_COUNT": "-3"}, "SLURM_ARRAY_TASK_COUNT=-3 is not a number of tasks"),
    ({"SLURM_ARRAY_TASK_COUNT": "9"}, "SLURM_ARRAY_TASK_COUNT=9 is more tasks than ids from 0 to 3"),
    ({"SLURM_ARRAY_TASK_ID": "-1", "SLURM_ARRAY_TASK_MIN": "-1"}, "SLURM_ARRAY_TASK_ID=-1 is not a task id"),
    ({"SLURM_ARRAY_TASK_MIN": "-2"}, "SLURM_ARRAY_TASK_MIN=-2 is not the first task id"),
    ({"SLURM_ARRAY_TASK_MIN": "2"},
     "SLURM_ARRAY_TASK_MIN=2 is not the first task id of an array holding task 1"),
    ({"SLURM_ARRAY_TASK_MAX": "0"},
     "SLURM_ARRAY_TASK_MAX=0 is not the last task id of an array holding task 1"),
    ({"SLURM_ARRAY_TASK_ID": "\u0661"}, "SLURM_ARRAY_TASK_ID='\u0661' is not a number"),
], ids=["step -1", "step 0", "count 0", "count -3", "count above the span", "task -1", "min -2",
        "min above the task", "max below the task", "an Arabic-Indic digit"])
def test_slurm_variables_that_cannot_be_true_are_refused_naming_them_and_what_works(run, workdir, teacher,
                                                                                    env, named):
    """SLURM's variables are checked, never trusted (something else in a job's environment may set them): a
    step of -1 ran, noted an array the program then refused as not its own note; a count of 0 blamed task 0
    and advised --array=0--1. Each is exit 2 naming the variable and the command that runs the shard by hand,
    nothing written."""
    write_prompts(workdir, PROMPTS)
    task = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "3",
            "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_STEP": "1"}
    result = run_task(run, {**task, **env}, "--shard", "auto")
    assert result.code == 2 and named in result.err, result.err
    assert ("is not a number" in named
            or "--shard I/N -o train.shard-I-of-N.jsonl in place of --shard auto" in result.err)
    assert "--array=0--" not in result.err and "Traceback" not in result.err
    assert (not teacher.requests
            and sorted(p.name for p in workdir.iterdir()) == ["prompts.jsonl", "tools_small.py"])
    assert run_task(run, task, "--shard", "auto").code == 0  # the same task, as SLURM sets it: runs


def test_a_prompts_file_that_is_a_pipe_is_refused_before_anything_is_written(workdir, teacher):
    """Process substitution (`<(zcat prompts.jsonl.gz)`) gives a pipe, which the plan's first pass would
    empty: refused at once, without opening it, exit 2, nothing sent or written; the same prompts saved to a
    file run."""
    os.mkfifo(workdir / "piped.txt")
    args = ("piped.txt", "--tools", "none", "--base-url", teacher.base_url)
    result = run_script(workdir, *args, timeout=30)
    assert (result.code == 2
            and "piped.txt: cannot open the prompts file: it is a FIFO" in result.err), result.err
    assert "Save it to a file first" in result.err and not teacher.requests
    assert sorted(p.name for p in workdir.iterdir()) == ["piped.txt", "tools_small.py"]
    (workdir / "piped.txt").unlink()
    (workdir / "piped.txt").write_text("question\n")
    assert run_script(workdir, *args, timeout=30).code == 0 and len(read_jsonl(workdir / "train.jsonl")) == 1


def shard_of(prompt: str, shards: int) -> int:
    """The shard a plain prompt of PROMPTS lands in (its id is its conversation's hash)."""
    return gdd._shard_of(gdd.conversation_hash([{"role": "user", "content": prompt}]), shards)


def slurm_task(task: int, first: int, last: int, count: int, job: int, step: int = 1) -> dict:
    """The variables SLURM gives a task of `sbatch --array=...` (as 22.05 sets them: `--array=2` is an array
    of one, MIN=MAX=2; `--array=0,2` is MIN=0, MAX=2, COUNT=2, STEP=1)."""
    return {"SLURM_ARRAY_JOB_ID": str(job), "SLURM_ARRAY_TASK_ID": str(task),
            "SLURM_ARRAY_TASK_MIN": str(first), "SLURM_ARRAY_TASK_MAX": str(last),
            "SLURM_ARRAY_TASK_COUNT": str(count),
            "SLURM_ARRAY_TASK_STEP": str(step)}


def run_in_task(run, monkeypatch, env: dict, *args: str):
    for name in [n for n in __import__("os").environ if n.startswith(("SLURM_", "JOB_COMPLETION"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return run(*args, tools="none")


def test_a_task_submitted_again_alone_resumes_its_own_shard_of_the_array(run, workdir, teacher, monkeypatch):
    """`sbatch --array=2 job.sbatch` after `--array=0-3`: SLURM runs it as an array of one task (MIN=MAX=2,
    COUNT=1). It runs shard 2 of 4 again, from the note the array's first run left, paying for nothing twice;
    it was read as shard 0 of 1: every prompt paid again into a file the merge never reads."""
    write_prompts(workdir, PROMPTS)
    mine = [p for p in PROMPTS if shard_of(p, 4) == 2]
    teacher.script(mine[0], status(400, "refused this time"))
    for task in range(4):
        result = run_in_task(run, monkeypatch, slurm_task(task, 0, 3, 4, job=41), "--shard", "auto")
        assert result.code == (1 if task == 2 else 0), result.err
    assert json.loads((workdir / "train.slurm-array.json").read_text()) == \
        {"first": 0, "step": 1, "tasks": 4, "job": "41"}
    again = run_in_task(run, monkeypatch, slurm_task(2, 2, 2, 1, job=57), "--shard", "auto")
    assert again.code == 0, again.err
    assert again.err.count("shard 2 of 4") == 1 and "--array=0-3" in again.err
    assert (len(teacher.requests_for(mine[0])) == 2
            and all(len(teacher.requests_for(p)) == 1 for p in mine[1:]))
    assert not (workdir / "train.shard-0-of-1.jsonl").exists()
    merged = [i for k in range(4) for i in prompt_ids(workdir / f"train.shard-{k}-of-4.jsonl")]
    assert len(merged) == len(set(merged)) == len(PROMPTS)
    # a list of its tasks (--array=0,2: not evenly spaced) runs each one's own shard too
    listed = run_in_task(run, monkeypatch, slurm_task(0, 0, 2, 2, job=58), "--shard", "auto")
    assert listed.code == 0 and "Nothing to do" in listed.err and "shard 0 of 4" in listed.err
    # an array of another shape would overlap the shards here: refused, saying what works, nothing sent
    sent = len(teacher.requests)
    other = run_in_task(run, monkeypatch, slurm_task(1, 0, 1, 2, job=59), "--shard", "auto")
    assert (other.code == 2
            and "is not the one whose shards are here (--array=0-3, 4 tasks" in other.err), other.err
    assert "train.shard-*-of-4.jsonl) would be paid again" in other.err and "sbatch --array=0-3" in other.err
    assert len(teacher.requests) == sent and not list(workdir.glob("train.shard-*-of-2.jsonl"))


def test_the_whole_array_submitted_again_numbered_otherwise_goes_on_with_the_same_shards(run, workdir,
                                                                                         teacher,
                                                                                         monkeypatch):
    """--array=0-3 noted, then the whole array submitted as --array=1-4: the k-th task of either runs shard k,
    so the shards are the same. It was refused, saying its shards would overlap and every prompt be paid
    again, both untrue. It goes on with them (paying for nothing twice), and is noted anew, so a task of it
    submitted again alone in its own numbering finds its shard."""
    write_prompts(workdir, PROMPTS)
    mine = [p for p in PROMPTS if shard_of(p, 4) == 1]
    teacher.script(mine[0], status(400, "refused this time"))
    for task in range(4):
        assert run_in_task(run, monkeypatch, slurm_task(task, 0, 3, 4, job=70),
                           "--shard", "auto").code in (0, 1)
    said = []
    for task in range(1, 5):
        again = run_in_task(run, monkeypatch, slurm_task(task, 1, 4, 4, job=71), "--shard", "auto")
        assert again.code == 0 and "paid again" not in again.err, again.err
        said.append(again.err)
    assert "numbers the tasks of the one noted in train.slurm-array.json (--array=0-3) otherwise" in said[0]
    assert "task 1 goes on with shard 0 of 4" in said[0] and not any("noted" in err for err in said[1:])
    assert json.loads((workdir / "train.slurm-array.json").read_text())["first"] == 1
    assert (len(teacher.requests_for(mine[0])) == 2
            and all(len(teacher.requests_for(p)) == 1 for p in PROMPTS[1:] if p != mine[0]))
    # --array=2, as 1-4 counts
    alone = run_in_task(run, monkeypatch, slurm_task(2, 2, 2, 1, job=72), "--shard", "auto")
    assert alone.code == 0 and "shard 1 of 4" in alone.err and "Nothing to do" in alone.err, alone.err


def test_a_one_task_array_then_a_whole_array_is_refused_rather_than_paying_every_prompt_again(run, workdir,
                                                                                              teacher,
                                                                                              monkeypatch):
    """`sbatch --array=0` (a smoke test) runs shard 0 of 1, every prompt; `--array=0-3` then paid every prompt
    again, silently. The array of one is noted, so the later array is refused, truly: what the shards here
    hold would be paid again, and what to submit instead. The array of one, submitted again, goes on as it
    is."""
    write_prompts(workdir, PROMPTS[:6])
    first = run_in_task(run, monkeypatch, slurm_task(0, 0, 0, 1, job=73), "--shard", "auto")
    assert first.code == 0 and len(prompt_ids(workdir / "train.shard-0-of-1.jsonl")) == 6
    assert (json.loads((workdir / "train.slurm-array.json").read_text())
            == {"first": 0, "step": 1, "tasks": 1, "job": "73"})
    sent = len(teacher.requests)
    for task in range(4):
        whole = run_in_task(run, monkeypatch, slurm_task(task, 0, 3, 4, job=74), "--shard", "auto")
        assert (whole.code == 2
                and "(--array=0, 1 task, noted in train.slurm-array.json)" in whole.err), whole.err
        assert "the prompts done in its shards (train.shard-*-of-1.jsonl) would be paid again" in whole.err
        assert ("submit that array again (sbatch --array=0 ...)"
                in whole.err.replace(": finished shards end at once", ""))
    assert len(teacher.requests) == sent and not list(workdir.glob("train.shard-*-of-4.jsonl"))
    again = run_in_task(run, monkeypatch, slurm_task(0, 0, 0, 1, job=75), "--shard", "auto")
    assert again.code == 0 and "Nothing to do" in again.err and "runs apart" not in again.err, again.err


def test_a_task_alone_with_no_note_beside_another_arrays_shards_is_refused_naming_the_command(run, workdir,
                                                                                              teacher,
                                                                                              monkeypatch):
    write_prompts(workdir, PROMPTS)
    for k in range(3):  # shards run by hand: no note of an array
        assert run("--shard", f"{k}/3", "-o", "train.shard-{shard}.jsonl", tools="none").code == 0
    sent = len(teacher.requests)
    alone = run_in_task(run, monkeypatch, slurm_task(1, 1, 1, 1, job=60), "--shard", "auto")
    assert alone.code == 2 and "--shard 1/3 -o train.shard-1-of-3.jsonl" in alone.err, alone.err
    assert len(teacher.requests) == sent and not (workdir / "train.shard-0-of-1.jsonl").exists()


def test_an_array_of_one_task_in_a_fresh_folder_runs_every_prompt(run, workdir, teacher, monkeypatch):
    write_prompts(workdir, PROMPTS[:4])
    result = run_in_task(run, monkeypatch, slurm_task(5, 5, 5, 1, job=61), "--shard", "auto")
    assert result.code == 0 and len(prompt_ids(workdir / "train.shard-0-of-1.jsonl")) == 4
    # noted: see the test above
    assert json.loads((workdir / "train.slurm-array.json").read_text())["tasks"] == 1


@pytest.mark.parametrize("note", ["{not json", '{"first": "0", "step": 1, "tasks": 4}', '[0, 1, 4]',
                                  '{"first": 0, "step": 0, "tasks": 4}',
                                  '{"first": 0, "step": -1, "tasks": 2}',
                                  '{"first": -2, "step": 1, "tasks": 4}',
                                  '{"first": 0, "step": 1, "tasks": 0}',
                                  "[" * 100_000 + "]" * 100_000,
                                  '{"first": 0, "step": 1, "tasks": 4, "x": "%s"}' % ("y" * 5000)],
                         ids=["not JSON", "a string", "a list", "step 0", "step -1", "first -2", "no tasks",
                              "nested 100,000 deep", "5 kB"])
def test_a_hostile_array_note_is_refused_naming_it(run, workdir, teacher, monkeypatch, note):
    write_prompts(workdir, PROMPTS)
    (workdir / "train.slurm-array.json").write_text(note)
    result = run_in_task(run, monkeypatch, slurm_task(2, 2, 2, 1, job=62), "--shard", "auto")
    assert result.code == 2 and "train.slurm-array.json" in result.err and "Delete it" in result.err
    assert_no_traceback(result.err)
    assert not teacher.requests


def test_a_fifo_where_the_array_note_goes_is_refused_at_once(workdir, teacher):
    """A FIFO at train.slurm-array.json hung the task for ever, before it printed anything."""
    write_prompts(workdir, PROMPTS)
    os.mkfifo(workdir / "train.slurm-array.json")
    env = subprocess_env(**slurm_task(0, 0, 1, 2, job=63))
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                        "--shard", "auto", env=env, timeout=30)
    assert result.code == 2 and "train.slurm-array.json: cannot open the note" in result.err, result.err
    assert "it is a FIFO" in result.err and "Delete it" in result.err and not teacher.requests


def test_shard_in_a_folder_of_the_output_makes_a_folder_per_shard(run, workdir, teacher, monkeypatch):
    """`-o out/{shard}/train.jsonl`, a folder per shard: {shard} was replaced only in the file's name, so
    every task wrote out/{shard}/train.jsonl and the second was refused as another run on it. Each shard gets
    its folder, the array's note sits in out/, where all of them find it, and a task submitted again alone
    finds its shard."""
    write_prompts(workdir, PROMPTS)
    for task in range(3):
        result = run_in_task(run, monkeypatch, slurm_task(task, 0, 2, 3, job=64), "--shard", "auto",
                             "-o", "out/{shard}/train.jsonl")
        assert result.code == 0, result.err
    assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("train.jsonl")) == \
        [f"out/{k}-of-3/train.jsonl" for k in range(3)]
    assert json.loads((workdir / "out" / "train.slurm-array.json").read_text())["tasks"] == 3
    merged = [i for k in range(3) for i in prompt_ids(workdir / "out" / f"{k}-of-3" / "train.jsonl")]
    assert sorted(merged) == sorted(set(merged)) and len(merged) == len(PROMPTS)
    alone = run_in_task(run, monkeypatch, slurm_task(1, 1, 1, 1, job=65), "--shard", "auto",
                        "-o", "out/{shard}/train.jsonl")
    assert alone.code == 0 and "shard 1 of 3" in alone.err and "Nothing to do" in alone.err, alone.err
    by_hand = run("--shard", "2/3", "-o", "out/{shard}/train.jsonl", tools="none")
    assert by_hand.code == 0 and "Nothing to do" in by_hand.err and not list(workdir.rglob("*{shard}*"))


def test_the_array_is_noted_once_whatever_starts_at_once(workdir):
    note = workdir / "train.slurm-array.json"
    assert gdd.note_array(note, gdd.SlurmArray(0, 1, 16), "7") is None
    assert gdd.note_array(note, gdd.SlurmArray(0, 1, 16), "7") is None  # a second task: the first note stays
    assert json.loads(note.read_text()) == {"first": 0, "step": 1, "tasks": 16, "job": "7"}
    assert [p.name for p in workdir.iterdir() if "slurm-array" in p.name] == [note.name]  # no temporary left


def test_a_shard_that_holds_no_prompt_is_done(run, workdir, teacher, monkeypatch):
    """16 pods of an Indexed Job over 5 prompts: the pods whose shard holds none exit 0 (exit 2 made the Job
    restart them until it failed), saying so once."""
    prompts = PROMPTS[:5]
    write_prompts(workdir, prompts)
    empty = 0
    for index in range(16):
        result = run_in_task(run, monkeypatch, {"JOB_COMPLETION_INDEX": str(index)}, "--shard", "auto/16")
        assert result.code == 0, result.err
        if not any(shard_of(p, 16) == index for p in prompts):
            empty += 1
            assert result.err.count(f"shard {index} of 16 holds none of the prompts") == 1
            assert not (workdir / f"train.shard-{index}-of-16.jsonl").exists()
    assert empty >= 11
    merged = [i for k in range(16) for i in prompt_ids(workdir / f"train.shard-{k}-of-16.jsonl")]
    assert len(merged) == len(set(merged)) == 5
    assert "(more shards than prompts: 5 prompts among 16 shards)" in result.err or not empty


def test_shard_in_the_output_without_a_shard_is_refused(run, workdir, teacher):
    write_prompts(workdir, PROMPTS[:2])
    result = run("-o", "out/{shard}/train.jsonl", tools="none")
    assert result.code == 2 and "{shard} stands for a shard (I-of-N), and this run has none" in result.err
    assert not teacher.requests and not (workdir / "out").exists()


def test_a_shard_left_empty_by_the_hash_says_so_not_that_shards_outnumber_prompts(run, workdir, teacher):
    """6 prompts in 6 shards: the hash leaves some shards none, which said "(more shards than prompts)":
    false."""
    prompts = PROMPTS[:6]
    write_prompts(workdir, prompts)
    empty = next(k for k in range(6) if not any(shard_of(p, 6) == k for p in prompts))
    result = run("--shard", f"{empty}/6", tools="none")
    assert result.code == 0 and not teacher.requests
    assert result.err.count(f"shard {empty} of 6 holds none of the prompts") == 1
    assert "more shards than prompts" not in result.err
    assert ("by a hash of their ids, not in turn, so 6 prompts among 6 shards leave some with none"
            in result.err)
