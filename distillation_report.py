"""The dataset report (--report): one self-contained HTML page beside the output.

Imported by generate_distillation_data.py only when --report is given. Statistics stream over the output,
failed and rejected files in one pass each, in bounded memory (exact counts, histograms on fixed bins);
the conversation browser embeds a bounded, stated sample (failed and rejected ones first, then a uniform
sample of the written ones). The page needs no network: its data is JSON inside the page, and its own
small script draws the charts (inline SVG) and the browser with DOM text nodes only, so nothing a
teacher, a tool or a web page wrote can run as script.
"""

from __future__ import annotations

import collections
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

SAMPLE_SIZE = 2000  # conversations embedded in the page
MAX_TEXT = 20000  # characters of one message kept in the page (the rest is cut, and says so)
TOKEN_BINS = [0, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000]
COST_BINS = [0, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1]


def bin_of(value: float, edges: list[float]) -> int:
    """Index of the bin [edges[i], edges[i+1]); the last bin is open-ended."""
    for i in range(len(edges) - 1, -1, -1):
        if value >= edges[i]:
            return i
    return 0


@dataclass
class Histogram:
    edges: list[float]
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.edges)

    def add(self, value: float) -> None:
        self.counts[bin_of(value, self.edges)] += 1


@dataclass
class Stats:
    """Everything the overview and the charts show, kept while streaming."""

    written: int = 0
    failed: int = 0
    rejected: int = 0
    unreadable: int = 0  # lines that are not ours (torn, edited)
    failure_reasons: collections.Counter = field(default_factory=collections.Counter)
    cost: dict = field(default_factory=lambda: {"written": 0.0, "failed": 0.0, "rejected": 0.0})
    # answers whose cost the teacher did not report (usage.uncosted): the cost shown leaves them out
    uncosted: int = 0
    # rollouts whose line carries no cost at all (no usage, or none usable): unknown, not $0
    without_cost: int = 0
    written_without_cost: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    turns: collections.Counter = field(default_factory=collections.Counter)
    # calls per rollout -> rollouts
    tool_calls: collections.Counter = field(default_factory=collections.Counter)
    calls_per_tool: collections.Counter = field(default_factory=collections.Counter)
    prompt_hist: Histogram = field(default_factory=lambda: Histogram(TOKEN_BINS))
    completion_hist: Histogram = field(default_factory=lambda: Histogram(TOKEN_BINS))
    cost_hist: Histogram = field(default_factory=lambda: Histogram(COST_BINS))
    rewards: collections.Counter = field(default_factory=collections.Counter)  # total, to 2 decimals -> lines
    reward_sum: float = 0.0
    scored: int = 0
    min_reward_passed: int = 0  # scored lines in the output (the gate let them through)


@dataclass
class Sample:
    """A bounded sample: every failed and rejected line first (up to the size), then a uniform reservoir
    sample of the written ones for the room left."""

    size: int
    chosen: list = field(default_factory=list)
    written: list = field(default_factory=list)
    seen_written: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def offer(self, state: str, record: dict) -> None:
        if state != "written":
            if len(self.chosen) < self.size:
                self.chosen.append(conversation(state, record))
            return
        self.seen_written += 1
        if len(self.written) < self.size:
            self.written.append(conversation(state, record))
        else:
            slot = self.rng.randrange(self.seen_written)
            if slot < self.size:
                self.written[slot] = conversation(state, record)

    def conversations(self) -> list[dict]:
        return self.chosen + self.written[: max(0, self.size - len(self.chosen))]


def number(value: Any) -> float:
    """A usable number from a file, or 0 (an integer too large for a float, 10**400, too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    try:
        value = float(value)
    except OverflowError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def clip(text: Any) -> str:
    text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    if len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + f"\n[... {len(text) - MAX_TEXT} more characters not shown in the report]"


def function_of(call: Any) -> dict:
    """A tool call's function object; {} for a line whose call is not shaped as one (edited, hostile)."""
    function = call.get("function") if isinstance(call, dict) else None
    return function if isinstance(function, dict) else {}


