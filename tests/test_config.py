"""Settings, config.yml and the environment: flags and their limits, the key (from the environment or .env,
checked at start, never shown), the base URL, --extra-body, --dry-run."""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, fixed_calls, run_script, subprocess_env, write_prompts
from fake_teacher import Reply, completion
from real_path import free_port

import generate_distillation_data as gdd


def test_extra_body_reaches_the_server_inline_and_from_a_file(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    routing = {"provider": {"sort": "throughput", "data_collection": "deny"},
               "models": ["a/b", "c/d"], "seed": 7}
    run("--extra-body", json.dumps(routing), tools="none")
    assert {k: teacher.requests[-1][k] for k in routing} == routing
    (workdir / "body.json").write_text(json.dumps({"max_tokens": 99}))
    run("-o", "other.jsonl", "--extra-body", "@body.json", tools="none")
    assert teacher.requests[-1]["max_tokens"] == 99


def test_extra_body_must_be_an_object(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    result = run("--extra-body", "[1, 2]", tools="none")
    assert result.code == 2 and "must be a JSON object" in result.err and not teacher.requests


def test_dry_run_sends_nothing_and_shows_the_request(run, workdir, teacher):
    write_prompts(workdir, ["first", "second"])
    env = subprocess_env(OPENROUTER_API_KEY="sk-or-v1-abcdefghijklmnopqrstuvwxyz")
    result = run("--dry-run", "--samples", "2", env=env, subprocess=True)
    assert result.code == 0, result.err
    assert not teacher.requests and not (workdir / "train.jsonl").exists()
    body = json.loads(result.out[result.out.index("{"):])
    assert body["messages"] == [{"role": "user", "content": "first"}]
    assert [t["function"]["name"] for t in body["tools"]] == ["add", "shout"]
    assert "sk-or-v1...wxyz" in result.out and "abcdefghijklmnop" not in result.out + result.err
    assert "4 rollouts to run" in result.err


def test_request_carries_options_and_key(run, workdir, teacher):
    write_prompts(workdir, ["q"])
    env = subprocess_env(OPENROUTER_API_KEY="sk-or-v1-secret-test-key")
    result = run("-m", "x/model", "--max-tokens", "77", "--temperature", "0.1",
                 tools="none", env=env, subprocess=True)
    assert result.code == 0, result.err
    body = teacher.requests[0]
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("x/model", 77, 0.1)
    assert teacher.headers[0]["authorization"] == "Bearer sk-or-v1-secret-test-key"
    assert "secret-test-key" not in result.out + result.err + (workdir / "train.jsonl").read_text()


@pytest.mark.parametrize("args,message", [
    (["-c", "0"], "--concurrency: must be at least 1"),
    (["--max-turns", "-1"], "--max-turns: must be at least 1"),
    (["--temperature", "3"], "--temperature: must be between 0 and 2"),
    (["--timeout", "abc"], "--timeout: expected a number"),
    (["--shard", "3/3"], "--shard"),
    (["--tools", "missing_tools.py"], "tools file missing_tools.py not found"),
    (["--extra-body", "{not json"], "--extra-body: not valid JSON"),
])
def test_nonsense_options_exit_2(workdir, teacher, args, message):
    write_prompts(workdir, ["q"])
    result = run_script(workdir, "prompts.jsonl", "--base-url", teacher.base_url,
                        *(["--tools", "none"] + args))
    assert result.code == 2 and message in result.err and "Traceback" not in result.err
    assert not teacher.requests and not (workdir / "train.jsonl").exists()


def test_missing_input_and_missing_key(workdir, teacher):
    result = run_script(workdir, "nope.jsonl", "--tools", "none", "--base-url", teacher.base_url)
    assert result.code == 2 and "nope.jsonl: cannot read" in result.err
    write_prompts(workdir, ["q"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none")  # OpenRouter, no key
    assert result.code == 2 and "OPENROUTER_API_KEY is not set" in result.err and ".env" in result.err


def test_key_from_dotenv_file(run, workdir, teacher):
    write_prompts(workdir, ["q"])
    (workdir / ".env").write_text("OPENROUTER_API_KEY=sk-from-dotenv\n")
    result = run(tools="none", subprocess=True)
    assert result.code == 0 and teacher.headers[0]["authorization"] == "Bearer sk-from-dotenv"


def test_config_yml_nested_5000_deep_aliases_and_size_are_refused_at_once(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    cases = {"deep": "rollout:\n  max_turns: " + "[" * 5000 + "]" * 5000 + "\n",
             "aliases": bomb + "rollout:\n  max_turns: 3\n",
             "large": "rollout:\n  max_turns: 3\n# " + "x" * (2 << 20) + "\n",
             "echo": "rollout:\n  max_turns: '" + "9" * 100_000 + "x'\n"}
    for case, text in cases.items():
        (workdir / "config.yml").write_text(text)
        # one as users run it; the rest in process
        result = run(tools="none", subprocess=case == "aliases", timeout=30)
        assert result.code == 2, (case, result.err[-500:])
        assert "config.yml" in result.err and "Traceback" not in result.err, case
        assert len(result.err) < 2000, case  # no value echoed whole
    assert teacher.requests == []


def test_context_compression_is_asked_off_at_openrouter_unless_the_user_chose(workdir):
    write_prompts(workdir, ["q"])
    env = subprocess_env(OPENROUTER_API_KEY="sk-or-v1-" + "0" * 64)

    def body_sent(*extra: str) -> dict:
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--dry-run", *extra, env=env)
        assert result.code == 0, result.err
        return json.loads(result.out[result.out.index("{"):result.out.rindex("}") + 1])

    assert body_sent()["plugins"] == [{"id": "context-compression", "enabled": False}]
    web = body_sent("--extra-body", '{"plugins": [{"id": "web"}]}')["plugins"]
    assert web == [{"id": "web"}, {"id": "context-compression", "enabled": False}]
    chosen = body_sent("--extra-body", '{"plugins": [{"id": "context-compression"}]}')["plugins"]
    assert chosen == [{"id": "context-compression"}]
    other = body_sent("--base-url", "http://127.0.0.1:9/v1")
    assert "plugins" not in other  # only OpenRouter has the plugin


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
    write_prompts(workdir, [{"id": "ab", "prompt": "How do I run ollama with key e?",
                             "metadata": {"e": "sk-1234"}},
                            "token-abc123 and ollama",
                            {"prompt": "metadata everywhere", "metadata": {"ollama": "e"}}])
    assert run().code == 0
    without_key = (workdir / "train.jsonl").read_bytes()
    (workdir / "train.jsonl").unlink()
    monkeypatch.setenv("OPENROUTER_API_KEY", key)
    result = run()
    assert result.code == 0, result.err
    assert (workdir / "train.jsonl").read_bytes() == without_key
    assert run().code == 0 and "Nothing to do" in run().err  # the re-run finds every prompt done


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


def test_a_base_url_with_a_password_authenticates_with_it_and_the_key_is_not_sent(workdir, teacher):
    """http://user:PASSWORD@host/v1 beside OPENROUTER_API_KEY (as .env usually holds it): the URL's user
    information is the authentication (HTTP Basic), the key goes nowhere, and the run says so once; alone,
    the URL's credentials are sent as they always were."""
    write_prompts(workdir, ["q0", "q1"])
    key = "sk-or-v1-" + "ab12" * 16
    base_url = teacher.base_url.replace("http://", "http://gwuser:gateway-password-0123456789@")
    args = ["prompts.jsonl", "--tools", "none", "--base-url", base_url, "--backoff", "0.01"]
    dry = run_script(workdir, *args, "--dry-run", env=subprocess_env(OPENROUTER_API_KEY=key))
    assert dry.code == 0 and "Authorization: Basic *** (the user information of --base-url; " \
        "OPENROUTER_API_KEY is not sent)" in dry.out
    result = run_script(workdir, *args, env=subprocess_env(OPENROUTER_API_KEY=key))
    assert result.code == 0, result.err
    assert len(result.records()) == 2 and not (workdir / "train.failed.jsonl").exists()
    expected = "Basic " + base64.b64encode(b"gwuser:gateway-password-0123456789").decode()
    assert [h["authorization"] for h in teacher.headers] == [expected, expected]  # never the key
    assert result.err.count("OPENROUTER_API_KEY is not sent to it") == 1
    assert "gateway-password" not in result.err + dry.out + dry.err
    write_prompts(workdir, ["q2"])
    alone = run_script(workdir, *args)
    assert (alone.code == 0 and teacher.headers[-1]["authorization"] == expected
            and "not sent" not in alone.err)


# --------------------------------------------------------------------------------------------------
# config.yml for `rnow run`: the folder trains with nothing but `rnow login`
# --------------------------------------------------------------------------------------------------

class RnowApi:
    """A loopback stand-in for ReinforceNow's API that records what rnow's CLI asks of it and refuses it all
    (403), so `rnow run` stops right after its first request: the upload session for the project."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, bytes]] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                api.requests.append((self.path, dict(self.headers), body))
                self.send_response(403)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"error": "recorded by the test"}')

            do_GET = do_POST

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"


def logged_in_home(folder: Path) -> Path:
    """What `rnow login` and `rnow orgs` leave in a home folder."""
    (folder / ".rnow").mkdir(parents=True)
    (folder / ".rnow" / "credentials.json").write_text(json.dumps({"api_key": "rnow-key-of-the-test"}))
    (folder / ".rnow" / "config.json").write_text(json.dumps({"active_organization_id": "org-of-the-test"}))
    return folder


def test_after_a_run_rnows_own_cli_takes_the_folder_with_nothing_but_a_login(workdir, teacher,
                                                                             tmp_path_factory):
    bundled = (ROOT / "config.yml").read_text().split(gdd._PROJECT_ID_NOTE)[0]  # as shipped (the quick start
    #                                                                          may have run in this checkout)
    (workdir / "config.yml").write_text(bundled)
    (workdir / "tools.py").write_text((workdir / "tools_small.py").read_text())
    write_prompts(workdir, [f"question {i}" for i in range(6)])
    first = run_script(workdir, "prompts.jsonl", "--base-url", teacher.base_url)
    assert first.code == 0, first.err
    config = (workdir / "config.yml").read_text()
    assert config.startswith(bundled)  # the user's file kept byte for byte; one line added
    project_id = yaml.safe_load(config)["project_id"]
    assert str(uuid.UUID(project_id)) == project_id and f"added project_id {project_id}" in first.err
    assert "never run it here" in first.err and first.err.count("project_id") == 1
    again = run_script(workdir, "prompts.jsonl", "--base-url", teacher.base_url)
    assert (again.code == 0 and (workdir / "config.yml").read_text() == config
            and "project_id" not in again.err)

    api = RnowApi()
    rnow = Path(sys.executable).with_name("rnow")
    env = subprocess_env(HOME=str(logged_in_home(tmp_path_factory.mktemp("home"))))
    done = subprocess.run([str(rnow), "--api-url", api.url, "run"], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=120)
    api.server.shutdown()
    said = done.stdout + done.stderr
    assert ("Missing project_id" not in said and "Invalid train.jsonl" not in said
            and "Invalid tools.py" not in said)
    # its local checks all passed
    assert [path for path, _, _ in api.requests] == ["/api/uploads/session"], said
    path, headers, body = api.requests[0]
    assert json.loads(body)["projectId"] == project_id
    assert headers["Authorization"] == "Bearer rnow-key-of-the-test"


def test_a_flow_mapping_config_yml_gets_its_id_inside_its_braces(run, workdir, teacher):
    """A config.yml written as one flow mapping: the note said to append a `project_id:` line, which makes the
    file invalid YAML (rnow run would then fail to read it). The pair goes inside the braces, the rest as it
    was."""
    flow = '{dataset_type: sft, data: {train_file: train.jsonl, batch_size: 1}, trainer: {num_epochs: 1}}\n'
    (workdir / "config.yml").write_text(flow)
    write_prompts(workdir, ["q"])
    result = run(tools="none", subprocess=True)
    assert result.code == 0 and len(result.records()) == 1
    config = (workdir / "config.yml").read_text()
    project_id = yaml.safe_load(config)["project_id"]
    assert config == flow.replace("}}\n", f'}}, project_id: "{project_id}"}}\n')
    assert yaml.safe_load(config) == {**yaml.safe_load(flow), "project_id": project_id}
    assert result.err.count(f"added project_id {project_id}") == 1


@pytest.mark.parametrize("text", [b"? project_id\n: \ndataset_type: sft\n",
                                  b"dataset_type: sft\nproject_id: 0\n",
                                  b"project_id:\ndataset_type: sft\nproject_id:\n"],
                         ids=["a complex key", "a number", "twice"])
def test_a_config_yml_the_id_cannot_be_added_to_safely_is_left_as_it_is_saying_so_truly(run, workdir, teacher,
                                                                                        text):
    (workdir / "config.yml").write_bytes(text)
    write_prompts(workdir, ["q"])
    result = run(tools="none", subprocess=True)
    assert result.code == 0 and len(result.records()) == 1
    assert (workdir / "config.yml").read_bytes() == text
    assert ("cannot add one safely to how the file is written, so it is left as it is"
            in result.err), result.err
    assert 'project_id: "' in result.err and "rnow init" in result.err and result.err.count("project_id") <= 4
    # one line, no parser dump
    assert "\n  " not in result.err.split("cannot add one safely")[1].split("\n")[0]


def test_a_config_yml_that_names_its_project_or_is_not_rnows_is_not_touched(run, workdir, teacher):
    named = 'project_id: "mine"\ndataset_type: sft\n'
    (workdir / "config.yml").write_text(named)
    write_prompts(workdir, ["q"])
    assert run(tools="none").code == 0 and (workdir / "config.yml").read_text() == named
    # only our settings: not an rnow project
    (workdir / "config.yml").write_text("rollout:\n  max_turns: 3\n")
    assert run("-o", "other.jsonl", tools="none").code == 0
    assert (workdir / "config.yml").read_text() == "rollout:\n  max_turns: 3\n"


def test_the_project_id_step_keeps_a_read_only_config_yml_read_only(run, workdir, teacher):
    (workdir / "config.yml").write_text("dataset_type: sft\n")
    (workdir / "config.yml").chmod(0o400)
    write_prompts(workdir, ["q"])
    result = run(tools="none", subprocess=True)
    assert result.code == 0 and "added project_id" in result.err, result.err
    assert oct((workdir / "config.yml").stat().st_mode & 0o777) == "0o400"
    assert "project_id" in (workdir / "config.yml").read_text()


def test_dry_run_adds_no_project_id(run, workdir, teacher):
    (workdir / "config.yml").write_text("dataset_type: sft\n")
    write_prompts(workdir, ["q"])
    assert run("--dry-run", tools="none").code == 0
    assert (workdir / "config.yml").read_text() == "dataset_type: sft\n" and not teacher.requests


def test_eight_runs_starting_at_once_give_config_yml_one_project_id(workdir, teacher):
    """The tasks of a job array start together in one folder, each with the docs' command (--tools tools.py,
    whose import widens the window): they left 3-5 project_id lines, each task announcing its own id."""
    bundled = (ROOT / "config.yml").read_text().split(gdd._PROJECT_ID_NOTE)[0]
    (workdir / "config.yml").write_text(bundled)
    (workdir / "tools.py").write_text((workdir / "tools_small.py").read_text())
    write_prompts(workdir, [f"question {i}" for i in range(8)])
    from conftest import start_script

    runs = [start_script(workdir, "prompts.jsonl", "--base-url", teacher.base_url, "--shard", f"{k}/8",
                         "-o", "train.{shard}.jsonl") for k in range(8)]
    said = [run.communicate(timeout=120)[1] for run in runs]
    assert all(run.returncode == 0 for run in runs), said
    config = (workdir / "config.yml").read_text()
    assert config.startswith(bundled) and config.count("project_id:") == 1
    project_id = yaml.safe_load(config)["project_id"]
    assert ([err.count("project_id") for err in said].count(1) == 1
            and sum(err.count("project_id") for err in said) == 1)
    assert any(f"added project_id {project_id}" in err for err in said)


@pytest.mark.parametrize("empty", ['project_id: ""', "project_id:", "project_id: null", "project_id: ''",
                                   "project_id :", '"project_id": ~', "{project_id: }"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("bom", ["", "\ufeff"], ids=["", "BOM"])
def test_an_empty_project_id_is_filled_in_not_given_a_second_key(run, workdir, teacher, empty, newline, bom):
    """Under CRLF line ends (a Windows editor), after a BOM, or as `project_id :`, the empty key was left and
    a second one appended (a duplicate key: invalid YAML 1.2, and LF lines mixed into a CRLF file). It is
    filled in where the YAML parser finds it, its comment and every other byte kept."""
    if empty.startswith("{"):
        lines = [bom + "{project_name: x,", "  project_id: , dataset_type: sft}  # fill me"]
    else:
        lines = [bom + "project_name: x", f"{empty}  # fill me", "dataset_type: sft"]
    text = newline.join(lines) + newline
    (workdir / "config.yml").write_bytes(text.encode())
    write_prompts(workdir, ["q"])
    result = run(tools="none")
    assert result.code == 0, result.err
    config = (workdir / "config.yml").read_bytes().decode()
    project_id = yaml.safe_load(config.removeprefix("\ufeff"))["project_id"]
    filled = f'project_id: "{project_id}"'
    assert config == text.replace(empty if not empty.startswith("{") else "project_id: ", filled)
    assert config.count("project_id") == 1 and f"added project_id {project_id}" in result.err
