"""Deterministic English corpus for the CPU alignment demo (SFT -> reward model -> PPO), in CValues format.

Prompts are `prefix x template x (verb, object)`; harm is decided by verb AND object (grammar.py: an access verb
on someone else's object). Held out (`split_pairs`): every request on 6 objects no training prompt mentions, and
new (verb, object) combinations; no training text describes a held-out request. Text is lowercase with spaced
punctuation (~275 distinct words): with DEMO_VOCAB_SIZE pieces (256 of them byte fallback) every word is one
piece, prompts take <= 20 tokens and target answers <= 35.

Answers are built from a small grammar, which is what lets `is_refusal` / `is_helpful` judge a response by
its content rather than its prefix: a refusal must be a complete refusal of THIS request and nothing else, a
helpful answer must be one of the answers for THIS verb and object. Spliced text ("i cannot help you unlock my
car . sure ! first ..."), refusals of another request and answers about the wrong verb or object fail both.

Files written by `write_demo_corpus` / `python -m mindrlhf.demo --output_dir DIR --seed 0`:

- `sft.jsonl`: one row per training prompt; `pos_resp` is what the SFT model imitates: helpful on benign
  prompts, and on harmful ones compliance or a refusal (`sft_refusal_rate`, 0.4 here, 0.25 in run_demo.py):
  the SFT model must refuse sometimes or PPO never finds refusals.
- `rm.jsonl`: true preferences, `rm_pairs_per_prompt` rows per training prompt. Harmful: refusal > compliance in
  every answer style, > spliced text, > refusal of another request, > off-topic helpful answer, > evasive
  answer. Benign: helpful > unnecessary refusal, > poor/off-topic, > answer about the wrong verb or object,
  > spliced text.
- `ppo.jsonl`: every training prompt; `pos_resp` is the aligned answer (the ptx loss's text).
- `heldout.jsonl`: prompts of held-out pairs, shuffled; `eval_train.jsonl`: a sample of training prompts.
  Both carry `harmful`, `verb`, `object`, `template`, `prefix` besides the CValues fields.
- `tokenizer_corpus.txt`: the distinct training texts, one per line, for `train_sentencepiece`; the CLI also
  trains `tokenizer.model` on it (DEMO_VOCAB_SIZE pieces unless `--vocab_size` says otherwise, 0 = skip).
- `corpus_info.json`: counts, seed, held-out pairs and held-out objects.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import random
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from mindrlhf.demo.grammar import (
    ANSWER_STYLES,
    DEMO_VOCAB_SIZE,
    LANGUAGE,
    NOUNS,
    OBJECT_PARTS,
    OWNERS,
    POOR,
    PREFIXES,
    REFUSAL_TAILS,
    STEP_PAIRS,
    TEMPLATES,
    VERB_BY_NAME,
    VERBS,
    PromptMeta,
    all_pairs,
    is_harmful,
    noun_of,
    owner_of,
)
from mindrlhf.demo.judge import answers, refusals, split_sentences, steps_of
from mindrlhf.utils.io import atomic_write

logger = logging.getLogger(__name__)


class _Sampler:
    """Draws responses of each kind for a prompt with one seeded RNG, only ever about TRAINING requests (a text
    about a held-out request in a training file would leak its target answer)."""

    def __init__(self, rng: random.Random, train_pairs: Sequence[Tuple[str, str]]):
        self.rng = rng
        self.train_pairs = list(train_pairs)
        self.benign_pairs = [p for p in self.train_pairs if not is_harmful(*p)]
        self.harmful_pairs = [p for p in self.train_pairs if is_harmful(*p)]

    def answer(self, verb: str, obj: str) -> Tuple[str, int]:
        i = self.rng.randrange(len(ANSWER_STYLES) * len(STEP_PAIRS))
        return answers(verb, obj)[i], i // len(STEP_PAIRS)

    def refusal(self, verb: str, obj: str) -> Tuple[str, str]:
        if self.rng.random() < 0.3:
            return self.rng.choice(refusals(verb, obj, with_advice=True)), "refusal_advice"
        return self.rng.choice(refusals(verb, obj, with_advice=False)), "refusal"

    def _pick(self, pool: Sequence[Tuple[str, str]], meta: PromptMeta) -> Tuple[str, str]:
        pool = [p for p in pool if p != (meta.verb, meta.object)] or [
            p for p in self.train_pairs if p != (meta.verb, meta.object)
        ]
        return self.rng.choice(pool)

    def wrong_subject(self, meta: PromptMeta) -> str:
        """An answer about the same object with another verb, or the same verb with another object."""
        same_obj = [p for p in self.train_pairs if p[1] == meta.object and p[0] != meta.verb]
        same_verb = [p for p in self.train_pairs if p[0] == meta.verb and p[1] != meta.object]
        pool = same_obj if (same_obj and (not same_verb or self.rng.random() < 0.5)) else same_verb
        return self.answer(*self._pick(pool, meta))[0]

    def wrong_refusal(self, meta: PromptMeta) -> str:
        """A refusal of another (training) request: any harmful one, or this verb with another object."""
        same_verb = [p for p in self.train_pairs if p[0] == meta.verb]
        pool = self.harmful_pairs if self.rng.random() < 0.5 or not same_verb else same_verb
        return self.rng.choice(refusals(*self._pick(pool, meta)))

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
        # the first sentence of a refusal of this verb with another (training) object, then a lawful-help tail
        verb, obj = self._pick([p for p in self.train_pairs if p[0] == meta.verb], meta)
        return f"{split_sentences(refusals(verb, obj, with_advice=False)[0])[0]} {REFUSAL_TAILS[0]}"

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
        if kind == "off_topic":  # the benign answer of this verb on the asker's own object, or any benign one
            own = [
                p for p in self.benign_pairs if p[0] == meta.verb and noun_of(p[1]) == noun_of(meta.object)
            ]
            pool = own if own and self.rng.random() < 0.5 else self.benign_pairs
            return self.answer(*self._pick(pool, meta))[0], "off_topic"
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
        if (
            kind == "wrong_verb"
        ):  # harmful instructions: this verb on someone else's same noun, or this object
            pool = [
                p
                for p in self.harmful_pairs
                if p[1] == meta.object or (p[0] == meta.verb and noun_of(p[1]) == noun_of(meta.object))
            ]
            return self.answer(*self._pick(pool or self.harmful_pairs, meta))[0], "wrong_verb"
        return self.spliced(meta), "spliced"


# Kinds of negative the RM accuracy is reported by (issue 17 item 6): raw neg_type -> kind.
NEGATIVE_KINDS = ("compliance", "over_refusal", "spliced", "off_topic")


def negative_kind(neg_type: str) -> str:
    """compliance (harmful instructions in any style), over_refusal, spliced, or off_topic (everything else:
    answers to another request, refusals of another request, filler)."""
    if neg_type.startswith("unsafe_style"):
        return "compliance"
    if neg_type in ("over_refusal", "spliced"):
        return neg_type
    return "off_topic"


def heldout_objects(seed: int = 0) -> List[str]:
    """Objects no training request mentions with any verb: four of someone else's (harmful with an access verb,
    benign with a care verb) and two of the asker's own, each a noun and an owner seen apart in training."""
    rng = random.Random(f"demo-heldout-objects-{seed}")
    nouns = [n for n in NOUNS if sum(n in v.nouns for v in VERBS if v.access) >= 2]
    others = [k for k, o in OWNERS.items() if o.own is False]
    owns = [k for k, o in OWNERS.items() if o.own is True]
    rng.shuffle(nouns)
    rng.shuffle(others)
    picked = [_object_key(others[i % len(others)], n) for i, n in enumerate(nouns[:4])]
    rng.shuffle(nouns)
    picked += [_object_key(rng.choice(owns), n) for n in nouns[:2]]
    return picked


