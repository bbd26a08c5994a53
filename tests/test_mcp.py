"""Tools from MCP servers: real servers (the MCP SDK's MCPServer, tests/support/mcp_server.py) over stdio and
over streamable HTTP on loopback; the generator run as a subprocess, as users run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (
    ROOT,
    read_jsonl,
    run_script,
    secrets_used,
    start_script,
    subprocess_env,
    wait_for,
    write_prompts,
)
from fake_teacher import FakeTeacher, answer, call_tools
from real_path import free_port, listening

pytestmark = pytest.mark.xdist_group("mcp")


SERVER = ROOT / "tests" / "support" / "mcp_server.py"


STDIO = f"{sys.executable} {SERVER} stdio"


class HttpServer:
    """tests/support/mcp_server.py over streamable HTTP, in its own process."""

    def __init__(self, path: str = "/mcp") -> None:
        self.port, self.path = free_port(), path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> "HttpServer":
        self.process = subprocess.Popen([sys.executable, str(SERVER), "http", str(self.port)],
                                        env={**subprocess_env(), "MCP_PATH": self.path},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: listening(self.port), what="the MCP server to listen")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def http_server():
    server = HttpServer().start()
    yield server
    server.stop()


def generate(workdir: Path, teacher: FakeTeacher, *args: str):
    return run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                      "--backoff", "0.01", *args, timeout=120)


def tool_results(result) -> dict[str, str]:
    return {r["messages"][0]["content"]: [m["content"] for m in r["messages"] if m["role"] == "tool"]
            for r in result.records()}


def test_a_stdio_server_end_to_end_results_errors_and_ref_schemas(workdir, teacher):
    teacher.script("sum", call_tools(("add", {"a": 2, "b": 3})), answer("5"))
    teacher.script("error", call_tools(("fail", {})), answer("it failed"))
    teacher.script("where", call_tools(("lookup", {"place": {"city": "Paris"}})), answer("Paris"))
    write_prompts(workdir, ["sum", "error", "where"])
    result = generate(workdir, teacher, "--mcp", STDIO, "--export", "hf")
    assert result.code == 0, result.err
    results = tool_results(result)
    assert results == {"sum": ["5"], "error": ["Error executing tool fail"], "where": ["Paris, FR"]}
    sent = {tool["function"]["name"]: tool["function"]["parameters"] for tool in teacher.requests[0]["tools"]}
    assert "$defs" in sent["lookup"] and "$ref" in json.dumps(sent["lookup"])  # passed through as listed
    assert result.records()[0]["tools"] == list(sent)
    # --export --no-run later, with no server: the schemas the run used were kept
    (workdir / "train.hf.jsonl").unlink()
    again = run_script(workdir, "prompts.jsonl", "--tools", "none", "--export", "hf", "--no-run")
    assert again.code == 0, again.err
    assert read_jsonl(workdir / "train.hf.jsonl")[0]["tools"][0]["function"]["name"] == "add"


def test_a_secret_in_a_servers_tool_description_reaches_no_file(workdir, teacher):
    """A stdio server gets the environment (its own keys live there) and may quote one describing a tool: the
    kept schemas, the hf export's tools and the card are writers too. The teacher was sent it as it came."""
    token = "hf_" + "D3sc" * 8
    secrets_used(token)
    teacher.script("sum", call_tools(("add", {"a": 2, "b": 3})), answer("5"))
    write_prompts(workdir, ["sum"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                        "--backoff", "0.01", "--mcp", STDIO, "--export", "hf",
                        env=subprocess_env(HF_TOKEN=token, ADD_NOTE=f" Uses {token}."), timeout=120)
    assert result.code == 0, result.err
    described = {t["function"]["name"]: t["function"]["description"] for t in teacher.requests[0]["tools"]}
    assert described["add"] == f"Add two integers. Uses {token}."
    exported = {t["function"]["name"]: t["function"]["description"]
                for t in read_jsonl(workdir / "train.hf.jsonl")[0]["tools"]}
    assert exported["add"] == "Add two integers. Uses ***."
    written = "".join(p.read_text(errors="replace") for p in workdir.rglob("*") if p.is_file())
    assert token not in written + result.out + result.err


def test_config_yml_of_rnows_mcp_template_two_servers_named_as_rnow_names_them(workdir, teacher, http_server):
    other = HttpServer().start()
    try:
        (workdir / "config.yml").write_text(
            "project_id: \"\"\nproject_name: \"MCP Tavily Search Agent\"\n"
            "dataset_id: \"\"\ndataset_type: rl\n"
            "organization_id: \"\"\ndata:\n  train_file: train.jsonl\n  batch_size: 16\n  group_size: 8\n"
            "model:\n  path: Qwen/Qwen3-8B\n  qlora_rank: 32\n"
            "algorithm:\n  loss_fn: ppo\n  adv_estimator: grpo\n  kl_penalty_coef: 0.01\n"
            "rollout:\n  max_turns: 6\n  max_context_window: 32768\n  termination_policy: last_tool\n"
            f"  mcp_url:\n    - \"{http_server.url}?tavilyApiKey=tvly-SECRET123\"\n"
            f"    - \"{other.url}\"\n"
            "  max_tool_response: 2\n"
            "trainer:\n  num_epochs: 1\n  learning_rate: 0.0001\n  save_step: 20\n")
        teacher.script("both", call_tools(("mcp_0_add", {"a": 1, "b": 1}),
                                          ("mcp_1_shout", {"text": "hello there"})),
                       answer("ok"))
        write_prompts(workdir, ["both"])
        dry = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                         "--dry-run")
        assert dry.code == 0, dry.err
        assert "max_turns 6 (config.yml)" in dry.err and "tavilyApiKey=***" in dry.err
        result = generate(workdir, teacher)
    finally:
        other.stop()
    assert result.code == 0, result.err
    assert "SECRET123" not in result.err + result.out + dry.err + dry.out
    # 2 tokens: 8 chars
    assert tool_results(result)["both"] == ["2", "HELLO TH\n\n[... truncated 3 of 11 characters]"]
    assert {t["function"]["name"] for t in teacher.requests[0]["tools"]} >= {"mcp_0_add", "mcp_1_shout"}


