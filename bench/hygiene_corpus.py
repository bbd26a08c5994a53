#!/usr/bin/env python3
"""Seeded synthetic corpus for figure 18 (bench/hygiene.py): --dedup and --decontaminate on planted sets.

  python bench/hygiene_corpus.py --n 1000000 --items 100000 --out DIR     # ~45 s, ~730 MB

Writes, into --out DIR:
  prompts.jsonl   N lines {"id": "p0000000", "prompt": "..."} (the generator's input format)
  bench.jsonl     benchmark items {"id": "b000000", "question": "..."} (--items of them)
  bench.txt       the same items, plain text, one a line
  truth.json      what was planted, by 0-based line number of prompts.jsonl

Text: a 30,150-word vocabulary (150 English function words, then seeded pseudo-words), word ranks drawn from a
Zipf law (s=1.05, so the top 100 words are about half of all words, as in English); each prompt has a topic
(one of 500, each with a 300-word sub-vocabulary) that supplies ~30% of its words, so prompts of a topic share
vocabulary; 20% of prompts start with one of 300 instruction prefixes (6-16 words), as real prompt sets do.
Lengths: lognormal around 50 words (5..200). Sentences of 5-15 words, capitalised, with commas.

Planted in the prompts (every planted group's original comes first in file order):
  near      near-copy groups: an original (20-120 words) and 1-4 copies, each with 1-3 word edits
            (substitute, insert 1-2 words, delete, swap/move a word locally) plus case/punctuation/space
            noise.
            Truth: every copy must be dropped (it is near the kept original).
  exact     exact-after-normalising copies: only case, punctuation and whitespace changed.
  siblings  topic siblings (NOT duplicates): 3 prompts sharing a 12-20-word instruction and a topic, each
            with its own 25-45-word body from the topic vocabulary.
  slots     short one-slot variants (NOT duplicates, the hard case): 3 prompts of 10-18 words from one
            template differing in 1 slot word ("What is the capital of France?" / "... of Peru?").
  templated long-template variants (NOT duplicates, the hardest case for any shingle size): 3 prompts
            sharing a 30-60-word template, each ending in its own 5-15-word question.
  contaminated  prompts containing a benchmark item's text: a 13-40-word span of a long item (70%), a whole
            8-12-word item (20%), or being exactly a 3-7-word item (10%); case/punctuation changed.
  clean     controls that must NOT be flagged: an 8-12-word span of a long item (40%), a benchmark's shared
            boilerplate instruction plus a new question (30%), a long item's words shuffled (30%).
"""
import argparse
import json
import os
import time

import numpy as np

FUNCTION_WORDS = """the of and to a in is that for it as was with be by on not he i this are or his from at
which but have an they you were her she there one all we their can has been if more when will would who so no
what other its may into some out only about up time them these than then two do first any could my now over
such our man me even most made after also did many before must through back years where much your way well
down should because each just those people how too little state good very make world still own see men work
long get here between both life being under never day same another know while last might us great old year off
come since against go came right used take three part place put thing think help every""".split()
assert len(FUNCTION_WORDS) >= 150, len(FUNCTION_WORDS)
FUNCTION_WORDS = FUNCTION_WORDS[:150]

ONSETS = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br",
          "cl", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th", "tr", "ch", "sp", "sl", "qu", "cr", "bl"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y", "ee", "oa"]
CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "ck", "x", "rd", "th"]

N_TOPICS = 500
TOPIC_VOCAB = 300
BOILERPLATES = [
    "The following is a multiple choice question about {}. "
    "Choose the single best answer from the options given below.",
    "Read the passage carefully and answer the question that follows it, "
    "using only the information in the passage about {}.",
    "You are given a question from an exam on {}. "
    "Think step by step and then write the final answer on the last line.",
    "Below is a grade school math word problem about {}. "
    "Solve it and give the final numeric answer after the words The answer is.",
    "Answer the following trivia question about {} with a short phrase, "
    "without any explanation or additional commentary at all.",
]


def make_vocab(rng, size=30000):
    seen = set(FUNCTION_WORDS)
    words = list(FUNCTION_WORDS)
    while len(words) < size + len(FUNCTION_WORDS):
        nsyl = int(rng.choice([1, 2, 2, 3, 3, 3, 4]))
        w = "".join(ONSETS[rng.integers(len(ONSETS))] + VOWELS[rng.integers(len(VOWELS))]
                    for _ in range(nsyl))
        w += CODAS[rng.integers(len(CODAS))]
        if len(w) >= 2 and w not in seen:
            seen.add(w)
            words.append(w)
    return words


