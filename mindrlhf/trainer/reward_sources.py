"""Step 2 of an RL iteration, the reward side: reward-model scores and programmable reward functions combined.

    score_i = [rm_i - missing_eos_penalty * (response i has no EOS)] + sum_k w_k f_k(prompts, responses, **cols)_i

The reward-model term exists when a reward model is given; the function terms when `reward_funcs` are
(`mindrlhf.rewards`: a None from a function adds 0, as TRL). Responses are decoded with the tokenizer up to
their first EOS; prompts from their real tokens; `cols` are the prompt dataset's extra string columns.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np

from mindrlhf.configs.loader import ConfigError
from mindrlhf.rewards import compute_rewards, load_reward_funcs, reward_func_names

logger = logging.getLogger(__name__)


def string_columns(batch: Dict[str, np.ndarray]) -> Dict[str, list]:
    """The extra string columns of a prompt batch (numpy unicode arrays) as lists, e.g. {"answer": [...]}."""
    return {k: [str(x) for x in v] for k, v in batch.items() if np.asarray(v).dtype.kind in "US"}


def contains_eos(sequences_response: np.ndarray, response_mask: np.ndarray, eos_token_id: Optional[int]):
    """[B] bool: the response has an EOS among its real tokens (False = truncated at max_new_tokens)."""
    if eos_token_id is None:
        return np.zeros(sequences_response.shape[0], dtype=bool)
    return ((sequences_response == eos_token_id) & (response_mask > 0)).any(axis=1)


class RewardSources:
    """Turns one rollout into scores `[B]` and the per-source reward metrics (see the module doc).

    Built once per trainer: the reward functions are resolved here (`ConfigError` naming a bad spec), and a
    run with neither a reward model nor reward functions, or reward functions without a tokenizer, is refused.
    """

    def __init__(self, config, has_reward_model: bool, tokenizer: Any, prompt_length: int):
        self.funcs = load_reward_funcs(config.reward_funcs)
        self.names = reward_func_names(self.funcs)
        self.weights = config.reward_weights
        self.has_reward_model = has_reward_model
        self.missing_eos_penalty = config.missing_eos_penalty
        self.tokenizer = tokenizer
        self.p = int(prompt_length)
        if not self.funcs and not has_reward_model:
            raise ConfigError("no reward: give a reward model or reward_funcs", field="reward_funcs")
        if self.funcs and tokenizer is None:
            raise ConfigError(
                "reward_funcs need a tokenizer to decode the responses (train.py: --tokenizer PATH, default the "
                "dataset's)",
                field="reward_funcs",
            )
        if self.missing_eos_penalty is not None and not has_reward_model:
            raise ConfigError(
                "applies to the reward-model score (TRL's semantics) but there is no reward model; remove it or "
                "give --reward_model_path",
                field="missing_eos_penalty",
            )

    def __call__(
        self,
        batch: Dict[str, np.ndarray],
        sequences: np.ndarray,
        response_mask: np.ndarray,
        rm_scores: Optional[np.ndarray],
        has_eos: np.ndarray,
    ) -> Tuple[np.ndarray, Dict[str, float]]:
        """(scores [B] float64, metrics) for sequences [B, P+N], response_mask [B, N], rm_scores [B] or None."""
        b = sequences.shape[0]
        scores = np.zeros(b, dtype=np.float64)
        metrics: Dict[str, float] = {}
        if self.has_reward_model:
            rm = np.asarray(rm_scores, dtype=np.float64)
            metrics["rewards/reward_model/mean"], metrics["rewards/reward_model/std"] = _mean_std(rm)
            if self.missing_eos_penalty is not None:
                rm = rm - self.missing_eos_penalty * (~has_eos)
            scores += rm
        if self.funcs:
            prompts = self.tokenizer.decode_batch(batch["prompt_ids"], batch["prompt_mask"])
            responses = self.tokenizer.decode_batch(sequences[:, self.p :], response_mask)
            total, per_function = compute_rewards(
                self.funcs, self.weights, prompts, responses, string_columns(batch)
            )
            scores += total
            for name, values in per_function.items():
                if not np.isnan(values).all():  # every sample "not applicable": no number to log
                    metrics[f"rewards/{name}/mean"], metrics[f"rewards/{name}/std"] = _mean_std(values)
        return scores, metrics


def _mean_std(values: np.ndarray) -> Tuple[float, float]:
    return float(np.nanmean(values)), float(np.nanstd(values))


def zero_std_fraction(scores: np.ndarray, group_size: int) -> float:
    """Fraction of prompt groups (G contiguous rows) whose scores are all equal: no learning signal there."""
    groups = np.asarray(scores).reshape(-1, group_size)
    return float(np.mean(groups.max(axis=1) == groups.min(axis=1)))