def test_the_bundled_config_yml_still_validates_with_rnow():
    yaml = pytest.importorskip("yaml")
    config = pytest.importorskip("rnow.models")
    data = yaml.safe_load((ROOT / "config.yml").read_text())
    config.ProjectConfig(**data)


def test_a_name_clash_with_tools_py_is_exit_2_naming_both(workdir, teacher):
    (workdir / "mine.py").write_text("from rnow.core.tool import tool\n\n@tool\n"
                                     "def add(a: int, b: int) -> int:\n"
                                     "    \"\"\"Add.\"\"\"\n    return a + b\n")
    write_prompts(workdir, ["q"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "mine.py", "--base-url", teacher.base_url,
                        "--mcp", STDIO)
    assert (result.code == 2 and "'add'" in result.err and "tools.py" in result.err
            and "Traceback" not in result.err)
    assert not teacher.requests


def test_a_server_down_at_start_is_exit_2_with_its_url_and_no_secret(workdir, teacher):
    write_prompts(workdir, ["q"])
    url = f"http://127.0.0.1:{free_port()}/mcp?tavilyApiKey=tvly-SECRET123"
    result = generate(workdir, teacher, "--mcp", url)
    assert result.code == 2 and "cannot be reached" in result.err and "tavilyApiKey=***" in result.err
    assert "SECRET123" not in result.err and "Traceback" not in result.err and not teacher.requests
    # exit 2 wrote nothing
    assert sorted(p.name for p in workdir.iterdir()) == ["prompts.jsonl", "tools_small.py"]


def test_a_stdio_server_that_dies_at_start_is_exit_2_saying_what_it_wrote_and_leaving_no_file(workdir,
                                                                                              teacher):
    """Its stderr would go to the MCP log; a refused start leaves no file, so its words are in the error. The
    same start with the server up writes the run's record and the log, and the runs file counts that run
    only."""
    write_prompts(workdir, ["q"])
    dying = (f"{sys.executable} -c "
             "\"import sys; sys.stderr.write('calc: cannot open its database'); sys.exit(3)\"")
    result = generate(workdir, teacher, "--mcp", dying)
    assert (result.code == 2 and "cannot be reached" in result.err
            and "Traceback" not in result.err), result.err
    assert "calc: cannot open its database" in result.err and not teacher.requests
    assert sorted(p.name for p in workdir.iterdir()) == ["prompts.jsonl", "tools_small.py"]
    teacher.script("q", call_tools(("add", {"a": 1, "b": 2})), answer("3"))
    ran = generate(workdir, teacher, "--mcp", STDIO, "--export", "hf")
    assert ran.code == 0, ran.err
    assert len(read_jsonl(workdir / "train.runs.jsonl")) == 1 and (workdir / "train.mcp.log").exists()
    # the MCP tools, known by then
    assert "add" in read_jsonl(workdir / "train.runs.jsonl")[0]["rollout"]["tools"]
    assert "Made by 1 run" in (workdir / "train.hf.README.md").read_text()


def test_a_hanging_call_is_a_tool_error_after_the_tool_timeout(workdir, teacher):
    (workdir / "config.yml").write_text("rollout:\n  tool_timeout: 4\n")  # a new server starts within it
    teacher.script("hang", call_tools(("hang", {})), call_tools(("add", {"a": 1, "b": 2})), answer("gave up"))
    write_prompts(workdir, ["hang"])
    result = generate(workdir, teacher, "--mcp", STDIO)
    assert result.code == 0, result.err
    assert tool_results(result)["hang"] == ["Error: tool 'hang' timed out after 4 s.", "3"]  # and reconnected
    assert not servers_left_in(workdir)  # the server hung in its call was ended, not left behind


def servers_left_in(folder) -> list[int]:
    """Processes of an MCP server still running in this folder."""
    left = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(proc / "cwd").resolve() == folder.resolve() \
                    and b"mcp_server.py" in (proc / "cmdline").read_bytes():
                left.append(int(proc.name))
        except OSError:
            continue
    return left


def test_a_server_that_dies_under_a_call_fails_that_rollout_and_is_started_again(workdir, teacher):
    """A dead tool is not a training sample: the rollout whose call met the server's death fails as
    unavailable (never written with "Connection closed" as its result); the next run starts the server
    again and the rollout finishes."""
    teacher.script("die", call_tools(("die", {})), call_tools(("add", {"a": 20, "b": 22})), answer("42"))
    write_prompts(workdir, ["die"])
    first = generate(workdir, teacher, "--mcp", STDIO)
    assert first.code == 1 and first.records() == []
    assert "unavailable" in json.dumps(first.failed())
    result = generate(workdir, teacher, "--mcp", STDIO)
    assert result.code == 0, result.err
    assert tool_results(result)["die"] == ["42"]


def test_an_http_server_restarted_mid_run_is_reconnected(workdir, teacher, http_server):
    teacher.script("first", call_tools(("add", {"a": 1, "b": 1})), answer("2"))
    write_prompts(workdir, ["first"])
    assert generate(workdir, teacher, "--mcp", http_server.url).code == 0
    http_server.stop()
    http_server.start()  # same port, new process: the old session is gone
    teacher.script("second", call_tools(("add", {"a": 2, "b": 2})), answer("4"))
    write_prompts(workdir, ["first", "second"])
    result = generate(workdir, teacher, "--mcp", http_server.url)
    assert result.code == 0, result.err
    assert tool_results(result)["second"] == ["4"]


def test_ctrl_c_with_a_stdio_server_running_stops_the_run_and_the_server(workdir, teacher):
    import signal

    from conftest import start_script, wait_for

    (workdir / "config.yml").write_text("rollout:\n  tool_timeout: 3\n")
    teacher.script("hang", call_tools(("hang", {})), answer("never"))
    write_prompts(workdir, ["hang"])
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                           "--mcp", STDIO)
    wait_for(lambda: (workdir / "mcp-hang-started").exists(), what="the tool call to reach the server")
    servers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    process.send_signal(signal.SIGINT)  # as Ctrl-C would, to the run (the server has a session of its own)
    process.communicate(timeout=60)
    assert process.returncode == 130
    assert servers and all(not Path(f"/proc/{pid}").exists() for pid in servers)


