#!/usr/bin/env python3
"""Benchmarks: does the generator run at the speed of the teacher, at any size?

    python bench/bench.py            # full size, a few minutes on 2 cores
    python bench/bench.py --tiny     # seconds; what the smoke test runs

Everything runs against a loopback server speaking the protocol (tests/support/fake_teacher.py), started here;
the generator runs as a subprocess, the way users run it. Each figure is printed with its target and a
pass/fail mark; the exit code is 1 when a target is missed. Throughput is measured on the server's side,
from the first answer to the last, so process start-up is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from fake_teacher import FakeTeacher, FixedWindow, Reply, TokenBucket, completion, jittered  # noqa: E402

import generate_distillation_data as gdd  # noqa: E402

TRIVIAL_TOOLS = '''
from rnow.core.tool import tool

@tool
def echo(text: str) -> str:
    """Return the text."""
    return text
'''

# The yardstick: the fastest client this machine runs, a bare aiohttp loop sending the same requests.
BARE_LOOP = '''
import asyncio, json, sys, aiohttp
url, n, concurrency, with_tools = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "tools"
TOOLS = [{"type": "function", "function": {"name": "echo", "description": "Return the text.", "parameters": {
    "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
    "additionalProperties": False}}}]
async def main():
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as client:
        async def ask(messages):
            # The same requests the generator sends by default: streamed, usage in the last event.
            async with slots:
                body = {"model": "m", "messages": messages, **({"tools": TOOLS} if with_tools else {}),
                        "stream": True, "stream_options": {"include_usage": True}}
                async with client.post(url, data=json.dumps(body).encode()) as r:
                    raw = await r.read()
            calls = [json.loads(line[6:]) for line in raw.split(b"\\n") if line.startswith(b"data: {")]
            pieces = [c for event in calls for choice in event.get("choices", [])
                      for c in choice["delta"].get("tool_calls", [])]
            if not pieces:
                return {"role": "assistant", "content": "done"}
            arguments = "".join(p["function"]["arguments"] for p in pieces)
            call = pieces[0] | {"function": {"name": "echo", "arguments": arguments}}
            return {"role": "assistant", "content": None,
                    "tool_calls": [{k: v for k, v in call.items() if k != "index"}]}
        async def rollout(i):
            messages = [{"role": "user", "content": f"question {i}"}]
            answer = await ask(messages)
            if with_tools:  # the same second request a tool rollout sends, with the tool result
                call = answer["tool_calls"][0]
                await ask(messages + [answer, {"role": "tool", "tool_call_id": call["id"], "content": "hi"}])
        await asyncio.gather(*(rollout(i) for i in range(n)))
asyncio.run(main())
'''


TRIVIAL_REWARDS = '''
from rnow.core import RewardArgs, get_response, reward

@reward
def answered(args: RewardArgs, messages: list) -> float:
    """1 when there is an answer."""
    return 1.0 if get_response(messages) else 0.0
'''


PAGE_TOOLS = '''
from rnow.core.tool import tool

@tool
def browse(url: str) -> str:
    """Open a page (a stand-in for the real browse: a 20,000-character page)."""
    return f"Page {url}: " + "clinical trial results and dosing tables. " * 480
'''


def five_pages_then_answer(body: dict) -> Reply:
    """Six-turn rollouts: five browse calls, each page resent on every later turn, then the answer."""
    pages = sum(message["role"] == "tool" for message in body["messages"])
    if pages >= 5:
        return Reply(body=completion({"content": "done"}))
    call = {"id": f"call_{pages}", "type": "function",
            "function": {"name": "browse", "arguments": json.dumps({"url": f"https://example.org/{pages}"})}}
    return Reply(body=completion({"content": None, "tool_calls": [call]}, "tool_calls"))


def tool_then_answer(body: dict) -> Reply:
    """Two-turn rollouts: call the trivial tool first, answer once its result is there."""
    if body["messages"][-1]["role"] == "tool":
        return Reply(body=completion({"content": "done"}))
    call = {"id": "call_1", "type": "function", "function": {"name": "echo", "arguments": '{"text": "hi"}'}}
    return Reply(body=completion({"content": None, "tool_calls": [call]}, "tool_calls"))


@dataclass
class Figure:
    name: str
    value: float
    target: str
    ok: bool | None  # None: reported, no target
    unit: str = ""

    def row(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "    "}[self.ok]
        return f"| {self.name:<52} | {self.value:>10.3f} {self.unit:<10} | {self.target:<14} | {mark} |"


@dataclass
class RunResult:
    rollouts_per_s: float
    requests_per_s: float
    rejected_share: float
    duplicates: int
    lines: int
    cost: float  # the teacher's own usage.cost, summed over the output
    span: float  # first request received to last answer, on the teacher's side
    cpu_share: float  # the generator's CPU time over its wall time (1.0 = one core)
    peak_mb: float
    wall: float = 0.0  # whole process (or processes): start to exit, as users wait for it


def run_generator(work: Path, server: FakeTeacher, n: int, concurrency: int, tools: str = "none",
                  tag: str = "run", extra: tuple[str, ...] = (), shards: int = 1,
                  program: tuple[str, ...] = (str(ROOT / "generate_distillation_data.py"),),
                  on_start=None) -> RunResult:
    """The generator as users run it, with default settings but for the options given; `shards`: that
    many processes at once, each with --shard I/N, sharing the teacher (and its key's limits). `program`:
    the script and its first arguments (another limiter's, figure 17); `on_start`: called with the
    processes once they are started (figure 17 stops one of them)."""
    prompts = work / f"{tag}.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"{tag} question {i}"}) + "\n" for i in range(n)))
    output = work / f"{tag}.out.jsonl"
    for old in work.glob(f"{tag}.out*.jsonl"):  # every run starts from nothing
        old.unlink()
    server.answered_at.clear()
    server.received_at.clear()
    server.requests.clear()
    server.rejected = 0
    started = time.monotonic()
    processes = []
    for shard in range(shards):
        split = (("--shard", f"{shard}/{shards}", "-o", str(work / f"{tag}.out-{shard}.jsonl"))
                 if shards > 1 else ())
        command = [sys.executable, *program, str(prompts), "-o", str(output),
                   "--tools", tools, "--base-url", server.base_url, "-c", str(concurrency), *extra, *split]
        processes.append(subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))
    peak = PeakMemory(processes[0].pid)
    if on_start is not None:
        on_start(processes)
    cpu = 0.0
    for process in processes:
        stderr = process.stderr.read()
        if getattr(process, "stopped", False):
            continue  # stopped on purpose and waited for (figure 17): its shard is not counted
        _, status, usage = os.wait4(process.pid, 0)
        cpu += usage.ru_utime + usage.ru_stime
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"generator failed ({os.waitstatus_to_exitcode(status)}): {stderr[-2000:]}")
    peak.stop()
    wall = time.monotonic() - started
    # the generator's own files beside the output
    ours = (".runs.jsonl", ".failed.jsonl", ".rejected.jsonl", ".paused.jsonl", ".quarantine.jsonl")
    lines = [line for out in work.glob(f"{tag}.out*.jsonl") if not out.name.endswith(ours)
             for line in out.read_text().splitlines()]
    ids = Counter(json.loads(line)["metadata"]["prompt_id"] for line in lines)
    span = server.answered_at[-1] - server.answered_at[0]
    requests = len(server.requests)
    cost = sum(json.loads(line)["metadata"]["usage"]["cost"] for line in lines)
    return RunResult(len(ids) / span, len(server.answered_at) / span, server.rejected / max(1, requests),
                     sum(count - 1 for count in ids.values()) + (n - len(ids)), sum(ids.values()), cost,
                     server.answered_at[-1] - server.received_at[0], cpu / wall, peak.mb, wall)


class PeakMemory:
    """The process's own high-water mark (VmHWM), read while it runs. Not wait4's ru_maxrss: that counts
    the pages of this (large) process that the child had between fork and exec."""

    def __init__(self, pid: int) -> None:
        self.path, self.mb, self._done = Path(f"/proc/{pid}/status"), 0.0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.1):
            try:
                line = next(row for row in self.path.read_text().splitlines() if row.startswith("VmHWM:"))
            except (OSError, StopIteration):  # exited (a zombie has no VmHWM)
                continue
            self.mb = max(self.mb, int(line.split()[1]) / 1024)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def run_bare_loop(server: FakeTeacher, n: int, concurrency: int, with_tools: bool = False) -> float:
    """Requests/s of a bare aiohttp loop sending the same requests (two per rollout with tools)."""
    server.answered_at.clear()
    subprocess.run([sys.executable, "-c", BARE_LOOP, f"{server.base_url}/chat/completions", str(n),
                    str(concurrency), "tools" if with_tools else "plain"], check=True, timeout=900)
    return len(server.answered_at) / (server.answered_at[-1] - server.answered_at[0])


def bench_adaptive(work: Path, n: int, cap: int, mean: float, tools: str = "none", tail: float = 0.0,
                   extra: tuple[str, ...] = ()):
    server = FakeTeacher(max_in_flight=cap, latency_fn=jittered(mean, 0.5, tail_share=tail),
                         default_step=tool_then_answer if tools != "none" else None).start()
    try:
        return run_generator(work, server, n, 64, tools,
                             tag=f"adaptive-{tools != 'none'}-{tail}-{n}-{len(extra)}", extra=extra)
    finally:
        server.stop()


def bench_metered(work: Path, n: int, meter, mean: float, tag: str) -> RunResult:
    """A teacher metered per unit of time (token bucket, fixed window), not per request in flight."""
    server = FakeTeacher(latency_fn=jittered(mean, 0.2), meter=meter).start()
    try:
        return run_generator(work, server, n, 64, tag=tag)
    finally:
        server.stop()


@dataclass
class RateRow:
    """One row of the rate-control table: a teacher, how close a whole run (process start to exit,
    default settings) comes to that teacher's limit, and the share of requests it refused."""
    name: str
    server: FakeTeacher
    n: int
    ideal: float  # seconds the teacher's limit allows for n prompts, plus the last answer's latency
    concurrency: int = 64
    shards: int = 1
    extra: tuple[str, ...] = ()
    share_target: float | None = 0.90
    rejected_target: float | None = 0.05

    def figures(self, work: Path, tiny: bool) -> list[Figure]:
        self.server.start()
        try:
            run = run_generator(work, self.server, self.n, self.concurrency, tag=f"rate-{id(self)}",
                                extra=self.extra, shards=self.shards)
        finally:
            self.server.stop()
        share = self.ideal / run.wall

        def judge(value, ok):  # --tiny: too short to mean anything
            return None if tiny or ok is None else ok

        return [Figure(f"{self.name}: vs its limit", share,
                       f">= {self.share_target:.2f}" if self.share_target else "",
                       judge(share, None if self.share_target is None else share >= self.share_target),
                       f"({run.wall:.1f} s)"),
                Figure(f"{self.name}: share 429", run.rejected_share,
                       f"<= {self.rejected_target:.2f}" if self.rejected_target is not None else "",
                       judge(run.rejected_share, None if self.rejected_target is None
                             else run.rejected_share <= self.rejected_target)),
                Figure(f"{self.name}: duplicates or missing", run.duplicates, "== 0", run.duplicates == 0)]


def rate_control_rows(scale: float) -> list[RateRow]:
    """The rate-control table of the README: teachers that cap requests in flight, requests per second
    (with and without Retry-After), both, a key shared by three shard processes, and a reasoning teacher
    with no cap at all, each against its own limit."""
    def n(full: int) -> int:
        return max(20, int(full * scale))

    rate, burst = 20.0, 10
    reasoning = random.Random(7)
    slow = FakeTeacher(latency_fn=lambda: reasoning.uniform(4.0, 6.0) * (1 if scale == 1 else 0.1))
    wide, mean = (1000, 5.0) if scale == 1 else (50, 0.5)
    return [
        RateRow("12a. in-flight cap 8, 150-250 ms",
                FakeTeacher(max_in_flight=8, latency_fn=jittered(0.2, 0.25)),
                n(400), n(400) * 0.2 / 8 + 0.25, share_target=0.92, rejected_target=0.03),
        RateRow("12b. 20/s bucket, Retry-After: 1",
                FakeTeacher(latency_fn=jittered(0.25, 0.2), meter=TokenBucket(rate, burst, retry_after=True)),
                n(600), (n(600) - burst) / rate + 0.3),
        RateRow("12c. 20/s bucket, reset time only",
                FakeTeacher(latency_fn=jittered(0.25, 0.2), meter=TokenBucket(rate, burst)),
                n(600), (n(600) - burst) / rate + 0.3, share_target=0.93),
        RateRow("12d. reasoning 4-6 s, no cap, default start", slow, n(3000),
                n(3000) / (wide / mean) + 1.2 * mean, concurrency=wide, rejected_target=None),
        RateRow("12e. same, --start-concurrency (reference)",
                FakeTeacher(latency_fn=lambda: reasoning.uniform(4.0, 6.0) * (1 if scale == 1 else 0.1)),
                n(3000), n(3000) / (wide / mean) + 1.2 * mean, concurrency=wide,
                extra=("--start-concurrency", str(wide)), share_target=None, rejected_target=None),
        RateRow("12f. cap 8 and 20/s, 225-375 ms",
                FakeTeacher(max_in_flight=8, latency_fn=jittered(0.3, 0.25),
                            meter=TokenBucket(rate, burst, retry_after=True)),
                n(600), (n(600) - burst) / rate + 0.375),
        RateRow("12g. 3 shard processes, one 20/s key",
                FakeTeacher(latency_fn=jittered(0.25, 0.2), meter=TokenBucket(rate, burst, retry_after=True)),
                n(600), (n(600) - burst) / rate + 0.3, shards=3, share_target=0.85),
    ]


@dataclass
class ScaleResult:
    run: RunResult
    steady: float  # answers/s once the requests in flight reached -c, over the teacher's capacity c / 5 s
    ramp: float  # seconds from the first request until -c requests were in flight (slow start)
    end_to_end: float  # the whole run against n / (c / 5 s) + the slowest answer, ramp included


def bench_reasoning_scale(work: Path, n: int, concurrency: int, mean: float = 5.0, strict: bool = True
                          ) -> ScaleResult:
    """A reasoning teacher (4-6 s an answer, no cap) with thousands of requests in flight. Its capacity is
    concurrency / mean latency; the run starts slowly on purpose (slow start), so the yardstick is the
    answer rate once -c requests are in flight, until the last request is sent."""
    latency = random.Random(7)
    server = FakeTeacher(latency_fn=lambda: latency.uniform(0.8 * mean, 1.2 * mean)).start()
    try:
        result = run_generator(work, server, n, concurrency, tag=f"reasoning-{concurrency}")
    finally:
        server.stop()
    events = sorted([(t, 1) for t in server.received_at] + [(t, -1) for t in server.answered_at])
    in_flight, full_at = 0, None
    for t, change in events:
        in_flight += change
        if in_flight >= 0.95 * concurrency:
            full_at = t
            break
    last_sent = server.received_at[-1]
    if full_at is None or last_sent - full_at < 1.0:
        if not strict:  # --tiny, on a loaded machine: the figure means nothing, the run still must work
            return ScaleResult(result, 0.0, 0.0, 0.0)
        raise SystemExit(f"figure 7: -c {concurrency} was never reached for long; give it more rollouts")
    answered = sum(full_at <= t <= last_sent for t in server.answered_at)
    capacity = concurrency / mean
    return ScaleResult(result, answered / (last_sent - full_at) / capacity, full_at - server.received_at[0],
                       (n / capacity + 1.2 * mean) / result.span)


def bench_caching(work: Path, n: int) -> tuple[float, float]:
    """Cost of the same six-turn browse rollouts with and without caching, on a teacher that caches only
    when asked and bills cache reads at 0.1x, writes at 1.25x (Anthropic's prices)."""
    (work / "page_tools.py").write_text(PAGE_TOOLS)
    costs = []
    for flag in ("on", "off"):
        server = FakeTeacher(caching=True, default_step=five_pages_then_answer).start()
        try:
            costs.append(run_generator(work, server, n, 16, "page_tools.py", tag=f"caching-{flag}",
                                       extra=("--cache", flag, "-s", "You are a careful pharmacist.")).cost)
        finally:
            server.stop()
    return costs[0], costs[1]


def bench_batch(work: Path, n: int, poll: float) -> tuple[float, int, float]:
    """The same six-turn browse rollouts live and through the Batch API (--batch, its default poll unless
    --tiny), on a teacher that bills batches at half the price, as OpenRouter does: (batch cost / live cost
    by the teacher's own usage.cost, batches used, answers paid in batch mode / live)."""
    (work / "page_tools.py").write_text(PAGE_TOOLS)
    costs, answers, batches = [], [], 0
    for mode in ("live", "batch"):
        server = FakeTeacher(default_step=five_pages_then_answer).start()
        try:
            extra = ("--batch",) + (("--batch-poll", str(poll)) if poll else ()) if mode == "batch" else ()
            costs.append(run_generator(work, server, n, 20, "page_tools.py", tag=f"batch-{mode}",
                                       extra=extra).cost)
            answers.append(len(server.requests))
            batches = len(server.batches)
            # the bound holds here too: no request went out in more than three batches
            most = max(server.batch_submissions.values(), default=0)
            assert most <= 3, "a request went out in 4 batches or more"
        finally:
            server.stop()
    return costs[1] / costs[0], batches, answers[1] / answers[0]


def bench_overhead(work: Path, n: int, concurrency: int, tools: str = "none") -> tuple[float, float]:
    server = FakeTeacher(default_step=tool_then_answer if tools != "none" else None).start()
    try:
        rollouts = n // 2 if tools != "none" else n  # the same number of requests either way
        bare = run_bare_loop(server, rollouts, concurrency, with_tools=tools != "none")
        ours = run_generator(work, server, rollouts, concurrency, tools, tag=f"overhead-{tools != 'none'}")
        return ours.requests_per_s, bare
    finally:
        server.stop()


def bench_size(work: Path, n: int) -> tuple[float, float, float]:
    """Peak memory of a run over n prompts whose output already holds n - 100 of them, and scan speed."""
    prompts, output = work / "size.jsonl", work / "size.out.jsonl"
    with open(prompts, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Question number {i}: what is the capital of country {i % 197}?",
                                "metadata": {"expected_answer": f"city {i % 197}"}}) + "\n")
    cfg = gdd.parse_config([str(prompts), "-o", str(output), "--tools", "none", "--base-url",
                            "http://127.0.0.1:9"])
    with open(output, "w") as f:
        for job in gdd.iter_jobs(cfg.prompts):
            if job.seq >= n - 100:
                break
            reply = {"role": "assistant",
                     "content": "The capital is " + "a city with a long and storied history. " * 4}
            outcome = gdd.Outcome(job, job.prompt.messages + [reply], gdd.Usage(), 1, "stop")
            f.write(json.dumps(gdd.build_line(outcome, cfg.line, []), ensure_ascii=False) + "\n")
    # and 100,000 paused rollouts (a tenth of n) beside it, 5 turns each: what a resume reads besides
    # the output
    paused = gdd.OutputPaths(output).paused
    call = {"id": "call_1", "type": "function",
            "function": {"name": "browse", "arguments": "{\"url\": \"https://example.org/page\"}"}}
    turn = [{"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "name": "browse", "content": "A page of text. " * 12}]
    with open(paused, "wb") as f:  # as the generator writes them: a record per answer (issue 26)
        for i in range(n // 10):
            for t in range(5):
                f.write(gdd.encode_line({"prompt_id": f"paused-{i}", "sample": 0, "attempt": 1, "from": 2 * t,
                                         **({"fingerprint": "0" * 16} if t == 0 else {}), "turns": t + 1,
                                         "finish_reason": "tool_calls", "usage": gdd.Usage().to_json(),
                                         "messages": turn}))
    size_mb = (output.stat().st_size + paused.stat().st_size) / 1e6
    started = time.perf_counter()
    done = gdd.OutputFile(output).scan().done
    places = gdd.PausedFile(paused, gdd._Secret(None).scrub).load()
    scan_mb_s = size_mb / (time.perf_counter() - started)
    assert len(done) == n - 100 and places == n // 10
    del done
    server = FakeTeacher().start()
    try:
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, str(ROOT / "generate_distillation_data.py"), str(prompts),
                                    "-o", str(output), "--tools", "none", "--base-url", server.base_url],
                                   cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = PeakMemory(process.pid)
        while not server.requests and process.poll() is None:
            time.sleep(0.01)
        to_first_request = time.monotonic() - started
        status = process.wait()
        peak.stop()
        if status != 0:
            raise SystemExit("size run failed")
    finally:
        server.stop()
    # The report over the same million lines, from the files alone (--report --no-run)
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, str(ROOT / "generate_distillation_data.py"), str(prompts),
                                "-o", str(output), "--tools", "none", "--report", "--no-run"],
                               cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    report_peak = PeakMemory(process.pid)
    stderr = process.communicate()[1]
    report_peak.stop()
    if process.returncode != 0:
        raise SystemExit(f"report failed: {stderr[-2000:]}")
    return peak.mb, scan_mb_s, to_first_request, time.monotonic() - started, report_peak.mb


# Figure 13's yardstick: a bare aiohttp loop that reads the same stream and parses it, joining the texts.
BARE_STREAM = '''
import asyncio, sys, aiohttp, orjson
async def main():
    async with aiohttp.ClientSession() as client:
        body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": True}
        async with client.post(sys.argv[1], data=orjson.dumps(body)) as r:
            texts, buffer, start = [], bytearray(), 0
            async for chunk in r.content.iter_any():
                buffer += chunk
                while (end := buffer.find(b"\\n", start)) >= 0:
                    line, start = bytes(buffer[start:end]), end + 1
                    if line.startswith(b"data: {"):
                        event = orjson.loads(line[6:])
                        for choice in event.get("choices") or ():
                            piece = choice["delta"].get("content")
                            if piece:
                                texts.append(piece)
                if start > 1 << 20:
                    del buffer[:start]
                    start = 0
            assert len("".join(texts)) > 0
asyncio.run(main())
'''


def stream_of(body: dict, event_chars: int) -> list[bytes]:
    """The answer as a stream whose content comes in events of `event_chars` characters, cut into 64 KB
    writes; built once, so the server's time is not what is measured."""
    from dialects import chunk, sse

    content = body["choices"][0]["message"]["content"]
    events = [chunk(body, {"role": "assistant"})]
    events += [chunk(body, {"content": content[i:i + event_chars]})
               for i in range(0, len(content), event_chars)]
    events += [chunk(body, {}, "stop"), {**chunk(body), "choices": [], "usage": body["usage"]}]
    joined = b"".join(sse(events + ["[DONE]"]))
    return [joined[i:i + 65536] for i in range(0, len(joined), 65536)]


def bench_stream_assembly(work: Path, chars: int, event_chars: int, repeats: int = 3) -> tuple[float, float]:
    """(ours, bare): whole-process seconds an answer of `chars` characters in events of `event_chars`
    costs, less what a one-word answer costs the same process (start-up and shutdown): the generator as
    users run it (default settings, --tools none) and the bare loop, against one stream built once."""
    from dialects import Dialect

    prebuilt: dict[int, list[bytes]] = {}

    def streamed(body: dict) -> Reply:
        size = chars if "large" in body["messages"][0]["content"] else 4
        answer = completion({"content": "x" * size})
        if size not in prebuilt:
            prebuilt[size] = stream_of(answer, event_chars if size == chars else 4)
        return Reply(body=answer, dialect=Dialect("prebuilt", lambda _body, writes=prebuilt[size]: writes))

    server = FakeTeacher(default_step=streamed).start()
    try:
        def ours(prompt: str) -> float:
            (work / "stream.jsonl").write_text(json.dumps({"prompt": prompt}) + "\n")
            for old in work.glob("stream.out*"):
                old.unlink()
            started = time.monotonic()
            subprocess.run([sys.executable, str(ROOT / "generate_distillation_data.py"), "stream.jsonl", "-o",
                            "stream.out.jsonl", "--tools", "none", "--base-url", server.base_url], cwd=work,
                           check=True, capture_output=True, timeout=900)
            return time.monotonic() - started

        def bare(prompt: str) -> float:
            started = time.monotonic()
            subprocess.run([sys.executable, "-c", BARE_STREAM.replace('"q"', json.dumps(prompt)),
                            f"{server.base_url}/chat/completions"], check=True, timeout=900)
            return time.monotonic() - started

        def cost(run) -> float:  # the best of a few, less the best small one: noise only adds
            return min(run("large") for _ in range(repeats)) - min(run("small") for _ in range(repeats))

        return cost(ours), cost(bare)
    finally:
        server.stop()


def bench_gateway(work: Path, n: int, rpm: int) -> tuple[RunResult, float, int, int]:
    """n one-tool-call rollouts through LiteLLM's proxy with an rpm limit (tests/support/gateway.py), default
    settings: (the run, the ideal seconds for its minute windows, requests sent, requests refused)."""
    from gateway import MASTER_KEY, MODEL, LiteLLMGateway

    def one_tool_call(body: dict) -> Reply:
        if not any(m["role"] == "tool" for m in body["messages"]):
            return Reply(body=completion({"content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "echo", "arguments": '{"text": "hi"}'}}]},
                "tool_calls"))
        return Reply(body=completion({"content": "done"}))

    server = FakeTeacher(default_step=one_tool_call, latency=0.2).start()
    proxy = LiteLLMGateway(server.base_url, rpm, work).start()
    try:
        prompts = work / "gateway.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": f"gateway question {i}"}) + "\n" for i in range(n)))
        started, phase = time.monotonic(), time.time() % 60
        process = subprocess.run([sys.executable, str(ROOT / "generate_distillation_data.py"), str(prompts),
                                  "-o", "gateway.out.jsonl", "--tools", "trivial_tools.py",
                                  "--base-url", proxy.base_url, "--model", MODEL],
                                 cwd=work, capture_output=True, text=True, timeout=1800,
                                 env={**os.environ, "OPENROUTER_API_KEY": MASTER_KEY})
        wall = time.monotonic() - started
        if process.returncode != 0:
            raise SystemExit(f"generator failed through the gateway: {process.stderr[-2000:]}")
        ids = Counter(json.loads(line)["metadata"]["prompt_id"]
                      for line in (work / "gateway.out.jsonl").read_text().splitlines())
        import re
        sent, refused = map(int, re.search(r"(\d+) requests, (\d+) answered 429", process.stderr).groups())
        # The gateway counts calendar minutes: `rpm` requests in what is left of the first, then rpm a minute.
        windows_needed = -(-(2 * n) // rpm) - 1
        ideal = (60 - phase) + 60 * (windows_needed - 1) + 0.4 if windows_needed else 0.4
        duplicates = sum(c - 1 for c in ids.values()) + (n - len(ids))
        return RunResult(0, 0, refused / sent, duplicates, len(ids), 0, 0, 0, 0, wall), ideal, sent, refused
    finally:
        proxy.stop()
        server.stop()


PAGE_TOOLS = '''
from rnow.core.tool import tool

@tool
def read_page(n: int) -> str:
    """Read page n."""
    return f"page {n}: " + "lorem ipsum dolor sit amet " * 740
'''


class PeakSize:
    """The largest size a file reaches, watched every 10 ms from a thread (the generator runs apart)."""

    def __init__(self, path: Path) -> None:
        self.path, self.bytes, self._done = path, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.01):
            try:
                self.bytes = max(self.bytes, self.path.stat().st_size)
            except OSError:
                pass

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.bytes


