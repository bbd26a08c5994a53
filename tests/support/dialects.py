"""How other servers stream a chat completion, written from their code and docs, for the loopback teacher
to speak (FakeTeacher: Reply.dialect). Each Dialect turns one completion (the unstreamed body, as
fake_teacher.completion builds it) into the bytes that server writes, and says how its stream ends.
docs/dialects.md is the table of these servers; each row there names its source here and its test in
tests/test_dialects.py.

Sources (read through the search tool; paths are the projects' own):
- OpenAI: the API reference, "Streaming" and `stream_options.include_usage` (a last chunk with
  `choices: []` and usage; every chunk before it carries `"usage": null`), then `data: [DONE]`.
- vLLM: vllm/entrypoints/openai/serving_chat.py (chat_completion_stream_generator): one choice per
  event, each with its own `index` (n > 1 interleaves them), tool calls as a first piece with id and
  name and then argument pieces by index, `reasoning_content` deltas, a final usage chunk with
  `choices: []` when include_usage, `data: [DONE]`.
- SGLang: python/sglang/srt/entrypoints/openai/serving_chat.py: as vLLM (reasoning_content, usage chunk
  with empty choices, [DONE]).
- llama.cpp's server: tools/server/server.cpp: the last chunk carries finish_reason, usage and timings
  together; `data: [DONE]` only since PR #9459 (ggml-org/llama.cpp, Sep 2024); ik_llama.cpp sent none
  until its issue #467 was fixed (PR #470). The server closes the connection at the end.
- Ollama: openai/openai.go (ChatCompletionChunk): each tool call whole in one chunk, with an id and an
  index; usage in a chunk of its own with include_usage; `data: [DONE]`.
- LiteLLM's proxy: recorded from litellm 1.108.7 in front of this teacher: its usage chunk keeps
  `choices: [{"index": 0, "delta": {}}]` (tests/test_dialects.py also puts the real proxy in the path).
- Mistral's API (Magistral and other reasoning models): `delta.content` is a list of chunks,
  `{"type": "thinking", "thinking": [{"type": "text", "text": ...}]}` and `{"type": "text", ...}`
  (docs.mistral.ai, "Reasoning"; spring-ai PR #5020 and braintrust-sdk-javascript issue #1857 show the
  shape); usage comes in the chunk that carries finish_reason; tool calls whole, 9-character ids.
- Error bodies (ERRORS below): OpenAI's and OpenRouter's shape is {"error": {...}}; SGLang's is top-level,
  python/sglang/srt/entrypoints/openai/protocol.py's ErrorResponse (object "error", message, type, param,
  code), as vLLM's was before it took OpenAI's; Mistral's API answers the same top-level shape, code null
  (seen in user reports: solbrowse/extension#16, NEKOparapa/AiNiee#641, mistralai/platform-docs-public#7);
  TGI's (huggingface/text-generation-inference, router/src/validation.rs) is {"error": "<text>",
  "error_type": ...};
  Gemini's OpenAI-compatible endpoint answers a list of one {"error": {...}}.
- DeepSeek's API (api-docs.deepseek.com, "Reasoning Model", "Create Chat Completion"):
  `reasoning_content` deltas, `: keep-alive` comments while the request waits, a usage chunk with
  `choices: []` with include_usage, `data: [DONE]`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

TEXTS = ("reasoning_content", "reasoning", "content", "refusal")


def chunk(body: dict, delta: dict | None = None, finish_reason=None, index: int = 0, **top) -> dict:
    """One chat.completion.chunk event of this completion."""
    choice = {"index": index, "delta": delta or {}, "finish_reason": finish_reason}
    return {"id": body["id"], "object": "chat.completion.chunk", "created": 1796238132,
            "model": body["model"], **top, "choices": [choice]}


def pieces(text: str, size: int = 3) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def message_deltas(message: dict, whole_calls: bool = False) -> list[dict]:
    """The deltas of a message as OpenAI-style servers send them: role, texts in pieces, tool calls (a
    first piece with id and name, then argument pieces by index; or each call whole)."""
    deltas: list[dict] = [{"role": "assistant", "content": ""}]
    for key in TEXTS:
        if isinstance(message.get(key), str) and message[key]:
            deltas += [{key: piece} for piece in pieces(message[key])]
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        if whole_calls:
            deltas.append({"tool_calls": [{"id": call["id"], "index": i, "type": "function",
                                           "function": function}]})
            continue
        deltas.append({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                       "function": {"name": function["name"], "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
                   for piece in pieces(function["arguments"], 4)]
    return deltas


def sse(events: list, line_end: str = "\n") -> list[bytes]:
    """Each event (a dict, "[DONE]", or a ":" comment) as the bytes of one write."""
    out = []
    for event in events:
        if isinstance(event, str) and event.startswith(":"):
            out.append((event + line_end + line_end).encode())
        else:
            data = event if isinstance(event, str) else json.dumps(event)
            out.append(f"data: {data}{line_end}{line_end}".encode())
    return out


@dataclass
class Dialect:
    name: str
    writes: Callable[[dict], list[bytes]]  # the completion as this server writes it, one bytes per write
    ending: str = "end"  # "end": the body ends; "hold": the connection stays open after the last write
    write_size: int | None = None  # re-cut the bytes into writes of this size (line ends split across reads)
    paid_requests: int = 1  # requests the generator should send for one answer (more: a cut it must retry)


# -- the servers ----------------------------------------------------------------------------------------

def openai(body: dict) -> list[bytes]:
    message, choice = body["choices"][0]["message"], body["choices"][0]
    events = [chunk(body, d, usage=None) for d in message_deltas(message)]
    events.append(chunk(body, {}, choice["finish_reason"], usage=None))
    events.append({**chunk(body), "choices": [], "usage": body["usage"]})
    return sse(events + ["[DONE]"])


def vllm(body: dict, reasoning_key: str = "reasoning_content") -> list[bytes]:
    message, choice = dict(body["choices"][0]["message"]), body["choices"][0]
    if "reasoning" in message:
        message[reasoning_key] = message.pop("reasoning")
    events = [chunk(body, d) for d in message_deltas(message)]
    events.append(chunk(body, {}, choice["finish_reason"]))
    events.append({**chunk(body), "choices": [], "usage": body["usage"]})
    return sse(events + ["[DONE]"])


def llamacpp(body: dict, done: bool = True) -> list[bytes]:
    message, choice = body["choices"][0]["message"], body["choices"][0]
    events = [chunk(body, d) for d in message_deltas(message)]
    events.append(chunk(body, {}, choice["finish_reason"], usage=body["usage"],
                        timings={"prompt_n": 10, "predicted_n": 5}))
    return sse(events + (["[DONE]"] if done else []))


def ollama(body: dict) -> list[bytes]:
    message, choice = body["choices"][0]["message"], body["choices"][0]
    events = [chunk(body, d, system_fingerprint="fp_ollama")
              for d in message_deltas(message, whole_calls=True)]
    events.append(chunk(body, {"role": "assistant", "content": ""}, choice["finish_reason"],
                        system_fingerprint="fp_ollama"))
    events.append({**chunk(body, system_fingerprint="fp_ollama"), "choices": [], "usage": body["usage"]})
    return sse(events + ["[DONE]"])


def litellm(body: dict) -> list[bytes]:
    message, choice = body["choices"][0]["message"], body["choices"][0]
    events = [chunk(body, d) for d in message_deltas(message)]
    events.append(chunk(body, {}, choice["finish_reason"]))
    events.append({**chunk(body), "usage": body["usage"]})  # choices [{"index": 0, "delta": {}}] kept
    return sse(events + ["[DONE]"])


def mistral(body: dict) -> list[bytes]:
    """Reasoning as thinking chunks in delta.content; usage with the finish_reason; tool calls whole."""
    message, choice = body["choices"][0]["message"], body["choices"][0]
    events = [chunk(body, {"role": "assistant", "content": ""})]
    thinking = message.get("reasoning") or message.get("reasoning_content") or ""
    for piece in pieces(thinking) if thinking else []:
        events.append(chunk(body, {"content": [{"type": "thinking",
                                                "thinking": [{"type": "text", "text": piece}]}]}))
    for piece in pieces(message.get("content") or "") if message.get("content") else []:
        events.append(chunk(body, {"content": [{"type": "text", "text": piece}]}))
    for i, call in enumerate(message.get("tool_calls") or []):
        events.append(chunk(body, {"tool_calls": [{"id": call["id"][-9:].rjust(9, "0"),
                                                   "function": call["function"], "index": i}]}))
    events.append(chunk(body, {"content": ""}, choice["finish_reason"], usage=body["usage"]))
    return sse(events + ["[DONE]"])


def deepseek(body: dict) -> list[bytes]:
    message, choice = dict(body["choices"][0]["message"]), body["choices"][0]
    if "reasoning" in message:
        message["reasoning_content"] = message.pop("reasoning")
    events: list = [": keep-alive", ": keep-alive"]
    events += [chunk(body, d, system_fingerprint="fp_deepseek") for d in message_deltas(message)]
    events.append(chunk(body, {"content": ""}, choice["finish_reason"]))
    events.append({**chunk(body), "choices": [], "usage": body["usage"]})
    return sse(events + ["[DONE]"])


SERVERS: dict[str, Dialect] = {
    "openai": Dialect("OpenAI", openai),
    "vllm": Dialect("vLLM", vllm),
    "vllm-reasoning": Dialect("vLLM (>= 0.10, `reasoning`)", lambda b: vllm(b, "reasoning")),
    "sglang": Dialect("SGLang", vllm),
    "llamacpp": Dialect("llama.cpp server", llamacpp),
    "llamacpp-before-9459": Dialect("llama.cpp before PR #9459 (no [DONE])",
                                    lambda b: llamacpp(b, done=False)),
    "ollama": Dialect("Ollama", ollama),
    "litellm": Dialect("LiteLLM proxy", litellm),
    "mistral": Dialect("Mistral API (thinking chunks)", mistral),
    "deepseek": Dialect("DeepSeek API", deepseek),
}


# -- what proxies and broken servers do to those streams ---------------------------------------------

def with_bare_cr(body: dict) -> list[bytes]:
    return [b"".join(openai(body)).replace(b"\n", b"\r")]


def with_crlf(body: dict) -> list[bytes]:
    return [b"".join(openai(body)).replace(b"\n", b"\r\n")]


def without_done(body: dict) -> list[bytes]:
    return openai(body)[:-1]


def without_done_or_usage(body: dict) -> list[bytes]:
    return openai(body)[:-2]


def done_without_finish(body: dict) -> list[bytes]:
    """A proxy cut the stream and closed it properly: content, no finish_reason, no usage, [DONE]."""
    writes = openai(body)
    return writes[:len(writes) // 2] + [b"data: [DONE]\n\n"]


def split_surrogates(body: dict) -> list[bytes]:
    """An emoji sent as two deltas, one surrogate half each, as JavaScript string slicing sends it."""
    text = body["choices"][0]["message"]["content"]
    head, tail = b'{"content": "' + text.encode() + b' \\ud83d"}', b'{"content": "\\ude00"}'
    writes = openai(body)
    events = [b"data: " + json.dumps(chunk(body, {"role": "assistant"})).encode() + b"\n\n"]
    for delta in (head, tail):
        event = chunk(body, {})
        raw = json.dumps(event).encode().replace(b'"delta": {}', b'"delta": ' + delta)
        events.append(b"data: " + raw + b"\n\n")
    return events + writes[-3:]  # finish, usage, [DONE]


def two_choices(body: dict) -> list[bytes]:
    """n=2 as vLLM answers it: each event carries one choice, with its own index, interleaved."""
    message, choice = body["choices"][0]["message"], body["choices"][0]
    other = {"content": message["content"].upper() + " (the other choice)"}
    events = []
    for first, second in zip(message_deltas(message), message_deltas(other)):
        events += [chunk(body, first, index=0), chunk(body, second, index=1)]
    events += [chunk(body, {}, choice["finish_reason"], index=0), chunk(body, {}, "stop", index=1)]
    events.append({**chunk(body), "choices": [], "usage": body["usage"]})
    return sse(events + ["[DONE]"])


def call_index(value) -> Callable[[dict], list[bytes]]:
    """A tool call whose pieces carry this index (an object, a string...): the teacher's fault."""
    def writes(body: dict) -> list[bytes]:
        message = body["choices"][0]["message"]
        events = [chunk(body, d) for d in message_deltas(message)]
        for event in events:
            for call in event["choices"][0]["delta"].get("tool_calls", []):
                call["index"] = value
        events += [chunk(body, {}, body["choices"][0]["finish_reason"]),
                   {**chunk(body), "choices": [], "usage": body["usage"]}]
        return sse(events + ["[DONE]"])
    return writes