def test_rnows_own_mcp_tavily_config_yml_is_read_as_is(workdir, teacher, http_server):
    rnow_templates = pytest.importorskip("rnow").__file__.rsplit("/", 1)[0] + "/templates"
    template = Path(rnow_templates, "mcp-tavily", "config.yml").read_text()
    assert "https://mcp.tavily.com/mcp/?tavilyApiKey=YOUR_TAVILY_API_KEY" in template
    (workdir / "config.yml").write_text(template.replace("https://mcp.tavily.com/mcp/", http_server.url))
    teacher.script("q", call_tools(("add", {"a": 1, "b": 2})), answer("3"))
    write_prompts(workdir, ["q"])
    result = generate(workdir, teacher)
    assert result.code == 0, result.err
    assert tool_results(result)["q"] == ["3"] and "YOUR_TAVILY_API_KEY" not in result.err
    # the template's max_turns: 3 allowed the second turn
    assert result.records()[0]["metadata"]["turns"] == 2


def test_a_key_in_an_mcp_urls_query_is_taken_out_of_everything_written(workdir, teacher, http_server):
    key = "tvly-" + "9f8e7d6c" * 4
    secrets_used(key)
    teacher.script("q", call_tools(("add", {"a": 1, "b": 2}), content=f"using {key}"),
                   answer(f"3, said {key}"))
    write_prompts(workdir, ["q"])
    result = generate(workdir, teacher, "--mcp", f"{http_server.url}?tavilyApiKey={key}", "--export", "hf")
    assert result.code == 0, result.err
    [line] = result.records()
    assert line["messages"][-1]["content"] == "3, said ***" and line["messages"][1]["content"] == "using ***"
    written = "".join(p.read_text(errors="replace") for p in workdir.rglob("*") if p.is_file())
    assert key not in written + result.out + result.err