def bench_paused_file(work: Path, n: int, calls: int, generator: Path) -> tuple[float, int, int]:
    """n rollouts of `calls` tool calls reading 20 KB pages, default settings: (wall seconds, the paused
    file's peak bytes, the dataset's bytes), for the given generator file."""
    def reader(body: dict) -> Reply:
        done = sum(1 for m in body["messages"] if m.get("role") == "tool")
        if done < calls:
            call = {"id": f"call_{done}", "type": "function",
                    "function": {"name": "read_page", "arguments": json.dumps({"n": done})}}
            return Reply(body=completion({"content": None, "tool_calls": [call]}, "tool_calls"))
        return Reply(body=completion({"content": f"Read {done} pages."}))

    (work / "page_tools.py").write_text(PAGE_TOOLS)
    server = FakeTeacher(default_step=reader, latency=0.02).start()
    try:
        prompts = work / "pages.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": f"read {calls} pages, {i}"}) + "\n"
                                   for i in range(n)))
        for old in work.glob("pages.out*"):
            old.unlink()
        peak = PeakSize(work / "pages.out.paused.jsonl")
        started = time.monotonic()
        subprocess.run([sys.executable, str(generator), str(prompts), "-o", "pages.out.jsonl", "--tools",
                        "page_tools.py", "--base-url", server.base_url, "--max-turns", str(calls + 2)],
                       cwd=work, check=True, capture_output=True, timeout=1800)
        wall = time.monotonic() - started
        return wall, peak.stop(), (work / "pages.out.jsonl").stat().st_size
    finally:
        server.stop()


