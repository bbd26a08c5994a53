"""The dataset line has one owner: the builder, the key rule, the reader and the rewrite helper agree."""

from __future__ import annotations

import json
import os

import pytest
from conftest import read_jsonl

import generate_distillation_data as gdd


def line(metadata) -> bytes:
    return json.dumps({"metadata": metadata, "messages": []}).encode()


SHAPES = {
    "good": line({"prompt_id": "a", "sample": 0}),
    "good, with an attempt": line({"prompt_id": "a", "sample": 1, "attempt": 2}),
    "sample a bool": line({"prompt_id": "a", "sample": True}),
    "sample a string": line({"prompt_id": "a", "sample": "0"}),
    "sample a float": line({"prompt_id": "a", "sample": 0.0}),
    "prompt_id a number": line({"prompt_id": 7, "sample": 0}),
    "attempt a string": line({"prompt_id": "a", "sample": 0, "attempt": "2"}),
    "no sample": line({"prompt_id": "a"}),
    "metadata a list": line(["a", 0]),
    "a list": b'[{"metadata": {"prompt_id": "a", "sample": 0}}]',
}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_resume_scan_and_key_of_agree_on_every_shape_of_line(tmp_path, shape):
    """The scan writes RolloutKey.of_line's rule out for speed; both must give the same answer."""
    path = tmp_path / "train.jsonl"
    path.write_bytes(SHAPES["good"].replace(b'"a"', b'"anchor"') + b"\n" + SHAPES[shape] + b"\n")
    key = gdd.RolloutKey.of_line(gdd.parse_line(SHAPES[shape]))
    try:
        scan = gdd.OutputFile(path).scan()
    except gdd.UsageError:  # valid JSON that is not a line of ours: refused as a foreign file
        assert key is None
        return
    assert (gdd.RolloutKey.hashed(key[0], key[1]) in scan.done) if key else len(scan.done) == 1


def test_a_built_line_starts_as_every_line_of_ours_and_names_only_known_keys():
    job = gdd.RolloutJob(gdd.Prompt("p1", [{"role": "user", "content": "q"}], {"domain": "x", "sample": 9}, "q"), 0, 0)
    outcome = gdd.Outcome(job, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                          gdd.Usage(), 1, "stop")
    record = gdd.build_line(outcome, gdd.LineFormat("teacher/m", True, False, str), [])
    encoded = gdd.encode_line(record)
    assert encoded.startswith(gdd.OUR_PREFIXES[0]) and gdd.RolloutKey.of_line(gdd.parse_line(encoded)) == ("p1", 0, 1)
    assert set(record["metadata"]) - {"domain"} <= gdd.OUR_METADATA_KEYS
    assert {"prompt_id", "sample", "teacher", "turns", "usage", "attempt", "reward", "incomplete"} <= \
        gdd.OUR_METADATA_KEYS


def test_a_failed_entry_keys_by_its_own_fields():
    entry = {"prompt_id": "p", "sample": 2, "metadata": {"prompt_id": "not this one"}}
    assert gdd.RolloutKey.of_line(entry) == ("p", 2, 1)


def test_the_reader_drops_a_bom_and_keeps_an_unterminated_last_line_apart(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(gdd.UTF8_BOM + b'{"a": 1}\n{"b": 2}\n{"c": 3')
    reader = gdd.LineReader(path, chunk_size=5)
    records = [record for _, record in reader.records()]
    assert records == [{"a": 1}, {"b": 2}, None] and reader.bom and reader.unterminated == b'{"c": 3'
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_a_rewrite_goes_through_a_symlink_and_leaves_nothing_behind_on_error(tmp_path):
    target = tmp_path / "data.jsonl"
    target.write_text("old\n")
    os.symlink("data.jsonl", tmp_path / "link.jsonl")
    with gdd.replaced_atomically(tmp_path / "link.jsonl") as f:
        f.write(b"new\n")
    assert (tmp_path / "link.jsonl").is_symlink() and target.read_text() == "new\n"
    with pytest.raises(RuntimeError):
        with gdd.replaced_atomically(tmp_path / "link.jsonl") as f:
            f.write(b"half")
            raise RuntimeError("crash midway")
    assert target.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "link.jsonl"]
