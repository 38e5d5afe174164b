"""Held-out accuracy of a model on the arithmetic task, with `mindrlhf.generate` (static KV cache, in-graph sampling).

    acc = Evaluator(model, tokenizer).accuracy(pairs, sampled=True, seed=0)   # {"accuracy", "eos_rate", "n"}

A response is correct when its tokens before the first EOS spell exactly the reversed sum (`arith_task.exact_match`);
no EOS within `max_new_tokens` counts as wrong. Sampled = temperature 1, no top-k/top-p (the policy GRPO trains);
greedy = argmax. Prompts go through in fixed chunks of `batch` rows (the last chunk padded by repeating rows that
are then dropped), so every evaluation, the SFT probe included, reuses the same two compiled graphs per rule.
"""

from __future__ import annotations

import logging
from typing import Dict, Sequence

import numpy as np
from arith_task import Pair, exact_match, prompt_batch

logger = logging.getLogger(__name__)

MAX_NEW_TOKENS = 6  # answers are at most 3 digits + EOS; 6 leaves room for wrong, longer answers


class Evaluator:
    """Accuracy of `model` (a LlamaForCausalLM, evaluated with its current weights) on lists of problems."""

    def __init__(self, model, tokenizer, batch: int = 200, max_new_tokens: int = MAX_NEW_TOKENS):
        self.model, self.tokenizer = model, tokenizer
        self.batch, self.max_new_tokens = int(batch), int(max_new_tokens)

    def responses(self, pairs: Sequence[Pair], sampled: bool, seed: int = 0) -> np.ndarray:
        """`[N, max_new_tokens]` response ids (pad after EOS) for the N problems, in order."""
        from mindrlhf.generation import generate

        ids = prompt_batch(self.tokenizer, pairs)  # (N, 7), no padding
        n = len(ids)
        out = np.zeros((n, self.max_new_tokens), np.int32)
        for chunk, start in enumerate(range(0, n, self.batch)):
            rows = ids[start : start + self.batch]
            real = len(rows)
            if real < self.batch:  # one compiled shape: fill the last chunk with copies of its rows
                rows = np.concatenate([rows, np.resize(rows, (self.batch - real, rows.shape[1]))], 0)
            gen = generate(
                self.model, rows, max_new_tokens=self.max_new_tokens, do_sample=sampled, temperature=1.0,
                eos_token_id=self.tokenizer.eos_id, pad_token_id=self.tokenizer.pad_id,
                seed=None if not sampled else seed * 1_000_003 + chunk,
            )  # fmt: skip
            out[start : start + real] = gen.response_ids[:real]
        return out

    def accuracy(self, pairs: Sequence[Pair], sampled: bool, seed: int = 0) -> Dict[str, float]:
        """`{"accuracy": exact-match rate, "eos_rate": rows that ended with EOS, "n": len(pairs)}`."""
        response = self.responses(pairs, sampled, seed)
        correct = exact_match(self.tokenizer, response, pairs)
        eos_rate = float((response == self.tokenizer.eos_id).any(1).mean())
        return {"accuracy": float(correct.mean()), "eos_rate": eos_rate, "n": len(pairs)}

    def both(self, pairs: Sequence[Pair], seed: int = 0) -> Dict[str, float]:
        """`{"sampled": accuracy at T=1, "greedy": accuracy of argmax decoding, "eos_rate": of the sampled}`."""
        s = self.accuracy(pairs, sampled=True, seed=seed)
        g = self.accuracy(pairs, sampled=False)
        return {"sampled": s["accuracy"], "greedy": g["accuracy"], "eos_rate": s["eos_rate"]}
