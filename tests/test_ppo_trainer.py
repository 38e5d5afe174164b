"""The PPO trainer on tiny models: what an iteration changes, overflow handling, experience invariants."""

import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindrlhf.algorithms import ppo_math
from mindrlhf.configs.ppo_config import PPOConfig
from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
from mindrlhf.models.roles import ValueModel, freeze
from mindrlhf.trainer.ppo_trainer import PPOTrainer

MODEL = dict(seq_length=32, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=64, intermediate_size=48)
PROMPT, NEW = 8, 6


class FakePrompts:
    """Batch i: left-padded random prompts starting with BOS, fixed per i."""

    def __init__(self, batch_size):
        self.batch_size = batch_size

    def batch(self, i):
        rng = np.random.RandomState(100 + i)
        b = self.batch_size
        ids = np.zeros((b, PROMPT), np.int32)
        mask = np.zeros((b, PROMPT), np.int32)
        for r in range(b):
            n = rng.randint(2, PROMPT + 1)
            ids[r, PROMPT - n:] = np.concatenate([[1], rng.randint(3, 64, n - 1)])
            mask[r, PROMPT - n:] = 1
        seq = 32
        pretrain = np.zeros((b, seq), np.int32)
        pretrain[:, :10] = rng.randint(3, 64, (b, 10))
        pmask = (pretrain > 0).astype(np.int32)
        loss_mask = pmask.copy()
        loss_mask[:, :4] = 0
        return {"prompt_ids": ids, "prompt_mask": mask, "pretrain_ids": pretrain, "pretrain_mask": pmask,
                "loss_mask": loss_mask}


def _weights(cell):
    return {n: p.asnumpy().copy() for n, p in cell.parameters_and_names()}


def make_trainer(tmp_path, **overrides):
    ms.set_seed(0)
    config = LlamaConfig(**MODEL)
    actor = LlamaForCausalLM(config)
    reference = LlamaForCausalLM(config)
    for (_, a), (_, r) in zip(actor.parameters_and_names(), reference.parameters_and_names()):
        r.set_data(Tensor(a.asnumpy()))
    reward = ValueModel(config)
    reward.v_head.weight.set_data(Tensor(np.random.RandomState(1).normal(0, 0.5, (1, 32)).astype(np.float32)))
    critic = ValueModel(config)
    for (_, a), (_, c) in zip(reward.parameters_and_names(), critic.parameters_and_names()):
        c.set_data(Tensor(a.asnumpy()))
    ppo = PPOConfig(**{**dict(rollout_batch_size=4, mini_batch_size=2, ppo_epochs=1, num_iterations=4,
                              max_prompt_length=PROMPT, max_new_tokens=NEW, seq_length=32, actor_lr=1e-3,
                              critic_lr=1e-3, init_kl_coef=0.1, ptx_coef=0.5, entropy_coef=0.01), **overrides})
    trainer = PPOTrainer(ppo, actor, critic, freeze(reference), freeze(reward), FakePrompts(4),
                         eos_token_id=2, pad_token_id=0, save_dir=str(tmp_path),
                         loss_scale={"loss_scale_value": 1024.0, "scale_factor": 2, "scale_window": 1000})
    return trainer


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return make_trainer(tmp_path_factory.mktemp("ppo"))


def test_experience_invariants(trainer):
    exp = trainer.make_experience(trainer.dataset.batch(0))
    b, n = 4, NEW
    assert exp.sequences.shape == (b, PROMPT + n) and exp.response_mask.shape == (b, n)
    mask = exp.response_mask
    # Reference starts equal to the actor: the KL part of the reward is ~0, the score sits at the last token.
    np.testing.assert_allclose(exp.ref_logprobs * mask, exp.old_logprobs * mask, atol=1e-4)
    last = ppo_math.last_token_index(mask)
    np.testing.assert_allclose(exp.rewards[np.arange(b), last], exp.scores, atol=1e-3)
    expected_rewards = ppo_math.compute_rewards(exp.old_logprobs, exp.ref_logprobs, exp.scores, mask, 0.1)
    np.testing.assert_allclose(exp.rewards, expected_rewards, rtol=1e-5, atol=1e-6)
    # The advantages were whitened over response tokens.
    assert abs(ppo_math.masked_mean(exp.advantages, mask)) < 1e-5
    assert np.all(exp.advantages[mask == 0] == 0)
    # The scores are the reward model's at the last real token of prompt + response.
    full = np.asarray(trainer.reward(Tensor(exp.sequences), Tensor(exp.attention_mask)).asnumpy())
    last_real = exp.attention_mask.shape[1] - 1 - np.argmax(exp.attention_mask[:, ::-1], 1)
    np.testing.assert_allclose(exp.scores, full[np.arange(b), last_real], rtol=1e-5, atol=1e-5)


def test_one_iteration_moves_actor_and_critic_only(trainer):
    before = {name: _weights(getattr(trainer, name)) for name in ("actor", "critic", "reference", "reward")}
    exp = trainer.make_experience(trainer.dataset.batch(1))
    metrics = trainer.train_step(exp)
    after = {name: _weights(getattr(trainer, name)) for name in before}
    for name in ("actor", "critic"):
        unchanged = [k for k in before[name] if np.array_equal(before[name][k], after[name][k])]
        assert not unchanged, (name, unchanged)
    for name in ("reference", "reward"):
        assert all(np.array_equal(before[name][k], after[name][k]) for k in before[name]), name
    # Rollout log-probs equal the trainer's recomputation before the first update.
    assert metrics["ppo/logprob_diff/max"] < 1e-4
    assert all(np.isfinite(v) for v in metrics.values())


def test_non_finite_gradient_skips_the_step(trainer, caplog):
    exp = trainer.make_experience(trainer.dataset.batch(2))
    exp.advantages[:] = np.nan
    actor_before = _weights(trainer.actor)
    scale_before = trainer.actor_step.state_dict()["loss_scale"]
    with caplog.at_level(logging.INFO, logger="mindrlhf.ppo"):
        metrics = trainer.train_step(exp)
    assert all(np.array_equal(actor_before[k], v) for k, v in _weights(trainer.actor).items())
    assert metrics["ppo/overflow/actor"] == 1.0
    assert trainer.actor_step.state_dict()["loss_scale"] == scale_before / 4  # two skipped mini-batches
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PPO Batch")]
    assert len(lines) == 2 and all("| is overflow: True |" in line for line in lines)
    assert lines[0].startswith("PPO Batch: 0 | PPO Epoch: 0 | loss: [")
