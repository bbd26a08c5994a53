"""The files users run and upload: config.yml and our train.jsonl validate with rnow's own validators,
the bundled prompts.jsonl is valid, and the README's quick start is what CI runs."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import symtable
import sys
from typing import Any

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


# What the owner test counts as a write: an assignment (=, +=, ..., del) to a field of the object, or to an
# item of one, and a call that changes a field's value in place; reading stays open to all.
_CHANGES_IN_PLACE = {"append", "add", "extend", "update", "setdefault", "insert", "pop", "popitem", "remove",
                     "discard", "clear", "merge", "sort", "reverse"}


def writes_outside_the_owner(source: str, owners: dict[str, set[str]]) -> list[str]:
    """Each write to a field of an owned object found outside its own class: `owners` maps a class to the
    names its objects go by (a variable, an attribute such as self.stats, or a local alias made from either,
    or from a call of the class)."""
    import ast

    def owner_of(node: ast.AST, aliases: dict[str, str]) -> str | None:
        name = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute)
                else None)
        if isinstance(node, ast.Name) and name in aliases:
            return aliases[name]
        if isinstance(node, ast.Call):
            called = node.func.id if isinstance(node.func, ast.Name) else None
            return next((cls for cls, names in owners.items() if called in names | {cls}), None)
        return next((cls for cls, names in owners.items() if name in names), None)

    def field_owner(target: ast.AST, aliases: dict[str, str]) -> str | None:
        if isinstance(target, ast.Subscript):  # stats.failure_reasons[label] += 1
            target = target.value
        return owner_of(target.value, aliases) if isinstance(target, ast.Attribute) else None

    found: list[tuple[int, str]] = []

    def scan(body: list[ast.stmt], inside: str | None) -> None:
        for top in body:
            if isinstance(top, ast.ClassDef):
                scan(top.body, top.name)
                continue
            aliases: dict[str, str] = {}
            for node in ast.walk(top):
                targets: list[ast.AST] = []
                if isinstance(node, ast.Assign):
                    targets = [t for target in node.targets for t in
                               (target.elts if isinstance(target, ast.Tuple) else [target])]
                    for target in targets:
                        if isinstance(target, ast.Name) and (cls := owner_of(node.value, aliases)):
                            aliases[target.id] = cls  # s = self.stats
                elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                    targets = [node.target]
                elif isinstance(node, ast.Delete):
                    targets = node.targets
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        node.func.attr in _CHANGES_IN_PLACE:
                    targets = [node.func.value]  # plan.finished.add(key): the field changed in place
                elif isinstance(node, ast.Call) and isinstance(node.func,
                                                               ast.Name) and node.func.id == "setattr":
                    targets = [ast.Attribute(value=node.args[0], attr="?")] if node.args else []
                for target in targets:
                    cls = field_owner(target, aliases)
                    if cls is not None and cls != inside:
                        found.append((node.lineno, f"line {node.lineno}: {ast.unparse(node).splitlines()[0]} "
                                                   f"(a field of {cls}, outside it)"))

    scan(ast.parse(source).body, None)
    return [said for _, said in sorted(found)]


def test_stats_and_plan_are_written_only_by_their_own_methods():
    """Classes own their state (issue 36): the run's counters (Stats) and the plan (Plan) change only through
    their methods that say what happened (stats.answered(...), plan.finish(key), ...); everyone else reads."""
    owners = {"Stats": {"stats"}, "Plan": {"plan", "make_plan"}}
    source = (ROOT / "generate_distillation_data.py").read_text()
    assert writes_outside_the_owner(source, owners) == []
    # The rule finds what it is for: each kind of write, by each name the objects go by.
    planted = """
def elsewhere(self, run):
    self.stats.retries += 1
    run.stats.failure_reasons["x"] += 1
    s = self.stats
    s.scored = 2
    self.plan.finished.add(3)
    plan = make_plan()
    plan.dropped_ids.append("y")
    setattr(self.stats, "billed", 1.0)
    return self.plan.finished, s.retries
