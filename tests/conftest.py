"""Shared fixtures: a loopback fake teacher, a work folder, and two ways to run the script
(in-process through main(), and as a subprocess the way users run it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))  # the loopback teacher and other servers

import real_path  # noqa: E402
from fake_teacher import FakeTeacher  # noqa: E402

import generate_distillation_data as gdd  # noqa: E402

SCRIPT = ROOT / "generate_distillation_data.py"

SMALL_TOOLS = '''
from rnow.core.tool import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

@tool
async def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()
'''


@dataclass
class Result:
    code: int
    out: str
    err: str
    workdir: Path
    output: str = "train.jsonl"

    def records(self, name: str | None = None) -> list[dict]:
        return read_jsonl(self.workdir / (name or self.output))

    def failed(self) -> list[dict]:
        return self.records(Path(self.output).stem + ".failed.jsonl")


def read_jsonl(path: Path) -> list[dict]:
    """The one JSONL reader of the tests: every line, parsed strictly (orjson refuses NaN and lone
    surrogates, as RFC 8259 does); [] for a file that does not exist."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


@pytest.fixture
def teacher():
    server = FakeTeacher().start()
    yield server
    server.stop()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.delenv("OPENROUTER_BASE_URL", raising=False)
    (tmp_path / "tools_small.py").write_text(SMALL_TOOLS)
    return tmp_path


def write_prompts(workdir: Path, prompts: list, name: str = "prompts.jsonl") -> Path:
    """prompts: strings (become {"prompt": s}) or dicts (written as they are)."""
    path = workdir / name
    lines = [json.dumps({"prompt": p} if isinstance(p, str) else p) for p in prompts]
    path.write_text("\n".join(lines) + "\n")
    return path


def launch(workdir: Path, argv: list[str], *, in_process: bool = False, capsys=None, env: dict | None = None,
           timeout: float = 60) -> Result:
    """The one way the tests start the program, in one of two modes: in this process through main() (fast;
    capsys captures its output), or as a subprocess, the way users run it (with `env` as its environment)."""
    output = next((argv[i + 1] for i, a in enumerate(argv) if a in ("-o", "--output")), "train.jsonl")
    if in_process:
        code = gdd.main(argv)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err, workdir, output)
    process = start_script(workdir, *argv, env=env)
    out, err = process.communicate(timeout=timeout)
    return Result(process.returncode, out, err, workdir, output)


@pytest.fixture
def run(workdir, teacher, capsys):
    """The program against the fake teacher, with fast retries: in process, or `subprocess=True` as users
    run it. The common arguments are written once, here."""

    def run_main(*args: str, prompts: str = "prompts.jsonl", tools: str = "tools_small.py",
                 subprocess: bool = False, env: dict | None = None, timeout: float = 60) -> Result:
        argv = [prompts, "--tools", tools, "--base-url", teacher.base_url, "--backoff", "0.01", *args]
        return launch(workdir, argv, in_process=not subprocess, capsys=capsys, env=env, timeout=timeout)

    return run_main


def subprocess_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENROUTER_API_KEY", "OPENROUTER_BASE_URL")}
    env.update(extra)
    secrets_used(*(value for name, value in extra.items()
                   if gdd._KEY_LIKE.search(name) and "://" not in value))
    return env


# Every real-length secret a test gave the program (a key in the environment or .env, a key-like field of
# --extra-body, a token in a URL): when the tests end, no file they left holds one (pytest_sessionfinish
# below), but the .env files the tests wrote themselves, as users do.
KEYS_USED: set[str] = set()


def secrets_used(*values: str) -> None:
    """Secrets a test hands the program some other way than subprocess_env: the session's last grep looks for
    them."""
    KEYS_USED.update(value for value in values if len(value) >= gdd._MIN_SECRET_LENGTH)


def pytest_sessionfinish(session, exitstatus):
    factory = getattr(session.config, "_tmp_path_factory", None)
    if not KEYS_USED or factory is None:
        return
    needles = [key.encode() for key in KEYS_USED]
    leaks = []
    for path in factory.getbasetemp().rglob("*"):
        if path.name == ".env" or not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        leaks += [str(path) for needle in needles if needle in data]
    if leaks:
        session.exitstatus = 1
        print(f"\nthe API key was found in {len(leaks)} file(s) the tests left: {sorted(set(leaks))[:10]}",
              file=sys.stderr)