def calls_without_index(body: dict) -> list[bytes]:
    """Tool calls whose argument pieces carry no index at all (each call begins with its id and name)."""
    message = body["choices"][0]["message"]
    events = [chunk(body, d) for d in message_deltas(message)]
    for event in events:
        for call in event["choices"][0]["delta"].get("tool_calls", []):
            call.pop("index", None)
    events += [chunk(body, {}, body["choices"][0]["finish_reason"]),
               {**chunk(body), "choices": [], "usage": body["usage"]}]
    return sse(events + ["[DONE]"])


def null_index_beside_integers(body: dict) -> list[bytes]:
    """Argument pieces with `"index": null` beside first pieces with integer indexes."""
    message = body["choices"][0]["message"]
    events = [chunk(body, d) for d in message_deltas(message)]
    for event in events:
        for call in event["choices"][0]["delta"].get("tool_calls", []):
            if "id" not in call:
                call["index"] = None
    events += [chunk(body, {}, body["choices"][0]["finish_reason"]),
               {**chunk(body), "choices": [], "usage": body["usage"]}]
    return sse(events + ["[DONE]"])


@dataclass
class Case:
    """A stream as some server or proxy sends it, and what the generator must make of it."""

    dialect: Dialect
    kept: bool = True  # the answer is whole: written, paid once (else: never written, retried)
    usage_lost: bool = False
    notes: list[str] = field(default_factory=list)


