"""KV-cache generation: parity with transformers, exact rollout log-probs, sampling rules, EOS, compile-once."""

import copy
import json
import os

import mindspore as ms
import numpy as np
import pytest
from conftest import ROOT, run_module
from mindspore import Tensor, nn

import mindrlhf
from mindrlhf.configs.run_config import load_run_config
from mindrlhf.generation import GenerationOutput, SamplingSpec, TokenSampler, generate

torch = pytest.importorskip("torch")

VOCAB = 101  # conftest.HF_TINY
N = 24  # one response length everywhere: the tests share compiled graphs (keyed by shapes and rule)


@pytest.fixture(scope="module")
def ours(converted_tiny):
    ckpt, yaml_path = converted_tiny
    run = load_run_config(yaml_path)
    model = mindrlhf.LlamaForCausalLM(run.model_config)
    mindrlhf.load_checkpoint(model, run.checkpoint_path)
    return model


def _left_padded(rows, pad=0):
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for b, row in enumerate(rows):
        ids[b, width - len(row) :], mask[b, width - len(row) :] = row, 1
    return ids, mask


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.RandomState(7)
    return _left_padded([rng.randint(3, VOCAB, size=n) for n in (11, 6, 2)])


def _policy_logprobs(model, out: GenerationOutput, prompt_mask, temperature):
    """log softmax(logits / T) of a full no-cache forward over the generated sequences, at the chosen tokens."""
    n = out.response_mask.shape[1]
    mask = np.concatenate([prompt_mask, np.ones_like(out.response_mask)], 1)
    logits = model(Tensor(out.sequences), Tensor(mask)).asnumpy().astype(np.float64)  # (B, P+N, V)
    p = prompt_mask.shape[1]
    scaled = logits[:, p - 1 : p - 1 + n] / temperature  # position t predicts token t+1
    logz = np.log(np.exp(scaled - scaled.max(-1, keepdims=True)).sum(-1)) + scaled.max(-1)
    chosen = np.take_along_axis(scaled, out.response_ids[..., None].astype(np.int64), -1)[..., 0]
    return chosen - logz, scaled


def test_greedy_matches_transformers_row_by_row(hf_tiny, ours, prompts):
    """A left-padded batch of three prompt lengths: each row equals HF generate on that row alone."""
    hf, _ = hf_tiny
    ids, mask = prompts
    n = N
    out = mindrlhf.generate(ours, ids, mask, max_new_tokens=n)  # the lazily exported public name
    assert out.sequences.shape == (3, ids.shape[1] + n) and out.sequences.dtype == np.int32
    np.testing.assert_array_equal(out.sequences[:, : ids.shape[1]], ids)
    assert out.response_mask.shape == (3, n) and out.response_mask.all()
    config = copy.deepcopy(hf.generation_config)
    config.eos_token_id = None  # the tiny model may emit its EOS id; compare all N tokens
    for b in range(3):
        row = ids[b][mask[b] > 0]
        with torch.no_grad():
            ref = hf.generate(
                torch.tensor(row[None], dtype=torch.long),
                attention_mask=torch.ones((1, len(row)), dtype=torch.long),
                generation_config=config,
                max_new_tokens=n,
                do_sample=False,
            ).numpy()[0, len(row) :]
        np.testing.assert_array_equal(out.response_ids[b], ref, err_msg=f"row {b} (prompt length {len(row)})")
    # greedy logprobs are exact too (temperature 1)
    expected, _ = _policy_logprobs(ours, out, mask, 1.0)
    np.testing.assert_allclose(out.logprobs, expected, atol=1e-5)


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(0.7, 0, 1.0), (1.3, 10, 1.0), (0.8, 0, 0.9)],  # plain, top-k, top-p (top-k + top-p: crafted test)
)
def test_sampled_logprobs_equal_full_forward(ours, prompts, temperature, top_k, top_p):
    """Rollout logprobs == log softmax(logits / T) of a no-cache forward, before truncation, to 1e-5."""
    ids, mask = prompts
    out = generate(
        ours, ids, mask, max_new_tokens=N, do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
        seed=3,
    )  # fmt: skip
    assert out.response_mask.all()
    expected, scaled = _policy_logprobs(ours, out, mask, temperature)
    np.testing.assert_allclose(out.logprobs, expected, atol=1e-5)
    tokens = out.response_ids.astype(np.int64)
    assert (tokens != scaled.argmax(-1)).any(), "sampling never left the argmax: was it sampling?"
    order = np.argsort(-scaled, -1)
    rank = np.argmax(order == tokens[..., None], -1)  # 0 = most likely
    if top_k:
        assert rank.max() < top_k
    if top_p < 1.0:
        probs = np.exp(scaled - scaled.max(-1, keepdims=True))
        if top_k:
            probs = np.where(np.argsort(order, -1) < top_k, probs, 0.0)
        probs /= probs.sum(-1, keepdims=True)
        chosen_p = np.take_along_axis(probs, tokens[..., None], -1)[..., 0]
        mass_before = (probs * (probs > chosen_p[..., None])).sum(-1)
        assert (mass_before < top_p + 1e-6).all()