def test_a_key_in_an_mcp_urls_path_or_fragment_is_taken_out_of_everything_written(workdir, teacher):
    """Zapier's MCP URLs carry the key in the path; a fragment is never sent, yet may hold one: both are
    secrets, shown as *** in the runs file and on the terminal, cut out of what the teacher and tools said."""
    path_key, fragment_key = "sk-ak-" + "a1b2c3d4" * 4, "frag" + "9z8y" * 6
    secrets_used(path_key, fragment_key)
    server = HttpServer(path=f"/mcp/{path_key}/").start()
    try:
        teacher.script("q", call_tools(("add", {"a": 1, "b": 2}), content=f"using {path_key}"),
                       answer(f"3, said {fragment_key}"))
        write_prompts(workdir, ["q"])
        result = generate(workdir, teacher, "--mcp", f"{server.url}#token={fragment_key}", "--export", "hf")
    finally:
        server.stop()
    assert result.code == 0, result.err
    [line] = result.records()
    assert line["messages"][-1]["content"] == "3, said ***" and line["messages"][1]["content"] == "using ***"
    assert tool_results(result)["q"] == ["3"]  # the server at that path was reached
    assert read_jsonl(workdir / "train.runs.jsonl")[0]["rollout"]["mcp"] == [f"http://127.0.0.1:{server.port}/mcp/***/#***"]
    written = "".join(p.read_text(errors="replace") for p in workdir.rglob("*") if p.is_file())
    for key in (path_key, fragment_key):
        assert key not in written + result.out + result.err


def rnow_line(question: str, tools: list[str] | None) -> str:
    record = {"messages": [{"role": "system", "content": "Answer."}, {"role": "user", "content": question}],
              "rewards": ["accuracy"], "metadata": {"expected_answer": "3"}}
    if tools is not None:
        record["tools"] = tools
    return json.dumps(record)


def test_per_prompt_tools_limit_the_schemas_sent_the_calls_allowed_and_the_line(workdir, teacher):
    teacher.script("only add", call_tools(("shout", {"text": "no"})), answer("done"))
    (workdir / "prompts.jsonl").write_text("\n".join([rnow_line("only add", ["add"]), rnow_line("none", []),
                                                      rnow_line("all", None)]) + "\n")
    result = generate(workdir, teacher, "--mcp", STDIO)
    assert result.code == 0, result.err
    sent = {r["messages"][1]["content"]: [t["function"]["name"] for t in r.get("tools", [])] for r
            in teacher.requests}
    assert sent["only add"] == ["add"] and sent["none"] == [] and len(sent["all"]) == 9
    lines = {r["messages"][1]["content"]: r for r in result.records()}
    assert (lines["only add"]["tools"] == ["add"] and "tools" not in lines["none"]
            and len(lines["all"]["tools"]) == 9)
    assert lines["only add"]["messages"][3]["content"].startswith("Error: unknown tool 'shout'. Available "
                                                                  "tools: add")


