"""The PPO trainer on tiny models: what an iteration changes, overflow handling, experience invariants, the sign
of each actor-loss term, score normalisation inside the trainer, the prompt batches' epoch wrap, a fixed loss
scale."""

import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindrlhf.algorithms import ppo_math
from mindrlhf.configs.ppo_config import PPOConfig
from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
from mindrlhf.models.roles import ValueModel, freeze
from mindrlhf.trainer.losses import metrics_dict
from mindrlhf.trainer.ppo_cells import ActorLoss, ResponseLogprobs
from mindrlhf.trainer.ppo_trainer import PPOTrainer, PromptBatches

MODEL = dict(
    seq_length=32,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    n_kv_heads=2,
    vocab_size=64,
    intermediate_size=48,
)
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
            ids[r, PROMPT - n :] = np.concatenate([[1], rng.randint(3, 64, n - 1)])
            mask[r, PROMPT - n :] = 1
        seq = 32
        pretrain = np.zeros((b, seq), np.int32)
        pretrain[:, :10] = rng.randint(3, 64, (b, 10))
        pmask = (pretrain > 0).astype(np.int32)
        loss_mask = pmask.copy()
        loss_mask[:, :4] = 0
        return {
            "prompt_ids": ids,
            "prompt_mask": mask,
            "pretrain_ids": pretrain,
            "pretrain_mask": pmask,
            "loss_mask": loss_mask,
        }


def _weights(cell):
    return {n: p.asnumpy().copy() for n, p in cell.parameters_and_names()}


def make_trainer(tmp_path, loss_scale=None, **overrides):
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
    ppo = PPOConfig(
        **{
            **dict(
                rollout_batch_size=4,
                mini_batch_size=2,
                ppo_epochs=1,
                num_iterations=4,
                max_prompt_length=PROMPT,
                max_new_tokens=NEW,
                seq_length=32,
                actor_lr=1e-3,
                critic_lr=1e-3,
                init_kl_coef=0.1,
                ptx_coef=0.5,
                entropy_coef=0.01,
            ),
            **overrides,
        }
    )
    trainer = PPOTrainer(
        ppo,
        actor,
        critic,
        freeze(reference),
        freeze(reward),
        FakePrompts(4),
        eos_token_id=2,
        pad_token_id=0,
        save_dir=str(tmp_path),
        loss_scale=loss_scale or {"loss_scale_value": 1024.0, "scale_factor": 2, "scale_window": 1000},
    )
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


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_actor_loss_subtracts_entropy_and_adds_ptx(trainer):
    """loss = policy_loss - entropy_coef * entropy + ptx_coef * ptx, each term recomputed in numpy from the model's
    logits: a flipped sign on the entropy (or ptx) term changes the loss by 2 * coef * term and fails here."""
    exp = trainer.make_experience(trainer.dataset.batch(3))
    actor = trainer.actor
    inputs = [Tensor(getattr(exp, k)) for k in ("sequences", "attention_mask", "response_mask", "old_logprobs",
                                                  "advantages", "pretrain_ids", "pretrain_mask", "loss_mask")]  # fmt: skip
    _, logits = ResponseLogprobs(actor, PROMPT, 1.0)(inputs[0], inputs[1])
    logp = _log_softmax(logits.asnumpy().astype(np.float64))
    entropy = ppo_math.masked_mean(-(np.exp(logp) * logp).sum(-1), exp.response_mask)
    full = _log_softmax(actor(inputs[5], inputs[6]).asnumpy().astype(np.float64))
    targets = np.take_along_axis(full[:, :-1], exp.pretrain_ids[:, 1:, None].astype(np.int64), -1)[..., 0]
    ptx = -ppo_math.masked_mean(targets, exp.loss_mask[:, 1:])
    assert entropy > 0.5 and ptx > 0.5
    base_loss, base = ActorLoss(actor, PROMPT, 1.0, 0.2, 0.0, 0.0)(*inputs)
    for entropy_coef, ptx_coef in ((0.5, 0.0), (0.0, 0.3), (0.5, 0.3)):
        loss, metrics = ActorLoss(actor, PROMPT, 1.0, 0.2, entropy_coef, ptx_coef)(*inputs)
        named = metrics_dict(ActorLoss.METRICS, metrics)
        assert named["policy_loss"] == pytest.approx(float(base_loss.asnumpy()), abs=1e-6)
        assert named["entropy"] == pytest.approx(entropy, rel=1e-4)
        expected = float(base_loss.asnumpy()) - entropy_coef * entropy + ptx_coef * ptx
        assert float(loss.asnumpy()) == pytest.approx(expected, rel=1e-4, abs=1e-5), (entropy_coef, ptx_coef)
        if ptx_coef:
            assert named["ptx_loss"] == pytest.approx(ptx, rel=1e-4)
    assert metrics_dict(ActorLoss.METRICS, base)["ptx_loss"] == 0.0