class Text:
    """Word sampling and formatting."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.vocab = make_vocab(rng)
        v = len(self.vocab)
        p = 1.0 / np.arange(1, v + 1) ** 1.05
        self.cdf = np.cumsum(p / p.sum())
        # topic vocabularies: content words (not function words), each topic 300 words, Zipf inside
        self.topics = np.stack([rng.choice(np.arange(150, v), TOPIC_VOCAB, replace=False)
                                for _ in range(N_TOPICS)])
        tp = 1.0 / np.arange(1, TOPIC_VOCAB + 1) ** 0.8
        self.tcdf = np.cumsum(tp / tp.sum())
        self.prefixes = [self.words(int(rng.integers(6, 17))) for _ in range(300)]
        self.topic_names = [self.vocab[int(t[0])] for t in self.topics]

    def word_ids(self, n, topic=None):
        ids = np.searchsorted(self.cdf, self.rng.random(n))
        ids = np.minimum(ids, len(self.vocab) - 1)
        if topic is not None:
            m = self.rng.random(n) < 0.3
            k = int(m.sum())
            if k:
                ids[m] = self.topics[topic][np.minimum(np.searchsorted(self.tcdf, self.rng.random(k)),
                                                       TOPIC_VOCAB - 1)]
        return ids

    def words(self, n, topic=None):
        v = self.vocab
        return [v[i] for i in self.word_ids(n, topic)]

    def topic_words(self, n, topic):
        ids = self.topics[topic][np.minimum(np.searchsorted(self.tcdf, self.rng.random(n)), TOPIC_VOCAB - 1)]
        return [self.vocab[i] for i in ids]

    def length(self):
        return int(np.clip(self.rng.lognormal(np.log(46), 0.45), 5, 200))

    def fmt(self, words):
        """Sentences of 5-15 words: capitalised, commas, '.' or '?' at the end."""
        rng = self.rng
        out = []
        n = len(words)
        r = rng.random(n)
        ends = set(np.cumsum(rng.integers(5, 16, size=n // 5 + 2)).tolist())
        start = True
        for i, w in enumerate(words):
            if start:
                w = w[:1].upper() + w[1:]
                start = False
            if i == n - 1 or (i + 1) in ends:
                w += "?" if r[i] < 0.25 else "."
                start = True
            elif r[i] < 0.08:
                w += ","
            out.append(w)
        return " ".join(out)

    def noise(self, text, strength=1.0):
        """Case, punctuation and whitespace changes only (normalised words unchanged)."""
        rng = self.rng
        toks = text.split(" ")
        r = rng.random((len(toks), 4))
        out = []
        for t, (a, b, c, d) in zip(toks, r):
            if a < 0.06 * strength:
                t = t.upper() if b < 0.3 else t.lower() if b < 0.6 else t.capitalize()
            if c < 0.05 * strength:
                t = t.rstrip(".,?!;:") if t[-1:] in ".,?!;:" else t + ("," if d < 0.5 else ";")
            out.append(t)
        sep = "  " if rng.random() < 0.3 * strength else " "
        s = sep.join(out)
        if rng.random() < 0.3 * strength:
            s = s.rstrip(".?!") + ("!" if rng.random() < 0.5 else "")
        if rng.random() < 0.2 * strength:
            s = " " + s + " \n"
        return s.strip(" ") if rng.random() < 0.5 else s


def prompt_words(T, topic=None, n=None):
    n = n if n is not None else T.length()
    ws = T.words(n, topic)
    if T.rng.random() < 0.2:
        ws = list(T.prefixes[int(T.rng.integers(len(T.prefixes)))]) + ws
    return ws


def edit_copy(T, words):
    """1-3 word-level edits. Returns (new words, list of ops)."""
    rng = T.rng
    ws = list(words)
    ops = []
    for _ in range(int(rng.integers(1, 4))):
        op = ["sub", "ins", "del", "swap"][int(rng.integers(4))]
        n = len(ws)
        i = int(rng.integers(n))
        if op == "sub":
            ws[i] = T.words(1)[0]
        elif op == "ins":
            k = int(rng.integers(1, 3))
            ws[i:i] = T.words(k)
            op = f"ins{k}"
        elif op == "del" and n > 10:
            del ws[i]
        elif op == "swap" and n > 4:
            j = min(n - 1, i + int(rng.integers(1, 4)))
            w = ws.pop(i)
            ws.insert(j, w)
        else:
            continue
        ops.append(op)
    return ws, ops


def item_own_words(item, kind):
    """An item's words, past a boilerplate item's shared 25-word instruction when 13 or more remain."""
    words = item.split()
    skip = 25 if kind == "boiler" else 0
    return words[skip:] if len(words) - skip >= 13 else words


def make_items(T, n_items):
    """Benchmark items: ~60 words; 5% start with a shared boilerplate; 4% are 8-12 words; 1% are 3-7 words."""
    rng = T.rng
    items = []
    kinds = []
    boiler_words = []
    for _ in range(n_items):
        u = rng.random()
        topic = int(rng.integers(N_TOPICS))
        if u < 0.01:
            ws = T.words(int(rng.integers(3, 8)), topic)
            kinds.append("tiny")
        elif u < 0.05:
            ws = T.words(int(rng.integers(8, 13)), topic)
            kinds.append("short")
        else:
            n = int(np.clip(rng.lognormal(np.log(58), 0.35), 13, 300))
            ws = T.words(n, topic)
            if u < 0.10:
                b = BOILERPLATES[int(rng.integers(len(BOILERPLATES)))].format(T.topic_names[topic % 5])
                items.append(b + " " + T.fmt(ws))
                kinds.append("boiler")
                boiler_words.append(len(b.split()))
                continue
            kinds.append("long")
        items.append(T.fmt(ws))
    return items, kinds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="prompts in total (default 1,000,000)")
    ap.add_argument("--items", type=int, default=100_000, help="benchmark items (default 100,000)")
    ap.add_argument("--seed", type=int, default=37)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    t0 = time.time()
    os.makedirs(a.out, exist_ok=True)
    T = Text(a.seed)
    rng = T.rng
    n = a.n
    n_near = min(2000, n // 50)
    n_exact = min(2000, n // 50)
    n_sib = min(1000, n // 100)
    n_slot = min(1000, n // 100)
    n_tmpl = min(500, n // 200)
    n_cont = min(2000, n // 50)
    n_clean = min(2000, n // 50)

    items, kinds = make_items(T, a.items)
    with open(os.path.join(a.out, "bench.jsonl"), "w") as f:
        for i, it in enumerate(items):
            f.write(json.dumps({"id": f"b{i:06d}", "question": it, "answer": "A"}) + "\n")
    with open(os.path.join(a.out, "bench.txt"), "w") as f:
        for it in items:
            f.write(it + "\n")
    kinds_arr = np.array(kinds)
    long_ids = np.flatnonzero((kinds_arr == "long") | (kinds_arr == "boiler"))
    short_ids = np.flatnonzero(kinds_arr == "short")
    tiny_ids = np.flatnonzero(kinds_arr == "tiny")

    # planted units: list of (texts, role). Each unit's texts are placed in file order as given.
    units = []  # (kind, [texts], extra)
    for _ in range(n_near):
        topic = int(rng.integers(N_TOPICS))
        base = prompt_words(T, topic, int(np.clip(rng.lognormal(np.log(50), 0.4), 20, 120)))
        texts = [T.fmt(base)]
        ops = []
        for _ in range(int(rng.integers(1, 5))):
            ws, o = edit_copy(T, base)
            texts.append(T.noise(T.fmt(ws)))
            ops.append(o)
        units.append(("near", texts, ops))
    for _ in range(n_exact):
        base = T.fmt(prompt_words(T, int(rng.integers(N_TOPICS))))
        units.append(("exact", [base, T.noise(base, 2.0)], None))
    for _ in range(n_sib):
        topic = int(rng.integers(N_TOPICS))
        instr = T.words(int(rng.integers(12, 21)), topic)
        texts = [T.fmt(instr + T.topic_words(int(rng.integers(25, 46)), topic)) for _ in range(3)]
        units.append(("siblings", texts, None))
    for _ in range(n_slot):
        m = int(rng.integers(10, 19))
        tmpl = T.words(m, int(rng.integers(N_TOPICS)))
        pos = int(rng.integers(2, m))
        fills = set()
        while len(fills) < 3:
            fills.add(T.vocab[int(rng.integers(2000, 20000))])
        texts = []
        for w in sorted(fills):
            ws = list(tmpl)
            ws[pos] = w
            texts.append(T.fmt(ws))
        units.append(("slots", texts, None))
    for _ in range(n_tmpl):
        # long shared template (30-60 words) + a short distinct question (5-15 words): different prompts
        tmpl = T.words(int(rng.integers(30, 61)), int(rng.integers(N_TOPICS)))
        texts = [T.fmt(tmpl + T.words(int(rng.integers(5, 16)))) for _ in range(3)]
        units.append(("templated", texts, None))
    for _ in range(n_cont):
        u = rng.random()
        if u < 0.7:
            it = int(rng.choice(long_ids))
            iw = item_own_words(items[it], kinds[it])
            L = int(rng.integers(13, 41))
            L = min(L, len(iw))
            s = int(rng.integers(0, len(iw) - L + 1))
            span = " ".join(iw[s:s + L])
            text = (T.fmt(T.words(int(rng.integers(0, 21)))) + " " + span + " "
                    + T.fmt(T.words(int(rng.integers(0, 21)))))
            how = f"span{L}"
        elif u < 0.9:
            it = int(rng.choice(short_ids))
            text = (T.fmt(T.words(int(rng.integers(3, 21)))) + " " + items[it] + " "
                    + T.fmt(T.words(int(rng.integers(0, 21)))))
            how = "short-item"
        else:
            it = int(rng.choice(tiny_ids))
            text = items[it]
            how = "tiny-item-whole"
        units.append(("contaminated", [T.noise(text.strip())], (f"b{it:06d}", how)))
    for _ in range(n_clean):
        u = rng.random()
        if u < 0.4:
            it = int(rng.choice(long_ids))
            iw = item_own_words(items[it], kinds[it])
            L = int(rng.integers(8, 13))
            s = int(rng.integers(0, len(iw) - L + 1))

            def norm(w):
                return w.lower().strip(".,?!;:")

            # the words around the span must not continue the item (else it is a 13-word overlap after all)
            before = norm(iw[s - 1]) if s > 0 else None
            after = norm(iw[s + L]) if s + L < len(iw) else None
            pre = T.words(int(rng.integers(5, 30)))
            post = T.words(int(rng.integers(5, 30)))
            while pre[-1] == before:
                pre[-1] = T.words(1)[0]
            while post[0] == after:
                post[0] = T.words(1)[0]
            text = T.fmt(pre) + " " + " ".join(iw[s:s + L]) + " " + T.fmt(post)
            how = f"span{L}"
        elif u < 0.7:
            b = BOILERPLATES[int(rng.integers(len(BOILERPLATES)))].format(T.topic_names[int(rng.integers(5))])
            text = b + " " + T.fmt(T.words(int(rng.integers(20, 60))))
            how = "boilerplate+new"
        else:
            it = int(rng.choice(long_ids))
            iw = items[it].split()
            perm = rng.permutation(len(iw))
            text = " ".join(iw[k] for k in perm)
            how = "shuffled-item"
        units.append(("clean", [T.noise(text)], how))

    n_planted = sum(len(u[1]) for u in units)
    n_bg = n - n_planted
    assert n_bg > 0, "corpus too small for the planted sets"
    # positions: background gets one random key each; a unit gets sorted keys (its first text first)
    keys_bg = rng.random(n_bg)
    unit_keys = [np.sort(rng.random(len(u[1]))) for u in units]
    all_keys = np.concatenate([keys_bg] + unit_keys)
    order = np.argsort(all_keys, kind="stable")
    line_of = np.empty(n, dtype=np.int64)
    line_of[order] = np.arange(n)
    # planted slots start at n_bg in the concatenation
    truth = {"n": n, "seed": a.seed, "near": [], "exact": [], "siblings": [], "slots": [], "templated": [],
             "contaminated": [], "clean": []}
    planted_texts = {}
    pos = n_bg
    for kind, texts, extra in units:
        lines = [int(line_of[pos + k]) for k in range(len(texts))]
        for k, t in enumerate(texts):
            planted_texts[lines[k]] = t
        if kind == "near":
            truth["near"].append({"lines": lines, "ops": extra})
        elif kind in ("exact", "siblings", "slots", "templated"):
            truth[kind].append(lines)
        elif kind == "contaminated":
            truth["contaminated"].append({"line": lines[0], "item": extra[0], "how": extra[1]})
        else:
            truth["clean"].append({"line": lines[0], "how": extra})
        pos += len(texts)

    bg_line = line_of[:n_bg]
    # write in file order; background texts generated on the fly (in line order, seeded)
    inv = np.full(n, -1, dtype=np.int64)
    inv[bg_line] = np.arange(n_bg)
    with open(os.path.join(a.out, "prompts.jsonl"), "w") as f:
        buf = []
        for line in range(n):
            if inv[line] >= 0:
                text = T.fmt(prompt_words(T, int(rng.integers(N_TOPICS))))
            else:
                text = planted_texts[line]
            buf.append(json.dumps({"id": f"p{line:07d}", "prompt": text}))
            if len(buf) >= 10000:
                f.write("\n".join(buf) + "\n")
                buf = []
        if buf:
            f.write("\n".join(buf) + "\n")
    truth["counts"] = {k: len(v) for k, v in truth.items() if isinstance(v, list)}
    truth["counts"]["near_copies"] = sum(len(g["lines"]) - 1 for g in truth["near"])
    truth["counts"]["items"] = len(items)
    truth["counts"]["item_kinds"] = {k: int((kinds_arr == k).sum())
                                     for k in ("long", "boiler", "short", "tiny")}
    with open(os.path.join(a.out, "truth.json"), "w") as f:
        json.dump(truth, f)
    print(json.dumps(truth["counts"]), f"{time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
