"""The four RLHF roles on one Llama2 backbone, and how each is built from a MindFormers run YAML.

    actor      LlamaForCausalLM                      log-probs of the response tokens (trained)
    reference  LlamaForCausalLM, frozen SFT copy     log-probs for the KL penalty
    reward     LlamaModel + v_head [1, H]            one score per sequence, read at the last real token
    critic     LlamaModel + v_head [1, H]            one value per token, no squashing; initialised from reward

Reward and critic share parameter names (`model.*`, `v_head.weight`), so a reward checkpoint loads strictly into
the critic. Actor and reference share the SFT names (`model.*`, `lm_head.weight`).
"""

from __future__ import annotations

import logging
from typing import Dict, Optional

import mindspore as ms
from mindspore import Tensor, nn, ops

from mindrlhf.configs.run_config import RunConfig, load_run_config
from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.models.llama.layers import Linear
from mindrlhf.models.llama.model import LlamaForCausalLM, LlamaModel, llama_param_shapes
from mindrlhf.utils.checkpoint import load_param_dict, read_checkpoint

logger = logging.getLogger(__name__)


def value_param_shapes(config: LlamaConfig) -> Dict[str, tuple]:
    """The parameter table of `ValueModel(config)`: the Llama backbone (`model.*`) plus `v_head.weight [1, H]`."""
    shapes = {k: v for k, v in llama_param_shapes(config).items() if k.startswith("model.")}
    shapes["v_head.weight"] = (1, config.hidden_size)
    return shapes


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of the last real token of each row of `attention_mask [B, T]` -> `[B]` int32 (any padding layout)."""
    t = attention_mask.shape[1]
    return ops.argmax(attention_mask.astype(ms.int32) * ops.arange(1, t + 1, dtype=ms.int32), -1).astype(
        ms.int32
    )


class ValueModel(nn.Cell):
    """Llama backbone + linear head `v_head.weight [1, H]`: per-token scalars `[B, T]` (float32).

    The reward model reads the scalar at the last real token (`score`); the critic uses every token (`values`).
    """

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.v_head = Linear(
            config.hidden_size, 1, config.compute_dtype, config.param_init_type, init_std=0.0
        )
        self.gather = ops.GatherD()

    def construct(self, input_ids, attention_mask=None):
        hidden = self.model(input_ids, attention_mask)
        return self.v_head(hidden).squeeze(-1).astype(ms.float32)  # (B, T)

    def score(self, input_ids, attention_mask):
        """Reward: the head's output at the last real token of each row -> `[B]`."""
        values = self.construct(input_ids, attention_mask)
        idx = last_token_index(attention_mask).reshape(-1, 1)
        return self.gather(values, 1, idx).squeeze(-1)


def freeze(cell: nn.Cell) -> nn.Cell:
    """Mark every parameter non-trainable (reference and reward models are never updated)."""
    for param in cell.get_parameters():
        param.requires_grad = False
    cell.set_train(False)
    return cell


def build_from_run_config(
    run: RunConfig, kind: str, params: Optional[Dict[str, Tensor]] = None, strict: bool = True
) -> nn.Cell:
    """Build `kind` ('causal_lm' or 'value') from a run YAML and load the weights its checkpoint field names.

    `params` lets a caller pass an already-read checkpoint (train.py reads each file once, to validate it before
    building anything, and reuses it here). No checkpoint named -> random initialisation, logged loudly.
    """
    cls = {"causal_lm": LlamaForCausalLM, "value": ValueModel}[kind]
    model = cls(run.model_config)
    path = run.checkpoint_path
    if params is None and path:
        params = read_checkpoint(path)
    if params is not None:
        load_param_dict(model, params, source=path or run.path, strict=strict)
    else:
        logger.warning("%s names no checkpoint: %s starts from random weights", run.path, kind)
    return model


def build_role(yaml_path: str, kind: str, strict: bool = True) -> nn.Cell:
    """`build_role("llama2_7b.yaml", "causal_lm")`: config + weights from a MindFormers run YAML."""
    return build_from_run_config(load_run_config(yaml_path), kind, strict=strict)