class _JitSampler(nn.Cell):
    def __init__(self, spec, vocab, **kwargs):
        super().__init__()
        self.sampler = TokenSampler(spec, vocab, **kwargs)

    @ms.jit
    def construct(self, logits, temperature, top_p, uniform):
        return self.sampler(logits, temperature, top_p, uniform)


def test_sampler_on_crafted_distribution():
    """top-k / top-p keep exactly the allowed tokens (also at u -> 0 and u = 1) with the renormalised odds."""
    probs = np.array([0.30, 0.22, 0.16, 0.12, 0.08, 0.05, 0.03, 0.02, 0.01, 0.01], np.float64)
    perm = np.random.RandomState(0).permutation(len(probs))  # the likely tokens are not simply 0, 1, 2
    logits_row = np.empty(len(probs), np.float32)
    logits_row[perm] = np.log(probs)
    rank_of_token = np.empty(len(probs), np.int64)
    rank_of_token[perm] = np.arange(len(probs))
    rows = 4000
    logits = Tensor(np.tile(logits_row, (rows, 1)))
    uniform = 1.0 - np.random.RandomState(1).random_sample(rows).astype(np.float32)
    uniform[:2] = [1.0, 1e-7]
    cases = [  # (top_k, top_p, allowed ranks): mass before rank 3 is 0.68, before rank 2 is 0.52
        (3, 1.0, 3),
        (0, 0.6, 3),
        (0, 0.5, 2),
        (5, 0.8, 4),  # within the top 5 (mass 0.88): 0.77 before rank 3, 0.91 before rank 4
        (0, 1.0, 10),
    ]
    one = Tensor(np.float32(1.0))
    for top_k, top_p, allowed in cases:
        spec = SamplingSpec(False, top_k, top_p < 1.0)
        tokens, logprobs = _JitSampler(spec, len(probs))(
            logits, one, Tensor(np.float32(top_p)), Tensor(uniform)
        )
        ranks = rank_of_token[tokens.asnumpy()]
        assert ranks.max() == allowed - 1, (top_k, top_p, np.bincount(ranks))
        freq = np.bincount(ranks, minlength=allowed)[:allowed] / rows
        np.testing.assert_allclose(freq, probs[:allowed] / probs[:allowed].sum(), atol=0.03)
        np.testing.assert_allclose(logprobs.asnumpy(), np.log(probs)[ranks], atol=1e-5)  # untruncated policy
    # temperature scales the policy the logprob is taken under; greedy is the argmax
    tokens, logprobs = _JitSampler(SamplingSpec(True), len(probs))(
        logits, Tensor(np.float32(2.0)), one, Tensor(uniform)
    )
    assert (tokens.asnumpy() == perm[0]).all()
    tempered = np.log(probs) / 2.0
    tempered -= np.log(np.exp(tempered).sum())
    np.testing.assert_allclose(logprobs.asnumpy(), tempered[0], atol=1e-5)


@pytest.mark.parametrize("peaked", [True, False])
def test_top_p_prefilter_equals_full_sort(peaked):
    """top-p alone tries the most likely `top_p_prefilter` tokens before sorting the vocabulary: the same tokens as
    the full sort when they hold top_p of the mass (peaked), and the full sort itself when they do not (flat)."""
    vocab, rows, prefilter, top_p = 3000, 64, 64, 0.9
    rng = np.random.RandomState(2)
    logits = rng.randn(rows, vocab).astype(np.float32) * (6.0 if peaked else 0.3)
    shifted = logits - logits.max(-1, keepdims=True)
    p = np.exp(shifted.astype(np.float64))
    p /= p.sum(-1, keepdims=True)
    covered = np.sort(p, -1)[:, ::-1][:, :prefilter].sum(-1) >= top_p
    assert covered.all() if peaked else not covered.any()  # which branch the step takes
    uniform = Tensor(1.0 - rng.random_sample(rows).astype(np.float32))
    args = (Tensor(logits), Tensor(np.float32(1.0)), Tensor(np.float32(top_p)), uniform)
    spec = SamplingSpec(False, 0, True)
    fast = _JitSampler(spec, vocab, top_p_prefilter=prefilter)
    assert fast.sampler.prefilter == prefilter
    tokens, logprobs = fast(*args)
    ref_tokens, ref_logprobs = _JitSampler(spec, vocab, top_p_prefilter=vocab)(*args)  # always the full sort
    np.testing.assert_array_equal(tokens.asnumpy(), ref_tokens.asnumpy())
    np.testing.assert_allclose(logprobs.asnumpy(), ref_logprobs.asnumpy(), atol=1e-6)
    chosen = p[np.arange(rows), tokens.asnumpy()]
    assert ((p * (p > chosen[:, None])).sum(-1) < top_p + 1e-6).all()  # inside the nucleus