def messages_of(state: str, record: dict) -> list:
    """A line's messages; for a failed entry that has none (nothing was answered), its prompt."""
    messages = record.get("messages") if isinstance(record.get("messages"), list) else []
    if not messages and state == "failed":
        prompt = record.get("prompt")
        if isinstance(prompt, str):
            return [{"role": "user", "content": prompt}]
        return prompt if isinstance(prompt, list) else []
    return messages


def conversation(state: str, record: dict) -> dict:
    """What the page shows of one line: its messages (long texts cut) and metadata."""
    messages = messages_of(state, record)
    shown = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        item = {"role": str(m.get("role", "")), "content": clip(m.get("content") or "")}
        if m.get("reasoning_content"):
            item["reasoning"] = clip(m["reasoning_content"])
        if m.get("name"):
            item["name"] = str(m["name"])
        calls = m.get("tool_calls") if isinstance(m.get("tool_calls"), list) else []
        item["calls"] = [{"name": str(function_of(c).get("name", "")),
                          "arguments": clip(function_of(c).get("arguments", ""))}
                         for c in calls if isinstance(c, dict)]
        shown.append(item)
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    if state == "failed":  # the failed file's entries carry their fields at the top level
        metadata = {k: v for k, v in record.items() if k not in ("messages",)}
    return {"state": state, "messages": shown,
            "metadata": clip(json.dumps(metadata, ensure_ascii=False, indent=1)),
            "tools": sorted({c["name"] for m in shown for c in m["calls"]})}


