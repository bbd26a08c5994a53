"""--shard auto on a real SLURM: Debian's slurm-wlm and munge, one node, started here with a slurm.conf of the
test's own (select/cons_tres, proctrack/linuxproc, task/none; OverSubscribe, so 16 tasks share 2 cores;
SLURM's default KillWait of 30 s). The sbatch script and the command that submits it are taken from
docs/scale.md as written, so the docs and this test cannot drift apart.

It takes a minute and needs root (SLURM's daemons), so it is not part of the suite (pytest.ini deselects the
`slurm` mark): CI runs it as a step of its own after the suite (.ci/run installs slurm-wlm and munge, as it
installs nginx), with `pytest -q -n 0 -m slurm tests/test_slurm.py` (SLURM_TEST_REQUIRED=1: there it fails
rather than skip). Elsewhere, without root or the packages, it skips, saying why."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SMALL_TOOLS, prompt_counts, subprocess_env, wait_for
from fake_teacher import FakeTeacher, Reply, completion
from real_path import free_port

import generate_distillation_data as gdd

pytestmark = pytest.mark.slurm

COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")


def docs_sbatch() -> tuple[str, str]:
    """docs/scale.md's sbatch script and the command that submits it, as written there."""
    scale = (ROOT / "docs" / "scale.md").read_text()
    script = re.search(r"```bash\n(#!/bin/bash\n#SBATCH.*?)```", scale, re.S)[1]
    submit = re.search(r"```bash\n([^\n]*sbatch distill\.sbatch)\n```", scale)[1]
    return script, submit


def _slurm_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root: SLURM's daemons (slurmctld, slurmd) start jobs as their users"
    path = os.environ.get("PATH", "") + ":/usr/sbin"
    missing = [name for name in COMMANDS if shutil.which(name, path=path) is None]
    if missing:
        return (f"needs Debian's slurm-wlm and munge ({', '.join(missing)} not found): apt-get install "
                "slurm-wlm munge, as .ci/run does")
    return None