# Figure 17's yardstick: "an adaptive limit that halves on 429s", written plainly: a semaphore of -c that
# halves on a 429 and grows by one per answer. Only the rule differs: the sending machinery (Retry-After
# pauses, the stop) is the generator's own, whose AdaptiveLimiter it replaces.
HALVING_GENERATOR = '''
import sys
sys.path.insert(0, sys.argv.pop(1))
import generate_distillation_data as g

class HalvingSemaphore(g.AdaptiveLimiter):
    def __init__(self, start, *args, **kwargs):
        super().__init__(start, *args, **kwargs)
        self.limit = float(start)

    def admit(self, slot):
        slot.admitted = True

    def release(self, slot, answered):
        self.in_flight -= 1
        if answered is g.Answered.OK:
            self.limit = min(float(self.most_in_flight), self.limit + 1)
        elif answered is g.Answered.RATE_LIMITED:
            self.limit = max(1.0, self.limit // 2)
        self._wake()

g.AdaptiveLimiter = HalvingSemaphore
g._exit_for_good(g.main())
'''


def bench_halving(work: Path, n: int, teacher: str) -> tuple[RunResult, RunResult, float]:
    """(the default limiter, the halving semaphore, the teacher's capacity in rollouts/s), the same
    prompts against the same teacher: figure 1's (429 above 8 in flight, 150-250 ms) or figure 8's (a
    token bucket of 20/s, burst 10), from -c 64."""
    halving = work / "halving_generator.py"
    halving.write_text(HALVING_GENERATOR)
    results = []
    for name, program in (("default", (str(ROOT / "generate_distillation_data.py"),)),
                          ("halving", (str(halving), str(ROOT)))):
        server = (FakeTeacher(max_in_flight=8, latency_fn=jittered(0.2, 0.25)) if teacher == "cap" else
                  FakeTeacher(latency_fn=jittered(0.25, 0.2), meter=TokenBucket(20, 10)))
        server.start()
        try:
            results.append(run_generator(work, server, n, 64, tag=f"halving-{teacher}-{name}",
                                         program=program))
        finally:
            server.stop()
    return results[0], results[1], (8 / 0.2 if teacher == "cap" else 20.0)