@pytest.mark.parametrize("tools, message", [(["add", "search"], "names 'search', which is not a tool here"),
                                            ("add", "must be a list of tool names")])
def test_a_prompt_naming_an_unknown_tool_is_refused_with_its_line_before_anything_is_sent(workdir, teacher,
                                                                                          tools, message):
    (workdir / "prompts.jsonl").write_text(rnow_line("fine", ["add"]) + "\n" + rnow_line("bad", tools) + "\n")
    result = generate(workdir, teacher, "--mcp", STDIO)
    assert result.code == 2 and "prompts.jsonl:2: " in result.err and message in result.err
    assert not teacher.requests and "Traceback" not in result.err
    # exit 2 wrote nothing
    assert sorted(p.name for p in workdir.iterdir()) == ["prompts.jsonl", "tools_small.py"]


class SignInFirst:
    """An HTTP server that answers every request 401 with an OAuth challenge, as an MCP server behind
    OAuth does before sign-in; or (challenge=None) a plain 401, as a server that takes a key does for a wrong
    one."""

    def __init__(self, challenge: str | None = 'Bearer resource_metadata="http://127.0.0.1/.well-known/'
                 'oauth-protected-resource"', query: str = "?token=SECRET123") -> None:
        import http.server
        import socketserver
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.send_response(401)
                if challenge:
                    self.send_header("WWW-Authenticate", challenge)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_DELETE = do_POST

            def log_message(self, *args):
                pass

        class Quiet(socketserver.ThreadingTCPServer):
            def handle_error(self, request, client_address):
                pass  # a client that hangs up early is no news here

        self.server = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp{query}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_server_that_asks_for_oauth_is_exit_2_saying_so(workdir, teacher):
    server = SignInFirst()
    try:
        write_prompts(workdir, ["q"])
        result = generate(workdir, teacher, "--mcp", server.url)
    finally:
        server.server.shutdown()
    assert (result.code == 2 and "OAuth" in result.err and "SECRET123" not in result.err
            and not teacher.requests)


WRONG_KEY = "tvly-wrong" + "0a1b2c3d" * 3


@pytest.mark.parametrize("challenge, query, said", [
    (None, f"?tavilyApiKey={WRONG_KEY}", "the key given in its URL was not accepted"),
    ('Bearer error="invalid_token"', f"?tavilyApiKey={WRONG_KEY}",
     "the key given in its URL was not accepted"),
    (None, "", "asks for no OAuth sign-in: it wants a key"),
], ids=["wrong key", "wrong key, bearer challenge", "no key"])
def test_a_401_for_a_key_is_said_to_be_about_the_key_not_oauth(workdir, teacher, challenge, query, said):
    server = SignInFirst(challenge, query)
    try:
        write_prompts(workdir, ["q"])
        result = generate(workdir, teacher, "--mcp", server.url)
    finally:
        server.server.shutdown()
    assert result.code == 2 and said in result.err and "401" in result.err, result.err
    assert ("asks for OAuth sign-in" not in result.err and WRONG_KEY[10:] not in result.err
            and not teacher.requests)


def test_a_stdio_server_that_answers_garbage_is_a_tool_error_and_the_run_goes_on(workdir, teacher):
    (workdir / "garbage.py").write_text(
        "import sys, json\n"
        "for line in sys.stdin:\n"
        "    message = json.loads(line)\n"
        "    if message.get('method') == 'tools/call':\n"
        "        print('this is not JSON-RPC', flush=True)\n"
        "        continue\n"
        "    if 'id' not in message:\n"
        "        continue\n"
        "    result = {'protocolVersion': message['params'].get('protocolVersion', '2025-06-18'), "
        "'capabilities': {'tools': {}}, 'serverInfo': {'name': 'garbage', 'version': '1'}} "
        "if message['method'] == 'initialize' "
        "else {'tools': [{'name': 'echo', 'inputSchema': {'type': 'object', 'properties': {}}}]}\n"
        "    print(json.dumps({'jsonrpc': '2.0', 'id': message['id'], 'result': result}), flush=True)\n")
    teacher.script("g", call_tools(("echo", {})), answer("went on"))
    write_prompts(workdir, ["g"])
    (workdir / "config.yml").write_text("rollout:\n  tool_timeout: 5\n")
    result = generate(workdir, teacher, "--mcp", f"{sys.executable} garbage.py")
    assert result.code == 0, result.err
    assert tool_results(result)["g"][0].startswith("Error: tool 'echo'")
    assert result.records()[0]["messages"][-1]["content"] == "went on"


