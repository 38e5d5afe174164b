"""Critic-free RL in the one PPO loop (issue 16): the actor loss cell against the numpy reference under jit, the
reward sources, and a GRPO iteration on tiny models that never builds, steps or saves a critic."""

import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor
from test_ppo_trainer import MODEL, NEW, PROMPT, FakePrompts

from mindrlhf.algorithms import grpo_math
from mindrlhf.configs.loader import ConfigError
from mindrlhf.configs.ppo_config import PPOConfig
from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
from mindrlhf.models.roles import ValueModel, freeze
from mindrlhf.trainer import grpo_cells, ppo_cells, ppo_trainer
from mindrlhf.trainer.grpo_cells import CriticFreeActorLoss
from mindrlhf.trainer.losses import metrics_dict
from mindrlhf.trainer.policy_losses import PolicyLoss
from mindrlhf.trainer.ppo_cells import ResponseLogprobs
from mindrlhf.trainer.ppo_trainer import PPOTrainer
from mindrlhf.trainer.reward_sources import RewardSources, contains_eos, zero_std_fraction


class IdsTokenizer:
    """Decodes ids as space-separated numbers (cut at EOS 2), enough for reward functions in tests."""

    def decode_batch(self, ids, mask=None):
        out = []
        for b in range(ids.shape[0]):
            row = [
                int(t) for t, m in zip(ids[b], mask[b] if mask is not None else np.ones(ids.shape[1])) if m
            ]
            out.append(" ".join(str(t) for t in (row[: row.index(2)] if 2 in row else row)))
        return out


def even_tokens(prompts, responses):
    """Reward for tests: fraction of response tokens that are even ids (differs between samples)."""
    return [sum(int(t) % 2 == 0 for t in r.split()) / max(len(r.split()), 1) for r in responses]


def _policy_case(rng, b=6, n=5):
    logprobs = rng.normal(-2, 0.5, (b, n)).astype(np.float32)
    old = (logprobs + rng.normal(0, 0.3, (b, n))).astype(np.float32)
    ref = (logprobs + rng.normal(0, 0.2, (b, n))).astype(np.float32)
    mask = (rng.rand(b, n) > 0.25).astype(np.float32)
    mask[:, 0] = 1
    mask[3] = 0  # a truncated response masked out (mask_truncated_completions)
    adv = grpo_math.group_advantages(rng.normal(size=b), 3, "grpo").astype(np.float32)
    return logprobs, old, ref, mask, adv


