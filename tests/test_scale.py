"""Scale past one machine: shards from the scheduler (SLURM job arrays, Kubernetes Indexed Jobs), run as
subprocesses with the scheduler's environment, the way an array task runs the script."""

from __future__ import annotations

import pytest
from conftest import read_jsonl, subprocess_env, write_prompts

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
