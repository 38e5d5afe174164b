"""LlamaConfig: MindFormers' `model.model_config` schema as a typed, validated dataclass.

One config for the Llama-architecture families (docs/models.md has the field mapping per family):
Llama-2 (the defaults), Llama-3.x (`theta` 5e5, `extend_method: LLAMA3` + `scaling_factor`, tied embeddings for
3.2 1B/3B) and Qwen2/Qwen2.5 (`qkv_has_bias`, `theta` 1e6, `rms_norm_eps` 1e-6, tied for the small sizes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Union

from mindrlhf.configs.loader import ConfigError, dataclass_from_dict
from mindrlhf.models.llama.recompute import RecomputeConfig
from mindrlhf.models.llama.rope import check_scaling_factor, normalize_extend_method

DTYPES = ("float32", "float16", "bfloat16")
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclasses.dataclass
class LlamaConfig:
    """Llama hyper-parameters with MindFormers' field names (unknown MindFormers keys are accepted and ignored).

    The FFN width follows MindFormers' `LlamaFeedForward`: `intermediate_size` when given, else
    `multiple_of * ceil(int(2 * int((ffn_dim_multiplier + 0.01) * 4H) / 3) / multiple_of)` (7B: 11008,
    13B: 13824, 70B with ffn_dim_multiplier 1.3: 28672, the published Llama-2 widths).
    """

    batch_size: int = 1  # default batch for inference graphs (MindFormers' field; trainers set their own)
    seq_length: int = 4096  # maximum sequence length (prompt + response); also the default KV-cache length
    hidden_size: int = 4096
    num_layers: int = 32
    num_heads: int = 32
    n_kv_heads: Optional[int] = None  # grouped-query attention; None means num_heads (plain multi-head)
    vocab_size: int = 32000
    multiple_of: int = 256
    ffn_dim_multiplier: Optional[float] = None
    intermediate_size: Optional[int] = None  # overrides the multiple_of rule when set
    rms_norm_eps: float = 1e-5
    theta: float = 10000.0  # RoPE base
    head_dim: Optional[int] = None  # per-head width; None means hidden_size / num_heads (every family here)
    qkv_has_bias: bool = False  # Qwen2: attention.wq/wk/wv carry a bias [out] (MindFormers' field)
    tie_word_embeddings: bool = False  # the head is the embedding matrix; no lm_head.weight
    extend_method: str = "None"  # RoPE variant: None, linear, PI, LLAMA3 (rope.py; MindFormers' names)
    scaling_factor: Union[float, Dict[str, Any]] = 1.0  # PI: a number; linear/LLAMA3: a mapping (rope.py)
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    ignore_token_id: int = -100
    compute_dtype: str = "float32"  # matmul dtype; float16/bfloat16 on Ascend/GPU, float32 on CPU
    layernorm_compute_type: str = "float32"
    softmax_compute_type: str = "float32"
    rotary_dtype: str = "float32"
    param_init_type: str = "float32"  # dtype the weights are stored in
    use_past: bool = False  # MindFormers' flag for KV-cache inference; our generate() always uses the cache
    checkpoint_name_or_path: str = ""  # weights to load: a .ckpt/.safetensors path ("" = random init)
    max_decode_length: int = 512
    top_k: int = 0
    top_p: float = 1.0
    do_sample: bool = False
    repetition_penalty: float = 1.0
    # The run YAML's top-level `recompute_config` (MindFormers keeps it beside model_config, not in it):
    # set by `load_run_config`, applied to the decoder layers by LlamaModel; not a model_config key.
    recompute_config: Optional[RecomputeConfig] = dataclasses.field(default=None, init=False, compare=False)

    def __post_init__(self):
        for name in (
            "compute_dtype",
            "layernorm_compute_type",
            "softmax_compute_type",
            "rotary_dtype",
            "param_init_type",
        ):
            value = _DTYPE_ALIASES.get(getattr(self, name), getattr(self, name))
            if value not in DTYPES:
                raise ConfigError(
                    f"unknown dtype {getattr(self, name)!r}; use one of {', '.join(DTYPES)}", field=name
                )
            setattr(self, name, value)
        for name in (
            "batch_size",
            "seq_length",
            "hidden_size",
            "num_layers",
            "num_heads",
            "vocab_size",
            "multiple_of",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"must be a positive integer, got {getattr(self, name)}", field=name)
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ConfigError(
                    f"num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}; "
                    "each head needs hidden_size/num_heads dimensions (or set head_dim explicitly)",
                    field="num_heads",
                )
            self.head_dim = self.hidden_size // self.num_heads
        elif self.head_dim <= 0:
            raise ConfigError(f"must be a positive integer, got {self.head_dim}", field="head_dim")
        if self.head_dim % 2:
            raise ConfigError(
                f"head dim {self.head_dim} (hidden_size/num_heads or head_dim) must be even for RoPE",
                field="head_dim" if self._explicit_head_dim else "num_heads",
            )
        try:
            self.extend_method = normalize_extend_method(self.extend_method)
        except ValueError as exc:
            raise ConfigError(str(exc), field="extend_method") from None
        try:
            check_scaling_factor(self.extend_method, self.scaling_factor)
        except ValueError as exc:
            raise ConfigError(str(exc), field="scaling_factor") from None
        if self.n_kv_heads is not None:
            if self.n_kv_heads <= 0 or self.num_heads % self.n_kv_heads:
                raise ConfigError(
                    f"n_kv_heads={self.n_kv_heads} must be positive and divide num_heads={self.num_heads}",
                    field="n_kv_heads",
                )
        if self.intermediate_size is not None and self.intermediate_size <= 0:
            raise ConfigError(f"must be positive, got {self.intermediate_size}", field="intermediate_size")
        if self.ffn_dim_multiplier is not None and self.ffn_dim_multiplier <= 0:
            raise ConfigError(f"must be positive, got {self.ffn_dim_multiplier}", field="ffn_dim_multiplier")
        if self.rms_norm_eps <= 0:
            raise ConfigError(f"must be positive, got {self.rms_norm_eps}", field="rms_norm_eps")
        if self.theta <= 0:
            raise ConfigError(f"must be positive, got {self.theta}", field="theta")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ConfigError(f"{value} is outside the vocabulary [0, {self.vocab_size})", field=name)
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"must be in (0, 1], got {self.top_p}", field="top_p")
        if self.top_k < 0:
            raise ConfigError(f"must be >= 0, got {self.top_k}", field="top_k")

    @property
    def _explicit_head_dim(self) -> bool:
        return self.head_dim != self.hidden_size // self.num_heads or bool(self.hidden_size % self.num_heads)

    @property
    def num_kv_heads(self) -> int:
        return self.n_kv_heads or self.num_heads

    @property
    def ffn_hidden_size(self) -> int:
        """SwiGLU width, computed as MindFormers' `LlamaFeedForward` does.

        MindFormers scales 4H by `ffn_dim_multiplier + 0.01` *before* taking 2/3, unlike Meta's reference code
        (2/3 first, then the multiplier). For 70B (H=8192, 1.3, multiple_of 256) that gives 28672, the width of
        the published checkpoints; Meta's order gives 28416, which would not load them.
        """
        if self.intermediate_size is not None:
            return self.intermediate_size
        hidden = 4 * self.hidden_size
        if self.ffn_dim_multiplier is not None:
            hidden = int((self.ffn_dim_multiplier + 0.01) * hidden)
        hidden = int(2 * hidden / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: Optional[str] = None, prefix: str = "") -> LlamaConfig:
        """Build from a `model_config` mapping. Reading a run YAML is the config layer's job (configs point at
        models, not back): `mindrlhf.load_run_config(path).model_config`."""
        return dataclass_from_dict(cls, data, source=source, prefix=prefix, allow_unknown=True)

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a dict; `head_dim` is left out when it is the default hidden_size/num_heads, so a
        config rebuilt from the dict (or a YAML written from it) follows a changed hidden_size."""
        out = dataclasses.asdict(self)
        del out["recompute_config"]  # a top-level section of the run YAML (`run_yaml_dict` writes it there)
        if not self._explicit_head_dim:
            del out["head_dim"]
        return out
