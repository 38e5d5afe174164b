"""The arithmetic task: problems, the strict held-out split, its leak check, the digit tokenizer, the JSONL files.

Design (measured in a PyTorch prototype, /work/shared/GRPO_DEMO_NOTES.md at the time of writing):

    problem   a + b with a, b in 0..99: all 10,000 ordered pairs
    prompt    "{a:02d}+{b:02d}="        -> tokens <bos> a1 a0 + b1 b0 =   (always 7 tokens, no padding)
    answer    the sum's digits REVERSED, least significant first, not zero-padded, then <eos>
              19 -> "91"; 7+5=12 -> "21"; 99+99=198 -> "891"; 0+0 -> "0"
    split     held-out ~1,000 ordered pairs CLOSED UNDER SWAP: (a, b) held out <=> (b, a) held out, so
              neither order of a held-out problem is seen in SFT or RL; then 2,000 RL prompts, the rest SFT.

Reversed answers make each digit a function of the two operand digits at that place plus a carry from the digit
just emitted, which a 2-layer model learns much faster than most-significant-first (the notes: +47..+58 points
of GRPO gain reversed vs +27..+31 normal order).

This module imports neither MindSpore nor the trainer: it is the task, testable in milliseconds.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

MAX_OPERAND = 99
PROMPT_TOKENS = 7  # <bos> + 2 + '+' + 2 + '='
MAX_ANSWER_TOKENS = 4  # up to 3 digits + <eos>
# Pieces of the tokenizer, after unk=0 / bos=1 / eos=2 (Llama's special ids; pad is 0, the unk id, as in Llama2).
PIECES = tuple("0123456789") + (
    "+",
    "-",
    "=",
)  # '-' is unused by the addition task (kept for a subtraction variant)
VOCAB_SIZE = 3 + len(PIECES)

Pair = Tuple[int, int]


class LeakError(AssertionError):
    """A held-out problem (in either operand order) also appears in a training set."""


def prompt_text(a: int, b: int) -> str:
    """`07+12=`: both operands zero-padded to 2 digits, so every prompt is the same number of tokens."""
    return f"{a:02d}+{b:02d}="


def answer_text(a: int, b: int) -> str:
    """The sum's decimal digits reversed (least significant first), not zero-padded: 7+12 -> '91'."""
    return str(a + b)[::-1]


def parse_reversed(text: str) -> int:
    """Inverse of `answer_text` for display: '91' -> 19."""
    return int(text[::-1])


@dataclasses.dataclass(frozen=True)
class Split:
    """Disjoint sets of ordered pairs; `held_out` is closed under swapping the operands."""

    sft: Tuple[Pair, ...]
    rl: Tuple[Pair, ...]
    held_out: Tuple[Pair, ...]

    def sizes(self) -> Dict[str, int]:
        return {"sft": len(self.sft), "rl": len(self.rl), "held_out": len(self.held_out)}


