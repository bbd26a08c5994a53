"""The files users run and upload: config.yml and our train.jsonl validate with rnow's own validators,
the bundled prompts.jsonl is valid, and the README's quick start is what CI runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml

from conftest import ROOT, run_script, subprocess_env
from fake_teacher import answer, call_tools

import generate_distillation_data as gdd


def test_config_yml_validates_with_rnow():
    from rnow import models

    config = models.ProjectConfig(**yaml.safe_load((ROOT / "config.yml").read_text()))
    assert config.dataset_type == models.DatasetType.SFT and config.data.train_file == "train.jsonl"


def test_our_train_jsonl_validates_with_rnow(run, teacher, workdir):
    from rnow import models
    from rnow.cli.commands import validate_train_jsonl

    (workdir / "prompts.jsonl").write_text(json.dumps({"prompt": "What is 1+1?", "metadata": {"k": 1}}) + "\n"
                                           + json.dumps({"prompt": "Plain"}) + "\n")
    teacher.script("What is 1+1?", call_tools(("add", {"a": 1, "b": 1})), answer("2"))
    assert run().code == 0
    assert validate_train_jsonl(workdir / "train.jsonl", models.DatasetType.SFT) == []


def test_bundled_prompts_are_valid_and_realistic(workdir, teacher):
    prompts = list(gdd._iter_prompts(ROOT / "prompts.jsonl", None))
    assert len(prompts) >= 12 and all(p.metadata.get("expected_answer") for p in prompts)
    result = run_script(workdir, str(ROOT / "prompts.jsonl"), "--tools", str(ROOT / "tools.py"),
                        "--base-url", teacher.base_url, "--dry-run")
    assert result.code == 0, result.err
    names = [t["function"]["name"] for t in json.loads(result.out[result.out.index("{"):])["tools"]]
    assert names == ["calculate", "browse"]


def test_readme_quick_start_has_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start")[1].split("\n## ")[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick_start, re.S)
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert "generate_distillation_data.py prompts.jsonl" in commands[0] and "pytest" in commands[1]
    assert "grep -m1 -E '^python3 -m venv .*pytest' README.md" in (ROOT / ".ci" / "run").read_text()


def test_readme_quick_start_journey_against_the_ci_teacher(workdir):
    """What CI does with the README's first command, minus the install: the shipped prompts and tools.py,
    run as users run it, against the teacher CI starts (tests/support/fake_teacher.py's main), browser
    included."""
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "fake_teacher.py")],
                               stdout=subprocess.PIPE, text=True)
    try:
        base_url = process.stdout.readline().strip()
        env = subprocess_env(OPENROUTER_BASE_URL=base_url, OPENROUTER_API_KEY="sk-or-v1-...",
                             BROWSE_ALLOW_PRIVATE="127.0.0.1")
        result = run_script(workdir, str(ROOT / "prompts.jsonl"), "--tools", str(ROOT / "tools.py"), env=env,
                            timeout=120)
    finally:
        process.terminate()
        process.wait(10)
    assert result.code == 0, result.err
    records = result.records()
    assert len(records) == sum(1 for line in (ROOT / "prompts.jsonl").open() if line.strip())
    for record in records:
        results = [m["content"] for m in record["messages"] if m["role"] == "tool"]
        assert "42" in results[0] and "forty-two" in results[1]


def test_ci_runs_the_slurm_test_as_a_step_of_its_own_and_the_suite_does_not():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "slurm-wlm munge" in ci and "SLURM_TEST_REQUIRED=1" in ci and "-m slurm tests/test_slurm.py" in ci
    assert '-m "not slurm"' in (ROOT / "pytest.ini").read_text()


def test_ci_runs_both_quick_start_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -m1 -E '^python3 -m venv .*generate_distillation_data.py' README.md" in ci
    # the first against the default URL, through nginx with TLS and gzip in front of the loopback teacher
    assert "tests/support/real_path.py" in ci and "unset OPENROUTER_BASE_URL" in ci


def test_every_flag_and_config_key_is_in_the_options_page():
    """docs/options.md is checked against --help: every flag the parser has, and every key of config.yml's
    rollout block, is on the page; every flag on the page is one the parser has."""
    import generate_distillation_data as gdd

    page = (ROOT / "docs" / "options.md").read_text()
    flags = {option for action in gdd._build_arg_parser()._actions for option in action.option_strings}
    flags -= {"-h", "--help"}
    missing = sorted(flag for flag in flags if f"`{flag}" not in page and f", {flag}" not in page)
    assert not missing, f"flags not in docs/options.md: {missing}"
    listed = set(re.findall(r"^\| `(--?[a-z][a-z-]*)", page, re.M)) | set(re.findall(r", (--[a-z-]+)", page))
    assert listed <= flags, f"on the page but not in --help: {sorted(listed - flags)}"
    config = page[page.index("## config.yml"):]
    assert all(f"`{key}`" in config for key in gdd._ROLLOUT_KEYS)


def test_the_readme_is_a_front_page_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+\.(?:md|png))(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which is not there"


def test_each_default_lives_in_its_settings_object_and_the_help_shows_it():
    """One owner per default (issue 27): the flags' defaults are the settings objects' fields, the help shows
    them, and the options page agrees with the help."""
    import generate_distillation_data as gdd

    parser = gdd._build_arg_parser()
    defaults = {action.dest: action.default for action in parser._actions}
    owners = {"concurrency": (gdd.TeacherSettings, "concurrency"),
              "timeout": (gdd.TeacherSettings, "timeout"), "retries": (gdd.TeacherSettings, "retries"),
              "backoff": (gdd.TeacherSettings, "backoff"),
              "stall_timeout": (gdd.TeacherSettings, "stall_timeout"),
              "model": (gdd.RequestSettings, "model"), "max_tokens": (gdd.RequestSettings, "max_tokens"),
              "temperature": (gdd.RequestSettings, "temperature"), "samples": (gdd.PromptSettings, "samples"),
              "attempts": (gdd.GateSettings, "attempts"),
              "tool_concurrency": (gdd.ToolSettings, "concurrency"), "cache": (gdd.RequestSettings, "cache")}
    for dest, (settings, name) in owners.items():
        assert defaults[dest] == gdd.default(settings, name), dest
    assert defaults["max_answer_mb"] * gdd.MB == gdd.default(gdd.TeacherSettings, "max_answer_bytes")
    help_text = " ".join(parser.format_help().split())
    page = (ROOT / "docs" / "options.md").read_text()
    for flag, value in (("--stall-timeout", "300"), ("--timeout", "600"), ("--max-turns", "10"),
                        ("--tool-timeout", "60"), ("--max-tool-chars", "20000"), ("-c, --concurrency", "20")):
        assert f"default: {value}" in help_text or f"else {value}" in help_text, flag
        row = next(line for line in page.splitlines() if line.startswith(f"| `{flag}"))
        assert value in row.split("|")[2], (flag, row)


def test_the_docstrings_map_lists_exactly_the_sections_in_order():
    """The reading map at the top of the generator is the list of its section banners (issue 27): a section
    added, moved or renamed without the map fails here. No section is much over 550 lines."""
    source = (ROOT / "generate_distillation_data.py").read_text()
    bar = "# " + "=" * 98
    lines = source.splitlines()
    banners = [(i, lines[i + 1][2:]) for i, line in enumerate(lines) if line == bar and i + 2 < len(lines)
               and lines[i + 2] == bar]
    docstring = source.split('"""', 2)[1]
    mapped = " ".join(docstring.split("banner's first line, and uses only the sections above it:")[1].split())
    assert mapped.split(" -> ") == [title for _, title in banners]
    ends = [i for i, _ in banners[1:]] + [len(lines)]
    for (start, title), end in zip(banners, ends):
        assert end - start <= 600, f"section {title!r} is {end - start} lines"
        assert lines[start + 3].startswith("# "), f"section {title!r} does not say what it owns"


def test_the_kubernetes_manifest_runs_as_written_with_app_and_data_mapped(tmp_path, teacher):
    """docs/scale.md's Indexed Job: its container's command, run in its workingDir, with /app (the image: this
    folder and its .venv) and /data (the shared volume) mapped to folders here. `.venv/bin/python` with
    `workingDir: /data` resolved in /data, where no venv is: every pod failed."""
    scale = (ROOT / "docs" / "scale.md").read_text()
    manifest = yaml.safe_load(re.search(r"```yaml\n(apiVersion: batch/v1\n.*?)```", scale, re.S)[1])
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    completions = manifest["spec"]["completions"]
    app, data = tmp_path / "app", tmp_path / "data"
    app.mkdir()
    data.mkdir()
    for name in (".venv", "generate_distillation_data.py", "tools.py"):  # the image: this folder at /app
        (app / name).symlink_to(ROOT / name)

    def mapped(text: str) -> str:
        for inside, here in (("/app", app), ("/data", data)):
            if text == inside or text.startswith(inside + "/"):
                return str(here) + text[len(inside):]
        return text

    command, cwd = [mapped(part) for part in container["command"]], mapped(container["workingDir"])
    prompts = [f"question {i}" for i in range(5)]
    (data / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    shard_of = {gdd._shard_of(gdd.conversation_hash([{"role": "user", "content": p}]), completions)
                for p in prompts}
    empty = next(index for index in range(completions) if index not in shard_of)
    pods = [subprocess.Popen(command, cwd=cwd, env=subprocess_env(JOB_COMPLETION_INDEX=str(index),
                                                                  OPENROUTER_BASE_URL=teacher.base_url),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for index in sorted(shard_of) + [empty]]
    said = [pod.communicate(timeout=120)[1] for pod in pods]
    assert [pod.returncode for pod in pods] == [0] * len(pods), said
    assert f"shard {empty} of {completions} holds none of the prompts" in said[-1]
    merged = [json.loads(line)["metadata"]["prompt_id"]
              for path in sorted(data.glob(f"train.shard-*-of-{completions}.jsonl")) for line in path.open()]
    assert len(merged) == len(set(merged)) == len(prompts)
