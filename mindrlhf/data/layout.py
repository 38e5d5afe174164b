"""Token lists laid out as the int32 columns of each dataset kind (the layout is documented in `schemas`).

    full sequence = [BOS] + prompt + response + [EOS]  right-padded to seq_length (loss_mask on response + EOS)
    prompt_ids    = [BOS] + prompt                     left-padded to max_prompt_length

Without a BOS (a tokenizer whose model has none, e.g. Qwen2) the same rows simply start at the prompt.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mindrlhf.data.schemas import get_schema


def layout_rows(
    kind: str,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    rejected: Optional[Sequence[Sequence[int]]],
    *,
    bos_id: Optional[int],
    eos_id: int,
    pad_id: int,
    max_prompt_length: int,
    seq_length: int,
) -> Tuple[Dict[str, np.ndarray], List[Optional[str]]]:
    """Lay token lists out as the columns of `kind` (see `schemas`): `{field: int32 [B, L]}` plus, per row,
    None (keep) or the reason it does not fit (prompt_too_long / sequence_too_long; its row is left as padding).

    `prompts[i]` / `responses[i]` / `rejected[i]` are token ids without BOS/EOS ("prompt" uses only `prompts`).
    `bos_id` None lays rows out without a BOS (models that have none, e.g. Qwen2): `prompt + response + [EOS]`.
    """
    n = len(prompts)
    head = [] if bos_id is None else [int(bos_id)]
    reasons: List[Optional[str]] = [None] * n

    def full(length: int, value: int) -> np.ndarray:
        return np.full((n, length), value, dtype=np.int32)

    def right(ids: np.ndarray, mask: np.ndarray, loss: Optional[np.ndarray], i: int, p, r) -> None:
        seq = [*head, *p, *r, eos_id]
        ids[i, : len(seq)] = seq
        mask[i, : len(seq)] = 1
        if loss is not None:
            loss[i, len(head) + len(p) : len(seq)] = (
                1  # response tokens and the EOS; never BOS, prompt or padding
            )

    cols: Dict[str, np.ndarray]
    if kind == "prompt":
        cols = {"prompt_ids": full(max_prompt_length, pad_id), "prompt_mask": full(max_prompt_length, 0)}
    elif kind == "ppo":
        cols = {
            "prompt_ids": full(max_prompt_length, pad_id),
            "prompt_mask": full(max_prompt_length, 0),
            "pretrain_ids": full(seq_length, pad_id),
            "pretrain_mask": full(seq_length, 0),
            "loss_mask": full(seq_length, 0),
        }
    elif kind == "sft":
        cols = {
            "input_ids": full(seq_length, pad_id),
            "attention_mask": full(seq_length, 0),
            "loss_mask": full(seq_length, 0),
        }
    elif kind == "rm":
        if rejected is None:
            raise ValueError("rm rows need rejected responses")
        cols = {
            "chosen_ids": full(seq_length, pad_id),
            "chosen_mask": full(seq_length, 0),
            "rejected_ids": full(seq_length, pad_id),
            "rejected_mask": full(seq_length, 0),
        }
    else:
        get_schema(kind)  # raises the standard error
        raise AssertionError(kind)

    for i in range(n):
        p, r = prompts[i], responses[i]
        longest = max(len(r), len(rejected[i])) if kind == "rm" else len(r)
        if len(head) + len(p) > max_prompt_length:
            reasons[i] = "prompt_too_long"
            continue
        if kind != "prompt" and len(head) + len(p) + longest + 1 > seq_length:
            reasons[i] = "sequence_too_long"
            continue
        if kind in ("ppo", "prompt"):
            cols["prompt_ids"][i, max_prompt_length - len(head) - len(p) :] = [*head, *p]
            cols["prompt_mask"][i, max_prompt_length - len(head) - len(p) :] = 1
        if kind == "ppo":
            right(cols["pretrain_ids"], cols["pretrain_mask"], cols["loss_mask"], i, p, r)
        elif kind == "sft":
            right(cols["input_ids"], cols["attention_mask"], cols["loss_mask"], i, p, r)
        elif kind == "rm":
            right(cols["chosen_ids"], cols["chosen_mask"], None, i, p, r)
            right(cols["rejected_ids"], cols["rejected_mask"], None, i, p, rejected[i])
    return cols, reasons
