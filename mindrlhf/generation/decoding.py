"""Batched generation with a static KV cache: one prefill graph, one one-token decode graph, sampling in-graph.

    out = generate(model, input_ids, attention_mask, max_new_tokens=128, do_sample=True, temperature=0.7, seed=0)
    out.sequences [B, P+N], out.response_mask [B, N], out.logprobs [B, N]

How a call runs (B rows, prompts left-padded to P, N new tokens, cache of S = P + N - 1 slots):
1. prefill: the P prompt tokens fill cache slots [0, P); the LM head runs on the last position only (all P
   positions would cost P times the decode step's largest matmul); token 0 is chosen in-graph.
2. decode: step i feeds token i-1 at slot P+i-1 and chooses token i. The key mask (prompt mask, then every
   generated slot up to the current one) and the step's uniforms are built in-graph from the slot number, so the
   host sends only a 0-d slot tensor per step and reads back one bool (all rows done) when EOS is set.
The compiled graphs and the cache are kept on the model, keyed by shapes and sampling rule, so a PPO loop that
calls generate() with the same shapes every iteration compiles twice in total and reuses the cache buffers.
Weights are read from the model's Parameters at run time, so optimiser updates are seen without recompiling.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import numbers
import time
from typing import Any, Dict, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from mindrlhf.generation.sampling import SamplingSpec, TokenSampler
from mindrlhf.models.llama.grouped import repeat_groups

logger = logging.getLogger(__name__)

_STORE_ATTR = "_mindrlhf_generation_store"  # per-model cache of compiled step cells and KV caches
_MAX_RUNNERS = 8  # compiled (shape, sampling rule) variants kept per model, least recently used dropped


@dataclasses.dataclass
class GenerationOutput:
    """What `generate` returns (numpy arrays on the host; N is always `max_new_tokens`)."""

    sequences: np.ndarray  # [B, P+N] int32: the prompt as given (left-padded) + response, pad after EOS
    response_mask: np.ndarray  # [B, N] int32: 1 for real response tokens (EOS included), 0 after
    logprobs: np.ndarray  # [B, N] float32: log softmax(logits / T) at the chosen tokens; 0 where masked
    num_steps: int  # tokens generated before every row stopped (<= N)
    timings: Dict[str, float]  # prefill_s, decode_s (wall seconds; the first call includes compilation)

    @property
    def response_ids(self) -> np.ndarray:
        """`[B, N]` the generated part of `sequences`."""
        return self.sequences[:, self.sequences.shape[1] - self.response_mask.shape[1] :]


class _Prefill(nn.Cell):
    """Prompt `[B, P]` into cache slots [0, P) of `cache` and choose token 0 from the last position's logits.

    group G > 1 (num_return_sequences): `cache` has the B prompt rows; its keys/values are then copied into the
    `[B*G]` `decode_cache` (each prompt's rows contiguous) and token 0 is chosen per output row from the repeated
    logits: the same tokens as a prefill of the repeated prompts, at 1/G of the prompt arithmetic."""

    def __init__(self, model, cache, sampler, group: int = 1, decode_cache=None):
        super().__init__(auto_prefix=False)  # keep the model's parameter names
        self.model, self.cache, self.sampler = model, cache, sampler
        self.group, self.decode_cache = group, decode_cache

    @ms.jit
    def construct(self, input_ids, key_mask, temperature, top_p, uniforms, eos):
        slot = ops.zeros((), ms.int32)
        hidden = self.model.model(input_ids, key_mask, None, self.cache.k, self.cache.v, slot)  # (B, P, H)
        logits = self.model.lm_head(hidden[:, -1:]).astype(ms.float32)  # (B, 1, V)
        logits = logits.reshape(logits.shape[0], -1)  # (B, V); a [:, 0] slice here cost ~6 ms (StridedSlice)
        if self.group > 1:  # a graph constant
            logits = repeat_groups(logits, self.group)  # (B*G, V)
            # (B, nkv, S, hd) -> (B*G, nkv, S, hd); slots >= P hold stale values, masked until decode writes them
            for i in range(len(self.cache.k)):
                ops.assign(self.decode_cache.k[i], repeat_groups(self.cache.k[i], self.group))
                ops.assign(self.decode_cache.v[i], repeat_groups(self.cache.v[i], self.group))
        tokens, logprobs = self.sampler(logits, temperature, top_p, uniforms[0])
        done = tokens == eos
        return tokens, logprobs, done, ops.all(done)


class _Decode(nn.Cell):
    """Feed token i-1 (`tokens [B]`) at cache slot `slot` = P+i-1 and choose token i; `done` marks rows past EOS
    (they keep computing, static shapes; the host replaces their tokens with pad)."""

    def __init__(self, model, cache, sampler, prompt_len: int):
        super().__init__(auto_prefix=False)
        self.model, self.cache, self.sampler = model, cache, sampler
        self.prompt_len = prompt_len

    @ms.jit
    def construct(self, tokens, prompt_mask, slot, done, temperature, top_p, uniforms, eos):
        s = prompt_mask.shape[1]
        k_slots = ops.arange(0, s, dtype=ms.int32)
        generated = ops.logical_and(k_slots >= self.prompt_len, k_slots <= slot).reshape(1, s)
        key_mask = ops.logical_or(prompt_mask > 0, generated).astype(ms.int32)  # (B, S)
        hidden = self.model.model(tokens.reshape(-1, 1), key_mask, None, self.cache.k, self.cache.v, slot)
        logits = self.model.lm_head(hidden).astype(ms.float32)
        logits = logits.reshape(logits.shape[0], -1)  # (B, V); reshape is free, a [:, 0] slice copies slowly
        uniform = ops.gather(uniforms, slot - (self.prompt_len - 1), 0)  # (B,) this step's draws
        new, logprobs = self.sampler(logits, temperature, top_p, uniform)
        done = ops.logical_or(done, new == eos)
        return new, logprobs, done, ops.all(done)


class _Runner:
    """The two compiled graphs for one (batch, prompt length, max_new_tokens, sampling rule, G); G > 1 prefills
    on `prompt_cache` (`[B]` rows) and decodes on `cache` (`[B*G]` rows)."""

    def __init__(self, model, cache, spec: SamplingSpec, prompt_len: int, prompt_cache=None, group: int = 1):
        sampler = TokenSampler(spec, model.config.vocab_size)
        if group > 1:
            self.prefill = _Prefill(model, prompt_cache, sampler, group, decode_cache=cache)
        else:
            self.prefill = _Prefill(model, cache, sampler)
        self.decode = _Decode(model, cache, sampler, prompt_len)


def _store(model) -> Dict[str, Any]:
    store = model.__dict__.get(_STORE_ATTR)
    if store is None:
        store = {"caches": {}, "runners": collections.OrderedDict()}
        object.__setattr__(model, _STORE_ATTR, store)  # a plain attribute, not a sub-cell of the model
    return store


def _runner(
    model, batch: int, prompt_len: int, max_new_tokens: int, spec: SamplingSpec, group: int = 1
) -> _Runner:
    store = _store(model)
    key = (batch, prompt_len, max_new_tokens, spec, group)
    runner = store["runners"].get(key)
    if runner is not None:
        store["runners"].move_to_end(key)
        return runner
    slots = prompt_len + max_new_tokens - 1  # the last token is never fed back

    def cache_for(rows):
        if (rows, slots) not in store["caches"]:
            store["caches"][(rows, slots)] = model.new_kv_cache(rows, slots)
        return store["caches"][(rows, slots)]

    cache = cache_for(batch * group)
    prompt_cache = cache_for(batch) if group > 1 else None
    logger.debug("new generation graphs for %s (cache %d x %d slots)", key, batch * group, slots)
    runner = store["runners"][key] = _Runner(model, cache, spec, prompt_len, prompt_cache, group)
    if len(store["runners"]) > _MAX_RUNNERS:
        store["runners"].popitem(last=False)
        live = {(k[0] * k[4], k[1] + k[2] - 1) for k in store["runners"]}
        live |= {(k[0], k[1] + k[2] - 1) for k in store["runners"] if k[4] > 1}
        for dead in [c for c in store["caches"] if c not in live]:
            del store["caches"][dead]
    return runner


def clear_generation_cache(model) -> None:
    """Drop the compiled generation graphs and KV caches kept on `model` (frees the cache memory)."""
    store = model.__dict__.get(_STORE_ATTR)
    if store is not None:
        store["runners"].clear()
        store["caches"].clear()


def _as_numpy(x, name: str) -> np.ndarray:
    arr = x.asnumpy() if isinstance(x, Tensor) else np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be [batch, prompt_len], got shape {list(arr.shape)}")
    return arr


def _check_inputs(input_ids, attention_mask, vocab_size, max_new_tokens, temperature, top_k, top_p, eos, pad):
    ids = _as_numpy(input_ids, "input_ids")
    mask = (
        np.ones_like(ids, dtype=np.int32)
        if attention_mask is None
        else (_as_numpy(attention_mask, "attention_mask") != 0).astype(np.int32)
    )
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask shape {list(mask.shape)} differs from input_ids {list(ids.shape)}")
    if ids.size == 0:
        raise ValueError("input_ids is empty: give at least one prompt token per row")
    if not mask[:, -1].all() or (np.diff(mask, axis=1) < 0).any():
        rows = np.flatnonzero(~mask[:, -1].astype(bool) | (np.diff(mask, axis=1) < 0).any(1))
        raise ValueError(
            f"prompts must be left-padded (attention_mask 0...0 1...1 with a real last token); rows {rows[:5]} "
            "are not"
        )
    real = ids[mask > 0]
    if real.min() < 0 or real.max() >= vocab_size:
        raise ValueError(f"input_ids hold token ids outside the vocabulary [0, {vocab_size})")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = no top-k), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    for name, value in (("eos_token_id", eos), ("pad_token_id", pad)):
        if value is not None and not 0 <= value < vocab_size:
            raise ValueError(f"{name}={value} is outside the vocabulary [0, {vocab_size})")
    return ids.astype(np.int32), mask


def generate(
    model,
    input_ids,
    attention_mask=None,
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_token_id: Optional[int] = None,
    pad_token_id: int = 0,
    seed: Optional[int] = None,
    num_return_sequences: int = 1,
) -> GenerationOutput:
    """Generate up to `max_new_tokens` tokens for a batch of left-padded prompts with a static KV cache.

    Args:
        model: a `LlamaForCausalLM` (anything with `.model`, `.lm_head`, `.config`, `.new_kv_cache`).
        input_ids: `[B, P]` int prompt tokens, left-padded (numpy, list or Tensor).
        attention_mask: `[B, P]`, 1 = real token, 0 = left padding (None = all real). Positions are
            `cumsum(mask) - 1`, so each row generates what it would generate alone.
        max_new_tokens: N, the response length of the output (rows that stop early are padded).
        do_sample: False = greedy (argmax; top_k/top_p/seed are then ignored). True = sample from
            softmax(logits / temperature), truncated to the `top_k` most likely tokens (0 = off) and then to the
            smallest set holding `top_p` of their probability (1.0 = off), in that order, as transformers does.
            top_p without top_k first tries the 1024 most likely tokens (exact whenever they hold top_p of the
            mass, as for a trained LM; the sampler then takes 3.7 ms instead of 19.6 ms per step at V=32000, B=8
            on CPU, bench/bench_sampler.py) and sorts the whole vocabulary only in steps where they do not.
        eos_token_id: a row stops after emitting it (None = never stop early); the loop ends when all rows
            have stopped. pad_token_id fills the response after EOS.
        seed: seeds the numpy Generator that draws the sampling uniforms; same seed, same tokens.
        num_return_sequences: G samples per prompt (Hugging Face's name): the output has B*G rows, each prompt's
            G rows contiguous, the same tokens as generating from `np.repeat(input_ids, G, 0)` with the same seed
            (the uniforms keep their `[N, B*G]` layout), but the prompt's prefill runs once, on `[B]` rows, and
            its keys/values are copied into the `[B*G]` decode cache inside the prefill graph.

    Returns:
        GenerationOutput with `sequences [B*G, P+N]`, `response_mask [B*G, N]` and `logprobs [B*G, N]`.
        `logprobs` is log pi(token) with pi = softmax(logits / temperature) over the full vocabulary, *before*
        top-k/top-p truncation (also for greedy decoding): the distribution the PPO trainer recomputes from a
        forward pass at the same temperature. Truncated sampling is then slightly off-policy for that pi, the
        usual choice in RLHF (log-probs of the truncated distribution would be -inf for tokens the trainer can
        still assign mass to).
    """
    config = model.config
    ids, mask = _check_inputs(
        input_ids,
        attention_mask,
        config.vocab_size,
        max_new_tokens,
        temperature,
        top_k,
        top_p,
        eos_token_id,
        pad_token_id,
    )
    if isinstance(num_return_sequences, bool) or not isinstance(num_return_sequences, numbers.Integral):
        raise ValueError(f"num_return_sequences must be an integer >= 1, got {num_return_sequences!r}")
    if num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be >= 1, got {num_return_sequences}")
    group = int(num_return_sequences)
    prompts, prompt_len = ids.shape
    batch = prompts * group  # output rows
    if prompt_len + max_new_tokens > config.seq_length:
        logger.warning(
            "prompt %d + max_new_tokens %d exceeds the model's seq_length %d (positions past it were not trained)",
            prompt_len,
            max_new_tokens,
            config.seq_length,
        )
    spec = SamplingSpec(greedy=True) if not do_sample else SamplingSpec(False, top_k, top_p < 1.0)
    runner = _runner(model, prompts, prompt_len, max_new_tokens, spec, group)

    slots = prompt_len + max_new_tokens - 1
    prefill_mask = np.zeros((prompts, slots), np.int32)
    prefill_mask[:, :prompt_len] = mask
    prompt_mask = np.repeat(prefill_mask, group, 0) if group > 1 else prefill_mask  # (B*G, S) decode key mask
    if do_sample:
        # 1 - U[0, 1) lies in (0, 1]: u > 0 keeps zero-probability tokens out of the inverse CDF.
        draws = 1.0 - np.random.default_rng(seed).random((max_new_tokens, batch), dtype=np.float32)
    else:
        draws = np.ones((max_new_tokens, batch), np.float32)
    prompt_mask_t, uniforms = Tensor(prompt_mask), Tensor(draws)
    temperature_t, top_p_t = Tensor(np.float32(temperature)), Tensor(np.float32(top_p))
    eos_t = Tensor(np.int32(-1 if eos_token_id is None else eos_token_id))

    start = time.perf_counter()
    prefill_mask_t = prompt_mask_t if group == 1 else Tensor(prefill_mask)
    tokens, logprobs, done, all_done = runner.prefill(
        Tensor(ids), prefill_mask_t, temperature_t, top_p_t, uniforms, eos_t
    )
    stopped = bool(all_done.asnumpy())  # also the sync that ends the prefill timing
    prefill_s = time.perf_counter() - start
    out_tokens, out_logprobs = [tokens], [logprobs]
    for i in range(1, max_new_tokens):
        if stopped:
            break
        tokens, logprobs, done, all_done = runner.decode(
            tokens,
            prompt_mask_t,
            Tensor(np.int32(prompt_len + i - 1)),
            done,
            temperature_t,
            top_p_t,
            uniforms,
            eos_t,
        )
        out_tokens.append(tokens)
        out_logprobs.append(logprobs)
        if eos_token_id is not None:
            stopped = bool(all_done.asnumpy())  # the only per-step host sync, and only with an EOS
    steps = len(out_tokens)
    response = np.full((batch, max_new_tokens), pad_token_id, np.int32)
    response_logprobs = np.zeros((batch, max_new_tokens), np.float32)
    response[:, :steps] = ops.stack(out_tokens, 1).asnumpy()
    response_logprobs[:, :steps] = ops.stack(out_logprobs, 1).asnumpy()
    decode_s = time.perf_counter() - start - prefill_s

    response_mask = _response_mask(response, steps, eos_token_id)
    response = np.where(response_mask > 0, response, pad_token_id).astype(np.int32)
    response_logprobs = np.where(response_mask > 0, response_logprobs, 0.0).astype(np.float32)
    logger.debug("generated %d x %d tokens: prefill %.3fs, decode %.3fs", batch, steps, prefill_s, decode_s)
    return GenerationOutput(
        sequences=np.concatenate([np.repeat(ids, group, 0), response], 1),
        response_mask=response_mask,
        logprobs=response_logprobs,
        num_steps=steps,
        timings={"prefill_s": prefill_s, "decode_s": decode_s},
    )


def _response_mask(response: np.ndarray, steps: int, eos_token_id: Optional[int]) -> np.ndarray:
    """`[B, N]` 1 up to and including each row's first EOS (all generated steps when there is none)."""
    mask = np.zeros(response.shape, np.int32)
    mask[:, :steps] = 1
    if eos_token_id is not None:
        is_eos = (response == eos_token_id) & (mask > 0)
        ended_before = (np.cumsum(is_eos, 1) - is_eos) > 0
        mask[ended_before] = 0
    return mask
