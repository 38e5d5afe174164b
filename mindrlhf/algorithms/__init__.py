"""mindrlhf.algorithms: the RL and preference math in numpy (never imports mindspore).

PPO pieces live in `ppo_math`; the critic-free estimators and generalised policy loss in `grpo_math`; DPO in
`dpo_math`. The four functions the trainers and their MindSpore twins are specified by are exported here.
"""

from mindrlhf.algorithms.dpo_math import DPO_LOSS_TYPES, dpo_loss
from mindrlhf.algorithms.grpo_math import (
    ADVANTAGE_ESTIMATORS,
    LOSS_AGGREGATIONS,
    RATIO_LEVELS,
    PolicyLossOutput,
    aggregate_loss,
    group_advantages,
    kl_in_loss,
    policy_loss,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "DPO_LOSS_TYPES",
    "LOSS_AGGREGATIONS",
    "RATIO_LEVELS",
    "PolicyLossOutput",
    "aggregate_loss",
    "dpo_loss",
    "group_advantages",
    "kl_in_loss",
    "policy_loss",
]
