"""Rotary position embedding (RoPE, Su et al. 2021) and its frequency-scaling variants, chosen by config.

Variants use MindFormers' spelling (`model_config.extend_method` + `model_config.scaling_factor`, as its
`FreqsMgr`); Hugging Face's `rope_scaling` / `rope_parameters` map onto them in `tools/convert_hf.py`:

    extend_method  scaling_factor                                    inverse frequencies
    "None"         (ignored)                                         1 / theta^(2i/hd)            (plain RoPE)
    "linear"       {factor}                                          plain / factor               (HF "linear")
    "PI"           a number f                                        plain / f  (position interpolation; same)
    "LLAMA3"       {factor, low_freq_factor, high_freq_factor,       Llama 3.1's band-wise rule (HF "llama3")
                    original_max_position_embeddings}

"YARN", "NTK" and "DYNAMIC_NTK" also exist in MindFormers; they are refused with a clear error (not implemented
here, and a silently different RoPE would give wrong logits, not a crash).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

_MS_DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}

# MindFormers' SeqExtendMethod spellings; keys are lower-case so YAMLs may write any case.
EXTEND_METHODS = {"none": "None", "linear": "linear", "pi": "PI", "llama3": "LLAMA3"}
REFUSED_METHODS = ("yarn", "ntk", "dynamic_ntk", "longrope")
LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def normalize_extend_method(name: Optional[str]) -> str:
    """MindFormers' spelling of `name` ("None" for no scaling); ValueError naming the supported ones otherwise."""
    key = "none" if name is None else str(name).strip().lower()
    if key in EXTEND_METHODS:
        return EXTEND_METHODS[key]
    if key in REFUSED_METHODS:
        raise ValueError(
            f"RoPE extend_method {name!r} is not implemented in mindrlhf; supported: None, linear, PI, LLAMA3"
        )
    raise ValueError(f"unknown RoPE extend_method {name!r}; use one of None, linear, PI, LLAMA3")


def check_scaling_factor(extend_method: str, scaling_factor: Any) -> None:
    """ValueError if `scaling_factor` does not fit `extend_method` (normalised spelling)."""
    if extend_method == "PI":
        if (
            isinstance(scaling_factor, bool)
            or not isinstance(scaling_factor, (int, float))
            or scaling_factor < 1
        ):
            raise ValueError(f"extend_method PI needs a number scaling_factor >= 1, got {scaling_factor!r}")
    elif extend_method in ("linear", "LLAMA3"):
        keys = ("factor",) if extend_method == "linear" else LLAMA3_KEYS
        if not isinstance(scaling_factor, dict) or any(k not in scaling_factor for k in keys):
            raise ValueError(
                f"extend_method {extend_method} needs scaling_factor as a mapping with {', '.join(keys)}; "
                f"got {scaling_factor!r}"
            )
        for k in keys:
            value = scaling_factor[k]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"scaling_factor.{k} must be a positive number, got {value!r}")
        if (
            extend_method == "LLAMA3"
            and scaling_factor["low_freq_factor"] >= scaling_factor["high_freq_factor"]
        ):
            raise ValueError(
                "scaling_factor.low_freq_factor must be below high_freq_factor (Llama 3.1: 1 and 4)"
            )


def rope_inv_freq(
    head_dim: int, theta: float, extend_method: str = "None", scaling_factor: Any = None
) -> np.ndarray:
    """Inverse frequencies `[hd/2]` (float32) of RoPE with base `theta`, scaled as `extend_method` says.

    LLAMA3 (Meta's Llama 3.1 `apply_scaling`, HF `_compute_llama3_parameters`, MindFormers' FreqsMgr): with
    wavelength w = 2*pi/f and L the original context, bands with w < L/high_freq_factor keep f, bands with
    w > L/low_freq_factor become f/factor, and the ones between interpolate with
    s = (L/w - low) / (high - low): f' = (1 - s) f/factor + s f.
    """
    method = normalize_extend_method(extend_method)
    check_scaling_factor(method, scaling_factor)
    # float32 as before the variants existed (and as HF computes it): plain RoPE stays bit-identical.
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    if method == "None":
        return inv_freq.astype(np.float32)
    inv_freq = inv_freq.astype(np.float64)
    if method == "PI":
        inv_freq = inv_freq / float(scaling_factor)  # positions / f: the same angles
    elif method == "linear":
        inv_freq = inv_freq / float(scaling_factor["factor"])
    elif method == "LLAMA3":
        sf: Dict[str, float] = {k: float(scaling_factor[k]) for k in LLAMA3_KEYS}
        old = sf["original_max_position_embeddings"]
        low, high = sf["low_freq_factor"], sf["high_freq_factor"]
        wavelen = 2 * math.pi / inv_freq
        smooth = (old / wavelen - low) / (high - low)
        mid = (1 - smooth) * inv_freq / sf["factor"] + smooth * inv_freq
        inv_freq = np.where(
            wavelen < old / high, inv_freq, np.where(wavelen > old / low, inv_freq / sf["factor"], mid)
        )
    return inv_freq.astype(np.float32)