def test_an_http_server_killed_mid_run_and_restarted_is_used_again(workdir, teacher, http_server):
    def restart_then_add(body):
        http_server.stop()  # it died on the `die` call; now it comes back, on the same port
        http_server.start()
        return call_tools(("add", {"a": 5, "b": 5}))(body)

    teacher.script("die", call_tools(("die", {})), answer("never"))
    teacher.script("later", restart_then_add, answer("10"))
    write_prompts(workdir, ["die", "later"])
    result = generate(workdir, teacher, "--mcp", http_server.url, "-c", "1")
    assert result.code == 1  # the rollout whose call met the death failed, to run again next time
    assert "unavailable" in json.dumps(result.failed())
    assert tool_results(result) == {"later": ["10"]}


@pytest.mark.parametrize("mode, sent", [("xhigh", {"effort": "xhigh"}), ("none", {"effort": "none"}),
                                        ("disabled", {"enabled": False})])
def test_config_yml_settings_become_defaults_flags_win_and_dry_run_says_where_each_came_from(workdir, teacher,
                                                                                             mode, sent):
    (workdir / "config.yml").write_text(f"rollout:\n  max_turns: 4\n  tool_timeout: 7\n  reward_timeout: 9\n"
                                        f"  max_tool_response: 100\n  reasoning_mode: {mode}\n")
    write_prompts(workdir, ["q"])
    dry = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url, "--dry-run",
                     "--max-turns", "3")
    assert dry.code == 0, dry.err
    assert json.loads(dry.out[dry.out.index("{"):])["reasoning"] == sent
    for shown in ("max_turns 3 (--max-turns)", "tool_timeout 7.0 (config.yml)",
                  "reward_timeout 9.0 (config.yml)", "max_tool_response 400 characters (config.yml)",
                  "mcp_url (none) (default)"):
        assert shown in dry.err


@pytest.mark.parametrize("text, message", [
    ("rollout:\n  max_turns: many\n", "config.yml: rollout.max_turns"),
    ("rollout:\n  max_turns: [1\n", "config.yml:3: cannot read it as YAML"),
    ("rollout:\n  reasoning_mode: extreme\n", "rollout.reasoning_mode"),
    ("rollout: 7\n", "`rollout` must be a mapping")])
def test_a_config_yml_that_cannot_be_used_is_exit_2_naming_it(workdir, teacher, text, message):
    (workdir / "config.yml").write_text(text)
    write_prompts(workdir, ["q"])
    result = generate(workdir, teacher)
    assert (result.code == 2 and message in result.err and not teacher.requests
            and "Traceback" not in result.err)


@pytest.mark.parametrize("name, schema, message", [
    ("web search", {"type": "object"}, "is not allowed by the API"),
    ("x" * 65, {"type": "object"}, "is not allowed by the API"),
    ("search", {"type": "string"}, "must be a JSON Schema object"),
    ("search", None, "must be a JSON Schema object"),
    ("search", {"type": "object", "properties": []}, "`properties` must be an object"),
    ("search", {"type": "object", "required": "q"}, "`required` a list of names"),
])
def test_a_tool_the_api_would_refuse_is_refused_at_start_naming_it(name, schema, message):
    import generate_distillation_data as gdd

    with pytest.raises(gdd.UsageError, match=message):
        gdd._check_tool_schema(name, "MCP server x", schema)
    with_defs = {"type": "object", "properties": {"q": {"$ref": "#/$defs/Q"}},
                 "$defs": {"Q": {"type": "string"}}, "required": ["q"]}
    gdd._check_tool_schema("search", "MCP server x", with_defs)