def make_split(seed: int, held_out: int = 1000, rl: int = 2000, max_operand: int = MAX_OPERAND) -> Split:
    """The strict split: unordered pairs {a, b} are drawn (seeded) into the held-out set, both orders at once,
    until it holds at least `held_out` ordered pairs (1,000 or 1,001: a diagonal pair a+a counts once); the
    remaining ordered pairs are shuffled into `rl` RL prompts and the rest for SFT. Pure function of the seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    unordered = [(a, b) for a in range(max_operand + 1) for b in range(a, max_operand + 1)]
    order = rng.permutation(len(unordered))
    held: List[Pair] = []
    for i in order:
        a, b = unordered[i]
        held.extend([(a, b)] if a == b else [(a, b), (b, a)])
        if len(held) >= held_out:
            break
    held_set = set(held)
    rest = [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1) if (a, b) not in held_set]
    rest = [rest[i] for i in rng.permutation(len(rest))]
    if rl >= len(rest):
        raise ValueError(f"rl={rl} leaves no SFT problems ({len(rest)} pairs outside the held-out set)")
    split = Split(sft=tuple(rest[rl:]), rl=tuple(rest[:rl]), held_out=tuple(held))
    check_no_leak(split)
    return split


def check_no_leak(split: Split) -> None:
    """Raise LeakError unless the three sets are disjoint and no held-out pair is trained on in either order."""
    sft, rl, held = set(split.sft), set(split.rl), set(split.held_out)
    if len(sft) != len(split.sft) or len(rl) != len(split.rl) or len(held) != len(split.held_out):
        raise LeakError("a split holds the same pair twice")
    if sft & rl:
        raise LeakError(f"{len(sft & rl)} pairs are in both SFT and RL, e.g. {sorted(sft & rl)[:3]}")
    seen = sft | rl
    leaked = sorted(p for p in held if p in seen or (p[1], p[0]) in seen)
    if leaked:
        raise LeakError(
            f"{len(leaked)} held-out pairs are trained on in some operand order, e.g. {leaked[:3]}"
        )


def check_prompts_in_file(path: str, held_out: Iterable[Pair]) -> int:
    """Leak check on what a stage actually reads: no prompt of the JSONL `path` is a held-out problem in either
    operand order. Returns the number of lines checked."""
    banned = set()
    for a, b in held_out:
        banned.update({prompt_text(a, b), prompt_text(b, a)})
    n = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            prompt = json.loads(line)["prompt"]
            if prompt in banned:
                raise LeakError(f"{path}:{line_no}: prompt {prompt!r} is a held-out problem")
            n += 1
    return n


def write_jsonl(path: str, pairs: Sequence[Pair], kind: str) -> str:
    """`kind="sft"`: CValues-style `{"prompt", "pos_resp"}` lines (rlhf_data.py --mode sft);
    `kind="prompt"`: `{"prompt", "answer"}` lines (rlhf_data.py --mode prompt, the GRPO prompt dataset)."""
    key = {"sft": "pos_resp", "prompt": "answer"}[kind]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for a, b in pairs:
            f.write(json.dumps({"prompt": prompt_text(a, b), key: answer_text(a, b)}) + "\n")
    return path


def train_tokenizer(model_path: str) -> str:
    """A character-level SentencePiece model whose pieces are exactly unk=0, bos=1, eos=2 and `PIECES` (ids 3..15).

    mindrlhf's `train_sentencepiece` is Llama-style (BPE, dummy prefix '▁', byte fallback): it would put a '▁'
    piece in front of every prompt and every answer. Here there is no dummy prefix and no byte fallback, so
    '07+12=' is 6 pieces and '91' is 2, and `LlamaTokenizer` (and everything built on it) reads the file as usual.
    """
    import sentencepiece as spm

    lines = [
        prompt_text(a, b) + answer_text(a, b) for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1)
    ]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=out,
        model_type="char",
        vocab_size=VOCAB_SIZE,
        # Fixes their ids in PIECES order; '=' (last) is left to the char trainer, which refuses an empty alphabet.
        user_defined_symbols=list(PIECES[:-1]),
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        byte_fallback=False,
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
    tmp = model_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(out.getvalue())
    os.replace(tmp, model_path)
    return model_path


def check_tokenizer(tokenizer) -> None:
    """The tokenizer is what the task needs: 16 pieces, single-character digits/operators, 6-token prompts."""
    pieces = [tokenizer.sp.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    if tokenizer.vocab_size != VOCAB_SIZE or tuple(pieces[3:]) != PIECES:
        raise ValueError(f"{tokenizer.model_file}: expected pieces {list(PIECES)} at ids 3.., got {pieces}")
    for a, b in ((0, 0), (7, 12), (99, 99)):
        ids = tokenizer.encode(prompt_text(a, b), add_bos=True)
        if len(ids) != PROMPT_TOKENS:
            raise ValueError(f"prompt {prompt_text(a, b)!r} is {len(ids)} tokens, expected {PROMPT_TOKENS}")


def prompt_batch(tokenizer, pairs: Sequence[Pair]) -> np.ndarray:
    """`[N, 7]` int32 prompt ids `<bos> a1 a0 + b1 b0 =` (every row real: no padding, mask all ones)."""
    ids, mask = tokenizer.batch_encode_prompts([prompt_text(a, b) for a, b in pairs], PROMPT_TOKENS)
    if not mask.all():
        raise ValueError("a prompt is shorter than 7 tokens: the tokenizer is not the digit tokenizer")
    return ids


def exact_match(tokenizer, response_ids: np.ndarray, pairs: Sequence[Pair]) -> np.ndarray:
    """`[N]` float 1.0 where the tokens before the first EOS spell exactly the reversed sum, else 0.0.

    `response_ids [N, max_new]`; a row without EOS within max_new tokens scores 0 (it never finished).
    """
    eos = tokenizer.eos_id
    out = np.zeros(len(pairs), np.float64)
    for i, (a, b) in enumerate(pairs):
        row = [int(t) for t in response_ids[i]]
        if eos not in row:
            continue
        target = tokenizer.encode(answer_text(a, b))
        out[i] = float(row[: row.index(eos)] == target)
    return out
