#!/usr/bin/env python3
"""Turn a file of prompts into an SFT dataset of full teacher conversations, tool calls included.

    python generate_distillation_data.py prompts.jsonl --tools tools.py

Each prompt becomes one rollout: the teacher (any OpenAI-compatible chat-completions API, OpenRouter by
default) answers, calls tools from tools.py, reads their results and answers again until it gives a
final answer. Every finished conversation is appended to train.jsonl as one line the moment it ends.
Re-running the same command resumes: prompts already in the output are skipped, failed ones are retried.

The file reads top-down, in the order the data flows; each section owns one concern, says which in its
banner's first line, and uses only the sections above it:

    Secrets -> Settings -> Files -> config.yml and the environment -> Prompts -> Comparing prompts
    -> Prompt hygiene -> The rnow stand-in -> Tools -> MCP servers -> The toolbox -> Rewards -> Spend
    -> Rate control -> Prompt caching -> HTTP transport -> Reading answers -> Judging answers -> Batches
    -> Batch API -> Teacher client -> The models list -> Rollout -> The dataset line -> Output and resume
    -> Paused and failed files -> Exports -> The dataset card -> Progress and the summary -> Command line
    -> The run -> Main
"""

from __future__ import annotations

import argparse
import array
import asyncio
import bisect
import collections
import contextlib
import contextvars
import dataclasses
import email.utils
import enum
import errno
import fcntl
import functools
import glob
import hashlib
import heapq
import importlib.util
import inspect
import itertools
import json
import logging
import math
import numbers
import os
import random
import re
import resource
import shlex
import signal
import ssl
import stat
import sys
import threading
import time
import traceback
import types
import typing
import unicodedata
import urllib.request
import uuid
import weakref
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Container, Iterable, Iterator, Mapping, NamedTuple
from urllib.parse import quote, unquote, unquote_plus, urlparse

import aiohttp
import orjson
from tqdm import tqdm

# httpx imports its command-line client when rich and click are installed (crawl4ai installs them): a
# tenth of a second of every start, for a program this one never runs. A None entry makes that import
# fail, and httpx then goes without it, as it does where they are missing.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
import httpx  # noqa: E402
from httpx_aiohttp import AiohttpTransport  # noqa: E402  (it imports httpx)

_EXIT_OK, _EXIT_FAILED, _EXIT_USAGE, _EXIT_INTERRUPTED = 0, 1, 2, 130
MB = 1 << 20
# Seconds a timer that comes due (an answer's _Deadline, a tool's or reward's timeout, the stop's bound) first
# lets what already arrived be read: a process suspended past it wakes to the timer before the data beside it
_LOOK_AGAIN = 1.0
_OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
_APP_TITLE = "generate_distillation_data"
_APP_URL = "https://github.com/reinforcenow/off-policy-distillation"


class UsageError(Exception):
    """A mistake in the command line or an input file: reported in one line, exit code 2, nothing sent."""


def _with_each_string(value: Any, change: Callable[[str], str]) -> Any:
    """A JSON value with `change` applied to every string in it (dict values, list items; keys kept)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {key: _with_each_string(item, change) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_each_string(item, change) for item in value]
    return value


_MAX_NESTING = 100  # levels of lists and objects in an input value: orjson writes at most 1,024


def _nesting_depth(value: Any) -> int:
    """How many levels of lists and objects deep a parsed value goes (without recursion)."""
    deepest, level = 0, [(value, 0)]
    while level:
        item, depth = level.pop()
        if isinstance(item, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            if depth <= _MAX_NESTING:  # deep enough to refuse: no need to walk further
                level.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


# Words for messages, used by every part.


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _human_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def _human_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


# ==================================================================================================
# Secrets
# ==================================================================================================
# What must never be shown: the key and every secret the program is handed, found in any text and cut out
# (_Secret).


_MIN_SECRET_LENGTH = 20  # real API keys are longer (OpenRouter's: 73 characters); placeholders are shorter


def _display_url(url: str) -> str:
    """The URL as messages show it: a password in it (http://user:KEY@host/v1) is replaced by ***, and so is a
    user name given alone (http://TOKEN@host/v1: a token, as some gateways take it)."""
    parsed = urlparse(url)
    if "@" not in parsed.netloc:
        return url
    host = parsed.netloc.rpartition("@")[2]
    netloc = f"{parsed.username or ''}:***@{host}" if parsed.password is not None else f"***@{host}"
    return parsed._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class _Secret:
    """The API key (sent in one header) and every other secret the program was handed (_handed_secrets: the
    values of key-like names in .env and the environment, key-like fields of --extra-body, a URL's user
    information, MCP URLs' query values and key-like path parts): taken out of what we store or print. None is
    shown whole: --dry-run shows the key's first 8 and last 4 characters (of a key over 16), to tell which
    key it is."""

    key: str | None
    others: tuple[str, ...] = ()

    @functools.cached_property
    def _patterns(self) -> tuple[tuple[str, ...], re.Pattern | None, re.Pattern | None,
                                 tuple[bytes, ...], re.Pattern | None, re.Pattern | None]:
        """What to look for and the pattern that cuts it out, in plain text and in JSON text (where a secret
        holding a quote or a backslash reads escaped); and for each, a pattern for the secret written with
        JSON escapes (\\u0073...), which a JSON decoder (a trainer reading tool-call arguments, an export)
        would turn back into the secret. Only real secrets: a placeholder a local server accepts (EMPTY,
        ollama, sk-1234) is shorter than _MIN_SECRET_LENGTH, and taking it out of text would corrupt it. A
        key's part after a public prefix (sk-or-v1-...) is a secret on its own. A secret longer than 24
        characters is also cut where a text quotes its first 16 and goes on in letters, digits, '-' or '_' (a
        teacher that cut it short)."""
        forms = {part for s in (self.key, *self.others) if s for part in _secret_parts(s)}
        secrets = sorted((s for s in forms if len(s) >= _MIN_SECRET_LENGTH), key=len, reverse=True)
        if not secrets:
            return (), None, None, (), None, None

        def pattern(encode: Callable[[str], str]) -> tuple[list[str], str]:
            wholes = [encode(secret) for secret in secrets]
            prefixes = [encode(secret[:16]) for secret in secrets if len(secret) > 24]
            pattern = "|".join([*map(re.escape, wholes), *(re.escape(p) + r"[\w-]*" for p in prefixes)])
            return [*prefixes, *(w for w, s in zip(wholes, secrets) if len(s) <= 24)], pattern

        def escaped(in_json: bool) -> str:
            return "|".join([*(_escaped_pattern(secret, in_json) for secret in secrets),
                             *(_escaped_pattern(secret[:16], in_json) + _ESCAPED_GOES_ON[in_json]
                               for secret in secrets if len(secret) > 24)])

        plain, plain_pattern = pattern(lambda text: text)
        in_json, json_pattern = pattern(lambda text: orjson.dumps(text).decode()[1:-1])
        return (tuple(plain), re.compile(plain_pattern), re.compile(escaped(False)),
                tuple(n.encode() for n in in_json), re.compile(json_pattern.encode()),
                re.compile(escaped(True).encode()))

    def redact(self, text: str) -> str:
        """Every secret out of a text that came from outside (the teacher, a tool, a reward, an MCP server,
        a URL), before any cut, so no piece of it survives; written with JSON escapes too."""
        needles, pattern, escaped, _, _, _ = self._patterns
        if pattern is None or not text:
            return text
        if any(needle in text for needle in needles):
            text = pattern.sub("***", text)
        if "\\u" in text or "\\/" in text:
            text = escaped.sub("***", text)
        return text

    def scrub(self, value: Any) -> Any:
        """`redact` applied to every string of a JSON value, however deep (a message, its tool calls' ids
        and names, reasoning details, a model name): the one way what came from outside reaches a file or
        the terminal. The value is encoded once, and only one that holds a secret is rewritten."""
        if isinstance(value, str):
            return self.redact(value)
        _, _, _, needles, pattern, escaped = self._patterns
        if pattern is None:
            return value
        try:
            text = orjson.dumps(value)
        except (orjson.JSONEncodeError, TypeError):  # not JSON (a lone surrogate): string by string
            return _with_each_string(value, self.redact)
        found = any(needle in text for needle in needles)
        written_escaped = b"\\\\u" in text or b"\\\\/" in text  # a backslash in a string reads doubled
        if not (found or written_escaped):
            return value
        scrubbed = pattern.sub(b"***", text) if found else text
        scrubbed = escaped.sub(b"***", scrubbed) if written_escaped else scrubbed
        if scrubbed == text:
            return value
        try:
            return orjson.loads(scrubbed)
        # cannot happen with whole escapes cut; never let one through if it does
        except orjson.JSONDecodeError:
            return _with_each_string(value, self.redact)


# The public beginnings of API keys (OpenRouter's, OpenAI's, Anthropic's, Groq's, xAI's, Hugging Face's,
# GitHub's, GitLab's, Perplexity's, Tavily's, NVIDIA's, Replicate's, Cerebras's, Fireworks', Google's): what
# follows is the secret, and a text that quotes it without its prefix still holds the key.
_PUBLIC_KEY_PREFIXES = sorted(("sk-or-v1-", "sk-or-", "sk-ant-api03-", "sk-ant-admin01-", "sk-ant-",
                               "sk-proj-", "sk-svcacct-", "sk-admin-", "sk-", "gsk_", "xai-", "hf_", "ghp_",
                               "gho_", "ghs_", "github_pat_", "glpat-", "pplx-", "tvly-", "nvapi-", "r8_",
                               "csk-", "fw_", "AIza"), key=len, reverse=True)


def _secret_parts(secret: str) -> tuple[str, ...]:
    """The secret, and its part after a known public prefix (which the minimum length then judges alone)."""
    prefix = next((p for p in _PUBLIC_KEY_PREFIXES if secret.startswith(p)), "")
    return (secret, secret[len(prefix):]) if prefix else (secret,)


def _escaped_pattern(secret: str, in_json: bool) -> str:
    """A pattern for the secret with any of its characters written as a JSON escape (\\uXXXX in either case,
    \\/ for a slash); `in_json`: as it reads inside a JSON string, where each backslash is doubled."""
    backslash = r"\\\\" if in_json else r"\\"
    parts = []
    for char in secret:
        plain = orjson.dumps(char).decode()[1:-1] if in_json else char
        code = "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{ord(char):04x}")
        alternatives = [re.escape(plain), backslash + "u" + code] + ([backslash + "/"] if char == "/" else [])
        parts.append("(?:" + "|".join(alternatives) + ")")
    return "".join(parts)


_ESCAPED_GOES_ON = {False: r"(?:[\w-]|\\u[0-9a-fA-F]{4})*", True: r"(?:[\w-]|\\\\u[0-9a-fA-F]{4})*"}


_KEY_LIKE = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|AUTH", re.IGNORECASE)


def _handed_secrets(extra_body: dict, urls: Iterable[str], query_urls: Iterable[str] = ()) -> tuple[str, ...]:
    """Every secret the program was handed besides OPENROUTER_API_KEY, to be taken out of whatever it writes
    or prints (_Secret): the values of key-like names (KEY, TOKEN, SECRET, PASSWORD, AUTH) in .env and the
    environment, but not a URL's (a base URL is no secret: only its user information is) nor a path's (a
    socket, a file); the strings under key-like fields of --extra-body ("Bearer X" gives X too); the user
    information of each URL; and, of `query_urls` (MCP servers: Tavily's key travels in the query, Zapier's
    in the path), every query value, the fragment and each key-like part of the path. A URL's parts as
    written and percent-decoded (what is sent: a password's "%2F" is "/" in the Basic header). What is too
    short to be a real secret is left to _Secret's minimum length."""
    from dotenv import dotenv_values

    named = dict(os.environ)
    if Path(".env").is_file():
        named.update({k: v for k, v in dotenv_values(".env").items() if v is not None})
    found: list[str] = []
    for name, value in named.items():
        if not _KEY_LIKE.search(name) or not value:
            continue
        if urlparse(value).scheme in ("http", "https"):
            urls = [*urls, value]
        elif not (value.startswith("/") and os.path.exists(value)):
            found.append(value)
    found += _key_like_fields(extra_body)
    for url in [*urls, *query_urls]:
        found += _user_information(url)
    for url in query_urls:
        found += _secrets_beyond_the_host(url)
    found += [part.rpartition(" ")[2] for part in found
              if part.lower().startswith(("bearer ", "basic ", "token "))]
    found += [decoded for part in found for decode in (unquote, unquote_plus)
              if (decoded := decode(part)) != part]
    return tuple(dict.fromkeys(found))


def _user_information(url: str) -> list[str]:
    parsed = urlparse(url)
    return [part for part in (parsed.username, parsed.password) if part]


def _secrets_beyond_the_host(url: str) -> list[str]:
    """An MCP URL's query values, its fragment (and the values in it) and the parts of its path that look like
    keys: where servers take a key."""
    parsed = urlparse(url)
    pairs = [*parsed.query.split("&"), *parsed.fragment.split("&")]
    return ([value for pair in pairs if (value := pair.partition("=")[2])]
            + ([parsed.fragment] if parsed.fragment else [])
            + [part for part in parsed.path.split("/") if _looks_like_key(part)])


def _looks_like_key(text: str) -> bool:
    """A URL's path part that is a key rather than a name: as long as a real secret, letters and digits
    mixed."""
    return (len(text) >= _MIN_SECRET_LENGTH and any(c.isdigit() for c in text)
            and any(c.isalpha() for c in text))


def _key_like_fields(value: Any, under_key: bool = False) -> list[str]:
    """The strings of a JSON value that sit under a key-like name, however deep."""
    if isinstance(value, str):
        return [value] if under_key else []
    if isinstance(value, dict):
        return [s for name, item in value.items()
                for s in _key_like_fields(item, under_key or bool(_KEY_LIKE.search(str(name))))]
    if isinstance(value, list):
        return [s for item in value for s in _key_like_fields(item, under_key)]
    return []


def _masked_key_like(value: Any, under_key: bool = False) -> Any:
    """A JSON value to show (--dry-run, the runs file): what sits under a key-like name is ***, however
    short."""
    if isinstance(value, str):
        return "***" if under_key else value
    if isinstance(value, dict):
        return {name: _masked_key_like(item, under_key or bool(_KEY_LIKE.search(str(name))))
                for name, item in value.items()}
    if isinstance(value, list):
        return [_masked_key_like(item, under_key) for item in value]
    return value


def _secret_free_url(url: str) -> str:
    """_display_url's (no password), with the query's values, the fragment and the key-like parts of the
    path as *** too (_handed_secrets' secrets of an MCP URL)."""
    parts = urlparse(_display_url(url))
    query = "&".join(f"{pair.split('=', 1)[0]}=***" if "=" in pair
                     else pair for pair in parts.query.split("&"))
    path = "/".join("***" if _looks_like_key(part) else part for part in parts.path.split("/"))
    return parts._replace(query=query if parts.query else "", path=path,
                          fragment="***" if parts.fragment else "").geturl()


# ==================================================================================================
# Settings
# ==================================================================================================
# One small frozen settings object per part, each field the default of its flag (Command line fills them).


# Each part of the program gets the settings it uses, one small frozen object per part, so a flag's reach
# shows in the signatures: PromptSettings (which rollouts), TeacherSettings (the client), RequestSettings
# (the rollout's requests), ToolSettings, GateSettings (rewards, attempts, spend), LineFormat (the dataset
# line, in its own section), OutputPaths. Config (Command line) holds them; only where the run is assembled
# or described is it taken whole.


@dataclass(frozen=True)
class _Recorded:
    """A setting that shapes the data: the runs file keeps it in `part` of each run's record (RECORD_PARTS),
    and the dataset card shows it under `label` (None: kept, not shown). `view`: one that may hold a secret or
    a folder is kept as messages show it (_RECORDED_VIEWS, in Command line: url, masked, servers, name)."""

    part: str
    label: str | None = None
    view: str | None = None


def _recorded(default: Any = dataclasses.MISSING, *, part: str, label: str | None = None,
              view: str | None = None,
              default_factory: Any = dataclasses.MISSING) -> Any:
    """A settings field with its _Recorded mark: the run record and the card read the marks (recorded_fields),
    so a setting that shapes the data is named for them here and nowhere else."""
    mark = _Recorded(part, label, view)
    return field(default=default, default_factory=default_factory, metadata={"recorded": mark})


@dataclass(frozen=True)
class PromptSettings:
    """Which rollouts the command asks for (iter_jobs, Plan)."""

    input: Path
    # put before every prompt that has no system message of its own
    system: str | None = _recorded(None, part="rollout", label="system prompt (--system)")
    num: int | None = None  # only the first N prompts
    shard: tuple[int, int] | None = None  # (I, N): only shard I of N
    samples: int = _recorded(1, part="prompts")  # rollouts per prompt
    # --batch: the Batch API takes text only; a prompt with an image or file part is refused
    text_only: bool = False


@dataclass(frozen=True)
class _HygieneSettings:
    """Which prompts are dropped before anything is sent (Prompt hygiene: --dedup, --decontaminate)."""

    dedup: bool = False  # drop exact and near duplicates of earlier prompts
    threshold: float = 0.9  # near duplicates share at least this share of their distinct words (Jaccard)
    benchmarks: tuple[Path, ...] = ()  # --decontaminate: benchmark files (or folders of them)
    text_field: str = "question"  # the text of a JSONL benchmark's item
    ngram: int = 13  # words in a row a prompt must share with an item (lm-evaluation-harness's default)

    @property
    def active(self) -> bool:
        return self.dedup or bool(self.benchmarks)


@dataclass(frozen=True)
class TeacherSettings:
    """How requests reach the teacher (TeacherClient, AdaptiveLimiter)."""

    secret: _Secret
    base_url: str = _recorded(_OPENROUTER_BASE_URL, part="teacher", view="url")
    concurrency: int = 20  # most requests in flight
    start_concurrency: int = 4  # slow start: requests in flight at first, growing as the teacher takes them
    timeout: float = 600.0  # seconds one request may take, first byte to last
    retries: int = 8
    backoff: float = 1.0  # seconds before the first retry; doubles, with jitter, up to 60
    max_answer_bytes: int = 64 << 20  # an answer larger than this, decoded, fails its prompt (no retry)
    stall_timeout: float = 300.0  # a streamed answer with no data event for this long is retried
    # At a stop by a signal, seconds the answers in flight are waited for; then they are given up (and paid
    # again next run). Inside the 30 s a cluster gives between SIGTERM and SIGKILL (SLURM's KillWait, a
    # pod's grace period), so the summary and the paused file are written before the kill.
    stop_timeout: float = 20.0
    # every request through OpenRouter's Batch API: about half the price, hours a turn
    batch: bool = _recorded(False, part="teacher", label="Batch API")
    batch_poll: float = 30.0  # seconds between looks at a batch in progress

    @property
    def sends_key(self) -> bool:
        """Whether requests carry the key (Authorization: Bearer). A base URL with user information
        (http://user:PASSWORD@host/v1, http://TOKEN@host/v1) authenticates with that instead (HTTP Basic, as
        every HTTP client sends it), and the key is not sent to it: a request carries one Authorization."""
        return bool(self.secret.key) and "@" not in urlparse(self.base_url).netloc

    @property
    def rollout_pool_size(self) -> int:
        # Twice the request limit, so rollouts busy running tools never leave a request slot idle. In batch
        # mode a batch gathers the next turn of every rollout in progress: as many as a batch may carry.
        return max(self.concurrency * 2, _BATCH_MOST_REQUESTS) if self.batch else self.concurrency * 2


# requests a batch carries at most (fewer when long answers could pass the size cap)
_BATCH_MOST_REQUESTS = 1000


@dataclass(frozen=True)
class RequestSettings:
    """What each request asks for, and how long a rollout may go on (RolloutRunner)."""

    model: str = _recorded("openai/gpt-4o-mini", part="teacher", label="teacher model")
    max_tokens: int = _recorded(2048, part="teacher", label="max tokens an answer")
    max_turns: int = _recorded(10, part="rollout", label="max turns")  # also config.yml's rollout.max_turns
    temperature: float = _recorded(0.7, part="teacher", label="temperature")
    reasoning: dict | None = _recorded(None, part="teacher", label="reasoning")
    extra_body: dict = _recorded(default_factory=dict, part="teacher", label="extra request body",
                                 view="masked")
    cache: str = "auto"  # prompt caching: auto, on, off
    cache_ttl: str | None = None  # "5m" or "1h"; None: the provider's default (5 minutes)
    stream: bool = True  # ask for server-sent events: a long answer is never a silent connection
    # OpenRouter cuts the middle out of a prompt too long for the model (its context-compression plugin, on
    # by default for models of 8k context or less): the teacher would answer a conversation other than the
    # one the dataset holds. Asked off, so such a rollout fails with that reason instead.
    no_compression: bool = False
    # OpenRouter's provider.enforce_distillable_text: only models whose authors allow training on their
    # outputs
    distillable: bool = _recorded(False, part="teacher")  # the card says it with the teacher's licence


@dataclass(frozen=True)
class ToolSettings:
    """tools.py and how its calls run (ToolBox)."""

    file: Path | None = Path("tools.py")  # None: no tools file (--tools none, or MCP servers' tools alone)
    timeout: float = 60.0  # also config.yml's rollout.tool_timeout
    concurrency: int = 16
    max_chars: int = 20000  # longer results are cut, with a visible marker; config.yml's max_tool_response
    # MCP servers whose tools join tools.py's
    mcp: tuple[McpSpec, ...] = _recorded((), part="rollout", view="servers")


@dataclass(frozen=True)
class GateSettings:
    """Which finished rollouts the output takes, and what the run may spend (Run, RewardScorer, _rescore)."""

    # rewards.py: every finished rollout is scored
    rewards: Path | None = _recorded(None, part="gate", label="rewards", view="name")
    reward_timeout: float = 60.0
    # below it, a rollout goes to the rejected file
    min_reward: float | None = _recorded(None, part="gate", label="min reward")
    # rollouts tried per prompt (and sample) until one reaches --min-reward
    attempts: int = _recorded(1, part="gate", label="attempts")
    # also write rollouts cut by --max-turns, length or content filter
    keep_incomplete: bool = _recorded(False, part="gate", label="cut-short rollouts kept (--keep-incomplete)")
    max_cost: float | None = None  # USD: start nothing new once this run's spend reaches it


@dataclass(frozen=True)
class OutputPaths:
    """The output and the files beside it."""

    output: Path = Path("train.jsonl")

    def beside(self, suffix: str) -> Path:
        return self.output.with_name(self.output.stem + suffix)

    @property
    def failed(self) -> Path:
        return self.beside(".failed.jsonl")

    @property
    def rejected(self) -> Path:
        return self.beside(".rejected.jsonl")

    @property
    def quarantine(self) -> Path:
        return self.beside(".quarantine.jsonl")

    @property
    def paused(self) -> Path:
        """The turns so far of rollouts in progress: a stopped run continues them, paying no answer twice."""
        return self.beside(".paused.jsonl")

    @property
    def batches(self) -> Path:
        """--batch: the batches sent and not yet done with, so a run that stops finds them again."""
        return self.beside(".batches.jsonl")

    @property
    def runs(self) -> Path:
        """A record of each run as it started: what the dataset card says of the settings."""
        return self.beside(".runs.jsonl")

    @property
    def dropped(self) -> Path:
        """--dedup, --decontaminate: the prompts dropped before anything was sent, and why."""
        return self.beside(".dropped.jsonl")

    @property
    def quoting(self) -> Path:
        """--decontaminate at --export and --report: the lines whose answers quote a benchmark item."""
        return self.beside(".benchmark-answers.jsonl")

    @property
    def mcp_tools(self) -> Path:
        """The MCP tools' schemas the run used: --export --no-run needs them without the servers."""
        return self.beside(".mcp-tools.json")

    @property
    def mcp_log(self) -> Path:
        """What stdio MCP servers write to their stderr."""
        return self.beside(".mcp.log")

    def export(self, fmt: str) -> Path:
        """--export: the output in another trainer's format (hf, openai)."""
        return self.beside(f".{fmt}.jsonl")

    @property
    def card(self) -> Path:
        """The dataset card beside the hf export. Not README.md: the project folder has its own README (this
        repository's, or an rnow template's), which the card must not overwrite; upload it as README.md."""
        return self.beside(".hf.README.md")

    @property
    def report(self) -> Path:
        """--report: one self-contained page."""
        return self.beside(".report.html")

    @property
    def side_files(self) -> dict[Path, str]:
        """Every file of ours beside the output, with what it is: each must be a regular file."""
        return {self.failed: "the failed file", self.rejected: "the rejected file",
                self.quarantine: "the quarantine file", self.paused: "the paused file",
                self.runs: "the runs file",
                self.batches: "the batches file", self.mcp_tools: "the MCP tools file",
                self.mcp_log: "the MCP log",
                self.dropped: "the dropped-prompts file", self.quoting: "the benchmark-answers file",
                **{self.export(fmt): f"the {fmt} export" for fmt in ("hf", "openai")},
                self.card: "the dataset card", self.report: "the report"}


# The parts of a run's record that hold settings (the card shows theirs in this order); and the settings
# objects with fields marked _recorded, in the order each part lists them.
RECORD_PARTS = ("prompts", "teacher", "rollout", "gate")
_RECORDED_SETTINGS = (RequestSettings, TeacherSettings, PromptSettings, ToolSettings, GateSettings)


def recorded_fields() -> list[tuple[type, str, _Recorded]]:
    """Every setting the runs file records: its settings object, its name, and how (_Recorded), part by
    part."""
    marked = [(kind, f.name, f.metadata["recorded"])
              for kind in _RECORDED_SETTINGS for f in dataclasses.fields(kind) if "recorded" in f.metadata]
    return sorted(marked, key=lambda item: RECORD_PARTS.index(item[2].part))


def _shard_pattern(output: Path | None, spec: Any) -> Path | None:
    """The name every shard's output follows, `{shard}` standing for I-of-N (in the file's name or a folder's:
    out/{shard}/train.jsonl); None when --output names one file for all. With --shard auto the default
    output is per shard, since the tasks of an array usually share one file system."""
    if output is not None:
        return output if "{shard}" in str(output) else None
    base = default(OutputPaths, "output")
    return base.with_name(f"{base.stem}.shard-{{shard}}{base.suffix}") if spec[0] == "auto" else None


def _shard_output(output: Path | None, shard: tuple[int, int] | None, spec: Any) -> Path:
    """The output: `{shard}` in --output becomes I-of-N (a folder named so is made when the run opens it)."""
    pattern = _shard_pattern(output, spec) if shard is not None else None
    if pattern is None:
        return output or default(OutputPaths, "output")
    return _shard_path(pattern, f"{shard[0]}-of-{shard[1]}")


def _shard_path(pattern: Path, shard: str) -> Path:
    return Path(str(pattern).replace("{shard}", shard))


def _check_regular_file(path: Path, what: str, why: str = "which this tool writes and reads back",
                       instead: str = "Move it away (it is not one of this tool's files), or pass "
                                      "another --output.") -> None:
    """Our files are appended to, scanned and replaced: a FIFO would block, /dev/zero never ends, /dev/full
    refuses every write. Refuse anything that exists and is not a regular file (after symlinks)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise UsageError(f"{path}: cannot use it as {what}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise UsageError(f"{path}: cannot open {what}: it is {kind}, and {what} must be a regular file, "
                         f"{why}. {instead}")


def default(settings: type, name: str) -> Any:
    """A setting's default: the field of its settings object, the one place it lives. Flags read it (their
    help shows it as %(default)s), and so does config.yml's rollout block when the flag is not given."""
    return next(f.default for f in dataclasses.fields(settings) if f.name == name)


@dataclass(frozen=True)
class McpSpec:
    """One MCP server: a streamable-HTTP URL, or a command line run over stdio."""

    target: str

    @property
    def is_url(self) -> bool:
        return self.target.startswith(("http://", "https://"))

    @property
    def shown(self) -> str:
        """What messages show: a URL's password and query values (Tavily's key travels there) as ***."""
        return _secret_free_url(self.target) if self.is_url else self.target


# ==================================================================================================
# Files
# ==================================================================================================
# Files of ours on disk: written private, replaced atomically, read line by line; what a failed write raises.


_UTF8_BOM = b"\xef\xbb\xbf"


class LineReader:
    """Reads a file of ours: lines (without their newline) in batches of a 4 MB read each, ~3x faster than
    line by line at a million lines. A UTF-8 BOM at the start is dropped (`bom` says there was one); a last
    line without its newline comes last, alone, once `unterminated` is set."""

    def __init__(self, path: Path, chunk_size: int = 1 << 22):
        self.path, self.chunk_size = path, chunk_size
        self.bom = False
        self.unterminated: bytes | None = None  # the last line, when the file does not end with a newline

    def batches(self) -> Iterator[list[bytes]]:
        """Raises FileNotFoundError (or another OSError) as open() does."""
        with open(self.path, "rb") as f:
            carry = f.read(len(_UTF8_BOM))
            if carry == _UTF8_BOM:
                carry, self.bom = b"", True
            while chunk := f.read(self.chunk_size):
                lines = (carry + chunk).split(b"\n")
                carry = lines.pop()
                yield lines
            if carry:
                self.unterminated = carry
                yield [carry]

    def lines(self) -> Iterator[bytes]:
        """Each line, unparsed (for a rewrite that copies lines); nothing for a missing file."""
        try:
            for lines in self.batches():
                yield from lines
        except FileNotFoundError:
            return

    def records(self) -> Iterator[tuple[bytes, dict | None]]:
        """(line, its JSON object or None when it is not one) for each line; nothing for a missing file."""
        for line in self.lines():
            yield line, parse_line(line)


def parse_line(line: bytes) -> dict | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


@contextlib.contextmanager
def replaced_atomically(path: Path, like: Path | None = None) -> Iterator[Any]:
    """Write a new version of `path`: the with-block writes a temporary file beside the real file (through
    any symlink, so a link stays a link and its target is what changes), which is flushed to disk and then
    renamed over it. A crash or an error midway leaves the old file whole and no temporary behind. The new
    version keeps the old one's mode (a 0600 output stays 0600); a new file is no more readable than `like`,
    the output it belongs to. While it is written, only its owner can read it."""
    target = Path(os.path.realpath(path))
    temporary = _temporary_beside(target)
    try:
        with _open_private(temporary) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), _file_mode_for(target, like))
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _temporary_beside(target: Path) -> Path:
    """A name for a rewrite's temporary beside `target`, unique to this process and this rewrite: the PID (so
    a later run knows whose it was) and a random part (in a container every run may be PID 1)."""
    return target.with_name(f".{target.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")


def _open_private(path: Path) -> Any:
    """A new file, for writing, that only its owner may read until _file_mode_for's mode is given to it."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb")


def _file_mode_for(target: Path, like: Path | None = None) -> int:
    """The permissions a new version of `target` gets: the old version's; for a new file, what the umask
    gives, and no more than `like` (the output) has, so the side files of a private output are private."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask() & _mode_or_all(like)


def _create_like(path: Path, like: Path | None) -> None:
    """Create `path`, if it does not exist, as private as `like` (for a file a library appends to)."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                         0o644 & _mode_or_all(like)))


def _mode_or_all(path: Path | None) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode) if path is not None else 0o777
    except OSError:
        return 0o777


def _umask() -> int:
    try:  # Linux says it without changing it (os.umask would, for a moment, under every thread)
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


_TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)(?:-[0-9a-f]+)?\.tmp")


def _remove_stale_temporaries(output: Path) -> None:
    """Remove the temporaries replaced_atomically left beside the output's files when a kill -9 came
    midway (a compaction's copy of the paused conversations, a rewrite of the output): those whose
    process is gone. Only files named as ours, for files of this output (<stem>, <stem>.*)."""
    folder = Path(os.path.realpath(output)).parent
    stem = output.stem
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.name.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        match = _TEMPORARY_NAME.fullmatch(name)
        if match is None or not (match["name"] == output.name or match["name"].startswith(stem + ".")):
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            (folder / name).unlink()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's, or not a pid at all: not ours to judge
    return True


def _remove_file(path: Path) -> None:
    """Remove a file of ours that is left empty; through a symlink, the file, not the link."""
    Path(os.path.realpath(path)).unlink()


class OutputError(Exception):
    """A file of ours cannot be written (full disk, quota, file size limit, permissions)."""

    # What the user does about it: every message saying a file of ours could not be written ends so.
    WHAT_TO_DO = "free space (or fix the cause), then re-run the same command"

    def __init__(self, path: Path, error: OSError):
        super().__init__(f"cannot write {path}: {error.strerror or error}")
        self.path, self.error = path, error


# ==================================================================================================
# config.yml and the environment
# ==================================================================================================
# rnow's config.yml rollout block, .env, the base URL, --extra-body and the scheduler's shard: what the
# settings read from outside the command line.


# rnow's config.yml: its `rollout` block gives defaults here, so one config serves distillation and RL.
# Only keys present count (rnow's own default max_turns of 1 would cut every tool rollout); flags win.
_ROLLOUT_KEYS = ("max_turns", "tool_timeout", "reward_timeout", "max_tool_response", "reasoning_mode",
                 "mcp_url")
_REASONING_MODES = ["disabled", "none", "minimal", "low", "medium", "high", "xhigh"]
# rnow's max_tool_response counts tokens (and cuts without a marker); here results are cut by characters,
# with a marker: 4 characters a token, the usual average for English text and code.
_CHARS_PER_TOKEN = 4


_MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class _RnowProject:
    """config.yml as `rnow run` reads it: the file, and whether it already names the project (rnow refuses to
    run without a project_id, and `rnow init`, which makes one, overwrites the folder's files)."""

    config: Path
    needs_id: bool  # an rnow project config (it has dataset_type) without a project_id


def _read_rollout_config(path: Path | None) -> tuple[dict, _RnowProject | None]:
    """The `rollout` block of config.yml (--config, else ./config.yml if present): {} when there is none;
    and the rnow project the file describes (None without a config.yml)."""
    explicit = path is not None
    path = path or Path("config.yml")
    if not path.is_file():
        if explicit:
            raise UsageError(f"--config {path}: no such file")
        return {}, None
    import yaml  # rnow's own format; pyyaml comes with rnow, and is in requirements.txt

    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise UsageError(f"{path}: {path.stat().st_size:,} bytes, where a config.yml is a few hundred; "
                             f"no config needs more than {_MAX_CONFIG_BYTES:,}. Pass --config the right "
                             "file.")
        text = path.read_text(encoding="utf-8-sig")
        # libyaml's parser where pyyaml has it: it refuses deep nesting at once, where the pure-Python one
        # takes seconds over a 5,000-deep flow list before it fails
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        for event in yaml.parse(text, Loader=loader):  # refused before anything is built from it
            if isinstance(event, yaml.AliasEvent):
                raise UsageError(f"{path}:{event.start_mark.line + 1}: uses a YAML alias "
                                 f"(*{str(event.anchor)[:40]}); aliases can expand without bound, and no "
                                 "config needs one: write the value out.")
        data = yaml.load(text, Loader=loader)
        if _nesting_depth(data) > _MAX_NESTING:
            raise RecursionError
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        where = getattr(getattr(e, "problem_mark", None), "line", None)
        problem = str(getattr(e, "problem", None) or e)[:200]
        raise UsageError(f"{path}{f':{where + 1}' if where is not None else ''}: cannot read it as YAML "
                         f"({problem}). Fix it, or pass --config another file.") from None
    except RecursionError:
        raise UsageError(f"{path}: nested too deeply (more than {_MAX_NESTING} levels); no config needs "
                         "that. Fix it, or pass --config another file.") from None
    project = _RnowProject(path, isinstance(data, dict) and "dataset_type" in data
                           and not data.get("project_id"))
    rollout = data.get("rollout") if isinstance(data, dict) else None
    if rollout is None:
        return {}, project
    if not isinstance(rollout, dict):
        raise UsageError(f"{path}: `rollout` must be a mapping of settings")
    given = {key: (rollout[key], path) for key in _ROLLOUT_KEYS
             if key in rollout and rollout[key] is not None}
    return given, project


_PROJECT_ID_NOTE = ("# rnow run needs a project id. `rnow init` makes one, but it also copies its template "
                    "over this\n# folder (train.jsonl and config.yml included): never run it here. Added by "
                    "generate_distillation_data.py.\n")


def _give_project_id(config: Path) -> str | None:
    """Give config.yml the project_id `rnow run` needs, as `rnow init` would make it (a random UUID), so the
    folder trains with nothing but `rnow login`. One id, whatever starts at once (the tasks of a job array in
    one folder): under a lock on the file, it is read again, and only a run that still finds no id writes
    one (the others say nothing). An empty `project_id:` is filled in; else the key is added
    (_with_project_id). The rest is kept byte for byte (line ends and a BOM included), and the result is
    checked to read as the same settings plus the id before it replaces the file: a file it cannot be added to
    safely is left as it is, and the note says how to add it by hand. None: another run gave it one
    meanwhile."""
    import yaml

    project_id = str(uuid.uuid4())
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    advice = f'Give its top-level mapping the key `project_id: "{project_id}"`'
    try:
        with _locked(config):
            text = config.read_bytes().decode("utf-8")
            bom, text = ("\ufeff", text[1:]) if text.startswith("\ufeff") else ("", text)
            before = yaml.load(text, Loader=loader)
            if isinstance(before, dict) and before.get("project_id"):
                return None
            new_text, advice = _with_project_id(text, project_id, loader)
            try:
                after = yaml.load(new_text, Loader=loader) if new_text is not None else None
            except yaml.YAMLError:
                after = None
            if not (isinstance(before, dict) and after == {**before, "project_id": project_id}):
                return (f"Note: {config} has no project_id, which `rnow run` needs, and this program cannot "
                        f"add one safely to how the file is written, so it is left as it is. {advice} "
                        "yourself; do not run `rnow init` here (it overwrites this folder's files).")
            with replaced_atomically(config) as out:
                out.write((bom + new_text).encode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        return (f"Note: {config} has no project_id, which `rnow run` needs, and it could not be added "
                f"({why}). {advice} yourself; do not run `rnow init` here (it overwrites this folder's "
                "files).")
    return (f"{config}: added project_id {project_id}, which `rnow run` needs to train on this folder (`rnow "
            "init` would make one too, but it overwrites train.jsonl and config.yml: never run it here).")


_EMPTY_VALUES = ("", "~", "null", "Null", "NULL")


def _with_project_id(text: str, project_id: str, loader: Any) -> tuple[str | None, str]:
    """config.yml's text (its BOM taken off) with the project id given, nothing else changed, found where the
    YAML parser puts the keys: an empty `project_id:` (or `project_id :`, `"project_id": ~`, ...) filled in on
    its own line, whatever its line ends; else the key added to the top-level mapping: a line at the end of a
    block mapping (with the file's line ends and indentation), or a pair inside the braces of a flow one. None
    where that cannot be done safely; and, either way, how to do it by hand."""
    import yaml

    line = f'project_id: "{project_id}"'
    root = yaml.compose(text, Loader=loader)
    if not isinstance(root, yaml.MappingNode):
        return None, f"Give it a top-level mapping with the key `{line}`"
    found = [(key, value) for key, value in root.value if isinstance(key, yaml.ScalarNode)
             and key.value == "project_id"]
    if found:
        key, value = found[0]
        colon = re.compile(r"[ \t]*:").match(text, key.end_mark.index)
        empty = isinstance(value, yaml.ScalarNode) and (value.tag.endswith(":null")
                                                        or value.style in ("'", '"')) \
            and value.value in _EMPTY_VALUES
        advice = f"Set its project_id to `{line}`"
        if len(found) > 1 or colon is None or not empty or value.end_mark.line != key.start_mark.line:
            return None, advice
        end = max(colon.end(), value.end_mark.index)
        return text[:key.start_mark.index] + line + text[end:], advice
    if root.flow_style:
        close = root.end_mark.index - 1
        if text[close:close + 1] != "}":
            return None, f"Add `{line}` inside its outer braces, after a comma"
        before = text[:close].rstrip()[-1:]
        pair = ("" if before == "{" else " " if before == "," else ", ") + line
        advice = f"Add `{pair.strip()}` inside its outer braces, before the closing one"
        return text[:close] + pair + text[close:], advice
    newline = "\r\n" if "\r\n" in text else "\n"
    indent = " " * root.value[0][0].start_mark.column if root.value else ""
    at = root.end_mark.index  # the mapping's end: before a document end (...) or another document
    head = text[:at] if not text[:at] or text[:at].endswith(("\n", "\r")) else text[:at] + newline
    note = "".join(indent + comment + newline for comment in _PROJECT_ID_NOTE.splitlines())
    advice = f"Add the line `{indent}{line}` after its last setting"
    return head + note + indent + line + newline + text[at:], advice


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the file at `path` (a file we replace by renaming a new one over it, so the lock
    is taken again until the file locked is still the one there: a run that waited reads what the run
    before it wrote). A lock on the file itself, not on a lock file beside it: nothing left in the folder."""
    while True:
        fd = os.open(path, os.O_RDWR)  # open for writing: NFS takes an exclusive lock only then
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)  # and with it the lock


class _SettingSources:
    """Each setting from its flag, else config.yml's rollout block, else the default; where it came from
    is kept for --dry-run."""

    def __init__(self, rollout: dict):
        self.rollout = rollout
        self.sources: dict[str, str] = {}

    def pick(self, key: str, flag_value: Any, flag: str, default: Any, convert: Callable[[Any], Any]) -> Any:
        if flag_value is not None:
            self.sources[key] = flag
            return flag_value
        if key in self.rollout:
            value, path = self.rollout[key]
            try:  # YAML scalars as the flags' text (a number, a bool), so one rule checks both
                converted = convert(value if isinstance(value, (str, list)) else str(value))
            except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
                raise UsageError(f"{path}: rollout.{key}: {str(e)[:300]}") from None  # what it echoes, cut
            self.sources[key] = f"{path}"
            return converted
        self.sources[key] = "default"
        return default


def _reasoning_mode_value(value: Any) -> str:
    if value not in _REASONING_MODES:
        raise ValueError(f"{value!r} is not one of {', '.join(_REASONING_MODES)}")
    return value


def _reasoning_request(mode: str) -> dict:
    """rnow's reasoning_mode as OpenRouter's `reasoning` field: disabled turns it off; the rest are
    efforts."""
    return {"enabled": False} if mode == "disabled" else {"effort": mode}


# --shard auto: the shard from the scheduler's environment. A SLURM job array's task runs shard k of N where
# k is its place in the array; a task submitted again alone (`sbatch --array=2 job.sbatch`, the usual way to
# re-run one that failed) is an array of one to SLURM, so the array's shape is noted beside the shards'
# files by the first run of the array, and such a task takes its shard from that note. SLURM's variables and
# the note come from outside: each is checked, and what cannot be true is refused, naming it.

# SLURM numbers an array's tasks 0 to MaxArraySize - 1, and MaxArraySize is at most 4,000,001 (slurm.conf(5))
_SLURM_MOST_TASK_ID = 4_000_000
_NOTE_MOST_BYTES = 4096  # a note is a few dozen bytes of JSON


@dataclass(frozen=True)
class SlurmArray:
    """A SLURM job array's task ids, first, first + step, ...: `tasks` of them; the k-th runs shard k."""

    first: int
    step: int
    tasks: int

    def shard(self, task: int) -> int | None:
        index, off_step = divmod(task - self.first, self.step)
        return index if not off_step and 0 <= index < self.tasks else None

    @property
    def spec(self) -> str:
        """As --array writes it."""
        if self.tasks == 1:
            return str(self.first)
        last = self.first + (self.tasks - 1) * self.step
        return f"{self.first}-{last}" + (f":{self.step}" if self.step != 1 else "")

    @property
    def counted(self) -> str:
        return f"--array={self.spec}, {self.tasks} task{'s' if self.tasks != 1 else ''}"


@dataclass(frozen=True)
class _SchedulerShard:
    """What --shard auto found: the shard, how it was found when that needs saying, and the array's shape
    to note for its tasks run again alone (None: already noted, or nothing to note); `renote`: the note
    there is replaced (the same shards, numbered otherwise)."""

    shard: tuple[int, int]
    note: str | None = None
    record: Path | None = None
    array: SlurmArray | None = None
    renote: bool = False


def _array_note_path(pattern: Path) -> Path:
    """Where the array's shape is noted: beside the shards' files (train.slurm-array.json by default), in the
    last folder all of them share (out/train.slurm-array.json for out/{shard}/train.jsonl)."""
    parts = pattern.parts
    shared = next(i for i, part in enumerate(parts) if "{shard}" in part)
    base = parts[-1].replace(".shard-{shard}", "").replace("{shard}", "")
    return Path(*parts[:shared], f"{Path(base).stem.rstrip('.-_') or 'shards'}.slurm-array.json")


def _shard_files(pattern: Path) -> dict[Path, int]:
    """The files shards of any array wrote by this pattern here, with the count of shards each names."""
    found = glob.glob(glob.escape(str(pattern)).replace("{shard}", "*-of-*"))
    named = re.compile(re.escape(str(pattern)).replace(re.escape("{shard}"), r"[0-9]+-of-([0-9]+)"))
    return {Path(path): int(match[1]) for path in found if (match := named.fullmatch(path))}


def _by_hand(pattern: Path | None) -> str:
    """The command-line part that runs a shard without the scheduler."""
    return "--shard I/N" + (f" -o {_shard_path(pattern, 'I-of-N')}" if pattern is not None else "")


def _read_array_note(path: Path) -> SlurmArray | None:
    """The note as note_array writes it, checked: a regular file of a few dozen bytes of JSON, three numbers
    an array can have. Anything else is refused, naming it (it never hangs on a FIFO, nor recurses)."""
    again = "Delete it and submit the whole array again (finished shards end at once)."
    what = "the note of the SLURM array that writes these shards"
    _check_regular_file(path, what, "which this program writes beside the shards and reads back", again)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO put there since: no wait
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UsageError(f"{path}: cannot read {what} ({e.strerror}). {again}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{path}: cannot open {what}: it is not a regular file. {again}")
        data = os.read(fd, _NOTE_MOST_BYTES + 1)
    except OSError as e:
        raise UsageError(f"{path}: cannot read {what} ({e.strerror}). {again}") from None
    finally:
        os.close(fd)
    try:
        note = json.loads(data) if len(data) <= _NOTE_MOST_BYTES else None
    except (ValueError, RecursionError):
        note = None
    fields = [note.get(name) if isinstance(note, dict) else None for name in ("first", "step", "tasks")]
    if not all(type(value) is int for value in fields) or not (
            0 <= fields[0] <= _SLURM_MOST_TASK_ID and 1 <= fields[1] <= _SLURM_MOST_TASK_ID
            and 1 <= fields[2] <= _SLURM_MOST_TASK_ID + 1):
        raise UsageError(f"{path}: not a note of a SLURM array as this program writes it. {again}")
    return SlurmArray(*fields)


def note_array(record: Path, array: SlurmArray, job: str | None, replace: bool = False) -> str | None:
    """Note the array's shape for its tasks run again alone, once, whatever starts at once: the note is
    written whole under a name of its own, then linked into place, which fails if another task did first
    (`replace`: renamed over the note there, which names the same shards otherwise). A message when it
    cannot be written (a task run again alone is then refused, saying what works)."""
    temporary = record.with_name(f".{record.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(json.dumps({"first": array.first, "step": array.step, "tasks": array.tasks,
                                         "job": job}) + "\n")
        if replace:
            os.replace(temporary, record)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(temporary, record)
    except OSError as e:
        return (f"Note: {record} could not be written ({e.strerror}); a task of this array submitted again "
                "alone will need --shard I/N in place of --shard auto.")
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    return None


def _scheduler_shard(count: int | None, env: Mapping[str, str], pattern: Path | None) -> _SchedulerShard:
    """--shard auto: this task's shard from a SLURM job array (--array=0-7, or 1-16, or 0-30:2; a task of it
    submitted again alone) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX; the Job's completions given
    as --shard auto/N). `pattern`: the shards' output name (_shard_pattern), beside which the array is
    noted."""
    def number(name: str, default: int | None = None) -> int | None:
        if name not in env:
            return default
        if not re.fullmatch(r"[ \t]*-?[0-9]{1,18}[ \t]*", env[name]):  # int() would take "٣" and "1_0"
            raise UsageError(f"--shard auto: {name}={env[name][:40]!r} is not a number")
        return int(env[name])

    if "SLURM_ARRAY_TASK_ID" in env:
        return _slurm_shard(count, number, pattern, env.get("SLURM_ARRAY_JOB_ID"))
    if "JOB_COMPLETION_INDEX" in env:
        if count is None:
            raise UsageError("--shard auto: a Kubernetes Indexed Job gives the index only; pass the Job's "
                             "completions as --shard auto/N")
        index = number("JOB_COMPLETION_INDEX")
        if not 0 <= index < count:
            raise UsageError(f"--shard auto/{count}: JOB_COMPLETION_INDEX={index} is not in 0..{count - 1}")
        return _SchedulerShard((index, count))
    raise UsageError("--shard auto: neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set. Run it in a "
                     "SLURM job array or a Kubernetes Indexed Job, or give the shard as --shard I/N.")


def _slurm_variables(number: Callable[..., int | None], pattern: Path | None) -> tuple[int, int, int, int,
                                                                                       int | None]:
    """SLURM's array variables (task, first, step, tasks, last), each checked against what SLURM can set:
    what cannot be true is refused, naming it and the command that runs the shard without them."""
    task, first, step = number("SLURM_ARRAY_TASK_ID"), number("SLURM_ARRAY_TASK_MIN", 0), \
        number("SLURM_ARRAY_TASK_STEP", 1)
    tasks, last = number("SLURM_ARRAY_TASK_COUNT"), number("SLURM_ARRAY_TASK_MAX")
    most = _SLURM_MOST_TASK_ID
    checks = [  # in order: each message may name what the ones before it found true
        (not 0 <= task <= most, f"SLURM_ARRAY_TASK_ID={task} is not a task id (SLURM's are 0 to {most:,})"),
        (not 0 <= first <= task,
         f"SLURM_ARRAY_TASK_MIN={first} is not the first task id of an array holding task {task}"),
        (last is not None and not task <= last <= most,
         f"SLURM_ARRAY_TASK_MAX={last} is not the last task id of an array holding task {task}"),
        (not 1 <= step <= most, f"SLURM_ARRAY_TASK_STEP={step} is not a step (SLURM's is 1 or more)"),
        (tasks is not None and not 1 <= tasks <= most + 1,
         f"SLURM_ARRAY_TASK_COUNT={tasks} is not a number of tasks (an array has 1 or more)"),
        (tasks is not None and last is not None and tasks > last - first + 1,
         f"SLURM_ARRAY_TASK_COUNT={tasks} is more tasks than ids from {first} to {last}"),
    ]
    problem = next((why for wrong, why in checks if wrong), None)
    if problem is not None:
        raise UsageError(f"--shard auto: {problem}, which SLURM never sets: something else in this job's "
                         "environment did. Leave it to SLURM (it sets it in every task of an array), or "
                         f"give the shard by hand: {_by_hand(pattern)} in place of --shard auto.")
    return task, first, step, tasks, last


def _slurm_shard(count: int | None, number: Callable[..., int | None], pattern: Path | None,
                 job: str | None) -> _SchedulerShard:
    task, first, step, tasks, last = _slurm_variables(number, pattern)
    tasks = tasks if tasks is not None else count
    if tasks is None:
        raise UsageError("--shard auto: SLURM_ARRAY_TASK_COUNT is not set; pass the array size as --shard "
                         "auto/N")
    record = _array_note_path(pattern) if pattern is not None else None
    noted = _read_array_note(record) if record is not None else None
    array = SlurmArray(first, step, tasks)
    spaced = last is None or last == first + (tasks - 1) * step  # a range, not a list such as --array=2,5
    if (tasks == 1 or not spaced) and noted is not None and noted != array and count in (None, noted.tasks):
        # a task (or a list of tasks) of the noted array, submitted again: its shard there
        index = noted.shard(task)
        if index is None:
            raise UsageError(f"--shard auto: task {task} is not a task of the array whose shards are here "
                             f"(--array={noted.spec}, noted in {record}). Submit one of its tasks, or delete "
                             f"{record} to split the prompts anew.")
        return _SchedulerShard((index, noted.tasks), note=(
            f"--shard auto: task {task} runs apart from its array (SLURM gives it an array of its own), so "
            f"it runs its shard of the array noted in {record} (--array={noted.spec}): shard {index} of "
            f"{noted.tasks}."))
    if count is not None and count != tasks:
        raise UsageError(f"--shard auto/{count}: the SLURM array has {tasks} tasks")
    index = array.shard(task)
    if index is None or not spaced:
        raise UsageError(f"--shard auto: task {task} is not one of {tasks} evenly spaced tasks from {first} "
                         f"(step {step}); use a range such as --array=0-{tasks - 1}, or {_by_hand(pattern)}")
    if tasks == 1 and noted is None:
        return _lone_task(task, pattern, record, array)
    if noted is not None and noted.tasks != tasks:
        raise UsageError(
            f"--shard auto: this array ({array.counted}) is not the one whose shards are here "
            f"({noted.counted}, noted in {record}): {tasks} shards split the prompts otherwise than "
            f"{noted.tasks}, so the prompts done in its shards "
            f"({_shard_path(pattern, f'*-of-{noted.tasks}')}) would be paid again in these. To go on with "
            f"its shards, submit that array again (sbatch --array={noted.spec} ...: finished shards end at "
            f"once), or one task of it alone. To split the prompts into {tasks} shards anew, paying again "
            f"for what its shards hold, delete {record} first (its shards' files are left as they are).")
    if noted is not None and noted != array:  # the same shards, numbered otherwise (--array=1-4 for 0-3)
        return _SchedulerShard((index, tasks), record=record, array=array, renote=True, note=(
            f"--shard auto: this array (--array={array.spec}) numbers the tasks of the one noted in {record} "
            f"(--array={noted.spec}) otherwise; its {tasks} shards are the same (the k-th task of either "
            f"runs shard k), so task {task} goes on with shard {index} of {tasks}, and the array is noted as "
            f"--array={array.spec} for its tasks submitted again alone."))
    return _SchedulerShard((index, tasks), record=record if noted is None else None, array=array)


def _lone_task(task: int, pattern: Path | None, record: Path | None, array: SlurmArray) -> _SchedulerShard:
    """An array of one task, and no note of an earlier array: shard 0 of 1, noted as an array of one (so a
    later array of more tasks is refused rather than run every prompt again), unless shards of another
    array are here (this is then one of its tasks, submitted again before notes were kept): refused, saying
    what works, rather than every prompt run again."""
    if pattern is not None:
        counts = sorted(shards for shards in _shard_files(pattern).values() if shards > 1)
        if counts:
            shards = counts[-1]
            mine = _shard_path(pattern, f"{task}-of-{shards}")
            raise UsageError(
                "--shard auto: this task runs alone (an array of one task, as SLURM runs `sbatch "
                f"--array={task}`), and no note here says which array it belongs to, while the shards of a "
                f"{shards}-task array are here ({_shard_path(pattern, f'*-of-{shards}')}). Run as shard 0 of "
                f"1 it would pay for every prompt again. If it is task {task} of --array=0-{shards - 1}, run "
                f"its shard with --shard {task}/{shards} -o {mine} in place of --shard auto (or submit the "
                "whole array again: finished shards end at once).")
    return _SchedulerShard((0, 1), record=record, array=array)


def _load_dotenv_file() -> None:
    """Read .env from the working directory; variables already in the environment win."""
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)


def _is_openrouter(base_url: str) -> bool:
    host = urlparse(base_url).hostname or ""
    return host == "openrouter.ai" or host.endswith(".openrouter.ai")


def _parse_extra_body(text: str | None) -> dict:
    if text is None:
        return {}
    where = "--extra-body"
    if text.startswith("@"):
        where = text[1:]
        try:
            text = Path(where).read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"{where}: cannot read --extra-body file: {e.strerror}") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{where}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(body, dict):
        raise UsageError(f"{where}: must be a JSON object such as {{\"provider\": {{\"sort\": "
                         "\"throughput\"}}")
    if "messages" in body:
        raise UsageError(f"{where}: must not set \"messages\"; they come from the prompts file")
    for name in ("n", "best_of"):  # several choices in one answer: a rollout follows one conversation
        if name in body and body[name] != 1:
            raise UsageError(f"{where}: \"{name}\": {str(body[name])[:40]} asks for several answers to one "
                             "request, but a rollout follows one conversation. For several samples per "
                             "prompt, use --samples "
                             f"{body[name] if type(body[name]) is int and body[name] > 1 else 'N'} instead "
                             "(each is its own rollout, resumed and scored on its own).")
    return body


def _check_batchable(extra_body: dict) -> None:
    """--batch: refuse at the start what a batch cannot carry."""
    for key, why in (("models", "every request in a batch must name the batch's one model, so there are no "
                      "`models` fallbacks"), ("model", "the batch's one model is --model's: pass it there"),
                     ("stream", "batch answers come whole")):
        if key in extra_body:
            raise UsageError(f"--extra-body's `{key}` cannot go in a batch: {why}. Leave it out, or run "
                             "without --batch.")


# ==================================================================================================
# Prompts
# ==================================================================================================
# Reading and checking the prompts file; prompt ids; the rollouts the command asks for.

_MESSAGE_ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Prompt:
    prompt_id: str
    messages: list[dict]  # the conversation the teacher starts from, system message included
    metadata: dict
    source: Any  # what the user wrote: the prompt text or its messages, kept for the failed file
    offset: int = 0  # where its line starts in the prompts file: a resumed run re-reads only pending lines
    line_no: int = 0  # its line number in the prompts file, for messages
    repeat: int = 1  # its occurrence number among identical prompts of the file
    id_given: bool = False  # the id is the record's own "id", not a hash
    tools: tuple[str, ...] | None = None  # the record's own "tools": the only ones it may use; None: all

    @property
    def content(self) -> str:
        """What its rollouts begin from, as a hash of its messages (system prompt included): saved turns go on
        only from this very conversation, whatever the id says (a prompt with its own id may be edited)."""
        return content_hash(self.messages)


@dataclass
class RolloutJob:
    prompt: Prompt
    sample: int
    seq: int  # order in the file: older rollouts get request slots first, so they finish first

    @property
    def key(self) -> int:
        return RolloutKey.hashed(self.prompt.prompt_id, self.sample)


class RolloutKey(NamedTuple):
    """Which try of which rollout: (prompt id, sample, attempt). Output and rejected lines, failed entries
    and paused records are all keyed by it, each read by one strict rule here (a string id, an integer
    sample and attempt). One rollout has at most one output line, and one rejected line per attempt."""

    prompt_id: str
    sample: int
    attempt: int = 1

    @staticmethod
    def hashed(prompt_id: str, sample: int) -> int:
        """The rollout, all its attempts, as resume state holds it (RolloutJob.key). A 64-bit hash rather
        than the id string: at a million rollouts ~60 MB instead of ~150 MB; a collision needs ~4 billion
        rollouts to become likely."""
        return hash((prompt_id, sample))

    @property
    def rollout(self) -> int:
        return RolloutKey.hashed(self.prompt_id, self.sample)

    @classmethod
    def of_job(cls, job: RolloutJob, attempt: int) -> RolloutKey:
        return cls(job.prompt.prompt_id, job.sample, attempt)

    @classmethod
    def of_line(cls, record: Any) -> RolloutKey | None:
        """An output or rejected line's key, from its metadata, or a failed entry's, from its own fields
        (attempt 1 when absent); None: not a line of ours."""
        if not isinstance(record, dict):
            return None
        fields = record if "prompt_id" in record else record.get("metadata")
        if not isinstance(fields, dict):
            return None
        prompt_id, sample, attempt = fields.get("prompt_id"), fields.get("sample"), fields.get("attempt", 1)
        if type(prompt_id) is not str or type(sample) is not int or type(attempt) is not int:
            return None
        return cls(prompt_id, sample, attempt)

    @classmethod
    def rollout_of_line(cls, record: Any) -> int | None:
        """The rollout (RolloutKey.hashed) a line of ours belongs to; None if not one."""
        key = cls.of_line(record)
        return None if key is None else key.rollout

    @classmethod
    def of_paused(cls, record: Any) -> RolloutKey | None:
        """A paused record's key: every field written out (PausedFile writes them as `_asdict` names them),
        none negative; None: not a record of ours."""
        if not isinstance(record, dict):
            return None
        prompt_id, sample, attempt = record.get("prompt_id"), record.get("sample"), record.get("attempt")
        if (type(prompt_id) is not str or type(sample) is not int or type(attempt) is not int
                or sample < 0 or attempt < 0):
            return None
        return cls(prompt_id, sample, attempt)


def _iter_prompts(path: Path, system: str | None) -> Iterator[Prompt]:
    """Stream every prompt of a .txt or .jsonl file; raise UsageError naming file:line on bad input."""
    jsonl = _is_jsonl_file(path)
    ids = _PromptIds()
    for offset, where, line in _iter_lines(path):
        prompt = _parse_prompt_line(line, where, jsonl, system)
        try:
            prompt.prompt_id, prompt.repeat = ids.number(prompt.prompt_id, where, prompt.id_given)
        except _DuplicateId as e:
            earlier = _first_line_with_id(path, system, e.prompt_id)
            raise UsageError(f"{e.where}: id {e.prompt_id!r} is also the id of {earlier}; ids must be unique "
                             "(a given \"id\" may not equal another prompt's computed id)") from None
        prompt.offset, prompt.line_no = offset, int(where.rpartition(":")[2])
        yield prompt


def _first_line_with_id(path: Path, system: str | None, prompt_id: str) -> str:
    """The line whose prompt has this id, numbering repeats as _iter_prompts does but without the
    uniqueness check (it runs only to name the earlier of two lines that share an id)."""
    jsonl, repeats = _is_jsonl_file(path), {}
    for _, where, line in _iter_lines(path):
        prompt = _parse_prompt_line(line, where, jsonl, system)
        if not prompt.id_given:
            repeats[prompt.prompt_id] = repeats.get(prompt.prompt_id, 0) + 1
            prompt.prompt_id = _repeated_id(prompt.prompt_id, repeats[prompt.prompt_id])
        if prompt.prompt_id == prompt_id:
            return "line " + where.rpartition(":")[2]
    return "an earlier line"


def _is_jsonl_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".json":
        raise UsageError(f"{path}: a .json file is not supported; write one JSON object a line to a .jsonl "
                         "file")
    return suffix in (".jsonl", ".ndjson")


def _iter_lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """(byte offset, "file:line", text) of each non-blank line."""
    offset = 0
    try:
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                start, offset = offset, offset + len(raw)
                text = _decode_line(raw, f"{path}:{line_no}", start)
                if text.strip():
                    yield start, f"{path}:{line_no}", text
    except OSError as e:
        raise UsageError(f"{path}: cannot read the prompts file: {e.strerror}") from None


def _decode_line(raw: bytes, where: str, offset: int) -> str:
    if offset == 0:
        # editors on Windows start files with one; it is not part of the prompt
        raw = raw.removeprefix(_UTF8_BOM)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{where}: not UTF-8 text. Save the file as UTF-8.") from None


def _line_at(fd: int, offset: int, first_read: int = 4096) -> bytes:
    """The line that starts at `offset`, read from the file as it is now (pread: no buffer that still
    holds what the file said before it was rewritten)."""
    parts, size = [], first_read
    while chunk := os.pread(fd, size, offset):
        end = chunk.find(b"\n")
        if end >= 0:
            parts.append(chunk[: end + 1])
            break
        parts.append(chunk)
        offset, size = offset + len(chunk), min(size * 4, 1 << 22)
    return b"".join(parts)


class _PromptsChanged(Exception):
    """A line read again during the run no longer holds the prompt the plan read there: the file changed."""

    def __init__(self, path: Path, line_no: int):
        super().__init__(f"{path}:{line_no} no longer holds the prompt it held when this run started: the "
                         "prompts file was changed during the run, so no more rollouts were started. Leave "
                         "the file as it is while a run reads it (write changes to a new file), then "
                         "re-run; finished rollouts are kept.")


def _read_prompts_at(path: Path, system: str | None,
                     places: Iterable[tuple[int, int, int, int]]) -> Iterator[Prompt]:
    """The prompts at these (offset, repeat number, line number, hash of the prompt id) places, as the full
    pass read them; _PromptsChanged when a line no longer gives the id the full pass found there."""
    jsonl = _is_jsonl_file(path)
    try:
        with open(path, "rb", buffering=0) as f:
            for offset, repeat, line_no, id_hash in places:
                where = f"{path}:{line_no}"
                try:
                    line = _decode_line(_line_at(f.fileno(), offset), where, offset)
                    prompt = _parse_prompt_line(line, where, jsonl, system)
                except UsageError:
                    raise _PromptsChanged(path, line_no) from None
                prompt.prompt_id, prompt.repeat = _repeated_id(prompt.prompt_id, repeat), repeat
                prompt.offset, prompt.line_no = offset, line_no
                if hash(prompt.prompt_id) != id_hash:
                    raise _PromptsChanged(path, line_no)
                yield prompt
    except OSError as e:
        raise UsageError(f"{path}: cannot read the prompts file: {e.strerror}") from None


def _parse_prompt_line(line: str, where: str, jsonl: bool, system: str | None) -> Prompt:
    """A Prompt whose prompt_id is still the base id: the record's "id", else the conversation's hash."""
    if not jsonl:
        text = line.rstrip("\r\n")
        messages = _with_system(system, [{"role": "user", "content": text}])
        return Prompt(conversation_hash(messages), messages, {}, text)
    record = _parse_strict_json(line, where)
    if not isinstance(record, dict):
        raise UsageError(f"{where}: expected an object like {{\"prompt\": \"...\"}}, got "
                         f"{type(record).__name__}")
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise UsageError(f"{where}: \"metadata\" must be an object, got {type(metadata).__name__}")
    record_id = record.get("id")
    if record_id is not None and (isinstance(record_id, bool) or not isinstance(record_id, (str, int))
                                  or str(record_id) == ""):
        raise UsageError(f"{where}: \"id\" must be a non-empty string or an integer")
    if "prompt" in record and "messages" in record:
        raise UsageError(f"{where}: has both \"prompt\" and \"messages\"; keep one")
    if "prompt" in record:
        text = record["prompt"]
        if not isinstance(text, str):
            raise UsageError(f"{where}: \"prompt\" must be a string, got {type(text).__name__}")
        if not text.strip():
            raise UsageError(f"{where}: \"prompt\" is empty")
        messages, source = _with_system(system, [{"role": "user", "content": text}]), text
    elif "messages" in record:
        source = _validate_messages(record["messages"], where)
        has_system = source[0]["role"] == "system"
        copied = [dict(m) for m in source]
        messages = copied if has_system else _with_system(system, copied)
    else:
        raise UsageError(f"{where}: needs a \"prompt\" (string) or \"messages\" (list of chat messages)")
    tools = _prompt_tools(record, where)
    if record_id is not None:
        return Prompt(str(record_id), messages, metadata, source, id_given=True, tools=tools)
    return Prompt(conversation_hash(messages), messages, metadata, source, tools=tools)


def _prompt_tools(record: dict, where: str) -> tuple[str, ...] | None:
    """rnow's per-prompt `tools`: the names of the tools this prompt may use ([]: none)."""
    if record.get("tools") is None:
        return None
    names = record["tools"]
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise UsageError(f"{where}: \"tools\" must be a list of tool names, like [\"search\", \"browse\"]")
    return tuple(dict.fromkeys(names))


def _parse_strict_json(line: str, where: str) -> Any:
    """RFC 8259 JSON only: every line we write must parse in strict parsers, so NaN, Infinity, numbers
    too large for a double and lone surrogates (\\udXXX escapes that are not valid Unicode) are refused."""
    try:
        record = json.loads(line, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise UsageError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    except ValueError as e:
        raise UsageError(f"{where}: {e}; write null or a string instead") from None
    except RecursionError:
        raise UsageError(f"{where}: nested too deeply (hundreds of levels of lists or objects); no prompt "
                         "needs that: fix the line") from None
    if _nesting_depth(record) > _MAX_NESTING:
        raise UsageError(f"{where}: nested more than {_MAX_NESTING} levels deep; no prompt needs that, and "
                         "what is written must stay readable by strict parsers: fix the line")
    if _LONE_SURROGATE_HINT.search(line) and not _encodable(record):
        raise UsageError(f"{where}: holds a lone surrogate escape (\\udXXX without its pair), which is not "
                         "valid Unicode; fix the text that produced it")
    return record


_LONE_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]")  # cheap pre-check before the exact one


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (RFC 8259)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a JSON number")
    return value


def _encodable(value: Any) -> bool:
    """True when the value can be written as UTF-8 JSON (no lone surrogates, no NaN)."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        return True
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return False


def _validate_messages(messages: Any, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise UsageError(f"{where}: \"messages\" must be a non-empty list of chat messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise UsageError(f"{where}: messages[{i}] must be an object with \"role\" and \"content\"")
        if message.get("role") not in _MESSAGE_ROLES:
            raise UsageError(f"{where}: messages[{i}].role must be one of {', '.join(_MESSAGE_ROLES)}")
        if not isinstance(message.get("content"), (str, list)) and not message.get("tool_calls"):
            raise UsageError(f"{where}: messages[{i}].content must be a string or a list")
    if messages[-1]["role"] not in ("user", "tool"):
        raise UsageError(f"{where}: the last message must be from the user (or a tool), for the teacher to "
                         "answer")
    return messages


def _with_system(system: str | None, messages: list[dict]) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + messages


def content_hash(messages: list[dict]) -> str:
    """32 hex digits of exactly these messages, in canonical JSON: no two conversations share an encoding,
    whatever their texts hold (Prompt.content, what saved turns began from)."""
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def conversation_hash(messages: list[dict]) -> str:
    """16 hex digits naming the conversation a rollout starts from: a prompt's id when it has none of its own
    (and what releases before this one kept of the prompt's content). Its fast path joins texts with the
    ASCII control characters RS and US, so a text holding them can read as other messages: ids stay as they
    were (a change would run every such prompt again), and content_hash is what says what a rollout is."""
    if all(m.keys() == {"role", "content"} and isinstance(m["content"], str) for m in messages):
        canonical = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in messages)  # fast path, most prompts
    else:  # starts with "[", so it never equals a fast-path form
        canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()


def _repeated_id(base_id: str, repeat: int) -> str:
    return base_id if repeat == 1 else f"{base_id}-{repeat}"


class _PromptIds:
    """Numbers repeats: the same prompt twice in a file is two prompts (the user asked for it twice),
    so the second gets "<hash>-2", and so on, and resume counts both. Every final id (given, hashed or
    numbered) must be unique: a given id equal to another line's id would make one of them look done."""

    def __init__(self) -> None:
        self._seen: set[int] = set()  # every final id so far
        self._repeats: dict[int, int] = {}  # computed ids seen more than once: how many times
        self._given_like_computed: set[int] = set()  # given ids shaped like a computed one (rare)

    def number(self, base_id: str, where: str, given: bool) -> tuple[str, int]:
        """(prompt_id, occurrence number) for the next prompt with this base id."""
        prompt_id, repeat = base_id, 1
        if not given and hash(base_id) in self._seen:
            if hash(base_id) in self._given_like_computed:  # not a repeat: a given id took this hash
                raise _DuplicateId(base_id, where)
            repeat = self._repeats.get(hash(base_id), 1) + 1
            self._repeats[hash(base_id)] = repeat
            prompt_id = _repeated_id(base_id, repeat)
        if hash(prompt_id) in self._seen:
            raise _DuplicateId(prompt_id, where)
        self._seen.add(hash(prompt_id))
        if given and _COMPUTED_ID.fullmatch(prompt_id):
            self._given_like_computed.add(hash(prompt_id))
        return prompt_id, repeat


_COMPUTED_ID = re.compile(r"[0-9a-f]{16}")


class _DuplicateId(Exception):
    """Two lines share a final id; iter_prompts names both (the earlier one found by a second pass,
    on this error only, so a million ids cost a set of hashes rather than a map to line numbers)."""

    def __init__(self, prompt_id: str, where: str):
        super().__init__(prompt_id)
        self.prompt_id, self.where = prompt_id, where


def iter_jobs(prompts: PromptSettings) -> Iterator[RolloutJob]:
    """Every rollout the command asks for, in file order: -n, then --shard, then --samples."""
    seq = itertools.count()
    for index, prompt in enumerate(_iter_prompts(prompts.input, prompts.system)):
        if prompts.num is not None and index >= prompts.num:
            return
        if prompts.shard and _shard_of(prompt.prompt_id, prompts.shard[1]) != prompts.shard[0]:
            continue
        if prompts.text_only and (kind := _non_text_part(prompt.messages)):
            raise UsageError(f"{prompts.input}:{prompt.line_no}: has a part of type {kind}, and --batch "
                             "sends text only (OpenRouter's Batch API refuses image, audio and file parts). "
                             "Run this prompt without --batch, or leave the part out.")
        for sample in range(prompts.samples):
            yield RolloutJob(prompt, sample, next(seq))


def _non_text_part(messages: list[dict]) -> str | None:
    for message in messages:
        for part in message.get("content") if isinstance(message.get("content"), list) else ():
            kind = part.get("type", "text") if isinstance(part, dict) else "?"
            if kind != "text":
                return str(kind)[:40]
    return None


def _count_prompts(prompts: PromptSettings) -> int:
    """The prompts the command reads (-n of them at most), every shard's."""
    return sum(1 for _ in itertools.islice(_iter_prompts(prompts.input, prompts.system), prompts.num))


def _shard_of(prompt_id: str, shards: int) -> int:
    # A stable hash (not Python's salted hash()): every machine must agree on the split.
    return int.from_bytes(hashlib.blake2b(prompt_id.encode(), digest_size=8).digest(), "big") % shards


# ==================================================================================================
# Comparing prompts
# ==================================================================================================
# The words --dedup and --decontaminate compare, and their two indexes: benchmark items' n-grams, near copies.

# Words (words_of, one rule for both checks): the text in NFKC (superscripts, subscripts and fractions kept
# apart from digits), format characters out, case folded; split at whitespace, sentence punctuation set aside
# at the edges of each piece only (1.5, a[1:2], 5! stay whole); the symbols that carry meaning, brackets
# included, each a word of its own ("(2+3)*4" and "2+(3*4)", "12+4" and "12-4" are different questions).
# Duplicates: exact ones by a 64-bit hash of those words and of what else must match (the prompt's own system
# message, its roles, image and file parts, tool calls and tools); near ones, among prompts of 20 words or
# more, by MinHash over their sets of words (rensa: 128 permutations, seed 42): dropped when a prompt that
# stays shares at least --dedup-threshold of their distinct words (by the estimate, and with the same rest).
# Under 20 words, one word makes another question ("the capital of France" / "of Peru"): those get the exact
# check only. The LSH index has the fewest bands that make a pair at the threshold a candidate 4 times in 5 (8
# bands of 16 rows at
# 0.9, 16 of 8 at 0.8): each band costs ~150 MB a million prompts.
# Benchmarks: each item's n-grams of --decontaminate-ngram words, hashed (xxh3: the same in every process),
# and each item whole; an item of 8 to n-1 words is matched whole inside a text, and one under 8 only by a
# text that is exactly the item (as a phrase it would match everyday text); an n-gram held by more than 50
# items is a benchmark's boilerplate (a shared instruction), masked with every n-gram touching it in each item
# holding it, and that item is then matched by its own words (_BenchmarkIndex). Every text a prompt sends is
# checked.


# the rule words_of follows (docs/data.md), recorded with each choice: 1 split inside 1.5 and a[1:2]
_WORDS_RULE = 2
# Symbols that carry meaning are words of their own, with or without spaces around them: "(2+3)*4" and
# "2+(3*4)", "12+4" and "12-4" stay apart, "12+4" and "12 + 4" are one question.
_SYMBOLS = "+-*/=<>^%$#&|~@\\()[]{}\u2264\u2265\u2260\u2248\u00b1"
_SPACED = str.maketrans({symbol: f" {symbol} " for symbol in _SYMBOLS})
# Sentence punctuation and quotes: set aside at the edges of what whitespace separates, never inside it (1.5,
# a[1:2], f'(x), don't, e.g stay whole)
_EDGES = ".,;:!?'\"`\u00ab\u00bb\u2039\u203a\u00bf\u00a1\u2022"
_POINT_DIGIT = re.compile(r"\.\d")
_NEAR_MIN_WORDS = 20
_NUM_PERM, _MINHASH_SEED = 128, 42
_CHUNK = 20_000  # prompts signed and indexed at a time
_WHOLE_ITEM_WORDS = 8  # shorter items are matched only as the whole prompt (GPT-3's shortest n-gram)
# an n-gram in more items than this is a benchmark's shared instruction, not an item's
_BOILERPLATE_ITEMS = 50
_MAX_BENCHMARK_BYTES = 1 << 30  # a benchmark file larger than this is refused (100,000 items are ~40 MB)


def _lsh_bands(threshold: float) -> int:
    """The fewest LSH bands (of _NUM_PERM rows in all) that make a pair at the threshold a candidate 4 times
    in 5."""
    return next((b for b in (1, 2, 4, 8, 16, 32, 64) if 1 - (1 - threshold ** (_NUM_PERM // b)) ** b >= 0.8),
                128)


def words_of(text: str) -> list[str]:
    """The words both checks compare (docs/data.md, "Prompt hygiene", says the rule): the text normalised
    (`_normalised`) and split at whitespace; sentence punctuation and quotes at the edges of each piece set
    aside (but a decimal point before a digit, ".5", and a factorial's "!" after a digit or a bracket, "5!");
    then each piece split around the symbols that carry meaning, each symbol a word."""
    text = _normalised(text)
    if "!" in text or _POINT_DIGIT.search(text):
        pieces = [_edges_off(piece) for piece in text.split()]
    else:
        pieces = [piece.strip(_EDGES) for piece in text.split()]
    return " ".join(pieces).translate(_SPACED).split()


def _edges_off(piece: str) -> str:
    """A piece without the sentence punctuation at its edges, but a decimal point before a digit and a
    factorial's "!" after a digit or a closing bracket."""
    start, end = len(piece) - len(piece.lstrip(_EDGES)), len(piece.rstrip(_EDGES))
    if start >= end:
        return ""
    if start and piece[start - 1] == "." and piece[start].isdigit():
        start -= 1
    if end < len(piece) and piece[end] == "!" and (piece[end - 1].isdigit() or piece[end - 1] in ")]"):
        end += len(piece[end:]) - len(piece[end:].lstrip("!"))
    return piece[start:end]


def _normalised(text: str) -> str:
    """One spelling of a text for comparing: Unicode NFKC (full-width forms, ligatures and composed accents
    folded: NFD and NFC text read the same) with superscripts, subscripts and vulgar fractions kept apart from
    plain digits ("5²" is 5^2, not 52; "1½" is 1 1/2, not 11/2), format characters (Unicode category Cf:
    zero-width spaces and joiners, direction marks, soft hyphens) removed, typographic quotes, dashes and
    minus signs, x and the division sign folded to their ASCII forms, the ideographic full stop and comma made
    spaces, then case folded. ASCII text is only lower-cased."""
    if text.isascii():
        return text.lower()
    folds, superscripts, subscripts = _unicode_folds()
    text = superscripts.sub(lambda m: "^" + unicodedata.normalize("NFKC", m.group()), text.translate(folds))
    text = subscripts.sub(lambda m: "_" + unicodedata.normalize("NFKC", m.group()), text)
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


@functools.cache
def _unicode_folds() -> tuple[dict[int, str | None], re.Pattern, re.Pattern]:
    """_normalised()'s table (built once, from Python's Unicode database: ~70 ms) and its two patterns."""
    folds: dict[int, str | None] = {**dict.fromkeys(map(ord, "\u2018\u2019\u201a\u201b\u02bc"), "'"),
                                    **dict.fromkeys(map(ord, "\u201c\u201d\u201e\u201f"), '"'),
                                    **dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2212\ufe63\uff0d"),
                                                    "-"),
                                    **dict.fromkeys(map(ord, "\u2014\u2015\u3001\u3002\uff61\uff64"), " "),
                                    **{ord(wide): f"{chr(ord(wide) - 0xfee0)} "
                                       for wide in "\uff01\uff0c\uff1a\uff1b\uff1f"},
                                    ord("\u00d7"): "*", ord("\u00f7"): "/", ord("\u2044"): "/"}
    superscripts, subscripts = [], []
    for code in itertools.chain(range(0x30000), range(0xE0000, 0xE0080)):
        char = chr(code)
        if unicodedata.category(char) == "Cf":
            folds[code] = None
            continue
        decomposition = unicodedata.decomposition(char)
        if decomposition.startswith("<super>"):
            superscripts.append(char)
        elif decomposition.startswith("<sub>"):
            subscripts.append(char)
        elif decomposition.startswith("<fraction>"):
            folds[code] = " " + unicodedata.normalize("NFKC", char).replace("\u2044", "/") + " "
    return (folds, re.compile("[" + re.escape("".join(superscripts)) + "]+"),
            re.compile("[" + re.escape("".join(subscripts)) + "]+"))


@dataclass(slots=True)
class _PromptTexts:
    """What the checks read of a prompt: the texts of its own messages, as the user wrote them (--system is
    left out: the same before every prompt, it would make them all look alike), and what else it carries."""

    system: list[str]  # its own system messages' texts
    texts: list[str]  # its other messages' texts (text parts of multimodal ones)
    carries: str  # a hash of the rest: roles, image, audio and file parts, tool calls, its own "tools"

    @property
    def every_text(self) -> list[str]:
        """What --decontaminate reads: every text the prompt sends, whatever the role (tool-call arguments
        too)."""
        return self.system + self.texts

    @property
    def context(self) -> int:
        """What must be the same for two prompts to be copies, besides their words: their own system message
        and all they carry but text (the same question about another image is another question)."""
        return _hash64(" ".join(words_of(" ".join(self.system))) + "\x1f" + self.carries)


def _prompt_texts(prompt: Prompt) -> _PromptTexts:
    if isinstance(prompt.source, str):
        return _PromptTexts([], [prompt.source],
                            "" if prompt.tools is None else _carried(["user"], [], prompt.tools))
    system, texts, roles, rest = [], [], [], []
    for message in prompt.source:
        roles.append(message.get("role"))
        content = message.get("content")
        if isinstance(content, list):
            rest += [part for part in content
                     if not (isinstance(part, dict) and isinstance(part.get("text"), str)
                             and part.get("type", "text") == "text")]
            content = " ".join(part["text"] for part in content
                               if isinstance(part, dict) and isinstance(part.get("text"), str))
        (system if message.get("role") == "system" else texts).append(content if isinstance(content, str)
                                                                      else "")
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            rest.append(call)
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                texts.append(function["arguments"])
    return _PromptTexts(system, texts, "" if roles == ["user"] and not rest and prompt.tools is None
                     else _carried(roles, rest, prompt.tools))


def _carried(roles: list, rest: list, tools: tuple[str, ...] | None) -> str:
    return hashlib.sha256(orjson.dumps([roles, rest, tools], option=orjson.OPT_SORT_KEYS)).hexdigest()


def _hash64(text: str) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(text)


def _safe_text(text: str, most: int = 200) -> str:
    """A name from outside (a benchmark file's, an item's id) as the terminal shows it: whole, on one line,
    each character that is not printable written as its escape (a newline as \\n, ESC as \\x1b, a lone
    surrogate as \\ud800), cut at `most`."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: most * 2])
    return text if len(text) <= most else text[: most - 3] + "..."


def _benchmark_files(paths: tuple[Path, ...]) -> list[Path]:
    """The files named, folders expanded (their .jsonl, .ndjson and .txt files, sorted), each checked."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".jsonl", ".ndjson",
                                                                              ".txt") and p.is_file())
            if not found:
                raise UsageError(f"{_safe_text(str(path))}: the folder holds no .jsonl or .txt file. "
                                 "--decontaminate takes benchmark files (JSONL with a text field, or plain "
                                 "text, one item a line) or folders of them.")
            files += found
        elif not path.exists():
            raise UsageError(f"{_safe_text(str(path))}: no such benchmark file (--decontaminate)")
        else:
            _check_regular_file(path, "a benchmark file", "read to index its items",
                                "Save it to a file, and pass that.")
            files.append(path)
    for path in files:
        size = path.stat().st_size
        if size > _MAX_BENCHMARK_BYTES:
            raise UsageError(f"{_safe_text(str(path))}: {size:,} bytes, over the {_MAX_BENCHMARK_BYTES:,} (1 "
                             "GB) a benchmark file may be (100,000 items are ~40 MB): pass the test split's "
                             "questions only, or split it.")
        if path.suffix.lower() == ".json":
            raise UsageError(f"{_safe_text(str(path))}: a .json file is not read; write one JSON object a "
                             "line to a .jsonl file")
    return list(dict.fromkeys(files))


def _benchmark_items(path: Path, field: str, digest: Any = None) -> Iterator[tuple[str, str]]:
    """(item name, text) of each item: a JSONL file's `field` (named by its "id", else its line), or each
    non-blank line of a text file. UsageError naming file and line for anything else."""
    jsonl, items, name = path.suffix.lower() in (".jsonl", ".ndjson"), 0, _safe_text(str(path))
    what = ("A benchmark file is JSONL (one object a line, its text in --decontaminate-field) or plain text, "
            "one item a line")
    try:
        with open(path, "rb") as f:
            start = f.read(8192)
            if _utf16(start):
                raise UsageError(f"{name}: UTF-16 text, not UTF-8. {what}: convert it (iconv -f UTF-16 -t "
                                 "UTF-8 FILE > NEW_FILE), and pass that.")
            if b"\0" in start:
                raise UsageError(f"{name}: binary, not text. {what}: convert it (a .parquet or .arrow file: "
                                 "datasets' to_json), and pass that.")
            f.seek(0)
            for line_no, raw in enumerate(f, 1):
                if digest is not None:
                    digest.update(raw)
                try:
                    text = raw.removeprefix(_UTF8_BOM if line_no == 1 else b"").decode("utf-8")
                except UnicodeDecodeError:
                    raise UsageError(f"{name}:{line_no}: not UTF-8 text. {what}.") from None
                if not text.strip():
                    continue
                items += 1
                if not jsonl:
                    yield f"line {line_no}", text.strip()
                    continue
                try:
                    record = orjson.loads(text)
                except orjson.JSONDecodeError as e:
                    raise UsageError(f"{name}:{line_no}: invalid JSON ({e}). {what}.") from None
                value = record.get(field) if isinstance(record, dict) else None
                if not isinstance(value, str):
                    fields = _safe_text(", ".join(k for k, v in record.items() if isinstance(v, str))) \
                        if isinstance(record, dict) else ""
                    advice = (f" (its text fields: {fields}); name the one to use with --decontaminate-field"
                              if fields else f"; {what}")
                    raise UsageError(f"{name}:{line_no}: no text field {_safe_text(repr(field))}{advice}.")
                item = record.get("id")
                yield (str(item) if isinstance(item, (str, int)) and not isinstance(item, bool)
                       else f"line {line_no}"), value
    except OSError as e:
        raise UsageError(f"{name}: cannot read the benchmark file: {e.strerror}") from None
    if not items:
        raise UsageError(f"{name}: empty: no benchmark item in it. {what}.")


def _utf16(start: bytes) -> bool:
    """A file beginning so is UTF-16 (Windows' "Unicode"): a byte-order mark, or every other byte zero."""
    if start.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    even, odd = start[0:1024:2], start[1:1024:2]
    zeros = sorted(part.count(0) / len(part) for part in (even, odd) if part)
    return len(zeros) == 2 and zeros[0] < 0.1 and zeros[1] > 0.9


@dataclass
class _BenchmarkFile:
    name: str
    sha256: str = ""
    items: int = 0


class _BenchmarkIndex:
    """Every benchmark item's n-grams, hashed: which item a text quotes, if any. Besides: every item whole (a
    text that is an item, whatever its length, is caught), items too short for an n-gram matched whole inside
    a text, and, for an item whose n-grams touch a benchmark's boilerplate (masked), its own part: each run of
    its words clear of the boilerplate that is shorter than an n-gram, matched whole (under whole_from words,
    with the boilerplate words just before it to make whole_from), and the whole item, found by its first word
    of its own. So masking never hides the part of an item that is its own."""

    def __init__(self, settings: _HygieneSettings):
        self.n, self.field = settings.ngram, settings.text_field
        self.whole_from = min(_WHOLE_ITEM_WORDS, self.n)
        self.grams: dict[int, int] = {}  # n-gram -> the first item holding it
        self.shared: dict[int, int] = {}  # n-grams in two items or more -> how many
        self.sharing: set[int] = set()  # the items holding one
        # whole_from words -> (where they begin in what is matched, its length, hash of it, item)
        self.spans: dict[int, list[tuple[int, int, int, int]]] = {}
        self.whole: dict[int, int] = {}  # every item, by the hash of its words
        self.items: list[tuple[int, str]] = []  # (file, item name)
        self.files: list[_BenchmarkFile] = []
        self.masked = 0  # n-grams left out as boilerplate
        self.masked_items = 0  # items with some: matched by their own part instead

    def build(self, paths: list[Path]) -> _BenchmarkIndex:
        for number, path in enumerate(paths):
            digest, figures = hashlib.sha256(), _BenchmarkFile(str(path))
            self.files.append(figures)
            for name, text in _benchmark_items(path, self.field, digest):
                self._add(len(self.items), words_of(text))
                self.items.append((number, name))
                figures.items += 1
            figures.sha256 = digest.hexdigest()
        self._mask_boilerplate(paths)
        self.shared, self.sharing = {}, set()
        return self

    def _add(self, item: int, words: list[str]) -> None:
        if not words:
            return
        self.whole.setdefault(_hash64(" ".join(words)), item)
        if len(words) >= self.n:
            grams, shared = self.grams, self.shared
            for gram in set(_grams(words, self.n)):
                first = grams.setdefault(gram, item)
                if first != item:
                    shared[gram] = shared.get(gram, 1) + 1
                    self.sharing.update((first, item))
        elif len(words) >= self.whole_from:
            self._span(words, 0, item)

    def _span(self, words: list[str], at: int, item: int) -> None:
        """Match `words` whole inside a text, found by their whole_from words beginning at `at`."""
        self.spans.setdefault(_hash64(" ".join(words[at: at + self.whole_from])), []).append(
            (at, len(words), _hash64(" ".join(words)), item))

    def _mask_boilerplate(self, paths: list[Path]) -> None:
        frequent = {gram for gram, items in self.shared.items() if items > _BOILERPLATE_ITEMS}
        if not frequent:
            return
        item, w = 0, self.whole_from
        for path, figures in zip(paths, self.files):
            digest = hashlib.sha256()
            for _, text in _benchmark_items(path, self.field, digest):
                if item in self.sharing:
                    words = words_of(text)
                    grams = _grams(words, self.n)
                    masked = bytearray(len(words))
                    for i, gram in enumerate(grams):
                        if gram in frequent:
                            masked[i: i + self.n] = b"\1" * self.n
                    if any(masked):
                        self.masked_items += 1
                        for i, gram in enumerate(grams):
                            if any(masked[i: i + self.n]) and self.grams.pop(gram, None) is not None:
                                self.masked += 1
                        own = [i for i, boilerplate in enumerate(masked) if not boilerplate]
                        if own:  # the whole item, found by its first word of its own
                            self._span(words, min(own[0], len(words) - w), item)
                        for start, end in _runs(own):  # each part of its own too short for an n-gram
                            # under whole_from words: with the words before it (or after)
                            if end - start < self.n:
                                start = max(0, min(start, end - w))
                                self._span(words[start: max(end, start + w)], 0, item)
                item += 1
            if digest.hexdigest() != figures.sha256:
                raise UsageError(f"{_safe_text(str(path))}: the benchmark file changed while it was indexed; "
                                 "nothing was sent. Leave it as it is while a run reads it, then re-run.")

    def quoted(self, words: list[str]) -> tuple[int, int, int] | None:
        """(item, first word, words) of the first item the words quote, or None."""
        length = len(words)
        if length and (item := self.whole.get(_hash64(" ".join(words)))) is not None:
            return item, 0, length
        if length >= self.n:
            for i, gram in enumerate(_grams(words, self.n)):
                if (item := self.grams.get(gram)) is not None:
                    return item, i, self.n
        if self.spans and length >= self.whole_from:
            for i, gram in enumerate(_grams(words, self.whole_from)):
                for at, size, whole, item in self.spans.get(gram, ()):
                    start = i - at
                    if start >= 0 and start + size <= length and _hash64(" ".join(words[start: start
                                                                                        + size])) == whole:
                        return item, start, size
        return None

    def named(self, item: int) -> tuple[str, str]:
        number, name = self.items[item]
        return self.files[number].name, name

    def settings(self) -> dict:
        return {"ngram": self.n, "whole_items_from": self.whole_from, "boilerplate_items": _BOILERPLATE_ITEMS,
                "field": self.field, "boilerplate_ngrams_masked": self.masked,
                "items_with_boilerplate": self.masked_items,
                "files": [dataclasses.asdict(f) for f in self.files]}


def _runs(places: list[int]) -> Iterator[tuple[int, int]]:
    """(start, end) of each run of consecutive numbers in a sorted list."""
    for _, run in itertools.groupby(enumerate(places), lambda pair: pair[1] - pair[0]):
        numbers = [place for _, place in run]
        yield numbers[0], numbers[-1] + 1


def _grams(words: list[str], n: int) -> list[int]:
    """The hashes of the n-grams of `words`, sliced out of one joined string (no join per n-gram)."""
    import xxhash

    h, text, starts, at = xxhash.xxh3_64_intdigest, " ".join(words), [], 0
    for word in words:
        starts.append(at)
        at += len(word) + 1
    return [h(text[starts[i]: starts[i + n - 1] + len(words[i + n - 1])]) for i in range(len(words) - n + 1)]


class _Duplicates:
    """Keep-first over the prompts in file order, a prompt paid for (in the output, the rejected or the paused
    file) before any: it is never dropped, and an earlier copy of it goes instead. Exact copies: a dict of
    their words' hashes. Near copies: each chunk's signatures go into rensa's LSH index, which flags the
    prompts that share a band with an earlier one (or one of their chunk); a prompt not flagged has no earlier
    candidate and stays, unless a later prompt paid for is flagged with it. Only the index is held. Then those
    few are read again, in order, and dropped when a prompt that stays (an earlier one, or one paid for) is
    near."""

    def __init__(self, threshold: float):
        try:
            import rensa
        except ImportError:
            raise UsageError("--dedup needs the rensa package, which requirements.txt pins: run "
                             ".venv/bin/pip install -r requirements.txt") from None
        self.minhash, self.threshold = rensa.RMinHash, threshold
        self.lsh = rensa.RMinHashLSH(threshold, _NUM_PERM, _lsh_bands(threshold))
        # hash of a prompt's words -> the prompt that stays (~place: paid for)
        self.first: dict[int, int] = {}
        self.rows = array.array("q")  # index row -> prompt (its place in the pass)
        self.paid = bytearray()  # index row -> paid for
        self.flagged = array.array("q")  # rows that share a band with an earlier one
        # prompt -> (the prompt it repeats, similarity, exact)
        self.copies: dict[int, tuple[int, float, bool]] = {}
        self._words: list[list[str]] = []
        self._places: list[int] = []
        self._paid = bytearray()

    def add(self, place: int, prompt: Prompt, paid: bool) -> None:
        compared = _prompt_texts(prompt)
        words = words_of(" ".join(compared.texts))
        if not words and not compared.carries:
            return
        key = _hash64(f"{compared.context}\x1f{' '.join(words)}")
        first = self.first.setdefault(key, ~place if paid else place)
        if first < 0 and first != ~place and not paid:  # a copy of a prompt paid for
            self.copies[place] = (~first, 1.0, True)
            return
        if first >= 0 and first != place:
            if not paid:
                self.copies[place] = (first, 1.0, True)
                return
            self.copies[first] = (place, 1.0, True)  # the new copy goes, not the one paid for
            self.first[key] = ~place
        if len(words) >= _NEAR_MIN_WORDS:
            self._words.append(words)
            self._places.append(place)
            self._paid.append(paid)
            if len(self._places) >= _CHUNK:
                self._index()

    def _index(self) -> None:
        if self._places:
            start = len(self.rows)
            matrix = self.minhash.digest_matrix_from_token_sets(self._words, _NUM_PERM, _MINHASH_SEED)
            flags = self.lsh.insert_matrix_and_query_duplicate_flags(matrix, start_key=start)
            self.rows.extend(self._places)
            self.paid += self._paid
            self.flagged.extend(start + i for i, flag in enumerate(flags) if flag)
            self._words, self._places, self._paid = [], [], bytearray()

    def decide(self, read: Callable[[list[int]], Iterator[Prompt]]) -> None:
        self._index()
        self.first = {}  # the exact copies are known: their index goes
        rows, paid = self.rows, self.paid
        # exact copies that were indexed (an original a later paid copy replaced)
        gone = {row for place in self.copies if (row := bisect.bisect_left(rows, place)) < len(rows)
                and rows[row] == place}
        signed = self._signed(list(self.flagged), read)
        candidates = {row: sorted(c for c in self.lsh.query(signed[row][2]) if c != row)
                      for row in self.flagged}
        # a flagged prompt paid for may be the original of earlier ones, flagged or not
        earlier = {c for row in self.flagged if paid[row] for c in candidates[row] if c < row and not paid[c]}
        signed.update(self._signed(sorted(earlier - signed.keys()), read))
        candidates.update((row, sorted(c for c in self.lsh.query(signed[row][2]) if c != row))
                          for row in earlier - candidates.keys())
        signed.update(self._signed(sorted({c for cs in candidates.values() for c in cs} - signed.keys()),
                                   read))
        for row in sorted(candidates):  # in file order: a prompt dropped is no one's original
            if paid[row] or row in gone:
                continue
            _, context, signature = signed[row]
            for other in candidates[row]:
                if (other < row or paid[other]) and other not in gone and signed[other][1] == context:
                    similarity = signature.jaccard(signed[other][2])
                    if similarity >= self.threshold:
                        gone.add(row)
                        self.copies[rows[row]] = (rows[other], similarity, False)
                        break
        # a copy of a near copy repeats its original
        for place, (first, _, exact) in list(self.copies.items()):
            if exact and first in self.copies:
                self.copies[place] = self.copies[first]

    def _signed(self, rows: list[int], read: Callable[[list[int]], Iterator[Prompt]]) -> dict[int, tuple]:
        """row -> (prompt id, what else must match: its system message and parts, its signature), re-read."""
        signed = {}
        for start in range(0, len(rows), _CHUNK):
            part = rows[start: start + _CHUNK]
            prompts = list(read([self.rows[row] for row in part]))
            compared = [_prompt_texts(prompt) for prompt in prompts]
            signatures = self.minhash.from_token_sets([words_of(" ".join(c.texts)) for c in compared],
                                                      _NUM_PERM, _MINHASH_SEED)
            signed.update((row, (p.prompt_id, c.context, signature))
                          for row, p, c, signature in zip(part, prompts, compared, signatures))
        return signed


# ==================================================================================================
# Prompt hygiene
# ==================================================================================================
# --dedup and --decontaminate: the prompts dropped before anything is sent, alike in every shard; answers
# quoting a benchmark.

# Both read the whole prompts file (-n counts, --shard does not: every shard decides from the same file with
# fixed seeds, so they all drop the same prompts), after the output is scanned and before the plan. A prompt
# paid for (a line of any sample in the output or the rejected file, or turns in the paused file) is never
# dropped, and stands first in its group; the rest follow file order: the first of a group stays.
# Decontamination runs first and its index is freed before dedup builds its own. The settings below were
# measured on a planted corpus (bench/hygiene.py, docs/benchmarks.md figure 18).

_GROUPS_SHOWN = 3


def _shown(text: str, most: int = 60) -> str:
    """A prompt's beginning on one line, safe on a terminal (no control characters)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text[: most * 4]).split())
    return text if len(text) <= most else text[: most - 3] + "..."


@dataclass(slots=True)
class _Drop:
    """A prompt dropped (or, in the output already, flagged) and why: a line of the dropped-prompts file."""

    prompt_id: str
    line: int
    why: str  # "duplicate", "near duplicate" or "benchmark"
    text: str = ""  # its beginning, for messages (not written)
    of: str | None = None  # the prompt it repeats, which stays
    of_line: int | None = None
    of_text: str = ""
    similarity: float | None = None  # estimated share of distinct words in common (1: the same words)
    benchmark: str | None = None  # the benchmark file, the item and the words in common
    item: str | None = None
    quoted: str | None = None
    kept: str | None = None  # paid for already ("in the output already", ...): it stays, flagged

    def record(self) -> dict:
        record = {"prompt_id": self.prompt_id, "line": self.line}
        record.update({"kept": self.kept} if self.kept else {"dropped": self.why})
        if self.of is not None:
            record.update(duplicate_of=self.of, duplicate_of_line=self.of_line,
                          similarity=round(self.similarity, 3))
        if self.benchmark is not None:
            record.update(benchmark=self.benchmark, item=self.item, quoted=self.quoted)
        return record


@dataclass
class Hygiene:
    """What --dedup and --decontaminate found in the whole prompts file (every shard's plan takes its own)."""

    settings: _HygieneSettings
    prompts_file: str
    dropped: dict[str, _Drop] = field(default_factory=dict)  # prompt id -> why
    flagged_paid: list[_Drop] = field(default_factory=list)  # in the output already, holding a benchmark item
    prompts: int = 0  # prompts read
    benchmarks: dict | None = None  # what was indexed, with which settings
    seconds: float = 0.0
    # the shard whose dropped prompts this run lists (each decides alike)
    shard: tuple[int, int] | None = None

    def header(self, here: list[str]) -> dict:
        """The dropped-prompts file's first line: settings, files and counts, what the dataset card says."""
        whys = collections.Counter(self.dropped[prompt_id].why for prompt_id in here)
        dedup = None
        if self.settings.dedup:
            from importlib.metadata import version

            import rensa

            dedup = {"threshold": self.settings.threshold, "near_from_words": _NEAR_MIN_WORDS,
                     "shingles": "words",
                     "num_perm": _NUM_PERM, "bands": _lsh_bands(self.settings.threshold),
                     "rows": _NUM_PERM // _lsh_bands(self.settings.threshold), "seed": _MINHASH_SEED,
                     "library": f"rensa {version('rensa')}", "algorithm": rensa.RMinHash.ALGORITHM_VERSION}
        return {"hygiene": {"prompts_file": self.prompts_file, "prompts": self.prompts, "dropped": dict(whys),
                            "kept_in_output": len(self.flagged_paid),
                            "shard": f"{self.shard[0]}/{self.shard[1]}" if self.shard else None,
                            "words": {"rule": _WORDS_RULE, "unicode": unicodedata.unidata_version},
                            "dedup": dedup, "decontaminate": self.benchmarks}}

    def records(self, here: list[str]) -> Iterator[dict]:
        yield self.header(here)
        for prompt_id in here:
            yield self.dropped[prompt_id].record()
        for drop in self.flagged_paid:
            yield drop.record()

    def describe(self, here: list[str], listed: str) -> list[str]:
        """The summary's (and --dry-run's) words: how many were dropped, and a few groups."""
        drops = [self.dropped[prompt_id] for prompt_id in here]
        checks = " and ".join(flag for flag, on in (("--dedup", self.settings.dedup),
                                                    ("--decontaminate", self.settings.benchmarks)) if on)
        lines = []
        if not drops:
            lines.append(f"Prompt hygiene ({checks}, {self.seconds:.1f} s): none of "
                         f"{_plural(self.prompts, 'prompt')} dropped.")
        else:
            whys = collections.Counter(drop.why for drop in drops)
            same, near, quoting = whys["duplicate"], whys["near duplicate"], whys["benchmark"]
            kinds = ([f"{same + near} repeating another prompt ({same} word for word, {near} nearly)"]
                     if same + near else []) + ([f"{quoting} holding a benchmark item"] if quoting else [])
            lines.append(f"Dropped before sending ({checks}, {self.seconds:.1f} s): "
                         f"{_plural(len(drops), 'prompt')} of {self.prompts:,}: {'; '.join(kinds)}; "
                         f"{listed}.")
        groups: dict[str, list[_Drop]] = {}
        for drop in drops:
            if drop.of is not None:
                groups.setdefault(drop.of, []).append(drop)
        for kept in sorted(groups.values(), key=len, reverse=True)[:_GROUPS_SHOWN]:
            copies = ", ".join(f"line {d.line} ("
                               + ("the same words" if d.why == "duplicate" else f"{d.similarity:.0%} alike")
                               + ")" for d in kept[:4])
            copies += f" and {len(kept) - 4} more" if len(kept) > 4 else ""
            paid = " (paid for already)" if any(d.line < (d.of_line or 0) for d in kept) else ""
            lines.append(f"  kept line {kept[0].of_line}{paid} \"{kept[0].of_text}\"; dropped {copies}")
        quoting = [drop for drop in drops if drop.benchmark is not None]
        lines += [f"  line {d.line} \"{d.text}\" holds {_safe_text(d.benchmark or '')} item "
                  f"{_safe_text(d.item or '', 40)}: \"{_shown(d.quoted or '', 80)}\""
                  for d in quoting[:_GROUPS_SHOWN]]
        if self.flagged_paid:
            where = collections.Counter(drop.kept for drop in self.flagged_paid)
            lines.append("Kept, though they hold a benchmark item: "
                         f"{_plural(len(self.flagged_paid), 'prompt')} paid for already "
                         f"({', '.join(f'{n} {why}' for why, n in where.items())}; the first: line "
                         f"{self.flagged_paid[0].line}); {listed}. Take their lines out before training if "
                         "that benchmark matters.")
        return lines


@dataclass(frozen=True)
class _PaidFor:
    """The prompts with work paid for, by the hashes of their ids: a line in the output or the rejected file
    (whatever its sample), or turns saved in the paused file. Such a prompt is never dropped (Main reads
    them)."""

    in_output: Container[int] = frozenset()
    rejected: Container[int] = frozenset()
    paused: Container[int] = frozenset()

    def why(self, prompt_id: str) -> str | None:
        key = hash(prompt_id)
        return ("in the output already" if key in self.in_output else "in the rejected file already"
                if key in self.rejected else "paused, its turns paid for" if key in self.paused else None)


def _prompt_hygiene(prompts: PromptSettings, settings: _HygieneSettings, paid: _PaidFor,
                   log: Callable[[str], None]) -> Hygiene | None:
    """The prompts --dedup and --decontaminate drop, from the whole file; UsageError for a bad benchmark
    file."""
    if not settings.active:
        return None
    hygiene = Hygiene(settings, prompts.input.name, shard=prompts.shard)
    # each shard decides from the whole file alike
    every = dataclasses.replace(prompts, shard=None, samples=1)
    try:
        return _found(hygiene, prompts, every, paid, log)
    except _PromptsChanged as e:
        raise UsageError(f"{prompts.input}: the prompts file changed while --dedup read it ({e}); nothing "
                         "was sent. Leave it as it is while a run reads it (write changes to a new file), "
                         "then re-run.") from None


def _found(hygiene: Hygiene, prompts: PromptSettings, every: PromptSettings, paid: _PaidFor,
           log: Callable[[str], None]) -> Hygiene:
    settings, started = hygiene.settings, time.monotonic()
    duplicates = _Duplicates(settings.threshold) if settings.dedup else None  # rensa missing: said at once
    contaminated = _decontaminate(hygiene, every, paid, log) if settings.benchmarks else set()
    if duplicates is not None:
        log("Prompt hygiene: looking for duplicates among the prompts of "
            f"{_safe_text(str(prompts.input))}...")
        offsets, repeats, lines, ids = (array.array("q") for _ in range(4))
        for place, job in enumerate(iter_jobs(every)):
            prompt = job.prompt
            offsets.append(prompt.offset)
            repeats.append(prompt.repeat)
            lines.append(prompt.line_no)
            ids.append(hash(prompt.prompt_id))
            if place not in contaminated:
                duplicates.add(place, prompt, paid.why(prompt.prompt_id) is not None)
        hygiene.prompts = len(offsets)

        def read(places: list[int]) -> Iterator[Prompt]:
            return _read_prompts_at(prompts.input, prompts.system,
                                   ((offsets[i], repeats[i], lines[i], ids[i]) for i in places))

        duplicates.decide(read)
        del duplicates.lsh
        places = sorted(set(duplicates.copies) | {first for first, _, _ in duplicates.copies.values()})
        named = {place: (prompt.prompt_id, prompt.line_no, _shown(" ".join(_prompt_texts(prompt).texts)))
                 for place, prompt in zip(places, read(places))}
        for place, (first, similarity, exact) in sorted(duplicates.copies.items()):
            (prompt_id, line, text), (original, original_line, original_text) = named[place], named[first]
            hygiene.dropped[prompt_id] = _Drop(prompt_id, line, "duplicate" if exact else "near duplicate",
                                               text,
                                              of=original, of_line=original_line, of_text=original_text,
                                              similarity=similarity)
    hygiene.seconds = time.monotonic() - started
    return hygiene


def _decontaminate(hygiene: Hygiene, every: PromptSettings, paid: _PaidFor,
                   log: Callable[[str], None]) -> set[int]:
    """The prompts holding a benchmark item (their places in the file); the index is gone when it returns.
    Every text a prompt sends is read, whatever its role, each alone and all together (an item split between
    two messages). --system, sent before every prompt, is checked once: holding an item, it stops the run."""
    paths = _benchmark_files(hygiene.settings.benchmarks)
    log(f"Prompt hygiene: indexing {_plural(len(paths), 'benchmark file')} ({hygiene.settings.ngram}-word "
        "n-grams)...")
    index = _BenchmarkIndex(hygiene.settings).build(paths)
    log(f"Prompt hygiene: {_plural(len(index.items), 'benchmark item')} indexed; checking the prompts...")
    if every.system and (hit := index.quoted(words := words_of(every.system))) is not None:
        item, first, size = hit
        benchmark, name = index.named(item)
        raise UsageError(f"--system holds item {_safe_text(name)} of the benchmark file "
                         f"{_safe_text(benchmark)} (\"{_shown(' '.join(words[first: first + size]), 80)}\"), "
                         "and it is sent before every prompt: nothing was sent. Take the item out of the "
                         "system prompt.")
    contaminated, hygiene.prompts = set(), 0
    for place, job in enumerate(iter_jobs(every)):
        hygiene.prompts += 1
        texts = _prompt_texts(job.prompt).every_text
        for text in texts + (["\n".join(texts)] if len(texts) > 1 else []):
            words = words_of(text)
            if (hit := index.quoted(words)) is not None:
                item, first, size = hit
                benchmark, name = index.named(item)
                drop = _Drop(job.prompt.prompt_id, job.prompt.line_no, "benchmark", _shown(text),
                             benchmark=benchmark,
                            item=name, quoted=" ".join(words[first: first + size]),
                            kept=paid.why(job.prompt.prompt_id))
                if drop.kept:
                    hygiene.flagged_paid.append(drop)
                else:
                    hygiene.dropped[drop.prompt_id] = drop
                    contaminated.add(place)
                break
    hygiene.benchmarks = index.settings()
    return contaminated  # and the index goes before dedup builds its own: both would be ~2 GB at 1M prompts


_WHYS = ("duplicate", "near duplicate", "benchmark")


@dataclass
class _DroppedList:
    """A dropped-prompts file as read back, by one strict rule: its first lines (one for each shard's file
    merged into it), the prompts it lists as dropped (id -> why) and as kept (paid for, holding a benchmark
    item), and its lines that are not what this tool writes ("file:LINE: what is wrong"), which count for
    nothing."""

    headers: list[dict] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)
    odd: list[str] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)  # the entries as written, in order (a rewrite keeps them)


def _read_dropped(records: Iterable[tuple[int, dict | None]], name: str) -> _DroppedList:
    """(line number, its JSON object or None) of each line -> what the file lists."""
    listed = _DroppedList()
    for line_no, record in records:
        where = f"{_safe_text(name)}:{line_no}"
        if not isinstance(record, dict):
            listed.odd.append(f"{where}: not a JSON object (torn, or edited by hand)")
        elif "hygiene" in record:
            if isinstance(record["hygiene"], dict):
                listed.headers.append(record["hygiene"])
            else:
                listed.odd.append(f"{where}: \"hygiene\" is not an object")
        elif not isinstance(record.get("prompt_id"), str):
            listed.odd.append(f"{where}: no string \"prompt_id\"")
        elif record.get("dropped") in _WHYS and "kept" not in record:
            listed.dropped[record["prompt_id"]] = record["dropped"]
            listed.lines.append(record)
        elif isinstance(record.get("kept"), str) and record["kept"] and "dropped" not in record:
            listed.kept[record["prompt_id"]] = record["kept"]
            listed.lines.append(record)
        else:
            listed.odd.append(f"{where}: neither \"dropped\" ({', '.join(_WHYS)}) nor \"kept\" (a reason)")
    return listed


@dataclass
class _AnswerQuotes:
    """--decontaminate at --export and --report: the lines whose answers quote a benchmark item (not
    dropped)."""

    benchmarks: dict
    lines: int = 0  # lines checked
    flagged: list[dict] = field(default_factory=list)
    # why the answers were not checked (a benchmark file changed into one unusable)
    skipped: str | None = None

    def changed_since(self, headers: list[dict]) -> list[str]:
        """The benchmark files that are not what the prompts were checked against (the dropped-prompts file's
        sha256 of each): the answers were checked against them as they are now."""
        then = {f.get("name"): f.get("sha256") for header in headers
                if isinstance(header.get("decontaminate"), dict)
                for f in header["decontaminate"].get("files") or () if isinstance(f, dict)}
        return [f"{_safe_text(f['name'])} changed since the prompts were checked (sha256 {then[f['name']]} "
                f"then, {f['sha256']} now): the answers were checked against it as it is now."
                for f in self.benchmarks.get("files", ()) if then.get(f["name"]) not in (None, f["sha256"])]


def _answers_quoting(records: Iterable[dict | None], settings: _HygieneSettings) -> _AnswerQuotes:
    """The same n-gram check over the teacher's answers (content and reasoning) of each output line."""
    index = _BenchmarkIndex(settings).build(_benchmark_files(settings.benchmarks))
    quotes = _AnswerQuotes(index.settings())
    for line_no, record in enumerate(records, 1):
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list):
            continue
        quotes.lines += 1
        key = RolloutKey.of_line(record)
        for text in (m.get(part) for m in messages if isinstance(m, dict) and m.get("role") == "assistant"
                     for part in ("content", "reasoning_content")):
            if isinstance(text, str) and (hit := index.quoted(words := words_of(text))) is not None:
                item, first, size = hit
                benchmark, name = index.named(item)
                quotes.flagged.append({"line": line_no, "prompt_id": key and key.prompt_id,
                                       "sample": key and key.sample, "benchmark": benchmark, "item": name,
                                       "quoted": " ".join(words[first: first + size])})
                break
    return quotes


def _hygiene_figures(listed: _DroppedList, quotes: _AnswerQuotes | None) -> dict:
    """The counts the report shows: from the dropped-prompts file, and this export's check of the answers."""
    whys = collections.Counter(listed.dropped.values())
    return {"duplicates": whys["duplicate"] + whys["near duplicate"], "benchmark": whys["benchmark"],
            "kept_in_output": len(listed.kept), "checked": bool(listed.headers),
            "answers_quoting": None if quotes is None else len(quotes.flagged)}


# ==================================================================================================
# The rnow stand-in
# ==================================================================================================
# What tools.py and rewards.py import from rnow (tool, reward, their arguments), when rnow is not installed.


@dataclass
class ToolArgs:
    """Stand-in for rnow.models.ToolArgs: what a tool's `args` parameter receives."""

    metadata: dict = field(default_factory=dict)


def _rnow_schema_for_type(py_type: Any) -> dict:
    """The JSON schema rnow 0.4 maps a parameter annotation to (quirks included, e.g. `T | None`)."""
    origin = typing.get_origin(py_type) or py_type
    args = typing.get_args(py_type)
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    if origin in simple:
        return {"type": simple[origin]}
    if origin is list:
        return {"type": "array", "items": _rnow_schema_for_type(args[0])} if args else {"type": "array"}
    if origin is dict:
        return {"type": "object"}
    if origin is typing.Literal:
        return {"type": "string", "enum": list(args)}
    if origin is typing.Union:
        options = [a for a in args if a is not type(None)]
        nullable = len(options) < len(args)
        if len(options) == 1:
            schema = _rnow_schema_for_type(options[0])
            if nullable and "type" in schema:
                kind = schema["type"]
                schema["type"] = kind + ["null"] if isinstance(kind, list) else [kind, "null"]
            return schema
        return {"anyOf": [_rnow_schema_for_type(a) for a in options]
                + ([{"type": "null"}] if nullable else [])}
    return {"type": "string"}


def _rnow_returns_json(py_type: Any) -> bool:
    """rnow 0.4's return-type check, quirks included: `Optional[str]` passes, `str | None` and `Path` do
    not."""
    origin = typing.get_origin(py_type) or py_type
    if origin in (str, int, float, bool, list, dict, type(None)):
        return True
    if origin is typing.Union:
        return all(_rnow_returns_json(a) for a in typing.get_args(py_type))
    return origin is typing.Literal or py_type is Any


def _rnow_tool_schema(func: Callable) -> dict:
    """Validate a tool function as rnow's @tool does, in its order and with its words, and build its
    parameters schema: a tools.py that loads here must load under `rnow run` too."""
    name = func.__name__
    if not (func.__doc__ or "").strip():
        raise ValueError(f"Tool '{name}' must have a non-empty docstring. Add a docstring to the function.")
    signature = inspect.signature(func)
    hints = typing.get_type_hints(func)
    if signature.return_annotation is inspect.Signature.empty and "return" not in hints:
        raise TypeError(f"Tool registration failed: Tool '{name}' must declare a return type annotation. "
                        "Add -> ReturnType to the function signature.")
    return_type = hints.get("return", signature.return_annotation)
    if not _rnow_returns_json(return_type):
        raise TypeError(f"Tool registration failed: Tool '{name}' return type '{return_type}' is not "
                        "JSON-serializable. Use dict, list, str, int, float, bool, or None.")
    for param in signature.parameters.values():
        star = {param.VAR_POSITIONAL: "*args", param.VAR_KEYWORD: "**kwargs"}.get(param.kind)
        if star:
            raise TypeError(f"Tool registration failed: Tool '{name}' cannot use {star}. "
                            "Define explicit, typed parameters instead.")
    properties, required = {}, []
    for param in signature.parameters.values():
        if param.name in ("self", "cls", "args"):
            continue
        if param.name not in hints:
            raise TypeError(f"Tool registration failed: Missing type hint for parameter '{param.name}' in "
                            f"tool '{name}'. All parameters must have type annotations.")
        properties[param.name] = _rnow_schema_for_type(hints[param.name])
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _rnow_tool_decorator(fn: Callable | None = None, *, sandbox: bool = False, timeout: int | None = None):
    """Stand-in for rnow.core.tool.tool: @tool or @tool(timeout=..., sandbox=...)."""

    def decorate(func: Callable) -> Callable:
        schema = _rnow_tool_schema(func)
        func._is_tool, func._tool_name, func._schema = True, func.__name__, schema
        func._description, func._is_sandbox, func._timeout = func.__doc__.strip(), sandbox, timeout
        return func

    return decorate(fn) if fn else decorate


def _install_rnow_stand_in() -> None:
    """Make `from rnow.core.tool import tool`, `from rnow.core import RewardArgs, reward, get_response`
    (and the other spellings) work without rnow."""
    try:
        import rnow.core.tool  # noqa: F401  (the real decorator, used as it is)
        return
    except ImportError:
        pass
    names = ("rnow", "rnow.core", "rnow.core.tool", "rnow.core.reward", "rnow.models")
    modules = {name: types.ModuleType(name) for name in names}
    for module in modules.values():
        module.__path__ = []  # a package, so submodule imports resolve through sys.modules
    core, models = modules["rnow.core"], modules["rnow.models"]
    modules["rnow.core.tool"].tool = core.tool = _rnow_tool_decorator
    modules["rnow.core.reward"].reward = core.reward = _rnow_reward_decorator
    models.ToolArgs = core.ToolArgs = ToolArgs
    models.RewardArgs = core.RewardArgs = RewardArgs
    models.get_response = core.get_response = get_response
    core.llm_judge = _llm_judge
    modules["rnow"].core, modules["rnow"].models = core, models
    sys.modules.update(modules)


@dataclass
class RewardArgs:
    """Stand-in for rnow.models.RewardArgs: what a reward's `args` receives."""

    metadata: dict = field(default_factory=dict)
    variables: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict)


def get_response(messages: list) -> str:
    """Stand-in for rnow.models.get_response: the text of the last assistant message."""
    content = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "assistant"), "")
    if isinstance(content, list):
        texts = [part.get("text", "") for part in content if part.get("type") == "text"]
        if texts:
            return "".join(texts)
        return "".join(p.get("text", "") or p.get("thinking", "") for p in content)
    return content or ""


async def _llm_judge(*args: Any, **kwargs: Any) -> float:
    """Stand-in for rnow.core.llm_judge, which needs rnow (and an OpenAI key): install rnow to use it."""
    raise RuntimeError("llm_judge needs the rnow package: pip install rnow")


def _rnow_reward_signature_problem(func: Callable) -> str | None:
    """rnow 0.4's signature check for rewards, word for word (its missing f-string included)."""
    name, params = func.__name__, list(inspect.signature(func).parameters.values())
    if len(params) != 2:
        return (f"Reward '{name}' must have exactly 2 parameters: (args: RewardArgs, messages: list). "
                "Got {len(params)} parameters.")
    hints = typing.get_type_hints(func)
    args_param, messages_param = params
    if args_param.name not in hints:
        return f"Reward '{name}': parameter '{args_param.name}' must have type hint 'RewardArgs'."
    if hints[args_param.name] is not sys.modules["rnow.models"].RewardArgs:
        got = hints[args_param.name]
        return f"Reward '{name}': first parameter must be typed as 'RewardArgs', got '{got}'."
    if messages_param.name not in hints:
        return f"Reward '{name}': parameter '{messages_param.name}' must have type hint 'list'."
    messages_type = hints[messages_param.name]
    if (typing.get_origin(messages_type) or messages_type) is not list:
        return f"Reward '{name}': second parameter must be typed as 'list', got '{messages_type}'."
    if "return" not in hints:
        return f"Reward '{name}' must declare return type '-> float'."
    if hints["return"] is not float:
        return f"Reward '{name}' must return 'float', got '{hints['return']}'."
    return None


def _rnow_reward_decorator(fn: Callable | None = None, *, precondition: bool = False, sandbox: bool = False,
                          timeout: int | None = None):
    """Stand-in for rnow.core.reward: @reward or @reward(precondition=..., timeout=...)."""

    def decorate(func: Callable) -> Callable:
        problem = _rnow_reward_signature_problem(func)
        if problem:
            raise TypeError(f"Reward registration failed: {problem}")
        func._is_reward, func._reward_name, func._is_precondition = True, func.__name__, precondition
        func._is_sandbox, func._timeout = sandbox, timeout
        return func

    return decorate(fn) if fn else decorate


# ==================================================================================================
# Tools
# ==================================================================================================
# tools.py under rnow's @tool: loaded, each call run guarded; ToolUnavailable, ToolExit.
# tools.py is written for rnow: `from rnow.core.tool import tool`, then @tool on sync or async
# functions. When rnow is installed its decorator is used as it is; otherwise a stand-in module with
# the same decorator is installed first, building the very schema rnow would, so the student sees at
# training time exactly the tool definitions it will see at RL time.


@dataclass
class _Tool:
    name: str
    function: Callable
    description: str
    parameters: dict
    timeout: float | None
    wants_args: bool  # has an rnow `args: ToolArgs` parameter, filled with the prompt's metadata
    checks_arguments: bool = True  # rnow's argument checks apply to @tool functions, not to MCP tools

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    def api_schema(self) -> dict:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": self.parameters}}


def import_user_file(path: Path, kind: str) -> types.ModuleType:
    """Import tools.py or rewards.py (with rnow, or the stand-in). Whatever goes wrong is a UsageError
    naming the file and line, never a traceback."""
    _install_rnow_stand_in()
    spec = importlib.util.spec_from_file_location(f"distill_{kind}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except SystemExit as e:  # would end the run with exit 0 and nothing done
        raise UsageError(f"{_user_code_location(e, path)}: calls sys.exit({e.code!r}) while being imported; "
                         f"{path.name} must only define {kind}") from None
    except BaseException as e:  # the user's code: report where, not a traceback
        raise UsageError(f"{_user_code_location(e, path)}: {type(e).__name__}: {e}") from None
    return module


def load_tools(path: Path) -> tuple[list[_Tool], Callable | None]:
    """Import tools.py; return its @tool functions in file order and its optional `aclose` hook."""
    module = import_user_file(path, "tools")
    tools = [_tool_from_function(obj) for obj in vars(module).values()
             if callable(obj) and getattr(obj, "_is_tool", False)]
    if not tools:
        raise UsageError(f"{path}: no @tool functions found. Decorate tools with @tool, or pass --tools "
                         "none.")
    closer = getattr(module, "aclose", None)
    return tools, closer if callable(closer) else None


def _tool_from_function(func: Callable) -> _Tool:
    timeout = getattr(func, "_timeout", None)
    return _Tool(name=func._tool_name, function=func, description=func._description, parameters=func._schema,
                timeout=float(timeout) if timeout else None,
                wants_args="args" in inspect.signature(func).parameters)


def _user_code_location(error: BaseException, path: Path) -> str:
    if isinstance(error, SyntaxError) and error.lineno:
        return f"{path}:{error.lineno}"
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if Path(f.filename).resolve() == path.resolve()]
    return f"{path}:{frames[-1].lineno}" if frames else str(path)


class ToolUnavailable(Exception):
    """A tool raised an exception named ToolUnavailable: its own machinery failed (a crashed browser, a
    service down), not the call. The rollout is not written, since the teacher would go on without the
    tool: it fails, and runs again on the next run."""


def _is_tool_unavailable(error: BaseException) -> bool:
    # By name: tools.py cannot import from this script (rnow runs it without it), so it defines its own.
    return any(cls.__name__ == "ToolUnavailable" for cls in type(error).__mro__)


class ToolExit(Exception):
    """A tool raised SystemExit or KeyboardInterrupt: an error for that call, not the end of the run."""


async def _call_user_function(function: Callable, arguments: dict, timeout: float) -> Any:
    """Call a function of tools.py or rewards.py: async ones on the loop, sync ones on a thread of their
    own (so a blocking one stalls nothing else). TimeoutError after `timeout`; whatever it raised
    otherwise, with SystemExit and KeyboardInterrupt turned into ToolExit."""
    if inspect.iscoroutinefunction(function):
        call = asyncio.ensure_future(_guarded(function(**arguments)))
    else:
        call = _in_own_thread(function, arguments)
    # asyncio.wait, not wait_for: wait_for waits for a cancelled call to finish, for ever if it
    # swallows the cancellation; here a call past its time is abandoned.
    try:
        await asyncio.wait({call}, timeout=timeout)
        if not call.done():  # due: a result that already came is taken first (_LOOK_AGAIN)
            await asyncio.wait({call}, timeout=_LOOK_AGAIN)
    except asyncio.CancelledError:
        call.cancel()
        raise
    if not call.done():
        call.cancel()  # a thread cannot be stopped: it runs on, and its result is dropped
        raise TimeoutError
    return call.result()


def _in_own_thread(function: Callable, arguments: dict) -> asyncio.Future:
    """Run a sync function on a new daemon thread. Not a pool: a call that never returns would keep its
    pool thread for good, and a few of them would leave every later call queued behind them until it
    timed out. A thread of its own is abandoned alone, and a daemon does not hold the process at exit."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def work() -> None:
        try:
            result = _call_guarded(function, arguments)
        except BaseException as e:  # noqa: BLE001  (handed to the loop, which decides)
            report = functools.partial(settle, functools.partial(future.set_exception, e))
        else:
            report = functools.partial(settle, functools.partial(future.set_result, result))
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for this any more
            loop.call_soon_threadsafe(report)

    threading.Thread(target=work, name=f"user-{getattr(function, '__name__', 'call')}", daemon=True).start()
    return future


def _error_summary(error: BaseException, limit: int, redact: Callable[[str], str] | None = None) -> str:
    """An error of the user's code in one text: the secrets out first (redact), then cut."""
    text = _printable(f"{type(error).__name__}: {error}")
    return (redact(text) if redact is not None else text)[:limit]


def _printable(text: str) -> str:
    """Text from user code may hold anything, lone surrogates included: made safe to write and print."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _call_guarded(function: Callable, arguments: dict) -> Any:
    try:
        return function(**arguments)
    except (SystemExit, KeyboardInterrupt) as e:
        raise ToolExit(f"{type(e).__name__}({e})") from None


async def _guarded(awaitable: Any) -> Any:
    # Caught inside the coroutine: a SystemExit that reaches asyncio's Task machinery ends the event loop.
    try:
        return await awaitable
    except (SystemExit, KeyboardInterrupt) as e:
        raise ToolExit(f"{type(e).__name__}({e})") from None


_JSON_TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def _decode_tool_arguments(raw: Any, name: str) -> dict:
    """A call's arguments as a dict (the API sends them as a JSON string)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        arguments = {}
    elif isinstance(raw, dict):
        arguments = dict(raw)
    else:
        try:
            arguments = json.loads(raw)
        except (json.JSONDecodeError, TypeError):
            raise ValueError(f"arguments for {name!r} are not valid JSON: {str(raw)[:200]!r}") from None
    if not isinstance(arguments, dict):
        raise ValueError(f"arguments for {name!r} must be a JSON object, got {type(arguments).__name__}")
    return arguments


def _parse_tool_arguments(raw: Any, tool: _Tool) -> dict:
    """Decode and check a call's arguments the way rnow does at RL time (with its type coercions)."""
    arguments = _decode_tool_arguments(raw, tool.name)
    properties = tool.parameters.get("properties", {})
    missing = [key for key in tool.parameters.get("required", []) if key not in arguments]
    if missing:
        raise ValueError(f"tool {tool.name!r} is missing required argument(s): {', '.join(missing)}")
    unexpected = [key for key in arguments if key not in properties]
    if unexpected:
        raise ValueError(f"tool {tool.name!r} got unexpected argument(s): {', '.join(unexpected)}; "
                         f"it takes: {', '.join(properties) or 'no arguments'}")
    for key, value in arguments.items():
        kinds = properties[key].get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
        if kinds and not any(_JSON_TYPE_CHECKS.get(kind, lambda v: True)(value) for kind in kinds):
            arguments[key] = _coerce_argument(tool.name, key, value, kinds)
    return arguments


def _coerce_argument(tool_name: str, key: str, value: Any, kinds: list[str]) -> Any:
    for kind in kinds:
        with contextlib.suppress(ValueError, TypeError):
            if kind == "integer" and isinstance(value, str):
                return int(value)
            if kind == "number" and isinstance(value, str):
                return float(value)
            if kind == "boolean" and isinstance(value, str) and value.lower() in ("true", "1", "yes", "false",
                                                                                  "0", "no"):
                return value.lower() in ("true", "1", "yes")
            if kind == "string":
                return str(value)
    raise ValueError(f"tool {tool_name!r}: argument {key!r} should be {' or '.join(kinds)}, "
                     f"got {type(value).__name__}")


# ==================================================================================================
# MCP servers
# ==================================================================================================
# Tools from Model Context Protocol servers, under the names rnow gives them; their results as text.
# rnow lists the tools of `rollout.mcp_url` with fastmcp's client, naming its servers mcp_0, mcp_1, ...:
# with one server a tool keeps the server's name; with several, fastmcp prefixes it: mcp_1_search. The
# teacher sees the same names here, so the student learns the names it will call in RL. The client is the
# official MCP SDK's (`mcp`), which fastmcp itself is built on: the protocol's reference client, 8
# packages, against fastmcp's 30+.

_OPENAI_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _mcp_tool_name(server_index: int, servers: int, name: str) -> str:
    return name if servers == 1 else f"mcp_{server_index}_{name}"


class _ScrubbedLog:
    """Where a stdio MCP server's stderr goes: a pipe whose lines a thread copies to the log, each through the
    one scrub. The server has our environment, its own keys and the .env's with it, and may print them."""

    def __init__(self, path: Path, redact: Callable[[str], str]):
        self.path, self.redact = path, redact

    def __enter__(self) -> Any:
        read_end, write_end = os.pipe()
        self.writer = os.fdopen(write_end, "w")  # a file with a descriptor: what the SDK hands the process
        self.copier = threading.Thread(target=self._copy, args=(read_end,), daemon=True)
        self.copier.start()
        return self.writer

    def __exit__(self, *exc: Any) -> None:
        self.writer.close()  # the copy ends when the server's end is closed too
        self.copier.join(timeout=5)

    def _copy(self, read_end: int) -> None:
        with os.fdopen(read_end, "rb") as source, open(self.path, "a", encoding="utf-8",
                                                       errors="replace") as log:
            while line := source.readline(1 << 16):
                log.write(self.redact(line.decode("utf-8", "replace")))
                log.flush()


class _McpServer:
    """A connection to one MCP server, opened at start and re-opened after any failure: a call that
    fails, hangs past its timeout or meets a dead server is that call's error, and the next call
    connects again. The SDK's connections are anyio context managers that must close in the task that
    opened them, so one task (_hold) holds each connection open until it is closed or broken."""

    def __init__(self, spec: McpSpec, errlog: Path, connect_timeout: float = 30.0, as_proxy: bool = False,
                 redact: Callable[[str], str] = lambda text: text):
        self.spec, self.errlog, self.connect_timeout, self.redact = spec, errlog, connect_timeout, redact
        # With two servers or more, rnow's client (fastmcp) reaches each through a proxy client that declares
        # the roots, sampling and elicitation capabilities, and servers list the tools gated on them only
        # to such clients (server-everything does; fastmcp: client/transports/config.py). The same is
        # declared here, so the teacher is offered the tools the student will have; those requests are
        # answered with errors, and a tool that needs them ends as a clear tool error.
        self.as_proxy = as_proxy
        self._client: Any = None
        # Each connection's task; a dropped one (a call that hung or failed) is still shutting its server down
        # (the SDK closes stdin, waits, then ends the process tree), so aclose waits for all of them.
        self._holders: set[asyncio.Task] = set()
        self._closing = asyncio.Event()
        self._lock = asyncio.Lock()

    async def list_tools(self) -> list[Any]:
        client = await self._connected()
        tools, cursor = [], None
        while True:
            page = await asyncio.wait_for(client.list_tools(cursor=cursor), self.connect_timeout)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def call(self, name: str, arguments: dict) -> str:
        """The call's result as the teacher reads it (_mcp_result_text); `isError` as an error. A server
        that cannot be reached, or whose connection fails under the call, is ToolUnavailable: the teacher
        would go on without the tool, so the rollout fails and runs again next time (tools.py's rule)."""
        try:
            client = await self._connected()
        except (McpConnectError, TimeoutError, OSError) as e:
            raise ToolUnavailable(f"MCP server {self.spec.shown} cannot be reached: "
                                  f"{_secret_free_text(str(e) or type(e).__name__, self.spec)}") from None
        try:
            result = await client.call_tool(name, arguments)
        except BaseException as e:
            # dead, hung (cancelled by the tool timeout) or garbled: connect anew next time
            self._drop()
            if _connection_failed(e):
                raise ToolUnavailable(f"the connection to MCP server {self.spec.shown} failed: "
                                      f"{_secret_free_text(_mcp_error_text(e), self.spec)}") from None
            raise
        text = _mcp_result_text(result)
        if not result.is_error:
            return text
        text = text or "the tool failed"
        # the SDK's own say "Error executing ..."
        return text if text.startswith("Error") else f"Error: {text}"

    async def _connected(self) -> Any:
        async with self._lock:
            if self._client is None:
                self._closing = asyncio.Event()
                ready = asyncio.get_running_loop().create_future()
                holder = asyncio.create_task(self._hold(ready, self._closing))
                self._holders.add(holder)
                holder.add_done_callback(self._holders.discard)
                try:
                    await asyncio.wait_for(asyncio.shield(ready), self.connect_timeout)
                except BaseException:
                    self._drop()
                    raise
            return self._client

    async def _hold(self, ready: asyncio.Future, closing: asyncio.Event) -> None:
        import mcp

        try:
            with _ScrubbedLog(self.errlog, self.redact) as errlog:
                callbacks = ({"sampling_callback": _refuse_sampling,
                              "elicitation_callback": _refuse_elicitation,
                              "list_roots_callback": _refuse_roots} if self.as_proxy else {})
                async with mcp.Client(self._transport(errlog), **callbacks) as client:
                    self._client = client
                    ready.set_result(None)
                    await closing.wait()
        except BaseException as e:  # noqa: BLE001  (an ExceptionGroup from the SDK's task group, too)
            if not ready.done():
                ready.set_exception(McpConnectError(_mcp_error_text(e)))
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            self._client = None

    def _transport(self, errlog: Any) -> Any:
        if self.spec.is_url:
            return self.spec.target
        from mcp.client.stdio import StdioServerParameters, stdio_client

        command = shlex.split(self.spec.target)
        # The server gets our environment (its own keys live there), but never the teacher's key. The SDK
        # starts it in a session of its own, so a Ctrl-C in the terminal reaches the run, not the server.
        env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
        return stdio_client(StdioServerParameters(command=command[0], args=command[1:], env=env),
                            errlog=errlog)

    def _drop(self) -> None:
        self._closing.set()
        self._client = None

    async def aclose(self, timeout: float = 10.0) -> None:
        """Close the connection, and wait for every connection dropped before it to finish closing: a stdio
        server's process tree is ended by the SDK, which takes a few seconds for a server hung in a call."""
        self._closing.set()
        if self._holders:
            _, pending = await asyncio.wait(set(self._holders), timeout=timeout)
            for holder in pending:
                holder.cancel()


class McpConnectError(Exception):
    pass


async def _refuse_sampling(context: Any, params: Any) -> Any:
    from mcp import types

    return types.ErrorData(code=types.INVALID_REQUEST, message="this client (a distillation run) does not "
                           "sample for servers: the tool cannot ask the model")


async def _refuse_elicitation(context: Any, params: Any) -> Any:
    from mcp import types

    return types.ErrorData(code=types.INVALID_REQUEST, message="this client (a distillation run) has no user "
                           "to ask: the tool cannot elicit input")


async def _refuse_roots(context: Any) -> Any:
    from mcp import types

    return types.ErrorData(code=types.INVALID_REQUEST,
                           message="this client (a distillation run) shares no roots")


def _log_mcp_sdk_to(path: Path, redact: Callable[[str], str] | None = None) -> None:
    """The MCP SDK's own log lines go to <stem>.mcp.log, beside what stdio servers write to their stderr,
    never to the run's terminal: a server that prints a banner on stdout makes the SDK log a parse error
    with a traceback for every line of it. The secrets are out of each line (it may quote a URL whole)."""
    logger = logging.getLogger("mcp")
    if any(isinstance(h, logging.FileHandler) for h in logger.handlers):
        return
    handler = logging.FileHandler(path, encoding="utf-8", errors="replace", delay=True)
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(name)s %(levelname)s: %(message)s",
                                             redact=redact))
    logger.addHandler(handler)
    logger.propagate = False


class _RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, redact: Callable[[str], str] | None):
        super().__init__(fmt)
        self.redact = redact or (lambda text: text)

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def _connection_failed(error: BaseException) -> bool:
    """Whether a call failed because its connection did (the server exited, the socket broke), as
    opposed to the server answering it with an error or garbage. Errors in groups are looked into."""
    import anyio

    broken = (OSError, EOFError, anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream,
              httpx.TransportError)
    return any(getattr(getattr(e, "error", None), "code",
                       None) == _MCP_CONNECTION_CLOSED or isinstance(e, broken)
               for e in _innermost_errors(error))


def _innermost_errors(error: BaseException) -> Iterator[BaseException]:
    """The errors inside the exception groups the SDK nests them in (the error itself when it is none)."""
    todo = [error]
    while todo:
        e = todo.pop()
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        else:
            yield e


def _base64_size(data: Any) -> int:
    """The size of what base64 text encodes, without decoding it."""
    data = data if isinstance(data, str) else ""
    return len(data) * 3 // 4 - data[-2:].count("=")


_MCP_CONNECTION_CLOSED = -32000  # mcp_types.CONNECTION_CLOSED: the SDK's code for a connection that ended


def _mcp_result_text(result: Any) -> str:
    """A tool result as text for the teacher (and the dataset), every part kept in some form: text as it
    is; an embedded resource as its text (a binary one as a marker with its URI, type and size); a
    resource link as its name and URI; an image or audio part as a marker with its type and size; the
    structured content as JSON where there is no text. How ReinforceNow renders MCP output in RL happens
    on its servers; this is ours, written in the README."""
    parts = []
    for part in result.content or []:
        kind = getattr(part, "type", None)
        if kind == "text":
            parts.append(part.text)
        elif kind == "resource":
            resource = part.resource
            text = getattr(resource, "text", None)
            parts.append(text if isinstance(text, str) else
                         f"[resource {resource.uri} {getattr(resource, 'mime_type', None) or ''}, "
                         f"{_base64_size(getattr(resource, 'blob', ''))} bytes]".replace(" ,", ","))
        elif kind == "resource_link":
            label = getattr(part, "title", None) or part.name
            parts.append(f"[link: {label} <{part.uri}>]")
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {getattr(part, 'mime_type', '') or ''}, "
                         f"{_base64_size(getattr(part, 'data', ''))} bytes]".replace(" ,", ","))
        else:
            parts.append(f"[{kind or 'part'}]")
    structured = getattr(result, "structured_content", None)
    if not any(part.strip() for part in parts) and structured is not None:
        return json.dumps(structured, ensure_ascii=False, default=str)
    return "\n".join(parts)


def _mcp_error_text(error: BaseException) -> str:
    """The innermost errors of what the SDK raised (it nests them in exception groups), in one line."""
    leaves = [f"{type(e).__name__}: {e}" if str(e) else type(e).__name__ for e in _innermost_errors(error)]
    return "; ".join(dict.fromkeys(leaves))[:500]


def _check_tool_schema(name: str, where: str, schema: Any) -> None:
    """What OpenAI-compatible APIs refuse in a tool, refused here before anything is sent."""
    if not _OPENAI_TOOL_NAME.match(name):
        raise UsageError(f"{where}: the tool name {name!r} is not allowed by the API (letters, digits, _ and "
                         "-, at most 64)")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise UsageError(f"{where}: tool {name!r}: its input schema must be a JSON Schema object "
                         f"(\"type\": \"object\"); the server gave {json.dumps(schema)[:200]}")
    if not isinstance(schema.get("properties", {}), dict) or not (
            isinstance(schema.get("required", []),
                       list) and all(isinstance(k, str) for k in schema.get("required", []))):
        raise UsageError(f"{where}: tool {name!r}: `properties` must be an object and `required` a list of "
                         "names")


async def _open_mcp_servers(specs: list[McpSpec], errlog: Path, taken_names: set[str],
                           redact: Callable[[str], str] = lambda text: text) -> tuple[list[_McpServer],
                                                                                      list[_Tool]]:
    """Connect to every server and list its tools, named as rnow names them. A server down (or asking for
    OAuth), a schema the API would refuse or a name that clashes is a UsageError, before anything is sent."""
    servers, tools = [], []
    try:
        for index, spec in enumerate(specs):
            server = _McpServer(spec, errlog, as_proxy=len(specs) > 1, redact=redact)
            servers.append(server)
            try:
                listed = await server.list_tools()
            except (McpConnectError, TimeoutError, OSError) as e:
                text = str(e) or type(e).__name__
                if spec.is_url and (refusal := await _refusal(spec)):
                    raise UsageError(refusal) from None
                raise UsageError(f"MCP server {spec.shown} cannot be reached: "
                                 f"{_secret_free_text(text, spec)}. Start it (or check the URL or command), "
                                 "then re-run.") from None
            where = f"MCP server {spec.shown}"
            for listed_tool in listed:
                name = _mcp_tool_name(index, len(specs), listed_tool.name)
                if name in taken_names:
                    raise UsageError(f"{where}: tool {name!r} has the same name as a tool in tools.py. "
                                     "Rename one of them; the student must call each tool by one name.")
                schema = listed_tool.input_schema
                _check_tool_schema(name, where, schema)
                taken_names.add(name)
                tools.append(_Tool(name=name, function=_mcp_call(server, listed_tool.name),
                                  description=listed_tool.description or "", parameters=schema, timeout=None,
                                  wants_args=False, checks_arguments=False))
    except BaseException:
        for server in servers:
            await server.aclose()
        raise
    return servers, tools


def _mcp_call(server: _McpServer, name: str) -> Callable[..., Any]:
    """The tool as a function of its arguments, as the ToolBox calls every tool."""
    async def call(**arguments: Any) -> str:
        return await server.call(name, arguments)
    return call


def _save_mcp_schemas(tools: list[_Tool], path: Path, like: Path | None = None,
                     scrub: Callable[[Any], Any] = lambda value: value) -> None:
    """Kept beside the output (`like`), merged with what earlier runs kept (a tool may have left a server
    since); a server's words (descriptions) through the one scrub, as every file of ours."""
    schemas = _load_mcp_schemas(path)
    schemas.update({tool.name: scrub(tool.api_schema()) for tool in tools})
    try:
        with replaced_atomically(path, like) as target:
            target.write(orjson.dumps(schemas, option=orjson.OPT_INDENT_2))
    except OSError as e:
        raise OutputError(path, e) from None


def _load_mcp_schemas(path: Path) -> dict[str, dict]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return {name: schema for name, schema in data.items()
            if isinstance(schema, dict)} if isinstance(data, dict) else {}


async def _refusal(spec: McpSpec) -> str | None:
    """What it means when the server refuses us (401 or 403), which the SDK's own error does not say; None
    when it does not. A key given in the URL that is refused is a wrong key, whatever else the server offers.
    OAuth sign-in is what the server asks for only when it says so: the MCP spec's WWW-Authenticate with
    resource_metadata (2025-06), or authorization server metadata at /.well-known/ (2025-03)."""
    parts = urlparse(spec.target)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(spec.target, json={"jsonrpc": "2.0", "id": 0, "method": "ping"},
                                         headers={"Accept": "application/json, text/event-stream"})
            if response.status_code not in (401, 403):
                return None
            said = "resource_metadata" in response.headers.get("www-authenticate", "").lower()
            host = parts.netloc.rpartition("@")[2]
            oauth = said or (await client.get(
                f"{parts.scheme}://{host}/.well-known/oauth-authorization-server")).status_code == 200
    except httpx.HTTPError:
        return None
    refused = (f"MCP server {spec.shown} refused the connection ({response.status_code} "
               f"{response.reason_phrase})")
    if parts.query or parts.username or parts.password:
        return (f"{refused}: the key given in its URL was not accepted. Check it (and that it is in the "
                "parameter the server's documentation names), then re-run" + (
                    "; the server also offers OAuth sign-in, which this tool does not do." if oauth else "."))
    if oauth:
        return (f"MCP server {spec.shown} asks for OAuth sign-in, which this tool does not do. Give it a key "
                "in the URL or the environment instead.")
    return (f"{refused}, and asks for no OAuth sign-in: it wants a key. Give it one as its documentation "
            "says (in the URL, or in the environment for a stdio server), then re-run.")


def _secret_free_text(text: str, spec: McpSpec) -> str:
    """An error text from the SDK may quote the URL whole: its secrets are taken out."""
    return text.replace(spec.target, spec.shown) if spec.is_url else text


# ==================================================================================================
# The toolbox
# ==================================================================================================
# The tools of a run, tools.py's and the MCP servers' together: each call checked, timed and its result made
# text (ToolBox).


class ToolBox:
    """Runs the tool calls of assistant messages. Whatever goes wrong becomes text the teacher can read."""

    def __init__(self, tools: list[_Tool], settings: ToolSettings, closer: Callable | None = None,
                 redact: Callable[[str], str] | None = None):
        self.tools = {tool.name: tool for tool in tools}
        # Secret.redact, for what a tool says of its own failure (the failed file, the terminal)
        self.redact = redact
        self.default_timeout = settings.timeout
        self.max_chars = settings.max_chars
        self.closer = closer
        self.mcp_specs = settings.mcp
        self.mcp_servers: list[_McpServer] = []
        self._slots = asyncio.Semaphore(settings.concurrency)
        self.tally: dict[str, _ToolTally] = {}  # calls and errors by tool, for the summary

    def summary(self) -> list[str]:
        """The summary's lines on tools: calls and errors of each, and a warning for a tool that failed in
        most of its calls (a server refusing every page, a key missing): its error results reached the
        teacher."""
        if not self.tally:
            return []
        counts = [f"{name} {_plural(t.calls, 'call')}" + (f" ({t.errors} errors)" if t.errors else "")
                  for name, t in sorted(self.tally.items())]
        lines = ["Tools: " + ", ".join(counts)]
        for name, t in sorted(self.tally.items()):
            if t.errors * 2 > t.calls:
                lines.append(f"WARNING: tool {name!r} failed in {t.errors} of its "
                             f"{_plural(t.calls, 'call')}; the first error: {t.first_error.rstrip('.')}. "
                             "Those rollouts were written with the errors as the tool's results: check the "
                             "tool, then --rescore or delete them as you see fit.")
        return lines

    async def open_mcp(self, errlog: Path) -> list[_Tool]:
        """Connect to the MCP servers; their tools join the box. UsageError if one cannot be used."""
        if not self.mcp_specs:
            return []
        _log_mcp_sdk_to(errlog, self.redact)
        self.mcp_servers, tools = await _open_mcp_servers(list(self.mcp_specs), errlog, set(self.tools),
                                                          self.redact)
        self.tools.update({tool.name: tool for tool in tools})
        return tools

    @property
    def names(self) -> list[str]:
        return list(self.tools)

    def api_schemas(self) -> list[dict]:
        return [tool.api_schema() for tool in self.tools.values()]

    async def run_calls(self, tool_calls: list[dict], metadata: dict, allowed: tuple[str, ...] | None = None
                        ) -> list[dict]:
        """Run one assistant message's tool calls concurrently; results come back in call order. `allowed`:
        the prompt's own list of tools, when it has one. ToolUnavailable when a tool said its own machinery
        failed (once all the calls are over)."""
        results = await asyncio.gather(*(self.run_call(call, metadata, allowed) for call in tool_calls),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [{"role": "tool", "tool_call_id": call["id"], "content": result,
                 "name": call["function"]["name"]}
                for call, result in zip(tool_calls, results)]

    async def run_call(self, call: dict, metadata: dict, allowed: tuple[str, ...] | None = None) -> str:
        """The call's result as text, counted in the tally (an error is a result that says "Error")."""
        result = await self._run_call(call, metadata, allowed)
        name = call["function"]["name"]
        tally = self.tally.setdefault(name if name in self.tools else "(unknown tools)", _ToolTally())
        tally.calls += 1
        if result.startswith("Error"):
            tally.errors += 1
            # secrets out, then cut
            tally.first_error = tally.first_error or (self.redact or str)(_printable(result))[:300]
        return result

    async def _run_call(self, call: dict, metadata: dict, allowed: tuple[str, ...] | None) -> str:
        """The call's result as text. A tool is the user's code: whatever it does (raise, sys.exit, hang,
        ignore cancellation, return what cannot be encoded) ends as an error message for this call."""
        name = call["function"]["name"]
        available = list(self.tools) if allowed is None else [n for n in allowed if n in self.tools]
        tool = self.tools.get(name) if name in available else None
        if tool is None:
            return f"Error: unknown tool {name!r}. Available tools: {', '.join(available) or 'none'}."
        try:
            arguments = (_parse_tool_arguments(call["function"].get("arguments"),
                                               tool) if tool.checks_arguments
                         else _decode_tool_arguments(call["function"].get("arguments"), tool.name))
        except ValueError as e:
            return f"Error: {e}"
        if tool.wants_args:
            arguments["args"] = self._tool_args(metadata)
        timeout = tool.timeout or self.default_timeout
        async with self._slots:
            try:
                result = await _call_user_function(tool.function, arguments, timeout)
            except TimeoutError:
                return f"Error: tool {name!r} timed out after {timeout:g} s."
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    raise
                return f"Error: tool {name!r} was cancelled."
            except Exception as e:
                if _is_tool_unavailable(e):
                    raise ToolUnavailable(f"tool {name!r} is unavailable: "
                                           f"{_error_summary(e, 500, self.redact)}") from None
                return f"Error: tool {name!r} failed: {_error_summary(e, self.max_chars)}"
        return self._as_text(name, result)

    def _as_text(self, name: str, result: Any) -> str:
        try:
            text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
            text.encode("utf-8")  # a lone surrogate would break the request and the dataset line
        except Exception as e:  # circular, a __str__ that raises, lone surrogates, ...
            return (f"Error: tool {name!r} returned a result that cannot be encoded as text: "
                    f"{type(e).__name__}: {e}")[:500]
        if len(text) <= self.max_chars:
            return text
        cut = len(text) - self.max_chars
        return text[: self.max_chars] + f"\n\n[... truncated {cut} of {len(text)} characters]"

    @staticmethod
    def _tool_args(metadata: dict) -> Any:
        tool_args = sys.modules["rnow.models"].ToolArgs if "rnow.models" in sys.modules else ToolArgs
        return tool_args(metadata=metadata)

    async def aclose(self, timeout: float = 30.0) -> None:
        """Call tools.py's `aclose` hook (closes the browser); a hook that fails is ignored, one that
        hangs is abandoned after `timeout`."""
        for server in self.mcp_servers:
            await server.aclose()
        if self.closer is not None:
            with contextlib.suppress(Exception):
                result = _call_guarded(self.closer, {})
                if inspect.isawaitable(result):
                    await asyncio.wait({asyncio.ensure_future(_guarded(result))}, timeout=timeout)


@dataclass
class _ToolTally:
    calls: int = 0
    errors: int = 0
    first_error: str = ""


# ==================================================================================================
# Rewards
# ==================================================================================================
# rewards.py under rnow's @reward: the quality gate's scores.
# rewards.py is an rnow rewards file (`from rnow.core import RewardArgs, reward, get_response`), the one
# the user will use for RL. Every finished rollout is scored with it, as rnow would score it: the total
# is 0 when a precondition reward is 0, else the sum. As with tools, rnow's own decorator is used when
# rnow is installed, and a stand-in with its checks and its words when not.


@dataclass
class _Reward:
    name: str
    function: Callable
    precondition: bool
    timeout: float | None
    parameters: tuple[str, str]  # its names for (args, messages), read once at load


@dataclass
class _Score:
    values: dict[str, float]  # per reward; 0.0 for one that failed
    total: float
    errors: dict[str, str]  # reward -> what went wrong (raised, timed out, not a number)


def _load_rewards(path: Path) -> list[_Reward]:
    module = import_user_file(path, "rewards")
    rewards = [_Reward(obj._reward_name, obj, bool(getattr(obj, "_is_precondition", False)),
                      float(obj._timeout) if getattr(obj, "_timeout", None) else None,
                      tuple(inspect.signature(obj).parameters))
               for obj in vars(module).values() if callable(obj) and getattr(obj, "_is_reward", False)]
    if not rewards:
        raise UsageError(f"{path}: no @reward functions found. Decorate them with @reward "
                         "(from rnow.core import RewardArgs, reward).")
    return rewards


class RewardScorer:
    """Scores finished conversations with rewards.py. A reward that raises, hangs, exits or returns
    something that is not a number scores 0 for that rollout, with the reason kept in its metadata:
    it never loses the rollout and never stops the run. Sync rewards run off the event loop, async ones
    on it (rnow's own examples are async because libraries like math-verify are not thread-safe)."""

    def __init__(self, rewards: list[_Reward], timeout: float, redact: Callable[[str], str] | None = None):
        self.rewards, self.default_timeout = rewards, timeout
        # Secret.redact: a reward's error texts go into the line (metadata.reward_errors), which rnow uploads;
        # rewards get .env's values, and a judge that fails may quote its key
        self.redact = redact or (lambda text: text)
        from dotenv import dotenv_values

        self.secrets = {k: v for k, v in dotenv_values(".env").items()
                        if v is not None} if Path(".env").is_file() else {}

    async def score(self, metadata: dict, messages: list[dict]) -> _Score:
        results = await asyncio.gather(*(self._one(r, metadata, messages) for r in self.rewards))
        values = {r.name: value for r, (value, _) in zip(self.rewards, results)}
        errors = {r.name: error for r, (_, error) in zip(self.rewards, results) if error}
        total = self.total(values)
        if not math.isfinite(total):  # finite rewards whose sum is not (1e308 + 1e308): named, and scored 0
            total, errors["(total)"] = 0.0, "the sum of the rewards is too large for a float; scored 0"
        return _Score(values, total, errors)

    def total(self, values: dict[str, float]) -> float:
        """rnow's compute_total_reward: a precondition at 0 makes it 0, else the sum."""
        preconditions = {r.name for r in self.rewards if r.precondition}
        if any(values.get(name, 0.0) == 0.0 for name in preconditions):
            return 0.0
        return sum(values.values())

    async def _one(self, reward: _Reward, metadata: dict, messages: list[dict]) -> tuple[float, str | None]:
        # Each reward gets its own copy: one that edits the conversation changes neither the line nor the
        # others.
        args = sys.modules["rnow.models"].RewardArgs(metadata=orjson.loads(orjson.dumps(metadata)),
                                                     secrets=dict(self.secrets))
        arguments = dict(zip(reward.parameters, (args, orjson.loads(orjson.dumps(messages)))))
        timeout = reward.timeout or self.default_timeout
        try:
            value = await _call_user_function(reward.function, arguments, timeout)
        except TimeoutError:
            return 0.0, f"timed out after {timeout:g} s"
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                raise
            return 0.0, "cancelled"
        except Exception as e:
            return 0.0, f"failed: {_error_summary(e, 300, self.redact)}"
        number = _finite_real(value)
        if number is None:
            return 0.0, f"returned {_error_summary_value(value, self.redact)}, not a float"
        return number, None


def _finite_real(value: Any) -> float | None:
    """A reward's value as a float: any real number (numpy's float32 included), as rnow sums them; not a bool,
    a string, NaN, inf, nor an integer too large for a float (10**400), nor anything whose float() fails."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except Exception:  # OverflowError for 10**400; the user's own number type may raise anything
        return None
    return number if math.isfinite(number) else None


def _error_summary_value(value: Any, redact: Callable[[str], str]) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"a {type(value).__name__}"
    return redact(_printable(text))[:100]


# ==================================================================================================
# Spend
# ==================================================================================================
# Tokens and cost of each answer (Usage), and the run's counters (Stats).


@dataclass
class Usage:
    """Tokens and cost, summed over a rollout's answered requests (and over the run's rollouts in Stats)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens read from the provider's cache
    cache_write_tokens: int = 0  # prompt tokens written to it (billed above the input price by some)
    cost: float = 0.0
    # what caching saved, where the teacher reports it (OpenRouter's cache_discount)
    cache_savings: float = 0.0
    requests: int = 0
    uncosted: int = 0  # of those, answers whose cost the teacher did not report: unknown, not $0

    def add(self, usage: Any) -> None:
        """One answered request. The teacher's numbers are untrusted: a field that is missing, of the
        wrong type, negative or not finite counts as 0, never as an error (and a cost so, as not reported)."""
        self.requests += 1
        self.uncosted += not _has_cost(usage)
        if not isinstance(usage, dict):
            return
        self.prompt_tokens += int(_amount(usage.get("prompt_tokens")))
        self.completion_tokens += int(_amount(usage.get("completion_tokens")))
        self.reasoning_tokens += int(_amount(_field_of(usage.get("completion_tokens_details"),
                                                       "reasoning_tokens")))
        self.cached_tokens += int(_amount(_field_of(usage.get("prompt_tokens_details"), "cached_tokens")))
        self.cache_write_tokens += int(_amount(_field_of(usage.get("prompt_tokens_details"),
                                                         "cache_write_tokens")))
        self.cost += _amount(usage.get("cost"))
        self.cache_savings += _signed_amount(usage.get("cache_discount"))  # negative when writes cost more

    def merge(self, other: Usage) -> None:
        for name in _USAGE_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict:
        # Spelled out rather than dataclasses.asdict: this runs once per line, ~10x cheaper. `uncosted` only
        # when some answer's cost was not reported: then `cost` counts the others, and is not the whole bill.
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                 "reasoning_tokens": self.reasoning_tokens, "cached_tokens": self.cached_tokens,
                 "cache_write_tokens": self.cache_write_tokens, "cost": round(self.cost, 8),
                 "cache_savings": round(self.cache_savings, 8), "requests": self.requests}
        if self.uncosted:
            usage["uncosted"] = self.uncosted
        return usage

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


_USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Usage))


def _has_cost(usage: Any) -> bool:
    """Whether an answer's usage reports a cost we can count (missing, negative, a string: no)."""
    cost = usage.get("cost") if isinstance(usage, dict) else None
    return isinstance(cost, (int, float)) and not isinstance(cost, bool) and _amount(cost) == cost


def _amount(value: Any) -> float:
    """A usable non-negative number, or 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    if isinstance(value, int) and value > 2**53:  # float() of a huge int overflows; no real count is this big
        return 0.0
    return float(value) if math.isfinite(value) and value >= 0 else 0.0


def _signed_amount(value: Any) -> float:
    """A usable finite number of either sign, or 0."""
    if isinstance(value, (int, float)) and value < 0:
        return -_amount(-value)
    return _amount(value)


def _field_of(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else None


@dataclass
class Stats:
    """Counters shown by the progress bar and the summary, kept from rollout outcomes."""

    written: int = 0
    failed: int = 0  # rollouts that went to the failed file this run
    unsaved: int = 0  # finished, but the output could not be written (disk): they run again next time
    paused: int = 0  # stopped between turns with their turns saved: they go on next run, nothing paid twice
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    # every answered request: written, failed and stopped rollouts
    usage: Usage = field(default_factory=Usage)
    failure_reasons: collections.Counter = field(default_factory=collections.Counter)
    # Two cost totals: `billed` grows answer by answer, rollouts in progress included (the spend cap and the
    # bar read it); usage.cost grows as rollouts settle (the summary, and the cost per finished rollout).
    billed: float = 0.0
    answers: int = 0  # answers received (200s), for the mean cost of a request
    uncosted: int = 0  # of those, answers whose usage carried no usable cost (counted as 0)
    cost_unknown: int = 0  # streamed answers cut before their usage came: paid, at a cost nobody told us
    rejected: int = 0  # rollouts below --min-reward this run
    exhausted: int = 0  # of those, the last try of their prompt: finished without a line in the output
    scored: int = 0
    reward_sum: float = 0.0
    passed_first: int = 0  # accepted on a prompt's first try
    first_tries: int = 0  # first tries judged
    given_up: list[str] = field(default_factory=list)  # prompt ids whose answer in flight a stop gave up

    # What happened, told by the parts that saw it (the teacher client, the batch queue, the run); only these
    # write the counters, and everyone reads them.

    def sent(self, requests: int = 1) -> None:
        self.requests += requests

    def retried(self) -> None:
        self.retries += 1

    def rate_limited_once(self) -> None:
        self.rate_limited += 1

    def answered(self, usage: Any, usage_lost: bool) -> None:
        """A 200 came; its usage as the teacher gave it (usage_lost: streamed, and its usage event never came,
        so its cost is unknown, not missing)."""
        self.answers += 1
        self.uncosted += not _has_cost(usage) and not usage_lost

    def charged(self, cost: float) -> None:
        """Billed as it came (an answer, or a batch's results): the spend cap and the bar read it."""
        self.billed += cost

    def usage_never_came(self) -> None:
        """A streamed answer begun, and paid for, whose usage event never came (cut, or whole without it)."""
        self.cost_unknown += 1

    def settled(self, usage: Usage, given_up: str | None) -> None:
        """A rollout's fate decided (Run.settle): its spend counts whatever the fate; `given_up`, the id of a
        prompt whose answer in flight a stop gave up."""
        self.usage.merge(usage)
        if given_up is not None:
            self.given_up.append(given_up)

    def rollout_scored(self, total: float, first_try: bool, passed: bool) -> None:
        self.scored += 1
        self.reward_sum += total
        if first_try:
            self.first_tries += 1
            self.passed_first += passed

    def rollout_written(self) -> None:
        self.written += 1

    def rollout_unsaved(self) -> None:
        self.unsaved += 1

    def rollout_rejected(self, last_try: bool) -> None:
        self.rejected += 1
        self.exhausted += last_try

    def rollout_failed(self, label: str) -> None:
        self.failed += 1
        self.failure_reasons[label] += 1

    def rollout_paused(self) -> None:
        self.paused += 1


class SpendCap:
    """--max-cost. Live, checked after each billed answer: once what this run spent, plus what the requests in
    flight will likely cost, reaches the cap, the run starts nothing new; rollouts in progress pause between
    turns and go on next run. In batch mode, asked before each batch how many requests may go (room_in_batch)
    and told when batches are billed. The cap stays on whatever some answers say: it counts every cost
    reported."""

    def __init__(self, cap: float, stats: Stats, log: Callable[[str], None], stop: Callable[[str], None],
                 in_flight: Callable[[], int]):
        self.cap, self.stats, self.log, self.stop, self.in_flight = cap, stats, log, stop, in_flight
        self.told_uncosted = False  # said once that some answers carried no cost
        self.reached = False

    def room_in_batch(self, likely: list[float], pending: float, in_flight: bool) -> int:
        """--batch: how many of these requests (what each will likely cost, in order) may go out now, with
        `pending` USD likely in batches sent and not yet billed. None, with no batch in flight whose billing
        could change that: the cap is reached."""
        left = self.cap - self.stats.billed - pending
        room, total = 0, 0.0
        for cost in likely:
            if total + cost > left:
                break
            total += cost
            room += 1
        if not room and not in_flight and likely and not self.reached:
            self.reached = True
            self.stop(f"the spend cap was reached: ${self.stats.billed:.4f} billed, and the next batch's "
                      f"first request would likely cost ${likely[0]:.4f} more (--max-cost {self.cap:g}). "
                      "Nothing more was sent; re-run the same command to continue (each run has its own "
                      "cap).")
        return room

    def cannot_apply(self) -> None:
        """Said once: answers come without a cost, so the cap cannot hold them (a local vLLM, say)."""
        if not self.told_uncosted:
            self.told_uncosted = True
            self.log("--max-cost cannot apply: the teacher reports no cost (usage.cost), so spend is shown "
                     "in tokens only; the cap counts any cost that is reported "
                     "later." if not self.stats.billed else
                     "--max-cost: an answer carried no usable cost (usage.cost missing, negative or not a "
                     "number); the cap counts the costs that are reported.")

    def check(self) -> None:
        s = self.stats
        if s.uncosted and (s.billed or s.answers >= 3):
            self.cannot_apply()
        if s.billed == 0 or self.reached:
            return
        in_flight = self.in_flight() * s.billed / max(1, s.answers - s.uncosted)
        if s.billed + in_flight >= self.cap:
            self.reached = True
            self.stop(f"the spend cap was reached: ${s.billed:.4f} spent, ${in_flight:.4f} more likely in "
                      f"flight (--max-cost {self.cap:g}). Nothing new was started; re-run the same command "
                      "to continue (each run has its own cap).")


# ==================================================================================================
# Rate control
# ==================================================================================================
# Requests in flight and requests a second, learned from 429s and from rate headers (AdaptiveLimiter).


class Answered(enum.Enum):
    """How a request that held a slot ended, as the limiter learns from it."""

    OK = "ok"  # answered (taken by the teacher)
    RATE_LIMITED = "rate_limited"  # a 429, before or after it was admitted
    FAILED = "failed"  # anything else: a 5xx, a drop, a timeout (tells nothing about the limits)
    CANCELLED = "cancelled"  # never sent, or abandoned by the run


class LimiterClosed(Exception):
    """The run is stopping: no request starts any more (AdaptiveLimiter.close)."""


@dataclass
class Slot:
    wave: int  # the limiter's wave when the request started
    level: int  # requests in flight when it started, itself included
    sent: float  # time.monotonic() when it started
    number: int = 0  # the limiter's count of requests started, this one included
    admitted: bool = False  # the teacher took it: its first data came, or no refusal within the window
    probe: bool = False  # sent while the teacher's own budget said none were left: is it refused?


class AdaptiveLimiter:
    """Sends requests as fast as the teacher takes them, under two limits learned from its 429s: requests
    in flight (a teacher that caps concurrency: a self-hosted server, a provider's per-key cap) and requests
    per second (a metered key: a token bucket or a window). Whichever binds, binds; the user never says which.

    A 429 is put down to one of them by the level it came at (_refused). Refused at fewer requests in
    flight than the teacher took moments ago (within TAKEN_MEMORY s): the number in flight was not the
    reason, so the rate was; the pace drops to just under the rate the teacher was taking. Refused above
    every level taken lately: the number in flight; the limit drops to just below the refused level.

    In flight: plain AIMD (halve, then +1 per round trip) saw-tooths between half the teacher's capacity
    and all of it, about 75% busy. Here a 429 records the level it happened at, the limit stays just below
    it, and creeps above it by one every `probe_patience` round trips (sooner the longer no 429 comes), so
    the teacher stays >90% busy with few 429s. A wave: 429s of requests already in flight when the limit
    was cut do not cut it again. The pace does the same per second: back fast to just under the rate that
    was refused, then probing, and only while it is what holds requests back.

    Limits shared with others (shards on one key): a 429 with nothing taken lately tells neither limit, so
    it cuts nothing it learned and holds one request a second until one is taken (_hold_blind), after which
    the limit probes as fast as the pace for a while; and once the teacher takes the level it refused, that
    cap is dropped for slow start, since a share grows back when the others finish.
    """

    TAKEN_MEMORY = 10.0  # seconds a level the teacher took counts as proof it takes that many
    RATE_WINDOW = 2.0  # seconds over which the rate the teacher takes is measured, at a rate 429
    PACE_MARGIN = 0.95  # the pace regrows fast to this share of the rate that was refused, then probes
    PROBE_DOUBLING = 1.5  # seconds without a 429 after which the pace probes twice as fast
    # the same for requests in flight, slower: a server's capacity changes less often than a key's share,
    # unless others are seen sharing it (a refusal with nothing taken lately, within CONTENDED_MEMORY s):
    # then as fast as the pace, since the share grows back when they finish
    LIMIT_PROBE_DOUBLING = 8.0
    # A spent request budget whose window ends further off than this (past a minute's window) is tried with
    # one request at a time: answered, the headers are shown wrong; refused, the 429 says how long to wait. So
    # is a budget spent again in the window after one waited out ("0 left, resets in 60 s" on every answer),
    # until a
    # 429 shows the headers true: a lie costs one window, the truth one refused request.
    BUDGET_PROBE_AFTER = 61.0
    CONTENDED_MEMORY = 30.0

    def __init__(self, start: int, probe_patience: float = 16.0,
                 slow_start: int = default(TeacherSettings, "start_concurrency"),
                 clock: Callable[[], float] = time.monotonic):
        self.clock = clock  # time.monotonic; a test may pass its own
        self.most_in_flight = start
        # Slow start: begin at a few requests and double with each round the teacher takes (see admit) up
        # to -c or the first 429, instead of firing -c at once: `-c 64` against a teacher that takes 8 used to
        # send 56 doomed requests in its first burst.
        self.limit = float(min(start, slow_start))
        self.ceiling = start
        self.in_flight = 0
        self.wave = 0
        self.paused_until = 0.0
        self.probe_patience = probe_patience
        self.rate_bound = False  # the last 429 that told the limits apart was about the rate
        self.pace: float | None = None  # requests a second; None until a 429 is put down to the rate
        self.pace_ceiling = math.inf
        self.next_send = 0.0  # self.clock() when the pace lets the next request go
        self.pace_cut_at = -math.inf
        self.limit_cut_at = self.clock()
        self.pace_bound_at = -math.inf  # when the pace last held a request back
        self.holding_blind = False  # refused with nothing taken lately: one at a time until one is taken
        self.contended_at = -math.inf  # when it last was (others share the teacher)
        # the level the last cut of the in-flight limit put the teacher's cap below
        self.refused_level = math.inf
        self._taken: collections.deque[tuple[float, int]] = collections.deque()  # (when, level) taken lately
        # The teacher's own count of requests left in its window (x-ratelimit-remaining-requests), when it
        # sends one: requests wait for the window's end instead of being refused (tell_budget).
        self.budget_left: int | None = None  # as of the last answer, less the requests sent since
        self.budget_ends = 0.0  # self.clock() when the window that budget counts in ends
        self.budget_limit: int | None = None  # requests a window (x-ratelimit-limit-requests)
        self.budget_span = 1.0  # the longest window seen: a new one is taken to last as long
        # Why the budget headers are not believed any more (they contradict themselves or the answers the
        # teacher gives); then the limits are learned from 429s alone. Said once, in the summary.
        self.budget_distrusted: str | None = None
        self._probing: Slot | None = None
        self.windows_waited_out = 0  # spent windows whose end requests waited for
        self.budget_proven = False  # a request sent while none were left was refused: the headers are true
        self.sent = 0  # requests started, ever (a slot's number)
        self._waiters: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()
        self._wake_timer: asyncio.TimerHandle | None = None
        self.closed = False

    async def acquire(self, priority: int) -> Slot:
        if self.closed:
            raise LimiterClosed()
        if not self._waiters and self._has_room():
            return self._start()
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        self._wake()  # starts it now if there is room, else makes sure a paused limiter wakes up
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result(), Answered.CANCELLED)
            raise

    def close(self) -> None:
        """No request starts from now on: every request waiting for a slot, the pace or a Retry-After
        hears it at once (LimiterClosed), not when its turn comes (one a second at a slow pace: a stop
        that outlived a cluster's 30 s grace period)."""
        self.closed = True
        waiters, self._waiters = self._waiters, []
        for _, _, future in waiters:
            if not future.done():
                future.set_exception(LimiterClosed())
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_timer = None

    def admit(self, slot: Slot) -> None:
        """The teacher took this request (its first streamed data came, or it went unrefused for the
        admission window): grow now. What slow start must learn is whether requests are refused, and a
        rate limit refuses in milliseconds, long before a reasoning teacher's answer ends."""
        if not slot.admitted:
            slot.admitted = True
            self._taken_request(slot, still_in_flight=True)
            self._wake()

    def release(self, slot: Slot, answered: Answered) -> None:
        """A late 429 (after the request was admitted) counts as one too."""
        self.in_flight -= 1
        if slot.probe:
            self._probing = None
            if answered is Answered.OK and self.budget_left is not None and self.budget_left <= 0:
                self._distrust_budget("said no request was left in its window, yet answered the next one")
            self.budget_proven = self.budget_proven or answered is Answered.RATE_LIMITED
        if answered is Answered.OK and not slot.admitted:
            self._taken_request(slot, still_in_flight=False)
        elif answered is Answered.RATE_LIMITED:
            self._refused(slot)
        self._wake()

    def pause_until(self, deadline: float) -> None:
        """Hold every request until then (the teacher said when its window reopens)."""
        self.paused_until = max(self.paused_until, deadline)

    def tell_budget(self, slot: Slot, left: int, limit: int | None, ends_in: float) -> None:
        """The answer to `slot`'s request said how many requests the teacher's window has left, and
        (ends_in) when that window ends: once that many have been sent, requests wait for the window's end
        rather than be refused. Gateways count a request as it comes (LiteLLM's usage-based routing,
        OpenAI), so what was sent after this request was not counted in `left`: it is taken off. Headers
        that make no sense (fewer than none left, a window of no requests, more left than the window holds)
        are not believed, from then on."""
        if self.budget_distrusted is not None:
            return
        if left < 0 or limit is not None and (limit <= 0 or left > limit):
            self._distrust_budget(f"said {left} requests were left of "
                                  f"{limit if limit is not None else 'its window'}")
            return
        self.budget_left, self.budget_limit = left - (self.sent - slot.number), limit
        self.budget_ends = self.clock() + ends_in
        self.budget_span = max(self.budget_span, ends_in)
        self._wake()

    def _distrust_budget(self, why: str) -> None:
        self.budget_distrusted = (f"Rate limits: the teacher's x-ratelimit-*-requests headers {why}, so they "
                                  "were not believed; the limits were learned from its 429s instead.")
        self.budget_left = self.budget_limit = None
        self._wake()

    # -- learning -----------------------------------------------------------------------------------

    def _taken_request(self, slot: Slot, still_in_flight: bool) -> None:
        now = self.clock()
        if self.holding_blind:  # the teacher takes requests again: slow start from one, no pace
            self.holding_blind, self.pace, self.pace_ceiling = False, None, math.inf
        # The level it was taken at: no more than were in flight when it started, nor than are now (at
        # its start, requests the teacher was about to refuse counted too, and so overstated what it takes)
        level = min(slot.level, self.in_flight + (0 if still_in_flight else 1))
        self._taken.append((now, level))
        if level >= self.refused_level:
            # The teacher now takes the level it refused: the cap was a share that grew (the other shards on
            # the key finished, a server scaled up). Slow start goes on, up to -c or the next 429, instead of
            # creeping up one at a time (from a share of 2 of 8, ten seconds of an idle teacher).
            self.ceiling, self.refused_level = self.most_in_flight, math.inf
        while self._taken[0][0] < now - self.TAKEN_MEMORY:
            self._taken.popleft()
        # Slow start doubles the requests in flight per round of requests taken: a request that ended
        # frees its own slot and adds one; one taken while it goes on (a long answer) adds two, or each
        # round would add only as many as the first (4, 8, 12, ...: 40 s to reach 1,000).
        self._grow(2 if still_in_flight else 1)
        if self.pace is not None and self.pace_bound_at >= slot.sent:
            self._grow_pace()

    def _taken_for(self) -> float:
        """Seconds of history in the record of requests taken."""
        return self.clock() - self._taken[0][0] if self._taken else 0.0

    def _refused(self, slot: Slot) -> None:
        """Put a 429 down to the rate or to the number in flight. Refused below a level the teacher took
        lately: the rate. Above: the number in flight. At that very level (common when few are in flight,
        and where our count runs ahead of the teacher's by a request still on the wire): as the last 429
        that told them apart. Nothing taken lately: no telling, so both are held back; else each refusal,
        answered in a millisecond, would free its slot for the next doomed request."""
        taken = self._level_taken_lately()
        if taken == 0:
            self._hold_blind(slot)
            return
        if slot.level != taken:
            self.rate_bound = slot.level < taken
        if self.rate_bound:
            self._cut_pace(slot)
            # and the teacher took `taken` at once lately: an earlier cut of the limit below that was wrong
            self.ceiling = max(self.ceiling, taken)
        else:
            self._cut_limit(slot)

    def _hold_blind(self, slot: Slot) -> None:
        """Refused before the teacher took anything lately (a first request; a teacher or a key that other
        processes, such as the other shards, hold just now): no telling which limit, so one request at a
        time, one a second, until one is taken; then the hold ends and slow start goes on from there
        (_taken_request). Nothing it learned before is cut: the refusal says only that the teacher was
        busy. (Cut as if it had told, a shard whose first request met its neighbours' load stayed at one
        in flight and one request a second long after the teacher was idle: the pace regrows only while it
        holds a request back beside another in flight, which one in flight never does.)"""
        now = self.clock()
        self.holding_blind, self.contended_at = True, now
        self.limit = 1.0
        if slot.wave == self.wave:
            self.wave += 1  # requests already in flight that come back refused do not hold it again
        self.pace, self.pace_cut_at = 1.0, now
        self.next_send = max(self.next_send, now + 1.0)

    def _level_taken_lately(self) -> int:
        horizon = self.clock() - self.TAKEN_MEMORY
        return max((level for when, level in self._taken if when >= horizon), default=0)

    def _cut_limit(self, slot: Slot) -> None:
        self.ceiling = max(1, min(self.ceiling, slot.level - 1))
        self.refused_level = self.ceiling + 1
        if slot.wave == self.wave:
            # Just below the level that was refused: a 429 is answered at once and costs the teacher
            # nothing, so the refused level tells where its cap is, and halving (as TCP does for queues a
            # loss has already overfilled) would idle half of it for a round trip each time the limit
            # probes. From a burst far above it (-c 64 against 8) this settles in one wave; a cap that
            # shrank is followed down, one wave per round trip.
            self.limit = max(1.0, min(self.limit, float(self.ceiling)))
            self.wave += 1
            self.limit_cut_at = self.clock()

    def _cut_pace(self, slot: Slot) -> None:
        """The teacher refused a request sent at this pace: from now on send just under the rate it was
        taking. Requests sent before an earlier cut do not cut again (they went at the old pace)."""
        now = self.clock()
        if slot.sent < self.pace_cut_at:
            return
        window = min(self.RATE_WINDOW, max(self.RATE_WINDOW / 2, self._taken_for()))
        rate = sum(1 for when, _ in self._taken if when >= now - window) / window
        if rate == 0:  # nothing taken: from one a second, doubling each second requests are taken
            self.pace_ceiling, self.pace = math.inf, 1.0
        else:
            self.pace_ceiling = self.PACE_MARGIN * rate
            self.pace = max(0.1, min(self.pace or math.inf, self.pace_ceiling) * 0.9)
        self.pace_cut_at = now
        self.next_send = max(self.next_send, now + 1 / self.pace)  # the teacher has nothing to spare just now

    def _grow(self, fast_step: int = 1) -> None:
        if self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + fast_step)
        elif self.limit < self.most_in_flight:
            # +1/probe_patience a round trip, twice that every LIMIT_PROBE_DOUBLING s without a 429
            now = self.clock()
            doubling = self.PROBE_DOUBLING if now - self.contended_at < self.CONTENDED_MEMORY else \
                self.LIMIT_PROBE_DOUBLING
            speedup = 2 ** ((now - self.limit_cut_at) / doubling)
            step = min(1.0, speedup / (self.limit * self.probe_patience))
            self.limit = min(float(self.most_in_flight), self.limit + step)
            self.ceiling = max(self.ceiling, int(self.limit))

    def _grow_pace(self) -> None:
        """Per request taken while the pace held others back: back to its ceiling within about a second
        (+1 a request is +pace a second), then probing above it, by 1/probe_patience a second each second
        at first, twice that every PROBE_DOUBLING s without a 429: a key whose other users (other shards)
        went quiet is found out within seconds, while a steady limit is met only every ~10 s."""
        assert self.pace is not None
        if self.pace < self.pace_ceiling:
            self.pace = min(self.pace_ceiling, self.pace + 1)
        else:
            quiet = self.clock() - self.pace_cut_at
            per_second = min(self.pace / 8, 2 ** (quiet / self.PROBE_DOUBLING) / self.probe_patience)
            self.pace += per_second / self.pace
            self.pace_ceiling = self.pace

    # -- sending ------------------------------------------------------------------------------------

    def _has_room(self) -> bool:
        if self.in_flight >= int(self.limit):
            return False
        now = self.clock()
        if now < self.paused_until:
            return False
        if self.pace is not None and now < self.next_send:
            self.pace_bound_at = now
            return False
        if self.budget_left is not None and self.budget_left <= 0:
            if now < self.budget_ends:
                # a long wait, or one more after a window waited out, is not taken on the headers' word alone:
                # one request at a time asks the teacher
                doubtful = self.budget_ends - now > self.BUDGET_PROBE_AFTER or (
                    self.windows_waited_out > 0 and not self.budget_proven)
                return doubtful and self._probing is None
            # a new window: as many as a window allows, until an answer says how many are left
            self.budget_left, self.budget_ends = self.budget_limit, now + self.budget_span
            self.windows_waited_out += 1
            if self.budget_left is not None and self.budget_left <= 0:
                return False
        return True

    def _start(self) -> Slot:
        now = self.clock()
        probe = self.budget_left is not None and self.budget_left <= 0 and now < self.budget_ends
        if self.pace is not None:
            # At most one interval of slack carried over, so a late timer does not lower the rate,
            # and an idle spell does not save up a burst.
            self.next_send = max(self.next_send, now - 1 / self.pace) + 1 / self.pace
        self.in_flight += 1
        self.sent += 1
        if self.budget_left is not None:
            self.budget_left -= 1
        slot = Slot(self.wave, self.in_flight, now, self.sent, probe=probe)
        if probe:
            self._probing = slot
        return slot

    def _wake(self) -> None:
        while self._waiters and self._has_room():
            _, _, future = heapq.heappop(self._waiters)
            if not future.cancelled():
                future.set_result(self._start())
        if self._waiters and self._wake_timer is None and self.in_flight < int(self.limit):
            wake_at = max(self.paused_until, self.next_send if self.pace is not None else 0.0,
                          self.budget_ends if self.budget_left is not None and self.budget_left <= 0 else 0.0)
            # Always a timer, at once if that moment has passed since _has_room looked: a paced request due
            # in a millisecond could fall between the two clock reads, and no one else would wake its waiter.
            loop = asyncio.get_running_loop()
            self._wake_timer = loop.call_at(loop.time() + max(0.0, wake_at - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._wake_timer = None
        self._wake()


# ==================================================================================================
# Prompt caching
# ==================================================================================================
# Where cache_control breakpoints go, and when they are asked for (_CachePlan).


# Prompt caching. Each turn of a rollout resends the whole conversation. OpenAI, DeepSeek, Grok and recent
# Gemini models cache long prefixes by themselves; Anthropic models (and Gemini's explicit caching) only
# when a request carries cache_control breakpoints. The portable form is a breakpoint on a content block
# (the top-level field is not supported on every route), at most 4 a request: we use two, on the system
# prompt (shared by every rollout) and on the newest message. Only the request's copy is marked: the
# conversation, sent back as the API gave it, and the dataset never carry cache_control.

_ASKS_FOR_CACHING = ("anthropic/", "google/gemini")


@dataclass(frozen=True)
class _CachePlan:
    enabled: bool
    why: str
    ttl: str | None = None

    @property
    def marker(self) -> dict:
        return {"type": "ephemeral", **({"ttl": self.ttl} if self.ttl else {})}

    def mark(self, messages: list[dict]) -> list[dict]:
        """The messages to send, with breakpoints on the system prompt and the newest message with text."""
        if not self.enabled:
            return messages
        targets = {0} if messages and messages[0].get("role") == "system" else set()
        newest = next((i for i in range(len(messages) - 1, -1, -1)
                       if messages[i].get("role") != "assistant" and _with_breakpoint(messages[i], {})), None)
        if newest is not None:
            targets.add(newest)
        marked = list(messages)
        for i in targets:
            marked[i] = _with_breakpoint(messages[i], self.marker) or messages[i]
        return marked


def cache_plan(requests: RequestSettings, base_url: str, batch: bool = False) -> _CachePlan:
    if requests.cache == "off":
        return _CachePlan(False, "off (--cache off)")
    if batch and requests.cache_ttl != "1h":  # turns are minutes to hours apart: a 5-minute write is wasted
        return _CachePlan(False, "not asked for in batch mode: a 5-minute cache is gone before the next turn "
                         "(--cache-ttl 1h asks for one that lasts)")
    if requests.cache == "on":
        return _CachePlan(True, "on (--cache on)", requests.cache_ttl)
    if _is_openrouter(base_url) and requests.model.startswith(_ASKS_FOR_CACHING):
        return _CachePlan(True, f"on: {requests.model} caches only when asked", requests.cache_ttl)
    return _CachePlan(False, f"not asked for: {requests.model} caches by itself, or its caching is unknown "
                     "here (--cache on asks anyway)")


def _with_breakpoint(message: dict, marker: dict) -> dict | None:
    """A copy of the message whose last non-empty text block carries the marker; None if it has none."""
    content = message.get("content")
    if isinstance(content, str):
        return {**message,
                "content": [{"type": "text", "text": content, "cache_control": marker}]} if content else None
    if not isinstance(content, list):
        return None
    for i in range(len(content) - 1, -1, -1):
        part = content[i]
        if isinstance(part, dict) and part.get("type", "text") == "text" and part.get("text"):
            return {**message, "content": content[:i] + [{**part, "cache_control": marker}] + content[i + 1:]}
    return None


# ==================================================================================================
# HTTP transport
# ==================================================================================================
# TLS, the connector, proxies, decoding and the size cap; the transport and headers every request uses.


class MalformedAnswer(Exception):
    """A 200 answer whose fields are not what the protocol says: a provider error, retried."""


def _aiohttp_session(connections: int, https: bool) -> aiohttp.ClientSession:
    # The TLS context is made here, at the first request, so SSL_CERT_FILE from .env counts (aiohttp's
    # own default context is made when aiohttp is imported, before .env is read).
    return aiohttp.ClientSession(connector=_ReuseNotingConnector(limit=connections,
                                                                 ssl=_tls_context() if https else True))


class _ReuseNotingConnector(aiohttp.TCPConnector):
    """aiohttp's connector, noting for the request in progress (_REQUEST_STATE) whether its connection
    was kept alive from an earlier request. (aiohttp's tracing can tell too, but its signals cost ~8% of
    the client's throughput at a thousand requests a second.)"""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._used: weakref.WeakSet = weakref.WeakSet()  # the connections' protocols that carried a request

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        connection = await super().connect(req, traces, timeout)
        state, protocol = _REQUEST_STATE.get(), connection.protocol
        if state is not None and protocol is not None:
            state.reused = protocol in self._used
            self._used.add(protocol)
        return connection


# The transport wants a TLS context of its own, unused since the session (_aiohttp_session) brings its
# connector and context; its default would load the certificate store once more (~50 ms of every start).
_UNUSED_TLS_CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _tls_context() -> ssl.SSLContext:
    """SSL_CERT_FILE (or SSL_CERT_DIR) when set, else the system's certificates, else certifi's (a Python
    without system certificates, such as python.org's build on macOS, would refuse every server)."""
    return _tls_context_for(os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None)


@functools.lru_cache(maxsize=1)  # made once a run: checked before anything is sent, then used (~30 ms each)
def _tls_context_for(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    context = ssl.create_default_context()
    no_authorities = context.cert_store_stats()["x509_ca"] == 0
    if no_authorities and not _directory_has_files(ssl.get_default_verify_paths().capath):
        import certifi  # httpx's own dependency

        context.load_verify_locations(certifi.where())
    return context


def _directory_has_files(path: str | None) -> bool:
    try:
        return bool(path) and any(os.scandir(path))
    except OSError:
        return False


def _check_tls_settings(base_url: str) -> None:
    """A certificate file named in the environment or .env must be readable before anything is sent (to an
    https:// teacher: a plain-http one never uses it, and loading it costs ~30 ms of the start)."""
    if not base_url.startswith("https:") or not (os.environ.get("SSL_CERT_FILE")
                                                 or os.environ.get("SSL_CERT_DIR")):
        return
    try:
        _tls_context()
    except (OSError, ssl.SSLError) as e:
        names = " or ".join(n for n in ("SSL_CERT_FILE", "SSL_CERT_DIR") if os.environ.get(n))
        raise UsageError(f"{names} ({os.environ.get('SSL_CERT_FILE') or os.environ.get('SSL_CERT_DIR')}): "
                         f"cannot load certificates from it ({getattr(e, 'strerror', None) or e}). Point it "
                         "at a PEM file of CA certificates, or unset it.") from None


# https:// to a port that speaks plain HTTP: OpenSSL reads the server's "HTTP/1.1 400" as a TLS record.
_NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG"}


@dataclass
class _RequestState:
    """What has happened so far to the request being sent: whether it went out on a kept-alive connection,
    got an answer head, and (streamed) lost its usage event."""

    reused: bool = False
    answered: bool = False
    # a streamed answer begun whose usage event never came (cut, or whole without it)
    usage_lost: bool = False
    # The run stopped at once (Run.stop cancelled it) once the answer was whole: the answer is kept, the
    # cancellation held back, and its rollout stops right after it (Completion.stop_now)
    stop_now: bool = False


def _body_headers(response: httpx.Response) -> tuple[bytes, str, bytes]:
    """(Content-Type lower-cased, Content-Encoding, Content-Length) in one pass over the raw headers
    (httpx's Headers.get costs ~2 us a call, on every answer)."""
    content_type, encoding, length = b"", "", b""
    for name, value in response.headers.raw:
        name = name.lower()
        if name == b"content-type":
            content_type = value.lower()
        elif name == b"content-encoding":
            encoding = value.decode("latin-1")
        elif name == b"content-length":
            length = value
    return content_type, encoding, length


class StreamStalled(Exception):
    """A streamed answer sent no data event within --stall-timeout."""


class FirstByteStalled(Exception):
    """A streamed request whose answer did not even begin (no status line) within --stall-timeout."""


class StreamCut(Exception):
    """A streamed answer ended before it was whole (no finish_reason): never written, retried."""


class _Deadline:
    """asyncio.timeout_at for the waits of an answer (--timeout, --stall-timeout, a whole answer's rest), but
    a deadline that comes due lets what already arrived be read first: the wait ends _LOOK_AGAIN after the
    deadline's timer ran, not at the deadline. A process suspended (SIGSTOP, scontrol suspend, a laptop
    asleep) past a deadline wakes to its timer and, beside it, the data that came meanwhile, still unread; the
    timer runs first, and an answer that came whole was thrown away and paid again (_AnswerStream.whole).
    Moving the deadline (data came) ends the look, unless it is moved to a moment already past: the
    request's own --timeout, which data does not extend."""

    __slots__ = ("_when", "_loop", "_timeout", "_timer", "_looking")

    def __init__(self, when: float | None):
        self._when = when

    async def __aenter__(self) -> _Deadline:
        self._loop = asyncio.get_running_loop()
        self._timeout = asyncio.timeout(None)
        await self._timeout.__aenter__()
        self._timer: asyncio.TimerHandle | None = None
        self._looking = False
        self._arm(self._when)
        return self

    async def __aexit__(self, kind: Any, error: Any, trace: Any) -> bool | None:
        if self._timer is not None:
            self._timer.cancel()
        return await self._timeout.__aexit__(kind, error, trace)

    def reschedule(self, when: float | None) -> None:
        if self._looking and when is not None and when <= self._loop.time():
            return  # due already: the look goes on as it is
        if self._timer is not None:
            self._timer.cancel()
        self._looking = False
        self._timeout.reschedule(None)
        self._arm(when)

    def expired(self) -> bool:
        return self._timeout.expired()

    def _arm(self, when: float | None) -> None:
        self._timer = self._loop.call_at(when, self._look) if when is not None else None

    def _look(self) -> None:
        self._timer, self._looking = None, True
        self._timeout.reschedule(self._loop.time() + _LOOK_AGAIN)


# The _RequestState of the request this task is sending (None: none): the connector and the stream's reader,
# deep below the request, note on it what happened.
_REQUEST_STATE: contextvars.ContextVar[_RequestState | None] = \
    contextvars.ContextVar("request_state", default=None)
# What a request sent on a connection the server had closed fails with, before any byte comes back.
_STALE_CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError,
                           BrokenPipeError)


class _StaleConnection(Exception):
    """The request died on a kept-alive connection before any answer: send it again, no retry spent."""


_ACCEPTED_ENCODINGS = "gzip, deflate"  # what zlib decodes; _BodyDecoder handles each


class AnswerTooLarge(Exception):
    def __init__(self, size: int, limit: int):
        super().__init__(f"the answer is larger than {limit / (1 << 20):g} MB ({size:,} bytes or more, "
                         "decoded; --max-answer-mb); not retried")


class _BodyDecoder:
    """Decodes a body as its Content-Encoding names, chunk by chunk, and never yields more than `limit`
    bytes in all: a compression bomb costs at most the cap, not the machine's memory. Every encoding we
    accept is decoded; any other is a malformed answer."""

    def __init__(self, content_encoding: str, limit: int):
        codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
        unknown = [c for c in codings if c not in ("gzip", "x-gzip", "deflate", "identity")]
        if unknown:
            raise MalformedAnswer(f"the answer is encoded as {', '.join(unknown)}, which was not asked for "
                                  f"(Accept-Encoding: {_ACCEPTED_ENCODINGS})")
        # Applied in the order listed, so undone in reverse; each stage is capped (gzip inside gzip).
        self.stages = [_Inflater(c, limit) for c in reversed(codings) if c != "identity"]
        self.limit, self.size = limit, 0

    def feed(self, data: bytes) -> bytes:
        for stage in self.stages:
            data = stage.feed(data)
        return self._count(data)

    def finish(self) -> bytes:
        data = b""
        for stage in self.stages:
            data = stage.feed(data) + stage.finish()
        return self._count(data)

    def _count(self, data: bytes) -> bytes:
        self.size += len(data)
        if self.size > self.limit:
            raise AnswerTooLarge(self.size, self.limit)
        return data


class _Inflater:
    """One gzip or deflate layer, decoded incrementally with zlib, its output capped."""

    def __init__(self, coding: str, limit: int):
        self.gzip = coding in ("gzip", "x-gzip")
        self.limit, self.size, self.started = limit, 0, False
        self.zlib = self._new()

    def _new(self, raw: bool = False) -> Any:
        return zlib.decompressobj(16 + zlib.MAX_WBITS if self.gzip else -zlib.MAX_WBITS if raw
                                  else zlib.MAX_WBITS)

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            try:
                piece = self.zlib.decompress(data, self.limit - self.size + 1)
            except zlib.error as e:
                if not self.gzip and not self.started:  # "deflate" sent raw, without its zlib header
                    self.zlib, self.started = self._new(raw=True), True
                    continue
                raise MalformedAnswer(f"the answer's {'gzip' if self.gzip else 'deflate'} data is broken "
                                      f"({e})") from None
            self.started = True
            self.size += len(piece)
            if self.size > self.limit:
                raise AnswerTooLarge(self.size, self.limit)
            out.append(piece)
            data = self.zlib.unconsumed_tail
            if self.zlib.eof and self.zlib.unused_data.strip(b"\0\r\n "):  # a second gzip member
                data, self.zlib = self.zlib.unused_data + data, self._new()
        return b"".join(out)

    def finish(self) -> bytes:
        if self.started and not self.zlib.eof:
            raise MalformedAnswer(f"the answer's {'gzip' if self.gzip else 'deflate'} data ends early (cut)")
        return b""


def _proxy_for(url: str) -> httpx.Proxy | None:
    """HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment, read once, as httpx's own transport did.
    (aiohttp's trust_env reads them, and ~/.netrc, on every request: 40% of the client's CPU at 1,000
    req/s.)"""
    host = urlparse(url).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    proxy = urllib.request.getproxies().get(urlparse(url).scheme)
    return httpx.Proxy(proxy) if proxy else None


def decode_answer(raw: bytes) -> Any:
    """The body as JSON, or None when it is not JSON. NaN, Infinity and overflowing numbers become
    null: the teacher's non-finite numbers count as missing, and nothing we write can hold one."""
    try:
        return orjson.loads(raw)  # strict and fast; what it refuses gets the lenient, careful parse below
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw, parse_constant=lambda _: None, parse_float=_float_or_none)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _float_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _teacher_transport(settings: TeacherSettings, url: str) -> AiohttpTransport:
    """httpx is the API; aiohttp moves the bytes. httpx's own pool (httpcore) does work proportional to its
    size on every request (encode/httpx#3215): at 1,000 connections it spent a whole core there, where
    aiohttp's pool costs ~15% (OpenAI's SDK ships the same transport). Requests go to the transport directly
    (httpx's public transport API): the client's cookie, auth, redirect and URL-merging layers, of no use for
    one fixed endpoint, cost as much as the transport itself. The limiter never lets more than -c requests be
    in flight, so -c connections suffice."""
    return AiohttpTransport(client=functools.partial(_aiohttp_session, settings.concurrency,
                                                     settings.base_url.startswith("https:")),
                            proxy=_proxy_for(url), verify=_UNUSED_TLS_CONTEXT)


def _teacher_headers(settings: TeacherSettings) -> dict[str, str]:
    """What every request to the teacher's API carries: JSON, the app's name (OpenRouter's attribution) and
    the key, where there is one."""
    headers = {"Content-Type": "application/json", "HTTP-Referer": _APP_URL, "X-OpenRouter-Title": _APP_TITLE,
               "X-Title": _APP_TITLE}
    if settings.sends_key:
        headers["Authorization"] = f"Bearer {settings.secret.key}"
    return headers


# ==================================================================================================
# Reading answers
# ==================================================================================================
# An answer read whole within its deadlines: its head, then its body, or its events assembled (_read_events).


# Once a streamed answer is whole (its finish_reason came), what may still follow is its usage event and
# the end of the stream. Servers differ (docs/dialects.md): OpenRouter and vLLM send usage, then [DONE];
# llama.cpp's server before PR #9459 sent no [DONE]; a proxy may hold the connection open after either.
# The answer is kept whatever comes next; these bound how long we wait for the rest.
_USAGE_WAIT = 5.0  # seconds after the finish_reason for the usage event (then its cost counts as unknown)


_END_WAIT = 1.0  # seconds after [DONE] (or usage) for the body's end, so the connection can be reused


# A stream is read as it comes, so its size is not what it costs: 800,000 one-character deltas are 100 MB
# of events and a 1 MB answer. --max-answer-mb caps what is held (the answer's texts, the line being
# read); the stream's bytes are bounded only by --timeout.
_STREAM_BYTES = 1 << 62


class _SseParser:
    """Server-sent events, fed bytes as they come: yields each event's data (comments, such as OpenRouter's
    `: OPENROUTER PROCESSING`, are skipped; `[DONE]` comes through as it is). Lines end as the SSE spec
    allows: CRLF, LF or a bare CR, a CRLF split across two chunks included. Linear in the stream's size: a
    line's pieces are joined once, when it ends, however many chunks it spans."""

    _LINE_END = re.compile(rb"\r\n|\r|\n")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []  # of the line not yet ended
        self.pending = 0  # their size
        self._data: list[bytes] = []  # data lines of the event not yet ended
        self._after_cr = False  # the last chunk ended with CR: a LF opening the next one belongs to it
        self._started = False

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        if not self._started and chunk:
            self._started, chunk = True, chunk.removeprefix(b"\xef\xbb\xbf")  # the spec drops a leading BOM
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._after_cr = chunk.endswith(b"\r")
        lines = self._LINE_END.split(chunk) if b"\r" in chunk else chunk.split(b"\n")  # LF only: at C speed
        tail = lines.pop()  # the line not yet ended
        if self._pieces and lines:
            self._pieces.append(lines[0])
            lines[0], self._pieces, self.pending = b"".join(self._pieces), [], 0
        for line in lines:
            if not line:  # an event ends
                if self._data:
                    yield self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                    self._data = []
            elif line.startswith(b"data"):
                name, colon, value = line.partition(b":")
                if name == b"data":
                    self._data.append(value[1:] if value[:1] == b" " else value)
            # ":" comments, "event:", "id:" and "retry:" fields carry nothing we use
        if tail:
            self._pieces.append(tail)
            self.pending += len(tail)


class _Pieces:
    """One object of a streamed answer, built from its pieces: the fields named in `joined` are texts that
    grow piece by piece (kept as lists and joined once at the end, so assembly is linear in the answer's
    size); every other field takes the piece's value, unless that is null and the field is already there.
    Keys keep the order they first came in."""

    __slots__ = ("fields", "texts", "joined")

    def __init__(self, joined: tuple[str, ...] = ()):
        self.fields: dict = {}
        self.texts: dict[str, list[str]] = {}
        self.joined = joined

    def merge(self, piece: dict) -> int:
        """Merge a piece; the number of characters it added to the texts."""
        added = 0
        for key, value in piece.items():
            texts = self.texts.get(key)
            if texts is not None and isinstance(value, str):
                texts.append(value)
                added += len(value)
            elif value is not None or key not in self.fields:
                self.fields[key] = value
                if key in self.joined and isinstance(value, str):
                    self.texts[key] = [value]
                    added += len(value)
                elif texts is not None:
                    del self.texts[key]
        return added

    def append(self, key: str, text: str) -> int:
        """Add to a text field, making it a text if it was not one."""
        if key in self.texts:
            self.texts[key].append(text)
        else:
            self.fields[key], self.texts[key] = text, [text]
        return len(text)

    def result(self) -> dict:
        return {key: "".join(self.texts[key]) if key in self.texts
                else value for key, value in self.fields.items()}


class _StreamedCall:
    """A tool call assembled from its pieces: its own fields, and its function's name and arguments joined."""

    def __init__(self) -> None:
        self.call, self.function = _Pieces(), _Pieces(joined=("name", "arguments"))
        self.raw_function: Any = None  # a function that is not an object: kept, so parsing refuses it

    def add(self, piece: dict) -> int:
        """Merge a piece; the number of characters it added."""
        function = piece.get("function")
        added = self.call.merge({key: value for key, value in piece.items()
                                 if key not in ("index", "function")})
        if isinstance(function, dict):
            self.call.fields.setdefault("function", None)  # its place among the call's keys
            added += self.function.merge(function)
        elif function is not None:
            self.call.fields.setdefault("function", None)
            self.raw_function = function
        return added

    def starts_another(self, piece: dict) -> bool:
        """Whether a piece that names no index begins a call of its own: it has an id other than this
        call's, or a name when this call has one (servers that send each call whole, without index)."""
        given_id, function = piece.get("id"), piece.get("function")
        if given_id and given_id != self.call.fields.get("id"):
            return True
        return isinstance(function,
                          dict) and bool(function.get("name")) and bool(self.function.fields.get("name"))

    def result(self) -> dict:
        call = self.call.result()
        if "function" in call:
            call["function"] = self.function.result() if self.function.fields else self.raw_function
        return call


class _AnswerStream:
    """The events of a streamed chat completion, assembled into the body an unstreamed answer has: the
    message's texts joined, tool calls and reasoning details assembled from their pieces by index, a
    content list (Mistral's chunks) read as its text, its thinking parts as reasoning, usage from the last
    event. Only choice 0 is read: choices are never merged. Keys keep the order they first came in, so
    the message sent back is the one an unstreamed answer gives.

    `whole` is the one rule for keeping a streamed answer: its finish_reason came, and with it everything
    before it. A whole answer is kept and never paid again, whatever the transport does next; one that
    is not whole is never written."""

    TEXTS = ("content", "reasoning", "reasoning_content", "refusal")

    def __init__(self) -> None:
        self.top = _Pieces()  # id, model, usage, cache_discount, error ...
        self.message = _Pieces(joined=self.TEXTS)
        self.calls: dict[int, _StreamedCall] = {}
        self.details: dict[int, _Pieces] = {}
        self.finish_reason: Any = None
        self.choice_error: Any = None
        self.done = self.usage_seen = False  # [DONE] came; a usage event came
        self.size = 0  # characters of text held so far (--max-answer-mb)

    @property
    def whole(self) -> bool:
        return self.finish_reason is not None and not self.failed

    @property
    def failed(self) -> bool:
        """An error event came (a mid-stream 429, a provider error): judged by its code, as unstreamed."""
        return bool(self.top.fields.get("error"))

    def add(self, data: bytes) -> None:
        if self.done:
            return  # nothing after [DONE] counts
        if data == b"[DONE]" or data.strip() == b"[DONE]":
            self.done = True
            return
        event = decode_answer(data)
        if not isinstance(event, dict):
            raise MalformedAnswer("an event of the streamed answer is not a JSON object")
        choices = event.pop("choices", None)
        self.usage_seen |= event.get("usage") is not None
        self.top.merge(event)
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    raise MalformedAnswer("a streamed choice is not an object")
                index = choice.get("index")
                if index is None or index == 0 and type(index) is int:
                    self._add_choice(choice)
        elif choices is not None:
            raise MalformedAnswer("the streamed choices are not a list")

    def _add_choice(self, choice: dict) -> None:
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]
        if choice.get("error") is not None:
            self.choice_error = choice["error"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        for key, value in delta.items():
            if key == "tool_calls" and isinstance(value, list):
                # its place in the message; filled in body()
                self.message.fields.setdefault("tool_calls", None)
                for piece in value:
                    self._add_call(piece)
            elif key == "reasoning_details" and isinstance(value, list):
                self.message.fields.setdefault("reasoning_details", None)
                for piece in value:
                    self._add_detail(piece)
            elif key == "content" and isinstance(value, list):
                text, thinking = _content_parts_text(value)
                self.size += self.message.append("content", text)
                if thinking:
                    self.size += self.message.append("reasoning_content", thinking)
            else:
                self.size += self.message.merge({key: value})

    def _add_call(self, piece: Any) -> None:
        if not isinstance(piece, dict):
            raise MalformedAnswer("a streamed tool call is not an object")
        index = _stream_index(piece, "tool call")
        if index is None:  # pieces without an index continue the last call, unless they begin another
            last = max(self.calls, default=None)
            index = last if last is not None and not self.calls[last].starts_another(piece) else (
                0 if last is None else last + 1)
        self.size += self.calls.setdefault(index, _StreamedCall()).add(piece)

    def _add_detail(self, piece: Any) -> None:
        if not isinstance(piece, dict):
            raise MalformedAnswer("a streamed reasoning detail is not an object")
        index = _stream_index(piece, "reasoning detail")
        if index is None:
            index = max(self.details, default=-1) + 1
        self.size += self.details.setdefault(index, _Pieces(joined=("text", "summary", "data"))).merge(piece)

    def body(self) -> bytes:
        """The answer as an unstreamed server would have sent it."""
        message = self.message.result()
        if "tool_calls" in message:
            message["tool_calls"] = [self.calls[i].result() for i in sorted(self.calls)]
        if "reasoning_details" in message:
            message["reasoning_details"] = [self.details[i].result() for i in sorted(self.details)]
        message.setdefault("role", "assistant")
        body = {key: value for key, value in self.top.result().items() if key != "object"}
        if self.failed:
            body = {key: value for key, value in body.items() if key in ("error", "usage")}
        elif self.message.fields or self.finish_reason is not None:
            choice = {"index": 0, "finish_reason": self.finish_reason, "message": message}
            if self.choice_error is not None:
                choice["error"] = self.choice_error
            body["choices"] = [choice]
        try:
            return orjson.dumps(body)
        except orjson.JSONEncodeError:
            pass
        # Surrogate halves sent in two deltas ("\ud83d" then "\ude00", as JavaScript slices text) are
        # one character once joined; a half with no partner is not text at all.
        try:
            return orjson.dumps(_with_each_string(body, _paired_surrogates))
        except (UnicodeError, orjson.JSONEncodeError):
            raise MalformedAnswer("a streamed text is not valid Unicode (a lone surrogate)") from None


def _stream_index(piece: dict, what: str) -> int | None:
    """A streamed piece's index: an integer, or None when it names none."""
    index = piece.get("index")
    if index is None or type(index) is int:
        return index
    raise MalformedAnswer(f"a streamed {what}'s index is not an integer")


def _paired_surrogates(text: str) -> str:
    """The text with every surrogate pair made the character it encodes (UnicodeError for a lone half)."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def _content_parts_text(parts: list) -> tuple[str, str]:
    """(text, thinking) of a content list: its text parts joined, and the text of its thinking parts
    (Mistral's reasoning models: {"type": "thinking", "thinking": [{"type": "text", "text": ...}]}).
    Other parts (images, references) carry no text for the dataset. MalformedAnswer for a part that is
    not an object or a text that is not a string."""
    text, thinking = [], []
    for part in parts:
        if not isinstance(part, dict):
            raise MalformedAnswer("a part of message.content is not an object")
        kind = part.get("type", "text")
        if kind == "thinking":
            inner = part.get("thinking")
            if isinstance(inner, str):
                thinking.append(inner)
            elif isinstance(inner, list):
                thinking.append(_content_parts_text(inner)[0])
            else:
                raise MalformedAnswer("a thinking part of message.content holds no text")
        elif kind == "text":
            if not isinstance(part.get("text", ""), str):
                raise MalformedAnswer("a text part of message.content is not a string")
            text.append(part.get("text", ""))
    return "".join(text), "".join(thinking)


async def _answer_head(transport: httpx.AsyncBaseTransport, request: httpx.Request, streamed: bool,
                       stall: float, ends_at: float) -> httpx.Response:
    """The answer's status and headers, within the request's --timeout (ends_at, loop time). A streaming
    server sends them at once (then comments while the model thinks), so for a streamed request
    --stall-timeout (`stall`) covers this wait too: a server that takes the connection and says nothing
    (llama-server after SIGTERM keeps them open) is left after it, not after the whole --timeout. An
    unstreamed answer may rightly send nothing until it is whole."""
    loop = asyncio.get_running_loop()
    due = min(loop.time() + stall, ends_at) if streamed else ends_at
    try:
        async with _Deadline(due) as waiting:
            return await transport.handle_async_request(request)
    except TimeoutError:
        if waiting.expired() and loop.time() < ends_at:
            raise FirstByteStalled() from None
        raise


async def _read_body(response: httpx.Response, encoding: str, declared: bytes, limit: int,
                     ends_at: float) -> bytes:
    """The whole body, decoded as its Content-Encoding says, never more than the cap, within the request's
    --timeout (what already arrived is read first: _Deadline); `limit` is --max-answer-mb, in bytes."""
    async with _Deadline(ends_at):
        if encoding.strip().lower() not in ("", "identity"):
            return b"".join([chunk async for chunk in _decoded_chunks(response,
                                                                      _BodyDecoder(encoding, limit))])
        # Most answers: no decoder at all, and a declared length over the cap is refused before reading.
        if declared.isdigit() and int(declared) > limit:
            raise AnswerTooLarge(int(declared), limit)
        parts, size = [], 0
        async for chunk in response.stream:
            size += len(chunk)
            if size > limit:
                raise AnswerTooLarge(size, limit)
            parts.append(chunk)
        return b"".join(parts)


async def _read_events(response: httpx.Response, encoding: str, stall: float, cap: int, ends_at: float,
                      taken: Callable[[], None]) -> bytes:
    """A streamed answer (server-sent events), assembled into the body an unstreamed answer would have
    had, so everything after this reads one shape. A stall timer restarts with every data event (not
    with comments, which keep only the connection alive); the request's deadline (ends_at) still
    holds. Once the answer is whole (_AnswerStream.whole), the wait shrinks to _USAGE_WAIT for its usage
    event, then to _END_WAIT for the stream's end: a server that never sends [DONE], or holds the
    connection open after it, costs seconds, and the answer is kept. Whole is whole: a wait that ran
    out, or the run stopping at once, keeps it (each wait a _Deadline: what already came is read first).
    `stall` is --stall-timeout, `cap` what may be held (--max-answer-mb), `taken` is told the teacher took the
    request (its first data came). An answer begun whose usage event never came is noted
    (_RequestState.usage_lost)."""
    stream, events, loop = _AnswerStream(), _SseParser(), asyncio.get_running_loop()
    decoder = _BodyDecoder(encoding, _STREAM_BYTES)
    told_taken = False
    try:
        try:
            async with _Deadline(min(loop.time() + stall, ends_at)) as deadline:
                async for chunk in _decoded_chunks(response, decoder):
                    added = False
                    for data in events.feed(chunk):
                        stream.add(data)
                        added = True
                    if events.pending > cap or stream.size > cap:  # what is held, not what went by
                        raise AnswerTooLarge(max(events.pending, stream.size), cap)
                    if not added:
                        continue
                    if not told_taken and not stream.failed:
                        told_taken = True
                        taken()  # the teacher is answering: it took the request
                    if stream.failed or stream.done and not stream.whole:
                        break  # nothing after an error event or a [DONE] can make the answer whole
                    wait = (stall if not stream.whole else
                            _END_WAIT if stream.done or stream.usage_seen else _USAGE_WAIT)
                    deadline.reschedule(min(loop.time() + wait, ends_at))
        except TimeoutError:
            if not stream.whole:
                if not deadline.expired() or loop.time() >= ends_at:
                    raise  # the request's --timeout (or a timeout not ours)
                raise StreamStalled() from None
        except (httpx.TransportError, aiohttp.ClientError, OSError, MalformedAnswer):
            if not stream.whole:
                raise  # else the connection broke, or sent garbage, after the answer was whole: kept
        except asyncio.CancelledError:  # the run stops at once (Run.stop)
            if not stream.whole:
                raise  # still coming: given up
            asyncio.current_task().uncancel()  # whole: kept, and its rollout stops right after it
            _REQUEST_STATE.get().stop_now = True
        if not (stream.whole or stream.failed):
            raise StreamCut("[DONE] came before the answer's finish_reason" if stream.done else
                            "it ended before the answer was complete")
    except (StreamStalled, StreamCut, httpx.TransportError, aiohttp.ClientError, OSError):
        _REQUEST_STATE.get().usage_lost = True  # the answer began, and was paid for; its usage never came
        raise
    if stream.whole and not stream.usage_seen:
        _REQUEST_STATE.get().usage_lost = True  # the answer is whole; only its usage event was lost
    return stream.body()


async def _decoded_chunks(response: httpx.Response, decoder: _BodyDecoder) -> AsyncIterator[bytes]:
    """The body's bytes as they come, decoded, never more than the decoder's limit in all."""
    async for chunk in response.stream:
        yield decoder.feed(chunk)
    yield decoder.finish()


async def _close_answer(response: httpx.Response, state: _RequestState, whole: bool) -> None:
    """Give the connection back (or close it, if the body was cut). The run stopping at once meanwhile
    does not lose an answer read whole: the cancellation is held back for its rollout (stop_now)."""
    try:
        await response.aclose()
    except asyncio.CancelledError:
        if not whole:
            raise
        asyncio.current_task().uncancel()
        state.stop_now = True


# ==================================================================================================
# Judging answers
# ==================================================================================================
# What an answer's status, headers and body say: errors, waits, rate budgets, a checked Completion; when to
# ask again (Retries).


class RetryableError(Exception):
    """This request failed in a way another try may not (rate limit, 5xx, drop, timeout, bad answer)."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None, rate_limited: bool = False,
                 holds_everyone: bool = True):
        super().__init__(detail)
        self.kind, self.detail = kind, detail  # kind: a short label the summary counts, e.g. "HTTP 503"
        self.retry_after, self.rate_limited = retry_after, rate_limited
        self.holds_everyone = holds_everyone  # retry_after pauses every request, not only this one's retry


class PromptFailed(Exception):
    """This rollout cannot finish (bad request, retries used up); the run goes on."""

    def __init__(self, kind: str, detail: str, tries: int = 1, status: int | None = None):
        super().__init__(detail)
        self.kind, self.detail, self.tries, self.status = kind, detail, tries, status


class _NotStarted(Exception):
    """The run was stopping before this rollout sent its first request: it stays pending, nothing spent."""


class RunStopped(Exception):
    """No request can succeed (bad key, no credits, teacher unreachable): stop the whole run, lose nothing."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def _answer_error(data: Any) -> Any:
    """The error object of an answer's body, in whichever shape the server says it: OpenAI's and OpenRouter's
    {"error": {...}}, or the top-level one of SGLang (protocol.py's ErrorResponse), vLLM before its move to
    OpenAI's shape, and Mistral's API: {"object": "error", "message": ..., "type": ..., "code": ...}
    (FastAPI's {"detail": ...} too); Gemini's OpenAI-compatible endpoint sends a list of one [{"error":
    {...}}]. None when the body holds no error."""
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return _answer_error(data[0])
    if not isinstance(data, dict):
        return None
    if data.get("error") is not None:
        return data["error"]
    if "choices" in data or not (data.get("object") == "error" or "message" in data or "detail" in data):
        return None
    return {"message": data.get("message") or data.get("detail"),
            **{key: data[key] for key in ("type", "code", "param") if data.get(key) is not None}}


def _error_text(error: Any) -> str:
    """The readable part of an error object, whatever its shape; whole (callers redact, then cut)."""
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or "")
    return "" if error is None else str(error)


def _is_moderation_error(error: Any) -> bool:
    # OpenRouter answers 403 when a prompt is flagged by moderation: that is one prompt's problem,
    # not the key's, so that prompt fails and the run goes on.
    if not isinstance(error, dict):
        return False
    metadata = error.get("metadata") or {}
    text = str(error.get("message", "")).lower()
    return bool(isinstance(metadata, dict) and ("reasons" in metadata or "flagged_input" in metadata)
                or "moderation" in text or "flagged" in text)


_DOES_NOT_FIT = "does not fit the context"  # a failure a re-run cannot mend: the summary advises none
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504, 524, 529}
_LONG_WAIT = 600.0  # seconds: a 429 that asks to wait longer (a daily cap) stops the run instead


# How servers say a conversation is longer than the model's context: llama.cpp's server (type
# exceed_context_size_error, "request (4476 tokens) exceeds the available context size (4096 tokens)"; before
# that "the request exceeds the available context size"), OpenAI and vLLM ("This model's maximum context
# length is 4096 tokens", code context_length_exceeded; "Input tokens exceed the configured limit of N
# tokens"), SGLang ("longer than the model's context length"), Anthropic behind a router ("prompt is too long:
# ... maximum"), TGI and Together (router/src/validation.rs, MaxTotalTokens: "`inputs` tokens +
# `max_new_tokens` must be <= N"; not MaxNewTokens, a --max-tokens above the model's), Gemini ("The input
# token count (N) exceeds the maximum number of tokens allowed (M)"; Vertex: "the input token count is N but
# model only supports up to M").
_CONTEXT_OVERFLOW = re.compile(r"context[ _](size|length|window)|maximum context|prompt is too long|too many "
                               r"tokens|`inputs` tokens \+ `max_new_tokens`|input token count\b.*\b(exceeds "
                               r"the maximum|only supports up to)|input tokens exceed the configured "
                               r"limit", re.IGNORECASE)


def _is_context_overflow(error: Any) -> bool:
    if not isinstance(error, dict):
        return bool(_CONTEXT_OVERFLOW.search(_error_text(error)))
    named = " ".join(str(error.get(key) or "") for key in ("type", "code", "message"))
    return bool(_CONTEXT_OVERFLOW.search(named))


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Seconds until the teacher takes requests again, from Retry-After (seconds, or an HTTP date read
    against the answer's own Date header: the server's clock, not ours), else X-RateLimit-Reset."""
    value = headers.get("retry-after")
    if not value:
        return _rate_limit_reset_seconds(headers.get("x-ratelimit-reset"), headers)
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - _server_time(headers)
        except (TypeError, ValueError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


# Hosted APIs give Retry-After in whole seconds, rounded up: a token bucket's next token 50 ms away reads
# "1". Pausing every request for it cost a tenth of a run at 20 requests/s, so a short whole-second wait
# holds only the refused request's retry; the limiter's pace keeps the others under the rate. A wait of
# _ROUNDED_WAIT or more, or an exact one (X-RateLimit-Reset, in ms), is a spent window: everyone waits.
_ROUNDED_WAIT = 5.0


def _wait_holds_everyone(status: int, wait: float | None, headers: httpx.Headers) -> bool:
    value = headers.get("retry-after", "").strip()
    rounded = bool(value) and (value.isdigit() or not value[:1].isdigit())  # whole seconds, or an HTTP date
    return not (status == 429 and wait is not None and wait < _ROUNDED_WAIT and rounded)


def _request_budget(headers: httpx.Headers) -> tuple[int, int | None, float] | None:
    """(requests left, requests a window, seconds until the window ends) from the x-ratelimit-*-requests
    headers that OpenAI, Groq, Together and LiteLLM's proxy send on every answer; None without them.
    Without x-ratelimit-reset-requests, the window is taken to end with the minute on the answer's Date
    clock: LiteLLM counts calendar minutes (router.py keys its rpm counts by the UTC "%H-%M")."""
    left = _whole_number(headers.get("x-ratelimit-remaining-requests"))
    if left is None:
        return None
    limit = _whole_number(headers.get("x-ratelimit-limit-requests"))  # as sent: the limiter judges a 0
    ends_in = _duration_seconds(headers.get("x-ratelimit-reset-requests"))
    if ends_in is None:
        now = _server_time(headers)
        ends_in = 60.0 - now % 60.0 + 0.25  # and a little: Date is whole seconds, clocks drift
    return left, limit, min(ends_in, _LONG_WAIT)


def _whole_number(value: str | None) -> int | None:
    try:
        number = float(value or "")
    except ValueError:
        return None
    return int(number) if math.isfinite(number) else None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration_seconds(value: str | None) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "20ms", "1h2m3.5s"), or plain seconds; None if neither."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        return None
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _server_time(headers: httpx.Headers) -> float:
    """The answer's Date as epoch seconds (the server's clock), or ours when it sends none we can read."""
    try:
        return email.utils.parsedate_to_datetime(headers["date"]).timestamp()
    except (KeyError, TypeError, ValueError, OverflowError):
        return time.time()


def _rate_limit_reset_seconds(value: str | None, headers: httpx.Headers) -> float | None:
    """OpenRouter's X-RateLimit-Reset is the epoch time in milliseconds when the window resets; some
    providers send epoch seconds, or seconds from now. Told apart by size. An epoch time is the server's
    clock: read against the answer's Date when that is more than 2 s off ours (a server 11 minutes ahead
    would make a 5-second window read as an 11-minute cap), else against ours (Date is whole seconds)."""
    try:
        seconds = float(value or "")
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    if seconds > 1e9:  # epoch milliseconds, or epoch seconds
        now, theirs = time.time(), _server_time(headers)
        seconds = (seconds / 1000 if seconds > 1e11 else seconds) - (theirs if abs(theirs - now) > 2 else now)
    return max(seconds, 0.0)


def judge_answer(status: int, data: Any, headers: httpx.Headers, raw: bytes, redact: Callable[[str], str],
                 url: str) -> RetryableError | PromptFailed | RunStopped | None:
    """What an answer's status, body and headers mean: the exception its request ends with, or None for a 200
    whose body is an answer to check (_checked_completion). The one judge of every answer of the teacher's,
    live or from a batch. `data` is the body decoded (decode_answer), `raw` the body as it came; `redact`
    takes the secrets out of the teacher's words; `url` is the endpoint as messages show it. A 200 whose body
    is an error and no choices (a provider's failure, relayed) is judged by the error's code, as 502 when it
    gives none."""
    if status != 200:
        return _error_failure(status, _answer_error(data), status, headers, raw, redact, url)
    if not isinstance(data, dict):
        return RetryableError("malformed answer", "malformed answer: not a JSON object")
    if not data.get("error") or data.get("choices"):
        return None
    code = _field_of(data["error"], "code")
    valid_code = isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600
    return _error_failure(code if valid_code else 502, data["error"], status, headers, raw, redact, url)


def _fit_to_show(text: str, redact: Callable[[str], str], limit: int | None = 300) -> str:
    """Teacher text fit to store or print: the key removed first, then cut (a cut key would survive)."""
    text = redact(text)
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


def _error_failure(status: int, error: Any, answered: int, headers: httpx.Headers, raw: bytes,
                   redact: Callable[[str], str], url: str) -> RetryableError | PromptFailed | RunStopped:
    """An error judged by `status` (the answer's own, or the code of an error a 200 carried: `answered`)."""
    detail = _fit_to_show(_error_text(error) or httpx.codes.get_reason_phrase(answered), redact)
    if status == 400 and b"plain HTTP request was sent to HTTPS port" in raw:  # nginx's words
        return RunStopped("not TLS", f"{url} is served over https, but the request was plain http. Use an "
                          "https:// --base-url (or OPENROUTER_BASE_URL), then re-run the same command.")
    availability = _field_of(error, "availability")
    if isinstance(availability, dict):
        return _unavailable(status, availability, detail, headers, redact)
    wait = retry_after_seconds(headers)
    says_when = "retry-after" in headers and wait is not None  # transient, whatever the status
    if status == 401:
        return RunStopped("key rejected", f"the API key was rejected (401: {detail}). Check "
                          "OPENROUTER_API_KEY in your environment or .env, then re-run the same command to "
                          "continue.")
    if status == 402 and not says_when:
        return RunStopped("out of credits", f"out of credits (402: {detail}). Add credits "
                          "(https://openrouter.ai/settings/credits), then re-run the same command; "
                          "finished samples are kept.")
    if 400 <= status < 500 and "distill" in detail.lower() and not says_when:
        # OpenRouter does not document this refusal; any 4xx that names distillation is it
        return RunStopped("not distillable", f"the teacher refused the request for its licence ({status}: "
                          f"{detail}). --distillable routes only to models whose authors allow training on "
                          "their outputs: choose one (https://openrouter.ai/models?distillable=true) with "
                          "--model, or leave out --distillable if you have checked the licence yourself; "
                          "then re-run the same command. Finished samples are kept.")
    if status == 403 and not _is_moderation_error(error) and not says_when:
        return RunStopped("access denied", f"access denied (403: {detail}). Check the key's permissions and "
                          "limits, then re-run the same command to continue.")
    if status in (400, 413, 422) and _is_context_overflow(error):
        return PromptFailed(_DOES_NOT_FIT, "the conversation does not fit the model's context (HTTP "
                            f"{status}: {detail}); a re-run would fail the same way", status=status)
    if status in _RETRYABLE_STATUS or status >= 500 or says_when:
        return _retryable(status, wait, detail, headers)
    return PromptFailed(f"HTTP {status}", f"HTTP {status}: {detail}", status=status)


def _retryable(status: int, wait: float | None, detail: str, headers: httpx.Headers,
               kind: str | None = None) -> RetryableError | RunStopped:
    kind = kind or f"HTTP {status}"
    if wait is not None and wait > _LONG_WAIT:
        return RunStopped("rate limit for hours" if status == 429 else "teacher away for hours",
                          f"the teacher's {'rate limit resets' if status == 429 else 'answer asks to wait'} "
                          f"in {_human_duration(wait)} ({status}: {detail}), a daily or monthly cap such as "
                          "a free model's. Re-run the same command after that, or with a model or key "
                          "without that cap (--model); finished samples are kept.")
    return RetryableError(kind, f"HTTP {status}: {detail}", wait, status == 429,
                          _wait_holds_everyone(status, wait, headers))


def _unavailable(status: int, availability: dict, detail: str, headers: httpx.Headers,
                 redact: Callable[[str], str]) -> RetryableError | PromptFailed | RunStopped:
    """OpenRouter's availability errors, judged as its docs say: by `retryable`, not by the code.
    Retryable ones wait `retry_after`. One that filtered this conversation out (it does not fit the
    context) fails this rollout; any other holds for every request (the model is unknown, deprecated,
    gone, not served in this region or under this privacy setting): the run stops at once, naming the
    models OpenRouter suggests instead."""
    code = _fit_to_show(_printable(str(availability.get("code") or "unavailable")), redact, 60)
    if availability.get("retryable") is True:
        wait = _amount(availability.get("retry_after")) if "retry_after" in availability else None
        return _retryable(status, wait or retry_after_seconds(headers), f"{code}: {detail}", headers,
                          kind=f"HTTP {status} {code}")
    constraint = availability.get("constraint")
    if code == "constraint_filtered" and "context" in str(constraint).lower():
        return PromptFailed(_DOES_NOT_FIT, f"the conversation does not fit the model's context "
                            f"(HTTP {status}: {detail}); a re-run would fail the same way", status=status)
    models = availability.get("fallback_models")
    names = [_fit_to_show(str(m), redact, 80) for m in models[:5]] if isinstance(models, list) else []
    instead = (f" OpenRouter suggests instead: {', '.join(names)}; pass one with --model." if names else
               " Choose another with --model (https://openrouter.ai/models).")
    return RunStopped("model unavailable", f"the teacher model cannot be used now ({code}, HTTP {status}: "
                      f"{detail}).{instead} Then re-run the same command; finished samples are kept.")


# How an answer that was not read whole fails (read_failure says what each means); a connection that failed is
# judged by the client (a stale one is sent again; tls_failure stops the run; many in a row, too).
_READ_FAILURES = (FirstByteStalled, StreamStalled, TimeoutError, StreamCut, AnswerTooLarge, MalformedAnswer)


def read_failure(error: Exception, stall_timeout: float, timeout: float) -> RetryableError | PromptFailed:
    """What a failure to read an answer whole (one of _READ_FAILURES) means: retried, except an answer over
    the size cap, which would come as large again. The timeouts are --stall-timeout's and --timeout's."""
    if isinstance(error, FirstByteStalled):
        return RetryableError("stalled", f"the server sent nothing, not even the answer's head, for "
                              f"{stall_timeout:g} s (--stall-timeout)")
    if isinstance(error, StreamStalled):
        return RetryableError("stalled",
                              f"the streamed answer sent no data for {stall_timeout:g} s (--stall-timeout)")
    if isinstance(error, TimeoutError):
        return RetryableError("timeout", f"no complete answer within {timeout:g} s (--timeout)")
    if isinstance(error, StreamCut):
        return RetryableError("stream cut", f"the streamed answer was cut ({error})")
    if isinstance(error, AnswerTooLarge):
        return PromptFailed("answer too large", str(error))
    return RetryableError("malformed answer", f"malformed answer: {error}")


def tls_failure(error: BaseException, host: str, port: int | None,
                redact: Callable[[str], str]) -> RunStopped | None:
    """Certificate failures, and https:// sent to a plain-http port, fail every request alike: the run stops
    at once, saying what to do. A handshake cut by the network (None) stays retryable."""
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        why = getattr(error.certificate_error, "verify_message", None) or error.certificate_error
        return RunStopped("certificate", redact(
            f"the TLS certificate of {host} could not be verified ({why}). Behind a TLS-inspecting proxy "
            "(a company network, an antivirus), set SSL_CERT_FILE to a file holding its CA certificate, in "
            "the environment or .env; otherwise check --base-url. Then re-run the same command."))
    reason = getattr(getattr(error, "os_error", None), "reason", None) or getattr(error, "reason", None)
    if isinstance(error, (aiohttp.ClientSSLError, ssl.SSLError)) and reason in _NOT_TLS_REASONS:
        return RunStopped("not TLS", redact(
            f"{host}:{port or 443} does not speak TLS, so https:// cannot work there ({reason}). "
            "If the server is plain HTTP, use an http:// --base-url (or OPENROUTER_BASE_URL), then re-run "
            "the same command."))
    return None


def _parse_completion(data: dict) -> Completion:
    """Check every field the rollout uses; raise MalformedAnswer naming the first one that is wrong.
    The message is otherwise kept as the API gave it: it is sent back as is on the next turn."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedAnswer("no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise MalformedAnswer("choices[0].message is not an object")
    finish_reason = choice.get("finish_reason")
    if finish_reason is not None and not isinstance(finish_reason, str):
        raise MalformedAnswer("finish_reason is not a string")
    content = message.get("content")
    if isinstance(content, list):  # parts (Mistral's chunks): the dataset's content is always a string
        text, thinking = _content_parts_text(content)
        message = {**message, "content": text}
        if thinking and not (message.get("reasoning") or message.get("reasoning_content")):
            message["reasoning_content"] = thinking
    elif not (content is None or isinstance(content, str)):
        raise MalformedAnswer("message.content is neither text nor a list of text parts")
    for name in ("reasoning", "reasoning_content", "refusal"):
        if message.get(name) is not None and not isinstance(message[name], str):
            raise MalformedAnswer(f"message.{name} is not a string")
    if message.get("reasoning_details") is not None and not isinstance(message["reasoning_details"], list):
        raise MalformedAnswer("message.reasoning_details is not a list")
    model, provider = data.get("model"), data.get("provider")
    return Completion(_assistant_message(message), finish_reason, model if isinstance(model, str) else None,
                      choice.get("error"), provider if isinstance(provider, str) else None)


@dataclass
class Completion:
    message: dict
    finish_reason: str | None
    model: str | None
    error: Any = None  # the choice's error object, when finish_reason is "error"
    provider: str | None = None  # who served it, where a router says (OpenRouter: "provider")
    stop_now: bool = False  # it came whole as the run stopped at once: kept, and its rollout stops after it


def _checked_completion(data: dict, raw: bytes, redact: Callable[[str], str]) -> Completion:
    """A 200's answer that judge_answer let through, every field the rollout uses checked (_parse_completion):
    a lone surrogate, a malformed field or a provider that failed mid-answer is a RetryableError."""
    if _SURROGATE_ESCAPE.search(raw) and not _encodable(data):
        raise RetryableError("malformed answer",
                             "malformed answer: a lone surrogate (text that is not valid Unicode)")
    try:
        completion = _parse_completion(data)
    except MalformedAnswer as e:
        raise RetryableError("malformed answer", f"malformed answer: {e}") from None
    if completion.finish_reason == "error":
        raise RetryableError("provider error",
                             _fit_to_show(f"the provider failed mid-answer: {_error_text(completion.error)}",
                                          redact))
    return completion


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # cheap pre-check; `_encodable` decides


def _assistant_message(message: dict) -> dict:
    """The message with well-formed tool calls (ids filled in), or MalformedAnswer."""
    message = dict(message)
    message["role"] = "assistant"
    calls = message.pop("tool_calls", None)
    if calls is None or calls == []:
        return message
    if not isinstance(calls, list):
        raise MalformedAnswer("message.tool_calls is not a list")
    message["tool_calls"] = [_tool_call(call, i) for i, call in enumerate(calls)]
    return message


def _tool_call(call: Any, i: int) -> dict:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise MalformedAnswer(f"tool_calls[{i}] has no function object")
    function = dict(call["function"])
    if not isinstance(function.get("name", ""), str):
        raise MalformedAnswer(f"tool_calls[{i}].function.name is not a string")
    if not isinstance(function.get("arguments", ""), (str, dict, type(None))):
        raise MalformedAnswer(f"tool_calls[{i}].function.arguments is neither a JSON string nor an object")
    if not isinstance(call.get("id", ""), (str, type(None))):
        raise MalformedAnswer(f"tool_calls[{i}].id is not a string")
    function.setdefault("name", "")
    if function.get("arguments") is None:
        function["arguments"] = ""
    return {**call, "id": call.get("id") or None, "type": call.get("type") or "function",
            "function": function}


def _with_unique_call_ids(message: dict, turn: int, conversation: list[dict]) -> dict:
    """The message with every tool call id unique in the conversation, so each tool result maps back to
    one call (templates and trainers pair them by id). The teacher's id is kept where it is unique;
    a missing, repeated or reused one becomes call_{turn}_{i}: the same on every run, unlike a random one.
    These are the ids the teacher gets back with the results, too."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    taken = {c.get("id") for m in conversation for c in m.get("tool_calls") or () if isinstance(c, dict)}
    taken |= {m.get("tool_call_id") for m in conversation if m.get("role") == "tool"}
    given = collections.Counter(call["id"] for call in calls)
    kept = [call["id"] if call["id"] and given[call["id"]] == 1 and call["id"] not in taken else None
            for call in calls]
    taken.update(kept)
    ids = []
    for i, id_kept in enumerate(kept):
        new_id, n = id_kept or f"call_{turn}_{i}", 1
        while id_kept is None and new_id in taken:
            new_id, n = f"call_{turn}_{i}_{n}", n + 1
        taken.add(new_id)
        ids.append(new_id)
    if all(call["id"] == new_id for call, new_id in zip(calls, ids)):
        return message
    return {**message, "tool_calls": [{**call, "id": new_id} for call, new_id in zip(calls, ids)]}


def _backoff_patience(backoff: float, retries: int) -> float:
    """The longest `retries` retries' backoff waits in all (_backoff_delay without its jitter)."""
    return sum(min(60.0, backoff * 2 ** k) for k in range(retries))


def _backoff_delay(backoff: float, attempt: int, retry_after: float | None = None) -> float:
    """Seconds before retry `attempt`: `backoff` doubling up to 60, with jitter (retries of one burst spread
    out), and never sooner than the server said."""
    delay = min(60.0, backoff * 2 ** (attempt - 1))
    delay = delay / 2 + random.uniform(0, delay / 2)
    return max(delay, retry_after or 0.0)


class Retries:
    """Retry with backoff until patience is spent: the one rule of both retry loops, a request's to the
    teacher (TeacherClient) and a batch submission's (BatchQueue). After the first try come at most `retries`
    more, retry n after _backoff_delay(backoff, n); the loop says when it gives up (next_wait is None)."""

    def __init__(self, backoff: float, retries: int):
        self.backoff, self.retries = backoff, retries
        self.spent = 0  # retries spent so far
        self._patient_until: float | None = None  # once a retry waited within patience: till when it may

    @property
    def left(self) -> bool:
        """Whether a retry may still come."""
        return self.spent < self.retries

    def next_wait(self, retry_after: float | None = None) -> float | None:
        """One retry spent: the seconds to wait before it (never fewer than the server said), or None when
        there was none left."""
        self.spent += 1
        return _backoff_delay(self.backoff, self.spent, retry_after) if self.spent <= self.retries else None

    def wait_within_patience(self, retry_after: float | None) -> float | None:
        """A retry that spends none: after what the server said (or at once), for as long as the backoff of
        the retries left would have waited in all, counted from the first such retry; then None, and no
        retry is left."""
        if self._patient_until is None:
            patience = _backoff_patience(self.backoff, self.retries - self.spent)
            self._patient_until = time.monotonic() + patience
        if time.monotonic() < self._patient_until:
            return retry_after or 0.0
        self.spent = self.retries + 1
        return None


# ==================================================================================================
# Batches
# ==================================================================================================
# What OpenRouter's Batch API takes and gives: where batches go, a request's name and size in one, a
# batch's price, window and record, its results turned into answers (Batch, _BatchPricing, _batch_answers);
# the result pages; the queue's bounds.


_BATCH_MOST_BYTES = 180_000_000  # OpenRouter takes 200 MB a batch: a tenth kept back for its own framing
_BATCH_ENDED = ("completed", "failed", "expired", "cancelled")
_WINDOW = 24 * 3600.0  # a batch's completion window when the service says none
_REQUEST_FRAMING = 64  # bytes a request adds to the batch besides its body: {"custom_id":"...","body":},


def _batch_endpoints(base_url: str) -> list[str]:
    """Where batches go, in order: the guide's and the API reference's /batches beside chat/completions, then,
    once, the quickstart's /api/beta/batches (for a base URL ending in /v1), where the first answers
    404/405."""
    endpoints = [f"{base_url}/batches"]
    if base_url.endswith("/v1"):
        endpoints.append(base_url[:-len("/v1")] + "/beta/batches")
    return endpoints


def batch_custom_id(key: RolloutKey, payload: bytes) -> str:
    """A request's name in a batch: its rollout's try and the exact bytes of its body, hashed. A resumed
    rollout rebuilds the same request, so it finds the same name, and the answer a batch holds for it;
    anything else in the body (the prompt's text, the system prompt, the tools) is another request."""
    # The key hashed as these exact bytes, whatever else changes: a batch recorded by an earlier run names its
    # requests by them
    rollout = f"{key.prompt_id}\x1f{key.sample}\x1f{key.attempt}"
    return hashlib.sha256(rollout.encode("utf-8", "surrogatepass") + b"\x00" + payload).hexdigest()[:32]


def batch_cut(sizes: Iterable[int], most_requests: int, most_bytes: int = _BATCH_MOST_BYTES) -> int:
    """How many of the queued requests (their sizes in bytes, in order) the next batch carries: as many as
    fit under both of the service's limits, a count and a size, and at least one."""
    count, total = 0, 0
    for size in itertools.islice(sizes, most_requests):
        total += size + _REQUEST_FRAMING
        if total > most_bytes and count:
            break
        count += 1
    return count


def _fits_a_batch(size: int) -> bool:
    """Whether a request of this many bytes fits in a batch at all, alone."""
    return size + _REQUEST_FRAMING <= _BATCH_MOST_BYTES


def _most_answer_tokens(requests: RequestSettings) -> int:
    """The longest answer one request may buy: its max_tokens (--max-tokens, or --extra-body's) and the
    reasoning budget it asks for, if any."""
    extra = requests.extra_body
    asked = [v for v in (requests.max_tokens, extra.get("max_tokens"), extra.get("max_completion_tokens"))
             if type(v) is int and v > 0]
    reasoning = extra.get("reasoning") if isinstance(extra.get("reasoning"), dict) else requests.reasoning
    budget = _field_of(reasoning, "max_tokens")
    return max(asked, default=0) + (budget if type(budget) is int and budget > 0 else 0)


@dataclass
class _BatchPricing:
    """What a request will likely cost in a batch, before it goes (--max-cost): its prompt (its bytes /
    _CHARS_PER_TOKEN) and the longest answer it may buy, at a price a token. With the model's price listed
    (its `:batch` entry's, else the live one, about twice the batch price), at that price, scaled once
    answers were billed by what they cost against the listed cost of their own tokens (more than 1 where
    the list priced too low). Where the list says nothing usable (none, a price of 0 that answers were
    billed above), at the highest price a token any billed answer had, or, for answers billed without
    their tokens, the highest an answer cost. A price, never an answer's length: short first answers do
    not make the later long ones look cheap. Before any of that, unknown (None)."""

    prompt_price: float | None = None  # USD a prompt token, as listed
    completion_price: float | None = None
    most_answer_tokens: int = 0  # max_tokens plus the reasoning budget
    billed: float = 0.0  # USD the costed answers with tokens were billed
    listed_cost: float = 0.0  # what their tokens cost at the listed price
    per_token: float | None = None  # the highest USD a token a billed answer had
    per_answer: float | None = None  # the highest USD an answer billed without its tokens had

    @property
    def listed(self) -> bool:
        """A listed price to go by: none, or one of 0 for both (a price nobody can size a cap by), is not."""
        return self.prompt_price is not None and self.completion_price is not None and \
            self.prompt_price + self.completion_price > 0

    def likely(self, size: int) -> float | None:
        """USD; None while no price is known."""
        prompt_tokens = size / _CHARS_PER_TOKEN
        per_token = (prompt_tokens
                     + self.most_answer_tokens) * self.per_token if self.per_token is not None else None
        if self.listed and (self.listed_cost > 0 or (per_token is None and self.per_answer is None)):
            worst = prompt_tokens * self.prompt_price + self.most_answer_tokens * self.completion_price
            per_token = worst * (self.billed / self.listed_cost if self.listed_cost > 0 else 1.0)
        return max((cost for cost in (per_token, self.per_answer) if cost is not None), default=None)

    def learn(self, billed: list[tuple[float, float, float]]) -> None:
        """Answers billed: (cost, prompt tokens, completion tokens) of each that said its cost."""
        for cost, prompt_tokens, completion_tokens in billed:
            if prompt_tokens + completion_tokens <= 0:
                self.per_answer = max(self.per_answer or 0.0, cost)
                continue
            self.per_token = max(self.per_token or 0.0, cost / (prompt_tokens + completion_tokens))
            if self.listed:
                self.billed += cost
                self.listed_cost += (prompt_tokens * self.prompt_price
                                     + completion_tokens * self.completion_price)

    def learn_listed(self, models: Any, model: str) -> None:
        """The model's price from a models list's `data` (GET /models): its `:batch` entry's if listed, else
        its own; none there (another server, another shape), and it stays unknown."""
        listed = {e["id"]: e for e in models if isinstance(e, dict) and isinstance(e.get("id"), str)} \
            if isinstance(models, list) else {}
        for name in (f"{model}:batch", model):
            pricing = _field_of(listed.get(name), "pricing")
            prompt = _listed_price(_field_of(pricing, "prompt"))
            completion = _listed_price(_field_of(pricing, "completion"))
            if prompt is not None and completion is not None and prompt + completion > 0:  # 0: sizes nothing
                self.prompt_price, self.completion_price = prompt, completion
                return


def _listed_price(value: Any) -> float | None:
    """A models-list price (USD a token, a string in OpenRouter's list); None when it is not one (OpenRouter
    lists -1 for routers whose price varies)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value < 0):
        return None
    return float(value)


@dataclass
class Batch:
    id: str
    url: str  # the batch endpoint it went to, where it is looked at
    custom_ids: list[str]
    keys: list[RolloutKey | None]  # each request's rollout try (None: recorded by an earlier release)
    sent: float  # when it was submitted (Unix time; an earlier run's, from its record)
    window_end: float = 0.0  # after this, an answer it has not given will not come
    status: str = "validating"
    counts: dict = field(default_factory=dict)  # the batch's request_counts, as last seen
    likely: float = 0.0  # USD it will likely cost, until billed (--max-cost)
    answered: set[str] = field(default_factory=set)  # custom_ids whose result was read
    cost: float = 0.0  # what the results read so far cost
    counted: float = 0.0  # of that, what this run counted as billed
    paid_before: float = 0.0  # what earlier runs counted for it, as its record says
    recorded_sent: Any = None  # `sent` as its record wrote it, which its billing lines name it by
    over: bool = False  # watched to its end: each request answered, sent again, or failed

    def __post_init__(self) -> None:
        self.window_end = self.window_end or self.sent + _WINDOW

    @property
    def key(self) -> tuple[str, Any]:
        """What tells batches apart (a service may give two batches one id; it should not), as its record
        names it."""
        return self.id, self.sent if self.recorded_sent is None else self.recorded_sent

    def unanswered(self) -> list[str]:
        return [custom_id for custom_id in self.custom_ids if custom_id not in self.answered]

    def record(self, endpoints: list[str]) -> dict:
        """Its line in the record: the endpoint by its place among the base URL's (a URL may hold a
        password)."""
        return {"batch": self.id,
                "endpoint": endpoints.index(self.url) if self.url in endpoints else len(endpoints) - 1,
                "custom_ids": self.custom_ids, "sent": self.key[1],
                "rollouts": [None if key is None else list(key) for key in self.keys]}


class _BatchAnswer(NamedTuple):
    status: int
    body: bytes
    custom_id: str = ""
    paid_before: bool = False  # its batch was billed by an earlier run, which counted it
    headers: Mapping[str, str] = {}  # a refusal's headers (Retry-After), judged as the live API's would be


def _named_requests(reason: str, custom_ids: list[str], among: list[str]) -> list[str]:
    """The requests (of `among`) a batch's refusal or failure names: by custom_id, or as requests[N], N its
    place in the batch."""
    named = [c for c in among if c in reason]
    for match in re.finditer(r"requests?\s*\[\s*(\d+)\s*\]", reason):
        index = int(match.group(1))
        if index < len(custom_ids) and custom_ids[index] in among:
            named.append(custom_ids[index])
    return list(dict.fromkeys(named))


def _batch_results(batch: Batch, results: Any, found: dict[str, dict]) -> None:
    """Add to `found` the results (a list, inline or a page) that answer a request of this batch not yet
    answered, by custom_id; anything else in the list is not ours, whatever its shape."""
    if not isinstance(results, list):
        return
    mine = set(batch.custom_ids)
    for result in results:
        custom_id = _field_of(result, "custom_id")
        if isinstance(custom_id, str) and custom_id in mine and custom_id not in batch.answered:
            found.setdefault(custom_id, result)


@dataclass
class _BatchReading:
    """Results of a batch turned into answers: each as the live API would have answered it, by custom_id;
    what the batch has cost once they are counted; and the costed answers' (cost, prompt tokens, completion
    tokens), the price the service billed."""

    answers: dict[str, tuple[int, bytes]]
    cost: float
    billed: list[tuple[float, float, float]]


def _batch_answers(batch: Batch, found: dict[str, dict], data: dict) -> _BatchReading:
    """The results found (an error object becomes that error's status and body). An answer without a cost
    gets its share of what the batch's own usage says, by tokens, once every result of the batch is in."""
    answers: dict[str, tuple[int, Any]] = {}
    # answers without a cost, and their tokens (their share)
    without_cost: list[tuple[dict, float, float]] = []
    billed: list[tuple[float, float, float]] = []
    for custom_id, result in found.items():
        response = result.get("response")
        status = _field_of(response, "status_code")
        if type(status) is int and 100 <= status < 600:
            body = response.get("body")
            usage = _field_of(body, "usage")
            if isinstance(body, dict) and not isinstance(usage, dict):  # no usage at all: a share, by count
                usage = body["usage"] = {}
            if isinstance(usage, dict):
                tokens = _amount(usage.get("prompt_tokens")), _amount(usage.get("completion_tokens"))
                if _has_cost(usage):
                    billed.append((_amount(usage["cost"]), *tokens))
                else:
                    without_cost.append((body, *tokens))
            answers[custom_id] = (status, body)
        else:
            error = result.get("error") if isinstance(result.get("error"), dict) else {"message": "no answer"}
            code = error.get("code")
            answers[custom_id] = (code if type(code) is int and 400 <= code < 600 else 500, {"error": error})
    complete = len(batch.answered) + len(answers) == len(batch.custom_ids)
    batch_cost = _amount(_field_of(data.get("usage"), "cost"))
    cost = batch.cost + sum(c for c, _, _ in billed)
    tokens_without = sum(p + c for _, p, c in without_cost)
    if complete and without_cost and batch_cost > cost:  # by tokens; without any, in equal parts
        for body, prompt_tokens, completion_tokens in without_cost:
            part = (prompt_tokens
                    + completion_tokens) / tokens_without if tokens_without else 1 / len(without_cost)
            body["usage"] = {**body["usage"], "cost": (batch_cost - cost) * part}
            billed.append((body["usage"]["cost"], prompt_tokens, completion_tokens))
        cost = batch_cost
    return _BatchReading({c: (status, _encoded(body)) for c, (status, body) in answers.items()},
                        max(cost, batch_cost if complete else 0.0), billed)


def _batch_window_end(data: dict, batch: Batch) -> float:
    """When the batch's completion window ends (Unix time): its expires_at, else its created_at (or its
    submission) plus its completion_window ("24h"; "96h" where the provider takes that long)."""
    created = _unix_time(data.get("created_at"), batch.sent) or batch.sent
    expires = _unix_time(data.get("expires_at"), batch.sent)
    if expires is not None and expires > max(created, batch.sent - _CLOCK_SKEW):  # a window that ended before
        return expires                                                            # it began is not one
    window = data.get("completion_window")
    match = re.fullmatch(r"\s*(\d{1,3})\s*([hd])\s*", window) if isinstance(window, str) else None
    hours = min(_LONGEST_WINDOW_HOURS,
                int(match.group(1)) * (24 if match.group(2) == "d" else 1)) if match else 0
    return created + hours * 3600.0 if hours else batch.window_end


_CLOCK_SKEW = 300.0  # seconds the service's clock may be behind ours


_LONGEST_WINDOW_HOURS = 30 * 24  # a window the service says is longer is not believed (results live 30 days)


def _unix_time(value: Any, sent: float) -> float | None:
    """A time the service gave, in seconds (or milliseconds, or microseconds, as some send them); None when
    it is not one, or not within a day before the submission and the longest window after it."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value <= 0):
        return None
    for scale in (1, 1e3, 1e6):
        if sent - 86400 <= value / scale <= sent + _LONGEST_WINDOW_HOURS * 3600:
            return value / scale
    return None


def _encoded(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # integers past 64 bits, which json writes exactly
        return json.dumps(value).encode()


class BatchRecord:
    """<stem>.batches.jsonl: each batch sent, written before the run waits on it (and, before each
    submission, a line naming none: a full disk is found before a batch is bought); what its results cost
    once read. The next run reads the batches back; the run's end rewrites it with those still needed."""

    def __init__(self, path: Path, like: Path | None, log: Callable[[str], None]):
        # like: the output, which it is no more readable than
        self.path, self.like, self.log = path, like, log
        self.broken: str | None = None  # why a line could not be written: no new batch goes

    def append(self, entry: dict) -> bool:
        """One line more, flushed; False when it could not be written (said once)."""
        try:
            _create_like(self.path, self.like)
            with open(self.path, "ab") as f:
                f.write(orjson.dumps(entry) + b"\n")
            return True
        except OSError as e:
            if self.broken is None:
                self.broken = f"{self.path} could not be written ({e.strerror or e})"
                self.log(f"{self.broken}: no new batch goes until the batches in flight end.")
            return False

    def batches(self, endpoints: list[str]) -> list[Batch]:
        """The batches earlier runs recorded, each with what earlier runs counted as billed for it. A line
        of another shape is not ours; a time ahead of the clock counts as now; an endpoint not among this
        base URL's is the older beta one."""
        if not self.path.is_file():
            return []
        found: dict[tuple[str, Any], Batch] = {}
        billed: dict[tuple[str, Any], float] = {}
        for _, entry in LineReader(self.path).records():
            batch_id = _field_of(entry, "batch")
            if not isinstance(batch_id, str) or not batch_id:
                continue
            if "billed" in entry:
                key = (batch_id, _recorded_time(entry.get("sent")))
                billed[key] = max(billed.get(key, 0.0), _amount(entry["billed"]))
            elif isinstance(entry.get("custom_ids"), list):
                batch = self._batch(batch_id, entry, endpoints)
                found.setdefault(batch.key, batch)
        for batch in found.values():
            batch.paid_before = billed.get(batch.key, billed.get((batch.id, None), 0.0))
        return list(found.values())

    @staticmethod
    def _batch(batch_id: str, entry: dict, endpoints: list[str]) -> Batch:
        ids = [c for c in entry["custom_ids"] if isinstance(c, str)]
        rollouts = entry.get("rollouts") if isinstance(entry.get("rollouts"), list) else []
        keys = [RolloutKey.of_paused(dict(zip(RolloutKey._fields, r))) if isinstance(r, list)
                else None for r in rollouts] if len(rollouts) == len(ids) else [None] * len(ids)
        place = entry.get("endpoint")
        url = endpoints[place] if type(place) is int and 0 <= place < len(endpoints) else endpoints[-1]
        sent = _recorded_time(entry.get("sent"))
        return Batch(batch_id, url, ids, keys, sent=min(sent or 0.0, time.time()), recorded_sent=sent)

    def rewrite(self, kept: list[Batch], endpoints: list[str]) -> None:
        """Only these batches stay on record (none: the file goes). A rewrite that fails leaves the file as
        it was, which still holds every batch."""
        try:
            if not kept:
                self.path.unlink(missing_ok=True)
                return
            with replaced_atomically(self.path, like=self.like) as f:
                for batch in kept:
                    f.write(orjson.dumps(batch.record(endpoints)) + b"\n")
                    if batch.cost or batch.paid_before:
                        f.write(orjson.dumps({"batch": batch.id, "sent": batch.key[1],
                                              "billed": max(batch.cost, batch.paid_before)}) + b"\n")
        except OSError:
            pass


def _recorded_time(value: Any) -> float | None:
    """A time of the record's, as written (its billing lines name a batch by it); None: not one."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) else None


class _BatchBudget:
    """--max-cost in batch mode: before each batch, how many of the queued requests may go and what they will
    likely cost, so that at the price known (_BatchPricing) the batches in flight and this one cannot pass the
    cap (SpendCap). A price nobody knows yet: a small first batch, said once, and nothing more until it is
    billed. Answers that come without any cost: the cap cannot apply (said once)."""

    def __init__(self, cap: SpendCap, pricing: _BatchPricing, unpriced: str):
        # unpriced: what is said when no price is
        self.cap, self.pricing, self.unpriced = cap, pricing, unpriced
        self.said_unpriced = False                                       # listed
        self.costless_answers = 0  # answers read that carried no cost

    def room(self, sizes: list[int], in_flight: list[Batch], billed: float, payloads: Mapping[str, bytes]
             ) -> tuple[int, float]:
        """How many of these queued requests (their sizes, in order) may go, and what they will likely cost;
        `billed`: what this run's batches were billed so far."""
        if self.costless_answers and not billed:
            self.cap.cannot_apply()
            return len(sizes), 0.0
        likely = [self.pricing.likely(size) for size in sizes]
        unbilled = [self._unbilled(b, max(sizes), payloads) for b in in_flight]
        if any(cost is None for cost in likely + unbilled):
            if in_flight:
                return 0, 0.0  # wait for it to be billed: its price sizes the next
            if not self.said_unpriced:
                self.said_unpriced = True
                self.cap.log(self.unpriced)
            return min(len(sizes), _FIRST_UNPRICED), 0.0
        room = self.cap.room_in_batch(likely, sum(unbilled), bool(in_flight))
        return room, sum(likely[:room])

    def _unbilled(self, batch: Batch, typical: int, payloads: Mapping[str, bytes]) -> float | None:
        """What a batch in flight will likely still cost this run: its estimate, less what was billed; for an
        earlier run's batch (this run pays it if no earlier run read it), its unanswered requests at the price
        known, each of its own size where this run asked it, else as large as the largest queued."""
        if batch.recorded_sent is None:
            return max(0.0, batch.likely - batch.counted)
        if batch.paid_before:
            return 0.0
        costs = [self.pricing.likely(len(payloads.get(c, b"")) or typical) for c in batch.unanswered()]
        return None if None in costs else sum(costs)


_FIRST_UNPRICED = 4  # requests in the first batch under --max-cost when no price is known at all


@dataclass
class _BatchTally:
    """What a run's batches came to: the progress line's and the summary's words on them."""

    submitted: int = 0  # submissions the service may have stored
    sent: int = 0  # their requests
    resent: int = 0  # of those, requests sent again
    resent_why: collections.Counter = field(default_factory=collections.Counter)  # in a word each
    billed: float = 0.0  # what this run counted as billed

    def sent_again(self, why: str) -> None:
        self.resent += 1
        self.resent_why[why] += 1

    @staticmethod
    def status(batches: Iterable[Batch], queued: int) -> str:
        going = [b for b in batches if not b.over]
        if not going and not queued:
            return ""
        counts = ", ".join(f"{b.status} "
                           f"{b.counts.get('completed', 0)}/{b.counts.get('total', len(b.custom_ids))}"
                           for b in going[:3])
        return f"batches: {len(going)} in progress{f' ({counts})' if counts else ''}, {queued} queued"

    def lines(self, batches: list[Batch], record: str) -> list[str]:
        if not batches and not self.submitted:
            return []
        why = ", ".join(f"{n} {reason}" for reason, n in self.resent_why.most_common())
        picked_up = sum(b.recorded_sent is not None for b in batches)
        earlier = sum(min(b.cost, b.paid_before) for b in batches)
        lines = [f"Batches: {self.submitted} submitted by this run ({_plural(self.sent, 'request')}"
                 + (f", {self.resent} of them sent again: {why}" if self.resent else "") + ")"
                 + (f", {picked_up} picked up from earlier runs" if picked_up else "")
                 + f". Billed ${self.billed:.4f} by this run, where the same tokens live would have cost "
                 f"about ${2 * self.billed:.4f} (batches are billed at about half the price)"
                 + (f"; answers read here that earlier runs paid for: ${earlier:.4f}" if earlier else "")
                 + "."]
        going = [b for b in batches if not b.over]
        if going:
            lines.append(f"Batches in progress: {len(going)} "
                         f"({_plural(sum(len(b.unanswered()) for b in going), 'request')}), kept in "
                         f"{record}: the next run picks them up and sends none of them again.")
        return lines


def _batch_stop(code: int, detail: str, where: str, record: str) -> RunStopped:
    """What a 401, 402 or 403 on a batch endpoint means: it holds for every batch, so the run stops, as live
    requests do, saying the batches' answers can still be read."""
    kept = (f"The batches in progress are kept in {record} and by the service: re-run the same command once "
            "that is fixed, and their answers are read, not bought again.")
    if code == 401:
        return RunStopped("key rejected", f"the API key was rejected while looking at {where} (401: "
                          f"{detail}). Check OPENROUTER_API_KEY in your environment or .env. {kept}")
    if code == 402 or re.search(r"budget|limit (exceeded|reached)|credit|spend|quota", detail, re.IGNORECASE):
        spent = "out of credits" if code == 402 else "a key or workspace budget is spent"
        return RunStopped("out of credits", f"{spent} ({code}: {detail}), found while looking at {where}. "
                          f"Add credits or raise the budget (https://openrouter.ai/settings/credits). {kept}")
    return RunStopped("access denied", f"access denied while looking at {where} (403: {detail}). Check the "
                      f"key's permissions. {kept}")


# What the queue (Batch API) holds to: the bound on submissions, and how long a service may lag or run late.
_SUBMISSIONS = 3  # batches one request goes out in, in a run, before its rollout fails with the last reason
_LAGGING_STORE = 600.0  # seconds after a submission in which a 404 is the store lagging its own 202
_OVERDUE = 3600.0  # a batch still not ended this long past its window is taken as expired
_LOOKS_BACK_OFF = 10  # after looks that told nothing, the wait grows up to this many --batch-poll
_TOO_LARGE = -1  # the status of an answer of the batch API too large to read (BatchQueue._get)


async def _read_result_pages(batch: Batch, found: dict[str, dict],
                             ask: Callable[..., Awaitable[tuple[int, Any] | None]]) -> bool:
    """An ended batch's results past its inline list, page by page (GET /batches/{id}/results, cursor after
    cursor, each asked through `ask`), into `found` by custom_id. False: some pages could not be read."""
    url, cursor, cursors = f"{batch.url}/{quote(batch.id, safe='')}/results", None, set()
    for _ in range(len(batch.custom_ids) + 3):  # a service whose pages never end is not followed for ever
        answer = await ask(batch, url, {"limit": 1000, **({"cursor": cursor} if cursor else {})})
        if answer is None:
            return False
        code, page = answer
        if code in (404, 405) and cursor is None:
            return True  # no results endpoint here, or no results for this batch: the inline list was all
        if code != 200 or not isinstance(_field_of(page, "data"), list):
            return False
        _batch_results(batch, page["data"], found)
        cursor = page.get("next_cursor")
        if page.get("has_more") is not True:
            return True
        if not isinstance(cursor, str) or not cursor or cursor in cursors:
            return False  # more, says the page, but no new way to it
        cursors.add(cursor)
    return False


# ==================================================================================================
# Batch API
# ==================================================================================================
# Requests gathered into batches, each batch watched to its end and its answers handed back one by one;
# how many may go under --max-cost; the record of batches a later run picks up (BatchQueue, --batch).


class BatchQueue:
    """In batch mode the teacher client asks this queue instead of the live API. A request waits here with
    those that come within a moment of it (the next turn of every rollout in progress) and goes out in one
    batch; its answer comes back as what the live API would have said, judged by the same code. A new batch
    goes whenever requests wait, so a slow batch holds only its own rollouts. A batch that exists is watched
    to the end of its window, its results read whole, and only what it says for good (failed, expired,
    cancelled, gone, or no result by the window's end) sends a request again: in at most _SUBMISSIONS batches
    a run. The record (BatchRecord) lets the next run pick batches up and pay nothing twice."""

    def __init__(self, settings: TeacherSettings, model: str, most_requests: int, record: BatchRecord,
                 stats: Stats,
                 stopping: asyncio.Event | None, log: Callable[[str], None] = lambda line: None,
                 cap: SpendCap | None = None, most_answer_tokens: int = 0):
        self.endpoints = _batch_endpoints(settings.base_url)
        self.url = self.endpoints[0]  # the endpoint batches go to (the beta one once the first has none)
        self.models_url = f"{settings.base_url}/models"
        self.model, self.stats, self.secret, self.record = model, stats, settings.secret, record
        self.headers = _teacher_headers(settings)
        self.poll, self.retries, self.backoff = settings.batch_poll, settings.retries, settings.backoff
        self.timeout = settings.timeout  # one submission, one look, one page: first byte to last
        # a stop waits this long for a submission in flight (--stop-timeout)
        self.stop_wait = settings.stop_timeout
        # how long a batch waits for more requests
        self.gather = min(2.0, max(0.02, settings.batch_poll / 10))
        self.body_cap = 4 * settings.max_answer_bytes  # a look or a page of results: answers of a whole batch
        self.most_requests, self.stopping, self.log, self.cap = most_requests, stopping, log, cap
        self.pricing = _BatchPricing(most_answer_tokens=most_answer_tokens)
        self.budget = _BatchBudget(cap, self.pricing, (
            f"--max-cost with --batch: no price for {model} is listed at {_display_url(self.models_url)}, so "
            f"the first batch carries at most {_FIRST_UNPRICED} requests; the next grow with the price their "
            "answers are billed at.")) if cap is not None else None
        self.waiting: dict[str, asyncio.Future] = {}  # custom_id -> the answer a rollout waits for
        self.queued: dict[str, bytes] = {}  # custom_id -> body, not yet in a batch
        self.payloads: dict[str, bytes] = {}  # custom_id -> body, of every request asked in this run
        self.keys: dict[str, RolloutKey] = {}  # custom_id -> its rollout's try
        self.in_batch: dict[str, Batch] = {}  # custom_id -> the batch in progress that carries it
        self.results: dict[str, _BatchAnswer] = {}  # answers no rollout asked for yet (earlier runs' batches)
        self.batches: dict[tuple[str, float], Batch] = {}  # every batch this run watched, by Batch.key
        # custom_id -> tries that may have stored it
        self.submissions: collections.Counter = collections.Counter()
        self.last_reason: dict[str, str] = {}  # custom_id -> why its last batch gave no usable answer
        self.last_kind: dict[str, str] = {}  # and in a word, as the summary counts it
        self.tally = _BatchTally()
        self.halted: RunStopped | None = None  # the key or the budget failed on a batch endpoint: no more
        self.posted = asyncio.Event()  # no submission in flight (a stop waits for one: it may be stored)
        self.posted.set()
        self.listed_price: asyncio.Future | None = None  # --max-cost: the models list, being read
        self.said: set[str] = set()  # what was told once
        self.wake = asyncio.Event()  # requests are queued
        self.billing = asyncio.Event()  # a batch was billed or ended: requests held for --max-cost may go
        self.tasks: set[asyncio.Task] = set()
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=15.0), trust_env=True)
        self.started = False

    # -- asked by the teacher client ---------------------------------------------------------------
    async def answer(self, key: RolloutKey, payload: bytes) -> _BatchAnswer:
        if not self.started:
            self.started = True
            self._spawn(self._send_forever())
            if self.stopping is not None:
                self._spawn(self._pause_when_stopping(self.stopping))
            try:
                for batch in self.record.batches(self.endpoints):
                    self._watch_recorded(batch)
            except Exception as e:  # a record of a shape never seen: its batches are not picked up, said once
                self.log(f"{self.record.path} could not be read ({type(e).__name__}: {e}); the batches on it "
                         "are not picked up, and their requests may be sent again.")
            if self.cap is not None:
                self.listed_price = asyncio.ensure_future(self._learn_listed_price())
        if self.halted is not None:
            raise self.halted
        custom_id = batch_custom_id(key, payload)
        if (done := self.results.pop(custom_id, None)) is not None:
            return done  # answered in a batch an earlier run sent
        future = self.waiting.get(custom_id)
        if future is None or future.done():
            if custom_id not in self.in_batch and self.submissions[custom_id] >= _SUBMISSIONS:
                raise self._sent_too_often(custom_id)  # the teacher client's own retries count too
            future = asyncio.get_running_loop().create_future()
            self.waiting[custom_id] = future
            self.payloads[custom_id], self.keys[custom_id] = payload, key
            if custom_id not in self.in_batch:
                self.queued[custom_id] = payload
                self.wake.set()
                if self.submissions[custom_id]:  # asked again: a retried answer, or an earlier run's batch
                    self.tally.sent_again(self.last_kind.get(custom_id, "asked again"))
        return await asyncio.shield(future)

    @property
    def pending_requests(self) -> int:
        return len(self.queued) + sum(len(b.unanswered()) for b in self.batches.values() if not b.over)

    def status(self) -> str:
        return self.tally.status(self.batches.values(), len(self.queued))

    def summary(self) -> list[str]:
        return self.tally.lines(list(self.batches.values()), self.record.path.name)

    async def aclose(self, still_needed: Callable[[RolloutKey], bool]) -> None:
        """Stop watching; keep in the record each batch that holds an answer a rollout of this output may
        still ask for (`still_needed`: the rollout's try is neither in the output nor failed nor rejected),
        and every batch not yet watched to its end. No such batch left: the record goes."""
        # a submission in flight may be stored: its id is worth a wait
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(self.timeout, self.stop_wait)):
                await self.posted.wait()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.aclose()
        if not self.started:
            return  # the record was not read: it stays as it is
        self.record.rewrite([b for b in self.batches.values() if self._holds_needed(b, still_needed)
                             and self._recordable(b)], self.endpoints)

    def _holds_needed(self, batch: Batch, still_needed: Callable[[RolloutKey], bool]) -> bool:
        if not batch.over:
            return True
        return any(custom_id in self.results if key is None else still_needed(key)
                   for custom_id, key in zip(batch.custom_ids, batch.keys) if custom_id in batch.answered)

    async def _pause_when_stopping(self, stopping: asyncio.Event) -> None:
        """A stopping run does not wait hours for its batches: every rollout waiting on one pauses now (its
        turns so far are saved), and the next run picks the batch up where it is, sending nothing again."""
        await stopping.wait()
        if self.listed_price is not None:
            self.listed_price.cancel()
        self._fail(list(self.waiting), _NotStarted())
        self.queued.clear()
        self.billing.set()

    # -- sending -----------------------------------------------------------------------------------
    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send_forever(self) -> None:
        while True:
            taken: dict[str, bytes] = {}
            try:
                await self._send_next(taken)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug of ours: its requests fail (retried), the queue goes on
                self._fail(taken, RetryableError("batch", f"internal error: {type(e).__name__}: {e}"))

    async def _send_next(self, taken: dict[str, bytes]) -> None:
        await self.wake.wait()
        size = -1
        while size != len(self.queued) and len(self.queued) < self.most_requests:
            size = len(self.queued)
            await asyncio.sleep(self.gather)  # the rest of this wave: requests that come within a moment
        self.wake.clear()
        if not self.queued:
            return
        if self.stopping is not None and self.stopping.is_set():
            self._fail(list(self.queued), _NotStarted())  # nothing was sent: they pause, to go on next run
            self.queued.clear()
            return
        if self.record.broken is not None:  # no new batch while one could be lost: those in flight end first
            if not any(not b.over for b in self.batches.values()):
                self._halt(RunStopped("disk", f"{self.record.broken}. No new batch was sent, since a batch "
                                      "not on record would be bought again after a crash; "
                                      f"{OutputError.WHAT_TO_DO}."))
                return
            return await self._wait_for_billing()
        count = batch_cut((len(body) for body in self.queued.values()), self.most_requests)
        likely = 0.0
        if self.listed_price is not None and not self.listed_price.done():
            await asyncio.wait([self.listed_price])  # a stop cancels it
            self.wake.set()
            return
        if self.budget is not None:
            sizes = [len(body) for body in itertools.islice(self.queued.values(), count)]
            count, likely = self.budget.room(sizes, [b for b in self.batches.values() if not b.over],
                                             self.tally.billed,
                                             self.payloads)
            if not count:
                await self._wait_for_billing()
                return
        taken.update(itertools.islice(self.queued.items(), count))
        for custom_id in taken:
            del self.queued[custom_id]
        if self.queued:
            self.wake.set()
        too_large = [c for c, body in taken.items() if not _fits_a_batch(len(body))]
        for custom_id in too_large:
            del taken[custom_id]
            self._fail([custom_id], PromptFailed("too large for a batch", (
                f"its request is {len(self.payloads[custom_id]) / 1e6:.0f} MB, over what a batch may carry "
                f"({_BATCH_MOST_BYTES / 1e6:.0f} MB; OpenRouter takes 200 MB a batch). Run it without "
                "--batch.")))
        if taken and not self.record.append({"submitting": len(taken), "at": time.time()}):
            # the disk is full: nothing is bought that could not be recorded
            self.queued = {**taken, **self.queued}
            self.wake.set()
            return
        if taken:
            await self._submit(taken, likely)

    async def _wait_for_billing(self) -> None:
        """Nothing may go now for --max-cost: wait until a batch in flight is billed or ends (the cap, once
        reached, stops the run, and the stop wakes this too), then look at the queue again."""
        if not any(not b.over for b in self.batches.values()):
            self._fail(list(self.queued), _NotStarted())  # the cap is reached: they pause, to go on next run
            self.queued.clear()
            return
        self.billing.clear()
        await self.billing.wait()
        self.wake.set()

    async def _submit(self, taken: dict[str, bytes], likely: float) -> None:
        """One batch out (`endpoint` and `model` before `requests`: OpenRouter reads the JSON as a stream),
        recorded before the run waits on it."""
        response = await self._post(taken)
        if response is None:
            return
        code = response.status_code
        if code in (404, 405):
            if self.url != self.endpoints[-1]:
                self.url = self.endpoints[self.endpoints.index(self.url) + 1]
                return await self._submit(taken, likely)
            return self._halt(RunStopped("no batch API", (
                f"the teacher has no Batch API ({code} at "
                f"{' and at '.join(_display_url(u) for u in self.endpoints)}). Run without --batch, or point "
                "--base-url at a server that has one.")))
        if code == 413:
            if len(taken) > 1:  # too large after all: each half on its own (nothing was stored)
                half = list(taken.items())
                await self._submit(dict(half[:len(half) // 2]), likely / 2)
                return await self._submit(dict(half[len(half) // 2:]), likely / 2)
            return self._fail(taken, PromptFailed("HTTP 413", (
                f"the batch service refused this request as too large even alone (413: "
                f"{self._said(_error_text(_answer_error(decode_answer(response.content))) or 'too large')}). "
                "Run it without --batch.")))
        if code not in (200, 201, 202):
            named = _named_requests(_error_text(_answer_error(decode_answer(response.content))), list(taken),
                                    list(taken))
            if code == 400 and 0 < len(named) < len(taken):  # a refusal that names its requests: only those
                self.queued = {**{c: b for c, b in taken.items() if c not in named}, **self.queued}
                self.wake.set()
            for custom_id in named if code == 400 and 0 < len(named) < len(taken) else taken:
                # refused whole: each request gets the refusal, judged as a live one would be
                self._deliver(custom_id, _BatchAnswer(code, response.content, headers=dict(response.headers)))
            return
        batch_id = _field_of(decode_answer(response.content), "id")
        if not isinstance(batch_id, str) or not batch_id.strip() or len(batch_id) > 200:
            for custom_id in taken:
                self.last_reason[custom_id] = "the batch service accepted the batch without an id"
            return self._fail(taken, RetryableError("malformed answer",
                                                    "the batch was accepted without an id"))
        batch = Batch(batch_id, self.url, list(taken), [self.keys.get(c) for c in taken], sent=time.time(),
                      likely=likely)
        self.batches[batch.key] = batch
        for custom_id in taken:
            self.in_batch[custom_id] = batch
            self.last_reason.pop(custom_id, None)  # in a batch that exists: what it says is the reason now
        # Written before the run waits on it: a run that dies now finds this batch again, and pays nothing
        # twice.
        if self._recordable(batch):
            self.record.append(batch.record(self.endpoints))
        self._spawn(self._watch(batch, first_look=self.poll))

    def _recordable(self, batch: Batch) -> bool:
        """A batch whose id holds a secret the program was handed is watched, but not written down."""
        if self.secret.redact(batch.id) == batch.id:
            return True
        self._say_once("secret id", "The batch service named a batch with text that holds a secret you gave "
                       f"the program: the batch is watched, but not written to {self.record.path.name} (if "
                       "this run stops before it ends, its requests are sent again).")
        return False

    async def _post(self, taken: dict[str, bytes]) -> httpx.Response | None:
        """The batch sent, retried on what is transient. A try the service may have stored (a 2xx, a 5xx, an
        answer cut after the request went) counts against each request's bound; a refusal (4xx) and a
        connection never made do not. None: the requests were failed here."""
        payload = (b'{"endpoint":"/v1/chat/completions","model":' + orjson.dumps(self.model)
                   + b',"requests":['
                   + b",".join(b'{"custom_id":"' + custom_id.encode() + b'","body":' + body + b"}"
                               for custom_id, body in taken.items()) + b"]}")
        retries = Retries(self.backoff, self.retries)
        while True:
            response, why = None, ""
            self.posted.clear()
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self.http.post(self.url, content=payload, headers=self.headers)
                stored_maybe = response.status_code < 400 or response.status_code >= 500
                why = f"the batch service answered {response.status_code} to the batch"
            except (httpx.HTTPError, TimeoutError) as e:
                # refused before a byte went: nothing stored
                stored_maybe = not isinstance(e, httpx.ConnectError)
                why = f"the batch could not be sent: {type(e).__name__}"
            finally:
                self.posted.set()
            if stored_maybe:  # counted as submitted (the summary's, and the bound's), whatever came back
                self.tally.submitted += 1
                self.tally.sent += len(taken)
                self.stats.sent(len(taken))
            for custom_id in taken if stored_maybe else ():
                self.submissions[custom_id] += 1
                self.last_reason[custom_id] = why
            if response is not None and (response.status_code not in _RETRYABLE_STATUS or not retries.left
                                         or (retry_after_seconds(response.headers) or 0) > _LONG_WAIT):
                return response  # judged as the live API's answer would be (a wait of hours stops the run)
            if any(self.submissions[c] >= _SUBMISSIONS for c in taken):
                self._fail(taken, self._sent_too_often(next(iter(taken))))
                return None
            if (wait := retries.next_wait(response and retry_after_seconds(response.headers))) is None:
                self._fail(taken, RetryableError("connection", why))
                return None
            await asyncio.sleep(wait)

    def _watch_recorded(self, batch: Batch) -> None:
        """A batch an earlier run sent: looked at again, its answers kept for the rollouts that ask."""
        if batch.key in self.batches:
            return
        self.batches[batch.key] = batch
        for custom_id in batch.custom_ids:
            self.in_batch[custom_id] = batch
            self.submissions[custom_id] += 1
        self._spawn(self._watch(batch, first_look=0.0))

    async def _learn_listed_price(self) -> None:
        """--max-cost: the model's listed price (GET /models), before any answer is billed; at most 30 s, and
        not past a stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(30.0, self.timeout)):
                answer = await self._get(self.models_url)
                if answer is not None and answer[0] == 200:
                    self.pricing.learn_listed(_field_of(answer[1], "data"), self.model)

    # -- watching ----------------------------------------------------------------------------------
    async def _watch(self, batch: Batch, first_look: float) -> None:
        try:
            await self._watch_to_end(batch, first_look)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # a bug of ours, or an answer of a shape never seen: sent again, within the bound
            self._send_again(batch, batch.unanswered(), "internal error",
                             f"internal error while reading batch {self._said(batch.id, 80)}: "
                             f"{type(e).__name__}")

    async def _watch_to_end(self, batch: Batch, first_look: float) -> None:
        """Look at the batch until it is over. Looks that tell nothing (an error, a 404 the store may still
        lag, results not attached yet) wait longer each time, up to _LOOKS_BACK_OFF polls: looking is free."""
        await asyncio.sleep(first_look)
        quiet = 0
        while True:
            told_nothing = await self._look(batch)
            if batch.over or self.halted is not None:
                return
            quiet = quiet + 1 if told_nothing else 0
            await asyncio.sleep(min(self.poll * 2 ** quiet,
                                    self.poll * _LOOKS_BACK_OFF) if quiet else self.poll)

    async def _look(self, batch: Batch) -> bool:
        """One look at the batch; True when it told nothing new."""
        answer = await self._ask(batch, f"{batch.url}/{quote(batch.id, safe='')}")
        if self.halted is not None:
            return False
        if answer is None:
            return self._no_news(batch, "the service did not answer in time")
        code, data = answer
        if code == _TOO_LARGE:  # its results inline make it too large to read: its pages may not be
            return await self._ended(batch, {}) if await self._read_results(batch, {}) else \
                self._no_news(batch, "its answer was too large to read")
        if code in (404, 410):
            if code == 404 and time.time() - batch.sent < _LAGGING_STORE:
                return True  # a store that lags its own 202: the batch is there, look again
            self._send_again(batch, batch.unanswered(), "gone",
                             f"the service no longer knows the batch ({code})")
            return False
        status = _field_of(data, "status")
        if code != 200 or not isinstance(status, str):
            if 400 <= code < 500:
                self._say_once(f"look {batch.key}", f"Batch {self._said(batch.id, 80)}: the service answers "
                               f"{code} ({self._said(_error_text(_answer_error(data)) or 'no reason')}) when "
                               "asked about it; the run asks again until an hour past its completion "
                               "window, then sends its requests again.")
            return self._no_news(batch, f"HTTP {code}")
        batch.status = self._said(status, 40)
        if isinstance(data.get("request_counts"), dict):
            batch.counts = {k: v for k, v in data["request_counts"].items() if type(v) is int}
        batch.window_end = _batch_window_end(data, batch)
        if batch.status not in _BATCH_ENDED:
            if time.time() > batch.window_end + _OVERDUE:
                self._send_again(batch, batch.unanswered(), "overdue", f"the batch was still {batch.status} "
                                 "an hour past its completion window")
            return False
        if not await self._read_results(batch, data):
            return self.halted is None and self._no_news(batch, "its results could not be read whole")
        return await self._ended(batch, data)

    async def _ended(self, batch: Batch, data: dict) -> bool:
        """An ended batch whose results were read whole: over, or its unanswered requests go again."""
        missing = batch.unanswered()
        if not missing:
            batch.over = True
            self.billing.set()
            return False
        if batch.status == "completed" or not data:
            if time.time() < batch.window_end:
                return True  # its results come a moment late: look again, until its window ends
            self._send_again(batch, missing, "completed without their results", "the batch completed without "
                             "a result for this request, and its completion window has ended")
            return False
        reason = self._said(_error_text(_answer_error(data)))
        if batch.status == "failed":
            self._failed_validation(batch, missing, reason)
        else:
            self._send_again(batch, missing, batch.status,
                             f"the batch {batch.status}" + (f": {reason}" if reason else ""))
        return False

    def _no_news(self, batch: Batch, why: str) -> bool:
        """A look that told nothing; an hour past the window, its unanswered requests go again."""
        if time.time() <= batch.window_end:
            return True
        if time.time() <= batch.window_end + _OVERDUE:
            self._say_once(f"no news {batch.key}", f"Batch {self._said(batch.id, 80)}: its window has ended "
                           f"and {why}; the run looks again for an hour, then sends its unanswered requests "
                           "again.")
            return True
        self._send_again(batch, batch.unanswered(), "unreadable", "the batch could still not be read an "
                         f"hour past its completion window ({why})")
        return False

    def _failed_validation(self, batch: Batch, missing: list[str], reason: str) -> None:
        """A `failed` batch: its requests failed validation (a 202 meant stored, not valid). The requests its
        reason names fail as a live 400 would; the rest go again, and fail with the reason once the bound
        is reached."""
        self.log(f"Batch {self._said(batch.id, 80)} failed: {reason or 'the service gave no reason'}.")
        named = _named_requests(reason, batch.custom_ids, missing)
        refusal = orjson.dumps({"error": {"code": 400, "message": reason}})
        for custom_id in named:
            batch.answered.add(custom_id)
            self.in_batch.pop(custom_id, None)
            self._deliver(custom_id, _BatchAnswer(400, refusal, False))
        self._send_again(batch, [c for c in missing if c not in named], "failed",
                         "the batch failed" + (f": {reason}" if reason else ""))

    async def _read_results(self, batch: Batch, data: dict) -> bool:
        """The results of an ended batch, inline and then page by page (GET /batches/{id}/results, cursor
        after cursor), matched by custom_id; what was found is handed out even when a page failed. False:
        some pages could not be read, look again."""
        found: dict[str, dict] = {}
        _batch_results(batch, data.get("results"), found)
        whole = True
        if len(batch.answered) + len(found) < len(batch.custom_ids):
            whole = await _read_result_pages(batch, found, self._ask)
        self._hand_out(batch, found, data)
        return whole

    def _hand_out(self, batch: Batch, found: dict[str, dict], data: dict) -> None:
        """Each result found to the rollout that waits for it, or kept for one that will ask (an answer, not
        an error: a 402 or a 503 an earlier run met is no answer to hand a later one); the batch billed."""
        reading = _batch_answers(batch, found, data)
        added, batch.cost = reading.cost - batch.cost, reading.cost
        self.pricing.learn(reading.billed)
        if self.budget is not None:
            answered = sum(status == 200 for status, _ in reading.answers.values())
            self.budget.costless_answers += answered - len(reading.billed)
        self._bill(batch, added)
        for custom_id, (status, body) in reading.answers.items():
            batch.answered.add(custom_id)
            self.in_batch.pop(custom_id, None)
            if status != 200:
                self.last_kind[custom_id] = f"HTTP {status}"
                said = self._said(_error_text(_answer_error(decode_answer(body))))
                self.last_reason[custom_id] = f"HTTP {status}: {said}"
                # an earlier run's error (a 402 since paid, a 503): ask again
                if batch.recorded_sent is not None:
                    self._ask_again(custom_id)
                    continue
            self._deliver(custom_id, _BatchAnswer(status, body, custom_id, batch.paid_before > 0))

    def _bill(self, batch: Batch, added: float) -> None:
        """Count what the batch's results cost, once: in the run that first read them (its record says what
        earlier runs counted). --max-cost hears of it."""
        this_run = max(0.0, batch.cost - batch.paid_before) - batch.counted
        if this_run <= 0 or not added:
            return
        batch.counted += this_run
        self.tally.billed += this_run
        self.stats.charged(this_run)
        if self._recordable(batch):
            self.record.append({"batch": batch.id, "sent": batch.key[1], "billed": batch.cost})
        self.billing.set()
        if self.cap is not None:
            self.cap.check()

    async def _ask(self, batch: Batch, url: str, params: dict | None = None) -> tuple[int, Any] | None:
        """A GET about this batch; None when it did not come, or said the key or budget failed (the run
        then halts)."""
        answer = await self._get(url, params)
        if answer is not None and answer[0] in (401, 402, 403):
            detail = self._said(_error_text(_answer_error(answer[1]))
                                or httpx.codes.get_reason_phrase(answer[0]))
            self._halt(_batch_stop(answer[0], detail, f"batch {self._said(batch.id, 80)}",
                                   self.record.path.name))
            return None
        return answer

    async def _get(self, url: str, params: dict | None = None) -> tuple[int, Any] | None:
        """A GET of the batch API: its status and JSON (None for a body that is not JSON); None for an
        answer that never came whole, or one larger than a whole batch's answers could be."""
        try:
            async with asyncio.timeout(self.timeout), \
                    self.http.stream("GET", url, params=params, headers=self.headers) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.body_cap:
                        self._say_once("too large", f"An answer of the batch API at {_display_url(url)} "
                                       f"passed {self.body_cap / MB:.0f} MB, more than a whole batch's "
                                       "answers; its results are read page by page instead (--max-answer-mb "
                                       "raises the limit).")
                        return _TOO_LARGE, None
                return response.status_code, decode_answer(bytes(body))
        except (httpx.HTTPError, TimeoutError):
            return None

    # -- ends ----------------------------------------------------------------------------------------
    def _send_again(self, batch: Batch, custom_ids: list[str], why: str, reason: str) -> None:
        """The batch is over and these requests got no answer from it: each goes out in a new batch, unless
        it went out in _SUBMISSIONS already (its rollout fails with the reason). A request no rollout asks
        for (an earlier run's) goes when one asks."""
        batch.over = True
        for custom_id in custom_ids:
            if self.in_batch.get(custom_id, batch) is not batch:
                continue  # another batch in flight carries it too (an earlier run sent it twice): it answers
            self.in_batch.pop(custom_id, None)
            self.last_reason[custom_id], self.last_kind[custom_id] = reason, why
            self._ask_again(custom_id, f"batch {why}")
        self.billing.set()

    def judged(self, custom_id: str, kind: str, reason: str) -> None:
        """The teacher client found a batch's answer unusable (a malformed answer): its reason is the last."""
        self.last_kind[custom_id], self.last_reason[custom_id] = kind, reason

    def _ask_again(self, custom_id: str, kind: str = "batch: no usable answer") -> None:
        """A request its batch gave no usable answer: into the next batch if a rollout waits for it, unless it
        went out in _SUBMISSIONS already (the rollout fails with its last reason); else when one asks."""
        if custom_id not in self.waiting:
            return
        if self.submissions[custom_id] >= _SUBMISSIONS:
            self._fail([custom_id], self._sent_too_often(custom_id, kind))
            return
        self.queued[custom_id] = self.payloads[custom_id]
        self.tally.sent_again(self.last_kind.get(custom_id, "asked again"))
        self.wake.set()

    def _sent_too_often(self, custom_id: str, kind: str = "batch: no usable answer") -> PromptFailed:
        sent, last = self.submissions[custom_id], self.last_reason.get(custom_id, "no answer")
        return PromptFailed(kind, f"sent in {sent} batch{'es' * (sent != 1)} without an answer (at most "
                            f"{_SUBMISSIONS} a run); last: {last}")

    def _halt(self, stop: RunStopped) -> None:
        if self.halted is None:
            self.halted = stop
        self._fail(list(self.waiting), self.halted)
        self._fail(list(self.queued), self.halted)
        self.queued.clear()
        self.billing.set()

    def _deliver(self, custom_id: str, answer: _BatchAnswer) -> None:
        future = self.waiting.pop(custom_id, None)
        if future is not None and not future.done():
            future.set_result(answer)
        elif answer.status == 200:  # kept for the rollout that asks (resumed)
            self.results[custom_id] = answer

    def _fail(self, taken: Iterable[str], error: Exception) -> None:
        for custom_id in list(taken):
            future = self.waiting.pop(custom_id, None)
            if future is not None and not future.done():
                future.set_exception(error)

    def _said(self, text: str, limit: int = 300) -> str:
        """The service's text fit to print or store: printable, the key out, then cut."""
        text = self.secret.redact(_printable(text))
        return text if len(text) <= limit else text[:limit] + "..."

    def _say_once(self, what: str, line: str) -> None:
        if what not in self.said:
            self.said.add(what)
            self.log(line)


# ==================================================================================================
# Teacher client
# ==================================================================================================
# One chat completion: the request, its retries and backoff, what stops the run (TeacherClient).


# Until the teacher has answered once, a wall of identical failures means a wrong URL, model, key or
# network, not bad luck: the run stops instead of sending every prompt into it. Two signs, two limits:
_FAILED_BEFORE_ANY_ANSWER = 20  # rollouts failed for good (the Run counts them)


def _unreachable_limit(concurrency: int) -> int:
    """Requests in a row that could not reach the teacher at all (the client counts them): at least
    one full wave of -c requests, three times over, as a wave may all fail from one network blip."""
    return max(20, 3 * concurrency)


@dataclass
class _Answer:
    """An HTTP answer, read whole: what _read judges."""

    status: int
    headers: httpx.Headers
    body: bytes
    usage_lost: bool = False  # streamed, and its usage event never came: its cost is unknown, not missing
    billed_by_batch: bool = False  # a batch's answer: the batch queue counts what it billed, when it reads it
    stop_now: bool = False  # read whole as the run stopped at once (_RequestState.stop_now)


class TeacherClient:
    def __init__(self, settings: TeacherSettings, limiter: AdaptiveLimiter, stats: Stats,
                 batches: BatchQueue | None = None):
        self.settings, self.limiter, self.stats = settings, limiter, stats
        self.batches = batches  # --batch: every request goes through it instead of the live API
        self.url = f"{settings.base_url}/chat/completions"
        self.display_url = _display_url(self.url)  # what messages show: no password from the URL
        self.answered_once = False  # until then, _unreachable_limit() failures in a row stop the run
        self.unreachable_in_a_row = 0
        self.on_answer: Callable[[], None] | None = None  # called after each billed answer (the spend cap)
        self.drop_reasoning_content = False  # the server refused it in requests: send messages without it
        self.stream = True  # False once the server refused streamed answers
        # seconds unrefused after which a request counts as taken (grows on 429s)
        self.admission_window = 0.25
        self.notes: list[str] = []  # things the summary tells once (what was adapted to this server)
        # Accept-Encoding is ours to say: aiohttp's default names whatever decoders happen to be installed,
        # and the transport hands us the body undecoded. We name what zlib decodes, and decode it ourselves.
        headers = {**_teacher_headers(settings), "Accept-Encoding": _ACCEPTED_ENCODINGS}
        self.transport = _teacher_transport(settings, self.url)
        self.target = httpx.URL(self.url)
        self.headers = httpx.Headers({**headers, "Host": self.target.netloc.decode("ascii")})
        # No read timeout of aiohttp's own: a process suspended past it woke to that timer before the data
        # that came meanwhile, and it failed the read with the answer whole in the buffer. The request's
        # Deadlines (--timeout, --stall-timeout) bound every read, and read what already came first.
        self.timeouts = {"connect": min(settings.timeout, 15.0), "read": None, "pool": None}

    async def complete(self, body: dict, priority: int, spend: Usage, stopping: asyncio.Event | None = None,
                       rollout: RolloutKey | None = None, paid_before: Usage | None = None) -> Completion:
        """One chat completion, retried with backoff on anything transient.

        Every answered request's usage is added to `spend` as it arrives, so a rollout that fails later
        still reports what it cost. `stopping`: if the run is stopping by the time a request slot frees up,
        send nothing (_NotStarted). `rollout` and `paid_before`, in batch mode: the request's rollout try, and
        where the usage of an answer an earlier run was billed for goes (not this run's spend).
        """
        paid_before = paid_before if paid_before is not None else Usage()
        try:
            return await self._complete(body, priority, spend, stopping, rollout, paid_before)
        except PromptFailed as e:
            if e.status in (400, 422) and body.get("stream") and "stream" in e.detail.lower():
                # A server that cannot stream: ask for whole answers from now on, said once.
                if self.stream:
                    self.stream = False
                    self.notes.append("The teacher refused streamed answers, so whole answers were asked for "
                                      "(a proxy in front of a slow teacher may close those; see "
                                      "--stall-timeout).")
                return await self._complete(body, priority, spend, None, rollout, paid_before)
            # Assistant messages go back as the API gave them, `reasoning_content` included; a server that
            # refuses that field in requests (400 naming it) gets messages without it from now on.
            if not (e.status in (400, 422) and "reasoning_content" in e.detail
                    and _carries_reasoning_content(body)):
                raise
            if not self.drop_reasoning_content:
                self.drop_reasoning_content = True
                self.notes.append("The teacher refused `reasoning_content` in the messages sent back to it, "
                                  "so it was left out of them (the dataset keeps it).")
            return await self._complete(body, priority, spend, None, rollout, paid_before)

    async def _complete(self, body: dict, priority: int, spend: Usage, stopping: asyncio.Event | None,
                        rollout: RolloutKey | None, paid_before: Usage) -> Completion:
        if self.drop_reasoning_content:
            body = {**body, "messages": [_without_reasoning_content(m) for m in body["messages"]]}
        if not self.stream and "stream" in body:
            body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        payload = orjson.dumps(body)  # ~10x json.dumps; refuses what is not strict JSON, like allow_nan=False
        streamed = bool(body.get("stream"))
        retries = Retries(self.settings.backoff, self.settings.retries)
        for attempt in itertools.count(1):
            try:
                # no request slot: the batch is the unit, and the limit is its size
                if self.batches is not None:
                    return await self._attempt_in_batch(payload, spend, stopping, rollout, paid_before)
                return await self._attempt(payload, priority, spend, stopping, streamed)
            except RetryableError as e:
                # Refused while the teacher has taken nothing of ours lately: others hold it (the other
                # shards). The limiter then sends one request a second until the teacher takes one, and grows
                # from there (AdaptiveLimiter._hold_blind); a backoff of the request's own on top (1, 2, 4 ...
                # 60 s) left the teacher idle for tens of seconds after the others finished. So the request
                # goes back to the limiter at once, for as long as its backoff would have waited in all; then
                # it fails.
                busy = e.rate_limited and self.limiter.holding_blind and self.batches is None
                wait = (retries.wait_within_patience(e.retry_after) if busy
                        else retries.next_wait(e.retry_after))
                if wait is None:
                    raise PromptFailed(f"retries used up ({e.kind})",
                                       f"gave up after {attempt} attempts; last error: {e.detail}",
                                       attempt) from None
                self.stats.retried()
                await _wait_unless_stopping(wait, stopping)
        raise AssertionError("unreachable")

    async def _attempt(self, payload: bytes, priority: int, spend: Usage, stopping: asyncio.Event | None,
                       streamed: bool = False) -> Completion:
        try:
            slot = await self.limiter.acquire(priority)
        except LimiterClosed:  # the run is stopping: this request never starts
            raise _NotStarted() from None
        answered, sent = Answered.FAILED, time.monotonic()
        # Admitted once it goes unrefused for the window (or at its first streamed data, _read_events)
        admission = asyncio.get_running_loop().call_later(self.admission_window, self.limiter.admit, slot)
        try:
            if stopping is not None and stopping.is_set():
                answered = Answered.CANCELLED
                raise _NotStarted()
            self.stats.sent()
            answer = await self._post(payload, slot, streamed)
            self.unreachable_in_a_row = 0
            completion = self._read(answer, spend)
            completion.stop_now = answer.stop_now
            self.answered_once = True
            answered = Answered.OK
            return completion
        except RetryableError as e:
            if e.rate_limited:
                answered = Answered.RATE_LIMITED
                self.stats.rate_limited_once()
                self._learn_refusal_time(time.monotonic() - sent)
            if e.retry_after and e.holds_everyone:
                self.limiter.pause_until(time.monotonic() + e.retry_after)
            raise
        finally:
            admission.cancel()
            self.limiter.release(slot, answered)

    async def _attempt_in_batch(self, payload: bytes, spend: Usage, stopping: asyncio.Event | None,
                                rollout: RolloutKey | None, paid_before: Usage) -> Completion:
        if stopping is not None and stopping.is_set():
            raise _NotStarted()
        got = await self.batches.answer(rollout or RolloutKey("", 0), payload)  # counts the requests it sends
        if len(got.body) > self.settings.max_answer_bytes:  # as a live answer would be: its prompt fails
            raise PromptFailed("answer too large",
                               str(AnswerTooLarge(len(got.body), self.settings.max_answer_bytes)))
        try:
            completion = self._read(_Answer(got.status, httpx.Headers(got.headers), got.body,
                                            billed_by_batch=True),
                                    paid_before if got.paid_before else spend)  # judged as a live answer
        except RetryableError as e:
            self.batches.judged(got.custom_id, e.kind, e.detail)  # the reason, should the bound be reached
            raise
        self.answered_once = True
        return completion

    def _learn_refusal_time(self, seconds: float) -> None:
        """The admission window: three times the slowest 429 seen so far, at least 0.25 s (OpenRouter's 429s
        come back in tens of milliseconds; a proxy in front may add some), at most 30 s. A 429 later than the
        window still counts as one: it only came after the limit had grown."""
        self.admission_window = min(30.0, max(self.admission_window, 3 * seconds))

    async def _post(self, payload: bytes, slot: Slot, streamed: bool = False) -> _Answer:
        """Send once, except that a request lost on a kept-alive connection the server had already closed
        (a race every keep-alive timeout allows: nginx's is 75 s, some proxies' 1 s) is sent again at
        once, without spending a retry: the server never saw it. However many kept-alive connections
        turn out dead in a row (each is closed as it fails, so the pool runs out of them), the last try
        goes on a new connection."""
        for _ in range(self.settings.concurrency + 1):  # the pool holds at most -c connections
            try:
                return await self._post_once(payload, slot, streamed)
            except _StaleConnection:
                continue
        raise RetryableError("connection",
                             "connection problem: every kept-alive connection had been closed by the server")

    async def _post_once(self, payload: bytes, slot: Slot, streamed: bool) -> _Answer:
        # httpx's read timeout restarts with every chunk, so a teacher dripping a few bytes a second
        # would hold a request for ever; this deadline covers the whole request, first byte to last. Each
        # wait is a _Deadline: one that comes due reads what already arrived first.
        state = _RequestState()
        token = _REQUEST_STATE.set(state)
        ends_at = asyncio.get_running_loop().time() + self.settings.timeout
        try:
            request = httpx.Request("POST", self.target, headers=self.headers, content=payload,
                                    extensions={"timeout": self.timeouts})
            response = await _answer_head(self.transport, request, streamed, self.settings.stall_timeout,
                                          ends_at)
            state.answered = True
            if (budget := _request_budget(response.headers)) is not None:  # before the body: slow start
                self.limiter.tell_budget(slot, *budget)                    # grows as it comes
            body = None
            try:
                content_type, encoding, declared = _body_headers(response)
                cap = self.settings.max_answer_bytes
                if response.status_code == 200 and content_type.startswith(b"text/event-stream"):
                    body = await _read_events(response, encoding, self.settings.stall_timeout, cap, ends_at,
                                             functools.partial(self.limiter.admit, slot))
                else:
                    body = await _read_body(response, encoding, declared, cap, ends_at)
            finally:
                if state.usage_lost:
                    self.stats.usage_never_came()
                await _close_answer(response, state, whole=body is not None)
            return _Answer(response.status_code, response.headers, body, state.usage_lost,
                           stop_now=state.stop_now)
        except _READ_FAILURES as e:
            raise read_failure(e, self.settings.stall_timeout, self.settings.timeout) from None
        except (httpx.TransportError, aiohttp.ClientError, OSError) as e:
            # Judge by aiohttp's own error: httpx-aiohttp maps a refused connection to ConnectTimeout.
            original = e.__cause__ if isinstance(e, httpx.TransportError) and e.__cause__ else e
            if state.reused and not state.answered and isinstance(original, _STALE_CONNECTION_ERRORS):
                raise _StaleConnection() from None
            if isinstance(original, (TimeoutError, httpx.TimeoutException)):
                raise RetryableError("timeout", f"no answer in time ({type(original).__name__})") from None
            stop = tls_failure(original, self.target.host, self.target.port, self.settings.secret.redact)
            if stop is not None:
                raise stop from None
            self._check_reachable(original)
            raise RetryableError("connection", self._detail(
                f"connection problem: {type(original).__name__}: {original}")) from None
        finally:
            _REQUEST_STATE.reset(token)

    def _read(self, answer: _Answer, spend: Usage) -> Completion:
        """Turn an answer into a Completion, or raise (judge_answer). Every field of it is checked."""
        data = decode_answer(answer.body)
        if answer.status == 200 and isinstance(data, dict):
            usage = data.get("usage")
            if isinstance(usage, dict) and "cache_discount" in data and "cache_discount" not in usage:
                usage = {**usage, "cache_discount": data["cache_discount"]}  # OpenRouter puts it in the body
            billed_before = spend.cost
            spend.add(usage)  # billed even when the rest of the answer turns out unusable
            self.stats.answered(usage, answer.usage_lost)
            if not answer.billed_by_batch:
                self.stats.charged(spend.cost - billed_before)
                if self.on_answer is not None:
                    self.on_answer()
        failure = judge_answer(answer.status, data, answer.headers, answer.body, self.settings.secret.redact,
                               self.display_url)
        if failure is not None:
            raise failure
        return _checked_completion(data, answer.body, self.settings.secret.redact)

    def _check_reachable(self, error: Exception) -> None:
        self.unreachable_in_a_row += 1
        limit = _unreachable_limit(self.settings.concurrency)
        if not self.answered_once and self.unreachable_in_a_row >= limit:
            raise RunStopped("unreachable", self._detail(
                f"cannot reach {self.display_url} ({type(error).__name__}: {error}). Check the network and "
                "--base-url, then re-run the same command.", limit=None))

    def _detail(self, text: str, limit: int | None = 300) -> str:
        return _fit_to_show(text, self.settings.secret.redact, limit)

    async def aclose(self) -> None:
        await self.transport.aclose()


async def _wait_unless_stopping(seconds: float, stopping: asyncio.Event | None) -> None:
    """A retry's backoff (up to a minute, or a Retry-After): cut short by a stop, which this request then
    does not outlive (_NotStarted: the rollout pauses, or stays pending)."""
    if stopping is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()
    if stopping.is_set():
        raise _NotStarted()


def _carries_reasoning_content(body: dict) -> bool:
    return any(isinstance(m, dict) and "reasoning_content" in m for m in body.get("messages", ()))


def _without_reasoning_content(message: dict) -> dict:
    return {k: v for k, v in message.items()
            if k != "reasoning_content"} if "reasoning_content" in message else message


# ==================================================================================================
# The models list
# ==================================================================================================
# OpenRouter's models list, read whole: whether the teacher's author allows training on its outputs.


def _teacher_licence(settings: TeacherSettings, model: str) -> bool | None:
    """Whether the model's author allows training on its outputs, as OpenRouter's models list says (GET
    /models?distillable=true lists those models, each marked is_trainable_text): only what the list showed.
    True: the model's entry says is_trainable_text true; False: it says false, or the list, read whole, holds
    only entries marked true (it was filtered as asked) and not the model. None, the list cannot tell: another
    server's (no marks: the filter was ignored), one not read whole, a mark that is not a JSON boolean."""
    entries = _models_list(settings)
    if not entries:
        return None
    wanted = {model, model.split(":")[0]}  # a variant (":free", ":online") is its model's
    filtered = True
    for entry in entries:
        mark = entry.get("is_trainable_text") if isinstance(entry, dict) else None
        if isinstance(entry, dict) and {entry.get("id"), entry.get("canonical_slug")} & wanted:
            return mark if isinstance(mark, bool) else None
        filtered = filtered and mark is True
    return False if filtered else None


_MODELS_PAGES = 100  # a models list longer than this many pages is not read whole: it cannot tell
# seconds the whole lookup may take, every page: a best-effort check never holds the start
_MODELS_DEADLINE = 30.0


def _models_list(settings: TeacherSettings) -> list | None:
    """Every entry of the models list, its pages followed (OpenAI's `has_more` with `after` the last id, or a
    `next` link on the same origin: the key goes nowhere else); None when it cannot be read whole (no answer
    within the deadline, another shape, a page that does not follow, one larger than --max-answer-mb)."""
    url, params, entries = f"{settings.base_url}/models", {"distillable": "true"}, []
    origin = _origin(httpx.URL(url))
    deadline = time.monotonic() + min(settings.timeout, _MODELS_DEADLINE)
    try:
        with httpx.Client(trust_env=True) as client:  # SSL_CERT_FILE and proxies, as for requests
            for _ in range(_MODELS_PAGES):
                answer = _whole_get(client, url, params, _teacher_headers(settings), deadline,
                                    settings.max_answer_bytes)
                if answer is None:
                    return None
                page_url, status, page = answer
                listed = page.get("data") if status == 200 and isinstance(page, dict) else None
                if not isinstance(listed, list):
                    return None
                entries += listed
                following = page.get("next")
                if isinstance(following, str) and following:
                    next_url = page_url.join(following)
                    if _origin(next_url) != origin:
                        return None  # a page elsewhere is not asked with the key, nor without it: cannot tell
                    url, params = str(next_url), {}
                elif page.get("has_more") is True:
                    last = listed[-1] if listed else None
                    after = page.get("last_id") or (last.get("id") if isinstance(last, dict) else None)
                    if not isinstance(after, str) or params.get("after") == after:
                        return None
                    params = {"distillable": "true", "after": after}
                elif page.get("has_more") not in (None, False) or following not in (None, ""):
                    return None  # says there is more, in a way not known here
                else:
                    return entries
    except (httpx.HTTPError, httpx.InvalidURL, ValueError):
        return None
    return None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or {"http": 80, "https": 443}.get(url.scheme)


def _whole_get(client: httpx.Client, url: str, params: dict, headers: dict, deadline: float, cap: int
               ) -> tuple[httpx.URL, int, Any] | None:
    """A GET read whole before the deadline (a byte every few seconds does not hold it), no larger than `cap`:
    (its URL, status, JSON or None); None when it is not."""
    if (remaining := deadline - time.monotonic()) <= 0:
        return None
    with client.stream("GET", url, params=params, headers=headers, timeout=min(remaining, 10.0)) as response:
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > cap or time.monotonic() > deadline:
                return None
        return response.url, response.status_code, decode_answer(bytes(body))


# ==================================================================================================
# Rollout
# ==================================================================================================
# One prompt to a final answer: teacher turn, tools, turn...; how it ended (Outcome, Ending).


def _is_final_answer(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "assistant" and not message.get("tool_calls")


def _calls_pending(message: Any) -> bool:
    """An answer whose tool calls have not run: the last saved message of a rollout the run stopped at once
    while its tools ran (the next run runs them first)."""
    return (isinstance(message, dict) and message.get("role") == "assistant"
            and bool(message.get("tool_calls")))


@dataclass
class _SavedTurns:
    messages: list[dict]
    usage: Usage
    turns: int
    finish_reason: str | None
    fingerprint: str
    model: str | None  # the model that answered last (a line names it when it is not the one asked for)
    provider: str | None
    prompt: str | None  # Prompt.content of the conversation they began from; None: saved before it was kept
    settings: dict | None = None  # RequestIdentity.parts they began with; None: saved by an earlier release


class Ending(enum.Enum):
    """How a rollout ended, as the rollout saw it. Run.settle maps each to exactly one _Destination: a line
    in the output, a line in the rejected file (finished, but below --min-reward), an entry in the failed
    file, paused (its turns saved, to go on next run), or pending (nothing saved: it starts anew)."""

    # a final answer: the output, or the rejected file when it scores below --min-reward
    FINISHED = "finished"
    # the teacher stopped without a usable answer: failed file (or output with --keep-incomplete)
    INCOMPLETE = "incomplete"
    FAILED = "failed"  # could not finish (HTTP error, retries used up, a bug): failed file
    # the whole run stopped while it was in progress: paused (its saved turns go on next time)
    STOPPED = "stopped"
    # the run was stopping before its next request: paused, or pending if none was made
    NOT_STARTED = "not started"


@dataclass
class Outcome:
    job: RolloutJob
    messages: list[dict]  # the conversation so far, the prompt's messages included
    usage: Usage  # every answered request of this rollout, also when it failed later
    turns: int = 0
    finish_reason: str | None = None
    model: str | None = None  # the model that answered last (a router may answer with another)
    provider: str | None = None  # and who served it, where the answer says
    ending: Ending = Ending.FINISHED
    label: str = ""  # a short reason the summary counts, e.g. "HTTP 400", "incomplete: length"
    detail: str = ""  # the reason in full, for the failed file
    status: int | None = None
    tries: int = 0  # HTTP tries of the request that failed it (0: no request failed)
    stop: RunStopped | None = None  # this rollout found that no request can succeed: stop the run
    score: _Score | None = None  # rewards.py's verdict on a finished rollout
    attempt: int = 1  # with --attempts: which try of its prompt (and sample) this is
    carried: Usage | None = None  # what its turns saved by earlier runs cost (counted there, not in this run)
    in_paused_file: bool = False  # its turns are in the paused file (this run or an earlier one)
    key_in_signed_reasoning: bool = False  # its newer turns could not be saved (PausedFile.save)
    identity: RequestIdentity | None = None  # what its turns are valid with (RolloutRunner.body_for)
    given_up: bool = False  # stopped at once with an answer still coming (not whole): paid again

    @property
    def total_usage(self) -> Usage:
        """What the rollout cost, across runs: what its line says."""
        if self.carried is None:
            return self.usage
        total = Usage()
        total.merge(self.carried)
        total.merge(self.usage)
        return total

    @property
    def answered_last(self) -> bool:
        """Its last message is an answer the teacher gave it (not the prompt's own last message)."""
        return (self.turns > 0 and len(self.messages) > len(self.job.prompt.messages)
                and self.messages[-1].get("role") == "assistant")

    def end(self, ending: Ending, label: str = "", detail: str = "", **fields: Any) -> Outcome:
        self.ending, self.label, self.detail = ending, label, detail or label
        for name, value in fields.items():
            setattr(self, name, value)
        return self

    @property
    def paid(self) -> bool:
        return self.usage.requests > 0


class RolloutRunner:
    """Runs one prompt to a final answer: teacher turn, tool calls, teacher turn, ...

    `roll_out` raises nothing from the conversation: whatever happens in it (an answer, a tool, a stop, a full
    disk, a bug of ours) comes back as an Outcome carrying the conversation so far and what it cost.
    """

    def __init__(self, requests: RequestSettings, cache: _CachePlan, client: TeacherClient,
                 toolbox: ToolBox | None,
                 stopping: asyncio.Event, paused: PausedFile | None = None):
        self.max_turns, self.cache, self.client, self.toolbox, self.stopping = \
            requests.max_turns, cache, client, toolbox, stopping
        self.requests = requests
        self.base_body = _request_body_template(requests, toolbox)
        self.paused = paused  # saves each rollout's turns as they come; None: nothing is saved (tests)
        self.started_over: collections.Counter = collections.Counter()  # saved rollouts begun again, by why
        self.started_over_cost = Usage()  # what their discarded turns had cost (carried into their lines)
        self.kept_from_signed = 0  # rollouts whose newer turns were not saved: the key is in signed reasoning
        # A rollout's body (but its messages) and identity, by its prompt's own tools list (None: all):
        # made once per list, not serialized and hashed again for every rollout
        self._bodies: dict[tuple[str, ...] | None, tuple[dict, RequestIdentity]] = {}

    def mcp_tools_joined(self) -> None:
        """The MCP servers' tools joined the box (at the run's start): requests carry them from now on."""
        self.base_body = _request_body_template(self.requests, self.toolbox)
        self._bodies.clear()

    async def roll_out(self, job: RolloutJob, attempt: int = 1) -> Outcome:
        outcome = Outcome(job, [dict(m) for m in job.prompt.messages], Usage(), attempt=attempt)
        key = RolloutKey.of_job(job, attempt)
        saved = self.paused.take(key, job.prompt.messages) if self.paused is not None else None
        if self.paused is not None:
            outcome.identity = self.body_for(job)[1]
        if saved is not None and (why := _why_saved_turns_cannot_go_on(saved, job.prompt, outcome.identity)):
            self.started_over[why] += 1  # its turns answered another request: they cannot go on
            self.started_over_cost.merge(saved.usage)
            outcome.carried = saved.usage  # paid for this rollout all the same: its line counts them
            saved = None
        if saved is None and self.paused is not None:
            self.paused.begin(key)  # from nothing: whatever it had saved is dead
        if saved is not None:  # continue from its last saved turn: no answer is paid twice
            outcome.messages, outcome.carried, outcome.turns = saved.messages, saved.usage, saved.turns
            outcome.finish_reason, outcome.model = saved.finish_reason, saved.model
            outcome.in_paused_file = True
            outcome.provider = saved.provider
        try:
            if saved is not None and _is_final_answer(saved.messages[-1]):
                return self._ended(outcome, outcome.messages[-1], outcome.turns)
            return await self._converse(outcome)
        except PromptFailed as e:
            return outcome.end(Ending.FAILED, e.kind, e.detail, status=e.status, tries=e.tries)
        except RunStopped as e:
            return outcome.end(Ending.STOPPED, f"stopped: {e.kind}", e.message, stop=e)
        except _NotStarted:  # the run is stopping: no next request (its turns so far are saved)
            return outcome.end(Ending.NOT_STARTED, "not started")
        except ToolUnavailable as e:
            return outcome.end(Ending.FAILED, "tool unavailable", str(e))
        except OutputError as e:  # its turns could not be saved (a full disk): the run stops; it pauses
            message = f"{e}. This run stopped; {OutputError.WHAT_TO_DO} to continue."
            return outcome.end(Ending.STOPPED, "stopped: cannot save", message,
                               stop=RunStopped("disk", message))
        except asyncio.CancelledError:  # the run is stopping at once; the outcome still gets settled
            # It was running the tools its last answer asked for: the answer is kept (Run.settle saves it with
            # its calls, which run next run). Or it was waiting for an answer (a request waiting for a slot or
            # a retry has ended _NotStarted by now): that answer is given up, and paid again.
            if outcome.answered_last:
                return outcome.end(Ending.STOPPED, "interrupted", "the run stopped at once while this "
                                   "rollout's tools ran: its answer is kept, and its tools run next run")
            return outcome.end(Ending.STOPPED, "interrupted",
                               "the run stopped while this rollout was in progress",
                               given_up=True)
        except Exception as e:  # a bug of ours: this rollout fails with the place, the run goes on
            where = traceback.extract_tb(e.__traceback__)[-1]
            return outcome.end(Ending.FAILED, "internal error", f"internal error: {type(e).__name__}: {e} "
                               f"({Path(where.filename).name}:{where.lineno}); please report it")

    def body_for(self, job: RolloutJob) -> tuple[dict, RequestIdentity]:
        """What every request of this rollout carries besides its messages, and its identity: with the
        prompt's own messages (Prompt.content), what makes saved turns valid to continue (model, tools, MCP
        and per-prompt ones included, reasoning, extra body)."""
        if (made := self._bodies.get(job.prompt.tools)) is not None:
            return made
        body = dict(self.base_body)
        if job.prompt.tools is not None:  # the prompt's own list: only those tools' schemas
            body["tools"] = [t for t in body.get("tools", ()) if t["function"]["name"] in job.prompt.tools]
            if not body["tools"]:
                del body["tools"]  # an empty list is refused by the API; no tools at all
        self._bodies[job.prompt.tools] = body, RequestIdentity.of(body)
        return self._bodies[job.prompt.tools]

    async def _converse(self, o: Outcome) -> Outcome:
        base = self.body_for(o.job)[0]
        # saved as a stop came while its tools ran: they run first
        if o.answered_last and _calls_pending(o.messages[-1]):
            if o.turns >= self.max_turns:
                return self._too_many_turns(o, o.turns)
            await self._answer_calls(o, o.messages[-1]["tool_calls"])
        for turn in range(o.turns + 1, self.max_turns + 1):
            # No request starts once the run is stopping: a rollout pauses between its turns.
            body = {**base, "messages": self.cache.mark(o.messages)}
            if o.carried is None:
                o.carried = Usage()  # batch mode: answers an earlier run was billed for go here
            completion = await self.client.complete(body, o.job.seq, o.usage, self.stopping,
                                                    RolloutKey.of_job(o.job, o.attempt), o.carried)
            message = _with_unique_call_ids(completion.message, turn, o.messages)
            o.messages.append(message)
            o.turns, o.finish_reason, o.model = turn, completion.finish_reason, completion.model
            o.provider = completion.provider
            if completion.finish_reason in ("length", "content_filter"):
                return o.end(Ending.INCOMPLETE, f"incomplete: {completion.finish_reason}",
                             f"incomplete: finish_reason {completion.finish_reason} on turn {turn}")
            calls = message.get("tool_calls")
            if calls and turn >= self.max_turns:
                return self._too_many_turns(o, turn)
            if completion.stop_now:  # it came whole as the run stopped at once: kept (Run.settle saves it)
                return o.end(Ending.STOPPED, "interrupted", "the run stopped at once as this rollout's "
                             "answer came: the answer is kept, and the rollout goes on from it next run")
            if calls:
                await self._answer_calls(o, calls)
                continue
            return self._ended(o, message, turn)
        # Only a resumed rollout gets here: saved with as many turns as --max-turns now allows
        return o.end(Ending.INCOMPLETE, "incomplete: max turns",
                     f"incomplete: its {o.turns} saved turns reach --max-turns {self.max_turns}")

    async def _answer_calls(self, o: Outcome, calls: list[dict]) -> None:
        o.messages.extend(await self._tool_results(calls, o.job.prompt.metadata, o.job.prompt.tools))
        self.save(o)  # the answer and all its tool results, together

    @staticmethod
    def _too_many_turns(o: Outcome, turn: int) -> Outcome:
        return o.end(Ending.INCOMPLETE, "incomplete: max turns",
                     f"incomplete: reached --max-turns {turn} while the teacher was still calling tools")

    def save(self, o: Outcome) -> None:
        """Make the rollout's turns so far durable (after an answer and its tool results, or a final answer
        the run stopped before it could settle). A rollout settled as its first answer came is never saved:
        nothing to pay twice."""
        if self.paused is not None:
            identity = o.identity or self.body_for(o.job)[1]
            if self.paused.save(RolloutKey.of_job(o.job, o.attempt), identity.fingerprint, o, identity.parts):
                o.in_paused_file = True
            elif o.key_in_signed_reasoning is False:
                o.key_in_signed_reasoning = True
                self.kept_from_signed += 1

    @staticmethod
    def _ended(o: Outcome, message: dict, turn: int) -> Outcome:
        """A turn without tool calls: the rollout's end."""
        if not _message_text(message).strip():
            if isinstance(message.get("refusal"), str) and message["refusal"].strip():
                return o.end(Ending.INCOMPLETE, "incomplete: refusal",
                             f"incomplete: the teacher refused on turn {turn}: {message['refusal']}")
            return o.end(Ending.INCOMPLETE, "incomplete: empty answer",
                         f"incomplete: empty answer on turn {turn}")
        return o.end(Ending.FINISHED)

    async def _tool_results(self, calls: list[dict], metadata: dict,
                            allowed: tuple[str, ...] | None) -> list[dict]:
        if self.toolbox is None:
            return [{"role": "tool", "tool_call_id": call["id"], "content": "Error: no tools are available."}
                    for call in calls]
        return await self.toolbox.run_calls(calls, metadata, allowed)


# Sampling settings: how the next answer is drawn, not what the conversation is. Turns answered under another
# temperature or answer length are still answers to exactly this conversation: they go on (the runs file and
# the card say which values each run used).
_SAMPLING_ONLY = frozenset({"temperature", "max_tokens", "max_completion_tokens", "top_p", "top_k", "min_p",
                            "top_a", "seed", "frequency_penalty", "presence_penalty", "repetition_penalty"})
# What each part of a request is, for the summary's reason when it changed; --extra-body's own keys by name.
_SETTING_NAMES = {"model": "the model (--model)",
                  "tools": "the tools (tools.py, the MCP servers, the prompt's list)",
                  "reasoning": "the reasoning settings",
                  "provider": "the provider routing (--extra-body, --distillable)"}


@dataclass(frozen=True)
class RequestIdentity:
    """What a rollout's requests carry besides their messages, as far as it decides what the conversation is:
    a hash of each part (the model, tools, reasoning, each --extra-body key), so the reason a change begins
    saved turns again can name the part; not how answers are sampled (_SAMPLING_ONLY), nor whether they
    stream, nor the context-compression plugin turned off. `legacy`: the hash releases before this one
    kept."""

    parts: dict[str, str]
    legacy: str

    @classmethod
    def of(cls, body: dict) -> RequestIdentity:
        kept = {k: v for k, v in body.items() if k not in ("stream", "stream_options")
                and not (k == "plugins"
                         and v == [_NO_CONTEXT_COMPRESSION])}  # as before it was sent: the same
        parts = {k: _digest(v) for k, v in kept.items() if k not in _SAMPLING_ONLY}
        return cls(parts, _digest(kept))

    @property
    def fingerprint(self) -> str:
        return _digest(self.parts)

    def changed(self, saved: dict) -> list[str]:
        """The parts that differ from these saved ones, by name."""
        return [_SETTING_NAMES.get(name, f"--extra-body's {name!r}")
                for name in sorted(set(saved) | set(self.parts))
                if saved.get(name) != self.parts.get(name)]


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


# Why saved turns could not go on (RunSummary says how many of each): a rollout is its content, not its id.
_PROMPT_CHANGED = "their prompt changed (its text, messages or the system prompt)"
_PROMPT_UNCHECKED = ("their prompt has its own id and their turns were saved by an earlier release, which "
                     "kept no record of its text")
_PROMPT_AMBIGUOUS = ("their prompt holds the ASCII control characters RS or US, and their turns were saved "
                    "by an earlier release, whose record of a prompt could not tell such a text from other "
                    "messages")
_SETTINGS_UNNAMED = ("the model, tools, reasoning, --extra-body, --temperature or --max-tokens changed "
                    "(their turns were saved by an earlier release, which kept no record of which)")


def _why_saved_turns_cannot_go_on(saved: _SavedTurns, prompt: Prompt,
                                  identity: RequestIdentity) -> str | None:
    """Saved turns belong to exactly the messages and request settings that began them: None when these are
    those, else why not. Turns saved before the prompt's hash was kept go on when the id is the hash of the
    conversation (a prompt without an id of its own), since then the id says what the content was; turns saved
    with the earlier, 16-digit hash go on where it matches and could not have confused the text."""
    if saved.prompt is None:
        if prompt.id_given:
            return _PROMPT_UNCHECKED
    elif len(saved.prompt) == len(conversation_hash([])):  # an earlier release's record of the prompt
        if saved.prompt != conversation_hash(prompt.messages):
            return _PROMPT_CHANGED
        if any(isinstance(m.get("content"), str) and ("\x1e" in m["content"] or "\x1f" in m["content"])
               for m in prompt.messages):
            return _PROMPT_AMBIGUOUS
    elif saved.prompt != prompt.content:
        return _PROMPT_CHANGED
    if saved.settings is None:  # saved by an earlier release: one hash of every setting, sampling included
        return _SETTINGS_UNNAMED if saved.fingerprint != identity.legacy else None
    changed = identity.changed(saved.settings)
    return f"{' and '.join(changed)} changed" if changed else None


def _request_body_template(requests: RequestSettings, toolbox: ToolBox | None) -> dict:
    body: dict = {"model": requests.model, "max_tokens": requests.max_tokens,
                  "temperature": requests.temperature}
    if toolbox is not None:
        # Tools go on every request of a rollout, also those carrying tool results (OpenRouter needs it).
        body["tools"] = toolbox.api_schemas()
    if requests.reasoning:
        body["reasoning"] = requests.reasoning
    if requests.stream:  # usage comes in the last event; the dataset is the same either way
        body["stream"], body["stream_options"] = True, {"include_usage": True}
    if requests.no_compression:
        body["plugins"] = [_NO_CONTEXT_COMPRESSION]
    body.update(requests.extra_body)
    if requests.distillable:  # with the user's own provider preferences, if any
        provider = body.get("provider") if isinstance(body.get("provider"), dict) else {}
        body["provider"] = {**provider, "enforce_distillable_text": True}
    plugins = requests.extra_body.get("plugins")
    if requests.no_compression and isinstance(plugins, list) and not any(
            isinstance(p, dict) and p.get("id") == "context-compression" for p in plugins):
        # the user's plugins, and ours unless they chose
        body["plugins"] = [*plugins, _NO_CONTEXT_COMPRESSION]
    return body


_NO_CONTEXT_COMPRESSION = {"id": "context-compression", "enabled": False}


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


# ==================================================================================================
# The dataset line
# ==================================================================================================
# The line: built, keyed, read and rewritten here, and nowhere else.
# Exactly-once resume rests on the line format, so one section owns it. A line of the output (and of
# the rejected file) is {"metadata": {"prompt_id", "sample", <the prompt's metadata>, ...}, "messages": [...],
# "tools": [...]}, one strict JSON object a line; a failed entry carries prompt_id and sample at its top.
# RolloutKey.of_line is the one rule that says which rollout a line belongs to; LineReader the one way to read
# a file of ours; replaced_atomically the one way to rewrite one.


@dataclass(frozen=True)
class LineFormat:
    """What a dataset line records besides the conversation."""

    teacher: str  # --model, as metadata.teacher
    keep_reasoning: bool  # write the teacher's reasoning as reasoning_content
    numbered_attempts: bool  # --attempts above 1: metadata.attempt says which try the line is
    redact: Callable[[Any], Any]  # Secret.scrub: the key out of every string the teacher and the tools wrote


def build_line(outcome: Outcome, fmt: LineFormat, tool_names: list[str]) -> dict:
    """The output (or rejected) line of a finished rollout."""
    job = outcome.job
    metadata = {"prompt_id": job.prompt.prompt_id, "sample": job.sample, **job.prompt.metadata,
                "teacher": fmt.teacher, "turns": outcome.turns, "finish_reason": outcome.finish_reason,
                "usage": outcome.total_usage.to_json()}
    metadata["prompt_id"], metadata["sample"] = job.prompt.prompt_id, job.sample  # the user's keys never win
    if outcome.model and outcome.model != fmt.teacher:
        metadata["model"] = fmt.redact(outcome.model)  # the teacher's words, like finish_reason
    if outcome.provider:
        metadata["provider"] = fmt.redact(outcome.provider)  # for the dataset card: who served the answers
    if isinstance(outcome.finish_reason, str):
        metadata["finish_reason"] = fmt.redact(outcome.finish_reason)
    if outcome.ending is Ending.INCOMPLETE:
        metadata["incomplete"] = fmt.redact(outcome.detail.removeprefix("incomplete: "))
    if fmt.numbered_attempts:
        metadata["attempt"] = outcome.attempt
    if outcome.score is not None:
        _set_score(metadata, outcome.score)
    record = {"metadata": metadata, "messages": _dataset_messages(outcome, fmt.keep_reasoning, fmt.redact)}
    if tool_names:
        record["tools"] = tool_names
    return record


def _line_tools(prompt: Prompt, toolbox: ToolBox | None) -> list[str]:
    """The tools a line names: its prompt's own list when it has one (rnow's per-prompt `tools`), else all."""
    if prompt.tools is not None:
        return list(prompt.tools)
    return toolbox.names if toolbox is not None else []


def _set_score(metadata: dict, score: _Score) -> None:
    """Put rewards.py's verdict in a line's metadata (a new line, or one --rescore scores again)."""
    metadata["rewards"], metadata["reward"] = score.values, score.total
    if score.errors:
        metadata["reward_errors"] = score.errors
    else:
        metadata.pop("reward_errors", None)


def _failed_entry(outcome: Outcome, fmt: LineFormat, conversation: bool = True) -> dict:
    """The failed file's entry for a rollout that did not finish: why, what it cost, and (when anything
    was paid for, and `conversation`) the conversation so far."""
    job = outcome.job
    entry = {"prompt_id": job.prompt.prompt_id, "sample": job.sample, "prompt": job.prompt.source,
             "metadata": job.prompt.metadata, "kind": fmt.redact(outcome.label),
             "reason": fmt.redact(outcome.detail),
             "attempts": outcome.tries or outcome.turns, "status": outcome.status,
             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "usage": outcome.total_usage.to_json()}
    if outcome.paid and conversation:
        entry["messages"] = _dataset_messages(outcome, fmt.keep_reasoning, fmt.redact)
    return entry


def _dataset_messages(outcome: Outcome, keep_reasoning: bool, redact: Callable[[Any], Any]) -> list[dict]:
    """The conversation as a dataset line holds it: the prompt's own messages exactly as given, then what
    the teacher and the tools wrote, with the key taken out of their texts (never out of keys or ids)."""
    given = len(outcome.job.prompt.messages)
    return [_training_message(m, keep_reasoning) if i < given
            else redact(_training_message(m, keep_reasoning))
            for i, m in enumerate(outcome.messages)]


def _training_message(message: dict, keep_reasoning: bool) -> dict:
    """A message as trainers want it: content always a string (or parts list), no API-only fields."""
    content = message.get("content")
    out: dict = {"role": message["role"], "content": content if isinstance(content, (str, list)) else ""}
    if message["role"] == "assistant":
        reasoning = _reasoning_text(message) if keep_reasoning else ""
        if reasoning:
            out["reasoning_content"] = reasoning
        if isinstance(message.get("refusal"), str) and message["refusal"]:
            out["refusal"] = message["refusal"]  # the teacher's words when it declines; kept, not dropped
        if message.get("tool_calls"):
            out["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": {"name": c["function"]["name"],
                                               "arguments": _arguments_text(c["function"]["arguments"])}}
                                 for c in message["tool_calls"]]
    if message["role"] == "tool":
        out["tool_call_id"] = message.get("tool_call_id", "")
        if message.get("name"):
            out["name"] = message["name"]
    return out


def _reasoning_text(message: dict) -> str:
    """The reasoning under any of its names: OpenRouter's `reasoning` (or its `reasoning_details`), or
    `reasoning_content` (DeepSeek's API, vLLM's and SGLang's reasoning parsers)."""
    for name in ("reasoning", "reasoning_content"):
        if isinstance(message.get(name), str) and message[name]:
            return message[name]
    details = message.get("reasoning_details") or []
    parts = [d.get("text") or d.get("summary") or "" for d in details
             if isinstance(d, dict) and d.get("type") in ("reasoning.text", "reasoning.summary")]
    return "\n".join(p for p in parts if isinstance(p, str) and p)


def _arguments_text(arguments: str | dict) -> str:
    # Some providers send arguments as an object; the OpenAI shape trainers read is a JSON string.
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def encode_line(record: dict) -> bytes:
    """One line of strict JSON (RFC 8259: no NaN, valid UTF-8); ValueError if the record cannot be."""
    try:
        return orjson.dumps(record) + b"\n"  # ~5x json.dumps, strict: lone surrogates refused
    except orjson.JSONEncodeError:  # also integers past 64 bits, which json writes exactly
        return (json.dumps(record, ensure_ascii=False, allow_nan=False,
                           separators=(",", ":")) + "\n").encode("utf-8")


def _metadata_keys_the_builder_adds() -> frozenset[str]:
    """Every metadata key build_line can add, found by building a line that has them all."""
    score = _Score({"r": 0.0}, 0.0, {"r": "failed"})
    outcome = Outcome(RolloutJob(Prompt("p", [], {}, ""), 0, 0), [], Usage(), model="another", provider="p",
                      ending=Ending.INCOMPLETE, detail="incomplete: x", score=score)
    return frozenset(build_line(outcome, LineFormat("teacher", True, True, str), [])["metadata"])


# Added to a line's metadata by this script, not given by the prompt: not what a reward is shown.
OUR_METADATA_KEYS = _metadata_keys_the_builder_adds()
# How every line of ours starts (now, and as json.dumps wrote it before orjson): a torn or hand-edited
# line that still starts so is one of ours, not a foreign file's.
_OUR_PREFIXES = (encode_line({"metadata": {"prompt_id": ""}})[: -len(b'""}}\n')],
                 b'{"metadata": {"prompt_id": ')


def dataset_records(path: Path) -> Iterator[dict | None]:
    """Each line's JSON object, or None for one that is not (torn, edited): what the report reads."""
    return (record for _, record in LineReader(path).records())


# ==================================================================================================
# Output and resume
# ==================================================================================================
# The output and rejected files: appended whole, locked, scanned, repaired, rescored.
# Lines are written whole with one write() as each rollout ends; a write that fails (full disk, file
# size limit) is rolled back to the last whole line. So a kill -9 leaves at most one half-written last
# line, which the next run cuts off, and nothing else can tear a line. The next run also reads every
# line in full (strict JSON): a line torn or edited by hand is set aside in <stem>.quarantine.jsonl and
# its rollout runs again, a second copy of a rollout is set aside too, and the file it appends to is
# always valid JSONL. The file is locked before it is read, so two runs never plan from one output.


class LineFile:
    """Appends JSON lines with one write() each; a failed write is undone, so no torn line is left. A side
    file of the output (`like`) is created no more readable than the output."""

    def __init__(self, path: Path, like: Path | None = None):
        self.path, self.like = path, like
        self._fd: int | None = None
        self._size = 0  # where the last whole line ends: a failed write is cut back to it

    def append(self, record: dict) -> None:
        """Raises ValueError if the record cannot be encoded, OutputError if it cannot be written."""
        data = encode_line(record)
        try:
            if self._fd is None:
                self._use(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                  0o644 & _mode_or_all(self.like)))
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                if written == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
        except OSError as e:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
            raise OutputError(self.path, e) from None
        self._size += len(data)

    def _use(self, fd: int) -> None:
        self._fd, self._size = fd, os.fstat(fd).st_size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class _BadLine:
    line_no: int
    reason: str
    quarantine: bool = True  # False for blank lines: dropped without a trace


@dataclass
class _OutputScan:
    done: set[int] = field(default_factory=set)  # rollout keys of the good lines
    bad: list[_BadLine] = field(default_factory=list)
    tail: str | None = None  # a last line without its newline: "cut" (torn) or "complete" (whole)
    bom: bool = False
    ours: int = 0  # lines written by this tool
    prompt_ids: set[int] | None = None  # hashes of the prompt ids with a line, whatever the sample (if asked)


class OutputFile(LineFile):
    """train.jsonl: the one owner of its format, lock, scan, repair and writes."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.created = False

    @property
    def quarantine_path(self) -> Path:
        return OutputPaths(self.path).quarantine

    def lock(self) -> None:
        """Open (or create) and lock the file before anything reads it: a second run is refused at once."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise UsageError(f"{self.path}: cannot open the output file for writing: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self.created = False
            raise UsageError(f"{self.path} is being written by another run. Wait for it to finish, "
                             "or pass a different --output.") from None
        self._use(fd)

    def release(self) -> None:
        """Unlock; a file this run created and never wrote to is removed (no 0-byte leftovers)."""
        if self._fd is not None and self.created and os.fstat(self._fd).st_size == 0:
            with contextlib.suppress(OSError):
                _remove_file(self.path)
        self.close()

    # -- reading ---------------------------------------------------------------------------------
    def scan(self, chunk_size: int = 1 << 22, prompt_ids: bool = False) -> _OutputScan:
        """Read every line in full, strictly (orjson: ~400 MB/s, where json.loads manages ~115).
        Raise UsageError when the file is not ours: something else must not be rewritten. `prompt_ids`: also
        note which prompts have a line (--dedup and --decontaminate never drop them)."""
        scan = _OutputScan(prompt_ids=set() if prompt_ids else None)
        reader, line_no = LineReader(self.path, chunk_size), 0
        try:
            for lines in reader.batches():
                before = len(scan.bad)
                self._check_lines(lines, line_no, scan)
                line_no += len(lines)
                if reader.unterminated is not None:
                    scan.tail = "cut" if len(scan.bad) > before else "complete"
                    # a torn last line is a crash's, not a hand edit: cut, not set aside
                    del scan.bad[before:]
        except FileNotFoundError:
            return scan
        except OSError as e:
            raise UsageError(f"{self.path}: cannot read the output file: {e.strerror}") from None
        scan.bom = reader.bom
        set_aside = [b for b in scan.bad if b.quarantine]
        if set_aside and not scan.ours:
            first = set_aside[0]
            raise UsageError(f"{self.path}:{first.line_no}: {first.reason}, and no line of this file was "
                             "written by this tool. Use another --output, or fix or remove that line.")
        return scan

    def _check_lines(self, lines: list[bytes], line_no: int, scan: _OutputScan) -> None:
        # The hot loop of a resume over millions of lines: locals only, one parse per line, and
        # RolloutKey.of_line's rule written out for an output line (calling it costs a quarter of the scan's
        # speed); a test holds the two to the same answers on every shape of line.
        loads, done, bad, prompt_ids = orjson.loads, scan.done, scan.bad, scan.prompt_ids
        ours = 0
        first = line_no + 1
        for line_no, line in enumerate(lines, first):
            try:
                metadata = loads(line)["metadata"]
                prompt_id, sample = metadata["prompt_id"], metadata["sample"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self._classify_bad(line, line_no, scan)
                continue
            if (type(prompt_id) is not str or type(sample) is not int
                    or type(metadata.get("attempt", 1)) is not int):
                self._classify_bad(line, line_no, scan)
                continue
            key = hash((prompt_id, sample))  # RolloutKey.hashed, written out
            ours += 1
            if prompt_ids is not None:
                prompt_ids.add(hash(prompt_id))
            if key in done:
                bad.append(_BadLine(line_no, f"a second copy of prompt_id {prompt_id!r} sample {sample}"))
            else:
                done.add(key)
        scan.ours += ours

    def _classify_bad(self, line: bytes, line_no: int, scan: _OutputScan) -> None:
        if not line.strip():
            scan.bad.append(_BadLine(line_no, "blank line", quarantine=False))
            return
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            # a torn or edited line of ours still shows our prefix
            scan.ours += line.startswith(_OUR_PREFIXES)
            scan.bad.append(_BadLine(line_no, "not valid JSON (torn, or edited by hand)"))
            return
        where = f"{self.path}:{line_no}"
        raise UsageError(f"{where}: has no metadata.prompt_id and sample, so it was not written by this "
                         "tool. Use another --output, or remove the line.")

    # -- repairing -------------------------------------------------------------------------------
    def repair(self, scan: _OutputScan) -> list[str]:
        """Make the file valid JSONL before appending; return one note per thing done, for the user."""
        notes = []
        if scan.tail == "cut":
            notes.append(f"{self.path}: cut off a half-written last line (a crash); its rollout runs again.")
            self._cut_tail()
        elif scan.tail == "complete":
            self._write_all(b"\n")
        if scan.bad or scan.bom:
            self._rewrite_without(scan.bad)
            shown = [b for b in scan.bad if b.quarantine]
            for bad in shown[:5]:
                notes.append(f"{self.path}:{bad.line_no}: {bad.reason}; moved to {self.quarantine_path}"
                             + (", its rollout runs again." if "copy" not in bad.reason else "."))
            if len(shown) > 5:
                notes.append(f"... and {len(shown) - 5} more lines moved to {self.quarantine_path}.")
        return notes

    def _cut_tail(self) -> None:
        size = os.fstat(self._fd).st_size
        with open(self.path, "rb") as f:
            end = size
            while end > 0:
                start = max(0, end - 65536)
                f.seek(start)
                cut = f.read(end - start).rfind(b"\n")
                if cut >= 0:
                    end = start + cut + 1
                    break
                end = start
        os.ftruncate(self._fd, end)
        self._size = end

    def _write_all(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except OSError as e:
            raise OutputError(self.path, e) from None
        self._size += len(data)

    def _rewrite_without(self, bad: list[_BadLine]) -> None:
        """Copy the good lines to a new file that replaces this one (a crash midway leaves the old one
        whole); the bad ones go to the quarantine file as JSON records with their text."""
        drop = {b.line_no: b for b in bad}
        quarantine = LineFile(self.quarantine_path, like=self.path)
        try:
            with replaced_atomically(self.path) as target:
                for line_no, line in enumerate(LineReader(self.path).lines(), 1):
                    if line_no not in drop:
                        target.write(line + b"\n")  # repair() ended the file with a newline first
                    elif drop[line_no].quarantine:
                        quarantine.append({"file": str(self.path), "line": line_no,
                                           "reason": drop[line_no].reason,
                                           "text": line.decode("utf-8", "replace")})
        except OSError as e:
            raise OutputError(self.path, e) from None
        finally:
            quarantine.close()
        # The lock was on the old file: take it on the new one (a run that got in between wins).
        self.close()
        created, self.created = self.created, False
        self.lock()
        self.created = created


class RejectedFile(LineFile):
    """<output>.rejected.jsonl: finished rollouts that scored below --min-reward, whole lines with their
    rewards. Finished work: a re-run counts them (as tries spent, with --attempts) and does not pay again."""

    torn_end = 0  # bytes of a torn last line (a crash mid-write) that tries() found: cut_torn_end() cuts them
    # hashes of the prompt ids with a rejected line, found by tries()
    prompt_ids: frozenset[int] = frozenset()

    def tries(self) -> collections.Counter:
        """Rejected lines per rollout key. A torn last line is not a try: its rollout runs again."""
        counts: collections.Counter = collections.Counter()
        prompt_ids: set[int] = set()
        seen: set[int] = set()  # hashes of (prompt id, sample, attempt): a copy left by a crash counts once
        reader = LineReader(self.path)
        try:
            for _, record in reader.records():
                # a torn last line is not a try
                key = RolloutKey.of_line(record) if reader.unterminated is None else None
                if key is not None and hash(key) not in seen:
                    seen.add(hash(key))
                    counts[key.rollout] += 1
                    prompt_ids.add(hash(key.prompt_id))
        except OSError as e:
            raise OutputError(self.path, e) from None
        self.torn_end, self.prompt_ids = len(reader.unterminated or b""), frozenset(prompt_ids)
        return counts

    def cut_torn_end(self) -> None:
        """A run that goes ahead cuts the torn last line tries() found, before it appends."""
        if self.torn_end:
            try:
                os.truncate(self.path, self.path.stat().st_size - self.torn_end)
            except OSError as e:
                raise OutputError(self.path, e) from None
            self.torn_end = 0


@dataclass
class _Rescored:
    lines: int = 0
    to_rejected: int = 0
    to_output: int = 0
    reward_sum: float = 0.0


async def _rescore(files: OutputPaths, min_reward: float | None, scorer: RewardScorer,
                   output: OutputFile) -> int:
    """--rescore: score every line of the output and rejected files again with rewards.py and apply
    --min-reward, moving lines between the two files; nothing is sent. The files are replaced in an
    order that never loses a line: a crash in between leaves a moved line in both (the output wins)."""
    rejected_path, counts = files.rejected, _Rescored()
    accepted: set[int] = set()  # keys with a line in the new output
    kept: set[tuple] = set()  # (prompt id, sample, attempt) of every line written: a repeat is dropped
    moved_in: list[bytes] = []
    try:
        # The output is replaced last (the with-blocks close inner first): a crash in between leaves a
        # moved line in both files, which the next scan or rescore collapses (the output wins).
        with replaced_atomically(files.output) as out, \
                replaced_atomically(rejected_path, files.output) as rej:
            async for record, line in _rescored_lines(files.output, scorer, counts):
                if record is not None and RolloutKey.of_line(record) in kept:
                    continue  # a second copy (a crash of an earlier --rescore): one is enough
                kept.add(RolloutKey.of_line(record))
                passes = record is None or not _below_min_reward(record, min_reward)
                (out if passes else rej).write(line)
                counts.to_rejected += not passes
                if passes and record is not None:
                    accepted.add(RolloutKey.rollout_of_line(record))
            async for record, line in _rescored_lines(rejected_path, scorer, counts):
                if record is not None and RolloutKey.of_line(record) in kept:
                    continue  # already in the output, or already here
                kept.add(RolloutKey.of_line(record))
                key = RolloutKey.rollout_of_line(record) if record is not None else None
                if record is not None and key not in accepted and not _below_min_reward(record, min_reward):
                    accepted.add(key)
                    out.write(line)
                    moved_in.append(line)
                rej.write(line)  # moved-in lines stay here until the output holds them
        output.created = False  # it holds lines now, whatever it held when it was locked
        if moved_in:
            drop = set(moved_in)
            with replaced_atomically(rejected_path) as rej:
                rej.writelines(line + b"\n" for line in LineReader(rejected_path).lines() if line
                               + b"\n" not in drop)
    except OSError as e:
        raise OutputError(e.filename and Path(e.filename) or files.output, e) from None
    counts.to_output = len(moved_in)
    if rejected_path.exists() and rejected_path.stat().st_size == 0:
        _remove_file(rejected_path)
    mean = f", mean reward {counts.reward_sum / counts.lines:.3f}" if counts.lines else ""
    print(f"Rescored {_plural(counts.lines, 'line')} of {files.output} and {rejected_path.name}{mean}; "
          f"moved {counts.to_rejected} to {rejected_path.name} and {counts.to_output} to {files.output}. "
          "Nothing was sent.", file=sys.stderr)
    return _EXIT_OK


def _below_min_reward(record: dict, min_reward: float | None) -> bool:
    return min_reward is not None and record["metadata"]["reward"] < min_reward


async def _rescored_lines(path: Path, scorer: RewardScorer, counts: _Rescored, batch: int = 64):
    """(record, encoded line) for each line of the file, scored anew, in file order, `batch` at a time.
    A line that is not one of ours comes back as (None, the line as it was)."""
    lines = LineReader(path).records()
    while chunk := list(itertools.islice(lines, batch)):
        records = [record if RolloutKey.of_line(record) is not None
                   and isinstance(record.get("messages"), list) else None
                   for _, record in chunk]
        scores = await asyncio.gather(*(
            scorer.score({k: v for k, v in r["metadata"].items() if k not in OUR_METADATA_KEYS},
                         r["messages"])
            for r in records if r is not None))
        for record, (line, _), score in zip(records, chunk, _iter_scores(records, scores)):
            if record is None:
                yield None, line + b"\n"
                continue
            _set_score(record["metadata"], score)
            counts.lines += 1
            counts.reward_sum += score.total
            yield record, encode_line(record)


def _iter_scores(records: list, scores: list) -> Iterator[_Score | None]:
    given = iter(scores)
    for record in records:
        yield next(given) if record is not None else None


# ==================================================================================================
# Paused and failed files
# ==================================================================================================
# Rollouts in progress (the paused file, a record per answer) and those that did not finish (the failed file).


class _Chain:
    """A rollout's records in the paused file, in order: where each is, and what they hold. (Slotted: a
    resume indexes one per paused rollout, 100,000 of them or more.)"""

    __slots__ = ("places", "said")

    def __init__(self, said: int = 0) -> None:
        self.places: list[tuple[int, int]] = []  # (offset, length) of each record
        self.said = said  # messages its records hold (the conversation after the prompt's own messages)

    @property
    def size(self) -> int:
        return sum(length + 1 for _, length in self.places)


class PausedFile(LineFile):
    """<output>.paused.jsonl: the turns so far of rollouts in progress, so a run that stops (Ctrl-C, a
    signal, the spend cap, a 402, a full disk, a crash, kill -9) loses no answer it paid for: the next
    run continues each from its last saved turn.

    After each answer, one record (one write, as the output) holds what that answer added: the assistant
    message and all its tool results, exactly as sent back to the teacher (encrypted reasoning included:
    this file is not the dataset) but for the API key (Secret.scrub). A rollout's conversation is its
    records in order: the first names its fingerprint (`from` 0), each later one says how many messages came
    before it (`from`), so a record that does not follow is never joined to the wrong conversation. A
    settled rollout is ended by a record saying so. What is written is linear in what was said.

    Only where each live record is, is held in memory (a few MB for 100,000 paused rollouts). When dead
    records (settled rollouts, abandoned chains) outweigh the live ones, the file is compacted during the
    run: the live records are copied to a new file on a thread while answers go on being appended to the
    old one; then what was appended meanwhile is copied too, and the new file is renamed over the old,
    in one step of the event loop. A kill -9 at any instant leaves the old file whole, or the new one.

    Every record is a rollout's (the Batch API's batches have a file of their own, BatchRecord): a line of
    another shape is not ours, skipped when the file is read and dropped when it is compacted."""

    COMPACT_FROM = 1 << 20  # bytes: below this, dead records are not worth a copy

    def __init__(self, path: Path, scrub: Callable[[Any], Any], like: Path | None = None):
        super().__init__(path, like)
        self.scrub = scrub  # Secret.scrub: the key never reaches this file either
        self.chains: dict[RolloutKey, _Chain] = {}
        self.live_bytes = 0
        self.peak_bytes = 0  # the file's largest size this run (the summary's and the bench's)
        self.compactions = 0
        self._compacting: asyncio.Task | None = None

    # -- the run's records -------------------------------------------------------------------------

    def begin(self, key: RolloutKey) -> None:
        """The rollout begins from nothing (never saved, or its turns cannot go on): any chain it had is
        dead."""
        chain = self.chains.pop(key, None)
        if chain is not None:
            self.live_bytes -= chain.size

    def save(self, key: RolloutKey, fingerprint: str, outcome: Outcome, settings: dict | None = None) -> bool:
        """Append what the rollout said since its last record; False when that cannot be saved as the
        teacher must get it back: the API key is in a signed reasoning block, which may not be changed
        (and may not be stored as it is). Its earlier records, if any, stay the ones it resumes from."""
        given = len(outcome.job.prompt.messages)
        chain = self.chains.get(key)
        said = outcome.messages[given + (chain.said if chain else 0):]
        if not said and chain is not None:
            return True  # saved already
        scrubbed = self.scrub(said)
        if scrubbed is not said and any(a.get("reasoning_details") != b.get("reasoning_details")
                                        for a, b in zip(said, scrubbed)):
            return False
        record = {**key._asdict(), "from": chain.said if chain else 0,
                  "turns": outcome.turns, "finish_reason": self.scrub(outcome.finish_reason),
                  "model": self.scrub(outcome.model), "provider": self.scrub(outcome.provider),
                  "usage": outcome.total_usage.to_json(), "messages": scrubbed}
        if chain is None:
            record["fingerprint"], record["prompt"] = fingerprint, outcome.job.prompt.content
            if settings is not None:
                record["settings"] = settings
        start = self.append(record)
        chain = self.chains.setdefault(key, _Chain())
        chain.places.append((start, self._size - start - 1))
        chain.said += len(said)
        self.live_bytes += self._size - start
        self._grew()
        return True

    def settled(self, key: RolloutKey) -> None:
        self.begin(key)  # its records are dead
        self.append({**key._asdict(), "settled": True})
        self._grew()

    def append(self, record: dict) -> int:
        """Append a record; where it starts."""
        start = self._end()
        super().append(record)
        return start

    def _end(self) -> int:
        if self._fd is None:
            with contextlib.suppress(FileNotFoundError):
                return self.path.stat().st_size
            return 0
        return self._size

    def _grew(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self._size)
        if (self._compacting is None and self._size > self.COMPACT_FROM
                and self._size - self.live_bytes > self.live_bytes):
            self._compacting = asyncio.get_running_loop().create_task(self._compact_while_running())

    # -- reading back --------------------------------------------------------------------------------

    @staticmethod
    def prompts_with_turns(path: Path) -> frozenset[int]:
        """The hashes of the ids of the prompts whose rollouts have turns saved here, not settled: paid for,
        so
        --dedup and --decontaminate never drop them. A record that is not ours, or torn, counts for
        nothing."""
        live: set[RolloutKey] = set()
        try:
            for _, record in LineReader(path).records():
                key = RolloutKey.of_paused(record)
                if key is None:
                    continue
                if record.get("settled") is True:
                    live.discard(key)
                elif _saved_said(record, thorough=False) is not None:
                    live.add(key)
        except OSError as e:
            raise OutputError(path, e) from None
        return frozenset(hash(key.prompt_id) for key in live)

    def load(self, keep: Callable[[RolloutKey], bool] = lambda key: True) -> int:
        """Index the file's live records (the chains of rollouts not settled, that `keep` wants); the
        number of rollouts found. A torn, hand-broken or out-of-place record is skipped: that rollout goes
        on from the records before it, or begins again."""
        self.close()
        self.chains, self.live_bytes = {}, 0
        wanted: dict[RolloutKey, bool] = {}  # keep's answer, asked once a rollout
        reader, position = LineReader(self.path), None
        for line in reader.lines():
            if position is None:
                position = len(_UTF8_BOM) if reader.bom else 0
            start, position = position, position + len(line) + 1
            record = parse_line(line)
            key = RolloutKey.of_paused(record)
            if key is None or line is reader.unterminated:  # not ours, or torn by a crash
                continue
            if record.get("settled") is True:
                self.begin(key)
                continue
            said = _saved_said(record, thorough=False)  # take() checks every message of the few it reads
            if said is None:
                continue
            if key not in wanted:
                wanted[key] = keep(key)
            if not wanted[key]:
                continue
            chain = self.chains.get(key)
            if said == _LEGACY:  # the whole conversation, as releases before issue 26 saved it: anew
                self.begin(key)
                chain = self.chains[key] = _Chain(said=_LEGACY)  # counted when read (take), with its prompt
                said = 0
            elif "fingerprint" in record and record.get("from") == 0:  # a chain's first record: anew
                self.begin(key)
                chain = self.chains[key] = _Chain()
            elif chain is None or record.get("from") != chain.said and chain.said != _LEGACY:
                continue  # follows no chain we hold
            elif chain.said == _LEGACY:  # after a whole conversation: take() checks the count
                chain.said = record["from"]
            chain.places.append((start, len(line)))
            chain.said += said
            self.live_bytes += len(line) + 1
        self.peak_bytes = max(self.peak_bytes, position or 0)
        return len(self.chains)

    def take(self, key: RolloutKey, prompt: list[dict]) -> _SavedTurns | None:
        """A rollout's saved turns, the prompt's messages first, to go on from (its records stay live
        until it settles); None when it has none, or they cannot be read back whole."""
        chain = self.chains.get(key)
        if chain is None:
            return None
        try:
            with open(self.path, "rb") as f:
                records = []
                for offset, length in chain.places:
                    f.seek(offset)
                    records.append(parse_line(f.read(length)))
        except OSError:
            return None
        saved = _saved_turns(records, prompt)
        if saved is not None and chain.said == _LEGACY:
            chain.said = len(saved.messages) - len(prompt)
        return saved

    # -- compaction ----------------------------------------------------------------------------------

    def compact(self) -> None:
        """Rewrite the file with its live records only (no file when there are none), now. Nothing is
        rewritten when nothing would be dropped; on a full disk it is left as it is."""
        self.close()
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            if not self.chains:
                if self.path.exists():
                    _remove_file(self.path)
                return
            if size <= self.live_bytes:
                return
            with open(self.path, "rb") as source, replaced_atomically(self.path, self.like) as target:
                moved = _copy_records(source, target, self._places())
            self._remap(moved, size, 0)
        except OSError:
            return

    async def finish(self) -> None:
        """At the run's end: wait for a compaction under way, then compact what the run left."""
        if self._compacting is not None:
            with contextlib.suppress(Exception):
                await self._compacting
        self.compact()

    async def _compact_while_running(self) -> None:
        """Copy the live records to a new file on a thread, while answers go on being appended to this
        one; then, in one step of the event loop, copy what was appended meanwhile and rename."""
        snapshot, places = self._size, self._places()
        real = Path(os.path.realpath(self.path))
        temporary = _temporary_beside(real)
        try:
            _open_private(temporary).close()  # the copy is readable by its owner only until it is whole
            moved, copied = await asyncio.to_thread(_copy_to_new_file, real, temporary, places)
            with open(real, "rb") as source, open(temporary, "ab") as target:
                source.seek(snapshot)
                tail = source.read(self._size - snapshot)
                target.write(tail)
                target.flush()
                os.fchmod(target.fileno(), _file_mode_for(real))
                os.fsync(target.fileno())
            os.replace(temporary, real)
        except (OSError, asyncio.CancelledError):
            with contextlib.suppress(OSError):
                temporary.unlink()
            self._compacting = None
            return  # the old file is whole; a full disk stops the run at its next write, as ever
        self.close()
        self._remap(moved, snapshot, copied)
        self.compactions += 1
        self._compacting = None

    def _places(self) -> list[tuple[int, int]]:
        return sorted(place for chain in self.chains.values() for place in chain.places)

    def _remap(self, moved: dict[int, int], snapshot: int, copied: int) -> None:
        """Every live record's place in the new file: copied ones where the copy put them, ones appended
        after the snapshot after the copy, in their order."""
        for chain in self.chains.values():
            chain.places = [(moved[offset] if offset < snapshot else copied + offset - snapshot, length)
                            for offset, length in chain.places]


def _copy_records(source: Any, target: Any, places: list[tuple[int, int]]) -> dict[int, int]:
    """Copy these records (sorted by offset), each with its line end; where each old offset went."""
    moved, position = {}, 0
    for offset, length in places:
        source.seek(offset)
        target.write(source.read(length) + b"\n")
        moved[offset], position = position, position + length + 1
    return moved


def _copy_to_new_file(real: Path, temporary: Path, places: list[tuple[int, int]]) -> tuple[dict[int, int],
                                                                                           int]:
    """On a thread: the live records copied to the temporary file, flushed to disk; (where each went,
    size)."""
    with open(real, "rb") as source, open(temporary, "wb") as target:
        moved = _copy_records(source, target, places)
        target.flush()
        os.fsync(target.fileno())
        return moved, target.tell()


_LEGACY = -1  # a record of the whole conversation, prompt included, as releases before issue 26 wrote them


def _saved_said(record: dict, thorough: bool = True) -> int | None:
    """How many messages a turns record holds, if its shape is ours (`from` and messages; LEGACY for a
    whole conversation without `from`); else None. `thorough`: each message checked too."""
    messages, start = record.get("messages"), record.get("from", _LEGACY)
    if not (type(messages) is list and messages and type(start) is int and start >= _LEGACY
            and (not thorough or all(isinstance(m, dict) for m in messages))):
        return None
    if start == _LEGACY:
        return _LEGACY if isinstance(record.get("fingerprint"), str) and "from" not in record else None
    return len(messages)


def _said_as_we_save_it(message: dict) -> bool:
    """A saved message is what a teacher's checked answer (_parse_completion) or a tool result is."""
    if message.get("role") == "tool":
        return isinstance(message.get("content"), str) and isinstance(message.get("tool_call_id"),
                                                                      (str, type(None)))
    if message.get("role") != "assistant" or not isinstance(message.get("content"), (str, type(None))):
        return False
    try:
        _assistant_message(message)
    except MalformedAnswer:
        return False
    return True


def _saved_turns(records: list[Any], prompt: list[dict]) -> _SavedTurns | None:
    """A chain's turns, if every field is what this tool writes (the file may have been edited)."""
    if not records or not all(isinstance(r, dict) for r in records):
        return None
    last, messages = records[-1], [dict(m) for m in prompt]
    for i, record in enumerate(records):
        said = _saved_said(record)
        if said == _LEGACY and i == 0:
            messages = list(record["messages"])  # the whole conversation, the prompt's messages included
        elif said is None or said == _LEGACY or record["from"] != len(messages) - len(prompt):
            return None
        else:
            messages += record["messages"]
    usage, turns, fingerprint = last.get("usage"), last.get("turns"), records[0].get("fingerprint")
    began = records[0].get("prompt") if isinstance(records[0].get("prompt"), str) else None
    # the whole conversation: the prompt's messages are there to compare
    if _saved_said(records[0]) == _LEGACY:
        began = content_hash(messages[:len(prompt)])
    settings = records[0].get("settings")
    if settings is not None and not (isinstance(settings,
                                                dict) and all(isinstance(v, str) for v in settings.values())):
        return None
    if not (isinstance(usage, dict) and isinstance(turns, int) and turns > 0
            and isinstance(fingerprint, str)):
        return None
    if not (_is_final_answer(messages[-1]) or messages[-1].get("role") == "tool"
            or _calls_pending(messages[-1])):
        return None  # not a point a rollout can go on from
    if not all(_said_as_we_save_it(m) for m in messages[len(prompt):]):
        return None  # edited: a message the line could not be built from ("tool_calls": 5)
    carried = Usage()
    for name in _USAGE_FIELDS:
        value = usage.get(name, 0)
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or (value < 0 and name != "cache_savings")):  # savings are negative when writes cost more
            return None
        setattr(carried, name, type(getattr(carried, name))(value))
    finish_reason, model, provider = last.get("finish_reason"), last.get("model"), last.get("provider")
    return _SavedTurns(messages, carried, turns, finish_reason if isinstance(finish_reason, str) else None,
                       fingerprint, model if isinstance(model, str) else None,
                       provider if isinstance(provider, str) else None, began, settings)


class RunsFile(LineFile):
    """<output>.runs.jsonl: one record a run, appended as it starts: when, by which generator, on which
    prompts file, with the settings that shape the data (teacher, sampling, tools, the gate). The dataset card
    is made from it and the data files alone, so it is right after any number of resumes."""

    def record_start(self, record: dict) -> None:
        try:
            self.append(record)
        finally:
            self.close()

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [record for _, record in LineReader(self.path).records() if isinstance(record, dict)]


class FailedFile(LineFile):
    """<output>.failed.jsonl: the rollouts that did not finish, one line each, with the reason.

    Appended to as failures happen (so a crash keeps them), and compacted at the start and end of a
    run: lines of rollouts now in the output are dropped and only the latest line per rollout kept.
    """

    def record(self, outcome: Outcome, fmt: LineFormat) -> None:
        try:
            self.append(_failed_entry(outcome, fmt))
        except OutputError:
            raise
        except Exception:  # cannot happen with checked answers and tool results; never lose the entry
            self.append(_failed_entry(outcome, fmt, conversation=False))

    def compact(self, done: set[int]) -> int:
        """Rewrite the file without rollouts now done; return how many rollouts it still lists.
        On a full disk the file is left as it is (it is a log; the next run compacts it)."""
        self.close()
        if not self.path.exists():
            return 0
        latest: dict[int, bytes] = {}
        for line, entry in LineReader(self.path).records():
            key = RolloutKey.rollout_of_line(entry)
            if key is None:
                continue  # a torn line from a crash: its rollout is simply not done
            if key not in done:
                latest.pop(key, None)
                latest[key] = line + b"\n"
        try:
            if not latest:
                _remove_file(self.path)
                return 0
            with replaced_atomically(self.path) as f:
                f.writelines(latest.values())
        except OSError:
            pass
        return len(latest)


# ==================================================================================================
# Exports
# ==================================================================================================
# The same dataset in other trainers' formats (hf, openai).
# train.jsonl stays the source of truth (rnow's format: tools by name, arguments as JSON strings; it is
# what resume reads). --export writes a converted copy beside it, rebuilt whole from it after each run
# (or alone with --no-run), one line at a time, so a million lines take seconds and little memory.
#   hf:     TRL's SFTTrainer, transformers chat templates, axolotl: `tools` as JSON schemas, tool call
#           arguments as objects, metadata as one JSON string (so any `datasets` version loads it).
#   openai: OpenAI's fine-tuning chat format: `messages` and `tools` only, arguments as JSON strings,
#           no keys its validator does not know (reasoning, tool names on tool messages, metadata).

_EXPORT_FORMATS = ("hf", "openai")
_OPENAI_MESSAGE_KEYS = {"system": ("role", "content", "name"), "user": ("role", "content", "name"),
                       "assistant": ("role", "content", "name", "tool_calls", "weight"),
                       "tool": ("role", "content", "tool_call_id")}


class _NotExportable(ValueError):
    """A line the format cannot hold (e.g. tool call arguments that are not a JSON object): left out."""


def _export_formats(text: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    unknown = [f for f in formats if f not in _EXPORT_FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(unknown) or text!r}; choose from "
                                         f"{', '.join(_EXPORT_FORMATS)} (comma-separated for several)")
    return formats


def _hf_record(record: dict, schemas: dict[str, dict]) -> dict:
    messages = []
    ids = _NineCharacterIds()
    for message in record["messages"]:
        if message.get("tool_calls"):
            message = {**message, "tool_calls": [
                {**call, "id": ids.of(call.get("id")),
                 "function": {"name": call["function"]["name"],
                              "arguments": _arguments_object(call["function"].get("arguments"))}}
                for call in message["tool_calls"]]}
        if message.get("role") == "tool" and "tool_call_id" in message:
            message = {**message, "tool_call_id": ids.of(message["tool_call_id"])}
        messages.append(message)
    exported = {"messages": messages, **_tool_schemas(record, schemas)}
    exported["metadata"] = json.dumps(record.get("metadata", {}), ensure_ascii=False)
    return exported


class _NineCharacterIds:
    """Tool-call ids as 9 letters and digits, the only ids Mistral's chat templates take ("Tool call IDs
    should be alphanumeric strings with length 9!"); other templates take any. Derived from the original id
    (the same line always exports the same), unique within the conversation, and a tool result gets the id
    its call got."""

    ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

    def __init__(self) -> None:
        self.given: dict[str, str] = {}

    def of(self, original: Any) -> str:
        key = str(original)
        if key not in self.given:
            salt = 0
            while (candidate := self._derive(f"{key}\x00{salt}")) in self.given.values():
                salt += 1
            self.given[key] = candidate
        return self.given[key]

    def _derive(self, text: str) -> str:
        number = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")
        return "".join(self.ALPHABET[(number // 62 ** i) % 62] for i in range(9))


def _arguments_object(arguments: Any) -> dict:
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        value = None
    # the teacher sent broken arguments; the tool said so, but no trainer takes it
    if not isinstance(value, dict):
        raise _NotExportable("a tool call whose arguments are not a JSON object")
    return value


def _checked_arguments_text(arguments: Any) -> str:
    _arguments_object(arguments)
    return _arguments_text(arguments)


def _openai_record(record: dict, schemas: dict[str, dict]) -> dict:
    """OpenAI's format has no metadata: a line cut short (--keep-incomplete) is marked the one way it can be,
    its last answer at weight 0 (not trained on), so a cut answer is never learnt as a whole one."""
    messages = []
    for message in record["messages"]:
        kept = {key: message[key] for key in _OPENAI_MESSAGE_KEYS.get(message["role"], ()) if key in message}
        if kept.get("tool_calls"):
            kept["tool_calls"] = [{"id": call["id"], "type": "function", "function": {
                "name": call["function"]["name"],
                "arguments": _checked_arguments_text(call["function"]["arguments"])}}
                for call in kept["tool_calls"]]
            if kept.get("content") == "":
                del kept["content"]  # a turn that only calls tools: OpenAI's examples leave content out
        messages.append(kept)
    if _is_incomplete(record):
        last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
        if last is not None:
            last["weight"] = 0
    return {"messages": messages, **_tool_schemas(record, schemas)}


def _is_incomplete(record: dict) -> bool:
    metadata = record.get("metadata")
    return isinstance(metadata, dict) and "incomplete" in metadata


def _tool_schemas(record: dict, schemas: dict[str, dict]) -> dict:
    """{"tools": the schemas of the tools the line names}, or nothing for a line without tools."""
    names = _line_tool_names(record)
    return {"tools": [schemas[name] for name in names if name in schemas]} if names else {}


def _line_tool_names(record: dict) -> list[str]:
    """The names a line's `tools` gives (none when it has no `tools`, or null); _NotExportable when it is not
    a list of names (an edited or foreign line)."""
    names = record.get("tools")
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise _NotExportable("`tools` is not a list of tool names")
    return names


_EXPORTERS: dict[str, Callable[[dict, dict[str, dict]], dict]] = {"hf": _hf_record, "openai": _openai_record}


@dataclass
class _ExportResult:
    path: Path
    written: int = 0
    left_out: collections.Counter = field(default_factory=collections.Counter)  # reason -> lines
    # reason -> "file:line" of the first such line
    first_left_out: dict[str, str] = field(default_factory=dict)
    unknown_tools: set[str] = field(default_factory=set)
    incomplete: int = 0  # lines cut short (--keep-incomplete) that were written


def _export_schemas(toolbox: ToolBox | None, saved: Path | None = None) -> dict[str, dict]:
    """Every tool's schema by name: tools.py's, and the MCP tools' the run kept in `saved` (their servers need
    not be running for an export)."""
    schemas = _load_mcp_schemas(saved) if saved is not None else {}
    schemas.update({tool.name: tool.api_schema() for tool in toolbox.tools.values()} if toolbox else {})
    return schemas


def _export_output(files: OutputPaths, fmt: str, schemas: dict[str, dict], scrub: Callable[[Any], Any]
                  ) -> _ExportResult:
    """Rebuild <stem>.<fmt>.jsonl from the output, streaming; replaced whole only when complete. What the
    teacher and the tools wrote goes through the one scrub (Secret.scrub) as it is written: what the format
    decodes (hf: tool-call arguments as objects) may hold a secret the line held escaped, and a line of
    another release or tool was never scrubbed. The prompt's messages and the metadata are the user's data:
    never touched."""
    output = files.output
    result = _ExportResult(files.export(fmt))
    convert = _EXPORTERS[fmt]
    if not output.exists():
        return result
    try:
        with replaced_atomically(result.path, output) as target:
            for line_no, (_, record) in enumerate(LineReader(output).records(), 1):
                try:
                    if record is None:
                        raise ValueError("not a JSON object")
                    exported = _answers_scrubbed(convert(record, schemas), scrub)
                    names = _line_tool_names(record)
                except _NotExportable as e:
                    result.left_out[str(e)] += 1
                    result.first_left_out.setdefault(str(e), f"{output}:{line_no}")
                    continue
                except (ValueError, KeyError, TypeError, AttributeError):
                    result.left_out["not a line of ours (torn or edited)"] += 1
                    result.first_left_out.setdefault("not a line of ours (torn or edited)",
                                                     f"{output}:{line_no}")
                    continue
                result.unknown_tools.update(name for name in names if name not in schemas)
                target.write(orjson.dumps(exported) + b"\n")
                result.written += 1
                result.incomplete += _is_incomplete(record)
    except OSError as e:
        raise OutputError(result.path, e) from None
    return result


def _answers_scrubbed(exported: dict, scrub: Callable[[Any], Any]) -> dict:
    """An exported line with its messages from the first answer on through the scrub (a copy only if it
    cut)."""
    messages = exported["messages"]
    first = next((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
                 len(messages))
    said = messages[first:]
    scrubbed = scrub(said)
    return exported if scrubbed is said else {**exported, "messages": messages[:first] + scrubbed}


def _report_export(result: _ExportResult) -> str:
    text = f"Exported {_plural(result.written, 'line')} to {result.path}"
    if result.incomplete:
        text += (f" ({result.incomplete} cut short, kept with --keep-incomplete: " + (
            "marked in their metadata)" if result.path.name.endswith(".hf.jsonl") else
            "their last answer at weight 0, since this format has no metadata to mark them)"))
    for reason, count in result.left_out.items():
        text += f"; {_plural(count, 'line')} left out ({reason}; the first: {result.first_left_out[reason]})"
    if result.unknown_tools:
        text += ("; tools not in the tools file, left out of `tools`: "
                 f"{', '.join(sorted(result.unknown_tools))} (pass the --tools file the run used)")
    return text + "."


# ==================================================================================================
# The dataset card
# ==================================================================================================
# The card beside the exports (<stem>.hf.README.md), made from the files alone; values from outside quoted.


@dataclass
class _CardFigures:
    """What the card says of the data, counted from the files as they are. A value that is not what the line
    format says (an edited or foreign file) is counted as far as it can be, and named (`odd`)."""

    lines: int = 0
    rejected: int = 0
    failed: int = 0
    turns: int = 0
    tool_calls: int = 0
    scored: int = 0
    incomplete: int = 0  # lines cut short, kept with --keep-incomplete (metadata.incomplete)
    cost: float = 0.0  # of the lines in the dataset, as the teacher reported it
    answers: int = 0  # answers the lines' usage counts
    uncosted: int = 0  # of those, answers whose cost the teacher did not report: unknown, not $0
    without_cost: int = 0  # lines that carry no cost at all (no usage, or none usable): unknown, not $0
    cost_elsewhere: float = 0.0  # of rejected lines and failed rollouts: paid for, not in the dataset
    uncosted_elsewhere: int = 0
    without_cost_elsewhere: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    models: collections.Counter = field(default_factory=collections.Counter)  # that answered, by line
    teachers: collections.Counter = field(default_factory=collections.Counter)  # asked for (--model), by line
    providers: collections.Counter = field(default_factory=collections.Counter)
    tools_used: collections.Counter = field(default_factory=collections.Counter)
    systems: collections.Counter = field(default_factory=collections.Counter)  # system prompts, by line
    odd: list[str] = field(default_factory=list)  # "file:line: what is wrong", the first few
    odd_lines: int = 0

    def count_line(self, record: dict, where: str) -> None:
        problems: list[str] = []
        metadata = _field_of_kind(record, "metadata", dict, problems)
        self.lines += 1
        model = metadata.get("model") or metadata.get("teacher") or "unknown"
        named = model if isinstance(model, str) else _note(problems, "metadata.model is not a text", "?")
        self.models[named] += 1
        self.teachers[metadata["teacher"] if isinstance(metadata.get("teacher"), str) else None] += 1
        if metadata.get("provider"):
            self.providers[str(metadata["provider"])] += 1
        turns = metadata.get("turns", 0)
        self.turns += turns if type(turns) is int and 0 <= turns <= 2**53 else \
            _note(problems, "metadata.turns is not a count of turns", 0)
        self.scored += isinstance(metadata.get("reward"), (int, float))
        self.incomplete += "incomplete" in metadata
        self._count_usage(_field_of_kind(metadata, "usage", dict, problems), problems)
        for i, message in enumerate(_field_of_kind(record, "messages", list, problems)):
            if not isinstance(message, dict):
                problems.append(f"messages[{i}] is not an object")
                continue
            if message.get("role") == "system" and isinstance(message.get("content"), str):
                self.systems[message["content"]] += 1
            calls = message.get("tool_calls") or []
            if not isinstance(calls, list):
                problems.append(f"messages[{i}].tool_calls is {_plain_value(calls)}, not a list: counted as "
                                "no call")
                continue
            for call in calls:
                self.tool_calls += 1
                function = call.get("function") if isinstance(call, dict) else None
                name = function.get("name") if isinstance(function, dict) else None
                named = name if isinstance(name, str) else _note(
                    problems, f"messages[{i}] has a tool call without a function name", "?")
                self.tools_used[named] += 1
        if problems:
            self.odd_lines += 1
            if len(self.odd) < 5:
                self.odd.append(f"{where}: {'; '.join(problems[:3])}")

    def _count_usage(self, usage: dict, problems: list[str]) -> None:
        if "cost" in usage and not _has_cost(usage):
            problems.append("metadata.usage.cost is not a usable number: counted as not reported")
        self.cost += _amount(usage.get("cost"))
        self.answers += int(_amount(usage.get("requests")))
        self.uncosted += int(_amount(usage.get("uncosted")))
        self.without_cost += not _has_cost(usage)
        self.prompt_tokens += int(_amount(usage.get("prompt_tokens")))
        self.completion_tokens += int(_amount(usage.get("completion_tokens")))

    def count_elsewhere(self, record: dict | None, rejected: bool) -> None:
        if not isinstance(record, dict):
            return
        fields = record.get("metadata") if rejected and isinstance(record.get("metadata"), dict) else record
        usage = fields.get("usage") if isinstance(fields.get("usage"), dict) else {}
        self.cost_elsewhere += _amount(usage.get("cost"))
        self.uncosted_elsewhere += int(_amount(usage.get("uncosted")))
        self.without_cost_elsewhere += not _has_cost(usage)
        self.rejected += rejected
        self.failed += not rejected


def _field_of_kind(record: dict, name: str, kind: type, problems: list[str]) -> Any:
    """record[name] when it is of `kind`; else an empty one, the problem noted (a missing one is no
    problem)."""
    value = record.get(name)
    if isinstance(value, kind):
        return value
    if value is not None:
        problems.append(f"{name} is {_plain_value(value)}, not {'an object' if kind is dict else 'a list'}")
    return kind()


def _note(problems: list[str], problem: str, instead: Any) -> Any:
    problems.append(problem)
    return instead


def _plain_value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def _size_category(n: int) -> str:
    """The Hugging Face Hub's size_categories value for n rows."""
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if n < bound:
            return name
    return "10M<n<100M"


def _fenced(text: str) -> str:
    """A code block that no text can close early (its fence is longer than any run of backticks in it)."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}\n{text}\n{fence}"


def _quoted(value: Any) -> str:
    """A value from a file (a model name, a provider, --extra-body, a date), quoted as data for one line of
    the card, a table cell too: a code span, in which nothing is markup (no link, image, HTML or emphasis: the
    Hub renders HTML), on one line, pipes escaped for tables, nothing past 200 characters."""
    if value is None or isinstance(value, (bool, int, float)):  # a JSON number or constant holds no markup
        return json.dumps(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    if not text:
        return "(empty)"
    text = text if len(text) <= 200 else text[:199] + "…"
    ticks = "`" * (1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    pad = " " if text[0] == "`" or text[-1] == "`" else ""
    return f"{ticks}{pad}{text}{pad}{ticks}".replace("|", "\\|")


def _escaped(text: str) -> str:
    """Text as Markdown shows it as it is: every ASCII punctuation mark backslash-escaped (a file name as a
    title)."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", " ".join(text.split()))


def _spent(cost: float, without_cost: int, lines: int, uncosted: int) -> str:
    """What some lines cost, as far as they say, with what that leaves out: never $0 for lines that carry no
    cost, nor an amount past any real one (an edited 1e308)."""
    if not math.isfinite(cost) or cost > _MOST_REAL_COST:
        return ("an unknown amount (their usage.cost values add up past any real cost: edited or foreign "
                "lines)")
    if without_cost and without_cost == lines:
        return "an unknown amount (none of them carries a cost the teacher reported)"
    left_out = [f"{_plural(without_cost, 'line')} that {'carries' if without_cost == 1 else 'carry'} no cost"
                if without_cost else "",
                f"{_plural(uncosted, 'answer')} whose cost the teacher did not report" if uncosted else ""]
    left_out = [text for text in left_out if text]
    return f"${cost:.4f}" + (f" (not counting {' and '.join(left_out)}: unknown)" if left_out else "")


# USD: more than any run of this tool could spend; a sum past it comes from edited lines
_MOST_REAL_COST = 1e12


class _TeacherLicences:
    """What the runs file says of each teacher model asked: what OpenRouter's models list showed when a run
    that asked it began, and whether that run sent --distillable. A line is known by the model it asked
    (metadata.teacher); a claim is made of a model only as far as every run that asked it supports it."""

    def __init__(self, runs: list[dict]):
        self.runs: dict[str | None, list[tuple[Any, bool]]] = collections.defaultdict(list)
        for run in runs:
            teacher = run.get("teacher") if isinstance(run.get("teacher"), dict) else {}
            if isinstance(teacher.get("model"), str):
                self.runs[teacher["model"]].append((teacher.get("licence"),
                                                    teacher.get("distillable") is True))

    def verdict(self, model: str | None) -> bool | None:
        """True or False when every run that asked the model found the same mark; None: not known."""
        marks = {licence if isinstance(licence, bool) else None for licence, _ in self.runs.get(model, ())}
        return marks.pop() if len(marks) == 1 else None

    def said(self, model: str | None) -> str:
        asked = self.runs.get(model, [])
        verdict = self.verdict(model)
        text = ("the model is on OpenRouter's list of models whose authors allow training on their outputs "
                "(`is_trainable_text`; best effort: check the licence for your use)." if verdict is True else
                "the model is **not** on OpenRouter's list of models whose authors allow training on their "
                "outputs: check its terms before training on this data." if verdict is False else
                "not known (no run that asked it is on record)." if not asked else
                "not known (the models list could not tell, was not asked, or said different things in "
                "different runs).")
        routed = sum(distillable for _, distillable in asked)
        if routed:
            text += (" Its requests were sent with `provider.enforce_distillable_text` (`--distillable`: "
                     "routed only to such models)"
                     + (" in every run that asked it." if routed == len(asked) else
                        f" in {routed} of the {len(asked)} runs that asked it, not in the others."))
        return text


def _hygiene_card(files: OutputPaths, runs: list[dict], quotes: _AnswerQuotes | None,
                  listed: _DroppedList) -> list[str]:
    """What --dedup and --decontaminate dropped, how, against which files: from the dropped-prompts file
    (shards' merged too), else the runs file; and, checked at this export, the answers quoting a benchmark
    item."""
    out = ["", "## Prompts removed before sending", ""]
    drops = collections.Counter(listed.dropped.values())
    headers = listed.headers
    if headers:
        header, merged = headers[-1], f" ({len(headers)} shards' lists merged)" if len(headers) > 1 else ""
        dedup, bench = (part if isinstance(part, dict) else None for part in (header.get("dedup"),
                                                                              header.get("decontaminate")))
        prompts = max((h.get("prompts") for h in headers if type(h.get("prompts")) is int), default=None)
        out += [f"Of the {_quoted(prompts)} prompts of {_quoted(header.get('prompts_file'))}, these were "
                f"dropped before anything was sent, each listed in {_quoted(files.dropped.name)}{merged} "
                "with why:", ""]
        if dedup:
            q = collections.defaultdict(lambda: "null", {key: _quoted(value) for key, value in dedup.items()})
            out += [f"- `--dedup`: {drops['duplicate']} repeating another prompt word for word (case, "
                    f"whitespace and punctuation aside), {drops['near duplicate']} nearly: MinHash over the "
                    f"sets of words of prompts of {q['near_from_words']} words or more, Jaccard at least "
                    f"{q['threshold']}, {q['num_perm']} permutations, LSH of {q['bands']} bands x "
                    f"{q['rows']} rows, seed {q['seed']}, {q['library']} (algorithm {q['algorithm']}). The "
                    "first of each group stays, and so does a prompt paid for already."]
        if bench:
            q = {key: _quoted(bench.get(key)) for key in ("ngram", "whole_items_from", "boilerplate_items",
                                                          "field", "boilerplate_ngrams_masked")}
            out += [f"- `--decontaminate`: {drops['benchmark']} holding a benchmark item: {q['ngram']} words "
                    f"in a row in common with one (items of {q['whole_items_from']} words or more but fewer "
                    f"than {q['ngram']} matched whole, shorter ones only as the whole prompt; an n-gram of "
                    f"more than {q['boilerplate_items']} items is boilerplate: "
                    f"{q['boilerplate_ngrams_masked']} left out, each item still matched by its own words), "
                    f"the items' text in field {q['field']}, against:", "",
                    "| benchmark file | sha256 | items |", "|---|---|---|"]
            out += list(dict.fromkeys(
                f"| {_quoted(f.get('name'))} | {_quoted(f.get('sha256'))} | {_quoted(f.get('items'))} |"
                for h in headers if isinstance(h.get("decontaminate"), dict)
                for f in h["decontaminate"].get("files") or () if isinstance(f, dict)))
        out += ["", f"{_plural(len(listed.kept), 'prompt')} paid for already holding a benchmark item: kept, "
                "listed in the same file."] if listed.kept else []
    else:
        out += _hygiene_of_runs(files, runs)
    out += ["", "Answers quoting a benchmark item: " + (
        "not checked (`--export` with `--decontaminate FILE` checks them)." if quotes is None else
        f"not checked at this export: {_quoted(quotes.skipped)}." if quotes.skipped is not None else
        f"{len(quotes.flagged)} of {_plural(quotes.lines, 'line')}, checked at this export with the same "
        "n-grams against "
        + ", ".join(_quoted(f["name"]) + ("" if not quotes.changed_since(headers) else " (sha256 "
                                                                                       f"{_quoted(f['sha256'])})")
                    for f in quotes.benchmarks["files"])
        + f"; listed in {_quoted(files.quoting.name)} (flagged, not removed).")]
    return out


def _hygiene_of_runs(files: OutputPaths, runs: list[dict]) -> list[str]:
    """No dropped-prompts file: what the runs file recorded of the runs that used --dedup or --decontaminate,
    or ran prompts an earlier one had dropped."""
    told = [(run["hygiene"], _quoted(run.get("started"))) for run in runs
            if isinstance(run.get("hygiene"), dict)]
    if not told:
        return ["None: no run on record (" + _quoted(files.runs.name) + ") used `--dedup` or "
                                                                        "`--decontaminate`."
                if runs else "Not recorded: no dropped-prompts file, and no runs file (made before runs were "
                             "recorded)."]
    return [f"No list of dropped prompts is here ({_quoted(files.dropped.name)}), but the runs file ("
            f"{_quoted(files.runs.name)}) records:", ""] + [
        f"- the run of {when}, with neither flag, ran {_quoted(h['ran_listed'])} prompts an earlier run had "
        "dropped (they are in the data now)" if "ran_listed" in h else
        f"- the run of {when}" + (f" (shard {_quoted(h['shard'])})" if h.get("shard") else "") + " used "
        + " and ".join(flag for flag in ("`--dedup`",
                                         "`--decontaminate`") if h.get(flag.strip("`-"))) + " and dropped "
        + (", ".join(f"{_quoted(n)} as {_quoted(why)}" for why, n in h["dropped"].items())
           if isinstance(h.get("dropped"), dict) and h["dropped"] else "none")
        + f" of {_quoted(h.get('prompts'))} prompts of {_quoted(h.get('prompts_file'))}"
                                                            for h, when in told] + [
        "", "Where shards' outputs were merged into this one, merge their dropped-prompts files too "
        "(`cat train.shard-*-of-N.dropped.jsonl > train.dropped.jsonl`) for the list and its settings."]


def _dataset_card(files: OutputPaths, export: Path, schemas: dict[str, dict], runs: list[dict],
                 quotes: _AnswerQuotes | None = None,
                  listed: _DroppedList | None = None) -> tuple[str, list[str]]:
    """The dataset card of the hf export (the Hub's conventions: a YAML header naming the data file, its task,
    size and licence, then what the data is): what was asked of which teacher, with which tools and settings,
    what it cost and when. Made from the run's files alone: the output, the rejected and failed files, and the
    runs file; every value from them is quoted as data, never markup, and says only what the files show.
    Also the lines whose values are not what the line format says, for the terminal."""
    import yaml

    figures = _CardFigures()
    for line_no, (_, record) in enumerate(LineReader(files.output).records() if files.output.is_file()
                                          else (), 1):
        if isinstance(record, dict):
            figures.count_line(record, f"{files.output}:{line_no}")
    for path, rejected in ((files.rejected, True), (files.failed, False)):
        for _, record in LineReader(path).records() if path.is_file() else ():
            figures.count_elsewhere(record, rejected)
    # each prompts file the runs read, in order: a resume may read another
    prompts_files = list(dict.fromkeys(
        tuple(_quoted(part.get(name)) for name in ("file", "sha256", "rollouts", "samples"))
        for part in (run.get("prompts") for run in runs) if isinstance(part, dict)))
    licences = _TeacherLicences(runs)
    # No licence name is inferred: the teacher's terms decide. "other" where OpenRouter's list showed the
    # model of every line as one whose author allows training on its outputs (terms of its own), "unknown"
    # otherwise; no language, which nothing here knows.
    allowed = figures.lines > 0 and all(licences.verdict(model) is True for model in figures.teachers)
    header = {"configs": [{"config_name": "default",
                           "data_files": [{"split": "train", "path": export.name}]}],
              "license": "other" if allowed else "unknown",
              "task_categories": ["text-generation"], "size_categories": [_size_category(figures.lines)],
              "tags": ["synthetic", "distillation"] + (["tool-use"] if figures.tool_calls else [])}
    out = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
           f"# {_escaped(export.stem)}", "",
           f"{_plural(figures.lines, 'conversation')} of a teacher model solving prompts"
           + (f" with tools ({figures.tool_calls} tool calls in {figures.turns} turns)" if figures.tool_calls
              else "")
           + ", made by `generate_distillation_data.py` for supervised fine-tuning of a student. Chat "
           f"format in `{_escaped(export.name)}` (`messages`, and `tools` with their JSON schemas), as TRL's "
           "`SFTTrainer` reads it.", ""]
    if figures.incomplete:
        out += [f"**{_plural(figures.incomplete, 'conversation')} "
                f"{'was' if figures.incomplete == 1 else 'were'} cut short** (kept with `--keep-incomplete`: "
                "cut by `--max-turns`, the answer-length limit or a content filter), each marked in its "
                "`metadata.incomplete`; in an OpenAI export (`--export openai`, which has no metadata) "
                "their last answer has `weight` 0, so it is not trained on.", ""]
    if figures.odd_lines:
        out += [f"{_plural(figures.odd_lines, 'line')} of `{_escaped(files.output.name)}` "
                f"{'holds' if figures.odd_lines == 1 else 'hold'} values that are not what this tool writes "
                "(edited, or from another tool); they are counted here as far as they can be. The "
                "first: " + "; ".join(_quoted(text) for text in figures.odd[:3]) + ".", ""]
    out += ["## What was asked", ""]
    if prompts_files:
        out += [f"- Prompts file{'s, one run after another' if len(prompts_files) > 1 else ''}: " + "; ".join(
            f"{name} (sha256 {sha}), {rollouts} rollouts asked for ({samples} a prompt)"
            for name, sha, rollouts, samples in prompts_files)]
    else:
        out += ["- Prompts file: not recorded (these files were made before runs were recorded)"]
    for text, count in figures.systems.most_common(3):
        out += [f"- System prompt, in {_plural(count, 'line')}:", "", _fenced(text[:2000]), ""]
    out += ["", "## Of whom", ""]
    out += ["| model that answered | lines |", "|---|---|"] + \
        [f"| {_quoted(model)} | {count} |" for model, count in figures.models.most_common(20)]
    if figures.providers:
        out += ["", "| provider that served it (the last answer of a line) | lines |", "|---|---|"] + \
            [f"| {_quoted(name)} | {count} |" for name, count in figures.providers.most_common(20)]
    out += ["", "## Licence", "",
            "The teacher's terms (its author's, and its provider's) decide what may be done with these "
            "outputs; this card names no licence of its own (`license: " + header["license"] + "`).", "",
            "Teacher's licence, for each model asked (`--model`), as OpenRouter's models list showed it when "
            "the runs that asked it began:", ""]
    out += [f"- {_quoted(model or 'not recorded')} ({_plural(count, 'line')}): {licences.said(model)}"
            for model, count in figures.teachers.most_common(20)] + [""]
    out += ["## Tools", ""]
    used = sorted(set(figures.tools_used) | set(schemas))
    if used:
        out += ["| tool | calls |",
                "|---|---|"] + [f"| {_quoted(name)} | {figures.tools_used[name]} |" for name in used]
        if schemas:
            out += ["", "Their schemas, as the teacher was given them:", "",
                    _fenced(json.dumps([schemas[name] for name in sorted(schemas)], indent=1,
                                       ensure_ascii=False))]
    else:
        out += ["None: plain completions."]
    out += ["", "## Settings that shape the data", ""]
    if runs:
        out += ["| setting | value |", "|---|---|"]
        for _, name, how in recorded_fields():  # the settings' own labels, read from each run's record
            if how.label is None:
                continue
            values = []
            for run in runs:
                part = run.get(how.part) if isinstance(run.get(how.part), dict) else {}
                value = _quoted(part.get(name))
                if value not in values:
                    values.append(value)
            out += [f"| {how.label} | {' / '.join(values)} |"]
        if len(runs) > 1:
            out += ["", "Values separated by / changed between runs."]
    else:
        out += ["Not recorded (these files were made before runs were recorded)."]
    if figures.scored or figures.rejected:
        tries = figures.lines + figures.rejected
        out += ["", f"Quality gate: {figures.lines} of {tries} finished tries kept "
                f"({figures.lines / tries:.0%}); {figures.rejected} rejected lines are in "
                f"`{_escaped(files.rejected.name)}`." if tries else ""]
    out += _hygiene_card(files, runs, quotes, listed if listed is not None else _DroppedList())
    unknown = (f"; the teacher reported no cost for {figures.uncosted} of their {figures.answers} answers, "
               "whose cost is unknown and not counted" if figures.uncosted else "")
    elsewhere = figures.rejected + figures.failed
    out += ["", "## Cost and when", "",
            f"- The conversations here ({_human_count(figures.prompt_tokens)} prompt and "
            f"{_human_count(figures.completion_tokens)} completion tokens, as the teacher reported "
            f"them{unknown}) cost {_spent(figures.cost, figures.without_cost, figures.lines, 0)}; "
            + (f"besides them, rejected tries and failed rollouts on record ({elsewhere}) cost "
               + _spent(figures.cost_elsewhere, figures.without_cost_elsewhere, elsewhere,
                        figures.uncosted_elsewhere) + "."
               if elsewhere else "no rejected tries or failed rollouts are on record.")]
    if runs:
        started = [_quoted(run.get("started")) for run in runs]
        generators = list(dict.fromkeys(_quoted(run["generator"].get("sha256")) for run in runs
                                        if isinstance(run.get("generator"), dict)))
        out += [f"- Made by {_plural(len(runs), 'run')}, started {started[0]}"
                + (f" to {started[-1]}" if len(runs) > 1 else "")
                + ", by `generate_distillation_data.py` (sha256 "
                  f"{' then '.join(generators) or _quoted(None)})."]
    notes = [f"{text}." for text in figures.odd]
    if figures.odd_lines > len(figures.odd):
        more = figures.odd_lines - len(figures.odd)
        notes.append(f"... and {more} more lines of {files.output} like them.")
    return "\n".join(out) + "\n", notes


# ==================================================================================================
# Progress and the summary
# ==================================================================================================
# The bar on a terminal, a status line in a log; the summary at the end (RunSummary).


class Progress:
    """A tqdm bar on stderr when it is a terminal; a plain status line every 30 s when it is a log."""

    def __init__(self, total: int, finished: int, stats: Stats, limiter: AdaptiveLimiter,
                 batches: Callable[[], str] = lambda: ""):
        self.stats, self.limiter, self.batches = stats, limiter, batches
        self.interactive = sys.stderr.isatty()
        self.total, self.finished = total, finished
        self.started, self.finished_at_start = time.monotonic(), finished
        self.bar = tqdm(total=total, initial=finished, unit="rollout", dynamic_ncols=True, file=sys.stderr,
                        mininterval=0.5, smoothing=0.1, disable=not self.interactive)
        self._last_line = time.monotonic()

    def advance(self) -> None:
        self.finished += 1
        self.bar.update(1)

    def log(self, message: str) -> None:
        if self.interactive:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def status(self) -> str:
        s = self.stats
        tokens = s.usage.prompt_tokens + s.usage.completion_tokens
        cache = f", cached {s.usage.cached_share:.0%}" if s.usage.cached_tokens else ""
        saved = f" (saved ${s.usage.cache_savings:.4f})" if s.usage.cache_savings else ""
        finished = s.written + s.failed + s.rejected
        spend = ""
        if s.billed:
            # billed so far, plus the settled cost per finished rollout for each one still to finish
            projection = s.billed + s.usage.cost / finished * (self.total - self.finished) if finished else 0
            # one precision
            spend = f", ${s.billed:.4f}" + (f" of ~${projection:.4f}" if finished else "") + saved
        gate = ""
        if s.scored:
            gate = f", reward {s.reward_sum / s.scored:.2f}" + (f", rejected {s.rejected}" if s.rejected
                                                                else "")
        pace = f", pace {self.limiter.pace:.3g}/s" if self.limiter.pace is not None else ""  # a metered key
        # --batch: no request limit to show, the batches instead
        sending = self.batches() or f"limit {int(self.limiter.limit)}{pace}, 429s {s.rate_limited}"
        return (f"{sending}, retries {s.retries}, failed {s.failed}{gate}, {_human_count(tokens)} "
                f"tok{cache}{spend}")

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self.interactive:
                self.bar.set_postfix_str(self.status(), refresh=True)
            elif time.monotonic() - self._last_line >= 30:
                self._last_line = time.monotonic()
                self.log(f"progress: {self.finished}/{self.total} done{self.pace()}, {self.status()}")

    def pace(self) -> str:
        """Rollouts a minute this run and the time left at that pace, for a log that has no bar."""
        finished, elapsed = self.finished - self.finished_at_start, time.monotonic() - self.started
        if not finished or elapsed <= 0:
            return ""
        rate = finished / elapsed
        return f" ({rate * 60:.1f}/min, about {_human_duration((self.total - self.finished) / rate)} left)"

    def close(self) -> None:
        if self.interactive:
            self.bar.set_postfix_str(self.status(), refresh=True)
        self.bar.close()


@dataclass
class RunSummary:
    """What the run did, printed once at its end: where every rollout went, what it cost, what to do next.
    The run hands over its counters and notes; this part only words them."""

    stats: Stats
    files: OutputPaths
    gate: GateSettings
    cache: _CachePlan
    total: int  # rollouts the command asks for
    finished_before: int  # in the output or the rejected file when the run began
    rejected_before: int
    pending: int  # still to do after this run
    remaining_failed: int  # entries left in the failed file
    started_over: collections.Counter  # paused rollouts whose saved turns could not go on, by why
    started_over_cost: Usage  # what those turns had cost (in earlier runs; their lines count it)
    kept_from_signed: int  # rollouts whose later turns were not saved (a secret in signed reasoning)
    kept_beyond_attempts: int  # paused tries beyond this run's --attempts, kept for a run with a higher one
    tool_lines: list[str]  # the tools' own counts and warnings
    notes: list[str]  # the teacher client's (a model that was routed elsewhere, ...)
    stop_reason: str | None
    seconds: float
    hygiene: list[str] = field(default_factory=list)  # what --dedup and --decontaminate dropped

    def text(self) -> str:
        s, files = self.stats, self.files
        in_output = self.finished_before - self.rejected_before + s.written
        pending = self.pending
        skipped = [f"{in_output - s.written} already there" if in_output - s.written else "",
                   f"{self.rejected_before} finished as rejected before" if self.rejected_before else ""]
        lines = [f"Done: {_plural(s.written, 'new rollout')} written to {files.output}"
                 + (f" ({', '.join(text for text in skipped if text)}, skipped)" if any(skipped) else ""),
                 f"Total: {in_output}/{self.total} rollouts in {files.output}"
                 + (f", {self.rejected_before + s.exhausted} finished as rejected (in {files.rejected})"
                    if self.rejected_before + s.exhausted else "")] + self.hygiene
        if s.scored:
            lines.append(self._gate())
        if s.failed:
            reasons = ", ".join(f"{reason} x{count}" for reason, count in s.failure_reasons.most_common(5))
            lines.append(f"Failed: {s.failed} ({reasons}); details in {files.failed}")
        if s.unsaved:
            lines.append(f"Not saved: {_plural(s.unsaved, 'finished rollout')} could not be written; "
                         "they run again next time.")
        if s.paused:
            lines.append(f"Paused: {_plural(s.paused, 'rollout')} stopped between turns; their turns so far "
                         f"are saved in {files.paused.name}, and the next run goes on from there (no answer "
                         "is paid twice).")
        if s.given_up:
            named = ", ".join(s.given_up[:5]) + (f" and {len(s.given_up) - 5} more" if len(s.given_up) > 5
                                                 else "")
            lines.append(f"Given up: {_plural(len(s.given_up), 'answer')} still coming when the run stopped "
                         "at once (--stop-timeout, or a second Ctrl-C): "
                         f"{'prompt' if len(s.given_up) == 1 else 'prompts'} {named}. Their rollouts go on "
                         "from their last saved turn next run, and those answers are paid again.")
        if self.started_over:
            why = "; ".join(f"{count} because {reason}" for reason, count in self.started_over.most_common())
            cost = self.started_over_cost
            paid = (f" Their discarded turns had cost ${cost.cost:.4f} ({_plural(cost.requests, 'answer')}, "
                    "paid by earlier runs), counted in their lines' usage." if cost.requests else "")
            lines.append(f"Started over: {_plural(sum(self.started_over.values()), 'paused rollout')} began "
                         "again from their prompt, since their saved turns answered another request than "
                         f"this run's: {why}.{paid}")
        if self.kept_beyond_attempts:
            tries = ("a later try" if self.kept_beyond_attempts == 1
                     else f"{self.kept_beyond_attempts} later tries")
            lines.append(f"Kept: the saved turns of {tries} beyond --attempts {self.gate.attempts} (in "
                         f"{files.paused.name}): not run now, and not lost; a run with a higher --attempts "
                         "goes on from them.")
        lines += self.tool_lines
        if self.kept_from_signed:
            lines.append(f"Not saved: the later turns of {_plural(self.kept_from_signed, 'rollout')}, whose "
                         "teacher wrote a secret the run was handed (the API key or another) into signed "
                         "reasoning (which must go back to it unchanged, and is never stored with the "
                         "secret): if stopped, they resume from their last clean turn or begin again.")
        # a re-run would pay the same turns, and fail again
        cannot = min(pending, s.failure_reasons[_DOES_NOT_FIT])
        if pending > cannot:
            lines.append(f"Not done: {pending}. Re-run the same command to "
                         + ("retry the failed ones and " if self.remaining_failed else "") + "finish"
                         + (f" (all but the {cannot} below)." if cannot else "."))
        if cannot:
            lines.append(f"Cannot finish as they are: {_plural(cannot, 'rollout')} whose conversation does "
                         f"not fit the teacher's context (in {files.failed}); a re-run would pay for the "
                         "same turns and fail the same way. Use a model with a longer context, or shorter "
                         "rollouts (--max-turns, --max-tool-chars, --max-tokens), or take those prompts "
                         "out.")
        lines.append(f"Time: {_human_duration(self.seconds)}; {s.requests} requests, "
                     f"{s.rate_limited} answered 429, {s.retries} retried")
        u = s.usage
        if u.prompt_tokens or u.completion_tokens or u.cost:
            per_sample = f" (${u.cost / s.written:.5f} per sample)" if s.written else ""
            lines.append(f"Tokens: {_human_count(u.prompt_tokens)} prompt ({_human_count(u.cached_tokens)} "
                         f"cached, {u.cached_share:.0%}), {_human_count(u.completion_tokens)} completion "
                         f"({_human_count(u.reasoning_tokens)} reasoning); cost ${u.cost:.4f}{per_sample}, "
                         "failed rollouts included")
        if u.cache_savings:
            effect = (f"saved ${u.cache_savings:.4f}" if u.cache_savings > 0 else
                      f"cache writes cost ${-u.cache_savings:.4f} more than reads saved (too few turns reuse "
                      "them)")
            lines.append(f"Prompt caching ({self.cache.why}): {effect}; without caching this run would "
                         f"have cost ${u.cost + u.cache_savings:.4f}")
        elif u.cached_tokens or self.cache.enabled:
            lines.append(f"Prompt caching: {self.cache.why}; {u.cached_share:.0%} of prompt tokens "
                         "read from cache")
        if s.cost_unknown:
            lines.append(f"Cost: {_plural(s.cost_unknown, 'streamed answer')} ended before its usage came "
                         "(cut or stalled), so what it cost is unknown and not counted above.")
        if s.uncosted:
            lines.append(f"Cost: {s.uncosted} of {s.answers} answers carried no usable cost; the spend shown "
                         "counts the costs that were reported.")
        lines.extend(self.notes)
        if self.stop_reason:
            lines.append(f"Stopped: {self.stop_reason}")
        return "\n".join(lines)

    def _gate(self) -> str:
        s, gate = self.stats, self.gate
        text = f"Rewards: {s.scored} scored, mean reward {s.reward_sum / s.scored:.3f}"
        if gate.min_reward is not None:
            text += (f"; passed --min-reward {gate.min_reward:g}: {s.passed_first}/{s.first_tries} on the "
                     "first try"
                     + (f", {s.written}/{s.written + s.exhausted} overall" if gate.attempts > 1 else "")
                     + f"; {_plural(s.rejected, 'line')} to {self.files.rejected}")
            if s.written:
                text += (f"; {s.scored / s.written:.2f} tries and ${s.usage.cost / s.written:.5f} per "
                         "accepted sample")
        return text


# ==================================================================================================
# Command line
# ==================================================================================================
# The argument parser and parse_config: flags, config.yml and the environment read into one Config.


@dataclass(frozen=True)
class Config:
    """The command line, parsed and checked: one settings object per part, and what main does with them."""

    prompts: PromptSettings
    teacher: TeacherSettings
    requests: RequestSettings
    tools: ToolSettings
    gate: GateSettings
    line: LineFormat
    files: OutputPaths
    hygiene: _HygieneSettings = _HygieneSettings()  # --dedup, --decontaminate
    export: tuple[str, ...] = ()  # formats written beside the output after the run: hf, openai
    report: bool = False  # write <stem>.report.html after the run
    no_run: bool = False  # only make the --export/--report files from the existing files; send nothing
    dry_run: bool = False
    rescore: bool = False  # re-apply rewards.py and --min-reward to the output and rejected files
    # setting -> where it came from (flag, config.yml, default)
    sources: dict[str, str] = field(default_factory=dict)
    project: _RnowProject | None = None  # config.yml, for `rnow run` after the run
    # --shard auto: how the shard was found, what to note for the array
    scheduler: _SchedulerShard | None = None

    def settings_of(self, kind: type) -> Any:
        """The settings object of this kind (RequestSettings: self.requests)."""
        return next(value for value in vars(self).values() if type(value) is kind)


# How a recorded setting that may hold a secret or a folder is kept (_Recorded.view): as messages show it.
_RECORDED_VIEWS: dict[str, Callable[[Any], Any]] = {
    "url": _display_url,  # without its password or token
    # --extra-body: key-like fields as ***; none as null
    "masked": lambda body: _masked_key_like(body) or None,
    "servers": lambda specs: [spec.shown for spec in specs],  # MCP servers
    "name": lambda path: path.name if path is not None else None,  # a file by its name alone
}


def _recorded_settings(cfg: Config) -> dict[str, dict]:
    """The settings marked `recorded`, by the part of a run's record that keeps them (_run_record adds the
    rest)."""
    parts: dict[str, dict] = {part: {} for part in RECORD_PARTS}
    for kind, name, how in recorded_fields():
        value = getattr(cfg.settings_of(kind), name)
        parts[how.part][name] = _RECORDED_VIEWS[how.view](value) if how.view is not None else value
    return parts


def _key_problem(key: str) -> str | None:
    """What makes this API key unusable in an Authorization header, without showing it."""
    for position, char in enumerate(key, 1):
        if char in "\r\n":
            return f"holds a line break (character {position})"
        if char in " \t":
            return f"holds a space or tab (character {position})"
        if not "!" <= char <= "~":
            return f"holds a character that cannot be sent in an HTTP header (character {position})"
    return None


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _poll_seconds(text: str) -> float:
    value = _positive_float(text)
    if not value <= 3600:
        raise argparse.ArgumentTypeError(f"must be at most 3600 (an hour between looks), got {text}")
    return value


def _share(text: str) -> float:
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1, got {text}")
    return value


def _ngram_words(text: str) -> int:
    value = _number(text, int)
    if not 8 <= value <= 50:
        raise argparse.ArgumentTypeError(f"must be between 8 (GPT-3's shortest) and 50 words, got {text}")
    return value


def _temperature(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2, got {text}")
    return value


def _shard_spec(text: str) -> tuple[int, int] | tuple[str, int | None]:
    """I/N; or auto (auto/N), resolved from the scheduler's environment once the arguments are parsed."""
    index, _, count = text.partition("/")
    try:
        n = int(count) if count or index != "auto" else None
        i = index if index == "auto" else int(index)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, or auto, got {text!r}") from None
    if n is not None and (n < 1 or (i != "auto" and not 0 <= i < n)):
        raise argparse.ArgumentTypeError(f"I must be in 0..N-1 and N at least 1, got {text!r}")
    return i, n


def _finite_float_arg(text: str) -> float:
    value = _number(text, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generate_distillation_data.py",
        description="Run a teacher model with tools on every prompt and save the full conversations "
        "as an SFT dataset (chat JSONL, one conversation a line). Re-run the same command to resume.",
        epilog="examples:\n  python generate_distillation_data.py prompts.jsonl --tools tools.py\n  python "
        "generate_distillation_data.py questions.txt --tools none -m openai/gpt-4o -c 50\n  python "
        "generate_distillation_data.py prompts.jsonl --rewards rewards.py --min-reward 1 --attempts 3 "
        "--max-cost 20\n  python generate_distillation_data.py prompts.jsonl --export hf,openai --report "
        "--no-run\n  python generate_distillation_data.py prompts.jsonl --base-url http://localhost:8000/v1 "
        "-m Qwen/Qwen3-8B\n\nexit codes: 0 every prompt is in the output (but those --dedup or "
        "--decontaminate dropped), 1 some failed or were not run (see the .failed.jsonl file; re-run to "
        "retry them), 2 usage or input error, 130 interrupted.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_flags(parser.add_argument)
    _add_teacher_api_flags(parser.add_argument_group("teacher API").add_argument)
    _add_dataset_flags(parser.add_argument_group("dataset").add_argument)
    _add_gate_flags(parser.add_argument_group("quality gate and spend").add_argument)
    _add_hygiene_flags(
        parser.add_argument_group("prompt hygiene (before anything is sent; docs/data.md)").add_argument)
    _add_tool_flags(parser.add_argument_group("tools").add_argument)
    parser.add_argument("--dry-run", action="store_true",
                        help="validate everything, print the first request and the work to do; send nothing")
    return parser


def _add_run_flags(add: Callable[..., argparse.Action]) -> None:
    """The prompts, the output, the tools file, the teacher model and how much of it at once."""
    add("input", type=Path,
        help="prompts file: .txt (one prompt a line) or .jsonl ({\"prompt\": ...} a line)")
    add("-o", "--output", type=Path, default=None,
        help="output JSONL; {shard} in the name becomes I-of-N "
        f"(default: {default(OutputPaths, 'output')})")
    add("-t", "--tools", default=str(default(ToolSettings, "file")),
        help="tools file, or 'none' for plain completions (default: %(default)s)")
    add("-m", "--model", default=default(RequestSettings, "model"),
        help="teacher model (default: %(default)s)")
    add("-s", "--system", default=None, help="system prompt put before every prompt")
    add("-n", "--num", type=_positive_int, default=None, help="use only the first N prompts of the file")
    add("-c", "--concurrency", type=_positive_int, default=default(TeacherSettings, "concurrency"),
        help="most requests in flight; the teacher's own cap and rate are learned from its 429s under it "
        "(default: %(default)s)")
    add("--start-concurrency", type=_positive_int, default=default(TeacherSettings, "start_concurrency"),
        metavar="N",
        help="requests in flight at the start, doubling with each round the teacher takes, up to -c "
        "(slow start; default: %(default)s; set it to -c to start at full speed)")
    add("--max-tokens", type=_positive_int, default=default(RequestSettings, "max_tokens"),
        help="max tokens per teacher response (default: %(default)s)")
    add("--max-turns", type=_positive_int, default=None,
        help=f"max teacher responses per rollout (default: config.yml's rollout.max_turns, else "
        f"{default(RequestSettings, 'max_turns')})")
    add("--temperature", type=_temperature, default=default(RequestSettings, "temperature"),
        help="sampling temperature, 0-2 (default: %(default)s)")
    add("--samples", type=_positive_int, default=default(PromptSettings, "samples"),
        help="independent rollouts per prompt (default: %(default)s)")


def _add_teacher_api_flags(add: Callable[..., argparse.Action]) -> None:
    """The teacher's API: where requests go, how long they may take, how often they are retried; reasoning,
    caching, --batch."""
    add("--base-url", default=None,
        help=f"OpenAI-compatible API base; env OPENROUTER_BASE_URL (default: "
        f"{default(TeacherSettings, 'base_url')})")
    add("--timeout", type=_positive_float, default=default(TeacherSettings, "timeout"),
        help="seconds one request may take, first byte to last, before it is retried; generous, "
        "since a cut answer is paid for twice (default: %(default)g)")
    add("--retries", type=_non_negative_int, default=default(TeacherSettings, "retries"),
        help="retries of one failed request before its prompt is marked failed (default: %(default)s)")
    add("--no-stream", action="store_true",
        help="ask for whole answers instead of streamed ones (streaming keeps proxies in front of "
        "slow teachers from closing silent connections; a server that refuses it is asked without it)")
    add("--stall-timeout", type=_positive_float, default=default(TeacherSettings, "stall_timeout"),
        metavar="SECONDS",
        help="a streamed answer that sends no data for this long, or does not even begin, is retried "
        "(comments that only keep the connection open do not count); long enough for models that think "
        "silently (default: %(default)g)")
    add("--stop-timeout", type=_positive_float, default=default(TeacherSettings, "stop_timeout"),
        metavar="SECONDS",
        help="at Ctrl-C or SIGTERM, seconds the answers in flight are waited for; past it they are "
        "given up (the summary names them: they are paid again next run). Inside the 30 s SLURM and "
        "Kubernetes give before they kill (default: %(default)g)")
    add("--max-answer-mb", type=_positive_float, default=default(TeacherSettings, "max_answer_bytes") / MB,
        metavar="MB",
        help="an answer larger than this (after decompression) fails its prompt, not retried: "
        "a broken or hostile server cannot take the machine's memory (default: %(default)g)")
    add("--backoff", type=_positive_float, default=default(TeacherSettings, "backoff"),
        help="seconds before the first retry; doubles each time, with jitter, up to 60 "
        "(default: %(default)g)")
    add("--reasoning-effort", choices=_REASONING_MODES, default=None,
        help="ask reasoning models for this much reasoning (rnow's reasoning_mode values; disabled "
        "turns reasoning off)")
    add("--reasoning-max-tokens", type=_positive_int, default=None,
        help="or cap reasoning at this many tokens")
    add("--cache", choices=["auto", "on", "off"], default=default(RequestSettings, "cache"),
        help="ask for prompt caching (cache_control breakpoints): auto asks Anthropic and Gemini "
        "models on OpenRouter, which cache only when asked (default: %(default)s)")
    add("--cache-ttl", choices=["5m", "1h"], default=None,
        help="how long a cached prefix lives, when caching is asked for (default: the provider's, 5m)")
    add("--extra-body", default=None, metavar="JSON",
        help="JSON object (or @file.json) merged into every request: provider routing, "
        "models fallbacks, seed, ...")
    add("--batch", action="store_true",
        help="send every request through OpenRouter's Batch API, billed at about half the price: the "
        "next turn of every rollout goes into one batch, so each turn takes as long as a batch (minutes "
        "to hours, up to 24 h); re-running the same command picks up the batches in flight")
    add("--batch-poll", type=_poll_seconds, default=default(TeacherSettings, "batch_poll"),
        metavar="SECONDS", help="with --batch, seconds between looks at a batch in progress "
        "(default: %(default)s)")
    add("--distillable", action="store_true",
        help="let OpenRouter route only to models whose authors allow training on their outputs "
        "(provider.enforce_distillable_text); a teacher not on its list stops the run before anything "
        "is sent")


def _add_dataset_flags(add: Callable[..., argparse.Action]) -> None:
    """What is written: reasoning kept or not, incomplete rollouts, the exports and the report, the shard."""
    add("--no-reasoning", action="store_true",
        help="do not write the teacher's reasoning text (reasoning_content) to the output")
    add("--keep-incomplete", action="store_true",
        help="also write rollouts cut by --max-turns, length or content filter (marked in metadata)")
    add("--export", type=_export_formats, default=(), metavar="FORMAT",
        help="after the run, also write the output as <stem>.hf.jsonl (TRL, transformers, axolotl: "
        "tool schemas, arguments as objects) and/or <stem>.openai.jsonl (OpenAI fine-tuning); "
        "comma-separated")
    add("--report", action="store_true",
        help="after the run, write <stem>.report.html: one self-contained page with statistics, "
        "charts and a conversation browser")
    add("--no-run", action="store_true",
        help="run nothing, send nothing: only make the --export and --report files from the "
        "existing files")
    add("--shard", type=_shard_spec, default=None, metavar="I/N",
        help="take only shard I of N (0-based) of the prompts, for running on N machines; "
        "auto: from a SLURM job array, or auto/N in a Kubernetes Indexed Job")


def _add_gate_flags(add: Callable[..., argparse.Action]) -> None:
    """Rewards, the bar a rollout must pass and how often it may try; --max-cost."""
    add("--rewards", type=Path, default=None, metavar="REWARDS_PY",
        help="score every finished rollout with this rnow rewards file (metadata.reward)")
    add("--min-reward", type=_finite_float_arg, default=None, metavar="X",
        help="rollouts scoring below X go to <stem>.rejected.jsonl, not the output")
    add("--attempts", type=_positive_int, default=default(GateSettings, "attempts"), metavar="K",
        help="with --min-reward: per prompt (and sample), try rollouts one after another until "
        "one passes or K were tried (default: %(default)s)")
    add("--reward-timeout", type=_positive_float, default=None, metavar="SECONDS",
        help=f"seconds a reward may take, unless its @reward(timeout=...) says (default: config.yml's "
        f"rollout.reward_timeout, else {default(GateSettings, 'reward_timeout'):g})")
    add("--rescore", action="store_true",
        help="send nothing: re-score the output and rejected files with --rewards and "
        "--min-reward, moving lines between them")
    add("--max-cost", type=_positive_float, default=None, metavar="USD",
        help="once this run's spend (plus what is in flight) reaches it, send no new request (rollouts "
        "pause between turns) and stop; re-running continues them")


def _add_hygiene_flags(add: Callable[..., argparse.Action]) -> None:
    """--dedup and --decontaminate."""
    add("--dedup", action="store_true", help="drop prompts that repeat an earlier one, word for "
        "word or (from 20 words) nearly; the first stays, as does one in the output already")
    add("--dedup-threshold", type=_share, default=default(_HygieneSettings, "threshold"),
        metavar="J", help="with --dedup, near duplicates share at least this share of their "
        "distinct words (default: %(default)s)")
    add("--decontaminate", type=Path, nargs="+", action="extend", default=None, metavar="FILE",
        help="drop prompts quoting an item of these benchmark files (JSONL or text, one item a "
        "line, or folders); flag answers quoting one at --export and --report")
    add("--decontaminate-field", default=default(_HygieneSettings, "text_field"), metavar="NAME",
        help="the field holding an item's text in a JSONL benchmark file (default: %(default)s)")
    add("--decontaminate-ngram", type=_ngram_words, default=default(_HygieneSettings, "ngram"),
        metavar="N", help="words in a row a prompt must share with an item (default: %(default)s)")


def _add_tool_flags(add: Callable[..., argparse.Action]) -> None:
    """Tool calls' time, MCP servers, config.yml, how many tool calls at once, how long a result may be."""
    add("--tool-timeout", type=_positive_float, default=None,
        help=f"seconds a tool call may take, unless its @tool(timeout=...) says (default: config.yml's "
        f"rollout.tool_timeout, else {default(ToolSettings, 'timeout'):g})")
    add("--mcp", action="append", default=None, metavar="URL_OR_COMMAND",
        help="an MCP server whose tools join tools.py's: a streamable-HTTP URL, or a command run over "
        "stdio (\"npx -y some-server\"); repeatable; replaces config.yml's rollout.mcp_url")
    add("--config", type=Path, default=None, metavar="FILE",
        help="rnow's config.yml, whose rollout block gives defaults (max_turns, tool_timeout, "
        "reward_timeout, max_tool_response, reasoning_mode, mcp_url) (default: ./config.yml if any)")
    add("--tool-concurrency", type=_positive_int, default=default(ToolSettings, "concurrency"),
        help="tool calls running at once across all rollouts (default: %(default)s)")
    add("--max-tool-chars", type=_positive_int, default=None,
        help=f"longer tool results are cut, with a visible marker (default: config.yml's "
        f"rollout.max_tool_response x {_CHARS_PER_TOKEN}, else {default(ToolSettings, 'max_chars')})")


def parse_config(argv: list[str] | None) -> Config:
    args = _build_arg_parser().parse_args(argv)
    _load_dotenv_file()
    base_url = (args.base_url or os.environ.get("OPENROUTER_BASE_URL") or default(TeacherSettings,
                                                                                  "base_url")).rstrip("/")
    if urlparse(base_url).scheme not in ("http", "https"):
        raise UsageError(f"--base-url must start with http:// or https://, got {_display_url(base_url)!r}")
    api_key = os.environ.get("OPENROUTER_API_KEY") or None
    if api_key is not None and (problem := _key_problem(api_key)):
        raise UsageError(f"OPENROUTER_API_KEY {problem}. Check it where it is set (the environment or .env); "
                         "it is not shown here.")
    if (password := urlparse(base_url).password) and (problem := _key_problem(password)):
        raise UsageError(f"the password in --base-url {problem}.")
    if args.attempts > 1 and args.min_reward is None:
        raise UsageError("--attempts needs --min-reward: it tries again only rollouts that score below it")
    if args.min_reward is not None and args.rewards is None:
        raise UsageError("--min-reward needs --rewards rewards.py to score the rollouts")
    if args.rescore and args.rewards is None:
        raise UsageError("--rescore needs --rewards rewards.py")
    if args.rescore and (args.dry_run or args.no_run):
        raise UsageError("--rescore already sends nothing; use it without --dry-run and --no-run")
    if args.rewards is not None and not args.rewards.is_file():
        raise UsageError(f"rewards file {args.rewards} not found")
    if args.no_run and not (args.export or args.report):
        raise UsageError("--no-run only makes the --export and --report files; add --export hf (or openai) "
                         "or --report")
    extra_body = _parse_extra_body(args.extra_body)
    if args.batch:
        _check_batchable(extra_body)
    if args.no_run and args.dry_run:
        raise UsageError("use either --no-run or --dry-run, not both")
    if args.rescore and (args.dedup or args.decontaminate):
        raise UsageError("--dedup and --decontaminate choose the prompts to send, and --rescore sends "
                         "nothing; use them without --rescore")
    if api_key is None and _is_openrouter(base_url) and not (args.no_run or args.rescore):
        raise UsageError("OPENROUTER_API_KEY is not set. Put it in a .env file here (see .env.example) "
                         "or export it; a key is optional only for a local --base-url.")
    rollout, project = _read_rollout_config(args.config)
    settings = _SettingSources(rollout)
    max_turns = settings.pick("max_turns", args.max_turns, "--max-turns",
                              default(RequestSettings, "max_turns"),
                              _positive_int)
    tool_timeout = settings.pick("tool_timeout", args.tool_timeout, "--tool-timeout",
                                 default(ToolSettings, "timeout"),
                                 _positive_float)
    reward_timeout = settings.pick("reward_timeout", args.reward_timeout, "--reward-timeout",
                                   default(GateSettings, "reward_timeout"), _positive_float)
    max_tool_chars = settings.pick("max_tool_response", args.max_tool_chars, "--max-tool-chars",
                                   default(ToolSettings, "max_chars"),
                                   lambda tokens: _positive_int(tokens) * _CHARS_PER_TOKEN)
    reasoning_mode = settings.pick("reasoning_mode", args.reasoning_effort, "--reasoning-effort", None,
                                   _reasoning_mode_value)
    mcp_urls = settings.pick("mcp_url", args.mcp, "--mcp", [],
                             lambda v: [v] if isinstance(v, str) else list(v))
    if reasoning_mode and args.reasoning_max_tokens:
        raise UsageError("use either --reasoning-effort (or config.yml's reasoning_mode) or "
                         "--reasoning-max-tokens, not both")
    reasoning = (_reasoning_request(reasoning_mode) if reasoning_mode
                 else {"max_tokens": args.reasoning_max_tokens} if args.reasoning_max_tokens else None)
    tools_path = None if args.tools.lower() == "none" else Path(args.tools)
    tools_by_default = args.tools == str(default(ToolSettings, "file"))
    if tools_path is not None and not tools_path.is_file() and mcp_urls and tools_by_default:
        tools_path = None  # tools only from MCP servers: no tools.py needed
    if tools_path is not None and not tools_path.is_file():
        raise UsageError(f"tools file {tools_path} not found. Pass --tools PATH, or --tools none to run "
                         "without tools.")
    if args.output is not None and "{shard}" in str(args.output) and not args.shard:
        raise UsageError(f"--output {args.output}: {{shard}} stands for a shard (I-of-N), and this run has "
                         "none. Add --shard I/N (or auto), or name the output without it.")
    scheduler = _scheduler_shard(args.shard[1], os.environ, _shard_pattern(args.output, args.shard)) \
        if args.shard and args.shard[0] == "auto" else None
    shard = scheduler.shard if scheduler is not None else args.shard
    output = _shard_output(args.output, shard, args.shard)
    if output.resolve() == args.input.resolve():
        raise UsageError("--output must not be the input file")
    files = OutputPaths(output)
    ours = {path.resolve(): path for path in (files.failed, files.rejected, files.quarantine, files.paused)}
    if (same := ours.get(args.input.resolve())) is not None:  # this run rewrites and deletes that file
        raise UsageError(f"{args.input}: the prompts file is this run's own {same.name}, which the run "
                         "rewrites as rollouts settle. To retry failed prompts, re-run the command with the "
                         f"original prompts file (failed ones are retried); or copy it (cp {same} "
                         "retry.jsonl) and pass the copy.")
    _check_regular_file(args.input, "the prompts file",
                        "read once to plan the run and again as its rollouts start",
                       "Save it to a file first, and pass that.")
    _check_regular_file(output, "the output file", instead="Pass another --output.")
    for path, what in files.side_files.items():  # before anything is read or sent: a FIFO would hang the run
        _check_regular_file(path, what)
    secret = _Secret(api_key, _handed_secrets(extra_body, [base_url],
                                              [u for u in map(str, mcp_urls) if "://" in u]))
    return Config(
        prompts=PromptSettings(input=args.input, system=args.system, num=args.num, shard=shard,
                               samples=args.samples,
                               text_only=args.batch),
        teacher=TeacherSettings(base_url=base_url, secret=secret, concurrency=args.concurrency,
                                start_concurrency=args.start_concurrency, timeout=args.timeout,
                                retries=args.retries,
                                backoff=args.backoff, max_answer_bytes=int(args.max_answer_mb * MB),
                                stall_timeout=args.stall_timeout, stop_timeout=args.stop_timeout,
                                batch=args.batch,
                                batch_poll=args.batch_poll),
        requests=RequestSettings(model=args.model, max_tokens=args.max_tokens, max_turns=max_turns,
                                 temperature=args.temperature, reasoning=reasoning,
                                 extra_body=extra_body, cache=args.cache,
                                 cache_ttl=args.cache_ttl, stream=not (args.no_stream or args.batch),
                                 no_compression=_is_openrouter(base_url), distillable=args.distillable),
        tools=ToolSettings(file=tools_path, timeout=tool_timeout, concurrency=args.tool_concurrency,
                           max_chars=max_tool_chars, mcp=tuple(McpSpec(str(u)) for u in mcp_urls)),
        gate=GateSettings(rewards=args.rewards, reward_timeout=reward_timeout, min_reward=args.min_reward,
                          attempts=args.attempts, keep_incomplete=args.keep_incomplete,
                          max_cost=args.max_cost),
        line=LineFormat(teacher=args.model, keep_reasoning=not args.no_reasoning,
                        numbered_attempts=args.attempts > 1, redact=secret.scrub),
        files=files, hygiene=_HygieneSettings(dedup=args.dedup, threshold=args.dedup_threshold,
                                             benchmarks=tuple(args.decontaminate or ()),
                                             text_field=args.decontaminate_field,
                                              ngram=args.decontaminate_ngram),
        export=args.export, report=args.report, no_run=args.no_run, dry_run=args.dry_run,
        rescore=args.rescore, sources=settings.sources, project=project, scheduler=scheduler,
    )


# ==================================================================================================
# The run
# ==================================================================================================
# The plan, the rollout pool, settling each rollout's fate, stopping.


@dataclass
class Plan:
    """What this run has to do, found by one full pass over the prompts file before anything is sent."""

    total: int  # rollouts the command asks for
    finished_before: int
    finished: set[int]  # keys of the rollouts finished: in the output, or rejected --attempts times; grows
    rejected_tries: collections.Counter = field(default_factory=collections.Counter)  # per rollout key
    rejected_before: int = 0  # of finished_before, those finished by rejection (not in the output)
    # those rollouts: rejected as many times as this run's --attempts allows. A higher --attempts tries them
    # again, so a later try's saved turns are kept for it, not dropped
    rejected_out: set[int] = field(default_factory=set)
    finished_now: int = 0  # rollouts this run finished (written, or rejected with no try left)
    # Where the prompts with rollouts still to run are in the file (with their repeat numbers, line numbers
    # and the hashes of their ids, to check the line still holds them), so the run re-reads only those
    # lines: a resume with 999,900 of 1,000,000 done parses 100 lines, not 1M.
    pending_offsets: array.array = field(default_factory=lambda: array.array("q"))
    pending_repeats: array.array = field(default_factory=lambda: array.array("q"))
    pending_lines: array.array = field(default_factory=lambda: array.array("q"))
    pending_ids: array.array = field(default_factory=lambda: array.array("q"))
    # each name in a prompt's "tools": its first line
    tool_lines: dict[str, int] = field(default_factory=dict)
    # --dedup, --decontaminate: rollouts dropped before anything is sent (a fifth ending: not counted in
    # total), the ids of their prompts in this shard, and what the whole file's check found
    dropped: int = 0
    dropped_ids: list[str] = field(default_factory=list)
    hygiene: Hygiene | None = None
    prompts_in_file: int = 0  # counted only for a shard that holds none: every shard's prompts
    # without the flags: prompts an earlier run listed as dropped
    ran_listed: set[str] = field(default_factory=set)

    # Made by _make_plan, one rollout at a time (add, leave_out, holds_none), then told by the run what it
    # finished (finish, reject): only these write the plan's fields, and everyone reads them.

    def add(self, job: RolloutJob, attempts: int, listed: Container[str]) -> None:
        """A rollout the command asks for: finished before (in the output, or rejected as many times as
        `attempts` allows), or pending, its prompt's place in the file kept to be read again. `listed`: the
        prompts an earlier run's dropped-prompts file lists."""
        if listed and job.prompt.prompt_id in listed:
            self.ran_listed.add(job.prompt.prompt_id)
        self.total += 1
        if job.key not in self.finished and self.rejected_tries[job.key] >= attempts:
            self.finished.add(job.key)  # rejected as many times as it may be tried: finished
            self.rejected_out.add(job.key)
            self.rejected_before += 1
        for name in job.prompt.tools or ():
            self.tool_lines.setdefault(name, job.prompt.line_no)
        if job.key in self.finished:
            self.finished_before += 1
        elif not self.pending_offsets or self.pending_offsets[-1] != job.prompt.offset:
            self.pending_offsets.append(job.prompt.offset)
            self.pending_repeats.append(job.prompt.repeat)
            self.pending_lines.append(job.prompt.line_no)
            self.pending_ids.append(hash(job.prompt.prompt_id))

    def leave_out(self, job: RolloutJob) -> None:
        """A rollout --dedup or --decontaminate drops: not counted in total; its prompt's id kept once."""
        self.dropped += 1
        if not self.dropped_ids or self.dropped_ids[-1] != job.prompt.prompt_id:
            self.dropped_ids.append(job.prompt.prompt_id)

    def holds_none(self, prompts_in_file: int) -> None:
        """This shard holds none of the file's prompts (how many there are, to say why)."""
        self.prompts_in_file = prompts_in_file

    def finish(self, key: int) -> None:
        """This run finished the rollout: written, or rejected with no try left."""
        self.finished.add(key)
        self.finished_now += 1

    def reject(self, key: int, attempts: int) -> bool:
        """A try of the rollout rejected (below --min-reward): whether it was the last `attempts` allows,
        which finishes the rollout."""
        self.rejected_tries[key] += 1
        if self.rejected_tries[key] < attempts:
            return False
        self.finish(key)
        return True

    def check_tools(self, prompts_file: Path, toolbox: ToolBox | None) -> None:
        """Every tool a prompt line names exists (tools.py's, or an MCP server's): checked before anything
        is sent."""
        known = toolbox.tools if toolbox is not None else {}
        for name, line_no in self.tool_lines.items():
            if name not in known:
                raise UsageError(f"{prompts_file}:{line_no}: \"tools\" names {name!r}, which is not a tool "
                                 f"here (tools: {', '.join(known) or 'none'}). Fix the line, or add the tool "
                                 "to tools.py or an MCP server.")

    @property
    def pending(self) -> int:
        return self.total - self.finished_before - self.finished_now

    @property
    def in_output_before(self) -> int:
        return self.finished_before - self.rejected_before

    def pending_jobs(self, prompts: PromptSettings) -> Iterator[RolloutJob]:
        seq = itertools.count()
        places = zip(self.pending_offsets, self.pending_repeats, self.pending_lines, self.pending_ids)
        for prompt in _read_prompts_at(prompts.input, prompts.system, places):
            for sample in range(prompts.samples):
                job = RolloutJob(prompt, sample, next(seq))
                if job.key not in self.finished:
                    yield job


def _make_plan(prompts: PromptSettings, attempts: int, finished: set[int],
              rejected_tries: collections.Counter | None = None, dropped: Container[str] = (),
              hygiene: Hygiene | None = None, listed: Container[str] = ()) -> Plan:
    """Read and validate the whole prompts file before anything is sent or written. `dropped`: the prompt ids
    --dedup and --decontaminate drop (their rollouts not yet finished are the plan's `dropped`); `listed`: the
    ones an earlier run's dropped-prompts file lists, which a run without the flags runs (`ran_listed`)."""
    plan = Plan(total=0, finished_before=0, finished=finished,
                rejected_tries=rejected_tries or collections.Counter(),
                hygiene=hygiene)
    for job in iter_jobs(prompts):
        # dropped is () without --dedup and --decontaminate
        if dropped and job.prompt.prompt_id in dropped and job.key not in plan.finished:
            plan.leave_out(job)
        else:
            plan.add(job, attempts, listed)
    # a shard may hold none: it is done, and says why (its share of how many)
    if plan.total == plan.dropped == 0:
        in_file = _count_prompts(prompts) if prompts.shard else 0
        if not in_file:
            raise UsageError(f"{prompts.input}: no prompts found")
        plan.holds_none(in_file)
    return plan


_TOOLS_DOWN_AFTER = 10  # rollouts in a row failed by an unavailable tool that stop the run (each one is paid)


class _Destination(enum.Enum):
    """Where Run.settle sent a rollout, once it ended (its Ending says how it ended)."""

    WRITTEN = "written"
    REJECTED = "rejected"
    FAILED = "failed"
    PAUSED = "paused"  # stopped by the run between turns: its turns are saved, and go on next run
    PENDING = "pending"


def _batch_size(cfg: Config) -> int:
    """Requests a batch carries at most: _BATCH_MOST_REQUESTS, or fewer when that many answers of --max-tokens
    (about 8 bytes a token in JSON, and some framing) could come to half the answer-size cap."""
    per_answer = cfg.requests.max_tokens * 8 + 4096
    return max(1, min(_BATCH_MOST_REQUESTS, cfg.teacher.max_answer_bytes // (2 * per_answer)))


@contextlib.contextmanager
def _opening_mcp_servers(files: OutputPaths, redact: Callable[[str], str],
                         keep: bool = True) -> Iterator[None]:
    """The MCP log (what stdio servers write to their stderr, the SDK's own lines), made for the servers'
    opening, as private as the output. An opening that is refused (exit 2: nothing written) leaves no log it
    made: what the servers wrote there is said in the error instead. `keep` False (--dry-run): it goes
    anyway."""
    log = files.mcp_log
    made = not log.exists()
    _create_like(log, files.output)
    try:
        yield
    except UsageError as e:
        said = _last_words(log) if made else ""
        if made:
            with contextlib.suppress(OSError):
                log.unlink()
        if said:
            raise UsageError(f"{e} What it wrote on its stderr: {redact(said)}") from None
        raise
    if made and not keep:
        with contextlib.suppress(OSError):
            log.unlink()


def _last_words(path: Path, most: int = 600) -> str:
    """The end of a log, on one line."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - most))
            return " ".join(_printable(f.read().decode("utf-8", "replace")).split())[-most:]
    except OSError:
        return ""


class Run:
    """One invocation: feeds rollouts into a pool, settles each outcome, owns stopping."""

    def __init__(self, cfg: Config, toolbox: ToolBox | None, plan: Plan, output: OutputFile,
                 scorer: RewardScorer | None = None):
        # Where the run is assembled: each part gets its own settings, and the Run keeps only its own.
        self.prompts, self.gate, self.line, self.files = cfg.prompts, cfg.gate, cfg.line, cfg.files
        self.model, self.concurrency, self.pool_size = \
            cfg.requests.model, cfg.teacher.concurrency, cfg.teacher.rollout_pool_size
        self.toolbox, self.plan, self.output, self.scorer = toolbox, plan, output, scorer
        self.stats = Stats()
        self.limiter = AdaptiveLimiter(cfg.teacher.concurrency, slow_start=cfg.teacher.start_concurrency)
        self.stopping = asyncio.Event()  # the one stop signal, under this name all the way down
        self.batches: BatchQueue | None = None
        self.progress = Progress(plan.total, plan.finished_before, self.stats, self.limiter,
                                 lambda: self.batches.status() if self.batches else "")
        # In batch mode the cap sizes each batch before it goes (BatchQueue asks it), and hears of billing
        # there.
        cap = SpendCap(cfg.gate.max_cost, self.stats, self.progress.log,
                       lambda reason: self.stop(reason, now=False),
                       lambda: self.limiter.in_flight) if cfg.gate.max_cost is not None else None
        if cfg.teacher.batch:
            record = BatchRecord(cfg.files.batches, cfg.files.output, self.progress.log)
            self.batches = BatchQueue(cfg.teacher, cfg.requests.model, _batch_size(cfg), record, self.stats,
                                      self.stopping, self.progress.log, cap,
                                      _most_answer_tokens(cfg.requests))
        self.failed = FailedFile(cfg.files.failed, like=cfg.files.output)
        # tries that failed in this run: they begin again from scratch
        self.failed_now: set[RolloutKey] = set()
        self.rejected = RejectedFile(cfg.files.rejected, like=cfg.files.output)
        self.client = TeacherClient(cfg.teacher, self.limiter, self.stats, self.batches)
        # set when a rollout ends (or the run stops): the feeder may start one
        self.pool_has_room = asyncio.Event()
        self.cache = cache_plan(cfg.requests, cfg.teacher.base_url, cfg.teacher.batch)
        self.paused = PausedFile(cfg.files.paused, cfg.line.redact, like=cfg.files.output)
        self.runner = RolloutRunner(cfg.requests, self.cache, self.client, toolbox, self.stopping,
                                    self.paused)
        if cap is not None:
            self.client.on_answer = cap.check
        self.tasks: set[asyncio.Task] = set()
        self.interrupted = False
        self.stop_timeout = cfg.teacher.stop_timeout
        # at a signal: the answers in flight are waited for until then
        self._give_up_timer: asyncio.TimerHandle | None = None
        self.stop_reason: str | None = None  # why the run stopped early (not a Ctrl-C): the summary says
        self.tools_down_in_a_row = 0  # rollouts failed in a row by a tool that said it is unavailable
        # paused tries this run's --attempts does not reach (kept, _load_paused)
        self.kept_beyond_attempts = 0
        self._closed_unstarted = False
        self.started = time.monotonic()

    async def execute(self, started: Callable[[], None] = lambda: None) -> int:
        """The run, once every check that can refuse it (exit 2, nothing sent or written) has passed; then
        `started` writes what a run that goes ahead writes first (repairs, the runs file's record)."""
        try:
            if self.toolbox is not None and self.toolbox.mcp_specs:
                with _opening_mcp_servers(self.files, self.line.redact):
                    try:
                        mcp_tools = await self.toolbox.open_mcp(self.files.mcp_log)
                        # MCP tools are known only now
                        self.plan.check_tools(self.prompts.input, self.toolbox)
                    except BaseException:
                        await self._close_unstarted()  # before the log goes: closing may still write to it
                        raise
                started()
                _save_mcp_schemas(mcp_tools, self.files.mcp_tools, self.files.output, self.line.redact)
                self.runner.mcp_tools_joined()
            else:
                self.plan.check_tools(self.prompts.input, self.toolbox)
                started()
        except BaseException:  # nothing was sent: close what was opened, and say why (exit 2)
            await self._close_unstarted()
            raise
        self._load_paused()
        self.failed.compact(self.plan.finished)
        self._install_signal_handlers()
        self.progress.log(self._plan_line())
        refresher = asyncio.create_task(self.progress.refresh_forever())
        try:
            await self._feed_pool()
            while self.tasks:
                await asyncio.wait(self.tasks)
        finally:
            refresher.cancel()
            if self._give_up_timer is not None:
                self._give_up_timer.cancel()
            self.progress.close()
            await self.client.aclose()
            # its record is kept while any rollout could still ask for its answers
            if self.batches is not None:
                await self.batches.aclose(self._may_ask_again)
            if self.toolbox:
                await self.toolbox.aclose()
            self.rejected.close()
            remaining_failed = self.failed.compact(self.plan.finished)
            await self.paused.finish()
        return self._summarize(remaining_failed)

    async def _close_unstarted(self) -> None:
        """A run refused before it started closes what it opened, once."""
        if not self._closed_unstarted:
            self._closed_unstarted = True
            await self.client.aclose()
            if self.toolbox is not None:
                await self.toolbox.aclose()

    async def _feed_pool(self) -> None:
        try:
            await self._start_rollouts()
        except _PromptsChanged as e:
            self.stop(str(e), now=False)  # what runs finishes and is kept; nothing more is read from the file

    async def _start_rollouts(self) -> None:
        for job in self.plan.pending_jobs(self.prompts):
            # An event, not asyncio.wait() on the pool: that hooks every task in it, each time one ends,
            # which at -c 1000 (a pool of 2,000) cost a third of a core.
            while len(self.tasks) >= self.pool_size and not self.stopping.is_set():
                self.pool_has_room.clear()
                await self.pool_has_room.wait()
            if self.stopping.is_set():
                return
            task = asyncio.create_task(self._roll_out(job))
            self.tasks.add(task)
            task.add_done_callback(self._rollout_ended)

    def _rollout_ended(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self.pool_has_room.set()

    def _load_paused(self) -> None:
        """The paused file's rollouts that still have to run (the rest settled since), compacted to them. A
        later try of a rollout this run's --attempts counts as finished by rejection is kept, not run: paid
        for, it goes on when a run with a higher --attempts comes to it."""
        plan = self.plan
        self.paused.load(lambda key: key.attempt > plan.rejected_tries[key.rollout]
                         and (key.rollout not in plan.finished or key.rollout in plan.rejected_out))
        self.kept_beyond_attempts = sum(1 for key in self.paused.chains if key.rollout in plan.rejected_out)
        self.paused.compact()

    async def _roll_out(self, job: RolloutJob) -> None:
        # With --attempts, one try after another (the point is to pay for as few as needed); a try
        # already rejected in an earlier run counts.
        for attempt in range(self.plan.rejected_tries[job.key] + 1, self.gate.attempts + 1):
            outcome = await self.runner.roll_out(job, attempt)
            if outcome.ending is Ending.FINISHED and self.scorer is not None:
                await self._score(outcome)
            if self.settle(outcome) is not _Destination.REJECTED or self.stopping.is_set():
                return

    async def _score(self, outcome: Outcome) -> None:
        messages = [_training_message(m, self.line.keep_reasoning) for m in outcome.messages]
        try:
            outcome.score = await self.scorer.score(outcome.job.prompt.metadata, messages)
        except asyncio.CancelledError:  # the run stops at once: the paid rollout still gets settled
            outcome.end(Ending.STOPPED, "interrupted", "the run stopped while this rollout was being scored")
        except Exception as e:  # a bug of ours in scoring: the paid answer is never lost for a score
            where = traceback.extract_tb(e.__traceback__)[-1]
            outcome.score = _Score({}, 0.0, {"(scoring)": self.line.redact(
                f"internal error: {type(e).__name__}: {e} ({Path(where.filename).name}:{where.lineno}); "
                "please report it")[:300]})

    def settle(self, outcome: Outcome) -> _Destination:
        """The one place a rollout's fate is decided: a line in the output, a line in the rejected file,
        an entry in the failed file, paused (its turns saved), or pending (nothing saved). Its spend counts
        whatever the fate."""
        self.stats.settled(outcome.usage, outcome.job.prompt.prompt_id if outcome.given_up else None)
        if outcome.stop is not None:
            self.stop(outcome.stop.message)
        ending = outcome.ending
        if ending in (Ending.STOPPED, Ending.NOT_STARTED):
            return self._pause(outcome)
        if ending is Ending.FINISHED or (ending is Ending.INCOMPLETE and self.gate.keep_incomplete):
            if outcome.score is not None:
                self.stats.rollout_scored(outcome.score.total, first_try=outcome.attempt == 1,
                                          passed=not self.below_gate(outcome.score))
            destination = self._reject(outcome) if self.below_gate(outcome.score) else self._write(outcome)
        else:
            self._fail(outcome)  # INCOMPLETE or FAILED: begins again from scratch next run
            destination = _Destination.FAILED
        # Its saved turns are done with only once its line is written: a kill -9 between the two leaves the
        # line, and the next run drops the turns; the other way round, it would begin again and pay twice.
        # A line that could not be written (a full disk) keeps them: the next run goes on from there.
        if outcome.in_paused_file and destination is not _Destination.PENDING:
            self._end_saved(outcome)
        return destination

    def _pause(self, outcome: Outcome) -> _Destination:
        """Stopped by the run (a signal, the cap, a 402, a full disk): its saved turns go on next run. An
        answer the run stopped at before it was settled (a final one while it was scored, or as it came whole;
        one whose tools were running) is saved as it is, to be settled (its tools run) then."""
        if outcome.answered_last and outcome.ending is Ending.STOPPED:
            try:
                self.runner.save(outcome)
            except OutputError:
                pass  # its earlier turns (if any) are still saved
        if not outcome.in_paused_file:
            # nothing saved: it begins again (what a request in flight cost is lost)
            return _Destination.PENDING
        self.stats.rollout_paused()
        return _Destination.PAUSED

    def _end_saved(self, outcome: Outcome) -> None:
        try:
            self.paused.settled(RolloutKey.of_job(outcome.job, outcome.attempt))
        except OutputError:
            pass  # the start of the next run drops it anyway: the rollout is settled in another file

    def below_gate(self, score: _Score | None) -> bool:
        return score is not None and self.gate.min_reward is not None and score.total < self.gate.min_reward

    def _record(self, outcome: Outcome) -> dict:
        return build_line(outcome, self.line, _line_tools(outcome.job.prompt, self.toolbox))

    def _reject(self, outcome: Outcome) -> _Destination:
        try:
            self.rejected.append(self._record(outcome))
        except (ValueError, OutputError) as e:
            self.stop(f"{e}. This run stopped; {OutputError.WHAT_TO_DO}.")
            self._fail(outcome.end(Ending.FAILED, "not saved",
                                   f"rejected, but the line could not be written: {e}"))
            return _Destination.FAILED
        last_try = self.plan.reject(outcome.job.key, self.gate.attempts)  # then finished: no try left
        self.stats.rollout_rejected(last_try)
        if last_try:
            self.progress.advance()
        return _Destination.REJECTED

    def _write(self, outcome: Outcome) -> _Destination:
        try:
            self.output.append(self._record(outcome))
        except OutputError as e:
            self.stats.rollout_unsaved()
            self.stop(f"{e}. The output is left valid and this run stopped; {OutputError.WHAT_TO_DO} to "
                      "continue.")
            return _Destination.PENDING
        except Exception as e:  # checked answers and tool results make this a bug of ours; keep the work
            self._fail(outcome.end(Ending.FAILED, "internal error", f"internal error: the line cannot be "
                                   f"written ({type(e).__name__}: {e}); please report it"))
            return _Destination.FAILED
        self.plan.finish(outcome.job.key)
        self.stats.rollout_written()
        self.tools_down_in_a_row = 0
        self.progress.advance()
        return _Destination.WRITTEN

    def _fail(self, outcome: Outcome) -> None:
        self.failed_now.add(RolloutKey.of_job(outcome.job, outcome.attempt))
        self.stats.rollout_failed(outcome.label)
        try:
            self.failed.record(outcome, self.line)
        except OutputError as e:
            self.stop(f"{e}. This run stopped; {OutputError.WHAT_TO_DO}.")
        self.tools_down_in_a_row = self.tools_down_in_a_row + 1 if outcome.label == "tool unavailable" else 0
        if self.tools_down_in_a_row >= _TOOLS_DOWN_AFTER:
            self.stop(f"{_plural(self.tools_down_in_a_row, 'rollout')} in a row failed because a tool was "
                      f"unavailable ({outcome.detail}). Fix what the tool needs, then re-run the same "
                      "command.")
        if (outcome.ending is Ending.FAILED and self.stats.failed >= _FAILED_BEFORE_ANY_ANSWER
                and not self.client.answered_once):
            self.stop(f"the first {self.stats.failed} prompts all failed and the teacher has not answered "
                      f"once (last: {outcome.detail}). Check --model, --base-url and the options, then "
                      "re-run.")

    def _may_ask_again(self, key: RolloutKey) -> bool:
        """Whether a rollout's try may still send one of its requests again (so a batch holding its answer is
        kept on record): it is neither in the output, nor rejected, nor failed in this run (a failed try
        begins again from scratch, and is not handed the answer it failed with)."""
        plan = self.plan
        return ((key.rollout not in plan.finished or key.rollout in plan.rejected_out)
                and key.attempt > plan.rejected_tries[key.rollout] and key not in self.failed_now)

    def stop(self, reason: str | None, now: bool = True) -> None:
        """The one way the run stops early: no new rollout starts; with `now`, those in progress are
        cancelled too (their saved turns, and an answer already whole, go on next run; an answer still coming
        is given up). The first reason is the one reported."""
        if reason is not None and self.stop_reason is None:
            self.stop_reason = reason
        self.stopping.set()
        self.limiter.close()  # every request waiting for a slot, the pace or a Retry-After hears it now
        self.pool_has_room.set()
        if now:
            current = asyncio.current_task()
            for task in list(self.tasks):
                if task is not current:
                    task.cancel()

    def _plan_line(self) -> str:
        """The first line of a run: a log file shows what the run will do before its first result."""
        plan = self.plan
        done = f" ({plan.finished_before} of {plan.total} already done)" if plan.finished_before else ""
        if self.batches is not None:
            return (f"Running {_plural(plan.pending, 'rollout')}{done} with {self.model} through the Batch "
                    f"API at {_display_url(self.batches.url)}, a turn of every rollout in progress a batch "
                    f"(up to {self.batches.most_requests} requests); writing {self.files.output}.")
        return (f"Running {_plural(plan.pending, 'rollout')}{done} with {self.model} at "
                f"{self.client.display_url}, up to {self.concurrency} requests in flight; writing "
                f"{self.files.output}.")

    def _install_signal_handlers(self) -> None:
        # SIGHUP: the SSH session dropped or the terminal closed. Answers already paid for are still
        # coming in: finish and keep them, as for SIGTERM (stderr may be gone; see _SurvivingStream).
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        if self.interrupted:
            self.progress.log("Quitting now; unfinished rollouts will run again on the next run.")
            self.stop(None, now=True)
            return
        self.interrupted = True
        going = len(self.tasks)
        self.progress.log("Stopping: no new requests; the answers in flight are waited for (up to "
                          f"{self.stop_timeout:g} s, --stop-timeout) and kept, and a rollout they do not "
                          f"finish pauses, to go on next run ({_plural(going, 'rollout')} in progress; press "
                          "Ctrl-C again to quit now).")
        self.stop(None, now=False)
        self._give_up_timer = asyncio.get_running_loop().call_later(self.stop_timeout,
                                                                    self._look_then_give_up)

    def _look_then_give_up(self) -> None:
        """The stop's bound is a timer like an answer's (_Deadline): due, it first lets what already arrived
        be read (a process suspended past it wakes with answers whole in its buffers, unread)."""
        self._give_up_timer = asyncio.get_running_loop().call_later(_LOOK_AGAIN, self._give_up)

    def _give_up(self) -> None:
        """The bound on a stop: a cluster kills the process 30 s after SIGTERM (SLURM's KillWait, a pod's
        grace period), and a kill loses the summary and whatever was still to be saved. The rollouts still
        going stop now: an answer whole by then is kept, one still coming is given up (its rollout pauses at
        its last saved turn, and the summary names it: paid again next run)."""
        if self.tasks:
            self.progress.log(f"Gave up waiting after {self.stop_timeout:g} s (--stop-timeout): "
                              f"{_plural(len(self.tasks), 'rollout')} still in progress "
                              f"{'stops' if len(self.tasks) == 1 else 'stop'} now (the summary names any "
                              "answer given up, which is paid again next run).")
            self.stop(None, now=True)

    def _summarize(self, remaining_failed: int) -> int:
        plan, runner = self.plan, self.runner
        summary = RunSummary(
            self.stats, self.files, self.gate, self.cache, total=plan.total,
                             finished_before=plan.finished_before,
            rejected_before=plan.rejected_before, pending=plan.pending, remaining_failed=remaining_failed,
            started_over=runner.started_over, started_over_cost=runner.started_over_cost,
            kept_from_signed=runner.kept_from_signed, kept_beyond_attempts=self.kept_beyond_attempts,
            tool_lines=runner.toolbox.summary() if runner.toolbox is not None else [],
            notes=self.client.notes + [note for note in [self.limiter.budget_distrusted] if note]
            + (self.batches.summary() if self.batches else []),
            # a stop that came with nothing left to run stopped nothing (the cap reached by the last answers)
            stop_reason=self.stop_reason if plan.pending else None, seconds=time.monotonic() - self.started,
            hygiene=plan.hygiene.describe(plan.dropped_ids,
                                          f"listed in {self.files.dropped}") if plan.hygiene else [])
        print(self.line.redact(summary.text()), file=sys.stderr, flush=True)
        if self.interrupted:
            return _EXIT_INTERRUPTED
        return _EXIT_OK if plan.pending == 0 else _EXIT_FAILED


# ==================================================================================================
# Main
# ==================================================================================================
# The command: --dry-run, the run's assembly, its products, signals and exit codes.


def _print_dry_run(cfg: Config, toolbox: ToolBox | None, plan: Plan, scan: _OutputScan) -> None:
    """--dry-run, where the run would be assembled (so it takes the whole Config, as main does): what the
    run would send first, and the work to do."""
    first = next(plan.pending_jobs(cfg.prompts), None)
    # As it would be sent, but for secrets: key-like fields of --extra-body as ***, however short, and every
    # secret the program was handed out of the rest (a key given in the provider's own field, say)
    body = _request_body_template(dataclasses.replace(cfg.requests,
                                                      extra_body=_masked_key_like(cfg.requests.extra_body)),
                                 toolbox)
    cache = cache_plan(cfg.requests, cfg.teacher.base_url, cfg.teacher.batch)
    if first is not None:
        body["messages"] = cache.mark(first.prompt.messages)
    body = cfg.line.redact(body)
    key = cfg.teacher.secret.key or ""
    masked = f"{key[:8]}...{key[-4:]}" if len(key) > 16 else "***" if key else "(none)"
    print(f"POST {_display_url(cfg.teacher.base_url)}/chat/completions")
    if "@" in urlparse(cfg.teacher.base_url).netloc:
        print("Authorization: Basic *** (the user information of --base-url"
              + ("; OPENROUTER_API_KEY is not sent)" if key else ")"))
    else:
        print(f"Authorization: Bearer {masked}")
    print(json.dumps(body, indent=2, ensure_ascii=False))
    how = (f": a cache_control {json.dumps(cache.marker)} breakpoint on the system prompt and on the newest "
           "message of each request" if cache.enabled else "")
    print(f"Prompt caching: {cache.why}{how}.", file=sys.stderr)
    if cfg.teacher.batch:
        first, *fallback = _batch_endpoints(cfg.teacher.base_url)
        print(f"Batch: every request goes to {_display_url(first)}"
              + (f" (or, if it has none, {_display_url(fallback[0])})" if fallback else "")
              + f" in batches of up to {_batch_size(cfg)} requests and {_BATCH_MOST_BYTES / 1e6:.0f} MB, "
              f"looked at every {cfg.teacher.batch_poll:g} s; a rollout advances one turn a batch, so the "
              "run takes its turns times a batch's time (minutes to hours, up to 24 h a turn)."
              + (" Under --max-cost, each batch is sized so that, at the model's listed price (or, with none "
                 "listed, a first batch of a few requests) and then at the price answers were billed, it "
                 "cannot pass the cap." if cfg.gate.max_cost is not None else ""), file=sys.stderr)
    shown = {"max_turns": cfg.requests.max_turns, "tool_timeout": cfg.tools.timeout,
             "reward_timeout": cfg.gate.reward_timeout,
             "max_tool_response": f"{cfg.tools.max_chars} characters",
             "reasoning_mode": json.dumps(cfg.requests.reasoning) if cfg.requests.reasoning
             else "(not asked)",
             "mcp_url": ", ".join(spec.shown for spec in cfg.tools.mcp) or "(none)"}
    print("Settings: "
          + "; ".join(f"{key} {value} ({cfg.sources.get(key, 'default')})" for key, value in shown.items()),
          file=sys.stderr)
    print(f"Cost: {cfg.requests.model}'s price is not known before its first answers; the bar projects the "
          "whole run's cost from the first finished "
          "rollouts" + (f", and --max-cost {cfg.gate.max_cost:g} stops new requests at "
          "that spend (teachers that report no cost, e.g. a local vLLM, cannot be capped)"
          if cfg.gate.max_cost else "") + ".", file=sys.stderr)
    set_aside = [b for b in scan.bad if b.quarantine]
    if set_aside:
        print(f"{cfg.files.output}:{set_aside[0].line_no}: {set_aside[0].reason}; a real run moves "
              f"{_plural(len(set_aside), 'such line')} to {cfg.files.quarantine.name}.", file=sys.stderr)
    for line in plan.hygiene.describe(plan.dropped_ids,
                                      f"a run lists them in {cfg.files.dropped}") if plan.hygiene else ():
        print(cfg.line.redact(line), file=sys.stderr)
    if plan.ran_listed:
        print(f"{cfg.files.dropped} lists {_plural(len(plan.ran_listed), 'prompt')} of this run as dropped: "
              "without --dedup or --decontaminate, a run runs them and takes them off that "
              "list.", file=sys.stderr)
    print(f"Dry run: {plan.total - plan.finished_before} rollouts to run, {plan.in_output_before} already in "
          f"{cfg.files.output}"
          + (f", {plan.rejected_before} finished as rejected" if plan.rejected_before else "")
          + (f", {plan.dropped} dropped before sending" if plan.dropped else "")
          + "; nothing was sent or written.", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    with _surviving_standard_streams(), _stop_signals_interrupting():
        return _run_command(argv)


@contextlib.contextmanager
def _stop_signals_interrupting() -> Iterator[None]:
    """SIGTERM (scancel, a pod deleted) and SIGHUP (the terminal gone) interrupt as Ctrl-C does in every
    phase: planning a big prompts file, writing the --export files (KeyboardInterrupt: exit 130, said once,
    a temporary removed). Python's default for them kills at once, silently, leaving a half-written
    temporary behind. The run itself answers all three its own way (Run._install_signal_handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    interrupted = False

    def interrupt(signum: int, frame: Any) -> None:
        nonlocal interrupted
        if not interrupted:  # a second signal while the first is answered (a temporary removed, the message
            interrupted = True  # printed) would cut that short, with a traceback
            raise KeyboardInterrupt

    for sig in before:
        signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in before.items():
            if handler is not None:
                signal.signal(sig, handler)


def _ensure_open_files(concurrency: int, tool_concurrency: int) -> None:
    """Every connection is a file descriptor: raise the soft limit when -c needs it, or say what to do
    (instead of a wall of "Too many open files" mid-run)."""
    needed = concurrency + tool_concurrency + _FILES_BESIDES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise UsageError(f"-c {concurrency} needs about {needed} open files (with --tool-concurrency "
                         f"{tool_concurrency}), but this process may open at most {hard} (ulimit -Hn). "
                         f"{_what_the_limit_allows(hard, tool_concurrency, needed)}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# open files a run needs besides its connections and tool calls: its files, the browser, the loop
_FILES_BESIDES = 256


def _what_the_limit_allows(hard: int, tool_concurrency: int, needed: int) -> str:
    """What to do under a hard limit on open files: settings it allows, or, when none would do, raising it."""
    room = hard - _FILES_BESIDES  # for connections and tool calls together
    if room - tool_concurrency >= 1:
        return f"Lower -c to {room - tool_concurrency}, or raise the limit (ulimit -n {needed}), then re-run."
    if room >= 2:
        tools = max(1, min(tool_concurrency, room // 4))
        return (f"It leaves room for {room} connections and tool calls together: run with -c {room - tools} "
                f"--tool-concurrency {tools}, or raise the limit (ulimit -n {needed}), then re-run.")
    return ("That is too few for any run (the least, -c 1 --tool-concurrency 1, needs about "
            f"{_FILES_BESIDES + 2}): raise the hard limit (ulimit -Hn {_FILES_BESIDES + 2} or more, as root "
            "or in /etc/security/limits.conf), then re-run.")


def _run_command(argv: list[str] | None) -> int:
    output: OutputFile | None = None
    ran = False  # nothing more is sent: a Ctrl-C now interrupts the --export/--report files, not the run
    redact: Callable[[str], str] = str  # once the settings are read: every secret out of what is printed
    try:
        cfg = parse_config(argv)
        redact = cfg.teacher.secret.redact
        _check_tls_settings(cfg.teacher.base_url)
        _ensure_open_files(cfg.teacher.concurrency, cfg.tools.concurrency)
        toolbox = None
        if cfg.tools.file is not None or cfg.tools.mcp:
            tools, closer = load_tools(cfg.tools.file) if cfg.tools.file is not None else ([], None)
            toolbox = ToolBox(tools, cfg.tools, closer, cfg.teacher.secret.redact)
        if cfg.no_run and not cfg.files.output.is_file():
            raise UsageError(f"{cfg.files.output} does not exist: nothing to export or report. Run without "
                             "--no-run first (or point -o at the output).")
        scorer = (RewardScorer(_load_rewards(cfg.gate.rewards), cfg.gate.reward_timeout,
                               cfg.teacher.secret.redact)
                  if cfg.gate.rewards else None)
        output = OutputFile(cfg.files.output)
        if not cfg.dry_run:
            output.lock()  # before reading it: a second run must never plan from a file the first is writing
        if cfg.rescore:
            return _run_event_loop(_rescore(cfg.files, cfg.gate.min_reward, scorer, output))
        # --no-run: the dropped prompts as the last run left them
        hygienic = cfg.hygiene.active and not cfg.no_run
        scan, rejected = output.scan(prompt_ids=hygienic), RejectedFile(cfg.files.rejected)
        tries = rejected.tries()
        listed = _DroppedList() if hygienic else _dropped_list_of(cfg.files)
        hygiene = _prompt_hygiene(  # --dedup, --decontaminate: never a prompt paid for
            cfg.prompts, cfg.hygiene, _PaidFor(scan.prompt_ids or frozenset(), rejected.prompt_ids,
                                              PausedFile.prompts_with_turns(cfg.files.paused)),
            lambda message: _said(redact(message))) if hygienic else None
        plan = _make_plan(cfg.prompts, cfg.gate.attempts, scan.done, tries,
                         hygiene.dropped if hygiene else listed.dropped if cfg.no_run else (), hygiene,
                         listed=() if hygienic or cfg.no_run else listed.dropped)
        if cfg.no_run:  # the files as they are: nothing repaired, run or sent
            ran = True
            _remove_stale_temporaries(cfg.files.output)  # an export's, a kill -9 left (its process gone)
            return _write_exports_and_report(cfg.files, cfg.export, cfg.report, toolbox, _EXIT_OK,
                                             plan.pending,
                                             cfg.line.redact, cfg.hygiene, listed)
        if cfg.dry_run:
            if toolbox is not None and toolbox.mcp_specs:
                _run_event_loop(_list_mcp_tools(toolbox, cfg.files, redact))
            plan.check_tools(cfg.prompts.input, toolbox)
            _print_dry_run(cfg, toolbox, plan, scan)
            return _EXIT_OK

        def repaired() -> None:  # what a run writes first, once nothing can refuse it any more
            for note in output.repair(scan):
                print(note, file=sys.stderr)
            rejected.cut_torn_end()
            _remove_stale_temporaries(cfg.files.output)
            _write_dropped(cfg.files, plan, listed, cfg.line.redact)
            for note in _scheduler_notes(cfg.scheduler):
                print(note, file=sys.stderr)
            project = cfg.project
            if project is not None and project.needs_id and (said := _give_project_id(project.config)):
                print(said, file=sys.stderr)

        # a shard that holds no prompt: done, as the scheduler should count it
        if plan.total == plan.dropped == 0:
            repaired()
            ran = True
            index, shards = cfg.prompts.shard
            among = _plural(plan.prompts_in_file, "prompt")
            why = (f"more shards than prompts: {among} among {shards} shards"
                   if shards > plan.prompts_in_file else
                   f"prompts go to shards by a hash of their ids, not in turn, so {among} among {shards} "
                   "shards leave some with none")
            print(f"Nothing to do: shard {index} of {shards} holds none of the prompts of "
                  f"{cfg.prompts.input} ({why}).", file=sys.stderr)
            return _write_exports_and_report(cfg.files, cfg.export, cfg.report, toolbox, _EXIT_OK,
                                             plan.pending,
                                             cfg.line.redact, cfg.hygiene)
        if plan.finished_before == plan.total:  # every rollout is done, or dropped (--dedup, --decontaminate)
            repaired()
            ran = True
            for line in plan.hygiene.describe(plan.dropped_ids,
                                              f"listed in {cfg.files.dropped}") if plan.hygiene else ():
                print(redact(line), file=sys.stderr)
            print(f"Nothing to do: all {plan.total + plan.dropped} rollouts are finished"
                  + (" or dropped" if plan.dropped else "") + f": {plan.in_output_before} in "
                                                              f"{cfg.files.output}"
                  + (f", {plan.dropped} dropped before sending" if plan.dropped else "")
                  + (f", {plan.rejected_before} finished as rejected (in {cfg.files.rejected}; "
                  "a higher --attempts tries them again)" if plan.rejected_before else "") + ".",
                  file=sys.stderr)
            return _write_exports_and_report(cfg.files, cfg.export, cfg.report, toolbox, _EXIT_OK,
                                             plan.pending,
                                             cfg.line.redact, cfg.hygiene)
        if cfg.teacher.secret.key and not cfg.teacher.sends_key:
            print(f"Note: {_display_url(cfg.teacher.base_url)} carries a user name or password: requests "
                  "authenticate with it, and OPENROUTER_API_KEY is not sent to it.", file=sys.stderr)
        asks_licence = cfg.requests.distillable or _is_openrouter(cfg.teacher.base_url)
        licence = _check_licence(cfg) if asks_licence else None

        def started() -> None:  # the MCP servers are open and every tool is known: the run goes ahead
            repaired()
            RunsFile(cfg.files.runs,
                     like=cfg.files.output).record_start(_run_record(cfg, plan, toolbox, licence))

        code = _run_event_loop(Run(cfg, toolbox, plan, output, scorer).execute(started))
        ran = True
        return _write_exports_and_report(cfg.files, cfg.export, cfg.report, toolbox, code, plan.pending,
                                         cfg.line.redact, cfg.hygiene)
    except UsageError as e:
        print(f"error: {redact(str(e))}", file=sys.stderr)
        return _EXIT_USAGE
    except OutputError as e:
        print(f"error: {redact(str(e))}. Nothing was lost: {OutputError.WHAT_TO_DO}.", file=sys.stderr)
        return _EXIT_FAILED
    except KeyboardInterrupt:
        if ran:
            print("Interrupted while writing the --export/--report files; the run's own files are complete. "
                  "Make them again with the same command and --no-run.", file=sys.stderr)
        else:  # before the run started (reading a big prompts file): nothing was sent
            print("Interrupted before any request was sent.", file=sys.stderr)
        return _EXIT_INTERRUPTED
    finally:
        if output is not None:
            output.release()


def _scheduler_notes(scheduler: _SchedulerShard | None) -> list[str]:
    """--shard auto: how the shard was found, when that needs saying, and the array's shape noted for its
    tasks submitted again alone (the first task to start writes it)."""
    if scheduler is None:
        return []
    notes = [scheduler.note] if scheduler.note else []
    if scheduler.record is not None and scheduler.array is not None:
        failed = note_array(scheduler.record, scheduler.array, os.environ.get("SLURM_ARRAY_JOB_ID"),
                            replace=scheduler.renote)
        notes += [failed] if failed else []
    return notes


def _check_licence(cfg: Config) -> bool | None:
    """Say once, at the start, whether the teacher's author allows distillation, where the models list can
    tell; with --distillable, a teacher the list says does not allow it stops here, before anything is
    sent."""
    model = cfg.requests.model
    licence = _teacher_licence(cfg.teacher, model)
    if licence is False and cfg.requests.distillable:
        raise UsageError(f"{model} is not on OpenRouter's list of models whose authors allow training on "
                         "their outputs, so with --distillable every request would be refused. Choose one "
                         "of https://openrouter.ai/models?distillable=true with --model, or leave out "
                         "--distillable if you have checked its licence yourself.")
    if licence is True:
        print(f"Teacher's licence: {model} is on OpenRouter's list of models whose authors allow training on "
              "their outputs (best effort: check its licence for your use).", file=sys.stderr)
    elif licence is False:
        print(f"Teacher's licence: {model} is not on OpenRouter's list of models whose authors allow "
              "training on their outputs: check its terms before training on this data (--distillable "
              "routes only to models that are).", file=sys.stderr)
    elif cfg.requests.distillable:
        print("Teacher's licence: the models list could not tell; every request asks OpenRouter to route "
              "only to models that allow distillation (--distillable).", file=sys.stderr)
    return licence


def _run_record(cfg: Config, plan: Plan, toolbox: ToolBox | None, licence: bool | None) -> dict:
    """What the runs file keeps of this run for the dataset card: the settings that shape the data (those
    marked `recorded`), and what else the card says: the prompts file, the tools, the teacher's licence."""
    settings = _recorded_settings(cfg)
    return cfg.line.redact({
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "generator": {"sha256": _file_sha256(Path(__file__))[:16]},
        "prompts": {"file": cfg.prompts.input.name, "sha256": _file_sha256(cfg.prompts.input),
                    "rollouts": plan.total, **settings["prompts"]},
        "teacher": {**settings["teacher"], "licence": licence},
        "rollout": {**settings["rollout"], "tools": sorted(toolbox.tools) if toolbox is not None else []},
        "gate": settings["gate"],
        # --dedup, --decontaminate: the settings and this run's counts (the card's account when the
        # dropped-prompts files were not merged with the outputs); without them, how many prompts an earlier
        # run dropped it runs
        "hygiene": plan.hygiene.header(plan.dropped_ids)["hygiene"] if plan.hygiene is not None
        else {"ran_listed": len(plan.ran_listed)} if plan.ran_listed else None,
    })


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _surviving_standard_streams() -> Iterator[None]:
    """File descriptors 0-2 open before any file is (else the output file could become fd 2, and the
    browser's logs would land in train.jsonl), and stdout and stderr that outlive their terminal."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free fd: this one
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
    saved = sys.stdout, sys.stderr
    sys.stdout = _SurvivingStream(sys.stdout or open(1, "w", closefd=False))
    sys.stderr = _SurvivingStream(sys.stderr or open(2, "w", closefd=False))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved[0] or sys.stdout.stream, saved[1] or sys.stderr.stream


class _SurvivingStream:
    """stdout or stderr that the run survives losing: once the terminal is gone (EIO after the SSH session
    dropped) or the pipe is closed (EPIPE), its fd is pointed at /dev/null and every later write succeeds,
    so the run still settles what it paid for, writes its files and exits as it should."""

    def __init__(self, stream: Any):
        self.stream = stream.stream if isinstance(stream, _SurvivingStream) else stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError:
            self._lose()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError:
            self._lose()

    def _lose(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()  # what was buffered goes to /dev/null now

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


async def _list_mcp_tools(toolbox: ToolBox, files: OutputPaths, redact: Callable[[str], str]) -> None:
    """--dry-run: the MCP servers' tools, listed and closed again; no log is left."""
    with _opening_mcp_servers(files, redact, keep=False):
        try:
            await toolbox.open_mcp(files.mcp_log)
        finally:
            await toolbox.aclose()


def _write_exports_and_report(files: OutputPaths, export: tuple[str, ...], report: bool,
                              toolbox: ToolBox | None, code: int,
                   pending: int, scrub: Callable[[Any], Any], hygiene: _HygieneSettings = _HygieneSettings(),
                   listed: _DroppedList | None = None) -> int:
    """After a run that ended normally (all done, or some failed): the --export files and the --report
    page, made anew from the files. They are writers too: what they write goes through the one scrub.
    With --decontaminate, the answers are checked for benchmark items first, for the card and the report.
    `listed`: the dropped-prompts file as read (--no-run, where a benchmark file that cannot be used is exit
    2, before anything is written); after a run, it is read again, and such a file is a note (the run's work
    is done and written: its exports are made all the same)."""
    if code not in (_EXIT_OK, _EXIT_FAILED):
        return code
    after_a_run, listed = listed is None, listed if listed is not None else _dropped_list_of(files)
    for note in listed.odd[:5]:
        print(scrub(f"{note}: left out of the card and the report"), file=sys.stderr)
    quotes = _check_answers(files, hygiene, scrub, listed,
                            after_a_run) if hygiene.benchmarks and (export or report) \
        else None
    schemas = scrub(_export_schemas(toolbox, files.mcp_tools)) if export else {}
    for fmt in export:
        result = _export_output(files, fmt, schemas, scrub)
        print(scrub(_report_export(result)), file=sys.stderr)
        if fmt == "hf":
            card = files.card
            try:
                text, odd = _dataset_card(files, result.path, schemas, RunsFile(files.runs).records(), quotes,
                                          listed)
                with replaced_atomically(card, files.output) as f:
                    f.write(scrub(text).encode("utf-8"))
            except OSError as e:
                raise OutputError(card, e) from None
            print(f"Dataset card: {card} (the README.md of a dataset repository on the Hugging Face Hub)",
                  file=sys.stderr)
            for note in odd:
                print(scrub(f"Dataset card: {note}"), file=sys.stderr)
    if report:
        import distillation_report  # only here: the page is reached through this flag alone

        path = files.report
        try:
            page, _ = distillation_report.render_report(files.output, files.failed, files.rejected,
                                                        pending=pending,
                                                        reader=lambda file: map(scrub, dataset_records(file)),
                                                        hygiene=_hygiene_figures(listed, quotes))
            with replaced_atomically(path, files.output) as f:
                f.write(scrub(page).encode("utf-8"))
        except OSError as e:
            raise OutputError(path, e) from None
        print(f"Report: {path} (open it in a browser; it needs no network)", file=sys.stderr)
    return code


def _said(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _dropped_list_of(files: OutputPaths) -> _DroppedList:
    """The dropped-prompts file as it is (an empty list where there is none)."""
    try:
        return _read_dropped(((line_no, record) for line_no, (line, record) in
                             enumerate(LineReader(files.dropped).records(), 1) if line.strip()),
                             str(files.dropped))
    except OSError as e:
        raise UsageError(f"{files.dropped}: cannot read the dropped-prompts file: {e.strerror}") from None


def _write_dropped(files: OutputPaths, plan: Plan, listed: _DroppedList, scrub: Callable[[Any], Any]) -> None:
    """--dedup, --decontaminate: the dropped-prompts file, written whole by each run that goes ahead. A run
    with neither takes off the list the prompts it runs (the card must not call them dropped), and leaves the
    rest: a run of the first prompts (-n) runs none of them, and the list stays true."""
    try:
        if plan.hygiene is not None:
            with replaced_atomically(files.dropped, files.output) as f:
                for record in plan.hygiene.records(plan.dropped_ids):
                    f.write(encode_line(scrub(record)))
            return
        if not plan.ran_listed:
            return
        left = [record for record in listed.lines if record["prompt_id"] not in plan.ran_listed]
        ran = _plural(len(plan.ran_listed), "prompt")
        if any(record.get("dropped") for record in left):
            with replaced_atomically(files.dropped, files.output) as f:
                for record in [{"hygiene": header} for header in listed.headers] + left:
                    f.write(encode_line(scrub(record)))
            print(f"{files.dropped}: {ran} it listed as dropped are in this run (it has neither --dedup nor "
                  f"--decontaminate): taken off the list; {sum(1 for r in left if r.get('dropped'))} stay on "
                  "it.",
                  file=sys.stderr)
        else:
            files.dropped.unlink()
            print(f"{files.dropped}: removed: the {ran} it listed as dropped are in this run (it has neither "
                  "--dedup nor --decontaminate).", file=sys.stderr)
    except OSError as e:
        raise OutputError(files.dropped, e) from None


def _check_answers(files: OutputPaths, hygiene: _HygieneSettings, scrub: Callable[[Any], Any],
                   listed: _DroppedList,
                   after_a_run: bool) -> _AnswerQuotes:
    """--decontaminate at --export and --report: the output's answers quoting a benchmark item, listed beside
    it (flagged, not removed: the lines are paid for, and whether they go is the user's call). The benchmark
    files are read as they are now: one that changed since the prompts were checked is said; one that can no
    longer be used, after a run, skips the check with a note (before a --no-run writes anything: exit 2)."""
    print(scrub("Benchmark check of the answers: indexing "
                f"{', '.join(_safe_text(str(p)) for p in hygiene.benchmarks)} and reading "
                f"{files.output}..."), file=sys.stderr, flush=True)
    try:
        quotes = _answers_quoting(dataset_records(files.output), hygiene)
    except UsageError as e:
        if not after_a_run:
            raise
        print(scrub(f"Benchmark check of the answers: not made: {e} The run's files are complete; the "
                    "exports and the report are made without it (make them again with --no-run once the "
                    "file is fixed)."),
              file=sys.stderr)
        return _AnswerQuotes({}, skipped=str(e))
    for changed in quotes.changed_since(listed.headers):
        print(scrub(f"Benchmark check of the answers: {changed}"), file=sys.stderr)
    try:
        with replaced_atomically(files.quoting, files.output) as f:
            for record in quotes.flagged:
                f.write(encode_line(scrub(record)))
    except OSError as e:
        raise OutputError(files.quoting, e) from None
    first = f" (the first: line {quotes.flagged[0]['line']})" if quotes.flagged else ""
    print(f"Benchmark check of the answers: {len(quotes.flagged)} of {_plural(quotes.lines, 'line')} of "
          f"{files.output} quote a benchmark item{first}; listed in {files.quoting} (flagged, not "
          "removed).", file=sys.stderr)
    return quotes


def _run_event_loop(main_coroutine: Any) -> Any:
    """asyncio.run, except that tasks still running at the end get one second, not for ever: a tool that
    swallows its cancellation would otherwise keep the process alive after the run is over."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)} \
        if threading.current_thread() is threading.main_thread() else {}
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main_coroutine)
    finally:
        leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.wait(leftovers, timeout=1))
            loop.set_exception_handler(lambda loop, context: None)  # no "Task was destroyed" noise for them
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        # as before the loop: closing it set the run's back to the defaults
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)


def _exit_for_good(code: int) -> None:
    """Exit even when a tool left a thread that never returns (Python would wait for it for ever)."""
    sys.stdout.flush()
    sys.stderr.flush()
    deadline = time.monotonic() + 2  # idle tool threads are already on their way out
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit_for_good(main())
