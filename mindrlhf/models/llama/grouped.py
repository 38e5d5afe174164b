"""Shared-prefix forward: the G rows of a group share one prompt, so the prompt is computed once per group.

GRPO samples G responses per prompt (rows contiguous). The plain forward of `sequences [B, P+N]` computes every
prompt G times; here the prompt runs once per group and each row's response attends to its group's prompt keys
and values (the shared-prefix forward of "Prefix Grouper: Efficient GRPO Training through Shared-Prefix Forward",
2025). Same math as the plain forward: the same keys, mask, positions and weights reach every response query;
only the float summation order of some matmuls differs.

Layout (B = Bg * G rows, T = P + N columns, P' = P - 1):
    prompt part    `sequences[group, 0, :P']`     [Bg, P']   causal self-attention, prompt mask
    response part  `sequences[:, P' : T - 1]`     [B, N]     the last prompt token and N - 1 response tokens
The response part's hidden states are exactly the plain forward's `hidden[:, P-1:-1]` (the states that predict
the N response tokens), so nothing is sliced from an activation: only token ids, positions and masks are sliced.
The last prompt token is computed per row (1 of N response-part tokens) so that no concat of hidden states is
needed; its keys are the row's own. The last layer's prompt part only produces keys and values (its attention
output and FFN are never used, so they are not computed).
Positions are the plain forward's: `cumsum(attention_mask) - 1` over the full row (clamped at 0).
"""

from __future__ import annotations

import mindspore as ms
from mindspore import ops


def repeat_groups(x, g: int):
    """`[Bg, ...]` -> `[Bg * G, ...]`, each group's entry G times in a row (`np.repeat(x, G, 0)`)."""
    shape = x.shape
    return ops.broadcast_to(x.expand_dims(1), (shape[0], g) + shape[1:]).reshape((shape[0] * g,) + shape[1:])


def grouped_response_hidden(model, sequences, attention_mask, prompt_length: int, group_size: int):
    """Hidden states `[B, N, H]` (after norm_out) at positions P-1 .. P+N-2 of `LlamaModel` `model`.

    sequences, attention_mask: `[B, P+N]`, rows in contiguous groups of `group_size` rows with identical prompts
    (the first `prompt_length` columns, left-padded; the caller checks this). Equals
    `model(sequences, attention_mask)[:, P-1:-1]` to float32 rounding, gradients included.
    """
    g, p = group_size, prompt_length
    bsz, t = sequences.shape
    bg, pp, n = bsz // g, p - 1, t - p
    key_mask = attention_mask.astype(ms.int32)[:, : t - 1]  # (B, T-1): keys are columns 0 .. T-2
    positions = ops.clamp(ops.cumsum(key_mask, 1) - 1, min=0)  # (B, T-1), as the plain forward
    first = ops.arange(0, bg, dtype=ms.int32) * g  # the first row of each group
    prompt_ids = ops.gather(sequences[:, :pp], first, 0)  # (Bg, P')
    prompt_mask = ops.gather(key_mask[:, :pp], first, 0)  # (Bg, P')
    # prompt part: causal self-attention over the group's prompt
    slots_p = ops.arange(0, pp, dtype=ms.int32)
    causal_p = slots_p.reshape(1, 1, 1, pp) <= slots_p.reshape(1, 1, pp, 1)
    allowed_p = ops.logical_and(causal_p, prompt_mask.reshape(bg, 1, 1, pp) > 0)  # (Bg, 1, P', P')
    bias_p = model.mask_bias(allowed_p)
    rope_p = model.rotary(ops.gather(positions[:, :pp], first, 0))
    # response part: queries at slots P' .. T-2, keys at every slot 0 .. T-2 (the group's prompt, then its own)
    slots = ops.arange(0, t - 1, dtype=ms.int32)
    q_slots = ops.arange(pp, t - 1, dtype=ms.int32)
    causal = slots.reshape(1, 1, 1, t - 1) <= q_slots.reshape(1, 1, n, 1)
    allowed = ops.logical_and(causal, key_mask.reshape(bsz, 1, 1, t - 1) > 0)  # (B, 1, N, T-1)
    bias_r = model.mask_bias(allowed)
    rope_r = model.rotary(positions[:, pp:])
    xp = model.tok_embeddings(prompt_ids).astype(model.compute_dtype)  # (Bg, P', H)
    xr = model.tok_embeddings(sequences[:, pp : t - 1]).astype(model.compute_dtype)  # (B, N, H)
    for i in range(model.num_layers):
        layer = model.layers[i]
        attn = layer.attention
        hp, hr = layer.attention_norm(xp), layer.attention_norm(xr)
        kp, vp = attn.key_value(hp, rope_p)  # (Bg, nkv, P', hd)
        kr, vr = attn.key_value(hr, rope_r)  # (B, nkv, N, hd)
        k = ops.cat((repeat_groups(kp, g), kr), 2)  # (B, nkv, T-1, hd)
        v = ops.cat((repeat_groups(vp, g), vr), 2)
        xr = xr + attn.output(attn.query(hr, rope_r), k, v, bias_r)
        xr = xr + layer.feed_forward(layer.ffn_norm(xr))
        if i < model.num_layers - 1:  # the last layer's prompt states feed nothing: only its keys/values
            xp = xp + attn.output(attn.query(hp, rope_p), kp, vp, bias_p)
            xp = xp + layer.feed_forward(layer.ffn_norm(xp))
    return model.norm_out(xr)
