"""A real HTTP server on 127.0.0.1 that speaks the OpenRouter chat-completions protocol.

Each prompt (the text of the conversation's first user message) can be given a script: a list of
steps, one per request the server receives for that prompt, in order. A step is a function of the
request body returning a Reply, so a test can answer, call tools, answer 429 with Retry-After, 5xx,
drop the connection, send a 200 with an error body, stall, or check what the client sent.
Unscripted prompts get a plain answer. Optional global behaviour: a latency, and a cap on requests
in flight above which the server answers 429 (like a provider's concurrency limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import json
import math
import random
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Reply:
    status: int = 200
    body: object = None  # dict -> JSON, bytes -> raw
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering
    drip: float = 0.0  # send the body 8 bytes at a time, this many seconds apart (a teacher that crawls)
    cut_after: int | None = None  # send the head and this many bytes of the body, then hang up
    reset: bool = False  # answer nothing and reset the connection (TCP RST)
    raw_response: bytes | None = None  # these bytes instead of an HTTP response (garbage on the wire)
    # Streamed (server-sent events) when the request asks for it and this is a 200 with choices, unless one
    # of the byte-level fields above or below is set: the answer comes in pieces, as OpenRouter sends them.
    stream: bool = False  # set by the server: the request asked for a stream and this reply can be one
    keepalive: float = 1.0  # while the answer is delayed, a ": OPENROUTER PROCESSING" comment this often
    sse_error: dict | None = None  # an error event after the first piece (a mid-stream 429 or provider error)
    sse_stall: float = 0.0  # after the first piece, only comments for this long
    sse_cut: bool = False  # after the first piece, hang up (no usage, no [DONE])
    sse_no_usage: bool = False  # the whole answer and [DONE], but no usage event
    # after the first piece, nothing until it is set (FakeTeacher.held)
    sse_hold: threading.Event | None = None
    # the whole answer (its finish_reason), then nothing, the connection held open, until it is set (a proxy,
    # slow usage accounting); then the usage event and [DONE]. FakeTeacher.held_whole has each one held
    sse_hold_whole: threading.Event | None = None
    # unstreamed: nothing until it is set (FakeTeacher.held), then the answer
    hold: threading.Event | None = None
    dialect: object = None  # a dialects.Dialect: the answer streamed as that server writes it
    encoding: str | None = None  # Content-Encoding: "gzip", "deflate", "deflate-raw" (sent as deflate), or
    #                               any other name with the body sent as it is (an encoding not asked for)


Step = Callable[[dict], Reply]
_ids = itertools.count(1)


def completion(message: dict, finish_reason: str = "stop", usage: dict | None = None,
               model: str | None = None) -> dict:
    return {
        "id": f"gen-{next(_ids)}", "object": "chat.completion", "model": model or "test/teacher",
        "choices": [{"index": 0, "finish_reason": finish_reason,
                     "message": {"role": "assistant", **message}}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 0.001},
    }


def answer(text: str, **kwargs) -> Step:
    return lambda body: Reply(body=completion({"content": text}, **kwargs))


def call_tools(*calls: tuple[str, object], content=None, finish_reason: str = "tool_calls", **kwargs) -> Step:
    """Reply with tool calls; each call is (name, arguments) where arguments is a dict or a raw string."""

    def step(body: dict) -> Reply:
        tool_calls = [{"id": f"call_{next(_ids)}", "type": "function",
                       "function": {"name": name,
                                    "arguments": args if isinstance(args, str) else json.dumps(args)}}
                      for name, args in calls]
        return Reply(body=completion({"content": content, "tool_calls": tool_calls}, finish_reason, **kwargs))

    return step


def status(code: int, message: str = "error", headers: dict | None = None, **error_fields) -> Step:
    return lambda body: Reply(code, {"error": {"code": code, "message": message, **error_fields}},
                              headers or {})


def drop() -> Step:
    return lambda body: Reply(drop=True)


def error_body(code=502, message: str = "provider error") -> Step:
    return lambda body: Reply(200, {"error": {"code": code, "message": message}})


def raw(payload: bytes, status_code: int = 200) -> Step:
    """Answer with these exact bytes (not necessarily JSON)."""
    return lambda body: Reply(status_code, payload)


def drip(seconds_per_8_bytes: float, then: Step) -> Step:
    return adjusted(then, drip=seconds_per_8_bytes)


def slow(seconds: float, then: Step) -> Step:
    return adjusted(then, delay=seconds)


def adjusted(then: Step, **changes) -> Step:
    """`then`'s reply with some of its fields changed (delay, drip, headers, ...)."""

    def step(body: dict) -> Reply:
        reply = then(body)
        for name, value in changes.items():
            setattr(reply, name, value)
        return reply

    return step