def start_script(workdir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """The subprocess mode, not waited for: for tests that signal or kill a run as it goes."""
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=workdir, env=env or subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_script(workdir: Path, *args: str, env: dict | None = None, timeout: float = 60) -> Result:
    """The subprocess mode with the command line exactly as given (no teacher, no defaults added)."""
    return launch(workdir, list(args), env=env, timeout=timeout)


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll a condition on real state (a file, a server counter); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def read_all_that_came(client_port: int, server_port: int) -> bool:
    """Whether the client's end of a loopback connection has read everything that reached it: its receive
    queue in /proc/net/tcp is empty."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) == client_port and int(remote.split(":")[1], 16) == server_port:
            return int(queues.split(":")[1], 16) == 0
    return False


def stopped(process: subprocess.Popen) -> bool:
    """Whether SIGSTOP has stopped the process (its state in /proc), not only been sent to it."""
    try:
        return open(f"/proc/{process.pid}/stat").read().rpartition(")")[2].split()[0] in ("T", "t", "Z")
    except OSError:
        return True


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@dataclass
class RealPath:
    """nginx with TLS for openrouter.ai, gzip and 1 s keep-alive, in front of a teacher of the session's."""

    teacher: FakeTeacher
    front: "real_path.NginxFront"
    folder: Path

    def command(self, *args: str) -> list[str]:
        """The script's command line, run where openrouter.ai resolves to 127.0.0.1."""
        return real_path.resolving([sys.executable, str(SCRIPT), *args], self.folder)

    def run_as_users_do(self, workdir: Path, *args: str) -> Result:
        """The script at the default URL (or the front's own, where openrouter.ai cannot be made to resolve
        here), with the test CA given as users give a proxy's: SSL_CERT_FILE in .env, none in the
        environment."""
        (workdir / ".env").write_text(f"SSL_CERT_FILE={self.front.certificates.bundle}\n"
                                      "OPENROUTER_API_KEY=sk-or-v1-test\n")
        if not self.front.is_default_url:
            args = (*args, "--base-url", self.front.base_url)
        env = {k: v for k, v in subprocess_env().items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
        return self.run(workdir, *args, env=env)

    def run(self, workdir: Path, *args: str, env: dict | None = None, timeout: float = 120) -> Result:
        """The subprocess mode, where openrouter.ai is the loopback nginx."""
        process = subprocess.run(self.command(*args), cwd=workdir, env=env or subprocess_env(),
                                 capture_output=True, text=True, timeout=timeout)
        return Result(process.returncode, process.stdout, process.stderr, workdir)


@pytest.fixture(scope="session")
def real(tmp_path_factory):
    if real_path.nginx_binary() is None or not real_path.private_namespace_works():
        pytest.skip("needs nginx and a private mount namespace (unshare -m), as .ci/run sets up")
    folder = tmp_path_factory.mktemp("real-path")
    teacher = FakeTeacher().start()
    front = real_path.NginxFront(teacher.port, folder).start()
    yield RealPath(teacher, front, folder)
    front.stop()
    teacher.stop()


# The suite runs on two workers (pytest-xdist, --dist loadgroup in pytest.ini). Tests that start a real
# Chromium share one worker: some of them check that no browser process is left behind, and another
# worker's browser would look like one.
BROWSER_TESTS = {"test_browse.py", "test_browse_remote.py"}
BROWSER_TEST_NAMES = {"test_report_page_in_real_chromium",
                      "test_readme_quick_start_journey_against_the_ci_teacher",
                      "test_the_report_page_shows_the_hygiene_counts_in_real_chromium"}


# The longest tests go first, so they run beside the rest instead of after it (a minute of the suite's wall
# time): LiteLLM's gateway waits for a calendar minute, the benchmark runs every figure at a tiny size.
LONGEST_FIRST = ("test_rate_control_gateway.py", "test_bench_smoke.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in BROWSER_TESTS or item.originalname in BROWSER_TEST_NAMES:
            item.add_marker(pytest.mark.xdist_group("chromium"))
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)  # stable: the rest keep their order


# ==================================================================================================
# Helpers several test files use
# ==================================================================================================

from fake_teacher import Reply, adjusted, answer, completion, drip, raw, status  # noqa: E402


def prompt_counts(workdir, output: str = "train.jsonl") -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in read_jsonl(workdir / output):
        prompt = next(m["content"] for m in record["messages"] if m["role"] == "user")
        counts[prompt] = counts.get(prompt, 0) + 1
    return counts


def assert_no_traceback(err: str) -> None:
    assert "Traceback" not in err and "Task exception was never retrieved" not in err, err


def fixed_calls(*ids: str | None, name: str = "add") -> object:
    calls = [{"type": "function", "function": {"name": name, "arguments": '{"a": 1, "b": 1}'},
              **({"id": i} if i is not None else {})} for i in ids]
    return lambda body: Reply(body=completion({"content": None, "tool_calls": calls}, "tool_calls"))


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
