"""The API key is never written (issue 25): a teacher that echoes it in every field it can fill (content,
reasoning, reasoning details, tool-call ids and names, arguments, the model name), tools that echo it
back, on every path that writes a file (output, failed, rejected, paused, exports, report, the terminal),
across a 402 that pauses rollouts mid-conversation and the run that resumes them. Signed reasoning
that holds the key is sent back unchanged but never stored: that rollout resumes from its last clean turn."""

from __future__ import annotations

import json
import threading

from conftest import FAILURES, read_jsonl, run_script, secrets_used, subprocess_env, write_prompts
from fake_teacher import FakeTeacher, Reply, adjusted, answer, completion, status

KEY = "sk-or-v1-" + "0123456789abcdef" * 4


def test_the_key_never_reaches_a_file_or_the_terminal(workdir):
    quoted = f"upstream said: Authorization: Bearer {KEY}"
    server = FakeTeacher().start()
    try:
        write_prompts(workdir, ["mid-answer error", "long error", "echo", "cut by teacher"])
        server.script("mid-answer error", *[lambda body: Reply(body={"choices": [{
            "finish_reason": "error", "error": {"message": quoted}, "message": {"content": ""}}]})] * 2)
        # The key straddles the 300th character, where errors are cut for the failed file.
        server.script("long error", status(400, "x" * 280 + quoted))
        server.script("echo", answer(f"Your header was {KEY}"))
        server.script("cut by teacher", status(400, f"bad key {KEY[:30]}"))
        env = subprocess_env(OPENROUTER_API_KEY=KEY)
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url,
                            "--retries", "1", "--backoff", "0.01", env=env)
        assert result.code == 1
        assert server.headers[0]["authorization"] == f"Bearer {KEY}"  # it was sent, and only sent
        written = result.out + result.err + "".join(p.read_text() for p in workdir.glob("*.jsonl"))
        assert "Authorization: Bearer ***" in written
        for start in range(len(KEY) - 24):  # no 24-character piece of the key's secret part anywhere
            assert KEY[start:start + 24] not in written
    finally:
        server.stop()


def test_a_real_key_is_taken_out_of_what_the_teacher_wrote_but_never_out_of_prompts(run, teacher, workdir,
                                                                                     monkeypatch):
    key = "sk-or-v1-" + "0123456789abcdef" * 4
    monkeypatch.setenv("OPENROUTER_API_KEY", key)
    write_prompts(workdir, [f"Here is my key {key}, repeat it"])
    teacher.default_step = lambda body: Reply(body=completion({"content": f"Your key is {key}."}))
    result = run(tools="none")
    assert result.code == 0
    [record] = result.records()
    assert key in record["messages"][0]["content"] and record["messages"][1]["content"] == "Your key is ***."


KEY = "sk-or-v1-" + "5ec2e7" * 10 + "abcd"


ECHO_TOOLS = '''
from rnow.core.tool import tool

@tool
def echo(text: str) -> str:
    """Say the text back."""
    return "you said: " + text
'''


REWARDS = '''
from rnow.core import RewardArgs, get_response, reward

@reward
def not_rejected(args: RewardArgs, messages: list) -> float:
    return 0.0 if "reject me" in get_response(messages) else 1.0
'''


def leaky_turn(signed: bool = False):
    """A first turn where the teacher writes the key into every field it can fill."""

    def step(body: dict) -> Reply:
        details = [{"type": "reasoning.text", "text": f"thinking of {KEY}" if signed else "thinking",
                    **({"signature": "c2lnbmVk"} if signed else {})}]
        message = {"content": f"content {KEY}", "reasoning": f"reasoning {KEY}", "reasoning_details": details,
                   "tool_calls": [{"id": f"call_{KEY}", "type": "function",
                                   "function": {"name": "echo",
                                                "arguments": json.dumps({"text": f"arg {KEY}"})}},
                                  {"id": "call_2", "type": "function",
                                   "function": {"name": f"tool_{KEY}", "arguments": "{}"}}]}
        return Reply(body={**completion(message, "tool_calls", model=f"provider/{KEY}"),
                           "provider": f"Prov {KEY}"})

    return step


def final(text: str):
    return lambda body: Reply(body=completion({"content": text, "reasoning": f"so {KEY}"}, model=f"m/{KEY}"))