def _with_message(message: object) -> bytes:
    return json.dumps({"id": "gen-x", "model": "test/teacher", "choices": [
        {"index": 0, "finish_reason": "stop", "message": message}]}).encode()


# Answers a hostile or broken provider sends with status 200: each must be retried as a provider error
# (and the rollout failed with a reason once retries are used up), never kill the rollout.
MALFORMED_ANSWERS: dict[str, bytes] = {
    "tool_calls is an object": _with_message({"role": "assistant", "content": None,
                                              "tool_calls": {"id": "c1"}}),
    "tool_calls holds null": _with_message({"role": "assistant", "content": None, "tool_calls": [None]}),
    "function is a string": _with_message({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": "add"}]}),
    "name is a number": _with_message({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": 7, "arguments": "{}"}}]}),
    "arguments is a number": _with_message({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": 12}}]}),
    "content is an object": _with_message({"role": "assistant", "content": {"text": "hi"}}),
    "content parts hold a number": _with_message({"role": "assistant",
                                                  "content": [{"type": "text", "text": 5}]}),
    "message is a list": _with_message(["assistant", "hi"]),
    "reasoning_details is a string": _with_message({"role": "assistant", "content": "hi",
                                                    "reasoning_details": "x"}),
    "choices is an object": json.dumps({"choices": {"0": {"message": {"content": "hi"}}}}).encode(),
    "choices holds a string": json.dumps({"choices": ["hi"]}).encode(),
    "finish_reason is a number": json.dumps({"choices": [{"finish_reason": 1,
                                                          "message": {"content": "x"}}]}).encode(),
    "answer is a list": b"[1, 2, 3]",
    "lone surrogate in content": b'{"choices": [{"finish_reason": "stop", "message": {"content": "bad '
                                 b'\\ud800 text"}}]}',
    "lone surrogate in a tool name": (b'{"choices": [{"finish_reason": "tool_calls", "message": {"content": '
                                      b'null, "tool_calls": [{"id": "c", "function": {"name": "\\udfff", '
                                      b'"arguments": "{}"}}]}}]}'),
    "not JSON": b"<html><body>502 Bad Gateway</body></html>",
    "torn JSON": b'{"choices": [{"message": {"content": "cut her',
    "not UTF-8": b'{"choices": [{"message": {"content": "\xff\xfe"}}]}',
    "nested too deep": b"[" * 200000,
}


class CachingProvider:
    """Bills like a provider that caches only when asked (Anthropic): strict about the marker's shape
    (400 otherwise), reads of a prefix an earlier marked request wrote at 0.1x the input price, writes at
    1.25x; reports cached_tokens, cache_write_tokens, cost and cache_discount (what caching saved)."""

    INPUT_PRICE, OUTPUT_PRICE = 1e-6, 4e-6

    def __init__(self) -> None:
        self.prefixes: set[str] = set()
        self.lock = threading.Lock()

    def problem(self, body: dict) -> str | None:
        """Why a strict provider would refuse this request's cache_control markers, or None."""
        markers = 0
        if "cache_control" in body:
            markers += 1
            if not self._valid(body["cache_control"]):
                return f"invalid top-level cache_control {body['cache_control']!r}"
        for i, message in enumerate(body.get("messages", [])):
            if "cache_control" in message:
                return f"messages[{i}]: cache_control must be on a content block, not on the message"
            content = message.get("content")
            for part in content if isinstance(content, list) else []:
                if isinstance(part, dict) and "cache_control" in part:
                    markers += 1
                    if (part.get("type") != "text" or not part.get("text")
                            or not self._valid(part["cache_control"])):
                        return f"messages[{i}]: invalid cache_control block {part!r}"[:300]
        return "at most 4 cache_control breakpoints" if markers > 4 else None

    @staticmethod
    def _valid(marker: object) -> bool:
        return (isinstance(marker, dict) and marker.get("type") == "ephemeral"
                and set(marker) <= {"type", "ttl"}
                and marker.get("ttl", "5m") in ("5m", "1h"))

    def usage(self, body: dict, completion_tokens: int = 20) -> tuple[dict, float]:
        """(usage, cache_discount) for this request; remembers the prefixes it was asked to cache."""
        messages = body.get("messages", [])
        tools = json.dumps(body.get("tools", []), sort_keys=True)
        canonical = [self._canonical(m) for m in messages]
        tokens = [len(tools) // 4]
        for text in canonical:
            tokens.append(tokens[-1] + max(1, len(text) // 4))
        keys = [str(hash((tools, *canonical[: i + 1]))) for i in range(len(messages))]
        breakpoints = [i for i, m in enumerate(messages) if self._marked(m)]
        if "cache_control" in body and messages:
            breakpoints.append(len(messages) - 1)  # the top-level form: the last cacheable block
        prompt = tokens[-1]
        cached = written = 0
        with self.lock:
            if breakpoints:
                cached = next((tokens[i + 1] for i in range(len(keys) - 1, -1, -1)
                               if keys[i] in self.prefixes), 0)
                last = max(breakpoints)
                if keys[last] not in self.prefixes:
                    written = tokens[last + 1] - cached
                self.prefixes.update(keys[i] for i in breakpoints)
        p = self.INPUT_PRICE
        input_cost = (prompt - cached) * p + 0.25 * written * p + 0.1 * cached * p
        usage = {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                 "total_tokens": prompt + completion_tokens,
                 "cost": input_cost + completion_tokens * self.OUTPUT_PRICE,
                 "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written}}
        return usage, prompt * p - input_cost

    @staticmethod
    def _marked(message: dict) -> bool:
        content = message.get("content")
        return isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p
                                                 for p in content)

    @staticmethod
    def _canonical(message: dict) -> str:
        """The message without markers, text parts joined: marked and plain forms of it are one prefix."""
        content = message.get("content")
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type", "text") == "text"
                                             for p in content):
            content = "".join(p.get("text", "") for p in content)
        return json.dumps({**message, "content": content}, sort_keys=True)


def first_user_text(body: dict) -> str:
    for message in body.get("messages", []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                                 for p in content):
                # a text block marked for caching reads as its text
                return "".join(p["text"] for p in content)
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def reset_header(seconds_from_now: float) -> dict:
    """OpenRouter's X-RateLimit-Reset: the epoch time in milliseconds when requests are admitted again."""
    return {"X-RateLimit-Reset": str(int((time.time() + seconds_from_now) * 1000))}


class TokenBucket:
    """A provider's requests-per-second meter: `rate` tokens a second, at most `burst` saved up. A request
    without a token is answered 429 with X-RateLimit-Reset (epoch ms when the next token is there), or with
    `retry_after`: `Retry-After` in whole seconds, rounded up, as hosted APIs send it (1 for a 50 ms wait).
    One bucket may serve several FakeTeachers' worth of clients: it is shared by whoever holds it."""

    def __init__(self, rate: float, burst: int, retry_after: bool = False):
        self.rate, self.burst, self.retry_after = rate, burst, retry_after
        self.tokens, self.updated = float(burst), time.monotonic()

    def admit(self) -> dict | None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        wait = (1 - self.tokens) / self.rate
        return {"Retry-After": str(math.ceil(wait))} if self.retry_after else reset_header(wait)


class FixedWindow:
    """`limit` requests per `window` seconds, counted from fixed window starts; a request over it is
    answered 429 carrying only X-RateLimit-Reset (epoch ms when the window ends), as OpenRouter does."""

    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.started, self.count = time.monotonic(), 0

    def admit(self) -> dict | None:
        now = time.monotonic()
        if now - self.started >= self.window:
            self.started += (now - self.started) // self.window * self.window
            self.count = 0
        if self.count < self.limit:
            self.count += 1
            return None
        return reset_header(self.started + self.window - now)


class FakeTeacher:
    def __init__(self, latency: float = 0.0, max_in_flight: int | None = None, latency_fn=None,
                 default_step: Step | None = None, caching: bool = False,
                 meter: TokenBucket | FixedWindow | None = None, streaming: bool = True):
        self.streaming = streaming  # False: a server that refuses "stream": true with a 400
        self.scripts: dict[str, list[Step]] = {}
        self.default_step = default_step
        self.answered_at: list[float] = []  # loop time of every normal (non-429) answer, for benchmarks
        self.received_at: list[float] = []  # and of every request's arrival
        self.requests: list[dict] = []  # every request body received, in order
        self.headers: list[dict] = []
        self.latency, self.latency_fn, self.max_in_flight = latency, latency_fn, max_in_flight
        self.in_flight = self.peak_in_flight = self.rejected = 0
        self.peak_admitted = 0  # most requests in flight that were answered normally
        self.caching = CachingProvider() if caching else None
        self.meter = meter  # a requests-per-time limit, besides (or instead of) max_in_flight
        self.pages: dict[str, str] = {}  # GET path -> HTML
        self.held: list[int] = []  # the client's port of each answer held (Reply.sse_hold, Reply.hold)
        self.held_whole: list[int] = []  # and of each stream held once whole (Reply.sse_hold_whole)
        self.released: list[float] = []  # when each held answer had been written to its end
        # OpenRouter's models list (GET /models, ?distillable=true keeps the entries with is_trainable_text),
        # and its routing rule: a request with provider.enforce_distillable_text for a model not on it is
        # refused. None: no models endpoint (404), no rule.
        self.models: list[dict] | None = None
        self.models_asked: list[str] = []  # the path and query of each GET /models
        # or another server's list: a function of the path and query giving the body (pages, other shapes), or
        # the whole Reply (one that drips)
        self.models_answer: Callable[[str], object] | None = None
        # OpenRouter's Batch API, as its guide, quickstart and API reference describe it (docs/batch.md cites
        # them): POST /api/v1/batches (and the quickstart's /api/beta/batches), GET .../batches/{id}, and GET
        # .../batches/{id}/results, cursor-paginated (limit, has_more, next_cursor). A batch is validating,
        # then in progress, then ended `batch_latency` seconds after it came; each request answered as a live
        # one would be (scripts included), billed at half the price. `batch_fates` decides batches in turn:
        # "completed", "expired" / "cancelled" (nothing answered), "expired-partial" (the first half
        # answered), "failed" (validation: `batch_failure_reason` in error.message, "{0}" there naming the
        # first request's custom_id), "overdue" (in progress for ever), "garbage" (results of every wrong
        # shape); after the list, "completed". What a busy service does, below, is off until a test turns it
        # on.
        self.batches: dict[str, dict] = {}
        self.batch_latency = 0.1
        self.batch_fates: list[str] = []
        self.batch_looks = 0  # GETs of batches
        self.batch_costs_per_answer = True  # False: only the batch's usage says what it cost
        self.batch_paths = {"v1", "beta"}  # where batches are taken; elsewhere a POST gets batch_path_refusal
        self.batch_path_refusal = 404
        self.batch_posts: list[str] = []  # the path of every batch submission, in order
        self.batch_submissions: dict[str, int] = {}  # custom_id -> batches it came in
        self.batch_inline: int | None = None  # results inline in an ended batch's view (None: all)
        self.batch_page_size = 1000  # results a page of GET .../results carries at most
        self.batch_results_late = 0  # looks at an ended batch that still show no results (inline or paged)
        self.batch_404_looks = 0  # looks at a new batch answered 404 (a store that lags its own 202)
        # every GET of a batch refused: (status, message)
        self.batch_get_refusal: tuple[int, str] | None = None
        self.batch_413_over: int | None = None  # a submission of more requests than this is refused with 413
        self.batch_window = 24 * 3600.0  # expires_at: this long after the submission
        # seconds the service says a batch was created before it came (a batch of yesterday)
        self.batch_age = 0.0
        self.batch_failure_reason = "request {0} is invalid: unknown parameter"
        self.batch_results_refusal: dict[str, int] = {}  # batch id -> the status GET .../results answers
        # ids whose pages say has_more for ever, cursors going round
        self.batch_cursor_cycle: set[str] = set()
        # a submission stored, then answered so
        self.batch_submit_answer: tuple[int, dict, dict] | None = None
        self.batch_id: str | None = None  # the id every batch gets (a key in it; one id for all)
        self.batch_status: str | None = None  # the status every look says while a batch is in progress
        self.batch_submit_delay = 0.0  # seconds a submission's answer takes once the batch is stored
        # each result's body the completion JSON-encoded again, as a string
        self.batch_results_as_text = False
        self.batch_refused_prompt: str | None = None  # a submission holding it is refused, 400 naming it
        self.models_delay = 0.0  # seconds GET /models takes
        self._batch_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.port = 0

    # -- control ---------------------------------------------------------------------------------
    def script(self, prompt: str, *steps: Step) -> None:
        with self._lock:
            self.scripts[prompt] = list(steps)

    def distillable(self) -> list[dict]:
        return [m for m in self.models or () if m.get("is_trainable_text")]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def requests_for(self, prompt: str) -> list[dict]:
        return [body for body in self.requests if first_user_text(body) == prompt]

    def start(self) -> "FakeTeacher":
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop:
            async def shutdown():
                self._server.close()
                for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                    task.cancel()

            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # -- protocol --------------------------------------------------------------------------------
    def _next_step(self, body: dict) -> Step | None:
        with self._lock:
            steps = self.scripts.get(first_user_text(body))
            return steps.pop(0) if steps else None

    def _default_reply(self, body: dict) -> Reply:
        if self.default_step:
            return self.default_step(body)
        return Reply(body=completion({"content": f"Answer to: {first_user_text(body)}"}))

    async def _respond(self, body: dict) -> Reply:
        self.requests.append(body)
        self.received_at.append(time.monotonic())
        if self.caching and (problem := self.caching.problem(body)):
            return Reply(400, {"error": {"code": 400, "message": problem}})
        if body.get("stream") and not self.streaming:
            return Reply(400, {"error": {"code": 400, "message": "stream is not supported by this server"}})
        provider = body.get("provider") if isinstance(body.get("provider"), dict) else {}
        if provider.get("enforce_distillable_text") and self.models is not None \
                and body.get("model") not in {m["id"] for m in self.distillable()}:
            # OpenRouter does not document this refusal's words; a 404 like its other routing refusals
            message = (f"No endpoints found for {body.get('model')} that allow distillation "
                       "(provider.enforce_distillable_text)")
            return Reply(404, {"error": {"code": 404, "message": message}})
        step = self._next_step(body)
        reply = step(body) if step else self._default_reply(body)
        if self.caching and isinstance(reply.body, dict) and "choices" in reply.body:
            reply.body["usage"], reply.body["cache_discount"] = self.caching.usage(body)
        reply.delay = reply.delay or (self.latency_fn() if self.latency_fn else self.latency)
        reply.stream = bool(body.get("stream")) and reply.status == 200 and isinstance(reply.body, dict) \
            and "choices" in reply.body and not (reply.drip or reply.cut_after is not None or reply.encoding)
        if reply.stream:
            return reply  # the delay is spent sending keep-alive comments, in _send_events
        if reply.delay:
            await asyncio.sleep(reply.delay)
        self.answered_at.append(time.monotonic())
        return reply

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                try:
                    method, path, _ = request_line.decode().split(" ", 2)
                except (UnicodeDecodeError, ValueError):  # not HTTP (a TLS handshake): as servers do, 400
                    writer.write(b"HTTP/1.1 400 Bad Request\r\n"
                                 b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    return
                if path.startswith(("http://", "https://")):  # absolute form, which servers must accept
                    path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                self.headers.append(headers)
                reply = await self._dispatch(method, path, raw)
                if reply.drop:
                    writer.transport.abort()
                    return
                if reply.reset:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                if reply.raw_response is not None:
                    writer.write(reply.raw_response)
                    await writer.drain()
                    writer.transport.abort()
                    return
                await self._send(writer, reply)
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            writer.close()
            # A reply written after the client hung up (a run that stopped at another request's 402) leaves
            # its error on the connection; taken here, asyncio does not print it as never retrieved at exit
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, method: str, path: str, raw: bytes) -> Reply:
        if method == "GET" and path in self.pages:  # a web page for the browse tool to read
            return Reply(200, self.pages[path].encode(), {"Content-Type": "text/html; charset=utf-8"})
        if method == "GET" and path.split("?")[0].endswith("/models") and self.models_answer is not None:
            self.models_asked.append(path)
            listed = self.models_answer(path)
            return listed if isinstance(listed, Reply) else Reply(200, listed)
        if method == "GET" and path.split("?")[0].endswith("/models") and self.models is not None:
            self.models_asked.append(path)
            await asyncio.sleep(self.models_delay)
            listed = self.distillable() if "distillable=true" in path else self.models
            return Reply(200, {"data": listed})
        if path.split("?")[0].startswith(("/api/beta/batches", "/api/v1/batches")):
            return await self._batch(method, path, raw)
        if method != "POST" or not path.endswith("/chat/completions"):
            return Reply(404, {"error": {"code": 404, "message": f"no route {method} {path}"}})
        body = json.loads(raw)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.max_in_flight is not None and self.in_flight > self.max_in_flight:
                self.rejected += 1
                self.requests.append({**body, "_rejected": True})
                self.in_flight -= 1
                return Reply(429, {"error": {"code": 429, "message": "too many requests in flight"}})
            if self.meter is not None and (reset := self.meter.admit()) is not None:
                self.rejected += 1
                self.requests.append({**body, "_rejected": True})
                self.in_flight -= 1
                return Reply(429, {"error": {"code": 429, "message": "rate limit exceeded"}}, reset)
            self.peak_admitted = max(self.peak_admitted, self.in_flight)
            reply = await self._respond(body)
        except BaseException:
            self.in_flight -= 1
            raise
        if not reply.stream:
            self.in_flight -= 1
        # else: a streamed answer is in flight until its last event is sent (_send_events)
        return reply

    async def _batch(self, method: str, target: str, raw: bytes) -> Reply:
        path, _, query = target.partition("?")
        parts = path.strip("/").split("/")  # api, v1|beta, batches[, id[, results]]
        if method == "POST" and len(parts) == 3:
            return await self._submit_batch(parts[1], raw)
        batch = self.batches.get(parts[3]) if method == "GET" and len(parts) >= 4 else None
        if batch is None:
            return Reply(404, {"error": {"code": 404, "message": "no such batch"}})
        if self.batch_get_refusal is not None:
            code, message = self.batch_get_refusal
            return Reply(code, {"error": {"code": code, "message": message}})
        if len(parts) == 5 and parts[4] == "results":
            if (refusal := self.batch_results_refusal.get(batch["id"])) is not None:
                return Reply(refusal, {"error": {"code": refusal, "message": "x"}})
            return self._results_page(batch, dict(p.partition("=")[::2] for p in query.split("&") if p))
        self.batch_looks += 1
        batch["looks"] += 1
        if batch["looks"] <= self.batch_404_looks:
            return Reply(404, {"error": {"code": 404, "message": "no such batch"}})
        age = time.monotonic() - batch["came"]
        if age < self.batch_latency or batch["fate"] == "overdue":
            going = self.batch_status or ("validating" if age < self.batch_latency / 2 else "in_progress")
            return Reply(200, self._batch_view(batch, going))
        # completed, with results of every wrong shape and none of its requests'
        if batch["fate"] == "garbage":
            return Reply(200, {**self._batch_view(batch, "completed"), "usage": {"cost": "NaN"}, "results": [
                1, None, {"custom_id": None}, {"custom_id": "zz", "response": {"status_code": "200"}},
                {"custom_id": 7, "error": "bad"}]})
        if batch["results"] is None:
            await self._answer_batch(batch)
        batch["ended_looks"] += 1
        status = {"expired-partial": "expired"}.get(batch["fate"], batch["fate"])
        return Reply(200, self._batch_view(batch, status))

    async def _submit_batch(self, version: str, raw: bytes) -> Reply:
        self.batch_posts.append(f"/api/{version}/batches")
        if version not in self.batch_paths:
            return Reply(self.batch_path_refusal,
                         {"error": {"code": self.batch_path_refusal, "message": "not found"}})
        # OpenRouter reads the JSON as a stream: endpoint and model must come before requests
        head = raw[:raw.find(b'"requests"')] if b'"requests"' in raw else raw
        if b'"endpoint"' not in head or b'"model"' not in head:
            return Reply(400, {"error": {"code": 400,
                                         "message": "endpoint and model must come before requests"}})
        batch = json.loads(raw)
        if self.batch_413_over is not None and len(batch["requests"]) > self.batch_413_over:
            return Reply(413, {"error": {"code": 413, "message": "Request body too large"}})
        bodies = [r.get("body", {}) for r in batch["requests"]]
        refused = [i for i, body in enumerate(bodies) if first_user_text(body) == self.batch_refused_prompt]
        if refused:
            return Reply(400, {"error": {"code": 400, "message": f"requests[{refused[0]}]: invalid content"}})
        if any(body.get("model", batch["model"]) != batch["model"] for body in bodies):
            return Reply(400, {"error": {"code": 400,
                                         "message": "every request's model must be the batch's"}})
        for request in batch["requests"]:
            custom_id = request["custom_id"]
            self.batch_submissions[custom_id] = self.batch_submissions.get(custom_id, 0) + 1
        batch_id = self.batch_id or f"batch_{next(self._batch_ids)}"
        if batch_id in self.batches and self.batches[batch_id]["results"] is None:  # one id for two batches
            self.batches[batch_id]["requests"] += batch["requests"]
            return Reply(202, self._batch_view(self.batches[batch_id], "validating"))
        fate = self.batch_fates.pop(0) if self.batch_fates else "completed"
        self.batches[batch_id] = {"id": batch_id, "requests": batch["requests"], "came": time.monotonic(),
                                  "created": time.time() - self.batch_age, "fate": fate, "results": None,
                                  "cost": 0.0, "looks": 0, "ended_looks": 0}
        await asyncio.sleep(self.batch_submit_delay)
        if self.batch_submit_answer is not None:  # stored, but answered otherwise (524, a 202 without an id)
            code, body, headers = self.batch_submit_answer
            return Reply(code, body, headers)
        return Reply(202, self._batch_view(self.batches[batch_id], "validating"))

    async def _answer_batch(self, batch: dict) -> None:
        batch["results"] = []
        fate = batch["fate"]
        answered = {"completed": batch["requests"],
                    "expired-partial": batch["requests"][:len(batch["requests"]) // 2]
                    }.get(fate, [])
        for request in answered:
            reply = await self._respond(request["body"])
            if reply.status == 200 and isinstance(reply.body, dict) and "choices" in reply.body:
                body = json.loads(json.dumps(reply.body))
                usage = body.setdefault("usage", {})
                if "cost" in usage:  # half the price (a teacher that says no cost says none here either)
                    usage["cost"] = usage["cost"] / 2
                    batch["cost"] += usage["cost"]
                if not self.batch_costs_per_answer:
                    usage.pop("cost", None)
                result = {"response": {"status_code": 200, "request_id": f"req-{len(batch['results'])}",
                                       "body": json.dumps(body) if self.batch_results_as_text else body},
                          "error": None}
            else:
                error = reply.body.get("error") if isinstance(reply.body, dict) else None
                result = {"response": None, "error": error or {"code": reply.status, "message": "failed"}}
            batch["results"].append({"id": f"r{len(batch['results'])}", "custom_id": request["custom_id"],
                                     **result})

    def _results_page(self, batch: dict, params: dict) -> Reply:
        ended = batch["results"] is not None
        shown = batch["results"] if ended and batch["ended_looks"] > self.batch_results_late else []
        start = int(params.get("cursor") or 0)
        size = min(int(params.get("limit") or 1000), self.batch_page_size)
        page = shown[start:start + size]
        more = start + size < len(shown)
        if batch["id"] in self.batch_cursor_cycle:
            return Reply(200, {"object": "list", "data": [], "has_more": True,
                               "next_cursor": str(1 - min(start, 1))})
        return Reply(200, {"object": "list", "data": page, "has_more": more,
                           "next_cursor": str(start + size) if more else None})

    def _batch_view(self, batch: dict, status: str) -> dict:
        ended = status in ("completed", "failed", "expired", "cancelled")
        total = len(batch["requests"])
        results = batch["results"] if ended and batch["results"] is not None else None
        if results is not None and batch["ended_looks"] <= self.batch_results_late:
            results = None  # not attached yet
        elif results is not None and self.batch_inline is not None:
            results = results[:self.batch_inline]
        view = {"id": batch["id"], "object": "batch", "endpoint": "/v1/chat/completions", "status": status,
                "completion_window": "24h", "created_at": int(batch["created"]),
                "expires_at": int(batch["created"] + self.batch_window), "error": None,
                "request_counts": {"total": total, "completed": len(batch["results"] or ()) if ended else 0,
                                   "failed": 0},
                "usage": {"cost": batch["cost"]} if ended else None, "results": results}
        if status == "failed":
            first = batch["requests"][0]["custom_id"] if batch["requests"] else ""
            view["error"] = {"message": self.batch_failure_reason.replace("{0}", first)}
        return view

    async def _send_events(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        """The answer as OpenRouter streams it: comments while it thinks, then the message in pieces, the
        finish reason, a usage event and [DONE]; chunked, as a stream of unknown length is."""
        try:
            await self._stream_answer(writer, reply)
        finally:
            self.in_flight -= 1

    async def _stream_dialect(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        """The answer as another server writes it (tests/support/dialects.py): its bytes, then its ending."""
        dialect = reply.dialect
        writes = dialect.writes(reply.body)
        if dialect.write_size:
            joined = b"".join(writes)
            writes = [joined[i:i + dialect.write_size] for i in range(0, len(joined), dialect.write_size)]
        writer.write(stream_head(reply))
        for data in writes:
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        self.answered_at.append(time.monotonic())
        if dialect.ending == "hold":  # a proxy that keeps the response open: until the client hangs up
            await asyncio.sleep(120)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _stream_answer(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        if reply.dialect is not None:
            return await self._stream_dialect(writer, reply)

        def send(text: str) -> None:
            data = text.encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        async def think(seconds: float) -> None:
            """Only comments for this long, one every `keepalive` seconds, as OpenRouter sends them."""
            waited = 0.0
            while waited < seconds:
                send(": OPENROUTER PROCESSING\n\n")
                await writer.drain()
                step = min(reply.keepalive, seconds - waited)
                await asyncio.sleep(step)
                waited += step

        writer.write(stream_head(reply))
        await think(reply.delay)
        events, usage = sse_events(reply.body)
        for i, event in enumerate(events):
            send(f"data: {json.dumps(event)}\n\n")
            await writer.drain()
            if i == 0 and reply.sse_error is not None:
                error = {"error": reply.sse_error,
                         "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]}
                send(f"data: {json.dumps(error)}\n\n")
                break
            if i == 0 and reply.sse_cut:
                await writer.drain()
                writer.transport.abort()
                return
            if i == 0 and reply.sse_stall:
                await think(reply.sse_stall)
            if i == 0 and reply.sse_hold is not None:
                await self._held(writer, reply.sse_hold, self.held)
        else:
            if reply.sse_hold_whole is not None:
                await writer.drain()
                await self._held(writer, reply.sse_hold_whole, self.held_whole)
            if usage is not None and not reply.sse_no_usage:
                send(f"data: {json.dumps(usage)}\n\n")
            send("data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        self.answered_at.append(time.monotonic())
        if reply.sse_hold is not None or reply.sse_hold_whole is not None:
            self.released.append(time.monotonic())

    @staticmethod
    async def _held(writer: asyncio.StreamWriter, hold: threading.Event, held: list[int]) -> None:
        held.append(writer.get_extra_info("peername")[1])
        while not hold.is_set():
            await asyncio.sleep(0.01)

    async def _send(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        if reply.stream:
            return await self._send_events(writer, reply)
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body or {}).encode()
        encoded = {}
        if reply.encoding:
            payload = encode_body(payload, reply.encoding)
            encoded = {"Content-Encoding": "deflate" if reply.encoding == "deflate-raw" else reply.encoding}
        reasons = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
                   403: "Forbidden", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
                   502: "Bad Gateway", 503: "Service Unavailable"}
        headers = {"Content-Type": "application/json", **encoded, **reply.headers,
                   "Content-Length": len(payload)}
        if reply.hold is not None:
            await self._held(writer, reply.hold, self.held)
        head = [f"HTTP/1.1 {reply.status} {reasons.get(reply.status, 'Status')}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        if reply.cut_after is not None:
            writer.write(payload[: reply.cut_after])
            await writer.drain()
            writer.transport.abort()
            return
        if reply.drip:
            for start in range(0, len(payload), 8):
                writer.write(payload[start:start + 8])
                await writer.drain()
                await asyncio.sleep(reply.drip)
        else:
            writer.write(payload)
        await writer.drain()
        if reply.hold is not None:
            self.released.append(time.monotonic())


TEXTS = ("content", "reasoning", "reasoning_content", "refusal")


def stream_head(reply: Reply) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in reply.headers.items())
    return (f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            f"{extra}\r\n").encode()


def sse_events(body: dict) -> tuple[list[dict], dict | None]:
    """A chat completion as the events a streaming server sends: each text in pieces, each tool call's
    arguments in two, every other field once, in the message's own key order; and the usage event."""
    choice = body["choices"][0]
    message = choice.get("message") or {}
    top = {k: v for k, v in body.items() if k not in ("choices", "usage", "cache_discount")}
    top["object"] = "chat.completion.chunk"

    def event(delta: dict, finish_reason=None) -> dict:
        return {**top, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    events = [event({"role": message.get("role", "assistant")})]
    for key, value in message.items():
        if key == "role":
            continue
        if key in TEXTS and isinstance(value, str) and value:
            cut = max(1, len(value) // 2)
            events += ([event({key: value[:cut]}), event({key: value[cut:]})] if len(value) > 1
                       else [event({key: value})])
        elif key == "tool_calls" and isinstance(value, list):
            for i, call in enumerate(value):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
                    events.append(event({"tool_calls": [call]}))
                    continue
                arguments = function["arguments"]
                half = len(arguments) // 2
                first = {"index": i, **{k: v for k, v in call.items() if k != "function"},
                         "function": {**function, "arguments": arguments[:half]}}
                events += [event({"tool_calls": [first]}),
                           event({"tool_calls": [{"index": i, "function": {"arguments": arguments[half:]}}]})]
        else:
            events.append(event({key: value}))
    events.append(event({}, choice.get("finish_reason")))
    if "error" in choice:  # a provider error carried by the choice itself, with finish_reason "error"
        events[-1]["choices"][0]["error"] = choice["error"]
    usage = {**top, "choices": [], "usage": body["usage"]} if "usage" in body else None
    if usage is not None and "cache_discount" in body:
        usage["cache_discount"] = body["cache_discount"]
    return events, usage


def encode_body(payload: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(payload)
    if encoding == "deflate":
        return zlib.compress(payload)
    if encoding == "deflate-raw":
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return compressor.compress(payload) + compressor.flush()
    return payload


def gzip_bomb(decoded_size: int) -> bytes:
    """A gzip body that is small on the wire and `decoded_size` bytes of zeros once decoded: one member of
    1 MB of zeros, repeated (gzip allows many members in one body, and decoders must read them all)."""
    return gzip.compress(bytes(1 << 20), compresslevel=9) * (decoded_size >> 20)


def jittered(mean: float, spread: float = 0.5, tail_share: float = 0.0, tail_factor: float = 20.0):
    """A latency function: uniform around mean, with an optional heavy tail."""
    rng = random.Random(1234)

    def latency() -> float:
        if tail_share and rng.random() < tail_share:
            return mean * tail_factor
        return rng.uniform(mean * (1 - spread), mean * (1 + spread))

    return latency


# --------------------------------------------------------------------------------------------------
# `python tests/support/fake_teacher.py`: the teacher CI runs the README's first command against
# --------------------------------------------------------------------------------------------------
QUICK_START_PAGE = "<html><head><title>Loopback docs</title></head><body><h1>Loopback docs</h1>" \
                   "<p>The answer is forty-two.</p></body></html>"


def quick_start_step(teacher: FakeTeacher) -> Step:
    """First turn: call both bundled tools (browse reads a page this server serves); then answer from them."""

    def step(body: dict) -> Reply:
        results = [m.get("content", "") for m in body["messages"] if m.get("role") == "tool"]
        if not results:
            page = f"http://127.0.0.1:{teacher.port}/docs"
            return call_tools(("calculate", {"expression": "6 * 7"}), ("browse", {"url": page}))(body)
        return answer("From the page and the calculator: " + " | ".join(r[:200] for r in results))(body)

    return step


def main() -> None:
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(description="A loopback OpenRouter-like teacher; prints its base URL, "
                                     "serves until stopped.")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    teacher = FakeTeacher(latency=args.latency)
    teacher.default_step = quick_start_step(teacher)
    teacher.pages["/docs"] = QUICK_START_PAGE
    teacher.start()
    print(teacher.base_url, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