CASES: dict[str, Case] = {
    "no [DONE], usage came (llama.cpp before #9459)": Case(Dialect("no-done", without_done)),
    "no [DONE], no usage": Case(Dialect("no-done-no-usage", without_done_or_usage), usage_lost=True),
    "held open after [DONE] (a proxy)": Case(Dialect("held-after-done", openai, ending="hold")),
    "held open after usage, no [DONE]": Case(Dialect("held-after-usage", without_done, ending="hold")),
    "held open after finish_reason, no usage": Case(Dialect("held-after-finish", without_done_or_usage,
                                                            ending="hold"), usage_lost=True),
    "bare CR line ends, cut into 7-byte reads": Case(Dialect("bare-cr", with_bare_cr, write_size=7)),
    "CRLF line ends split across reads": Case(Dialect("crlf", with_crlf, write_size=5)),
    "surrogate halves in two deltas": Case(Dialect("surrogates", split_surrogates)),
    "two choices (n=2, vLLM)": Case(Dialect("two-choices", two_choices)),
    "[DONE] without finish_reason (a cut)": Case(Dialect("done-no-finish", done_without_finish), kept=False),
}


def one_character_deltas(body: dict) -> list[bytes]:
    """The content one character an event (a fast small model through a chatty server): many events, each
    far larger than what it adds."""
    message, choice = body["choices"][0]["message"], body["choices"][0]
    events = [chunk(body, {"role": "assistant"})] + [chunk(body, {"content": c}) for c in message["content"]]
    events += [chunk(body, {}, choice["finish_reason"]),
               {**chunk(body), "choices": [], "usage": body["usage"]}]
    return [b"".join(sse(events + ["[DONE]"]))]


# A conversation longer than the model's context, as each server words and shapes the error (status 400).
CONTEXT_OVERFLOW: dict[str, dict] = {
    "sglang": {"object": "error", "message": "The input (5000 tokens) is longer than the model's context "
               "length (4096 tokens).", "type": "BadRequestError", "param": None, "code": 400},
    "mistral": {"object": "error", "message": "Prompt contains 40000 tokens and 0 draft tokens, too large "
                "for model with 32768 maximum context length", "type": "invalid_request_error", "param": None,
                "code": None},
    "vllm (OpenAI's shape)": {"error": {"message": "This model's maximum context length is 4096 tokens. "
                                        "However, you requested 5000 tokens.", "type": "BadRequestError",
                                        "param": None, "code": 400}},
    # TGI and Together: router/src/validation.rs's MaxTotalTokens, answered 422 with the error as a string
    "tgi": {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: "
            "4031 `inputs` tokens and 200 `max_new_tokens`", "error_type": "validation"},
    # Gemini's OpenAI-compatible endpoint: a list of one error (ComfyUI-NewBie-LLM-Formatter#3, ai-manus#101)
    "gemini": [{"error": {"code": 400, "message": "The input token count (1500000) exceeds the maximum "
                "number of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}],
}
