"""Worker for tests/test_data_parallel.py: PPO steps 3-5 on GIVEN rollouts, one process or one msrun rank.

`python ppo_dp_worker.py OUT` runs one process on the global batch of GLOBAL_B rollouts; under
`msrun --worker_num=2` each rank takes its half (rank r: rows r*B .. (r+1)*B - 1) with MindSpore's auto-parallel
context set to data_parallel. The rollouts (sequences, masks, rollout/reference log-probs, values, scores) are
built from a fixed numpy seed, so no sampling noise can hide a difference: every rank and the single process see
exactly the same numbers. Per iteration: `trainer.advantages` (score normalisation, KL rewards, GAE, whitening),
`trainer.train_step` (ppo_epochs passes, actor + critic), `trainer.rollout_metrics`, `trainer.adapt_kl`.
Writes OUT/single.npz or OUT/rank_{r}.npz: per-iteration metrics, advantages/returns, beta, score statistics and
the final actor and critic weights.
"""

import os
import sys

import mindspore as ms
import numpy as np
from mindspore import Tensor

from mindrlhf.configs.ppo_config import PPOConfig
from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
from mindrlhf.models.roles import ValueModel, freeze
from mindrlhf.trainer.ppo_trainer import Experience, PPOTrainer

MODEL = dict(
    seq_length=32,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    n_kv_heads=2,
    vocab_size=64,
    intermediate_size=48,
)
P, N, T, V = 8, 6, 32, 64  # prompt, response, pretrain length, vocabulary
GLOBAL_B, ITERATIONS = 8, 2
KEYS = ("ppo/loss/actor", "ppo/loss/policy", "ppo/loss/value", "ppo/loss/ptx", "ppo/policy/entropy",
        "ppo/policy/clipfrac", "ppo/policy/approx_kl", "ppo/val/mean", "ppo/grad_norm/actor",
        "ppo/grad_norm/critic", "objective/kl", "env/score_mean")  # fmt: skip


def _init(cell, seed):
    """Deterministic weights from numpy (identical in every process, whatever MindSpore's RNG does)."""
    rng = np.random.RandomState(seed)
    for _, p in cell.parameters_and_names():
        p.set_data(Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))


def rollouts(iteration):
    """The global batch of iteration i: [GLOBAL_B, ...] arrays; response lengths 1..N, so ranks hold different
    numbers of response (and ptx) tokens."""
    rng = np.random.RandomState(1000 + iteration)
    b = GLOBAL_B
    prompt = np.zeros((b, P), np.int32)
    prompt_mask = np.zeros((b, P), np.int32)
    response = np.zeros((b, N), np.int32)
    response_mask = np.zeros((b, N), np.float32)
    for r in range(b):
        n = rng.randint(2, P + 1)
        prompt[r, P - n :] = np.concatenate([[1], rng.randint(3, V, n - 1)])
        prompt_mask[r, P - n :] = 1
        length = rng.randint(1, N + 1) if r % 2 == 0 else rng.randint(1, 3)
        response[r, :length] = rng.randint(3, V, length)
        response_mask[r, :length] = 1
    old_logprobs = -rng.uniform(0.5, 4.0, (b, N)).astype(np.float32) * response_mask
    ref_logprobs = (old_logprobs + rng.normal(0, 0.3, (b, N)).astype(np.float32)) * response_mask
    values = rng.normal(0, 1, (b, N)).astype(np.float32) * response_mask
    scores = rng.normal(2.0, 1.5, b).astype(np.float32)
    pretrain = rng.randint(3, V, (b, T)).astype(np.int32)
    pretrain_mask = np.zeros((b, T), np.int32)
    loss_mask = np.zeros((b, T), np.float32)
    for r in range(b):
        length = rng.randint(4, T + 1)
        pretrain_mask[r, :length] = 1
        loss_mask[r, rng.randint(1, length) : length] = 1
    pretrain = pretrain * pretrain_mask
    return {
        "sequences": np.concatenate([prompt, response], 1),
        "attention_mask": np.concatenate([prompt_mask, response_mask.astype(np.int32)], 1),
        "response_mask": response_mask, "old_logprobs": old_logprobs, "ref_logprobs": ref_logprobs,
        "old_values": values, "scores": scores, "pretrain_ids": pretrain, "pretrain_mask": pretrain_mask,
        "loss_mask": loss_mask,
    }  # fmt: skip