def _object_key(owner: str, noun: str) -> str:
    return next(k for k, parts in OBJECT_PARTS.items() if parts == (owner, noun))


# Held-out quotas, in distinct requests: harmful; benign access verb on an own object (a verb lookup calls
# these harmful); benign care verb on someone else's object (an owner lookup calls these harmful).
HELDOUT_HARMFUL, HELDOUT_ACCESS_OWN, HELDOUT_CARE_OTHER = 26, 20, 20


def split_pairs(seed: int = 0) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    """Split (verb, object) requests into train and held-out.

    Held out: every request on a `heldout_objects(seed)` object, then new (verb, object) combinations until the
    quotas above are met. A combination is held out only if its object keeps two training requests and its
    verb three training requests of the same harm, so every part of a held-out prompt is seen in training.
    """
    pairs = all_pairs()
    objects = set(heldout_objects(seed))
    held = {p for p in pairs if p[1] in objects}

    def category(p: Tuple[str, str]) -> str:
        if is_harmful(*p):
            return "harmful"
        own = OWNERS[owner_of(p[1])].own
        if VERB_BY_NAME[p[0]].access:
            return "access_own"
        return "care_other" if own is False else "care_own"

    quota = {"harmful": HELDOUT_HARMFUL, "access_own": HELDOUT_ACCESS_OWN, "care_other": HELDOUT_CARE_OTHER}
    count = {c: sum(category(p) == c for p in held) for c in quota}
    rng = random.Random(f"demo-split-{seed}")
    order = [p for p in pairs if p not in held]
    rng.shuffle(order)
    obj_left = collections.Counter(o for v, o in pairs if (v, o) not in held)
    verb_left = collections.Counter((v, is_harmful(v, o)) for v, o in pairs if (v, o) not in held)
    for verb, obj in order:
        cat = category((verb, obj))
        if cat not in quota or count[cat] >= quota[cat]:
            continue
        if obj_left[obj] > 2 and verb_left[(verb, is_harmful(verb, obj))] > 3:
            held.add((verb, obj))
            count[cat] += 1
            obj_left[obj] -= 1
            verb_left[(verb, is_harmful(verb, obj))] -= 1
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
    benign_surfaces: int = 20,
    eval_train_size: int = 512,
) -> Dict[str, List[Dict[str, object]]]:
    """All demo splits as lists of CValues rows: sft, rm, ppo, heldout, eval_train. Deterministic in `seed`.

    A harmful training request is asked in every surface form (template x prefix), a benign one in
    `benign_surfaces` of them (drawn per request), so about 40% of training prompts are harmful; a held-out
    request is asked in every surface form.
    """
    if not 0.0 <= sft_refusal_rate <= 1.0:
        raise ValueError(f"sft_refusal_rate must be in [0, 1], got {sft_refusal_rate}")
    train_pairs, heldout_pairs = split_pairs(seed)
    rng = random.Random(seed)
    sampler = _Sampler(rng, train_pairs)
    surfaces = [(t, p) for t in range(len(TEMPLATES)) for p in range(len(PREFIXES))]
    train_prompts = [
        PromptMeta(v, o, t, p)
        for v, o in train_pairs
        for t, p in (
            surfaces if is_harmful(v, o) else rng.sample(surfaces, min(benign_surfaces, len(surfaces)))
        )
    ]
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
    train_pairs, heldout_pairs = split_pairs(seed)
    info = {
        "language": LANGUAGE,
        "seed": seed,
        "counts": {name: len(rows) for name, rows in splits.items()},
        "tokenizer_corpus_lines": len(text),
        "train_pairs": len(train_pairs),
        "heldout_pairs": [list(p) for p in heldout_pairs],
        "heldout_objects": heldout_objects(seed),
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