def test_seed_and_eos(ours, prompts):
    ids, mask = prompts
    kwargs = dict(max_new_tokens=N, do_sample=True, temperature=1.0)
    a = generate(ours, ids, mask, seed=11, **kwargs)
    b = generate(ours, ids, mask, seed=11, **kwargs)
    c = generate(ours, ids, mask, seed=12, **kwargs)
    np.testing.assert_array_equal(a.sequences, b.sequences)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    assert (a.sequences != c.sequences).any()

    # Make a token that row 0 emits mid-way the EOS: same seed, so everything before each row's first EOS is
    # unchanged, and everything after it is pad with mask 0 and logprob 0.
    eos = int(a.response_ids[0, 5])
    pad = 0 if eos != 0 else 1
    e = generate(ours, ids, mask, seed=11, eos_token_id=eos, pad_token_id=pad, **kwargs)
    for row in range(3):
        hits = np.flatnonzero(a.response_ids[row] == eos)
        stop = hits[0] + 1 if hits.size else N
        np.testing.assert_array_equal(e.response_ids[row, :stop], a.response_ids[row, :stop])
        np.testing.assert_allclose(e.logprobs[row, :stop], a.logprobs[row, :stop], atol=1e-6)
        assert (e.response_mask[row, :stop] == 1).all() and (e.response_mask[row, stop:] == 0).all()
        assert (e.response_ids[row, stop:] == pad).all() and (e.logprobs[row, stop:] == 0).all()

    # all rows stop -> the loop ends early (identical rows, greedy: everyone hits the EOS at the same step)
    same = np.repeat(ids[:1], 3, 0), np.repeat(mask[:1], 3, 0)
    g = generate(ours, *same, max_new_tokens=N)
    tokens = g.response_ids[0].tolist()
    new_at = [i for i in range(1, N - 1) if tokens[i] not in tokens[:i]]  # stop during decode, not prefill
    assert new_at, f"greedy output too repetitive to place an EOS: {tokens}"
    first = new_at[0]
    eos = tokens[first]
    early = generate(ours, *same, max_new_tokens=N, eos_token_id=eos)
    assert early.num_steps == first + 1 < N
    assert early.response_mask.sum(1).tolist() == [first + 1] * 3


def test_bad_inputs_are_refused(ours, prompts):
    ids, mask = prompts
    right_padded = mask[:, ::-1].copy()
    with pytest.raises(ValueError, match="left-padded"):
        generate(ours, ids, right_padded, max_new_tokens=2)
    with pytest.raises(ValueError, match="temperature"):
        generate(ours, ids, mask, max_new_tokens=2, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(ours, ids + VOCAB, mask, max_new_tokens=2)


def test_decode_graph_compiles_once_across_calls(ours, prompts):
    """The first call of a (shape, rule) compiles prefill + decode; later calls with other seed, temperature and
    top_p values add no graph (counted in MindSpore's jit compile cache)."""
    from mindspore.graph.api import ms_compile_cache

    ids, mask = prompts
    kwargs = dict(max_new_tokens=N, do_sample=True, top_k=5)  # a rule no other test uses
    before = set(ms_compile_cache)
    generate(ours, ids, mask, top_p=0.9, seed=0, **kwargs)
    first = set(ms_compile_cache) - before
    assert len(first) == 2, first
    generate(ours, ids, mask, top_p=0.8, temperature=0.5, seed=1, **kwargs)
    assert set(ms_compile_cache) - before == first


def test_cli_generates_from_yaml_checkpoint(converted_tiny):
    _, yaml_path = converted_tiny
    proc = run_module(
        "-m", "mindrlhf.tools.generate", "--config", yaml_path, "--prompt_ids", "1,5,9", "--prompt_ids", "7",
        "--max_new_tokens", "5", "--no_eos",
    )  # fmt: skip
    assert "[0] prompt ids:   [1, 5, 9]" in proc.stdout and "[1] response ids:" in proc.stdout
    response = json.loads(proc.stdout.split("[0] response ids: ")[1].split("  (")[0])
    assert len(response) == 5 and all(0 <= t < VOCAB for t in response)
    bad = run_module(
        "-m", "mindrlhf.tools.generate", "--config", yaml_path, "--prompt_ids", "1,500", check=False
    )
    assert bad.returncode == 2 and "outside the model's vocabulary" in bad.stderr


def test_bench_smoke_mode_runs():
    proc = run_module(os.path.join(ROOT, "bench", "bench_generate.py"), "--small")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"kv_tokens_per_s", "nocache_tokens_per_s", "hf_tokens_per_s", "peak_rss_mb"} <= set(result)
    assert result["kv_tokens_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["rows_equal_kv_vs_hf"] == 1.0 and result["rows_equal_kv_vs_nocache"] == 1.0