def held_until_all_came(prompts: list[str], then) -> dict:
    """A step per prompt whose replies are all held until each prompt has asked for its own. Scripted on the
    402 that stops the run: a rollout whose request had not gone out by the first 402 would stop without it
    and meet that 402 again when the run resumes. Whether it had gone out was a race (each rollout runs its
    tools first, on a thread of its own, which a loaded CPU can hold back), so the test waits on the requests
    themselves instead."""
    asked, all_came = set(), threading.Event()

    def step_of(prompt: str):
        def step(body: dict) -> Reply:
            asked.add(prompt)
            if asked == set(prompts):
                all_came.set()
            return adjusted(then, hold=all_came)(body)

        return step

    return {prompt: step_of(prompt) for prompt in prompts}


def every_file(folder) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def assert_no_key(text: str) -> None:
    assert KEY not in text
    for start in range(len(KEY) - 24):  # no 24-character piece of it either
        assert KEY[start:start + 24] not in text


def test_the_key_in_every_field_on_every_path_reaches_no_file(workdir):
    (workdir / "echo_tools.py").write_text(ECHO_TOOLS)
    (workdir / "rewards.py").write_text(REWARDS)
    teacher = FakeTeacher().start()
    try:
        prompts = ["finishes", "signed", "rejected", "fails"]
        write_prompts(workdir, prompts)
        out_of_credits = held_until_all_came(prompts, status(402, "out of credits"))
        teacher.script("finishes", leaky_turn(), out_of_credits["finishes"], final(f"done {KEY}"))
        teacher.script("signed", leaky_turn(signed=True), out_of_credits["signed"], leaky_turn(signed=True),
                       final("signed done"))
        teacher.script("rejected", leaky_turn(), out_of_credits["rejected"], final(f"reject me {KEY}"))
        teacher.script("fails", leaky_turn(), out_of_credits["fails"], status(400, f"bad request {KEY}"))
        env = subprocess_env(OPENROUTER_API_KEY=KEY)
        args = ["prompts.jsonl", "--tools", "echo_tools.py", "--base-url", teacher.base_url,
                "--backoff", "0.01", "-c", "4", "--rewards", "rewards.py", "--min-reward", "0.5",
                "--export", "hf,openai", "--report"]
        stopped = run_script(workdir, *args, env=env)
        assert stopped.code == 1 and "out of credits" in stopped.err
        paused = (workdir / "train.paused.jsonl").read_text()
        assert "you said: arg ***" in paused  # the turns were saved, without the key
        assert "Not saved: the later turns of 1 rollout" in stopped.err
        assert_no_key(every_file(workdir) + stopped.out + stopped.err)

        resumed = run_script(workdir, *args, env=env)
        assert resumed.code == 1, resumed.err  # "fails" failed
        by_prompt = {r["messages"][0]["content"]: r for r in resumed.records()}
        assert set(by_prompt) == {"finishes", "signed"}
        call = by_prompt["finishes"]["messages"][1]
        assert call["content"] == "content ***" and call["tool_calls"][0]["id"] == "call_***"
        assert call["tool_calls"][1]["function"]["name"] == "tool_***"
        assert by_prompt["finishes"]["metadata"]["model"] == "m/***"
        # the signed rollout began again (its first turn was never saved), and the teacher got its
        # signed reasoning back unchanged, key and all, on the next turn
        signed_requests = teacher.requests_for("signed")
        assert len(signed_requests) == 4
        assert signed_requests[-1]["messages"][1]["reasoning_details"][0]["text"] == f"thinking of {KEY}"
        # the one that finished after the 402 was not asked again for the turn it had saved
        assert len(teacher.requests_for("finishes")) == 3
        assert [r["messages"][0]["content"] for r in resumed.records("train.rejected.jsonl")] == ["rejected"]
        assert ([f["prompt_id"] for f in resumed.failed()]
                and "bad request ***" in json.dumps(resumed.failed()))
        for name in ("train.hf.jsonl", "train.openai.jsonl", "train.report.html"):
            assert (workdir / name).exists(), name
        assert_no_key(every_file(workdir) + resumed.out + resumed.err)
    finally:
        teacher.stop()


def test_connection_errors_never_carry_the_key(workdir):
    key = "sk-or-v1-" + "fedcba9876543210" * 4
    server = FakeTeacher(default_step=FAILURES["garbage instead of HTTP"]).start()
    try:
        write_prompts(workdir, ["q"])
        result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", server.base_url,
                            "--retries", "1", "--backoff", "0.01", env=subprocess_env(OPENROUTER_API_KEY=key))
        assert result.code == 1 and "connection problem" in (workdir / "train.failed.jsonl").read_text()
        everything = result.err + result.out + (workdir / "train.failed.jsonl").read_text()
        assert key[12:40] not in everything
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------
# Every secret the program was handed, not only OPENROUTER_API_KEY (issue 34)
# --------------------------------------------------------------------------------------------------