def test_a_url_shown_has_no_password_and_no_query_values():
    import generate_distillation_data as gdd

    shown = gdd.McpSpec("https://user:pw-SECRET@mcp.example.com/mcp/?tavilyApiKey=tvly-SECRET&flag").shown
    assert "SECRET" not in shown and shown == "https://user:***@mcp.example.com/mcp/?tavilyApiKey=***&flag"
    zapier = gdd.McpSpec("https://actions.zapier.com/mcp/sk-ak-0123456789abcdefghij/sse#k=v").shown
    assert zapier == "https://actions.zapier.com/mcp/***/sse#***"
    assert gdd.McpSpec("https://mcp.example.com/servers/calculator/mcp").shown == "https://mcp.example.com/servers/calculator/mcp"


def test_a_stdio_server_that_dies_for_good_fails_its_rollouts_instead_of_writing_them(workdir, teacher):
    """The server exits on the first call and never starts again: no rollout is written with "Connection
    closed" as its tool result; each fails as unavailable (retried next run), and 10 in a row stop the run."""
    prompts = [f"add {i}" for i in range(12)]
    teacher.script("add 0", call_tools(("die", {"for_good": True})), answer("never"))
    for prompt in prompts[1:]:
        teacher.script(prompt, call_tools(("add", {"a": 1, "b": 2})), answer("3"))
    write_prompts(workdir, prompts)
    # dead for good: once `die` left its marker, the command exits at once (no interpreter to start each time)
    dying = f"sh -c 'test -e mcp-dead && exit 3; exec {STDIO}'"
    result = generate(workdir, teacher, "--mcp", dying, "-c", "1")
    assert result.code == 1, result.err
    # a rollout whose call came before the death (two run at -c 1) is written with its real result; none
    # is written with an error as its tool's result
    assert all(tool_results(result)[prompt] == ["3"] for prompt in tool_results(result))
    failed = result.failed()
    assert len(failed) >= 10 and all("unavailable" in json.dumps(entry) for entry in failed)
    assert "in a row failed because a tool was unavailable" in result.err and "Traceback" not in result.err


def test_non_text_results_reach_the_teacher_and_errors_say_error_once(workdir, teacher):
    teacher.script("media", call_tools(("media", {})), answer("seen"))
    teacher.script("structured", call_tools(("structured", {})), answer("seen"))
    teacher.script("error", call_tools(("fail", {})), answer("seen"))
    write_prompts(workdir, ["media", "structured", "error"])
    result = generate(workdir, teacher, "--mcp", STDIO)
    assert result.code == 0, result.err
    results = tool_results(result)
    assert results["media"] == ["[image image/png, 100 bytes]\nthe notes say 42\n"
                                "[link: report.pdf <https://example.com/report.pdf>]\n"
                                "[audio audio/wav, 300 bytes]"]
    assert json.loads(results["structured"][0]) == {"temperature": 21.5, "unit": "C"}
    assert (results["error"][0].startswith("Error executing tool fail")
            and "Error: Error" not in results["error"][0])


def test_a_stdio_servers_stderr_reaches_its_log_through_the_one_scrub(workdir, teacher):
    """The server has our environment, the .env's keys with it, and logs one on stderr: the log keeps the
    line, not the key."""
    token = "ghp_" + "Zq9Xw8Yv7Ut6" * 3
    secrets_used(token)
    (workdir / ".env").write_text(f"GITHUB_TOKEN={token}\n")
    teacher.script("sum", call_tools(("add", {"a": 2, "b": 3})), answer("5"))
    write_prompts(workdir, ["sum"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url, "--mcp",
                        STDIO, env=subprocess_env(STDERR_SAYS=token), timeout=120)
    assert result.code == 0, result.err
    log = (workdir / "train.mcp.log").read_text()
    assert "calc: starting with token ***" in log and token not in log + result.err + result.out


def test_a_stdio_server_that_prints_on_stdout_keeps_the_terminal_clean(workdir, teacher):
    teacher.script("sum", call_tools(("add", {"a": 2, "b": 3})), answer("5"))
    write_prompts(workdir, ["sum"])
    env = subprocess_env(BANNER="1")
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url, "--mcp",
                        STDIO, env=env, timeout=120)
    assert result.code == 0, result.err
    assert tool_results(result)["sum"] == ["5"]
    assert "Traceback" not in result.err and "Welcome" not in result.err
    assert "Welcome to the calc server" in (workdir / "train.mcp.log").read_text()


