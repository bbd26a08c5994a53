"""Prompt hygiene: --dedup (exact and near duplicates, keep-first, shard-stable, a prompt in the output stays)
and --decontaminate (benchmark n-grams, whole short items, boilerplate, bad benchmark files), the
dropped-prompts file, answers quoting a benchmark flagged at --export and --report, the card and the report's
figures."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import unicodedata

import pytest

from conftest import SCRIPT, assert_no_traceback, read_jsonl, run_script, subprocess_env, write_prompts
from fake_teacher import answer, call_tools, status

import generate_distillation_data as gdd

# 20 words and more: the near check applies
PHOTOSYNTHESIS = ("Explain in detail how photosynthesis converts light energy into chemical energy inside "
                  "the chloroplasts of green plants, and why it matters for life on Earth.")
# 2 words added, commas
NEAR_COPY = ("Explain in detail how photosynthesis converts light energy into chemical energy inside the "
             "chloroplasts of green plants and why it matters so much for life on Earth")
REORDERED = ("Explain how photosynthesis in detail converts light energy into chemical energy inside the "
             "chloroplasts of green plants, and why it matters for life on Earth.")  # a word moved
PARAPHRASE = ("Describe the way green plants turn sunlight into stored chemical energy in their "
              "chloroplasts, and explain why this process is important for living things on our planet.")
# another question
SAME_TEMPLATE = ("Explain in detail how photosynthesis converts light energy into chemical energy inside the "
                 "chloroplasts of green algae, and why it matters for life in the oceans today.")


def hygiene_prompts() -> list[str]:
    return ["What is the capital of France?", "  what is the CAPITAL of france!! ",
            "What is the capital of Peru?", "What is 12+4?", "What is 12-4?", PHOTOSYNTHESIS, NEAR_COPY,
            REORDERED, PARAPHRASE, SAME_TEMPLATE]


def side_file(workdir, name: str = "train.dropped.jsonl") -> tuple[dict, list[dict]]:
    records = read_jsonl(workdir / name)
    return records[0]["hygiene"], records[1:]


def sent(teacher) -> list[str]:
    return sorted({body["messages"][-1]["content"] for body in teacher.requests})


def test_words_keep_meaningful_symbols_and_drop_case_and_punctuation():
    assert (gdd.words_of("  What is the CAPITAL of France?! ")
            == ["what", "is", "the", "capital", "of", "france"])
    assert gdd.words_of("What is 12+4?") != gdd.words_of("What is 12-4?")
    assert gdd.words_of("«Quoted» — text… “here”") == ["quoted", "text", "here"]


# Different questions that a looser normalisation merged (brackets, a decimal point, a factorial, code
# punctuation, a superscript, a prime), each beside its twin; and one question spelled in ways that must read
# the same: NFD and NFC, zero-width characters and direction marks, full-width punctuation, spaces around
# symbols, curly apostrophes.
DIFFERENT = [("What is (2+3)*4?", "What is 2+(3*4)?"), ("Add 1.5 and 2.", "Add 1, 5 and 2."),
             ("Compute 5! + 1", "Compute 5 + 1"), ("What is (n+1)! for n = 3?", "What is (n+1) for n = 3?"),
             ("What does a[1:2] return in Python?", "What does a(1, 2) return in Python?"),
             ("What is 5\u00b2?", "What is 52?"),
             ("Is 1\u00bd bigger than 11/2?", "Is 11/2 bigger than 11/2?"),
             ("What is f'(x) for f(x) = x^3?", "What is f(x) for f(x) = x^3?"),
             ("What is .5 times 4?", "What is 5 times 4?")]
ACCENTED = "\u00c9lise a achet\u00e9 trois cr\u00eapes \u00e0 la cr\u00e8me. Combien en reste-t-il?"
SAME = [(ACCENTED, unicodedata.normalize("NFD", ACCENTED)),
        ("What is the capital of France?", "What is the \u200fcapital of\u200b France?"),
        ("What is the capital of Spain?", "What is the capital of Spain\uff1f"),
        ("What is 12+4?", "what is 12 + 4 ?"), ("Why don't cats swim?", "Why don\u2019t cats swim?"),
        ("Name a river, then a lake.", "Name a river\uff0c then a lake\u3002")]


def test_normalisation_keeps_different_questions_apart_and_one_question_s_spellings_together():
    for one, other in DIFFERENT:
        assert gdd.words_of(one) != gdd.words_of(other), (one, other)
    for one, other in SAME:
        assert gdd.words_of(one) == gdd.words_of(other), (one, other)
    assert gdd.words_of("«Quoted» — text… “here”") == ["quoted", "text", "here"]
    assert gdd.words_of("x\u00b2 + 1\u00bd") == gdd.words_of("x^2 + 1 1/2")  # one spelling of one question


def test_words_read_the_same_whether_or_not_the_slow_rule_is_needed():
    """words_of strips edges with str.strip unless a "!" or a point before a digit is in the text: on texts
    without them, the careful rule (_edges_off) gives the same words."""
    rng = random.Random(7)
    alphabet = (list("ab1 2.,;:?'\"()[]+-*/^_\t\n")
                + ["\u00ab", "\u00bb", "\u00e9", "\u200b", "\uff1f", "\u00bd", "\u00b2"])
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        normal = gdd._normalised(text)
        if "!" not in normal and not re.search(r"\.\d", normal):
            careful = " ".join(gdd._edges_off(piece) for piece in normal.split())
            careful = careful.translate(gdd._SPACED).split()
            assert gdd.words_of(text) == careful, repr(text)


def test_dedup_sends_different_questions_and_drops_other_spellings_of_one(run, teacher, workdir):
    prompts = [text for pair in DIFFERENT + SAME for text in pair]
    write_prompts(workdir, prompts)
    result = run("--dedup", tools="none", subprocess=True)
    assert result.code == 0, result.err
    copies = {other for _, other in SAME}
    assert sent(teacher) == sorted(p for p in prompts if p not in copies)
    _, drops = side_file(workdir)
    assert sorted(d["line"] for d in drops) == sorted(prompts.index(c) + 1 for c in copies)
    assert all(d["dropped"] == "duplicate" and d["similarity"] == 1.0 for d in drops)
    assert_no_traceback(result.err)


def test_decontamination_reads_every_spelling_of_an_item(run, teacher, workdir):
    item = BENCHMARK[0]["question"]
    write_benchmark(workdir, BENCHMARK[:1] + [{"id": "accented", "question": ACCENTED + " " + item}])
    spellings = [unicodedata.normalize("NFD", ACCENTED + " " + item), item.replace(" ", " \u200b"),
                 item.replace(";", "\uff1b").replace("?", "\uff1f").replace("at dawn", "at\u00addawn"),
                 item.replace("seventeen sheep", "seventeen \u202esheep")]
    write_prompts(workdir, spellings + ["How many sheep would a farmer keep if none ran away?"])
    result = run("--decontaminate", "bench.jsonl", tools="none", subprocess=True)
    assert result.code == 0, result.err
    assert sent(teacher) == ["How many sheep would a farmer keep if none ran away?"]
    _, drops = side_file(workdir)
    assert ([(d["line"], d["item"]) for d in drops]
            == [(1, "accented"), (2, "long-1"), (3, "long-1"), (4, "long-1")])


def vqa(url: str, question: str = "What animal is in this picture?") -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}


def test_the_same_question_about_another_image_is_another_prompt(run, teacher, workdir):
    """What a prompt carries besides its text (an image or file part, by its URL or data; its tools) must be
    the same too for two prompts to be copies, exact or near."""
    long_question = PHOTOSYNTHESIS + " Use the picture."
    cat, dog = "https://example.com/cat.png", "https://example.com/dog.png"
    data = "data:image/png;base64,iVBORw0KGgo="
    prompts = [vqa(cat), vqa(dog), vqa(data), vqa(cat), vqa(cat, long_question), vqa(dog, long_question),
               vqa(dog, long_question.replace("detail", "full detail")),
               {"prompt": "What is the capital of France?", "tools": ["add"]},
               {"prompt": "What is the capital of France?", "tools": []}]
    write_prompts(workdir, prompts)
    result = run("--dedup", subprocess=True)
    assert result.code == 0, result.err
    images = sorted(json.dumps([m for m in body["messages"] if m["role"] == "user"])
                    for body in teacher.requests)
    assert (len(images) == 7 and sum(dog in text for text in images) == 2
            and sum(data in text for text in images) == 1)
    _, drops = side_file(workdir)
    assert [(d["line"], d["dropped"], d["duplicate_of_line"]) for d in drops] == [
        (4, "duplicate", 1), (7, "near duplicate", 6)]


def test_a_benchmark_item_is_caught_in_every_message_a_prompt_sends(run, teacher, workdir):
    """The prompt's own system message, an assistant turn, a tool call's arguments, an item split between two
    messages: each is sent to the teacher, so each is checked. --system, sent before every prompt, stops the
    run."""
    item = BENCHMARK[0]["question"]
    half = len(item) // 2
    write_benchmark(workdir)
    prompts = [{"messages": [{"role": "system", "content": "Solve this problem: " + item},
                             {"role": "user", "content": "Give the answer to the problem."}]},
               {"messages": [{"role": "user", "content": "Here is a riddle."},
                             {"role": "assistant", "content": item},
                             {"role": "user", "content": "What is the answer?"}]},
               {"messages": [{"role": "user", "content": "Look it up."},
                             {"role": "assistant", "content": "", "tool_calls": [
                                 {"id": "c1", "type": "function",
                                  "function": {"name": "shout", "arguments": json.dumps({"text": item})}}]},
                             {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                             {"role": "user", "content": "And now?"}]},
               {"messages": [{"role": "user", "content": item[:half]},
                             {"role": "user", "content": item[half:]}]},
               "A clean question about goats?"]
    write_prompts(workdir, prompts)
    result = run("--decontaminate", "bench.jsonl", subprocess=True)
    assert result.code == 0, result.err
    assert sent(teacher) == ["A clean question about goats?"]
    _, drops = side_file(workdir)
    assert [(d["line"], d["item"]) for d in drops] == [(line, "long-1") for line in (1, 2, 3, 4)]
    teacher.requests.clear()
    refused = run("--decontaminate", "bench.jsonl", "-s", "Keep in mind: " + item, "-o", "other.jsonl",
                  subprocess=True)
    assert refused.code == 2 and "--system holds item long-1 of the benchmark file bench.jsonl" in refused.err
    assert not teacher.requests and not (workdir / "other.jsonl").exists()
    assert_no_traceback(refused.err)


def test_boilerplate_never_hides_an_item_s_own_part(run, teacher, workdir):
    """60 items share a long instruction (masked as boilerplate) and differ by a question shorter than 13
    words: a prompt that is an item, or holds an item's own question, is caught; one with the instruction
    alone is not."""
    instruction = ("Answer the following question with a single number only and do not explain your "
                   "reasoning in any way at all.")
    questions = [f"How many legs do {n} spiders and {n + 1} ants have together?" for n in range(60)]
    write_benchmark(workdir, [{"id": f"q{i}", "question": f"{instruction} {q}"}
                              for i, q in enumerate(questions)]
                    + [{"id": "all-boilerplate", "question": instruction}])
    prompts = [f"{instruction} {questions[7]}", f"Quick one: {questions[9]}",
               f"{instruction} What is the capital of Peru?",
               instruction + " How many wheels does a car have?"]
    write_prompts(workdir, prompts)
    result = run("--decontaminate", "bench.jsonl", tools="none", subprocess=True)
    assert result.code == 0, result.err
    assert sent(teacher) == sorted(prompts[2:])
    header, drops = side_file(workdir)
    assert [(d["line"], d["item"]) for d in drops] == [(1, "q7"), (2, "q9")]
    assert header["decontaminate"]["boilerplate_ngrams_masked"] > 0
    # a prompt that is exactly an item made of the boilerplate alone is that item
    write_prompts(workdir, [instruction], name="only.jsonl")
    only = run("--decontaminate", "bench.jsonl", "-o", "only.out.jsonl", prompts="only.jsonl", tools="none")
    assert (only.code == 0
            and [d["item"] for d in side_file(workdir, "only.out.dropped.jsonl")[1]] == ["all-boilerplate"])


def test_exact_and_near_duplicates_are_dropped_before_anything_is_sent(run, teacher, workdir):
    prompts = hygiene_prompts()
    write_prompts(workdir, prompts)
    result = run("--dedup", tools="none", subprocess=True)
    assert result.code == 0, result.err  # every prompt not dropped is in the output
    kept = [p for p in prompts if p not in (prompts[1], NEAR_COPY, REORDERED)]
    assert sent(teacher) == sorted(kept) and len(teacher.requests) == len(kept)
    assert sorted(r["messages"][0]["content"] for r in result.records()) == sorted(kept)
    header, drops = side_file(workdir)
    ids = {r["messages"][0]["content"]: r["metadata"]["prompt_id"] for r in result.records()}
    by_line = {d["line"]: d for d in drops}
    assert sorted(by_line) == [2, 7, 8]
    assert by_line[2]["dropped"] == "duplicate" and by_line[2]["duplicate_of"] == ids[prompts[0]]
    assert by_line[2]["duplicate_of_line"] == 1 and by_line[2]["similarity"] == 1.0
    for line in (7, 8):
        assert by_line[line]["dropped"] == "near duplicate" and by_line[line]["duplicate_of_line"] == 6
        assert by_line[line]["duplicate_of"] == ids[PHOTOSYNTHESIS] and by_line[line]["similarity"] >= 0.9
    assert header["prompts"] == 10 and header["dropped"] == {"duplicate": 1, "near duplicate": 2}
    assert header["dedup"]["threshold"] == 0.9 and header["dedup"]["library"] == "rensa 0.5.0"
    assert (header["dedup"]["algorithm"] == 2 and header["dedup"]["bands"] == 8
            and header["decontaminate"] is None)
    err = " ".join(result.err.split())
    assert "Dropped before sending (--dedup, " in err and "3 prompts of 10: 3 repeating another prompt " \
        "(1 word for word, 2 nearly); listed in train.dropped.jsonl." in err
    assert 'kept line 6 "Explain in detail how photosynthesis' in err and "dropped line 7 (" in err
    assert 'kept line 1 "What is the capital of France?"; dropped line 2 (the same words)' in err
    assert "Total: 7/7 rollouts in train.jsonl" in err
    assert_no_traceback(result.err)
    # a re-run decides alike, sends nothing more and says so
    again = run("--dedup", tools="none", subprocess=True)
    assert again.code == 0 and len(teacher.requests) == len(kept) and "Nothing to do: all 10 rollouts are " \
        "finished or dropped: 7 in train.jsonl, 3 dropped before sending" in " ".join(again.err.split())
    assert side_file(workdir)[1] == drops


def test_the_threshold_is_a_flag_and_a_lower_one_drops_the_other_question_too(run, teacher, workdir):
    write_prompts(workdir, [PHOTOSYNTHESIS, SAME_TEMPLATE])
    result = run("--dedup", "--dedup-threshold", "0.6", tools="none")
    assert result.code == 0 and sent(teacher) == [PHOTOSYNTHESIS]
    bad = run("--dedup", "--dedup-threshold", "1.5", tools="none", subprocess=True)
    assert bad.code == 2 and "--dedup-threshold" in bad.err and "at most 1" in bad.err


def test_a_prompt_already_in_the_output_stays_and_its_new_copies_go(run, teacher, workdir):
    """The second prompt was paid for before --dedup: it stays, and the first, a near copy of it written above
    it since, goes (not the one paid for); the third copies both and goes. Nothing is paid twice; --samples is
    left alone."""
    write_prompts(workdir, [NEAR_COPY])
    assert run("--samples", "2", tools="none").code == 0
    write_prompts(workdir, [PHOTOSYNTHESIS, NEAR_COPY, REORDERED])
    teacher.requests.clear()
    result = run("--dedup", "--samples", "2", tools="none", subprocess=True)
    assert result.code == 0, result.err
    assert not teacher.requests and len(result.records()) == 2
    _, drops = side_file(workdir)
    assert [(d["line"], d["dropped"], d["duplicate_of_line"]) for d in drops] == [(1, "near duplicate", 2),
                                                                                  (3, "near duplicate", 2)]
    assert 'kept line 2 (paid for already) "Explain in detail' in result.err


def test_shards_drop_the_same_prompts_each_listing_its_own(teacher, workdir):
    prompts = hygiene_prompts() + [f"An unrelated question number {i} about rivers?" for i in range(6)]
    write_prompts(workdir, prompts)
    args = ["prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url, "--dedup"]
    results = [run_script(workdir, *args, "--shard", f"{i}/3", "-o", f"out-{i}.jsonl") for i in range(3)]
    assert [r.code for r in results] == [0, 0, 0], [r.err for r in results]
    written = [r["messages"][0]["content"] for i in range(3) for r in read_jsonl(workdir / f"out-{i}.jsonl")]
    dropped = [d for i in range(3) for d in side_file(workdir, f"out-{i}.dropped.jsonl")[1]]
    assert sorted(written) == sorted(p for p in prompts if p not in (prompts[1], NEAR_COPY, REORDERED))
    assert sorted(d["line"] for d in dropped) == [2, 7, 8]  # each once, in the side file of its own shard
    # the same choice as one process over the whole file
    run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url, "--dedup",
               "-o", "one.jsonl")
    assert sorted(d["duplicate_of"] for d in side_file(workdir, "one.dropped.jsonl")[1]) == \
        sorted(d["duplicate_of"] for d in dropped)


def test_system_messages_are_told_apart_and_shared_ones_do_not_make_prompts_alike(run, teacher, workdir):
    long_system = "You are a careful assistant. " * 30
    questions = [f"Which river flows through city number {i}?" for i in range(3)]
    write_prompts(workdir, [{"messages": [{"role": "system", "content": long_system},
                                          {"role": "user", "content": q}]} for q in questions]
                  + [{"messages": [{"role": "system", "content": "Answer in French."},
                                   {"role": "user", "content": questions[0]}]},
                     {"prompt": PHOTOSYNTHESIS}, {"prompt": NEAR_COPY, "id": "own-id"}])
    result = run("--dedup", "-s", long_system, tools="none")
    assert result.code == 0, result.err
    _, drops = side_file(workdir)
    assert [(d["prompt_id"], d["line"]) for d in drops] == [("own-id", 6)]  # --system makes nothing alike


BENCHMARK = [
    {"id": "long-1", "question": "A farmer has seventeen sheep and all but nine of them run away into the "
                                 "hills one stormy night; how many sheep does the farmer have left at dawn?"},
    {"id": "short-1", "question": "Name the largest moon of the planet Saturn please now."},  # 9 words
    {"id": "tiny-1", "question": "Who wrote Hamlet?"},
] + [{"id": f"boiler-{i}", "question": "Read the following passage carefully and answer the question that "
                                       "follows it with one word. "
                                       f"Passage number {i} is about topic {i * 7}."}
     for i in range(60)]
CONTAMINATED = [
    "Here is a puzzle for you: a farmer has seventeen sheep and all but nine of them run away into the "
    "hills. Solve it.",
    "Quick quiz. NAME the largest moon of the planet Saturn, please; now! Thanks.",
    "who wrote hamlet",
]
CLEAN = [
    "Tell me: a farmer has seventeen sheep and all but nine of them, then what?",  # 12 words of the item only
    "Read the following passage carefully and answer the question that follows it with one word. "
    "Passage: cats.",
    "left dawn sheep nine farmer seventeen the hills of night stormy one into run them away all but has a",
    "I wonder who wrote Hamlet and why it is still performed today.",  # a tiny item inside a longer prompt
]


def write_benchmark(workdir, items=BENCHMARK, name="bench.jsonl"):
    (workdir / name).write_text("".join(json.dumps(item) + "\n" for item in items))


def test_contaminated_prompts_are_dropped_and_the_clean_control_sent(run, teacher, workdir):
    write_prompts(workdir, CONTAMINATED + CLEAN)
    write_benchmark(workdir)
    result = run("--decontaminate", "bench.jsonl", tools="none", subprocess=True)
    assert result.code == 0, result.err
    assert sent(teacher) == sorted(CLEAN)
    header, drops = side_file(workdir)
    assert [(d["line"], d["dropped"], d["benchmark"], d["item"]) for d in drops] == [
        (1, "benchmark", "bench.jsonl", "long-1"), (2, "benchmark", "bench.jsonl", "short-1"),
        (3, "benchmark", "bench.jsonl", "tiny-1")]
    assert drops[0]["quoted"] == "a farmer has seventeen sheep and all but nine of them run away"
    bench = header["decontaminate"]
    assert bench["ngram"] == 13 and bench["whole_items_from"] == 8 and bench["boilerplate_items"] == 50
    assert bench["boilerplate_ngrams_masked"] > 0 and bench["field"] == "question"
    sha = hashlib.sha256((workdir / "bench.jsonl").read_bytes()).hexdigest()
    assert bench["files"] == [{"name": "bench.jsonl", "sha256": sha, "items": len(BENCHMARK)}]
    err = " ".join(result.err.split())
    assert "3 prompts of 7: 3 holding a benchmark item" in err
    assert 'line 1 "Here is a puzzle for you: a farmer has seventeen sheep an..." holds bench.jsonl item ' \
        'long-1: "a farmer has seventeen sheep and all but nine of them run away"' in err


def test_plain_text_benchmarks_and_folders_of_them(run, teacher, workdir):
    folder = workdir / "benchmarks"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "items.txt").write_text("\n".join(item["question"] for item in BENCHMARK[:2]) + "\n")
    (folder / "notes.md").write_text("not a benchmark: left alone")
    write_prompts(workdir, CONTAMINATED[:2] + CLEAN[:1])
    result = run("--decontaminate", str(folder), tools="none")
    assert result.code == 0 and sent(teacher) == [CLEAN[0]]
    _, drops = side_file(workdir)
    assert ([(d["benchmark"].endswith("items.txt"), d["item"]) for d in drops]
            == [(True, "line 1"), (True, "line 2")])


def test_both_checks_together_and_a_contaminated_prompt_is_no_one_s_original(run, teacher, workdir):
    contaminated = CONTAMINATED[0] + " " + " ".join(["more words here"] * 3)
    copy = contaminated.replace("Solve it.", "Solve it now.")
    write_prompts(workdir, [contaminated, copy, PHOTOSYNTHESIS, NEAR_COPY])
    write_benchmark(workdir)
    result = run("--dedup", "--decontaminate", "bench.jsonl", tools="none")
    assert result.code == 0 and sent(teacher) == [PHOTOSYNTHESIS]
    _, drops = side_file(workdir)
    assert ([(d["line"], d["dropped"]) for d in drops]
            == [(1, "benchmark"), (2, "benchmark"), (4, "near duplicate")])


@pytest.mark.parametrize("name, content, said", [
    ("bench.parquet", b"PAR1\x00\x01\x02binary", "bench.parquet: binary, not text"),
    ("bench.jsonl", b'{"id": 1, "prompt": "What is two plus two?", "answer": "4"}\n',
     "bench.jsonl:1: no text field 'question' (its text fields: prompt, answer); name the one to use with "
     "--decontaminate-field"),
    ("bench.jsonl", b"", "bench.jsonl: empty: no benchmark item in it"),
    ("bench.jsonl", b"\n\n  \n", "bench.jsonl: empty: no benchmark item in it"),
    ("bench.jsonl", b'{"question": "ok"}\n{"question": \n', "bench.jsonl:2: invalid JSON"),
    ("bench.txt", b"caf\xe9 au lait\n", "bench.txt:1: not UTF-8 text"),
    ("bench.json", b'[{"question": "q"}]', "a .json file is not read; write one JSON object a line"),
    ("missing.jsonl", None, "missing.jsonl: no such benchmark file"),
    ("empty-folder", "folder", "empty-folder: the folder holds no .jsonl or .txt file"),
    ("pipe.jsonl", "fifo", "pipe.jsonl: cannot open a benchmark file: it is a FIFO (named pipe)"),
])
def test_a_bad_benchmark_file_is_exit_2_before_anything_is_sent(run, teacher, workdir, name, content, said):
    write_prompts(workdir, ["a question"])
    if content == "folder":
        (workdir / name).mkdir()
    elif content == "fifo":
        os.mkfifo(workdir / name)  # a read would wait for a writer for ever
    elif content is not None:
        (workdir / name).write_bytes(content)
    before = sorted(p.name for p in workdir.iterdir())
    result = run("--decontaminate", name, tools="none")
    assert result.code == 2 and said in result.err, result.err
    assert not teacher.requests and sorted(p.name for p in workdir.iterdir()) == before
    assert_no_traceback(result.err)


def test_a_benchmark_file_over_the_size_limit_is_refused_unread(teacher, workdir):
    write_prompts(workdir, ["a question"])
    with open(workdir / "huge.jsonl", "wb") as f:  # sparse: a size, no disk
        f.truncate(gdd._MAX_BENCHMARK_BYTES + 1)
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                        "--decontaminate", "huge.jsonl")
    assert result.code == 2 and "huge.jsonl: 1,073,741,825 bytes, over the 1,073,741,824 (1 GB) a " \
        "benchmark file may be" in result.err
    assert not teacher.requests and not (workdir / "train.jsonl").exists()
    assert_no_traceback(result.err)


def test_every_prompt_dropped_or_done_sends_nothing_and_exits_0(run, teacher, workdir):
    write_prompts(workdir, [PHOTOSYNTHESIS])
    assert run(tools="none").code == 0
    teacher.requests.clear()
    write_prompts(workdir, [PHOTOSYNTHESIS, NEAR_COPY, REORDERED, CONTAMINATED[2]])
    write_benchmark(workdir)
    result = run("--dedup", "--decontaminate", "bench.jsonl", tools="none", subprocess=True)
    assert result.code == 0 and not teacher.requests, result.err
    err = " ".join(result.err.split())
    assert ("Nothing to do: all 4 rollouts are finished or dropped: 1 in train.jsonl, 3 dropped before "
            "sending." in err)
    assert ("3 prompts of 4: 2 repeating another prompt (0 word for word, 2 nearly); 1 holding a benchmark "
            "item" in err)
    # a file whose every prompt is dropped, on an empty output, and a shard of it
    write_prompts(workdir, [CONTAMINATED[0], CONTAMINATED[2]], name="all-bad.jsonl")
    every = run("--decontaminate", "bench.jsonl", "-o", "bad.jsonl", prompts="all-bad.jsonl", tools="none")
    assert every.code == 0 and not teacher.requests and "are finished or dropped: 0 in bad.jsonl" in every.err
    for shard in range(2):  # a shard holds some of them, or none
        part = run("--decontaminate", "bench.jsonl", "--shard", f"{shard}/2", "-o", f"bad-{shard}.jsonl",
                   prompts="all-bad.jsonl", tools="none")
        assert (part.code == 0 and not teacher.requests
                and ("finished or dropped" in part.err or "holds none" in part.err))


def test_dry_run_says_what_would_be_dropped_and_writes_nothing(run, teacher, workdir):
    write_prompts(workdir, hygiene_prompts())
    write_benchmark(workdir)
    result = run("--dedup", "--decontaminate", "bench.jsonl", "--dry-run", tools="none", subprocess=True)
    assert result.code == 0 and not teacher.requests
    err = " ".join(result.err.split())
    assert "3 prompts of 10: 3 repeating another prompt (1 word for word, 2 nearly); a run lists them in " \
        "train.dropped.jsonl." in err
    assert ("Dry run: 7 rollouts to run, 0 already in train.jsonl, 3 dropped before sending; nothing was sent"
            in err)
    assert not (workdir / "train.dropped.jsonl").exists() and not (workdir / "train.jsonl").exists()


def test_answers_quoting_a_benchmark_item_are_flagged_at_export_and_in_the_report(run, teacher, workdir):
    write_prompts(workdir, ["What is the capital of France?", "Tell me a riddle about sheep", "plain"])
    write_benchmark(workdir)
    teacher.script("Tell me a riddle about sheep", answer(
        "Sure! A farmer has seventeen sheep and all but nine of them run away into the hills one stormy "
        "night."))
    teacher.script("plain", answer("ok"), answer("ok"))
    assert run(tools="none").code == 0  # the prompts are clean; one answer quotes an item
    result = run("--decontaminate", "bench.jsonl", "--export", "hf", "--report", "--no-run", tools="none",
                 subprocess=True)
    assert result.code == 0, result.err
    [flag] = read_jsonl(workdir / "train.benchmark-answers.jsonl")
    assert flag["benchmark"] == "bench.jsonl" and flag["item"] == "long-1" and flag["sample"] == 0
    assert read_jsonl(workdir / "train.jsonl")[flag["line"] - 1]["metadata"]["prompt_id"] == flag["prompt_id"]
    assert len(read_jsonl(workdir / "train.jsonl")) == 3  # flagged, not removed
    assert ("Benchmark check of the answers: 1 of 3 lines of train.jsonl quote a benchmark item (the first: "
            "line " in " ".join(result.err.split()))
    text = (workdir / "train.hf.README.md").read_text()
    assert "Answers quoting a benchmark item: 1 of 3 lines, checked at this export with the same n-grams " \
        "against `bench.jsonl`; listed in `train.benchmark-answers.jsonl`" in " ".join(text.split())
    data = report_data(workdir)
    assert data["hygiene"]["answers_quoting"] == 1 and data["hygiene"]["checked"] is False


def report_data(workdir) -> dict:
    html = (workdir / "train.report.html").read_text()
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


def test_the_card_and_the_report_show_what_was_removed_with_which_settings(run, teacher, workdir):
    write_prompts(workdir, hygiene_prompts() + CONTAMINATED[:1])
    write_benchmark(workdir)
    result = run("--dedup", "--decontaminate", "bench.jsonl", "--export", "hf", "--report", tools="none",
                 subprocess=True)
    assert result.code == 0, result.err
    from huggingface_hub import DatasetCard

    DatasetCard.load(workdir / "train.hf.README.md")  # reads as the Hub reads it
    text = " ".join((workdir / "train.hf.README.md").read_text().split())
    sha = hashlib.sha256((workdir / "bench.jsonl").read_bytes()).hexdigest()
    assert "## Prompts removed before sending" in text
    assert "Of the 11 prompts of `prompts.jsonl`, these were dropped before anything was sent, each listed " \
        "in `train.dropped.jsonl` with why:" in text
    assert "- `--dedup`: 1 repeating another prompt word for word (case, whitespace and punctuation " \
        "aside), 2 nearly: MinHash over the sets of words of prompts of 20 words or more, Jaccard at least " \
        "0.9, 128 permutations, LSH of 8 bands x 16 rows, seed 42, `rensa 0.5.0` (algorithm 2)." in text
    assert "- `--decontaminate`: 1 holding a benchmark item: 13 words in a row in common" in text
    assert f"| `bench.jsonl` | `{sha}` | {len(BENCHMARK)} |" in text
    assert "Answers quoting a benchmark item: 0 of 7 lines" in text
    hygiene = report_data(workdir)["hygiene"]
    assert hygiene == {"duplicates": 3, "benchmark": 1, "kept_in_output": 0, "checked": True,
                       "answers_quoting": 0}
    # a later run with neither flag runs what was dropped, removes the list, and the card says so, from the
    # runs file
    plain = run("--export", "hf", tools="none")
    assert plain.code == 0 and "train.dropped.jsonl: removed: the 4 prompts it listed as dropped are in " \
        "this run (it has neither --dedup nor --decontaminate)." in plain.err
    assert len(read_jsonl(workdir / "train.jsonl")) == 11
    text = " ".join((workdir / "train.hf.README.md").read_text().split())
    assert "No list of dropped prompts is here (`train.dropped.jsonl`), but the runs file " \
        "(`train.runs.jsonl`) records:" in text
    assert "used `--dedup` and `--decontaminate` and dropped 1 as `duplicate`, 2 as `near duplicate`, 1 as " \
        "`benchmark` of 11 prompts of `prompts.jsonl`" in text
    assert re.search(r"the run of `[0-9TZ:-]+`, with neither flag, ran 4 prompts an earlier run had dropped",
                     text)


def test_a_benchmark_file_name_is_data_in_the_card_not_markup(run, teacher, workdir):
    name = "[x](http:evil) `b` <img src=x>.jsonl"
    write_benchmark(workdir, BENCHMARK[:1], name=name)
    write_prompts(workdir, ["clean"])
    assert run("--decontaminate", name, "--export", "hf", tools="none").code == 0
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(
        (workdir / "train.hf.README.md").read_text())
    assert "<a " not in html and "<img" not in html


def test_prompts_already_in_the_output_holding_an_item_are_kept_and_named(run, teacher, workdir):
    write_prompts(workdir, CONTAMINATED[:1])
    assert run(tools="none").code == 0
    write_benchmark(workdir)
    result = run("--decontaminate", "bench.jsonl", tools="none")
    assert result.code == 0 and "Kept, though they hold a benchmark item: 1 prompt paid for already (1 in " \
        "the output already; the first: line 1)" in result.err
    [flag] = side_file(workdir)[1]
    assert flag["kept"] == "in the output already" and "dropped" not in flag and flag["item"] == "long-1"


def test_without_the_flags_nothing_is_imported_or_read_for_them(run, teacher, workdir):
    write_prompts(workdir, [PHOTOSYNTHESIS, NEAR_COPY])
    watch = ("import runpy, sys\nsys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit as e:\n    print(e.code, sorted({'rensa', 'xxhash'} & set(sys.modules)))\n")
    watched = subprocess.run([sys.executable, "-c", watch, str(SCRIPT), "prompts.jsonl", "--tools", "none",
                              "--base-url", teacher.base_url], cwd=workdir, env=subprocess_env(),
                             capture_output=True, text=True, timeout=60)
    assert watched.stdout.split("\n")[-2] == "0 []", watched.stderr  # neither library imported
    assert len(read_jsonl(workdir / "train.jsonl")) == 2
    assert not (workdir / "train.dropped.jsonl").exists() and "Prompt hygiene" not in watched.stderr
    assert run("--dedup", "--rescore", "--rewards", "tools_small.py", tools="none").code == 2
    bad = run("--decontaminate", "x.jsonl", "--decontaminate-ngram", "5", tools="none", subprocess=True)
    assert bad.code == 2 and "--decontaminate-ngram" in bad.err


def test_a_terminal_escape_in_a_prompt_or_an_item_id_is_not_printed(run, teacher, workdir):
    hostile = "\x1b]0;pwned\x07" + PHOTOSYNTHESIS
    write_prompts(workdir, [hostile, hostile.upper(), CONTAMINATED[0]])
    write_benchmark(workdir, [{**BENCHMARK[0], "id": "\x1b[2J\x1b]0;item\x07"}])
    result = run("--dedup", "--decontaminate", "bench.jsonl", tools="none", subprocess=True,
                 env=subprocess_env())
    assert result.code == 0 and "\x1b" not in result.err and "dropped line 2 (the same words)" in result.err
    assert "holds bench.jsonl item \\x1b[2J\\x1b]0;item\\x07: " in result.err  # written out, not sent
    assert side_file(workdir)[1][-1]["item"] == "\x1b[2J\x1b]0;item\x07"  # the file keeps it, as JSON


def test_the_report_made_later_counts_dropped_prompts_as_dropped_not_pending(run, teacher, workdir):
    write_prompts(workdir, [PHOTOSYNTHESIS, NEAR_COPY])
    assert run("--dedup", tools="none").code == 0
    later = run("--report", "--no-run", tools="none")  # from the files as they are: the dropped-prompts file
    assert later.code == 0
    data = report_data(workdir)
    assert data["counts"]["pending"] == 0 and data["hygiene"]["duplicates"] == 1


def test_dedup_without_its_library_is_exit_2_saying_what_to_install(teacher, workdir):
    blocker = workdir / "blocked"
    blocker.mkdir()
    (blocker / "rensa.py").write_text("raise ImportError('not installed here')\n")
    write_prompts(workdir, [PHOTOSYNTHESIS])
    result = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                        "--dedup", env=subprocess_env(PYTHONPATH=str(blocker)))
    assert result.code == 2 and "--dedup needs the rensa package, which requirements.txt pins" in result.err
    assert not teacher.requests and not (workdir / "train.jsonl").exists()
    assert_no_traceback(result.err)


def test_the_report_page_shows_the_hygiene_counts_in_real_chromium(run, teacher, workdir):
    import shutil

    from playwright.sync_api import sync_playwright

    write_prompts(workdir, [PHOTOSYNTHESIS, NEAR_COPY, CONTAMINATED[0], "Tell me a riddle about sheep"])
    write_benchmark(workdir)
    teacher.script("Tell me a riddle about sheep", answer("A farmer has seventeen sheep and all but nine of "
                                                          "them run away into the hills one stormy night."))
    assert run("--dedup", "--decontaminate", "bench.jsonl", "--report", tools="none").code == 0
    browser_path = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path)
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((workdir / "train.report.html").as_uri())
        page.wait_for_selector("#count-answers-quoting")
        cards = ("dropped-duplicates", "dropped-benchmark", "answers-quoting", "written", "pending")
        shown = {card: page.inner_text(f"#count-{card}") for card in cards}
        browser.close()
    assert errors == [] and shown == {"dropped-duplicates": "1", "dropped-benchmark": "1",
                                      "answers-quoting": "1", "written": "2", "pending": "0"}


def test_a_prompt_with_turns_paused_is_never_dropped_and_its_new_copy_is(run, teacher, workdir):
    """A tool rollout pays for its first turn and pauses (a 402); the same question is then added at the top
    under a new id. With --dedup the paused prompt stays and goes on from its saved turn; the new copy is
    dropped: no turn is bought twice."""
    question = "Add 2 and 3 with the tool, then tell me the sum."
    teacher.script(question, call_tools(("add", {"a": 2, "b": 3})), status(402, "Insufficient credits"),
                   answer("5"))
    write_prompts(workdir, [{"id": "q-sum", "prompt": question}])
    assert run("--dedup", subprocess=True).code != 0
    assert any(r.get("prompt_id") == "q-sum" for r in read_jsonl(workdir / "train.paused.jsonl"))
    write_prompts(workdir, [{"id": "q-sum-v2", "prompt": question}, {"id": "q-sum", "prompt": question}])
    teacher.requests.clear()
    result = run("--dedup", subprocess=True)
    assert result.code == 0, result.err
    assert [body["messages"][-1]["role"] for body in teacher.requests] == ["tool"]  # the saved turn goes on
    assert [r["metadata"]["prompt_id"] for r in result.records()] == ["q-sum"]
    _, drops = side_file(workdir)
    assert ([(d["prompt_id"], d["dropped"], d["duplicate_of"]) for d in drops]
            == [("q-sum-v2", "duplicate", "q-sum")])
    assert 'kept line 2 (paid for already) "Add 2 and 3' in result.err


def test_a_prompt_with_a_line_of_any_sample_is_never_listed_dropped(run, teacher, workdir):
    """The copy's only line is sample 1 (its sample 0 failed); a later run asks one sample with --dedup: the
    copy is paid for, so it stays (its sample 0 runs); nothing listed as dropped has a line in the output."""
    write_prompts(workdir, [{"id": "first", "prompt": "What is 2+2?"},
                            {"id": "copy", "prompt": "what is 2 + 2"}])
    teacher.script("what is 2 + 2", status(400, "bad request"))
    assert run("--samples", "2", "-c", "1", "--start-concurrency", "1", tools="none").code == 1
    assert sorted((r["metadata"]["prompt_id"], r["metadata"]["sample"])
                  for r in read_jsonl(workdir / "train.jsonl")) == [("copy", 1), ("first", 0), ("first", 1)]
    result = run("--dedup", "--export", "hf", tools="none", subprocess=True)
    assert result.code == 0, result.err
    lines = [(r["metadata"]["prompt_id"], r["metadata"]["sample"])
             for r in read_jsonl(workdir / "train.jsonl")]
    assert lines[-1] == ("copy", 0)
    assert side_file(workdir)[1] == []  # both paid for: neither dropped


def card_text(workdir) -> str:
    return " ".join((workdir / "train.hf.README.md").read_text().split())


def test_a_run_without_the_flags_keeps_the_list_of_what_it_does_not_run(run, teacher, workdir):
    """A --dedup run drops two copies; a later run with neither flag and -n 1 has nothing to do: the list
    stays whole, nothing says it was removed, and the card says what was dropped. A run with -n 3 runs one of
    them: that one is taken off the list, and the card counts the other."""
    write_prompts(workdir, ["What is 2+2?", "what is 2 + 2", "What is 3+3?", "WHAT IS 3+3"])
    assert run("--dedup", tools="none").code == 0
    before = (workdir / "train.dropped.jsonl").read_bytes()
    teacher.requests.clear()
    idle = run("-n", "1", "--export", "hf", tools="none", subprocess=True)
    assert (idle.code == 0 and not teacher.requests and "removed" not in idle.err
            and "Nothing to do" in idle.err)
    assert (workdir / "train.dropped.jsonl").read_bytes() == before
    assert "- `--dedup`: 2 repeating another prompt word for word" in card_text(workdir)
    some = run("-n", "3", "--export", "hf", tools="none", subprocess=True)
    assert some.code == 0 and sent(teacher) == ["what is 2 + 2"]
    assert "train.dropped.jsonl: 1 prompt it listed as dropped are in this run (it has neither --dedup nor " \
        "--decontaminate): taken off the list; 1 stay on it." in " ".join(some.err.split())
    assert [d["line"] for d in side_file(workdir)[1]] == [4]
    assert "- `--dedup`: 1 repeating another prompt word for word" in card_text(workdir)
    assert read_jsonl(workdir / "train.runs.jsonl")[-1]["hygiene"] == {"ran_listed": 1}


def test_merged_shards_keep_their_account_of_what_was_dropped(teacher, workdir):
    """Shards run --dedup; their outputs and runs files are merged as docs/scale.md says. Without their
    dropped-prompts files the card says what each shard's run recorded (and that the list is not here); with
    them merged too, it counts the merged list."""
    write_prompts(workdir, [f"Question number {i}?" for i in range(6)]
                  + ["question number 1", "QUESTION NUMBER 2"])
    for shard in range(2):
        done = run_script(workdir, "prompts.jsonl", "--tools", "none", "--base-url", teacher.base_url,
                          "--dedup", "--shard", f"{shard}/2", "-o", f"train.shard-{shard}-of-2.jsonl")
        assert done.code == 0, done.err
    for suffix in ("", ".runs"):
        (workdir / f"train{suffix}.jsonl").write_bytes(b"".join(
            (workdir / f"train.shard-{shard}-of-2{suffix}.jsonl").read_bytes() for shard in range(2)))
    merged = run_script(workdir, "prompts.jsonl", "--tools", "none", "--export", "hf", "--no-run")
    assert merged.code == 0, merged.err
    text = card_text(workdir)
    assert "None: no run" not in text and "No list of dropped prompts is here (`train.dropped.jsonl`)" in text
    assert re.findall(r"\(shard `(\d)/2`\) used `--dedup` and dropped (\d) as `duplicate` of 8 prompts",
                      text) == [("0", "1"), ("1", "1")]
    (workdir / "train.dropped.jsonl").write_bytes(b"".join(
        (workdir / f"train.shard-{shard}-of-2.dropped.jsonl").read_bytes() for shard in range(2)))
    listed = run_script(workdir, "prompts.jsonl", "--tools", "none", "--export", "hf", "--report", "--no-run")
    assert listed.code == 0, listed.err
    assert "Of the 8 prompts of `prompts.jsonl`, these were dropped before anything was sent, each listed " \
        "in `train.dropped.jsonl` (2 shards' lists merged) with why:" in card_text(workdir)
    assert "- `--dedup`: 2 repeating another prompt word for word" in card_text(workdir)
    assert report_data(workdir)["hygiene"]["duplicates"] == 2


def test_a_hand_edited_dropped_file_is_read_by_one_rule_and_its_odd_lines_named(run, teacher, workdir):
    write_prompts(workdir, ["What is 2+2?", "what is 2 + 2", "What is 3+3?"])
    assert run("--dedup", tools="none").code == 0
    with open(workdir / "train.dropped.jsonl", "a") as f:
        for odd in ({"prompt_id": "x", "dropped": {"a": 1}}, {"prompt_id": 7, "dropped": "duplicate"},
                    {"hygiene": "no"}, ["a list"],
                    {"prompt_id": "y", "dropped": "duplicate", "kept": "both"}):
            f.write(json.dumps(odd) + "\n")
        f.write("{torn\n\n")
    for extra in (["--export", "hf"], ["--report"]):
        result = run(*extra, "--no-run", tools="none", subprocess=True)
        assert result.code == 0, result.err
        assert_no_traceback(result.err)
        assert "train.dropped.jsonl:3: neither \"dropped\" (duplicate, near duplicate, benchmark) nor " \
            "\"kept\" (a reason): left out of the card and the report" in result.err
        assert "train.dropped.jsonl:4: no string \"prompt_id\"" in result.err
        assert "train.dropped.jsonl:8" not in result.err  # five named at most, and the blank line is no line
    assert "- `--dedup`: 1 repeating another prompt word for word" in card_text(workdir)
    assert (report_data(workdir)["hygiene"]["duplicates"] == 1
            and report_data(workdir)["counts"]["pending"] == 0)


def test_benchmark_names_reach_the_terminal_escaped_and_secrets_nowhere(run, teacher, workdir):
    """A benchmark file in a folder is named with terminal escapes and a newline that would forge a summary
    line, and an API key is in another's path and an item's id: the terminal shows the escapes written out,
    and neither the terminal nor any file the run writes holds the key."""
    key = "sk-or-v1-" + "b3nch" * 12 + "abcd"
    item = BENCHMARK[0]["question"]
    folder = workdir / "bd"
    folder.mkdir()
    hostile_name = "e\x1b]0;PWNED\x07\x1b[2J\nDone: 0 new rollouts.jsonl"
    (folder / hostile_name).write_text(json.dumps({"question": item}) + "\n")
    keyed = f"bench-{key}.jsonl"
    write_benchmark(workdir, [{"id": "item-" + key,
                               "question": "Name the largest moon of the planet Saturn please now."}],
                    name=keyed)
    write_prompts(workdir, [item, "Quick quiz. NAME the largest moon of the planet Saturn, please; now!",
                            "hello"])
    teacher.script("hello", answer("The largest moon of the planet Saturn please now is Titan; " + item))
    result = run("--decontaminate", "bd", keyed, "--export", "hf", "--report", tools="none", subprocess=True,
                 env=subprocess_env(OPENROUTER_API_KEY=key))
    assert result.code == 0, result.err
    assert "\x1b" not in result.err and "\x07" not in result.err
    assert not any(line.startswith("Done: 0 new rollouts.jsonl") for line in result.err.splitlines())
    assert "holds bd/e\\x1b]0;PWNED\\x07\\x1b[2J\\nDone: 0 new rollouts.jsonl item line 1" in result.err
    tail = key[len("sk-or-v1-"):]
    assert tail not in result.err
    written = [path.name for path in workdir.iterdir()
               if path.is_file() and path.name not in (keyed, "prompts.jsonl")
               and tail.encode() in path.read_bytes()]
    assert written == [] and len(side_file(workdir)[1]) == 2
    refused = run("--decontaminate", f"missing-{key}/\x1b[2J.jsonl", tools="none", subprocess=True,
                  env=subprocess_env(OPENROUTER_API_KEY=key))
    assert refused.code == 2 and tail not in refused.err and "\x1b" not in refused.err
    assert "missing-***/\\x1b[2J.jsonl: no such benchmark file" in refused.err
    # the test's own input holds the key, as no file the run wrote may (conftest's grep)
    (workdir / keyed).unlink()


def test_a_benchmark_file_changed_during_a_run_is_a_note_at_export_not_exit_2(run, teacher, workdir):
    """The prompts are checked against a benchmark file, which is emptied while the run goes on: the run ends
    as it would (exit 0), its export and card are written, and both say the answers were not checked. Changed
    into another usable file, the answers are checked against it as it is, which the terminal and the card say
    (its sha256). Only --no-run, which writes nothing before its check, stops (exit 2) on a file it cannot
    use."""
    write_benchmark(workdir)
    write_prompts(workdir, [CONTAMINATED[0], "hello", "world"])

    def empties_the_benchmark(body):
        (workdir / "bench.jsonl").write_text("")
        return answer("ok")(body)

    teacher.script("hello", empties_the_benchmark)
    result = run("--decontaminate", "bench.jsonl", "--export", "hf", tools="none", subprocess=True)
    assert result.code == 0, result.err
    assert len(read_jsonl(workdir / "train.jsonl")) == 2 and (workdir / "train.hf.jsonl").is_file()
    assert ("Benchmark check of the answers: not made: bench.jsonl: empty: no benchmark item in it."
            in result.err)
    assert ("Answers quoting a benchmark item: not checked at this export: `bench.jsonl: empty"
            in card_text(workdir))
    write_benchmark(workdir, BENCHMARK[:2])
    again = run("--decontaminate", "bench.jsonl", "--export", "hf", "--no-run", tools="none", subprocess=True)
    sha = hashlib.sha256((workdir / "bench.jsonl").read_bytes()).hexdigest()
    assert again.code == 0 and "bench.jsonl changed since the prompts were checked (sha256 " in again.err
    assert f"{sha} now): the answers were checked against it as it is now." in again.err
    assert f"against `bench.jsonl` (sha256 `{sha}`)" in card_text(workdir)
    (workdir / "bench.jsonl").write_text("")
    before = {path.name: path.stat().st_mtime_ns for path in workdir.iterdir()}
    refused = run("--decontaminate", "bench.jsonl", "--export", "hf", "--no-run", tools="none",
                  subprocess=True)
    assert refused.code == 2 and "bench.jsonl: empty" in refused.err
    assert {path.name: path.stat().st_mtime_ns for path in workdir.iterdir()} == before


def test_a_utf16_benchmark_file_is_named_as_such(run, teacher, workdir):
    write_prompts(workdir, ["a question"])
    for name, data in (("bom.jsonl", '{"question": "q"}\n'.encode("utf-16")),
                       ("le.txt", "What is two plus two, asked plainly?\n".encode("utf-16-le"))):
        (workdir / name).write_bytes(data)
        result = run("--decontaminate", name, tools="none", subprocess=True)
        assert (result.code == 2 and f"{name}: UTF-16 text, not UTF-8" in result.err
                and "parquet" not in result.err)
        assert "iconv -f UTF-16 -t UTF-8" in result.err and not teacher.requests