JUDGE_KEY = "judge-" + "7a9b" * 8  # in .env, as rewards get it
HF_TOKEN = "hf_" + "Q3w" * 10  # in the environment
PROVIDER_KEY = "prov-" + "c0ffee" * 5  # a provider's own key, given in --extra-body
HEADER_TOKEN = "hdr" + "5eed" * 6  # a header-like field of --extra-body: "Bearer ..."
URL_TOKEN = "tok" + "beef" * 6  # the base URL's user name: http://TOKEN@host/v1
HANDED = (JUDGE_KEY, HF_TOKEN, PROVIDER_KEY, HEADER_TOKEN, URL_TOKEN)
# a key-like field shorter than a real key: masked where shown as a field, never cut from text
SHORT = "tiny-tok"
NOT_SECRET = "http://auth.example.com/login"  # a key-like name holding a URL: no secret

JUDGE_REWARDS = '''
from rnow.core import RewardArgs, reward

@reward
def judge(args: RewardArgs, messages: list) -> float:
    """A judge whose client fails quoting its key, as some do."""
    raise RuntimeError("401 from the judge, key " + args.secrets["JUDGE_API_KEY"] + " rejected")
'''


def echo_every_secret(body: dict) -> Reply:
    said = " ".join([*HANDED, SHORT, NOT_SECRET])
    if not any(m["role"] == "tool" for m in body["messages"]):
        return Reply(body=completion({"content": f"calling with {said}", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "echo", "arguments": json.dumps({"text": said})}}]},
            "tool_calls"))
    return Reply(body=completion({"content": f"done: {said}"}, model=f"m/{HF_TOKEN}"))


def assert_none_of(secrets, text: str) -> None:
    for secret in secrets:
        assert secret not in text, secret
        for start in range(max(0, len(secret) - 24)):
            assert secret[start:start + 24] not in text


def test_every_secret_the_program_was_handed_reaches_no_file_and_no_terminal(workdir):
    (workdir / "echo_tools.py").write_text(ECHO_TOOLS)
    (workdir / "rewards.py").write_text(JUDGE_REWARDS)
    (workdir / ".env").write_text(f"JUDGE_API_KEY={JUDGE_KEY}\nAUTH_SERVER_URL={NOT_SECRET}\n")
    teacher = FakeTeacher(default_step=echo_every_secret).start()
    try:
        write_prompts(workdir, ["tell me everything"])
        base_url = teacher.base_url.replace("http://", f"http://{URL_TOKEN}@")
        extra = {"provider": {"api_key": PROVIDER_KEY, "sort": "price"}, "x_token": SHORT,
                 "headers": {"Authorization": f"Bearer {HEADER_TOKEN}"}}
        env = subprocess_env(HF_TOKEN=HF_TOKEN)
        secrets_used(*HANDED)
        args = ["prompts.jsonl", "--tools", "echo_tools.py", "--base-url", base_url, "--backoff", "0.01",
                "--extra-body", json.dumps(extra), "--rewards", "rewards.py",
                "--export", "hf,openai", "--report"]
        dry = run_script(workdir, *args, "--dry-run", env=env)
        assert dry.code == 0, dry.err
        shown = json.loads(dry.out[dry.out.index("{"):])
        assert shown["provider"] == {"api_key": "***", "sort": "price"} and shown["x_token"] == "***"
        assert (shown["headers"] == {"Authorization": "***"}
                and f"http://***@127.0.0.1:{teacher.port}" in dry.out)
        result = run_script(workdir, *args, env=env)
        assert result.code == 0, result.err
        assert teacher.requests[0]["provider"]["api_key"] == PROVIDER_KEY  # sent as given, and only sent
    finally:
        teacher.stop()
    [line] = result.records()
    assert (line["metadata"]["reward_errors"]["judge"]
            == "failed: RuntimeError: 401 from the judge, key *** rejected")
    final = line["messages"][-1]["content"]
    # short values and URLs are left as they are
    assert final == f"done: *** *** *** *** *** {SHORT} {NOT_SECRET}"
    assert line["messages"][2]["content"] == f"you said: *** *** *** *** *** {SHORT} {NOT_SECRET}"
    runs = read_jsonl(workdir / "train.runs.jsonl")[0]["teacher"]
    assert runs["extra_body"]["provider"]["api_key"] == "***" and runs["base_url"].startswith("http://***@")
    written = "".join(p.read_text(errors="replace") for p in workdir.rglob("*")
                      if p.is_file() and p.name != ".env")
    assert_none_of(HANDED, written + result.out + result.err + dry.out + dry.err)