class Cluster:
    """munged, slurmctld and slurmd on this machine, each a child of the test (by pid, stopped at the end),
    with their sockets, state and logs in one folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf),
                    "PATH": os.environ.get("PATH", "") + ":/usr/sbin"}
        self.daemons: list[subprocess.Popen] = []

    def start(self) -> "Cluster":
        # munged wants every folder above its socket open to all (x), which pytest's own folder is not
        munge = Path(tempfile.mkdtemp(prefix="munge-"))
        munge.chmod(0o711)
        self.munge = munge
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for name in ("state", "spool", "log"):
            (self.folder / name).mkdir()
        # NodeName=... CPUs=... as this machine has them
        node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, env=self.env,
                              check=True).stdout.splitlines()[0]
        host = node.split()[0].removeprefix("NodeName=")
        self.conf.write_text("\n".join([
            "ClusterName=test", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "AuthType=auth/munge", f"AuthInfo=socket={munge / 'socket'}", "CredType=cred/munge",
            f"StateSaveLocation={self.folder / 'state'}", f"SlurmdSpoolDir={self.folder / 'spool'}",
            f"SlurmctldPidFile={self.folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.folder / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.folder / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "MpiDefault=none", "ReturnToService=2", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            # 16 tasks of --cpus-per-task=2 on 2 cores: each core may be given to 16 jobs at once
            f"{re.sub(r'RealMemory=[0-9]+', 'RealMemory=1000', node)} State=UNKNOWN",
            "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:16", ""]))
        self._daemon("munged", "-F", f"--key-file={key}", f"--socket={munge / 'socket'}",
                     f"--pid-file={munge / 'pid'}", f"--log-file={munge / 'log'}",
                     f"--seed-file={munge / 'seed'}")
        wait_for(lambda: (munge / "socket").exists(), what="munged's socket")
        self._daemon("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._daemon("slurmd", "-D", "-f", str(self.conf))
        wait_for(lambda: self.run("sinfo", "-h", "-o", "%T", check=False).strip() == "idle", timeout=60,
                 what="the node to be idle")
        return self

    def _daemon(self, *command: str) -> None:
        log = open(self.folder / "log" / f"{command[0]}.out", "w")
        self.daemons.append(subprocess.Popen(list(command), env=self.env, stdout=log,
                                             stderr=subprocess.STDOUT))

    def run(self, *command: str, cwd: Path | None = None, env: dict | None = None, check: bool = True) -> str:
        done = subprocess.run(list(command), cwd=cwd, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"{command}: {done.stdout}{done.stderr}")
        return done.stdout

    def submit(self, command: str, cwd: Path, env: dict) -> str:
        """A submit command as written (through bash): the job id."""
        out = self.run("bash", "-c", command, cwd=cwd, env=env)
        return re.search(r"Submitted batch job (\d+)", out)[1]

    def queued(self, job: str) -> bool:
        return bool(self.run("squeue", "-h", "-j", job, check=False).strip())

    def tasks(self, job: str) -> dict[int, dict[str, str]]:
        """Each task of an array, as slurmctld keeps it after it ended (MinJobAge): its fields."""
        records = {}
        for line in self.run("scontrol", "-o", "show", "job", job).splitlines():
            fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
            records[int(fields.get("ArrayTaskId", 0))] = fields
        return records

    def stop(self) -> None:
        if self.daemons:
            self.run("scancel", "--full", "--user", "root", check=False)
        for daemon in reversed(self.daemons):
            daemon.terminate()
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        shutil.rmtree(getattr(self, "munge", self.folder / "none"), ignore_errors=True)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if (why := _slurm_missing()) is not None:
        if os.environ.get("SLURM_TEST_REQUIRED"):  # CI (.ci/run) must run it
            pytest.fail(why)
        pytest.skip(why)
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


# conftest's small tools, and one that takes its time, so a task is cancelled mid-rollout
TOOLS = SMALL_TOOLS + '''
import asyncio
from pathlib import Path


@tool
async def wait_for_release(name: str) -> str:
    """Wait until the test says go."""
    Path(f"waiting-{name}").touch()
    while not Path("release").exists():
        await asyncio.sleep(0.05)
    return "released"
'''

ARRAY = 16  # --array=0-15, as the docs' script writes it


def two_turns(slow_prompt: str):
    """Each rollout: a tool call (the slow prompt's waits for the test), then the answer."""
    def step(body: dict) -> Reply:
        first = body["messages"][0]
        prompt = first["content"] if first["role"] == "user" else body["messages"][1]["content"]
        if any(message["role"] == "tool" for message in body["messages"]):
            return Reply(body=completion({"content": f"answer to {prompt}"}))
        name, arguments = (("wait_for_release", {"name": "x"}) if prompt == slow_prompt
                           else ("add", {"a": 1, "b": 2}))
        call = {"id": "call_1", "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)}}
        return Reply(body=completion({"content": None, "tool_calls": [call]}, "tool_calls"))
    return step


def shard_of(prompt: str) -> int:
    return gdd._shard_of(gdd.conversation_hash([{"role": "user", "content": prompt}]), ARRAY)


def test_the_docs_sbatch_script_on_a_real_slurm(slurm, tmp_path):
    """The docs' script and submit command as written, 16 tasks: every prompt once after the merge; config.yml
    given one project_id by 16 tasks starting at once; a task cancelled mid-rollout (scancel: SIGTERM, then
    SIGKILL after KillWait) ends its log with its summary, and submitted again the usual way (`sbatch
    --array=N`) runs its own shard on from where it stopped, paying for nothing twice; empty shards are done;
    the whole array submitted again as --array=1-16 goes on with the same shards, and one of another size is
    refused, task by task, as SLURM's own variables say."""
    script, submit = docs_sbatch()
    assert "--array=0-15" in script and "exec " in script and "--open-mode=append" in script
    project = tmp_path / "project"
    project.mkdir()
    (project / "distill.sbatch").write_text(script)
    (project / "tools.py").write_text(TOOLS)
    (project / "config.yml").write_text((ROOT / "config.yml").read_text().split(gdd._PROJECT_ID_NOTE)[0])
    for name in (".venv", "generate_distillation_data.py"):
        (project / name).symlink_to(ROOT / name)
    prompts = [f"question {i}" for i in range(40)]
    (project / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    sizes = {k: [p for p in prompts if shard_of(p) == k] for k in range(ARRAY)}
    cancelled = max(sizes, key=lambda k: len(sizes[k]))  # a task with several prompts: one of them waits
    slow = sizes[cancelled][0]
    empty = [k for k in range(ARRAY) if not sizes[k]]

    teacher = FakeTeacher(default_step=two_turns(slow)).start()
    try:
        # sbatch hands its environment to the tasks
        env = subprocess_env(OPENROUTER_BASE_URL=teacher.base_url)
        job = slurm.submit(submit, project, env)
        wait_for(lambda: (project / "waiting-x").exists(), timeout=120,
                 what="the slow rollout's tool to start")
        slurm.run("scancel", f"{job}_{cancelled}")
        log = project / "logs" / f"distill-{cancelled}.log"
        wait_for(lambda: "Stopping" in log.read_text(), what="the cancelled task to hear SIGTERM")
        (project / "release").touch()  # the tool returns: its rollout pauses between turns
        wait_for(lambda: not slurm.queued(job), timeout=180, what="the array to end")

        tasks = slurm.tasks(job)
        assert tasks[cancelled]["JobState"] == "CANCELLED"
        assert {k: (t["JobState"], t["ExitCode"]) for k, t in tasks.items() if k != cancelled} == \
            {k: ("COMPLETED", "0:0") for k in range(ARRAY) if k != cancelled}, \
            {k: t["JobState"] for k, t in tasks.items()}
        text = log.read_text()
        # after SLURM's own line about the cancel, the run's summary, and nothing after it: it ended
        # before SIGKILL
        assert text.rindex("CANCELLED AT") < text.rindex("\nDone: ") < text.rindex("\nTime: ")
        assert "Paused: 1 rollout" in text and "Not done:" in text
        assert not any(line.startswith("slurmstepd") for line in text[text.rindex("\nDone: "):].splitlines())
        for k in empty:
            assert "holds none of the prompts" in (project / "logs" / f"distill-{k}.log").read_text()

        config = (project / "config.yml").read_text()
        assert config.count("project_id:") == 1 and yaml.safe_load(config)["project_id"]
        added = [k for k in range(ARRAY)
                 if "added project_id" in (project / "logs" / f"distill-{k}.log").read_text()]
        assert len(added) == 1, added
        assert json.loads((project / "train.slurm-array.json").read_text())["tasks"] == ARRAY

        again = slurm.submit(f"sbatch --array={cancelled} distill.sbatch", project, env)  # the usual way
        wait_for(lambda: not slurm.queued(again), timeout=120, what="the task submitted again to end")
        assert slurm.tasks(again)[cancelled]["ExitCode"] == "0:0", log.read_text()
        text = log.read_text()  # --open-mode=append: both runs of the task in its log
        assert f"shard {cancelled} of {ARRAY}" in text and not (project / "train.shard-0-of-1.jsonl").exists()

        # nothing paid twice: two answers a rollout (the tool call, the answer), the slow one's included
        assert {p: len(teacher.requests_for(p)) for p in prompts} == {p: 2 for p in prompts}

        # the whole array submitted again, numbered otherwise (SLURM sets MIN=1, MAX=16): the same shards,
        # each ends at once; an array of another size would overlap them: each of its tasks is refused, exit 2
        sent = len(teacher.requests)
        renumbered = slurm.submit(f"sbatch --array=1-{ARRAY} distill.sbatch", project, env)
        wait_for(lambda: not slurm.queued(renumbered), timeout=180, what="the renumbered array to end")
        assert {t["ExitCode"] for t in slurm.tasks(renumbered).values()} == {"0:0"}
        assert json.loads((project / "train.slurm-array.json").read_text())["first"] == 1
        other = slurm.submit("sbatch --array=0-7 distill.sbatch", project, env)
        wait_for(lambda: not slurm.queued(other), timeout=180, what="the array of another size to end")
        assert {t["ExitCode"] for t in slurm.tasks(other).values()} == {"2:0"}
        assert "is not the one whose shards are here (--array=1-16, 16 tasks" in \
            (project / "logs" / "distill-3.log").read_text()
        assert len(teacher.requests) == sent and not list(project.glob("train.shard-*-of-8.jsonl"))
        # the docs' merge
        slurm.run("bash", "-c", f"cat train.shard-*-of-{ARRAY}.jsonl > train.jsonl", cwd=project)
        assert prompt_counts(project) == {f"question {i}": 1 for i in range(40)}
    finally:
        teacher.stop()
