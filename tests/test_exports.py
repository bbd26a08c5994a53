"""--export: the dataset in the formats other trainers read, proven by the consumers' own code where it
installs offline (datasets' loader, transformers' chat-template renderer with templates written here) and by
the documented contract where it does not (OpenAI's fine-tuning chat format)."""

from __future__ import annotations

import hashlib
import json

import datasets
import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from conftest import read_jsonl, run_script, subprocess_env, write_prompts
from fake_teacher import Reply, answer, call_tools, completion

import generate_distillation_data as gdd

# Llama 3.1's way of writing a tool call and the tool definitions (the part of its template that matters):
# arguments go through `tojson`, so JSON-string arguments come out double-encoded.
LLAMA_LIKE_TEMPLATE = """
{%- if tools %}{% for tool in tools %}{{ tool | tojson }}
{% endfor %}{% endif %}
{%- for message in messages %}
{%- if message.tool_calls %}{% for call in message.tool_calls %}
{{- '{"name": "' + call.function.name + '", "parameters": ' + call.function.arguments | tojson + '}' }}
{% endfor %}
{%- else %}<{{ message.role }}>{{ message.content }}
{% endif %}{% endfor %}"""


# Qwen3's way: reasoning in <think>, arguments written as they are when a string, as JSON when an object.
QWEN_LIKE_TEMPLATE = """
{%- for message in messages %}<{{ message.role }}>
{%- if message.reasoning_content %}<think>{{ message.reasoning_content }}</think>{% endif %}
{{- message.content }}
{%- for call in message.tool_calls or [] %}<tool_call>{"name": "{{ call.function.name }}", "arguments": 
{%- if call.function.arguments is string %}{{ call.function.arguments }}{% else %}{{ call.function.arguments | tojson }}{% endif %}}</tool_call>
{%- endfor %}
{% endfor %}"""  # noqa: E501, W291  (the template as written: its spaces are what it renders)


def script_tool_rollouts(teacher, prompts: list[str]) -> None:
    for i, prompt in enumerate(prompts):
        teacher.script(prompt, call_tools(("add", {"a": i, "b": 2}), ("shout", {"text": f"hi {i}"})),
                       answer(f"sum {i + 2}"))


def export(run, *extra: str):
    return run(*extra, subprocess=True)


def load(path) -> datasets.Dataset:
    return datasets.load_dataset("json", data_files=str(path), split="train",
                                 cache_dir=str(path.parent / "hf"))


def test_hf_export_loads_in_datasets_and_renders_with_chat_templates(run, workdir, teacher):
    # metadata whose types change from line to line: datasets < 4 refused such files; hf holds it as a string
    write_prompts(workdir, [{"prompt": "q0", "metadata": {"source": "web", "score": 1}},
                            {"prompt": "q1",
                             "metadata": {"source": {"url": "https://x.org"}, "score": "high"}},
                            {"prompt": "q2", "metadata": {"source": ["a", "b"]}}])
    script_tool_rollouts(teacher, ["q0", "q1", "q2"])
    result = export(run, "--export", "hf")
    assert result.code == 0, result.err
    assert "Exported 3 lines to train.hf.jsonl." in result.err
    ours, exported = read_jsonl(workdir / "train.jsonl"), read_jsonl(workdir / "train.hf.jsonl")

    # transformers refuses our own format's tool names, which is why hf exists
    with pytest.raises(ValueError, match="Tools should either be a JSON schema, or a callable function"):
        render_jinja_template([ours[0]["messages"]], tools=ours[0]["tools"],
                              chat_template=LLAMA_LIKE_TEMPLATE)

    dataset = load(workdir / "train.hf.jsonl")
    assert dataset.num_rows == 3
    for row, source in zip(dataset, ours):
        assert json.loads(row["metadata"]) == source["metadata"]
        assert [t["function"]["name"] for t in row["tools"]] == ["add", "shout"]
        rendered, _ = render_jinja_template([row["messages"]], tools=row["tools"],
                                            chat_template=LLAMA_LIKE_TEMPLATE)
        i = int(source["messages"][0]["content"][1:])  # q<i> was scripted to call add(a=i, b=2)
        # an object, not a string
        assert f'{{"name": "add", "parameters": {{"a": {i}, "b": 2}}}}' in rendered[0]
        assert '\\"' not in rendered[0]
        assert '"properties": {"a": {"type": "integer"}' in rendered[0]  # the schema rnow builds
        qwen, _ = render_jinja_template([row["messages"]], chat_template=QWEN_LIKE_TEMPLATE)
        assert f'"arguments":{{"a": {i}, "b": 2}}}}</tool_call>' in qwen[0]
    for mine, theirs in zip(exported, ours):  # nothing else changes
        assert len(mine["messages"]) == len(theirs["messages"])
        assert [m["content"] for m in mine["messages"]] == [m["content"] for m in theirs["messages"]]