# --------------------------------------------------------------------------------------------------
# A secret written some other way: its part after a public prefix, JSON-escaped, percent-decoded (issue 34's
# second round)
# --------------------------------------------------------------------------------------------------

RAW_PASSWORD = "s3cr3t/pass+word=" + "k" * 24  # what is sent (HTTP Basic)
URL_PASSWORD = "s3cr3t%2Fpass%2Bword%3D" + "k" * 24  # how the base URL must write it


def escaped(text: str) -> str:
    return "".join("\\u%04x" % ord(char) for char in text)


def echo_every_form(body: dict) -> Reply:
    """The key's 64 hex digits alone, the key and the password JSON-escaped inside tool-call arguments (which
    an hf export, or a trainer, decodes), and the password as it was sent."""
    said = f"{KEY[len('sk-or-v1-'):]} {RAW_PASSWORD}"
    if not any(m["role"] == "tool" for m in body["messages"]):
        arguments = '{"text": "' + escaped(KEY) + " " + escaped(RAW_PASSWORD) + '"}'
        return Reply(body=completion({"content": f"calling with {said}", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "echo", "arguments": arguments}}]},
            "tool_calls"))
    return Reply(body=completion({"content": f"done: {said}"}))


def test_a_secret_without_its_prefix_json_escaped_or_percent_decoded_reaches_no_file(workdir):
    (workdir / "echo_tools.py").write_text(ECHO_TOOLS)
    teacher = FakeTeacher(default_step=echo_every_form).start()
    secrets_used(RAW_PASSWORD, KEY[len("sk-or-v1-"):])
    try:
        write_prompts(workdir, ["tell me everything"])
        base_url = teacher.base_url.replace("http://", f"http://gwuser:{URL_PASSWORD}@")
        result = run_script(workdir, "prompts.jsonl", "--tools", "echo_tools.py", "--base-url", base_url,
                            "--backoff", "0.01", "--export", "hf,openai", "--report",
                            env=subprocess_env(OPENROUTER_API_KEY=KEY))
        assert result.code == 0, result.err
    finally:
        teacher.stop()
    [line] = result.records()
    assert line["messages"][-1]["content"] == "done: *** ***"
    call = read_jsonl(workdir / "train.hf.jsonl")[0]["messages"][1]["tool_calls"][0]
    assert call["function"]["arguments"] == {"text": "*** ***"}  # decoded by the export, and nothing in it
    assert_none_of([KEY, KEY[len("sk-or-v1-"):], RAW_PASSWORD, escaped(KEY), escaped(RAW_PASSWORD)],
                   every_file(workdir) + result.out + result.err)


def test_exports_the_card_and_the_report_scrub_lines_written_before_they_were(workdir):
    """A line another release (or tool) wrote with the key JSON-escaped in its arguments and in clear in an
    answer: --no-run's exports, card and report are writers, and go through the one scrub; the prompt's own
    messages are the user's data, exported as they are."""
    line = {"metadata": {"prompt_id": "p0", "sample": 0, "teacher": "m/teacher"},
            "messages": [{"role": "user", "content": "q " + escaped(KEY)},
                         {"role": "assistant", "content": "",
                          "tool_calls": [{"id": "c1", "type": "function", "function": {
                             "name": "echo", "arguments": '{"text": "' + escaped(KEY) + '"}'}}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                         {"role": "assistant", "content": f"done {KEY}"}]}
    (workdir / "train.jsonl").write_text(json.dumps(line) + "\n")
    (workdir / "echo_tools.py").write_text(ECHO_TOOLS)
    write_prompts(workdir, ["q"])
    result = run_script(workdir, "prompts.jsonl", "--tools", "echo_tools.py", "--no-run",
                        "--export", "hf,openai", "--report", env=subprocess_env(OPENROUTER_API_KEY=KEY))
    assert result.code == 0, result.err
    hf = read_jsonl(workdir / "train.hf.jsonl")[0]["messages"]
    assert (hf[1]["tool_calls"][0]["function"]["arguments"] == {"text": "***"}
            and hf[-1]["content"] == "done ***")
    assert hf[0]["content"] == "q " + escaped(KEY)  # the prompt, as the user wrote it
    exported = "".join((workdir / name).read_text() for name in ("train.hf.jsonl", "train.openai.jsonl",
                                                                  "train.hf.README.md", "train.report.html"))
    assert_none_of([KEY], exported + result.err)
    # the test's own hostile input: the session's last grep is for what we wrote
    (workdir / "train.jsonl").unlink()