def bench_shared_teacher(work: Path, n: int, shards: int) -> tuple[RunResult, RunResult, float]:
    """Shards sharing one teacher that answers 429 above 8 in flight (150-250 ms), default settings: (one
    process doing all n prompts, `shards` processes at once doing a shard each, the seconds from SIGTERM to
    exit of a shard stopped mid-run, beside the others, in a third run)."""
    server = FakeTeacher(max_in_flight=8, latency_fn=jittered(0.2, 0.25)).start()
    stopped: list[float] = []

    def stop_one(processes: list) -> None:
        while len(server.answered_at) < n // 3:  # mid-run: a third of the answers in
            time.sleep(0.01)
        # the shard furthest behind: the one whose queue was longest (it crawled at one request a second)
        lines = [sum(1 for _ in open(path)) if (path := work / f"shared-stop.out-{k}.jsonl").exists() else 0
                 for k in range(shards)]
        process = processes[lines.index(min(lines))]
        process.stopped = True
        started = time.monotonic()
        process.send_signal(15)
        process.wait()  # its stderr is read after this: a summary fits in the pipe
        stopped.append(time.monotonic() - started)

    try:
        one = run_generator(work, server, n, 20, tag="shared-one")
        many = run_generator(work, server, n, 20, tag="shared-many", shards=shards)
        run_generator(work, server, n, 20, tag="shared-stop", shards=shards, on_start=stop_one)
    finally:
        server.stop()
    return one, many, stopped[0]


