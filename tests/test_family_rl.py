"""RL with a Qwen2-family actor (issue 19): q/k/v bias, tied input/output embeddings and rope theta 1e6 in the
same cells. One PPO iteration (actor, critic, reference and reward all Qwen2-shaped) and one GRPO iteration run,
train every actor parameter group the loss reaches (the q/k/v biases included) and keep rollout and trainer
log-probs equal."""

import numpy as np
import test_grpo_trainer
import test_ppo_trainer

QWEN2 = dict(
    test_ppo_trainer.MODEL, qkv_has_bias=True, tie_word_embeddings=True, theta=1e6, rms_norm_eps=1e-6
)


def _qwen2(monkeypatch):
    monkeypatch.setattr(test_ppo_trainer, "MODEL", QWEN2)
    monkeypatch.setattr(test_grpo_trainer, "MODEL", QWEN2)


def _changed(cell, before):
    return {n for n, p in cell.parameters_and_names() if not np.array_equal(p.asnumpy(), before[n])}


def test_ppo_iteration_with_a_qwen2_actor(tmp_path, monkeypatch):
    _qwen2(monkeypatch)
    trainer = test_ppo_trainer.make_trainer(tmp_path, num_iterations=1)
    names = {n for n, _ in trainer.actor.parameters_and_names()}
    assert "model.layers.0.attention.wq.bias" in names and not any(n.startswith("lm_head") for n in names)
    before = {n: p.asnumpy().copy() for n, p in trainer.actor.parameters_and_names()}
    metrics = trainer.train()
    changed = _changed(trainer.actor, before)
    assert (
        "model.layers.0.attention.wq.bias" in changed and "model.tok_embeddings.embedding_weight" in changed
    )
    assert metrics["ppo/logprob_diff/max"] < 1e-4 and np.isfinite(metrics["ppo/loss/value"])


def test_grpo_iteration_with_a_qwen2_actor(tmp_path, monkeypatch):
    _qwen2(monkeypatch)
    trainer = test_grpo_trainer.make_grpo_trainer(tmp_path, monkeypatch, num_iterations=1)
    assert trainer.critic is None and trainer.actor.config.tie_word_embeddings
    before = {n: p.asnumpy().copy() for n, p in trainer.actor.parameters_and_names()}
    metrics = trainer.train()
    assert "model.layers.1.attention.wv.bias" in _changed(trainer.actor, before)
    assert metrics["ppo/logprob_diff/max"] < 1e-4 and np.isfinite(metrics["ppo/loss/actor"])