def test_hf_export_keeps_reasoning_for_templates_that_read_it(run, workdir, teacher):
    write_prompts(workdir, ["think"])
    teacher.script("think", lambda body: Reply(body=completion({"content": "42", "reasoning": "6 times 7"})))
    result = export(run, "--export", "hf")
    assert result.code == 0, result.err
    row = load(workdir / "train.hf.jsonl")[0]
    rendered, _ = render_jinja_template([row["messages"]], chat_template=QWEN_LIKE_TEMPLATE)
    assert "<assistant><think>6 times 7</think>42" in rendered[0]


OPENAI_TOP_LEVEL = {"messages", "tools", "parallel_tool_calls", "functions"}


OPENAI_MESSAGE_KEYS = {"system": {"role", "content", "name"}, "user": {"role", "content", "name"},
                       "assistant": {"role", "content", "name", "tool_calls", "function_call", "weight"},
                       "tool": {"role", "content", "tool_call_id"}}


def check_openai_fine_tuning_line(line: dict) -> None:
    """OpenAI's documented per-line training example (FineTuneChatRequestInput) for chat models."""
    assert set(line) <= OPENAI_TOP_LEVEL, set(line) - OPENAI_TOP_LEVEL
    called = set()
    for message in line["messages"]:
        assert set(message) <= OPENAI_MESSAGE_KEYS[message["role"]], message
        if message["role"] == "assistant" and message.get("tool_calls"):
            assert isinstance(message.get("content", ""), str)
            for call in message["tool_calls"]:
                assert set(call) == {"id", "type", "function"} and call["type"] == "function"
                assert set(call["function"]) == {"name", "arguments"}
                assert isinstance(json.loads(call["function"]["arguments"]), dict)  # a JSON string
                called.add(call["id"])
        elif message["role"] == "tool":
            assert message["tool_call_id"] in called and isinstance(message["content"], str)
        else:
            assert isinstance(message["content"], str) and message["content"]
    assert line["messages"][-1]["role"] == "assistant"
    for tool in line.get("tools", []):
        assert tool["type"] == "function" and set(tool["function"]) == {"name", "description", "parameters"}
        assert tool["function"]["parameters"]["type"] == "object"


def test_openai_export_meets_the_fine_tuning_format(run, workdir, teacher):
    write_prompts(workdir, [{"prompt": "q0", "metadata": {"k": 1}}, "q1"])
    script_tool_rollouts(teacher, ["q0", "q1"])
    result = export(run, "--export", "openai", "-s", "Be brief.")
    assert result.code == 0, result.err
    exported = read_jsonl(workdir / "train.openai.jsonl")
    assert len(exported) == 2
    for line in exported:
        check_openai_fine_tuning_line(line)
        assert line["messages"][0] == {"role": "system", "content": "Be brief."}
        assert ([m["role"] for m in line["messages"]]
                == ["system", "user", "assistant", "tool", "tool", "assistant"])


def test_no_run_exports_existing_output_and_sends_nothing(run, workdir, teacher):
    write_prompts(workdir, ["q0", "q1"])
    script_tool_rollouts(teacher, ["q0", "q1"])
    assert export(run).code == 0
    sent = len(teacher.requests)
    write_prompts(workdir, ["q0", "q1", "q2"])  # a pending prompt: --no-run must not run it
    env = subprocess_env()  # no key, default base URL: --no-run needs neither
    result = run_script(workdir, "prompts.jsonl", "--tools", "tools_small.py", "--export", "hf,openai",
                        "--no-run", env=env)
    assert result.code == 0, result.err
    assert len(teacher.requests) == sent
    assert len(read_jsonl(workdir / "train.hf.jsonl")) == len(read_jsonl(workdir / "train.openai.jsonl")) == 2
    assert "Exported 2 lines to train.hf.jsonl." in result.err and "Traceback" not in result.err