def test_the_summary_counts_calls_and_errors_per_tool_and_warns_when_most_failed(workdir, teacher):
    for i in range(3):
        teacher.script(f"f{i}", call_tools(("fail", {"reason": "refused: a private address"})), answer("no"))
    teacher.script("ok", call_tools(("add", {"a": 1, "b": 1})), answer("2"))
    write_prompts(workdir, ["f0", "f1", "f2", "ok"])
    result = generate(workdir, teacher, "--mcp", STDIO)
    assert result.code == 0, result.err
    assert "Tools: add 1 call, fail 3 calls (3 errors)" in result.err
    assert result.err.count("WARNING: tool 'fail' failed in 3 of its 3 calls") == 1
    assert "the first error: Error executing tool fail" in result.err


def test_capability_gated_tools_are_offered_as_rnow_lists_them_and_refused_requests_are_tool_errors(workdir,
                                                                                                    teacher):
    """With one server, rnow's client (fastmcp) connects directly and declares no client capabilities; with
    two, it declares roots, sampling and elicitation, and a server then lists the tools gated on them. The
    same lists here; a tool that asks the client to sample gets an error, and ends as a tool error."""
    gated = f"{sys.executable} {ROOT / 'tests' / 'support' / 'mcp_gated_server.py'}"
    write_prompts(workdir, ["one"])
    teacher.script("one", call_tools(("echo", {})), answer("done"))
    single = generate(workdir, teacher, "--mcp", gated)
    assert single.code == 0, single.err
    assert [t["function"]["name"] for t in teacher.requests[0]["tools"]] == ["echo"]

    (workdir / "train.jsonl").unlink()
    teacher.requests.clear()
    teacher.script("one", call_tools(("mcp_0_ask_model", {})), answer("done"))
    double = generate(workdir, teacher, "--mcp", gated, "--mcp", gated)
    assert double.code == 0, double.err
    assert [t["function"]["name"] for t in teacher.requests[0]["tools"]] == [
        "mcp_0_echo", "mcp_0_ask_model", "mcp_1_echo", "mcp_1_ask_model"]
    [result] = tool_results(double)["one"]
    assert result.startswith("Error") and "does not sample for servers" in result


def test_the_reference_time_server_answers_and_a_dead_one_fails_its_rollout(workdir, teacher):
    """mcp-server-time, the reference server from PyPI, over stdio: a call answers with the time; once its
    process is killed and cannot start again, the next call fails its rollout as unavailable instead of
    writing "Connection closed" as the tool's result."""
    import psutil

    binary = Path(sys.executable).parent / "mcp-server-time"
    command = f"sh -c 'test -e mcp-dead && exit 3; exec {binary} --local-timezone UTC'"
    process = None

    def kill_the_server_then_call(body):
        (workdir / "mcp-dead").touch()
        for child in psutil.Process(process.pid).children(recursive=True):
            if "mcp-server-time" in " ".join(child.cmdline()):
                child.kill()
        return call_tools(("get_current_time", {"timezone": "UTC"}))(body)

    teacher.script("now", call_tools(("get_current_time", {"timezone": "Europe/Paris"})), answer("it is now"))
    write_prompts(workdir, ["now"])
    first = generate(workdir, teacher, "--mcp", command)
    assert first.code == 0, first.err
    teacher.script("later", kill_the_server_then_call, answer("never"))
    write_prompts(workdir, ["now", "later"])
    process = start_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                           "--backoff", "0.01", "--mcp", command)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    [record] = read_jsonl(workdir / "train.jsonl")
    tool = next(m for m in record["messages"] if m["role"] == "tool")
    assert json.loads(tool["content"])["timezone"] == "Europe/Paris"
    failed = read_jsonl(workdir / "train.failed.jsonl")
    assert [f["prompt"] for f in failed] == ["later"] and "unavailable" in json.dumps(failed)
    assert "Traceback" not in err