def add_rollout(stats: Stats, state: str, record: dict) -> None:
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    usage = (record if state == "failed" else metadata).get("usage")
    usage = usage if isinstance(usage, dict) else {}
    cost = number(usage.get("cost"))
    stats.cost[state] += cost
    stats.uncosted += int(number(usage.get("uncosted")))
    costed = not isinstance(usage.get("cost"), bool) and isinstance(usage.get("cost"), (int, float)) \
        and number(usage["cost"]) >= 0 and number(usage["cost"]) == usage["cost"]
    stats.without_cost += not costed
    stats.written_without_cost += not costed and state == "written"
    prompt, completion = number(usage.get("prompt_tokens")), number(usage.get("completion_tokens"))
    stats.prompt_tokens += int(prompt)
    stats.completion_tokens += int(completion)
    stats.cached_tokens += int(number(usage.get("cached_tokens")))
    if state == "failed":
        stats.failed += 1
        stats.failure_reasons[str(record.get("kind") or record.get("reason") or "unknown")[:80]] += 1
        return
    messages = record.get("messages") if isinstance(record.get("messages"), list) else []
    calls = [c for m in messages if isinstance(m, dict) and isinstance(m.get("tool_calls"), list)
             for c in m["tool_calls"] if isinstance(c, dict)]
    stats.turns[int(number(metadata.get("turns"))) or sum(
        1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")] += 1
    stats.tool_calls[len(calls)] += 1
    for call in calls:
        stats.calls_per_tool[str(function_of(call).get("name", "?"))] += 1
    stats.prompt_hist.add(prompt)
    stats.completion_hist.add(completion)
    stats.cost_hist.add(cost)
    if "reward" in metadata:
        reward = number(metadata.get("reward"))
        stats.scored += 1
        stats.reward_sum += reward
        stats.rewards[round(reward, 2)] += 1
        stats.min_reward_passed += state == "written"
    if state == "written":
        stats.written += 1
    else:
        stats.rejected += 1


Reader = Callable[[Path], Iterator["dict | None"]]


def collect(output: Path, failed: Path, rejected: Path, reader: Reader, sample_size: int = SAMPLE_SIZE
            ) -> tuple[Stats, Sample]:
    """`reader`: the generator's one reader of its files (each line's object, None for one that is not)."""
    stats, sample = Stats(), Sample(sample_size)
    for state, path in (("failed", failed), ("rejected", rejected), ("written", output)):
        for record in reader(path):
            if record is None:
                stats.unreadable += 1
                continue
            add_rollout(stats, state, record)
            sample.offer(state, record)
    return stats, sample


def page_data(stats: Stats, sample: Sample, output: Path, pending: int | None,
              hygiene: dict | None = None) -> dict:
    shown = sample.conversations()
    accepted, rollouts = stats.written, stats.written + stats.failed + stats.rejected
    total_cost = sum(stats.cost.values())
    # a cost no line carries is unknown, never $0: no total when no rollout has one, no cost per accepted
    # sample when an accepted one has none
    total = total_cost if stats.without_cost < rollouts else None
    per_accepted = total_cost / accepted if accepted and not stats.written_without_cost else None
    # --dedup, --decontaminate: prompts dropped before sending, answers quoting a benchmark (None: not
    # checked)
    hygiene_checked = hygiene and (hygiene.get("checked") or hygiene.get("answers_quoting") is not None)
    return {
        "title": f"Dataset report: {output.name}",
        "made": time.strftime("%Y-%m-%d %H:%M"),
        "files": {"output": str(output)},
        # `pending` comes in as the rollouts not finished; the failed ones among them are shown as failed
        "counts": {"written": stats.written, "failed": stats.failed, "rejected": stats.rejected,
                   "pending": None if pending is None else max(0, pending - stats.failed),
                   "unreadable": stats.unreadable},
        "failure_reasons": stats.failure_reasons.most_common(20),
        "cost": {"total": total, **stats.cost, "per_accepted": per_accepted, "uncosted": stats.uncosted,
                 "without_cost": stats.without_cost},
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens,
                   "cached": stats.cached_tokens},
        "charts": [
            {"id": "turns", "title": "Turns per rollout", "bars": sorted(stats.turns.items())},
            {"id": "tool-calls", "title": "Tool calls per rollout", "bars": sorted(stats.tool_calls.items())},
            {"id": "per-tool", "title": "Tool calls per tool", "bars": stats.calls_per_tool.most_common(20)},
            {"id": "prompt-tokens", "title": "Prompt tokens per rollout",
             "bars": labelled(stats.prompt_hist)},
            {"id": "completion-tokens", "title": "Completion tokens per rollout",
             "bars": labelled(stats.completion_hist)},
            {"id": "cost", "title": "Cost per rollout (USD)", "bars": labelled(stats.cost_hist)},
        ] + ([{"id": "reward", "title": "Reward (total) per scored rollout",
               "bars": sorted(stats.rewards.items())}] if stats.scored else []),
        "rewards": {"scored": stats.scored, "mean": stats.reward_sum / stats.scored if stats.scored else None,
                    "pass_rate": stats.min_reward_passed / stats.scored if stats.scored else None},
        "sample": {"shown": len(shown), "of": stats.written + stats.failed + stats.rejected},
        "hygiene": hygiene if hygiene_checked else None,
        "conversations": shown,
    }


def labelled(histogram: Histogram) -> list:
    bars = []
    for i, count in enumerate(histogram.counts):
        low = histogram.edges[i]
        high = histogram.edges[i + 1] if i + 1 < len(histogram.edges) else None
        bars.append([f"{short(low)}-{short(high)}" if high is not None else f"{short(low)}+", count])
    used = [i for i, bar in enumerate(bars) if bar[1]]
    return bars[used[0]: used[-1] + 1] if used else []  # no empty bins outside the ones used


def short(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def finite(value: Any) -> Any:
    """The data with every number that is not finite (a sum of huge costs overflows to inf) as null:
    JSON has no Infinity, and one would leave the page blank."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def script_json(data: dict) -> str:
    """JSON safe inside a <script> element: no `<` at all (so no `</script>` or `<!--`), nor the two line
    separators JavaScript once treated as line ends."""
    text = json.dumps(finite(data), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_report(output: Path, failed: Path, rejected: Path, *, reader: Reader, pending: int | None = None,
                  sample_size: int = SAMPLE_SIZE, hygiene: dict | None = None) -> tuple[str, Stats]:
    """The page's HTML and its statistics. The generator reads its files for it (`reader`) and writes the
    page (with its one atomic-replace helper): the line format has one owner."""
    stats, sample = collect(output, failed, rejected, reader, sample_size)
    return PAGE.replace("/*DATA*/", script_json(page_data(stats, sample, output, pending, hygiene))), stats


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dataset report</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f5f6f8}
header{background:#1d2b3a;color:#fff;padding:14px 24px}header h1{font-size:18px;margin:0}
header p{margin:2px 0 0;color:#b9c6d3;font-size:12px}
main{padding:16px 24px;max-width:1400px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:14px}
.card{background:#fff;border-radius:8px;padding:10px 14px;min-width:120px;box-shadow:0 1px 2px #0001}
.card b{display:block;font-size:20px}.card span{color:#5b6672;font-size:12px}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:10px}
.chart{background:#fff;border-radius:8px;padding:8px 10px;box-shadow:0 1px 2px #0001}
.chart h3{font-size:13px;margin:0 0 4px}svg text{font-size:10px;fill:#3b4652}
section{margin-top:16px}h2{font-size:15px;margin:0 0 8px}
.filters{display:flex;gap:8px;align-items:center;margin-bottom:8px;flex-wrap:wrap}
.filters select,.filters input{font:inherit;padding:4px 6px}
.conv{background:#fff;border-radius:8px;margin-bottom:8px;box-shadow:0 1px 2px #0001}
.conv>summary{padding:8px 12px;cursor:pointer}.conv .body{padding:0 12px 10px}
.state{display:inline-block;border-radius:4px;padding:0 6px;font-size:11px;color:#fff;margin-right:6px}
.written{background:#2f855a}.failed{background:#c53030}.rejected{background:#b7791f}
.msg{border-left:3px solid #cbd2d9;padding:4px 8px;margin:6px 0;white-space:pre-wrap;word-break:break-word}
.msg.user{border-color:#3182ce}.msg.assistant{border-color:#2f855a}.msg.tool{border-color:#805ad5}
.msg.system{border-color:#718096}.role{font-weight:600;font-size:12px;color:#5b6672}
.call{background:#f0f4f8;padding:4px 6px;margin:4px 0;font-family:ui-monospace,monospace;font-size:12px}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f9;padding:6px;font-size:12px}
table{border-collapse:collapse;font-size:13px}td{padding:2px 10px 2px 0}
</style></head>
<body>
<header><h1 id="title"></h1><p id="made"></p></header>
<main>
<div class="cards" id="cards"></div>
<section id="failures-section"><h2>Failures by reason</h2><table id="failures"></table></section>
<section><h2>Distributions</h2><div class="charts" id="charts"></div></section>
<section><h2>Conversations</h2>
<div class="filters">
<label>State <select id="f-state" autocomplete="off"><option value="">all</option><option>written</option><option>failed</option><option>rejected</option></select></label>
<label>Tool <select id="f-tool" autocomplete="off"><option value="">any</option></select></label>
<label>Text <input id="f-text" type="search" autocomplete="off" placeholder="search messages"></label>
<span id="f-count"></span></div>
<p id="sample-note"></p>
<div id="conversations"></div></section>
</main>
<script type="application/json" id="data">/*DATA*/</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
function svg(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = String(text);
  return node;
}
const fmt = n => n === null || n === undefined ? "n/a" : Number(n).toLocaleString("en-US");
const usd = n => n === null || n === undefined ? "n/a" : "$" + Number(n).toFixed(n >= 1 ? 2 : 4);
document.getElementById("title").textContent = D.title;
document.getElementById("made").textContent = "made " + D.made + " from " + D.files.output;
const cards = [
  ["written", D.counts.written, "written (in the output)"], ["failed", D.counts.failed, "failed"],
  ["rejected", D.counts.rejected, "rejected (below --min-reward)"],
  ["pending", D.counts.pending === null ? "n/a" : D.counts.pending, "pending (not run yet)"],
  ["cost", D.cost.total === null ? "unknown" : usd(D.cost.total), D.cost.total === null ? "total cost (no line carries one)" :
   D.cost.uncosted || D.cost.without_cost ? "total cost reported (" + [D.cost.uncosted ? fmt(D.cost.uncosted) + " answers" : "",
   D.cost.without_cost ? fmt(D.cost.without_cost) + " rollouts" : ""].filter(Boolean).join(" and ") + " without a cost: unknown, not counted)" : "total cost"],
  ["cost-per-accepted", usd(D.cost.per_accepted), "per accepted sample"],
  ["prompt-tokens", fmt(D.tokens.prompt), "prompt tokens (" + fmt(D.tokens.cached) + " cached)"],
  ["completion-tokens", fmt(D.tokens.completion), "completion tokens"]];
if (D.hygiene && D.hygiene.checked) {
  cards.push(["dropped-duplicates", fmt(D.hygiene.duplicates), "prompts dropped as repeats (--dedup)"]);
  cards.push(["dropped-benchmark", fmt(D.hygiene.benchmark), "prompts dropped: a benchmark item (--decontaminate)"]);
  if (D.hygiene.kept_in_output)
    cards.push(["kept-benchmark", fmt(D.hygiene.kept_in_output), "in the output, holding a benchmark item"]);
}
if (D.hygiene && D.hygiene.answers_quoting !== null)
  cards.push(["answers-quoting", fmt(D.hygiene.answers_quoting), "lines whose answers quote a benchmark item"]);
if (D.rewards.scored) {
  cards.push(["mean-reward", D.rewards.mean.toFixed(3), "mean reward (" + fmt(D.rewards.scored) + " scored)"]);
  cards.push(["pass-rate", (100 * D.rewards.pass_rate).toFixed(1) + "%", "of scored rollouts kept (not rejected)"]);
}
for (const [id, value, label] of cards)
  document.getElementById("cards").append(el("div", {class: "card"}, el("b", {id: "count-" + id}, typeof value === "number" ? fmt(value) : value), el("span", {}, label)));
if (D.counts.unreadable) document.getElementById("cards").append(el("div", {class: "card"}, el("b", {id: "count-unreadable"}, fmt(D.counts.unreadable)), el("span", {}, "lines not readable (torn or edited)")));
const failures = document.getElementById("failures");
if (!D.failure_reasons.length) document.getElementById("failures-section").hidden = true;
for (const [reason, count] of D.failure_reasons) failures.append(el("tr", {}, el("td", {}, reason), el("td", {}, fmt(count))));
function chart(spec) {
  const W = 300, H = 150, left = 34, bottom = 28, top = 14;
  const box = el("div", {class: "chart", id: "chart-" + spec.id}, el("h3", {}, spec.title));
  const bars = spec.bars, max = Math.max(1, ...bars.map(b => b[1]));
  const s = svg("svg", {viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": spec.title});
  s.append(svg("line", {x1: left, y1: H - bottom, x2: W - 4, y2: H - bottom, stroke: "#8a96a3"}));
  s.append(svg("line", {x1: left, y1: top, x2: left, y2: H - bottom, stroke: "#8a96a3"}));
  s.append(svg("text", {x: left - 4, y: top + 4, "text-anchor": "end"}, fmt(max)));
  s.append(svg("text", {x: left - 4, y: H - bottom, "text-anchor": "end"}, "0"));
  const step = (W - left - 8) / Math.max(1, bars.length), width = Math.max(2, step * 0.8);
  const longest = Math.max(1, ...bars.map(b => String(b[0]).length));
  const every = Math.max(1, Math.ceil(longest * 6 / step));  // labels that would overlap are skipped
  bars.forEach(([label, count], i) => {
    const h = (H - bottom - top) * count / max, x = left + 4 + i * step;
    const bar = svg("rect", {x, y: H - bottom - h, width, height: h, fill: "#3182ce", "data-count": count});
    bar.append(svg("title", {}, label + ": " + fmt(count)));
    s.append(bar);
    if (count) s.append(svg("text", {x: x + width / 2, y: H - bottom - h - 2, "text-anchor": "middle"}, fmt(count)));
    if (i % every === 0) s.append(svg("text", {x: x + width / 2, y: H - bottom + 11, "text-anchor": "middle"}, label));
  });
  if (!bars.length) s.append(svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, "no data"));
  box.append(s);
  return box;
}
for (const spec of D.charts) document.getElementById("charts").append(chart(spec));
document.getElementById("sample-note").textContent = D.sample.shown < D.sample.of
  ? `The browser holds a sample of ${fmt(D.sample.shown)} of the ${fmt(D.sample.of)} rollouts: every failed and rejected one first (as many as fit), then written ones picked at random.`
  : `The browser holds all ${fmt(D.sample.of)} rollouts.`;
const tools = [...new Set(D.conversations.flatMap(c => c.tools))].sort();
for (const t of tools) document.getElementById("f-tool").append(el("option", {}, t));
function folded(text, limit) {
  if (text.length <= limit) return document.createTextNode(text);
  return el("details", {}, el("summary", {}, text.slice(0, 200) + " ... (" + fmt(text.length) + " characters)"), text);
}
function render(conv) {
  const first = conv.messages.find(m => m.role === "user");
  const title = first ? first.content.slice(0, 160) : "(no user message)";
  const body = el("div", {class: "body"});
  for (const m of conv.messages) {
    const box = el("div", {class: "msg " + m.role}, el("div", {class: "role"}, m.role + (m.name ? " (" + m.name + ")" : "")));
    if (m.reasoning) box.append(el("details", {}, el("summary", {}, "reasoning"), m.reasoning));
    if (m.content) box.append(m.role === "tool" ? folded(m.content, 600) : document.createTextNode(m.content));
    for (const c of m.calls) box.append(el("div", {class: "call"}, "call " + c.name + "(" + c.arguments + ")"));
    body.append(box);
  }
  body.append(el("details", {}, el("summary", {}, "metadata"), el("pre", {}, conv.metadata)));
  return el("details", {class: "conv", "data-state": conv.state},
            el("summary", {}, el("span", {class: "state " + conv.state}, conv.state), title), body);
}
const nodes = D.conversations.map(render);
const haystacks = D.conversations.map(c => c.messages.map(m => m.content + " " + (m.reasoning || "") + " " + m.calls.map(x => x.arguments).join(" ")).join(" ").toLowerCase());
const list = document.getElementById("conversations");
for (const n of nodes) list.append(n);
function filter() {
  const state = document.getElementById("f-state").value, tool = document.getElementById("f-tool").value;
  const text = document.getElementById("f-text").value.toLowerCase();
  let shown = 0;
  D.conversations.forEach((c, i) => {
    const ok = (!state || c.state === state) && (!tool || c.tools.includes(tool)) && (!text || haystacks[i].includes(text));
    nodes[i].hidden = !ok;
    shown += ok;
  });
  document.getElementById("f-count").textContent = fmt(shown) + " of " + fmt(D.conversations.length) + " shown";
}
for (const id of ["f-state", "f-tool", "f-text"]) document.getElementById(id).addEventListener("input", filter);
filter();
</script></body></html>
"""  # noqa: E501  (the page as it is served: its lines are the HTML's and the script's, not Python's)