def previous_release(work: Path, rev: str) -> Path:
    """The generator as it was at `rev` (the yardstick of figure 15: the release before its change)."""
    path = work / "previous" / "generate_distillation_data.py"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:generate_distillation_data.py"],
                                    check=True, capture_output=True).stdout)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="abcdefg", help="figure 12: which rows (default: all)")
    parser.add_argument("--tiny", action="store_true", help="a few seconds, for the smoke test")
    parser.add_argument("--previous", default="d22ebe5", help="figure 15's previous release (a git revision; "
                        "default: the last before the paused file's record per answer)")
    parser.add_argument("--only", default="1,2,3,4,5,6,7,8,9,10,12,13,14,15,16,17",
                        help="comma list of figures to run (default: all)")
    args = parser.parse_args()
    only = {int(x) for x in args.only.split(",")}
    scale = 0.02 if args.tiny else 1.0  # tiny: seconds a figure, for the smoke test
    cap, mean = 8, 0.2
    limit = cap / mean
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "trivial_tools.py").write_text(TRIVIAL_TOOLS)

        if only & {1, 3, 5}:
            base = bench_adaptive(work, int(2000 * scale), cap, mean)
        if 1 in only:
            short = bench_adaptive(work, int(400 * scale), cap, mean)
            figures += [Figure("1. adaptive, 400: rollouts/s vs limit C/latency",
                               short.rollouts_per_s / limit,
                               ">= 0.90", short.rollouts_per_s / limit >= 0.90, f"x {limit:.0f}/s"),
                        Figure("1. adaptive, 400: share of requests answered 429", short.rejected_share,
                               "<= 0.03", short.rejected_share <= 0.03),
                        Figure("1. adaptive, 2000: rollouts/s vs limit C/latency",
                               base.rollouts_per_s / limit,
                               ">= 0.95", base.rollouts_per_s / limit >= 0.95, f"x {limit:.0f}/s"),
                        Figure("1. adaptive, 2000: share of requests answered 429", base.rejected_share,
                               "<= 0.01", base.rejected_share <= 0.01),
                        Figure("1. adaptive: duplicates or missing", base.duplicates + short.duplicates,
                               "== 0", base.duplicates + short.duplicates == 0)]

        if only & {2, 3}:
            ours, bare = bench_overhead(work, int(10000 * scale), 64)
        if 2 in only:
            figures.append(Figure("2. overhead: requests/s vs bare aiohttp loop", ours / bare, ">= 0.45",
                                  ours / bare >= 0.45, f"x {bare:.0f}/s"))

        if 3 in only:
            tooled = bench_adaptive(work, int(600 * scale), cap, mean, tools="trivial_tools.py")
            ratio = tooled.requests_per_s / base.requests_per_s
            figures.append(Figure("3. tools: adaptive requests/s vs (1)", ratio, ">= 0.90", ratio >= 0.90))
            ours_tools, bare_tools = bench_overhead(work, int(6000 * scale), 64, tools="trivial_tools.py")
            ratio = (ours_tools / bare_tools) / (ours / bare)
            figures.append(Figure("3. tools: overhead ratio vs (2)", ratio, ">= 0.90", ratio >= 0.90))

        if 4 in only:
            n = int(1_000_000 * (0.01 if args.tiny else 1))
            peak_mb, scan_mb_s, first_request, report_s, report_mb = bench_size(work, n)
            figures += [Figure(f"4. size: peak memory, {n:,} prompts and lines", peak_mb, "< 300",
                               peak_mb < 300, "MB"),
                        Figure("4. size: resume scan, output + paused file", scan_mb_s, ">= 200",
                               scan_mb_s >= 200, "MB/s"),
                        Figure("4. size: start to first request (all but 100 done)", first_request,
                               "", None, "s"),
                        Figure(f"11. report over {n:,} lines: time", report_s, "< 60", report_s < 60, "s"),
                        Figure("11. report: peak memory", report_mb, "< 300", report_mb < 300, "MB")]

        if 5 in only:
            # A slow answer holds one of the teacher's C slots for 20x as long, so the teacher's own limit
            # drops to C / (mean latency of this distribution); compare how close each run gets to its limit.
            tail = bench_adaptive(work, int(2000 * scale), cap, mean, tail=0.01)
            tail_limit = cap / (mean * (0.99 + 0.01 * 20))
            ratio = (tail.rollouts_per_s / tail_limit) / (base.rollouts_per_s / limit)
            figures.append(Figure("5. long tail (1% at 20x): share of its limit vs (1)", ratio, ">= 0.90",
                                  ratio >= 0.90))

        if 6 in only:
            with_cache, without = bench_caching(work, int(200 * scale) or 5)
            figures.append(Figure("6. caching: cost of 6-turn browse rollouts, on/off", with_cache / without,
                                  "<= 0.60", with_cache / without <= 0.60, f"x ${without:.2f}"))

        if 7 in only:
            n, c, latency = (6000, 1000, 5.0) if not args.tiny else (300, 50, 0.5)
            wide = bench_reasoning_scale(work, n, c, latency, strict=not args.tiny)
            figures += [Figure(f"7. {c:,} in flight, 4-6 s: answers/s vs c/latency", wide.steady, ">= 0.90",
                               wide.steady >= 0.90, f"x {c / 5:.0f}/s"),
                        Figure("7. slow start: seconds until -c in flight", wide.ramp, "", None, "s"),
                        Figure(f"7. {n:,} rollouts end to end vs n/(c/5s)+6s", wide.end_to_end, "", None),
                        Figure("7. client CPU (share of one core)", wide.run.cpu_share, "", None),
                        Figure("7. client peak memory", wide.run.peak_mb, "", None, "MB")]
            widest = bench_reasoning_scale(work, *((8000, 2000) if not args.tiny else (400, 100, 0.5)),
                                           strict=not args.tiny)
            figures.append(Figure(f"7. client peak memory at -c {2000 if not args.tiny else 100}",
                                  widest.run.peak_mb, "< 400", widest.run.peak_mb < 400, "MB"))

        if 8 in only:
            rate = 20.0
            bucket = bench_metered(work, int(400 * scale), TokenBucket(rate, 10), 0.25, "bucket")
            figures += [Figure("8. token bucket 20/s: rollouts/s vs its rate", bucket.rollouts_per_s / rate,
                               ">= 0.90", bucket.rollouts_per_s / rate >= 0.90, f"x {rate:.0f}/s"),
                        Figure("8. token bucket: share answered 429", bucket.rejected_share, "<= 0.05",
                               bucket.rejected_share <= 0.05)]
            per, window = 10, 5.0 if not args.tiny else 1.0
            n = 60 if not args.tiny else 20
            fixed = bench_metered(work, n, FixedWindow(per, window), 0.25, "window")
            ideal_span = ((n - 1) // per) * window + 0.25  # from the first window to the last, plus a latency
            figures += [Figure(f"9. fixed window {per}/{window:g}s: vs its rate", ideal_span / fixed.span,
                               ">= 0.90", ideal_span / fixed.span >= 0.90, f"x {per / window:g}/s"),
                        Figure("9. fixed window: prompts failed or missing", fixed.duplicates, "== 0",
                               fixed.duplicates == 0)]

        if 10 in only:
            (work / "trivial_rewards.py").write_text(TRIVIAL_REWARDS)
            plain = bench_adaptive(work, int(2000 * scale), cap, mean)
            judged = bench_adaptive(work, int(2000 * scale), cap, mean,
                                    extra=("--rewards", "trivial_rewards.py"))
            ratio = judged.rollouts_per_s / plain.rollouts_per_s
            figures.append(Figure("10. rewards: rollouts/s scored vs not, as (1)", ratio,
                                  ">= 0.95", ratio >= 0.95))

        if 13 in only:
            for what, chars, event_chars in (("20 MB in one event", 20 << 20, 20 << 20),
                                             ("800k 1-char deltas", 800_000, 1)):
                chars = chars if not args.tiny else chars // 50
                ours, bare = bench_stream_assembly(work, chars, event_chars, 1 if args.tiny else 3)
                figures.append(Figure(f"13. stream, {what}: vs bare aiohttp", ours / bare, "<= 4",
                                      ours / bare <= 4, f"x {bare:.2f}s"))

        if 15 in only:
            previous = previous_release(work, args.previous) if not args.tiny else None  # tiny: ours only
            for n, calls in ((100, 10), (40, 30)) if not args.tiny else ((10, 4),):
                now_wall, now_peak, dataset = bench_paused_file(work, n, calls,
                                                                ROOT / "generate_distillation_data.py")
                if previous is None:
                    figures.append(Figure(f"15. {n} x {calls} calls: paused peak / dataset",
                                          now_peak / dataset, "<= 1.5", now_peak / dataset <= 1.5))
                    continue
                then_wall, then_peak, _ = bench_paused_file(work, n, calls, previous)
                figures += [Figure(f"15. {n} x {calls} calls: paused peak / dataset", now_peak / dataset,
                                   "<= 1.5", now_peak / dataset <= 1.5, f"was {then_peak / dataset:.1f}"),
                            Figure(f"15. {n} x {calls} calls: wall vs previous release", now_wall / then_wall,
                                   "<= 1.05", now_wall / then_wall <= 1.05, f"x {then_wall:.1f}s")]

        if 16 in only:
            n = 200 if not args.tiny else 10
            ratio, batches, paid = bench_batch(work, n, 0.05 if args.tiny else 0.0)
            figures += [Figure(f"16. --batch/live cost, {n} 6-turn browse rollouts", ratio, "<= 0.55",
                               ratio <= 0.55),
                        Figure("16. --batch: batches used (one a turn)", batches, "6", batches == 6),
                        Figure("16. --batch: answers paid / live", paid, "1.00", paid == 1.0)]

        if 17 in only:
            n = 300 if not args.tiny else 40
            one, many, to_exit = bench_shared_teacher(work, n, 4)
            figures += [Figure(f"17. 4 shards, one cap of 8, {n}: wall vs 1 process", many.wall / one.wall,
                               "<= 1.5", many.wall / one.wall <= 1.5 if not args.tiny else None,
                               f"x {one.wall:.1f}s"),
                        Figure("17. 4 shards: share of requests answered 429", many.rejected_share, "",
                               None, f"one: {one.rejected_share:.3f}"),
                        Figure("17. 4 shards: duplicates or missing", many.duplicates + one.duplicates,
                               "== 0", many.duplicates + one.duplicates == 0),
                        Figure("17. a shard stopped mid-run: SIGTERM to exit", to_exit,
                               "< 30", to_exit < 30, "s")]
            for teacher, n in (("cap", 400), ("bucket", 400)):
                n = n if not args.tiny else 20
                default_run, halving_run, capacity = bench_halving(work, n, teacher)
                what = "cap 8" if teacher == "cap" else "20/s bucket"
                figures += [Figure(f"17. {what}: default, share of its capacity",
                                   default_run.rollouts_per_s / capacity, "", None,
                                   f"429 {default_run.rejected_share:.3f}"),
                            Figure(f"17. {what}: halving semaphore, the same",
                                   halving_run.rollouts_per_s / capacity,
                                   "", None, f"429 {halving_run.rejected_share:.3f}")]

        if 14 in only and not args.tiny:  # a real gateway counts real minutes: no tiny version
            run, ideal, sent, refused = bench_gateway(work, 100, 80)
            figures += [Figure("14. LiteLLM rpm 80, 100 tool rollouts: refused", run.rejected_share,
                               "<= 0.10", run.rejected_share <= 0.10, f"{refused}/{sent}"),
                        Figure("14. LiteLLM: duplicates or missing", run.duplicates, "== 0",
                               run.duplicates == 0),
                        Figure("14. LiteLLM: wall time vs its minute windows", ideal / run.wall, "", None,
                               f"x {ideal:.0f}s")]

        if 12 in only:
            for row in rate_control_rows(scale if not args.tiny else 0.05):
                if row.name[2] in args.rows:
                    figures += row.figures(work, args.tiny)

    print(f"| {'figure':<52} | {'value':>21} | {'target':<14} | ok   |")
    print(f"|{'-' * 54}|{'-' * 23}|{'-' * 16}|------|")
    for figure in figures:
        print(figure.row())
    missed = [f.name for f in figures if f.ok is False]
    if missed and not args.tiny:
        print(f"\nmissed: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
