"""Loading rnow tools files and running tool calls, through real rollouts against the loopback teacher."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import pytest
import rnow.core.tool  # noqa: F401  (imported for its side effect: the module is registered)

from conftest import (
    ROOT,
    SCRIPT,
    Result,
    assert_no_traceback,
    read_jsonl,
    run_script,
    subprocess_env,
    write_prompts,
)
from fake_teacher import FakeTeacher, answer, call_tools

import generate_distillation_data as gdd

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
        result = run_script(workdir, "prompts.jsonl", "--tools", "hostile_tools.py",
                            "--base-url", server.base_url, timeout=30)
        assert_no_traceback(result.err)
        assert result.code == 0, result.err
        records = {r["messages"][0]["content"]: r for r in read_jsonl(workdir / "train.jsonl")}
        assert set(records) == {"use the tool", "other"}
        tool_message = records["use the tool"]["messages"][2]
        assert tool_message["role"] == "tool" and expected in tool_message["content"], tool_message
        assert records["use the tool"]["messages"][-1]["content"] == "done anyway"
    finally:
        server.stop()


READS_A_SOCKET = """
import asyncio
from rnow.core.tool import tool


@tool(timeout=1)
async def ask_the_service(port: int) -> str:
    \"\"\"Read a line from a local service.\"\"\"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    line = await reader.readline()
    writer.close()
    return line.decode().strip()