def main(out_dir):
    ms.set_seed(0)
    world, rank = 1, 0
    if os.environ.get("MS_ROLE"):  # launched by msrun
        from mindrlhf.parallel import init_distributed

        info = init_distributed("CPU")
        world, rank = info.world_size, info.rank
        ms.set_auto_parallel_context(parallel_mode="data_parallel", gradients_mean=True, device_num=world)
    b = GLOBAL_B // world
    config = LlamaConfig(**MODEL)
    actor, reference, critic, reward = (
        LlamaForCausalLM(config), LlamaForCausalLM(config), ValueModel(config), ValueModel(config)
    )  # fmt: skip
    for i, cell in enumerate((actor, reference, critic, reward)):
        _init(cell, i)
    ppo = PPOConfig(rollout_batch_size=b, mini_batch_size=b, ppo_epochs=2, num_iterations=ITERATIONS,
                    max_prompt_length=P, max_new_tokens=N, seq_length=T, actor_lr=3e-3, critic_lr=3e-3,
                    warmup_steps=1, init_kl_coef=0.2, adaptive_kl=True, kl_target=0.5, kl_horizon=40,
                    normalize_scores=True, score_clip=1.5, ptx_coef=0.5, entropy_coef=0.05, seed=3)  # fmt: skip
    trainer = PPOTrainer(ppo, actor, critic, freeze(reference), freeze(reward), None, eos_token_id=2,
                         pad_token_id=0, save_dir=out_dir, is_main=rank == 0)  # fmt: skip
    assert trainer.ranks.world == world and trainer.ranks.rank == rank
    initial = {n: p.asnumpy().copy() for cell in (actor, critic) for n, p in cell.parameters_and_names()}
    out = {}
    for it in range(ITERATIONS):
        full = rollouts(it)
        mine = {k: v[rank * b : (rank + 1) * b] for k, v in full.items()}
        rewards, advantages, returns = trainer.advantages(
            mine["scores"],
            mine["old_logprobs"],
            mine["ref_logprobs"],
            mine["old_values"],
            mine["response_mask"],
        )
        exp = Experience(rewards=rewards.astype(np.float32), advantages=advantages.astype(np.float32),
                         returns=returns.astype(np.float32), **mine)  # fmt: skip
        metrics = trainer.train_step(exp)
        metrics.update(trainer.rollout_metrics(exp))
        trainer.adapt_kl(metrics["objective/kl"], exp)
        trainer.iteration += 1
        out[f"metrics_{it}"] = np.array([metrics[k] for k in KEYS])
        out[f"advantages_{it}"], out[f"returns_{it}"], out[f"rewards_{it}"] = advantages, returns, rewards
        out[f"kl_coef_{it}"] = np.array(trainer.kl_controller.value)
        out[f"score_stats_{it}"] = np.array(list(trainer.score_normalizer.state_dict().values()), np.float64)
    for name, cell in (("actor", actor), ("critic", critic)):
        for pname, p in cell.parameters_and_names():
            out[f"{name}:{pname}"] = p.asnumpy()
    out["moved"] = np.array(
        max(
            float(np.abs(p.asnumpy() - initial[n]).max())
            for c in (actor, critic)
            for n, p in c.parameters_and_names()
        )
    )
    name = "single.npz" if world == 1 else f"rank_{rank}.npz"
    np.savez(os.path.join(out_dir, name), **out)


if __name__ == "__main__":
    main(sys.argv[1])
