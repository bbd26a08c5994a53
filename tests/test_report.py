"""--report: the page is made from the files as users make it, then opened from file:// in the same real
headless Chromium the browse tests use: no console errors, no network, numbers that match the files,
filters driven through the page, and markup from prompts, answers and tool results that never runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, count_lines, read_jsonl, run_script, subprocess_env, write_prompts
from fake_teacher import answer, call_tools, status

import distillation_report
import generate_distillation_data as gdd


def test_the_report_survives_hostile_lines_and_shows_failed_prompts(run, teacher, workdir):
    write_prompts(workdir, ["q"])
    lines = [{"metadata": {"prompt_id": f"p{i}", "sample": 0, "usage": {"cost": 1e308}},
              "messages": [{"role": "user", "content": "u"},
                           {"role": "assistant", "content": None,
                            "tool_calls": [{"id": "c", "function": "add"}]}]}
             for i in range(3)]
    lines.append({"metadata": {"prompt_id": "big", "sample": 0, "turns": 10**400, "reward": 10**400,
                               "usage": {"cost": 10**400, "prompt_tokens": 10**400, "uncosted": 10**400}},
                  "messages": [{"role": "user", "content": "u"},
                               {"role": "assistant", "content": "", "tool_calls": 5}]})
    (workdir / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    entry = {"prompt_id": "f", "sample": 0, "prompt": "What failed here?", "kind": "HTTP 400", "usage": {}}
    (workdir / "train.failed.jsonl").write_text(json.dumps(entry) + "\n")
    result = run("--report", "--export", "hf", "--no-run", tools="none", subprocess=True)
    assert result.code == 0 and "Traceback" not in result.err, result.err
    import re

    page = (workdir / "train.report.html").read_text()
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1),
                      parse_constant=lambda name: pytest.fail(f"{name} in the page's JSON"))
    assert data["cost"]["total"] is None
    failed = next(c for c in data["conversations"] if c["state"] == "failed")
    assert failed["messages"][0]["content"] == "What failed here?"


def test_ctrl_c_while_the_report_is_written_says_so(run, teacher, workdir, monkeypatch):
    import distillation_report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distillation_report, "render_report", interrupted)
    write_prompts(workdir, ["q"])
    result = run("--report", tools="none")
    assert result.code == 130 and "while writing the --export/--report files" in result.err
    assert "before any request was sent" not in result.err and count_lines(workdir / "train.jsonl") == 1


SAYS_42 = '''
from rnow.core import RewardArgs, get_response, reward

@reward
def says_42(args: RewardArgs, messages: list) -> float:
    """1 when the answer says 42."""
    return 1.0 if "42" in get_response(messages) else 0.0
'''


INJECTED_PROMPT = "<script>window.pwned = 1</script> What is six times seven?"


INJECTED_ANSWER = '42 <img src=x onerror="window.pwned = 2">'


INJECTED_TOOL = "<svg onload=\"window.pwned = 3\"></svg><script>window.pwned = 4</script>"


FAILED_PROMPT = "</script><script>window.pwned = 5</script>"


def chromium() -> str:
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    assert found, "a Chromium is needed (apt-get install -y chromium)"
    return found


@pytest.fixture
def report(workdir, teacher):
    (workdir / "rewards.py").write_text(SAYS_42)
    (workdir / "hostile_tools.py").write_text(
        "from rnow.core.tool import tool\n\n@tool\ndef shout(text: str) -> str:\n"
        f'    """Echo."""\n    return {INJECTED_TOOL!r}\n')
    write_prompts(workdir, [INJECTED_PROMPT, "plain question", "wrong one", FAILED_PROMPT])
    teacher.script(INJECTED_PROMPT, call_tools(("shout", {"text": "x"})), answer(INJECTED_ANSWER))
    teacher.script("plain question", answer("It is 42, with melanoma in the text."))
    teacher.script("wrong one", answer("41"))
    teacher.script(FAILED_PROMPT, status(400, "bad request: <b onmouseover=alert(1)>"))
    result = run_script(workdir, "prompts.jsonl", "--tools", "hostile_tools.py",
                        "--base-url", teacher.base_url, "--rewards", "rewards.py", "--min-reward", "1",
                        "--report", "--backoff", "0.01")
    assert result.code == 1, result.err  # one prompt failed
    assert "Report: train.report.html" in result.err
    return workdir / "train.report.html"


def files_total_cost(workdir: Path) -> float:
    total = 0.0
    for name, usage_of in (("train.jsonl", lambda r: r["metadata"]["usage"]),
                           ("train.rejected.jsonl", lambda r: r["metadata"]["usage"]),
                           ("train.failed.jsonl", lambda r: r["usage"])):
        path = workdir / name
        if path.exists():
            total += sum(usage_of(record)["cost"] for record in read_jsonl(path))
    return total


def test_report_page_in_real_chromium(report, workdir):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium())
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        page.wait_for_selector("#conversations .conv")

        assert errors == [] and requests == [report.as_uri()]  # nothing but the file itself

        def number(card):
            return page.inner_text(f"#count-{card}")

        assert ((number("written"), number("failed"), number("rejected"), number("pending"))
                == ("2", "1", "1", "0"))
        assert number("cost") == f"${files_total_cost(workdir):.4f}"
        assert number("mean-reward") == "0.667"  # 1, 1 and 0 over the three scored rollouts
        assert page.inner_text("#failures").startswith("HTTP 400")
        assert page.locator("#chart-per-tool rect").count() == 1  # one tool, called once
        assert page.get_attribute("#chart-tool-calls rect >> nth=0", "data-count") in ("1", "2")

        def shown() -> int:
            return page.locator("#conversations .conv:not([hidden])").count()

        assert shown() == 4
        page.select_option("#f-state", "failed")
        assert shown() == 1 and "1 of 4 shown" in page.inner_text("#f-count")
        page.select_option("#f-state", "rejected")
        assert shown() == 1
        page.select_option("#f-state", "")
        page.select_option("#f-tool", "shout")
        assert shown() == 1
        page.select_option("#f-tool", "")
        page.fill("#f-text", "melanoma")
        assert shown() == 1
        page.fill("#f-text", "")

        # nothing injected ran, and it all shows as text
        for conv in page.locator("#conversations .conv").all():
            conv.evaluate("node => node.open = true")
            for details in conv.locator("details").all():
                details.evaluate("node => node.open = true")
        assert page.evaluate("typeof window.pwned") == "undefined"
        text = page.inner_text("body")
        for payload in (INJECTED_PROMPT, INJECTED_ANSWER, INJECTED_TOOL, FAILED_PROMPT):
            assert payload in text, payload
        assert page.locator("#conversations img, #conversations script, #conversations svg").count() == 0

        page.fill("#f-text", "")
        page.evaluate("window.scrollTo(0, 0)")
        # Made by every run, to be looked at; docs/data.md shows a copy (docs/report-screenshot.png).
        (ROOT / "tests" / "artifacts").mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT / "tests" / "artifacts" / "report-screenshot.png"))
        browser.close()


def test_report_from_existing_files_sends_nothing(run, workdir, teacher):
    write_prompts(workdir, ["a", "b", "c"])
    assert run(tools="none", subprocess=True).code == 0
    sent = len(teacher.requests)
    write_prompts(workdir, ["a", "b", "c", "d"])  # one more prompt: pending, not run
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--report", "--no-run",
                        env=subprocess_env())
    assert result.code == 0, result.err
    assert len(teacher.requests) == sent
    data = page_data(workdir / "train.report.html")
    assert data["counts"] == {"written": 3, "failed": 0, "rejected": 0, "pending": 1, "unreadable": 0}


def page_data(path: Path) -> dict:
    html = path.read_text()
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


def test_lines_that_carry_no_cost_make_the_cost_unknown_not_zero(run, workdir, teacher):
    write_prompts(workdir, ["q"])
    bare = {"metadata": {"prompt_id": "p", "sample": 0, "teacher": "some/model"},
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    (workdir / "train.jsonl").write_text(json.dumps(bare) + "\n")
    assert run("--report", "--no-run", tools="none").code == 0
    cost = page_data(workdir / "train.report.html")["cost"]
    assert cost["total"] is None and cost["per_accepted"] is None and cost["without_cost"] == 1
    costed = {**bare, "metadata": {**bare["metadata"], "prompt_id": "p2",
                                   "usage": {"cost": 0.25, "requests": 1}}}
    with open(workdir / "train.jsonl", "a") as f:
        f.write(json.dumps(costed) + "\n")
    assert run("--report", "--no-run", tools="none").code == 0
    cost = page_data(workdir / "train.report.html")["cost"]
    assert cost["total"] == 0.25 and cost["per_accepted"] is None and cost["without_cost"] == 1


def test_large_outputs_embed_a_bounded_sample_failed_first(tmp_path):
    output, failed = tmp_path / "train.jsonl", tmp_path / "train.failed.jsonl"
    line = {"metadata": {"prompt_id": "p", "sample": 0, "turns": 1,
                         "usage": {"cost": 0.001, "prompt_tokens": 150, "completion_tokens": 30}},
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    with output.open("w") as f:
        for i in range(3000):
            f.write(json.dumps({**line, "metadata": {**line["metadata"], "prompt_id": f"p{i}"}}) + "\n")
        f.write('{"metadata": {"prompt_id": "torn"}, "mess\n')
    failed.write_text("".join(json.dumps({"prompt_id": f"f{i}", "kind": "HTTP 400", "usage": {"cost": 0.0005},
                                          "messages": []}) + "\n" for i in range(10)))
    page, stats = distillation_report.render_report(output, failed, tmp_path / "none.jsonl", sample_size=100,
                                                   reader=gdd.dataset_records)
    path = tmp_path / "train.report.html"
    path.write_text(page)
    data = page_data(path)
    assert data["counts"] == {"written": 3000, "failed": 10, "rejected": 0, "pending": None, "unreadable": 1}
    assert data["sample"] == {"shown": 100, "of": 3010}
    states = [c["state"] for c in data["conversations"]]
    assert states[:10] == ["failed"] * 10 and states[10:] == ["written"] * 90
    assert data["cost"]["total"] == pytest.approx(3000 * 0.001 + 10 * 0.0005)
    assert dict(data["charts"][3]["bars"]) == {"100-200": 3000}  # prompt tokens, on fixed bins