@pytest.mark.parametrize("loss_agg", grpo_math.LOSS_AGGREGATIONS)
@pytest.mark.parametrize(
    "ratio_level,clip_high,beta", [("token", None, 0.0), ("token", 0.28, 0.04), ("sequence", 0.3, 0.1)]
)
def test_actor_loss_cell_equals_numpy_reference_under_jit(loss_agg, ratio_level, clip_high, beta):
    """The cell's loss = grpo_math.policy_loss + beta * aggregate(kl_in_loss), on the actor's own log-probs."""
    ms.set_seed(0)
    actor = LlamaForCausalLM(LlamaConfig(**MODEL))
    rng = np.random.RandomState(1)
    b = 6
    seq = rng.randint(3, 64, (b, PROMPT + NEW)).astype(np.int32)
    att = np.ones_like(seq)
    logprobs = ResponseLogprobs(actor, PROMPT, 0.7)(Tensor(seq), Tensor(att))[0].asnumpy()
    _, _, _, mask, adv = _policy_case(rng, b, NEW)
    old = (logprobs + rng.normal(0, 0.3, logprobs.shape)).astype(np.float32)
    ref = (logprobs + rng.normal(0, 0.2, logprobs.shape)).astype(np.float32)
    policy = PolicyLoss(0.2, clip_high, loss_agg, ratio_level, NEW)
    cell = CriticFreeActorLoss(actor, PROMPT, 0.7, policy, beta, 0.0)
    jitted = ms.jit(cell.construct)
    loss, metrics = jitted(*(Tensor(x) for x in (seq, att, mask, old, adv, ref)))
    m = metrics_dict(CriticFreeActorLoss.METRICS, metrics)
    expect = grpo_math.policy_loss(logprobs, old, adv, mask, 0.2, clip_high, loss_agg, ratio_level, NEW)
    kl = grpo_math.aggregate_loss(grpo_math.kl_in_loss(logprobs, ref), mask, loss_agg, NEW)
    np.testing.assert_allclose(float(loss.asnumpy()), expect.loss + beta * kl, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(m["policy_loss"], expect.loss, rtol=2e-5, atol=2e-6)
    for name in ("clipfrac", "clipfrac_low", "clipfrac_high"):
        np.testing.assert_allclose(m[name], getattr(expect, name), atol=1e-6)
    np.testing.assert_allclose(m["kl"], kl if beta > 0 else 0.0, rtol=2e-5, atol=2e-6)
    assert m["clipfrac"] > 0  # the case exercises the clip


@pytest.mark.parametrize("loss_agg", grpo_math.LOSS_AGGREGATIONS)
def test_data_parallel_ranks_weight_the_loss_by_what_its_aggregation_divides_by(loss_agg):
    """Two ranks with different token counts: the rank losses combined with the cell's weights (tokens for
    token_mean, rows for the per-row aggregations) equal one process's loss on the global batch; the other
    weighting does not. The cell hands those weights to GlobalMean (recorded here in PyNative)."""
    rng = np.random.RandomState(3)
    logprobs, old, _, mask, adv = _policy_case(rng, b=6, n=6)
    mask[3:, 2:] = 0  # rank 1 holds far fewer tokens than rank 0
    whole = grpo_math.policy_loss(logprobs, old, adv, mask, 0.2, None, loss_agg, "token", 6).loss
    halves = [slice(0, 3), slice(3, 6)]
    losses = [grpo_math.policy_loss(logprobs[h], old[h], adv[h], mask[h], 0.2, None, loss_agg, "token", 6).loss
              for h in halves]  # fmt: skip
    weights = {"tokens": [mask[h].sum() for h in halves], "rows": [3.0, 3.0]}
    right = "tokens" if loss_agg == "token_mean" else "rows"
    wrong = "rows" if right == "tokens" else "tokens"
    combine = lambda w: float(np.dot(losses, w) / np.sum(w))  # noqa: E731  (what GlobalMean computes)
    np.testing.assert_allclose(combine(weights[right]), whole, rtol=1e-5)
    assert abs(combine(weights[wrong]) - whole) > 1e-4

    class RecordingMean(ms.nn.Cell):
        def __init__(self):
            super().__init__()
            self.weights = []

        def construct(self, mean, count):
            self.weights.append(float(count.asnumpy()))
            return mean

    ms.set_seed(0)
    actor = LlamaForCausalLM(LlamaConfig(**MODEL))
    seq = rng.randint(3, 64, (6, PROMPT + NEW)).astype(np.int32)
    cell = CriticFreeActorLoss(actor, PROMPT, 0.7, PolicyLoss(0.2, None, loss_agg, "token", NEW), 0.0, 0.0)
    cell.global_mean = RecordingMean()
    resp_mask = np.ones((6, NEW), np.float32)
    resp_mask[3:, 2:] = 0
    zeros = np.zeros((6, NEW), np.float32)
    cell(*(Tensor(x) for x in (seq, np.ones_like(seq), resp_mask, zeros, adv, zeros)))
    assert cell.global_mean.weights[0] == (resp_mask.sum() if right == "tokens" else 6.0)  # the policy loss
    assert cell.global_mean.weights[1] == resp_mask.sum()  # clipfrac: a token fraction


def test_reward_sources_combine_model_and_functions_with_eos_penalty():
    cfg = PPOConfig(
        advantage_estimator="grpo", num_generations=2, rollout_batch_size=4, mini_batch_size=2,
        reward_funcs=["test_grpo_trainer:even_tokens"], reward_weights=[2.0], missing_eos_penalty=0.5,
        init_kl_coef=0.0, max_prompt_length=2, max_new_tokens=3, seq_length=8,
    )  # fmt: skip
    sources = RewardSources(cfg, True, IdsTokenizer(), 2)
    seq = np.array([[1, 5, 4, 6, 2], [1, 5, 3, 2, 0], [1, 7, 4, 4, 4], [1, 7, 3, 3, 3]], np.int32)
    rmask = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 1]], np.float32)
    has_eos = contains_eos(seq[:, 2:], rmask, 2)
    np.testing.assert_array_equal(has_eos, [True, True, False, False])
    batch = {"prompt_ids": seq[:, :2], "prompt_mask": np.ones((4, 2), np.int32)}
    rm = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    scores, metrics = sources(batch, seq, rmask, rm, has_eos)
    # responses "4 6", "3", "4 4 4", "3 3 3": even fractions 1, 0, 1, 0; no EOS in rows 2, 3 -> rm - 0.5
    np.testing.assert_allclose(scores, [1 + 2, 2 + 0, 2.5 + 2, 3.5 + 0])
    assert metrics["rewards/even_tokens/mean"] == 0.5 and metrics["rewards/reward_model/mean"] == 2.5
    assert zero_std_fraction(np.array([1.0, 1.0, 0.0, 1.0]), 2) == 0.5
    with pytest.raises(ConfigError, match="missing_eos_penalty"):
        RewardSources(cfg, False, IdsTokenizer(), 2)
    with pytest.raises(ConfigError, match="need a tokenizer"):
        RewardSources(cfg, True, None, 2)