def rotate_half(x):
    """[x1, x2] -> [-x2, x1] on the last axis (the rotate-half RoPE layout of HF and MindFormers)."""
    half = x.shape[-1] // 2
    return ops.cat((-x[..., half:], x[..., :half]), -1)


class RotaryEmbedding(nn.Cell):
    """RoPE for integer positions `[B, T]`, returned as the `rope` tuple `apply_rope` takes.

    T > 1: `(cos, sin)`, each `[B, 1, T, hd]`. T == 1 (a decode step): `(m,)` with `m [B, hd, hd]` such that
    `x @ m[b] == x * cos + rotate_half(x) * sin` for row vectors x of batch row b: one small BatchMatMul per
    query/key tensor instead of the seven kernels of the elementwise form (slices, negation, concat, products,
    sum). A decode step is bound by kernel launches on CPU, not arithmetic (issue 9). The scaling variant only
    changes the constant inverse frequencies (`rope_inv_freq`), never the graph.
    """

    def __init__(
        self, head_dim: int, theta: float, dtype: str, extend_method: str = "None", scaling_factor: Any = None
    ):
        super().__init__()
        inv_freq = rope_inv_freq(head_dim, theta, extend_method, scaling_factor)
        self.inv_freq = Tensor(inv_freq.reshape(1, 1, -1))  # (1, 1, hd/2)
        self.dtype = _MS_DTYPES[dtype]
        half = head_dim // 2
        rot = np.zeros((head_dim, head_dim), np.float32)  # x @ rot == rotate_half(x)
        rot[np.arange(half) + half, np.arange(half)] = -1.0
        rot[np.arange(half), np.arange(half) + half] = 1.0
        self.eye = Tensor(np.eye(head_dim, dtype=np.float32).reshape(1, head_dim, head_dim))
        self.rot = Tensor(rot.reshape(1, head_dim, head_dim))
        self.head_dim = head_dim

    def construct(self, position_ids):
        freqs = position_ids.astype(ms.float32).expand_dims(-1) * self.inv_freq  # (B, T, hd/2)
        emb = ops.cat((freqs, freqs), -1).expand_dims(1)  # (B, 1, T, hd)
        cos, sin = ops.cos(emb), ops.sin(emb)
        if position_ids.shape[1] == 1:  # diag(cos) + rot diag(sin): scales column j by cos_j / sin_j
            cos, sin = cos.reshape(-1, 1, self.head_dim), sin.reshape(-1, 1, self.head_dim)
            return ((self.eye * cos + self.rot * sin).astype(self.dtype),)
        return cos.astype(self.dtype), sin.astype(self.dtype)


def apply_rope(x, rope):
    """Rotate `x [B, n, T, hd]` by the `rope` tuple of `RotaryEmbedding` (rotate-half layout)."""
    if len(rope) == 1:  # T == 1: x @ m, batched over B
        bsz, n, _, hd = x.shape
        return ops.bmm(x.reshape(bsz, n, hd), rope[0].astype(x.dtype)).reshape(bsz, n, 1, hd)
    cos, sin = rope
    # Explicit broadcasts over the heads: a broadcasting CPU Mul can keep ~4x its output (layers.RMSNorm).
    cos, sin = ops.broadcast_to(cos.astype(x.dtype), x.shape), ops.broadcast_to(sin.astype(x.dtype), x.shape)
    return x * cos + rotate_half(x) * sin