def test_export_streams_past_lines_it_cannot_hold_and_says_so(run, workdir, teacher):
    write_prompts(workdir, ["good", "broken args", "gone tool"])
    teacher.script("good", call_tools(("add", {"a": 1, "b": 2})), answer("3"))
    teacher.script("broken args", call_tools(("add", "{not json")), answer("sorry"))
    teacher.script("gone tool", call_tools(("shout", {"text": "x"})), answer("X"))
    assert export(run).code == 0
    with (workdir / "train.jsonl").open("a") as f:
        f.write('{"metadata": {"prompt_id": "torn"}, "messa\n')  # hand-edited, after the run
    (workdir / "fewer_tools.py").write_text(
        "from rnow.core.tool import tool\n\n@tool\ndef add(a: int, b: int) -> int:\n"
        "    '''Add.'''\n    return a + b\n")
    result = run_script(workdir, "prompts.jsonl", "--tools", "fewer_tools.py", "--export", "hf,openai",
                        "--no-run", env=subprocess_env())
    assert result.code == 0, result.err
    broken = 1 + [json.loads(line)["messages"][0]["content"] for line in
                  (workdir / "train.jsonl").read_text().splitlines()[:3]].index("broken args")
    for fmt in ("hf", "openai"):
        assert (f"Exported 2 lines to train.{fmt}.jsonl; 1 line left out (a tool call whose arguments are "
                f"not a JSON object; the first: train.jsonl:{broken}); 1 line left out (not a line of ours "
                "(torn or edited); the first: train.jsonl:4); tools not in the tools file, left out of "
                "`tools`: shout") in result.err
    for line in read_jsonl(workdir / "train.openai.jsonl"):
        check_openai_fine_tuning_line(line)


@pytest.mark.parametrize("tools, exported",
                         [(["add"], True), (None, True), ([None, "x"], False), ("echo", False)],
                         ids=["a list of names", "null", "a null among names", "a string"])