"""
    assert len(writes_outside_the_owner(planted, owners)) == 6
    assert writes_outside_the_owner("class Stats:\n    def retried(self):\n        self.retries += 1\n",
                                    owners) == []


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


# The file reads downhill (issue 36): a section uses only the sections above it. The rule, as counted here:
# every use of a module-level name (a def, a class or an assignment at the top level), in code or in an
# annotation, wherever it sits (a function body included), whose definition lies in a later section, is a
# forward reference. A local, a parameter or an attribute of the same spelling is not a use of the global
# (symtable says which a name is). The preamble above the first banner (imports, constants, words for
# messages) counts as above every section. The allowlist is the exceptions, each with its reason.
_FORWARD_ALLOWED: dict[tuple[str, str], str] = {
    ("Rollout", "PausedFile"): "the runner is handed the paused file it takes saved turns from and saves "
    "them to; the file keeps them as dataset lines, so it sits below the line's section, which sits below "
    "the rollout's",
}


class _GlobalUses(ast.NodeVisitor):
    """(line, name) of every load of a module-level name, each scope's own names told apart by symtable."""

    def __init__(self, source: str, names: set[str]):
        self.names, self.uses, self.scopes = names, [], []
        self.tables = {}
        stack = [symtable.symtable(source, "generator", "exec")]
        while stack:
            table = stack.pop()
            for child in table.get_children():
                self.tables[(child.get_type(), child.get_lineno(), child.get_name())] = child
                stack.append(child)

    def _shadowed(self, name: str) -> bool:
        for depth, table in enumerate(reversed(self.scopes)):
            if table.get_type() == "class" and depth:
                continue  # a class's names are not seen from the functions inside it
            try:
                symbol = table.lookup(name)
            except KeyError:
                continue
            if symbol.is_global() or symbol.is_declared_global():
                return False
            if symbol.is_local() or symbol.is_parameter():
                return True
        return False

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and node.id in self.names and not self._shadowed(node.id):
            self.uses.append((node.lineno, node.id))

    def _enter(self, kind: str, node: ast.AST, name: str, inside: list) -> None:
        table = self.tables.get((kind, node.lineno, name))
        self.scopes.append(table) if table is not None else None
        for part in inside:
            self.visit(part)
        self.scopes.pop() if table is not None else None

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        args = node.args
        outside = node.decorator_list + args.defaults + [d for d in args.kw_defaults if d] + [
            a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]
            if a is not None and a.annotation is not None] + ([node.returns] if node.returns else [])
        for part in outside:  # evaluated (or, for annotations, read) where the def is
            self.visit(part)
        self._enter("function", node, node.name, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for part in node.decorator_list + node.bases + node.keywords:
            self.visit(part)
        self._enter("class", node, node.name, node.body)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for part in node.args.defaults:
            self.visit(part)
        self._enter("function", node, "lambda", [node.body])

    def _comprehension(self, node: Any, name: str, parts: list) -> None:
        self.visit(node.generators[0].iter)  # the first iterable is evaluated outside
        inner = [g.target for g in node.generators] + [g.iter for g in node.generators[1:]]
        self._enter("function", node, name, inner + [c for g in node.generators for c in g.ifs] + parts)

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, "listcomp", [node.elt])

    def visit_SetComp(self, node: ast.SetComp) -> None:
        self._comprehension(node, "setcomp", [node.elt])

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> None:
        self._comprehension(node, "genexpr", [node.elt])

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, "dictcomp", [node.key, node.value])


def _forward_references(source: str) -> set[tuple[str, str, str]]:
    """(section using, name, section defining it below) for every forward use."""
    tree = ast.parse(source)
    lines = source.splitlines()
    bar = "# " + "=" * 98
    banners = [(i + 1, lines[i + 1][2:]) for i, line in enumerate(lines) if line == bar and i + 2 < len(lines)
               and lines[i + 2] == bar]

    def section(line: int) -> tuple[int, str]:
        return max(((k, title) for k, (start, title) in enumerate(banners) if start <= line),
                   default=(-1, "the preamble"))
    defined: dict[str, int] = {}
    for node in tree.body:
        targets = ([node.name] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else
                   [t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign)
                   else
                   [node.target.id] if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                   else [])
        for name in targets:
            defined.setdefault(name, node.lineno)
    uses = _GlobalUses(source, set(defined))
    uses.visit(tree)
    found = set()
    for line, name in uses.uses:
        (use_k, use), (def_k, where) = section(line), section(defined[name])
        if use_k < def_k:
            found.add((use, name, where))
    return found


def test_the_file_reads_downhill():
    """Each section uses only the sections above it, as the module docstring says (issue 36: 57 forward
    references across 14 section pairs before)."""
    found = _forward_references((ROOT / "generate_distillation_data.py").read_text())
    unexplained = sorted((use, name,
                          where) for use, name, where in found if (use, name) not in _FORWARD_ALLOWED)
    assert not unexplained, "\n".join(f"{use} uses {name}, defined below in {where}" for use, name, where
                                      in unexplained)
    assert {(use, name) for use, name, _ in found} == set(_FORWARD_ALLOWED), "an allowance no longer needed"


def test_the_downhill_count_sees_what_it_should():
    """The counting rule on a small file: a use below its definition is fine, one above is counted wherever it
    sits (a function body, an annotation, a comprehension), and a local of the same spelling is not."""
    bar = "# " + "=" * 98
    source = "\n".join([
        bar, "# Upper", bar, "def early(x: Later) -> None:", "    return [later() for _ in x]",
        "def shadowed(later):", "    return later", "class Fields:", "    later: int = 0",
        bar, "# Lower", bar, "class Later: ...", "def later(): return early([])", ""])
    assert _forward_references(source) == {("Upper", "Later", "Lower"), ("Upper", "later", "Lower")}


def test_ruff_finds_nothing():
    """The style the way Python projects keep it (issue 36): pyflakes, pycodestyle at 110 columns, import
    order and bugbear, as pyproject.toml configures them, over every Python file of the repository."""
    checked = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_public_surface_stays_small():
    """Under 90 public names (issue 36: there were 251). Counted: every name the module binds at its top level
    (a def, a class, each target of an assignment, tuples included; imports not) without a leading underscore.
    A name without one is a door: the tests, bench/ or the report use it, it is a section's main part, or it
    is shown or matched by name (CONTRIBUTING.md); the tests may reach private names too."""
    tree = ast.parse((ROOT / "generate_distillation_data.py").read_text())
    bound = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound |= {name.id for target in targets for name in ast.walk(target)
                      if isinstance(name, ast.Name)}
    public = sorted(name for name in bound if not name.startswith("_"))
    assert len(public) < 90, public