"""


def test_a_tool_result_that_came_while_the_process_slept_past_its_timeout_is_kept(workdir):
    """A tool's timeout is a timer like an answer's: a process suspended past it wakes to the timer before the
    result that came meanwhile, and the result was dropped for "timed out". Due, it takes what came first."""
    import signal
    import socket
    import threading
    import time

    from conftest import start_script, stopped, wait_for

    service = socket.create_server(("127.0.0.1", 0))
    port = service.getsockname()[1]
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(service.accept()[0]), daemon=True).start()
    (workdir / "socket_tools.py").write_text(READS_A_SOCKET)
    server = FakeTeacher().start()
    try:
        write_prompts(workdir, ["ask"])
        server.script("ask", call_tools(("ask_the_service", {"port": port})), answer("it said so"))
        process = start_script(workdir, "prompts.jsonl", "--tools", "socket_tools.py",
                               "--base-url", server.base_url)
        wait_for(lambda: accepted, what="the tool to connect")
        process.send_signal(signal.SIGSTOP)
        wait_for(lambda: stopped(process), what="the process to stop")
        accepted[0].sendall(b"the answer came while it slept\n")
        time.sleep(1.5)  # suspended past the tool's timeout: the condition under test, not a synchronisation
        process.send_signal(signal.SIGCONT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        server.stop()
        service.close()
    assert process.returncode == 0, err
    tool_message = read_jsonl(workdir / "train.jsonl")[0]["messages"][2]
    assert tool_message["content"] == "the answer came while it slept", tool_message


def test_sys_exit_while_tools_py_is_imported_is_exit_2_naming_the_file(run, teacher, workdir):
    (workdir / "exits.py").write_text("import sys\nfrom rnow.core.tool import tool\n\nsys.exit(0)\n")
    write_prompts(workdir, ["q"])
    result = run(tools="exits.py", subprocess=True)
    assert result.code == 2 and "exits.py:4: calls sys.exit(0) while being imported" in result.err
    assert not teacher.requests and not (workdir / "train.jsonl").exists()


FLAKY_TOOLS = '''
from pathlib import Path
from rnow.core.tool import tool

class ToolUnavailable(Exception):
    pass

@tool
def lookup(term: str) -> str:
    """Look a term up in a service that may be down."""
    if Path("service-down").exists():
        raise ToolUnavailable("the lookup service is down")
    return f"{term}: found"
'''


def test_a_tool_that_says_it_is_unavailable_fails_the_rollout_and_the_rerun_writes_it(run, teacher, workdir):
    (workdir / "flaky_tools.py").write_text(FLAKY_TOOLS)
    (workdir / "service-down").touch()
    write_prompts(workdir, ["Look it up"])
    step = call_tools(("lookup", {"term": "x"}))
    teacher.script("Look it up", step, answer("never written"))
    first = run(tools="flaky_tools.py")
    assert first.code == 1 and not first.records()
    assert (first.failed()[0]["kind"] == "tool unavailable"
            and "service is down" in first.failed()[0]["reason"])
    (workdir / "service-down").unlink()
    teacher.script("Look it up", step, answer("found it"))
    second = run(tools="flaky_tools.py")
    assert second.code == 0 and [r["messages"][-1]["content"] for r in second.records()] == ["found it"]


def test_a_tool_down_for_good_stops_the_run(run, teacher, workdir):
    (workdir / "flaky_tools.py").write_text(FLAKY_TOOLS)
    (workdir / "service-down").touch()
    write_prompts(workdir, [f"Look up {i}" for i in range(30)])
    teacher.default_step = call_tools(("lookup", {"term": "x"}))
    result = run("-c", "1", tools="flaky_tools.py")
    assert result.code == 1 and "in a row failed because a tool was unavailable" in result.err
    assert len(teacher.requests) < 20


rnow_tool = sys.modules["rnow.core.tool"]


EVERY_TYPE_TOOLS = '''
from typing import Literal, Optional, Union, List, Dict
from rnow.core.tool import tool
from rnow.core import tool as tool_again
from rnow.models import ToolArgs

@tool
def every_type(args: ToolArgs, text: str, count: int, ratio: float, flag: bool, names: list[str],
               matrix: List[List[int]], options: dict, table: Dict[str, int], mode: Literal["fast", "slow"],
               maybe: Optional[int], either: Union[int, str], maybe_either: Union[int, str, None],
               new_style: int | None = None, default: str = "x", bare_list: list = None) -> dict:
    """Exercise every supported type.

    The whole docstring is the description."""
    return {}

@tool_again(timeout=5, sandbox=False)
async def async_tool(query: str) -> str:
    """An async tool."""
    return query
'''


def test_stand_in_builds_the_same_schema_as_rnow(workdir):
    (workdir / "every_type.py").write_text(EVERY_TYPE_TOOLS)
    rnow_tool.clear_tool_registry()
    tools, _ = gdd.load_tools(workdir / "every_type.py")  # rnow is installed here: its decorator is used
    assert sys.modules["rnow.core.tool"].tool is rnow_tool.tool
    for tool in tools:
        real = rnow_tool.TOOL_REGISTRY[tool.name]
        assert gdd._rnow_tool_schema(real) == real._schema == tool.parameters
        assert tool.description == real._description
    [every, async_tool] = tools
    assert "args" not in every.parameters["properties"]
    assert every.description.endswith("The whole docstring is the description.")
    assert async_tool.timeout == 5 and async_tool.is_async


def without_rnow(workdir, *args: str) -> Result:
    """Run the script in a subprocess where `import rnow` fails, as on a machine without rnow."""
    import subprocess

    code = textwrap.dedent(f"""
        import runpy, sys
        class NoRnow:
            def find_spec(self, name, path=None, target=None):
                if name == "rnow" or name.startswith("rnow."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
        sys.meta_path.insert(0, NoRnow())
        sys.argv = [{str(SCRIPT)!r}] + {list(args)!r}
        runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
    """)
    process = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=subprocess_env(),
                             capture_output=True, text=True, timeout=60)
    return Result(process.returncode, process.stdout, process.stderr, workdir)


def test_tools_file_loads_without_rnow_and_sends_rnow_schemas(workdir, teacher):
    (workdir / "every_type.py").write_text(EVERY_TYPE_TOOLS)
    write_prompts(workdir, ["q"])
    result = without_rnow(workdir, "prompts.jsonl", "--tools", "every_type.py",
                          "--base-url", teacher.base_url, "--dry-run")
    assert result.code == 0, result.err
    sent = json.loads(result.out[result.out.index("{"):])["tools"]
    rnow_tool.clear_tool_registry()
    expected = [tool.api_schema() for tool in gdd.load_tools(workdir / "every_type.py")[0]]
    assert sent == expected


REJECTED = {
    "no docstring": ("@tool\ndef f(x: int) -> int:\n    return x\n", "must have a non-empty docstring"),
    "missing hint": ('@tool\ndef f(x) -> int:\n    """Doc."""\n    return x\n', "Missing type hint"),
    "star args": ('@tool\ndef f(*xs: int) -> int:\n    """Doc."""\n    return 1\n', "*args"),
    "no return type": ('@tool\ndef f(x: int):\n    """Doc."""\n    return x\n', "return type"),
}


@pytest.mark.parametrize("kind", list(REJECTED))
@pytest.mark.parametrize("rnow_installed", [True, False])
def test_tools_rnow_would_reject_fail_at_start(workdir, teacher, kind, rnow_installed):
    source, message = REJECTED[kind]
    (workdir / "bad_tools.py").write_text("from rnow.core.tool import tool\n\n" + source)
    write_prompts(workdir, ["q"])
    args = ("prompts.jsonl", "--tools", "bad_tools.py", "--base-url", teacher.base_url)
    if rnow_installed:
        result = run_script(workdir, *args)
    else:
        result = without_rnow(workdir, *args)
    assert result.code == 2 and message in result.err and "bad_tools.py:3:" in result.err
    assert "Traceback" not in result.err and not teacher.requests


def test_tools_file_without_tools_or_with_an_error(run, workdir, teacher):
    write_prompts(workdir, ["q"])
    (workdir / "empty_tools.py").write_text("x = 1\n")
    result = run(tools="empty_tools.py")
    assert result.code == 2 and "no @tool functions" in result.err and "--tools none" in result.err
    (workdir / "broken_tools.py").write_text("import json\n\nraise RuntimeError('no config')\n")
    result = run(tools="broken_tools.py")
    assert result.code == 2 and "broken_tools.py:3: RuntimeError: no config" in result.err
    assert not teacher.requests


RUNTIME_TOOLS = '''
import asyncio, threading, time
from rnow.core.tool import tool

_barrier = asyncio.Barrier(3)
_gate = threading.Event()

@tool
async def meet(name: str) -> str:
    """Waits until three calls are running at once: proves the calls of one message run concurrently."""
    await asyncio.wait_for(_barrier.wait(), 5)
    return f"met {name}"

@tool
def wait_for_gate() -> str:
    """A blocking sync tool: holds its thread until another rollout opens the gate."""
    return "gate opened" if _gate.wait(10) else "gate never opened"

@tool
async def open_gate() -> str:
    """Opens the gate."""
    _gate.set()
    return "opened"

@tool
def explode(reason: str) -> str:
    """Always raises."""
    raise ValueError(reason)

@tool(timeout=0.2)
async def hang() -> str:
    """Never returns."""
    await asyncio.Event().wait()

@tool
def structured(n: int, label: str = "x") -> dict:
    """Returns a dict."""
    return {"n": n, "label": label, "ok": True}

@tool
def huge() -> str:
    """Returns a lot of text."""
    return "y" * 5000

@tool
def noargs() -> str:
    """Takes nothing."""
    return "fine"
'''


def tool_messages(record: dict) -> list[str]:
    return [m["content"] for m in record["messages"] if m["role"] == "tool"]


def test_calls_of_one_message_run_concurrently_and_results_keep_call_order(run, teacher, workdir):
    (workdir / "rt.py").write_text(RUNTIME_TOOLS)
    write_prompts(workdir, ["meet"])
    three_calls = call_tools(("meet", {"name": "a"}), ("meet", {"name": "b"}), ("meet", {"name": "c"}))
    teacher.script("meet", three_calls, answer("done"))
    result = run(tools="rt.py")
    assert result.code == 0, result.err
    [record] = result.records()
    assert tool_messages(record) == ["met a", "met b", "met c"]
    calls = record["messages"][1]["tool_calls"]
    assert [m["tool_call_id"] for m in record["messages"][2:5]] == [c["id"] for c in calls]


def test_blocking_sync_tool_does_not_stall_other_rollouts(run, teacher, workdir):
    (workdir / "rt.py").write_text(RUNTIME_TOOLS)
    write_prompts(workdir, ["blocker", "opener"])
    teacher.script("blocker", call_tools(("wait_for_gate", {})), answer("after gate"))
    teacher.script("opener", call_tools(("open_gate", {})), answer("opened it"))
    result = run(tools="rt.py")
    assert result.code == 0, result.err
    by_prompt = {r["messages"][0]["content"]: r for r in result.records()}
    assert tool_messages(by_prompt["blocker"]) == ["gate opened"]


ERROR_CASES = {
    "unknown tool": (("nope", {}), "Error: unknown tool 'nope'"),
    "invalid JSON": (("structured", "{n: 1"), "not valid JSON"),
    "missing argument": (("structured", {}), "missing required argument(s): n"),
    "unexpected argument": (("structured", {"n": 1, "color": "red"}), "unexpected argument(s): color"),
    "wrong type": (("structured", {"n": [1]}), "argument 'n' should be integer"),
    "exception": (("explode", {"reason": "kaboom"}), "failed: ValueError: kaboom"),
    "timeout": (("hang", {}), "timed out after 0.2 s"),
}


@pytest.mark.parametrize("kind", list(ERROR_CASES))
def test_tool_problems_become_messages_and_the_rollout_goes_on(run, teacher, workdir, kind):
    (workdir / "rt.py").write_text(RUNTIME_TOOLS)
    write_prompts(workdir, ["q"])
    call, expected = ERROR_CASES[kind]
    teacher.script("q", call_tools(call), answer("recovered"))
    result = run(tools="rt.py")
    assert result.code == 0, result.err
    [record] = result.records()
    [message] = tool_messages(record)
    assert expected in message and record["messages"][-1]["content"] == "recovered"
    assert teacher.requests[1]["messages"][-1]["content"] == message  # the teacher read it
    # warned, one full stop
    assert ". Those rollouts were written" in result.err and ".. Those" not in result.err


def test_results_are_encoded_coerced_and_truncated(run, teacher, workdir):
    (workdir / "rt.py").write_text(RUNTIME_TOOLS)
    write_prompts(workdir, ["q"])
    four_calls = call_tools(("structured", {"n": "7"}), ("huge", {}), ("noargs", ""), ("noargs", "  "))
    teacher.script("q", four_calls, answer("ok"))
    result = run("--max-tool-chars", "1000", tools="rt.py")
    structured, huge, noargs, noargs_again = tool_messages(result.records()[0])
    assert json.loads(structured) == {"n": 7, "label": "x", "ok": True}  # "7" coerced as rnow does
    assert huge.startswith("y" * 1000) and "[... truncated 4000 of 5000 characters]" in huge
    assert noargs == noargs_again == "fine"  # "" means {}


def test_tool_gets_rnow_args_with_prompt_metadata(run, teacher, workdir):
    (workdir / "meta_tools.py").write_text(textwrap.dedent('''
        from rnow.core.tool import tool
        from rnow.models import ToolArgs

        @tool
        def which_db(args: ToolArgs, table: str) -> str:
            """Names the database of this sample."""
            return f"{args.metadata['db_id']}.{table}"
    '''))
    write_prompts(workdir, [{"prompt": "q", "metadata": {"db_id": "sales"}}])
    teacher.script("q", call_tools(("which_db", {"table": "orders"})), answer("ok"))
    result = run(tools="meta_tools.py")
    assert tool_messages(result.records()[0]) == ["sales.orders"]


def test_schema_mapping_matches_rnow_type_by_type():
    for annotation in (str, int, float, bool, list, list[str], list[list[int]], dict, dict[str, int],
                       Literal["a", "b"], Optional[int], Union[int, str], Union[int, str, None], int | None,
                       Optional[list[str]], bytes):
        assert (gdd._rnow_schema_for_type(annotation)
                == rnow_tool._map_type_to_json_schema(annotation)), annotation


def test_tool_concurrency_caps_calls_across_rollouts(run, teacher, workdir):
    (workdir / "counting.py").write_text(textwrap.dedent('''
        import asyncio
        from rnow.core.tool import tool

        state = {"active": 0, "peak": 0}

        @tool
        async def track(i: int) -> str:
            """Counts how many calls run at once."""
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
            await asyncio.sleep(0.02)  # the work a tool does; the cap is what is checked
            state["active"] -= 1
            return str(state["peak"])
    '''))
    prompts = [f"p{i}" for i in range(3)]
    write_prompts(workdir, prompts)
    for p in prompts:
        teacher.script(p, call_tools(*[("track", {"i": i}) for i in range(4)]), answer("ok"))
    result = run("--tool-concurrency", "2", tools="counting.py")
    assert result.code == 0
    peaks = [int(c) for r in result.records() for c in tool_messages(r)]
    assert len(peaks) == 12 and max(peaks) <= 2


def test_shipped_calculate_tool():
    gdd._install_rnow_stand_in()
    import importlib.util


    spec = importlib.util.spec_from_file_location("shipped_tools_calc", ROOT / "tools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.calculate("(1250 * 0.07) / 12") == str(1250 * 0.07 / 12)
    assert module.calculate("2 ** 10 - -3") == "1027"
    assert module.calculate("__import__('os')").startswith("Error: unsupported syntax")
    assert module.calculate("1/0").startswith("Error:")


RNOW_VERDICTS = {  # what rnow 0.4 says of each signature, quirks included
    "str | None": "def f(x: int) -> str | None:",
    "Path": "def f(x: int) -> Path:",
    "set": "def f(x: int) -> set:",
    "bytes in a Union": "def f(x: int) -> Union[str, bytes]:",
    "Optional[str]": "def f(x: int) -> Optional[str]:",
    "list[Path] (rnow looks at the container only)": "def f(x: int) -> list[Path]:",
    "Any": "def f(x: int) -> Any:",
    "None": "def f(x: int) -> None:",
    "Literal": "def f(x: int) -> Literal['a']:",
    "no return type": "def f(x: int):",
    "no docstring and no return type": "def f(x: int):\n    return x\n#",
    "**kwargs": "def f(x: int, **more: int) -> str:",
    "*args before a missing hint": "def f(x, *more: int) -> str:",
    "missing hint": "def f(x, y: int) -> str:",
    "self and args are skipped": "def f(self, args, y: int) -> str:",
}


def verdict(decorate: Callable, signature: str) -> str:
    namespace = {"Path": Path, "Union": Union, "Optional": Optional, "Any": Any, "Literal": Literal}
    exec(f'{signature}\n    """Doc."""\n', namespace)
    try:
        decorate(namespace["f"])
    except (TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return json.dumps(namespace["f"]._schema)


@pytest.mark.parametrize("case", list(RNOW_VERDICTS))
def test_stand_in_accepts_and_refuses_what_rnow_does_with_its_words(case):
    rnow_tool.clear_tool_registry()
    assert (verdict(gdd._rnow_tool_decorator, RNOW_VERDICTS[case])
            == verdict(rnow_tool.tool, RNOW_VERDICTS[case]))


def test_return_type_rnow_refuses_fails_at_start_without_rnow(workdir, teacher):
    (workdir / "maybe.py").write_text("from rnow.core.tool import tool\n\n"
                                      "@tool\ndef f(x: int) -> str | None:\n"
                                      '    """Doc."""\n    return None\n')
    write_prompts(workdir, ["q"])
    result = without_rnow(workdir, "prompts.jsonl", "--tools", "maybe.py", "--base-url", teacher.base_url)
    assert result.code == 2 and "Traceback" not in result.err and not teacher.requests
    assert "maybe.py:3:" in result.err and "return type 'str | None' is not JSON-serializable" in result.err


def test_the_docs_tool_example_maps_faithfully(workdir):
    page = (ROOT / "docs" / "tools.md").read_text()
    example = page[page.index("Add a tool in a few lines:"):].split("```python\n", 1)[1].split("```", 1)[0]
    (workdir / "readme_tool.py").write_text(example)
    rnow_tool.clear_tool_registry()
    [lookup] = gdd.load_tools(workdir / "readme_tool.py")[0]
    assert lookup.parameters == rnow_tool.TOOL_REGISTRY["lookup_drug"]._schema
    assert lookup.parameters["properties"] == {
        "name": {"type": "string"}, "fields": {"type": "array", "items": {"type": "string"}},
        "region": {"type": ["string", "null"], "enum": ["us", "eu"]}}
