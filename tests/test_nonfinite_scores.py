"""NaN/inf reward-model scores (issue 15 item 7): warned with the count, kept out of the running score statistics
and of the update, and a clear error after `max_nonfinite_iterations` iterations in a row."""

import logging

import numpy as np
import pytest
from test_ppo_trainer import make_trainer

from mindrlhf.trainer.score_guard import RewardError


def _weights(cell):
    return {n: p.asnumpy().copy() for n, p in cell.parameters_and_names()}


def test_non_finite_scores_are_left_out_and_stop_the_run_when_they_persist(tmp_path, caplog):
    trainer = make_trainer(tmp_path, normalize_scores=True, max_nonfinite_iterations=3)
    real = trainer._score  # step 2 (reward, reference, critic forwards) -> numpy arrays
    broken = {"rows": [1, 3]}
    raw = {}

    def scoring(sequences, attention_mask):
        scores, ref_logprobs, values = real(sequences, attention_mask)
        s = np.array(scores, dtype=np.float32, copy=True)
        raw["scores"] = s.copy()
        s[broken["rows"]] = [np.nan, np.inf][: len(broken["rows"])] if len(broken["rows"]) == 2 else np.nan
        return s, ref_logprobs, values

    trainer._score = scoring
    with caplog.at_level(logging.WARNING, logger="mindrlhf.trainer.score_guard"):
        exp = trainer.make_experience(trainer.dataset.batch(0))
    assert any("2 of 4 reward-model scores are NaN/inf" in r.getMessage() for r in caplog.records)
    # Rows 1 and 3 are out of the losses (no response token left) and score 0; everything is finite.
    assert exp.response_mask[[1, 3]].sum() == 0 and exp.response_mask[[0, 2]].sum() > 0
    assert exp.scores[1] == 0 and exp.scores[3] == 0
    for field in ("scores", "rewards", "advantages", "returns", "old_values", "ref_logprobs"):
        assert np.isfinite(getattr(exp, field)).all(), field
    # The running statistics saw only the two finite scores.
    stats = trainer.score_normalizer.state_dict()
    finite = raw["scores"][[0, 2]].astype(np.float64)
    assert stats["count"] == 2.0 and stats["mean"] == pytest.approx(finite.mean(), rel=1e-6)
    out = trainer.train_step(exp)
    assert np.isfinite(out["ppo/loss/actor"]) and out["ppo/overflow/actor"] == 0.0

    # Every score NaN: no update at all (weights and Adam state unchanged), the streak goes on.
    broken["rows"] = [0, 1, 2, 3]
    trainer.iteration = 1
    before = _weights(trainer.actor), _weights(trainer.actor_optimizer)
    exp = trainer.make_experience(trainer.dataset.batch(1))
    assert trainer.train_step(exp) == {}
    after = _weights(trainer.actor), _weights(trainer.actor_optimizer)
    for a, b in zip(before, after):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert trainer.score_normalizer.state_dict()["count"] == 2.0  # still only the finite ones
    assert trainer.save().endswith("step_000001")  # the streak is part of the resumable state

    trainer.iteration = 2
    with pytest.raises(
        RewardError, match=r"NaN/inf scores in 3 iterations in a row \(iterations 0\.\.2; 4 of 4"
    ):
        trainer.make_experience(trainer.dataset.batch(2))


def test_a_finite_iteration_resets_the_streak(tmp_path):
    from mindrlhf.trainer.score_guard import NonFiniteScores

    class One:
        world = 1

    guard = NonFiniteScores(limit=2)
    ok, bad, total = guard.check(np.array([1.0, np.nan]), One(), 0)
    assert ok.tolist() == [True, False] and (bad, total) == (1, 2) and guard.streak == 1
    guard.check(np.array([1.0, 2.0]), One(), 1)
    assert guard.streak == 0
    guard.check(np.array([np.inf, np.nan]), One(), 2)
    with pytest.raises(RewardError):
        guard.check(np.array([np.nan, 0.0]), One(), 3)
