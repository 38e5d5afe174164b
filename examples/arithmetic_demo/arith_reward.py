"""The demo's reward: strict exact match of the decoded response against the dataset's `answer` column.

    train.py ... --reward_funcs arith_reward:exact_answer      (with examples/arithmetic_demo on PYTHONPATH)

Why not the built-in `mindrlhf.rewards:accuracy`: it compares the FIRST NUMBER in the response numerically, the
right rule for "the answer is 19" style tasks, but this task's answers are reversed digit strings, where that rule
pays for wrong answers: sum 20 is "02", and the response "2" (the number 2) equals it numerically; "91+3" and
"91=" match "91" by their first number. Here the response (the tokens before EOS, as the trainer decodes them)
must equal the answer character for character, which is exactly what the evaluation scores
(`arith_task.exact_match`), so the demo optimises what it measures. A response without EOS is 6 tokens long and
can never equal an answer of at most 3 digits, so it scores 0, as in the prototype.
"""

from __future__ import annotations

from typing import List


def exact_answer(prompts: List[str], responses: List[str], answer: List[str]) -> List[float]:
    """`[B]` 1.0 where `responses[i] == answer[i]` after stripping surrounding whitespace, else 0.0."""
    return [1.0 if str(r).strip() == str(a).strip() else 0.0 for r, a in zip(responses, answer)]
