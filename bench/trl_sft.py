"""Train a student on the `--export hf` file with TRL's SFTTrainer: the recipe of docs/training.md, checked.

Not in the test suite: it needs torch. In a venv of its own (the project's .venv makes the data):

    python3 -m venv /tmp/trl && /tmp/trl/bin/pip install torch trl datasets tokenizers
    /tmp/trl/bin/python bench/trl_sft.py                    # makes a dataset first, then trains on it
    /tmp/trl/bin/python bench/trl_sft.py train.hf.jsonl     # or trains on yours

Without a file it runs the generator (with the project's .venv) against the loopback teacher: 120 tool
rollouts (a call to `add`, its result, the answer), exported with `--export hf`. No tokenizer can be
downloaded offline, so a small BPE is trained on the data and given Qwen3's chat template as TRL ships it
(tools in the system turn, `<tool_call>` and `<tool_response>`, `{% generation %}` markers for
`assistant_only_loss`); the model is a tiny randomly initialised Qwen3. It prints the loss at each logged
step, and exits 1 unless the loss fell by a third.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import datasets
import torch
import trl
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM, TrainerCallback
from trl import SFTConfig, SFTTrainer

ROOT = Path(__file__).resolve().parent.parent
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>",
           "</tool_call>", "<tool_response>", "</tool_response>"]
TOOLS = '''
from rnow.core.tool import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b
'''


def make_dataset(folder: Path, prompts: int) -> Path:
    """The generator, run as users run it, against the loopback teacher: every prompt calls `add`, then
    answers."""
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from fake_teacher import FakeTeacher, answer, call_tools

    def step(body: dict):
        results = [m for m in body["messages"] if m.get("role") == "tool"]
        question = body["messages"][-1]["content"] if not results else ""
        if not results:
            a, b = (int(number) for number in re.findall(r"\d+", question))
            return call_tools(("add", {"a": a, "b": b}), content="Let me add them.")(body)
        return answer(f"The sum is {results[-1]['content']}.")(body)

    (folder / "tools.py").write_text(TOOLS)
    lines = (json.dumps({"prompt": f"What is {i} plus {3 * i + 7}?"}) + "\n" for i in range(prompts))
    (folder / "prompts.jsonl").write_text("".join(lines))
    teacher = FakeTeacher(default_step=step).start()
    try:
        python = ROOT / ".venv" / "bin" / "python"
        done = subprocess.run([str(python), str(ROOT / "generate_distillation_data.py"), "prompts.jsonl",
                               "--tools", "tools.py", "--base-url", teacher.base_url, "--export", "hf"],
                              cwd=folder, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    finally:
        teacher.stop()
    if done.returncode != 0:
        sys.exit(f"the generator failed:\n{done.stderr}")
    return folder / "train.hf.jsonl"


def make_tokenizer(dataset: datasets.Dataset, template: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the conversations as the template renders them."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = template
    texts = [tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
             for row in dataset]
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIAL,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = template
    return tokenizer


class Losses(TrainerCallback):
    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.seen.append(float(logs["loss"]))
            print(f"step {state.global_step:3d}  loss {logs['loss']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, help="an --export hf file (default: make one)")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trl-sft-"))
    data = args.data or make_dataset(work, 120)
    # The recipe: the hf export loads as it is; `tools` holds each line's tool schemas, `messages` the chat.
    dataset = datasets.load_dataset("json", data_files=str(data), split="train", cache_dir=str(work / "hf"))
    template = (Path(trl.__file__).parent / "chat_templates" / "qwen3_training.jinja").read_text()
    tokenizer = make_tokenizer(dataset, template)
    rendered = tokenizer.apply_chat_template(dataset[0]["messages"], tools=dataset[0]["tools"],
                                             tokenize=False)
    print(f"{dataset.num_rows} conversations; the first as the student sees it:\n{rendered}")
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    losses = Losses()
    trainer = SFTTrainer(
        model=Qwen3ForCausalLM(config), processing_class=tokenizer, train_dataset=dataset, callbacks=[losses],
        args=SFTConfig(output_dir=str(work / "out"), assistant_only_loss=True, max_steps=args.steps,
                       per_device_train_batch_size=8, learning_rate=3e-3, logging_steps=5, save_strategy="no",
                       report_to=[], use_cpu=True, max_length=1024, dataloader_num_workers=0))
    trainer.train()
    first, last = losses.seen[0], losses.seen[-1]
    print(f"loss {first:.2f} -> {last:.2f} over {args.steps} CPU steps (assistant tokens only)")
    sys.exit(0 if last < first * 2 / 3 else 1)


if __name__ == "__main__":
    main()