def test_trainer_normalises_and_clips_scores_into_the_last_token_reward(tmp_path):
    """normalize_scores + score_clip 1.5, statistics running over iterations: the reward at each row's last
    response token is clip((s - mean) / std, -1.5, 1.5) with the population mean/std of all scores so far
    (KL is 0 here: reference log-probs equal the rollout's)."""
    trainer = make_trainer(tmp_path, normalize_scores=True, score_clip=1.5)
    mask = np.zeros((4, NEW), np.float32)
    for r, n in enumerate((6, 1, 3, 4)):
        mask[r, :n] = 1
    logp = -np.ones((4, NEW), np.float32) * mask
    values = np.zeros((4, NEW), np.float32)
    last = np.array([5, 0, 2, 3])
    # batch 1: mean 4, var 12.5 -> (s - 4) / 3.5355, 10 clipped to 1.5
    rewards, _, _ = trainer.advantages(np.array([1.0, 2.0, 3.0, 10.0]), logp, logp, values, mask)
    np.testing.assert_allclose(
        rewards[np.arange(4), last], [-0.8485281, -0.5656854, -0.2828427, 1.5], rtol=1e-6
    )
    assert np.count_nonzero(rewards) == 4
    # batch 2 with the 8 scores so far: mean 4, var 82 / 8 = 10.25 -> (s - 4) / 3.2016 (batch-only stats: / 2.83)
    rewards, _, _ = trainer.advantages(np.array([0.0, 8.0, 4.0, 4.0]), logp, logp, values, mask)
    np.testing.assert_allclose(
        rewards[np.arange(4), last], [-1.2493901, 1.2493901, 0.0, 0.0], rtol=1e-6, atol=1e-7
    )
    assert trainer.score_normalizer.state_dict() == pytest.approx({"mean": 4.0, "var": 10.25, "count": 8.0})


def test_prompt_batches_wrap_into_a_new_shuffled_epoch(tmp_path):
    """10 rows, batch 4: 2 batches per epoch (the 2-row tail dropped). Batch 2 starts epoch 1 in a new order,
    read sequentially (batch 1 -> 2) or directly; the same seed gives the same batches, another seed others."""
    from test_readme_api import _ppo_mindrecord

    from mindrlhf.data.reader import read_dataset

    path = tmp_path / "ppo.mindrecord"
    _ppo_mindrecord(path, PROMPT, 32, rows=10)
    everything = next(iter(read_dataset(str(path), "ppo", batch_size=10, shuffle=False)))["prompt_ids"]
    batches = PromptBatches(str(path), 4, seed=5)
    assert len(batches) == 2
    seen = [batches.batch(i)["prompt_ids"] for i in range(5)]  # sequential: epochs 0, 0, 1, 1, 2
    orders = [batches.reader.epoch_indices(e) for e in range(3)]
    for i, got in enumerate(seen):
        np.testing.assert_array_equal(
            got, everything[orders[i // 2][(i % 2) * 4 : (i % 2 + 1) * 4]], err_msg=str(i)
        )
    assert not np.array_equal(orders[0], orders[1])  # epoch 1 is reshuffled
    again = PromptBatches(str(path), 4, seed=5)
    np.testing.assert_array_equal(again.batch(2)["prompt_ids"], seen[2])  # random access = sequential
    np.testing.assert_array_equal(again.batch(0)["prompt_ids"], seen[0])
    other = PromptBatches(str(path), 4, seed=6)
    assert not all(np.array_equal(other.batch(i)["prompt_ids"], seen[i]) for i in range(3))


def test_fixed_scalar_loss_scale_trains_and_stays_after_an_overflow(tmp_path, caplog):
    """`runner_wrapper.scale_sense: 1.0` (MindFormers' bf16/LoRA YAMLs) used to crash with "'float' object is
    not iterable": now a fixed scale; a PPO step trains, an overflowing one is skipped, the scale stays 1."""
    with caplog.at_level(logging.INFO, logger="mindrlhf.trainer.train_step"):
        trainer = make_trainer(tmp_path, loss_scale=1.0)
    assert "actor: fixed loss scale 1" in caplog.text and "critic: fixed loss scale 1" in caplog.text
    before = _weights(trainer.actor)
    metrics = trainer.train_step(trainer.make_experience(trainer.dataset.batch(0)))
    assert metrics["ppo/overflow/actor"] == 0.0
    assert not any(np.array_equal(before[k], v) for k, v in _weights(trainer.actor).items())
    exp = trainer.make_experience(trainer.dataset.batch(1))
    exp.advantages[:] = np.nan
    before = _weights(trainer.actor)
    metrics = trainer.train_step(exp)
    assert metrics["ppo/overflow/actor"] == 1.0
    assert all(np.array_equal(before[k], v) for k, v in _weights(trainer.actor).items())
    assert trainer.actor_step.state_dict() == {"loss_scale": 1.0, "good_steps": 0}
