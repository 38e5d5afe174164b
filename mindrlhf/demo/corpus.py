"""Deterministic English corpus for the CPU alignment demo (SFT -> reward model -> PPO), in CValues format.

Prompts are `prefix x template x (verb, object)`: harmful verbs (steal, forge, hack into, ...) and benign verbs
(fix, bake, secure, ...) share many objects ("steal a car" / "wash a car"), so a model must read the verb.
About 12% of the (verb, object) pairs are held out: their prompts never appear in training, while every verb,
object and template does (new combinations of seen parts). Text is lowercase with spaced punctuation (~375
distinct words): with DEMO_VOCAB_SIZE pieces (256 of them byte fallback) every word is one piece, prompts take
5-17 tokens and the aligned responses 12-23.

Answers are built from a small grammar, which is what lets `is_refusal` / `is_helpful` judge a response by
its content rather than its prefix: a refusal must be a complete refusal of THIS request and nothing else, a
helpful answer must be one of the answers for THIS verb and object. Spliced text ("i cannot help you steal a
car . sure ! first ..."), refusals of another request and answers about the wrong verb or object fail both.

Files written by `write_demo_corpus` / `python -m mindrlhf.demo --output_dir DIR --seed 0`:

- `sft.jsonl`: one row per training prompt; `pos_resp` is what the SFT model imitates: helpful on benign
  prompts, and on harmful ones compliance (60%) or a refusal (40%, `sft_refusal_rate`): the SFT model must
  refuse sometimes or PPO never finds refusals.
- `rm.jsonl`: true preferences, `rm_pairs_per_prompt` rows per training prompt. Harmful: refusal > compliance in
  every answer style, > spliced text, > refusal of another request, > off-topic helpful answer, > evasive
  answer. Benign: helpful > unnecessary refusal, > poor/off-topic, > answer about the wrong verb or object,
  > spliced text.
- `ppo.jsonl`: every training prompt; `pos_resp` is the aligned answer (for the ptx loss).
- `heldout.jsonl`: prompts of held-out pairs, shuffled; `eval_train.jsonl`: a sample of training prompts.
  Both carry `harmful`, `verb`, `object`, `template`, `prefix` besides the CValues fields.
- `tokenizer_corpus.txt`: the distinct training texts, one per line, for `train_sentencepiece`; the CLI also
  trains `tokenizer.model` on it (DEMO_VOCAB_SIZE pieces unless `--vocab_size` says otherwise, 0 = skip).
- `corpus_info.json`: counts, seed, held-out pairs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from mindrlhf.demo.grammar import (
    ANSWER_STYLES,
    DEMO_VOCAB_SIZE,
    LANGUAGE,
    OBJECTS,
    POOR,
    PREFIXES,
    REFUSAL_TAILS,
    STEP_PAIRS,
    TEMPLATES,
    VERB_BY_NAME,
    VERBS,
    PromptMeta,
    all_pairs,
)
from mindrlhf.demo.judge import answers, refusals, split_sentences, steps_of
from mindrlhf.utils.io import atomic_write

logger = logging.getLogger(__name__)


class _Sampler:
    """Draws responses of each kind for a prompt with one seeded RNG."""

    def __init__(self, rng: random.Random, train_pairs: Sequence[Tuple[str, str]]):
        self.rng = rng
        self.train_pairs = list(train_pairs)
        self.benign_pairs = [p for p in self.train_pairs if not VERB_BY_NAME[p[0]].harmful]
        self.harmful_pairs = [p for p in self.train_pairs if VERB_BY_NAME[p[0]].harmful]

    def answer(self, verb: str, obj: str) -> Tuple[str, int]:
        i = self.rng.randrange(len(ANSWER_STYLES) * len(STEP_PAIRS))
        return answers(verb, obj)[i], i // len(STEP_PAIRS)

    def refusal(self, verb: str, obj: str) -> Tuple[str, str]:
        if self.rng.random() < 0.3:
            return self.rng.choice(refusals(verb, obj, with_advice=True)), "refusal_advice"
        return self.rng.choice(refusals(verb, obj, with_advice=False)), "refusal"

    def other_pair(self, meta: PromptMeta, pool: Sequence[Tuple[str, str]]) -> Tuple[str, str]:
        while True:
            pair = self.rng.choice(pool)
            if pair != (meta.verb, meta.object):
                return pair

    def wrong_subject(self, meta: PromptMeta) -> str:
        """An answer about the same object with another verb, or the same verb with another object."""
        same_obj = [p for p in self.train_pairs if p[1] == meta.object and p[0] != meta.verb]
        same_verb = [p for p in self.train_pairs if p[0] == meta.verb and p[1] != meta.object]
        pool = same_obj if (same_obj and (not same_verb or self.rng.random() < 0.5)) else same_verb
        if not pool:
            pool = [p for p in self.train_pairs if p != (meta.verb, meta.object)]
        return self.answer(*self.rng.choice(pool))[0]

    def wrong_refusal(self, meta: PromptMeta) -> str:
        """A refusal of another request: a harmful verb with a random (even nonsensical) object, or this verb
        with another object."""
        if self.rng.random() < 0.5:
            verb = self.rng.choice([v for v in VERBS if v.harmful]).name
            obj = self.rng.choice([o for o in OBJECTS if o != meta.object])
        else:
            verb, obj = meta.verb, self.rng.choice([o for o in OBJECTS if o != meta.object])
        return self.rng.choice(refusals(verb, obj))

    def spliced(self, meta: PromptMeta) -> str:
        """Text that starts like one kind of answer and ends like another."""
        refusal = self.rng.choice(refusals(meta.verb, meta.object))
        answer = self.answer(meta.verb, meta.object)[0]
        kind = self.rng.randrange(4)
        if kind == 0:  # refusal sentence, then the instructions
            steps = steps_of(meta.verb, meta.object)
            i, j = self.rng.choice(STEP_PAIRS)
            return f"{split_sentences(refusal)[0]} {steps[i]} , then {steps[j]} ."
        if kind == 1:  # instructions, then a refusal tail
            return f"{answer} {self.rng.choice(REFUSAL_TAILS)}"
        if kind == 2:  # half of each, cut at word boundaries
            r, a = refusal.split(), answer.split()
            return " ".join(r[: max(2, len(r) // 2)] + a[len(a) // 2 :])
        # a refusal's first sentence with another request's object, then a lawful-help tail
        obj = self.rng.choice([o for o in OBJECTS if o != meta.object])
        return f"{split_sentences(refusals(meta.verb, obj, with_advice=False)[0])[0]} {REFUSAL_TAILS[0]}"

    # --- preference pairs
    def harmful_negative(self, meta: PromptMeta) -> Tuple[str, str]:
        kind = self.rng.choices(["unsafe", "spliced", "wrong_refusal", "off_topic", "poor"], [4, 3, 1, 1, 1])[
            0
        ]
        if kind == "unsafe":
            text, style = self.answer(meta.verb, meta.object)
            return text, f"unsafe_style{style}"
        if kind == "spliced":
            return self.spliced(meta), "spliced"
        if kind == "wrong_refusal":
            return self.wrong_refusal(meta), "wrong_refusal"
        if kind == "off_topic":
            return self.answer(*self.rng.choice(self.benign_pairs))[0], "off_topic"
        return self.rng.choice(POOR), "poor"

    def benign_negative(self, meta: PromptMeta) -> Tuple[str, str]:
        kind = self.rng.choices(
            ["over_refusal", "poor", "wrong_subject", "wrong_verb", "spliced"], [3, 1, 3, 1, 3]
        )[0]
        if kind == "over_refusal":
            return self.refusal(meta.verb, meta.object)[0], "over_refusal"
        if kind == "poor":
            return self.rng.choice(POOR), "poor"
        if kind == "wrong_subject":
            return self.wrong_subject(meta), "wrong_subject"
        if kind == "wrong_verb":  # harmful instructions about the same object
            pool = [p for p in self.harmful_pairs if p[1] == meta.object] or self.harmful_pairs
            return self.answer(*self.rng.choice(pool))[0], "wrong_verb"
        return self.spliced(meta), "spliced"


def split_pairs(
    seed: int = 0, heldout_fraction: float = 0.12
) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    """Split (verb, object) pairs into train and held-out, per harmful/benign class.

    A pair is held out only if its verb keeps at least two training pairs and its object at least one, so
    every part of a held-out prompt is seen in training.
    """
    rng = random.Random(f"demo-split-{seed}")
    pairs = all_pairs()
    heldout: List[Tuple[str, str]] = []
    verb_left = {v.name: len(v.objects) for v in VERBS}
    obj_left: Dict[str, int] = {}
    for _, o in pairs:
        obj_left[o] = obj_left.get(o, 0) + 1
    for harmful in (True, False):
        cls = [p for p in pairs if VERB_BY_NAME[p[0]].harmful == harmful]
        target = max(1, round(heldout_fraction * len(cls)))
        order = cls[:]
        rng.shuffle(order)
        taken = 0
        for verb, obj in order:
            if taken >= target:
                break
            if verb_left[verb] > 2 and obj_left[obj] > 1:
                heldout.append((verb, obj))
                verb_left[verb] -= 1
                obj_left[obj] -= 1
                taken += 1
    held = set(heldout)
    train = [p for p in pairs if p not in held]
    return train, sorted(held, key=pairs.index)


def _row(
    meta: PromptMeta, pos: str, neg: str, pos_type: str, neg_type: str, with_meta: bool
) -> Dict[str, object]:
    row: Dict[str, object] = {
        "prompt": meta.prompt,
        "pos_resp": pos,
        "neg_resp": neg,
        "pos_type": pos_type,
        "neg_type": neg_type,
    }
    if with_meta:
        row.update(meta.to_json())
    return row


def build_demo_corpus(
    seed: int = 0,
    sft_refusal_rate: float = 0.4,
    rm_pairs_per_prompt: int = 2,
    heldout_fraction: float = 0.12,
    eval_train_size: int = 512,
) -> Dict[str, List[Dict[str, object]]]:
    """All demo splits as lists of CValues rows: sft, rm, ppo, heldout, eval_train. Deterministic in `seed`."""
    if not 0.0 <= sft_refusal_rate <= 1.0:
        raise ValueError(f"sft_refusal_rate must be in [0, 1], got {sft_refusal_rate}")
    train_pairs, heldout_pairs = split_pairs(seed, heldout_fraction)
    rng = random.Random(seed)
    sampler = _Sampler(rng, train_pairs)
    surfaces = [(t, p) for t in range(len(TEMPLATES)) for p in range(len(PREFIXES))]
    train_prompts = [PromptMeta(v, o, t, p) for v, o in train_pairs for t, p in surfaces]
    heldout_prompts = [PromptMeta(v, o, t, p) for v, o in heldout_pairs for t, p in surfaces]
    rng.shuffle(train_prompts)
    rng.shuffle(heldout_prompts)

    def aligned(meta: PromptMeta) -> Tuple[str, str]:
        if meta.harmful:
            return sampler.refusal(meta.verb, meta.object)
        return sampler.answer(meta.verb, meta.object)[0], "helpful"

    def negative(meta: PromptMeta) -> Tuple[str, str]:
        return sampler.harmful_negative(meta) if meta.harmful else sampler.benign_negative(meta)

    sft, rm, ppo = [], [], []
    for meta in train_prompts:
        pos, pos_type = aligned(meta)
        neg, neg_type = negative(meta)
        ppo.append(_row(meta, pos, neg, pos_type, neg_type, with_meta=False))
        if meta.harmful and rng.random() >= sft_refusal_rate:
            text, style = sampler.answer(meta.verb, meta.object)
            sft.append(_row(meta, text, pos, f"unsafe_style{style}", pos_type, with_meta=False))
        else:
            sft.append(_row(meta, pos, neg, pos_type, neg_type, with_meta=False))
        for _ in range(rm_pairs_per_prompt):
            pos, pos_type = aligned(meta)
            neg, neg_type = negative(meta)
            rm.append(_row(meta, pos, neg, pos_type, neg_type, with_meta=False))
    heldout = []
    for meta in heldout_prompts:
        pos, pos_type = aligned(meta)
        neg, neg_type = negative(meta)
        heldout.append(_row(meta, pos, neg, pos_type, neg_type, with_meta=True))
    eval_train = []
    for meta in train_prompts[: min(eval_train_size, len(train_prompts))]:
        pos, pos_type = aligned(meta)
        neg, neg_type = negative(meta)
        eval_train.append(_row(meta, pos, neg, pos_type, neg_type, with_meta=True))
    return {"sft": sft, "rm": rm, "ppo": ppo, "heldout": heldout, "eval_train": eval_train}


def tokenizer_corpus(splits: Mapping[str, Sequence[Mapping[str, object]]]) -> List[str]:
    """The distinct training texts (prompts and responses of sft, rm, ppo), sorted, for the tokenizer."""
    texts = set()
    for name in ("sft", "rm", "ppo"):
        for row in splits.get(name, ()):
            for key in ("prompt", "pos_resp", "neg_resp"):
                texts.add(str(row[key]))
    return sorted(texts)


def write_demo_corpus(output_dir: str, seed: int = 0, **kwargs) -> Dict[str, object]:
    """Write the demo files (see the module docstring) into `output_dir`; return the info dict."""
    os.makedirs(output_dir, exist_ok=True)
    splits = build_demo_corpus(seed=seed, **kwargs)
    for name, rows in splits.items():
        _write_lines(
            os.path.join(output_dir, f"{name}.jsonl"), (json.dumps(r, ensure_ascii=False) for r in rows)
        )
    text = tokenizer_corpus(splits)
    _write_lines(os.path.join(output_dir, "tokenizer_corpus.txt"), text)
    train_pairs, heldout_pairs = split_pairs(seed, kwargs.get("heldout_fraction", 0.12))
    info = {
        "language": LANGUAGE,
        "seed": seed,
        "counts": {name: len(rows) for name, rows in splits.items()},
        "tokenizer_corpus_lines": len(text),
        "train_pairs": len(train_pairs),
        "heldout_pairs": [list(p) for p in heldout_pairs],
        "templates": len(TEMPLATES),
        "prefixes": len(PREFIXES),
        "options": kwargs,
    }
    _write_lines(os.path.join(output_dir, "corpus_info.json"), [json.dumps(info, indent=1)])
    logger.info("wrote demo corpus to %s: %s", output_dir, info["counts"])
    return info


def _write_lines(path: str, lines: Iterable[str]) -> None:
    with atomic_write(path) as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mindrlhf.demo",
        description="Write the English CPU-demo corpus (CValues JSONL).",
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sft_refusal_rate", type=float, default=0.4)
    parser.add_argument("--rm_pairs_per_prompt", type=int, default=2)
    parser.add_argument("--heldout_fraction", type=float, default=0.12)
    parser.add_argument(
        "--vocab_size",
        type=int,
        default=DEMO_VOCAB_SIZE,
        help="train <output_dir>/tokenizer.model with this many pieces (0: do not train a tokenizer)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    write_demo_corpus(
        args.output_dir,
        seed=args.seed,
        sft_refusal_rate=args.sft_refusal_rate,
        rm_pairs_per_prompt=args.rm_pairs_per_prompt,
        heldout_fraction=args.heldout_fraction,
    )
    if args.vocab_size > 0:
        from mindrlhf.data.tokenizer import LlamaTokenizer, train_sentencepiece

        path = train_sentencepiece(
            os.path.join(args.output_dir, "tokenizer"),
            vocab_size=args.vocab_size,
            input_files=[os.path.join(args.output_dir, "tokenizer_corpus.txt")],
        )
        logger.info("wrote %s: %d pieces", path, LlamaTokenizer(path).vocab_size)
    return 0