def make_grpo_trainer(tmp_path, monkeypatch, **overrides):
    """A GRPO trainer with reward functions only (no reward model, no reference, no critic); the PPO builders
    are patched to fail, so building any critic-side graph is an error."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a critic-side graph was built in a critic-free run")

    for name in ("CriticLoss", "ScoringForwards"):
        monkeypatch.setattr(ppo_trainer, name, forbidden)
    monkeypatch.setattr(ppo_cells, "ResponseValues", forbidden)
    monkeypatch.setattr(grpo_cells, "CriticValues", forbidden)
    ms.set_seed(0)
    actor = LlamaForCausalLM(LlamaConfig(**MODEL))
    config = PPOConfig(
        **{
            **dict(
                advantage_estimator="grpo", num_generations=4, rollout_batch_size=8, mini_batch_size=4,
                num_iterations=2, max_prompt_length=PROMPT, max_new_tokens=NEW, seq_length=32, actor_lr=1e-3,
                init_kl_coef=0.0, beta=0.0, temperature=1.5, reward_funcs=["test_grpo_trainer:even_tokens"],
            ),
            **overrides,
        }
    )  # fmt: skip
    reference = freeze(LlamaForCausalLM(LlamaConfig(**MODEL))) if config.needs_reference else None
    return PPOTrainer(
        config, actor, None, reference, None, FakePrompts(2), eos_token_id=2, pad_token_id=0,
        save_dir=str(tmp_path), tokenizer=IdsTokenizer(),
    )  # fmt: skip


def test_grpo_iteration_without_critic_or_reference(tmp_path, monkeypatch):
    trainer = make_grpo_trainer(tmp_path, monkeypatch)
    assert trainer.critic is None and trainer.reference is None and trainer.critic_step is None
    exp = trainer.make_experience(trainer.dataset.batch(0))
    assert exp.sequences.shape == (8, PROMPT + NEW) and exp.old_values is None and exp.returns is None
    prompts = exp.sequences[:, :PROMPT].reshape(2, 4, PROMPT)
    assert (prompts == prompts[:, :1]).all()  # G contiguous copies of each prompt
    responses = exp.sequences[:, PROMPT:].reshape(2, 4, NEW)
    assert all(len({r.tobytes() for r in group}) > 1 for group in responses)  # each sample has its own noise
    np.testing.assert_allclose(
        exp.advantages,
        grpo_math.group_advantages(exp.scores.astype(np.float64), 4, "grpo"),
        rtol=1e-5,
        atol=1e-6,
    )
    before = {n: p.asnumpy().copy() for n, p in trainer.actor.parameters_and_names()}
    metrics = trainer.train()
    assert trainer.iteration == 2
    changed = [
        n for n, p in trainer.actor.parameters_and_names() if not np.array_equal(p.asnumpy(), before[n])
    ]
    assert changed  # the actor learned from the group advantages
    for key in (
        "rewards/even_tokens/mean", "rewards/even_tokens/std", "grpo/zero_std_fraction", "response/length_mean",
        "response/length_max", "response/clipped_fraction", "ppo/policy/clipfrac_low", "ppo/policy/clipfrac_high",
        "ppo/policy/entropy", "ppo/logprob_diff/max", "env/score_mean",
    ):  # fmt: skip
        assert key in metrics and np.isfinite(metrics[key]), key
    assert (
        "objective/kl" not in metrics and "ppo/loss/value" not in metrics and "ppo/lr/critic" not in metrics
    )
    assert metrics["ppo/logprob_diff/max"] < 1e-4
    files = os.listdir(os.path.join(tmp_path, "checkpoints", "step_000002"))
    assert "actor.ckpt" in files and not any("critic" in f for f in files), files
    resumed = make_grpo_trainer(tmp_path / "again", monkeypatch)  # resume restores the actor-only state
    resumed.resume(str(tmp_path))
    assert resumed.iteration == 2
    for (name, p), (_, q) in zip(resumed.actor.parameters_and_names(), trainer.actor.parameters_and_names()):
        np.testing.assert_array_equal(p.asnumpy(), q.asnumpy(), err_msg=name)


def test_beta_builds_the_reference_and_a_critic_is_dropped(tmp_path, monkeypatch):
    trainer = make_grpo_trainer(tmp_path, monkeypatch, beta=0.04, advantage_estimator="rloo")
    assert trainer.reference is not None and trainer.critic is None
    exp = trainer.make_experience(trainer.dataset.batch(0))
    np.testing.assert_allclose(
        exp.advantages,
        grpo_math.group_advantages(exp.scores.astype(np.float64), 4, "rloo"),
        rtol=1e-5,
        atol=1e-6,
    )
    metrics = trainer.train_step(exp)
    assert metrics["grpo/kl"] >= 0 and np.isfinite(metrics["ppo/loss/actor"])
    again = PPOTrainer(  # the config decides: a critic passed to a critic-free run is dropped, never built on
        trainer.config, trainer.actor, ValueModel(LlamaConfig(**MODEL)), trainer.reference, None,
        FakePrompts(2), eos_token_id=2, pad_token_id=0, save_dir=str(tmp_path), tokenizer=IdsTokenizer(),
    )  # fmt: skip
    assert again.critic is None and again.critic_step is None