def test_a_line_whose_tools_are_not_a_list_of_names_is_left_out_naming_it(workdir, tools, exported):
    """An edited or foreign line: "tools": null is a line without tools; anything else that is not a list of
    names is left out of the exports, its line named, never a traceback nor its letters taken for tools."""
    line = {"metadata": {"prompt_id": "p0", "sample": 0},
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "tools": tools}
    (workdir / "train.jsonl").write_text(json.dumps(line) + "\n")
    write_prompts(workdir, ["q"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "tools_small.py", "--no-run",
                        "--export", "hf,openai", env=subprocess_env())
    assert result.code == 0 and "Traceback" not in result.err, result.err
    for fmt in ("hf", "openai"):
        lines = read_jsonl(workdir / f"train.{fmt}.jsonl")
        assert len(lines) == exported
        if exported:
            assert [t["function"]["name"] for t in lines[0].get("tools", [])] == (tools or [])
        else:
            assert (f"Exported 0 lines to train.{fmt}.jsonl; 1 line left out (`tools` is not a list of tool "
                    "names; the first: train.jsonl:1)") in result.err
    assert "left out of `tools`" not in result.err


def test_export_usage_errors(workdir, teacher):
    write_prompts(workdir, ["q"])
    for args, message in [(("--no-run",), "--no-run only makes the --export and --report files"),
                          (("--export", "csv"), "unknown format 'csv'"),
                          (("--export", "hf", "--no-run"),
                           "train.jsonl does not exist: nothing to export or report"),
                          (("--export", "hf", "--no-run", "--dry-run"), "either --no-run or --dry-run")]:
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", *args, env=subprocess_env())
        assert result.code == 2 and message in result.err and "Traceback" not in result.err, result.err
    assert not teacher.requests and not (workdir / "train.jsonl").exists()


def test_hf_export_ids_render_with_the_upstream_mistral_template(run, workdir, teacher):
    """Mistral's templates take only 9-character alphanumeric tool-call ids; the teacher's ids (kept as they
    came in the output) become such ids in the hf export, the same for a call and its result."""
    from pathlib import Path

    template = (Path(__file__).parent / "templates" / "mistralai-Mistral-Nemo-Instruct-2407.jinja"
                ).read_text()
    write_prompts(workdir, ["q0", "q1"])
    script_tool_rollouts(teacher, ["q0", "q1"])
    assert export(run, "--export", "hf").code == 0
    rows = read_jsonl(workdir / "train.hf.jsonl")
    original = read_jsonl(workdir / "train.jsonl")
    # what the output's ids would do
    with pytest.raises(Exception, match="alphanumeric strings with length 9"):
        render_jinja_template([original[0]["messages"]], tools=rows[0]["tools"], chat_template=template,
                              bos_token="<s>", eos_token="</s>")
    for row in rows:
        calls = [call["id"] for m in row["messages"] for call in m.get("tool_calls") or []]
        results = [m["tool_call_id"] for m in row["messages"] if m["role"] == "tool"]
        assert calls == results and len(set(calls)) == 2
        assert all(len(i) == 9 and i.isalnum() and i.isascii() for i in calls)
        rendered, _ = render_jinja_template([row["messages"]], tools=row["tools"], chat_template=template,
                                            bos_token="<s>", eos_token="</s>")
        assert f'"id": "{calls[0]}"' in rendered[0] and f'"call_id": "{calls[1]}"' in rendered[0]
    assert export(run, "--export", "hf", "--no-run").code == 0
    assert read_jsonl(workdir / "train.hf.jsonl") == rows  # deterministic: the same line exports the same ids


# --------------------------------------------------------------------------------------------------
# The dataset card: written with every hf export, from the files alone
# --------------------------------------------------------------------------------------------------

GATE_REWARDS = '''
from rnow.core import RewardArgs, get_response, reward

@reward
def says_sum(args: RewardArgs, messages: list) -> float:
    """1 when the answer gives a sum."""
    return 1.0 if "sum" in get_response(messages) else 0.0
'''


def served_by(provider: str, then):
    """An answer as OpenRouter gives it: naming the provider that served it."""
    def step(body):
        reply = then(body)
        reply.body["provider"] = provider
        return reply
    return step


def card_of(workdir):
    # reads the card as the Hub does; validate() would need the network
    from huggingface_hub import DatasetCard

    path = workdir / "train.hf.README.md"
    return DatasetCard.load(path), path.read_text()


def test_the_hf_export_writes_a_dataset_card_whose_numbers_are_the_files(run, workdir, teacher):
    (workdir / "rewards.py").write_text(GATE_REWARDS)
    prompts = ["q0", "q1", "q2", "rejected twice", "fails"]
    write_prompts(workdir, prompts)
    for i, prompt in enumerate(prompts[:3]):
        teacher.script(prompt, call_tools(("add", {"a": i, "b": 2})), served_by("Prov A" if i else "Prov B",
                                                                             answer(f"sum {i + 2}")))
    teacher.script("rejected twice", answer("no idea"), answer("still no idea"))
    teacher.script("fails", lambda body: Reply(400, {"error": {"code": 400, "message": "bad"}}))
    first = run("--rewards", "rewards.py", "--min-reward", "1", "--attempts", "2", "--system", "Be | `brief`",
                "--export", "hf", subprocess=True)
    assert first.code == 1, first.err  # one prompt failed
    assert "Dataset card: train.hf.README.md" in first.err
    card, text = card_of(workdir)
    header = card.data.to_dict()
    assert header["configs"] == [{"config_name": "default",
                                  "data_files": [{"split": "train", "path": "train.hf.jsonl"}]}]
    assert header["task_categories"] == ["text-generation"] and header["size_categories"] == ["n<1K"]
    assert "tool-use" in header["tags"]

    lines = read_jsonl(workdir / "train.jsonl")
    rejected = read_jsonl(workdir / "train.rejected.jsonl")
    failed = read_jsonl(workdir / "train.failed.jsonl")
    assert len(lines) == 3 and len(rejected) == 2 and len(failed) == 1
    assert "3 conversations of a teacher model solving prompts with tools (3 tool calls in 6 turns)" in text
    cost = sum(line["metadata"]["usage"]["cost"] for line in lines)
    elsewhere = (sum(r["metadata"]["usage"]["cost"] for r in rejected)
                 + sum(f["usage"]["cost"] for f in failed))
    assert f"cost ${cost:.4f};" in text and f"({len(rejected) + len(failed)}) cost ${elsewhere:.4f}." in text
    assert "| `test/teacher` | 3 |" in text and "| `Prov A` | 2 |" in text and "| `Prov B` | 1 |" in text
    assert [line["metadata"]["provider"] for line in lines] == ["Prov B", "Prov A", "Prov A"]
    sha = hashlib.sha256((workdir / "prompts.jsonl").read_bytes()).hexdigest()
    assert f"`prompts.jsonl` (sha256 `{sha}`), 5 rollouts asked for" in text
    assert card.data.to_dict()["license"] == "unknown" and "language" not in card.data.to_dict()
    assert "| `add` | 3 |" in text and '"name": "shout"' in text  # every tool, with its schema
    assert "Quality gate: 3 of 5 finished tries kept (60%)" in text
    # a value from a file is data, not markup
    assert "| system prompt (--system) | `` Be \\| `brief` `` |" in text
    assert "Made by 1 run, started " in text and "| min reward | 1.0 |" in text and "| attempts | 2 |" in text


def test_the_card_after_a_resume_counts_every_run_and_every_line(run, workdir, teacher):
    write_prompts(workdir, ["a", "b", "c"])
    teacher.script("b", lambda body: Reply(402, {"error": {"code": 402, "message": "out of credits"}}),
                   answer("b answered"))
    first = run("-c", "1", "--start-concurrency", "1", "--export", "hf", tools="none", subprocess=True)
    assert first.code == 1, first.err
    second = run("--temperature", "0.2", "--export", "hf", tools="none", subprocess=True)
    assert second.code == 0, second.err
    _, text = card_of(workdir)
    assert "3 conversations" in text and "Made by 2 runs, started " in text and " to " in text
    assert "| temperature | 0.7 / 0.2 |" in text and "changed between runs" in text
    assert "None: plain completions." in text
    # a resume that reads another prompts file: the card names both, not the last alone
    write_prompts(workdir, ["a", "b", "c", "d"], name="more.jsonl")
    third = run("--export", "hf", prompts="more.jsonl", tools="none", subprocess=True)
    assert third.code == 0, third.err
    _, text = card_of(workdir)
    assert "- Prompts files, one run after another: `prompts.jsonl` (sha256 " in text
    assert "`more.jsonl` (sha256 " in text and "), 4 rollouts asked for" in text


def test_the_run_record_and_the_card_read_the_settings_marks(run, workdir, teacher):
    """Every setting marked _recorded is in its part of the run's record, and those with a label are the
    card's settings table, row for row in the marks' order (issue 36): a new setting that shapes the data is
    marked on its field, and neither the record nor the card lists it by hand."""
    write_prompts(workdir, ["q"])
    result = run("--export", "hf", tools="none", subprocess=True)
    assert result.code == 0, result.err
    [record] = read_jsonl(workdir / "train.runs.jsonl")
    marked = gdd.recorded_fields()
    besides = {"prompts": {"file", "sha256", "rollouts"}, "teacher": {"licence"}, "rollout": {"tools"},
               "gate": set()}
    assert {part: set(record[part]) for part in gdd.RECORD_PARTS} == {
        part: besides[part] | {name for _, name, how in marked if how.part == part}
                                                                      for part in gdd.RECORD_PARTS}
    _, text = card_of(workdir)
    table = text.split("## Settings that shape the data\n\n")[1].split("\n\n")[0].splitlines()[2:]
    assert [row.split(" | ")[0].removeprefix("| ") for row in table] == [how.label for _, _, how in marked
                                                                         if how.label]


def rendered(markdown: str) -> str:
    """The card as a CommonMark renderer with GFM tables and raw HTML allowed (as the Hub's) makes it."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)


def test_values_from_outside_are_quoted_in_the_card_never_live_markup(run, workdir, teacher):
    """A model name, a provider and --extra-body values (a router's, a teacher's, the user's) written as
    links, images or a script: the card shows them as text."""
    write_prompts(workdir, ["q"])

    def hostile(body):
        return Reply(body={**completion({"content": "ok"}, model="[click](http://evil.example/m)"),
                           "provider": "<script>alert(1)</script>"})

    teacher.script("q", hostile)
    extra = {"metadata": {"note": "![tracker](http://evil.example/pixel.png) <img src=x onerror=alert(2)>"}}
    result = run("--extra-body", json.dumps(extra), "--export", "hf", tools="none", subprocess=True)
    assert result.code == 0, result.err
    _, text = card_of(workdir)
    html = rendered(text)
    for live in ("<a ", "<img", "<script"):
        assert live not in html, live
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "[click](http://evil.example/m)" in html


def test_a_foreign_line_with_tool_calls_5_is_named_and_the_card_still_made(run, workdir, teacher):
    write_prompts(workdir, ["a"])
    assert run(tools="none").code == 0
    with open(workdir / "train.jsonl", "a") as f:  # an edited or foreign line, exported with --no-run
        f.write(json.dumps({"metadata": {"prompt_id": "x", "sample": 0,
                                         "usage": {"cost": 0.002, "requests": 1}},
                            "messages": [{"role": "user", "content": "hi"},
                                         {"role": "assistant", "content": "", "tool_calls": 5}]}) + "\n")
    result = run("--no-run", "--export", "hf,openai", tools="none", subprocess=True)
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert "train.jsonl:2: messages[1].tool_calls is 5, not a list: counted as no call" in result.err
    _, text = card_of(workdir)
    assert ("2 conversations" in text
            and "1 line of `train\\.jsonl` holds values that are not what this tool writes" in text)
    # and say so
    assert "1 line left out (not a line of ours (torn or edited); the first: train.jsonl:2)" in result.err


def test_cut_short_lines_are_marked_in_every_export_and_the_card(run, workdir, teacher):
    write_prompts(workdir, ["cut", "whole"])
    teacher.script("cut", call_tools(("add", {"a": 1, "b": 2})),
                   answer("and then the answer was cu", finish_reason="length"))
    result = run("--keep-incomplete", "--export", "hf,openai", subprocess=True)
    assert result.code == 0, result.err
    assert "Exported 2 lines to train.openai.jsonl (1 cut short, kept with --keep-incomplete: their last " \
           "answer at weight 0" in result.err
    by_prompt = {line["messages"][0]["content"]: line for line in read_jsonl(workdir / "train.openai.jsonl")}
    assert (by_prompt["cut"]["messages"][-1]["weight"] == 0
            and by_prompt["cut"]["messages"][1].get("weight") is None)
    assert "weight" not in json.dumps(by_prompt["whole"])
    for line in by_prompt.values():
        check_openai_fine_tuning_line(line)
    hf = {line["messages"][0]["content"]: json.loads(line["metadata"])
          for line in read_jsonl(workdir / "train.hf.jsonl")}
    assert hf["cut"]["incomplete"].startswith("finish_reason length")
    _, text = card_of(workdir)
    assert ("**1 conversation was cut short**" in text
            and "| cut-short rollouts kept (--keep-incomplete) | true |" in text)


def test_a_teacher_that_reports_no_cost_is_said_unknown_in_the_lines_and_the_card(run, workdir, teacher):
    write_prompts(workdir, ["local"])
    no_cost = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}  # a local vLLM's usage
    teacher.script("local", call_tools(("add", {"a": 1, "b": 2}), usage=no_cost), answer("3", usage=no_cost))
    result = run("--export", "hf", subprocess=True)
    assert result.code == 0, result.err
    [line] = result.records()
    assert line["metadata"]["usage"]["uncosted"] == 2 and line["metadata"]["usage"]["requests"] == 2
    _, text = card_of(workdir)
    assert "the teacher reported no cost for 2 of their 2 answers, whose cost is unknown" in text
    assert "2 of 2 answers carried no usable cost" in result.err  # as the summary says


def test_the_card_names_no_licence_and_says_what_the_models_list_showed(run, workdir, teacher):
    teacher.models = [{"id": "open/allowed", "is_trainable_text": True}]
    write_prompts(workdir, ["q"])
    result = run("-m", "open/allowed", "--distillable", "--export", "hf", tools="none", subprocess=True)
    assert result.code == 0, result.err
    card, text = card_of(workdir)
    header = card.data.to_dict()
    assert header["license"] == "other" and "language" not in header
    assert "The teacher's terms (its author's, and its provider's) decide" in text
    assert "the model is on OpenRouter's list" in text and "`--distillable`" in text


def foreign_line(i: int, usage: dict | None, teacher: str = "some/model") -> str:
    metadata = {"prompt_id": f"p{i}", "sample": 0, "teacher": teacher,
                **({"usage": usage} if usage is not None else {})}
    return json.dumps({"metadata": metadata, "messages": [{"role": "user", "content": "q"},
                                                          {"role": "assistant", "content": "a"}]})


@pytest.mark.parametrize("usages, said", [
    ([{"cost": 0.25, "requests": 1}, {"cost": 0.5, "requests": 1}], "cost $0.7500; no rejected tries"),
    ([{"cost": 0.25, "requests": 1}, None],
     "cost $0.2500 (not counting 1 line that carries no cost: unknown)"),
    ([None, {"requests": 2}], "cost an unknown amount (none of them carries a cost the teacher reported)"),
    ([{"cost": 1e308, "requests": 1}] * 2,
     "cost an unknown amount (their usage.cost values add up past any real cost")],
    ids=["reported", "one line without", "none reported", "1e308 twice"])
def test_the_card_states_no_cost_that_no_line_reported_nor_one_past_any_real_cost(workdir, usages, said):
    """Lines from another tool that carry no usage are no $0 "as the teacher reported them", and edited costs
    that add up to infinity are no "$inf": the cost is said unknown, saying why."""
    (workdir / "train.jsonl").write_text("".join(foreign_line(i, usage) + "\n"
                                                 for i, usage in enumerate(usages)))
    write_prompts(workdir, ["q"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--no-run", "--export", "hf",
                        env=subprocess_env())
    assert result.code == 0 and "Traceback" not in result.err, result.err
    _, text = card_of(workdir)
    assert said in text and "$inf" not in text and ("$0.0000" in text) is False


def test_the_licence_is_claimed_only_for_the_lines_of_the_models_the_list_showed(run, workdir, teacher):
    """Three lines of a model no list was asked about, then one of a model OpenRouter's list showed, asked
    with --distillable: the card claims the list and the routing for that model's line only, and names no
    licence."""
    teacher.models = [{"id": "good/model", "is_trainable_text": True}]
    write_prompts(workdir, [f"q{i}" for i in range(4)])
    assert run("-m", "bad/model", "-n", "3", tools="none").code == 0
    result = run("-m", "good/model", "--distillable", "--export", "hf", tools="none", subprocess=True)
    assert result.code == 0, result.err
    card, text = card_of(workdir)
    assert card.data.to_dict()["license"] == "unknown"
    assert "- `good/model` (1 line): the model is on OpenRouter's list of models whose authors allow " \
           "training on their outputs" in text and "`provider.enforce_distillable_text`" in text \
           and "in every run that asked it" in text
    bad = next(line for line in text.splitlines() if line.startswith("- `bad/model` (3 lines): "))
    assert "not known" in bad and "enforce_distillable_text" not in bad
    # once every line is of a model the list showed, and only then, the card says `other`
    kept = [line for line in (workdir / "train.jsonl").read_text().splitlines()
            if '"teacher":"good/model"' in line.replace(" ", "")]
    (workdir / "train.jsonl").write_text("".join(line + "\n" for line in kept))
    assert run("--no-run", "--export", "hf", tools="none").code == 0
    assert card_of(workdir)[0].data.to_dict()["license"] == "other"


def test_a_card_is_made_from_hostile_files_and_from_files_without_runs(run, workdir, teacher):
    write_prompts(workdir, ["a"])
    assert run(tools="none").code == 0
    (workdir / "train.runs.jsonl").unlink()
    with open(workdir / "train.jsonl", "a") as f:  # torn and edited lines beside the good one
        f.write('{"metadata": {"prompt_id": "x", "sample": 0, "usage": {"cost": "NaN"}, "model": [1]}, '
                '"messages": 3}\n')
    (workdir / "train.rejected.jsonl").write_text('not json\n{"metadata": {"usage": {"cost": 1e400}}}\n')
    result = run("--no-run", "--export", "hf", tools="none", subprocess=True)
    assert result.code == 0, result.err
    card, text = card_of(workdir)
    assert card.data.to_dict()["size_categories"] == ["n<1K"]
    assert "Prompts file: not recorded" in text and "Settings that shape the data" in text
    (workdir / "train.runs.jsonl").write_text('[1]\n{"started": "```\\n# injected", "teacher": "not a dict", '
                                               '"generator": {"sha256": "|x|"}}\n')
    assert run("--no-run", "--export", "hf", tools="none", subprocess=True).code == 0
    card, text = card_of(workdir)
    assert "\n# injected" not in text and "sha256 `\\|x\\|`" in text
