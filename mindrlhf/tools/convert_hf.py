"""Convert Hugging Face Llama-architecture weights (model_type `llama`: Llama-2/3.x; `qwen2`: Qwen2/Qwen2.5) to a
MindFormers-named MindSpore checkpoint + run YAML, and back.

    python -m mindrlhf.tools.convert_hf --hf-dir DIR --output OUT.ckpt --yaml-out OUT.yaml [--dtype float32]
    python -m mindrlhf.tools.convert_hf --reverse --ckpt IN.ckpt --yaml IN.yaml --hf-out DIR

The mapping is a pure renaming (HF's and MindFormers' Llama both use the rotate-half RoPE layout, so q/k need no
permutation); Qwen2's q/k/v biases become `attention.w{q,k,v}.bias`, and a tied model (`tie_word_embeddings`) has
no `lm_head.weight` on either side. The field mapping per family is in docs/models.md. Safetensors are read with the `safetensors` package's numpy API; bfloat16 tensors, which numpy
cannot represent, are widened to float32 bit-exactly. No torch at run time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import Dict, Optional, Tuple

import numpy as np

from mindrlhf.configs.loader import ConfigError
from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.tools.weights_io import (  # noqa: F401  (re-exported: the converter's public names)
    _NP_DTYPES,
    ConversionError,
    _LazyTensor,
    _read_safetensors,
    _write_safetensors,
    open_hf_weights,
    read_hf_weights,
    write_checkpoint_streaming,
)
from mindrlhf.utils.io import atomic_dir

logger = logging.getLogger(__name__)

_LAYER_MAP = {
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.q_proj.bias": "attention.wq.bias",
    "self_attn.k_proj.bias": "attention.wk.bias",
    "self_attn.v_proj.bias": "attention.wv.bias",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_TOP_MAP = {
    "model.embed_tokens.weight": "model.tok_embeddings.embedding_weight",
    "model.norm.weight": "model.norm_out.weight",
    "lm_head.weight": "lm_head.weight",
}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def hf_to_ms_name(name: str) -> Optional[str]:
    """HF parameter name -> MindFormers name (None for buffers we do not keep, e.g. rotary inv_freq)."""
    if name in _TOP_MAP:
        return _TOP_MAP[name]
    m = _LAYER_RE.match(name)
    if m and m.group(2) in _LAYER_MAP:
        return f"model.layers.{m.group(1)}.{_LAYER_MAP[m.group(2)]}"
    if name.endswith("rotary_emb.inv_freq"):
        return None
    raise ConversionError(
        f"unknown Hugging Face parameter {name!r} (only Llama/Qwen2 layers, with biases on q/k/v at most)"
    )


def ms_to_hf_name(name: str) -> str:
    inverse_top = {v: k for k, v in _TOP_MAP.items()}
    if name in inverse_top:
        return inverse_top[name]
    inverse_layer = {v: k for k, v in _LAYER_MAP.items()}
    m = re.match(r"^model\.layers\.(\d+)\.(.+)$", name)
    if m and m.group(2) in inverse_layer:
        return f"model.layers.{m.group(1)}.{inverse_layer[m.group(2)]}"
    raise ConversionError(f"checkpoint parameter {name!r} is not part of a MindFormers Llama")


# ---------------------------------------------------------------------------------------------- HF config


_FAMILIES = ("llama", "qwen2")


def _rope_from_hf(hf_config: Dict, source: str) -> Tuple[float, str, object]:
    """(theta, extend_method, scaling_factor) from transformers 4 (`rope_theta` + `rope_scaling`) or
    transformers 5 (`rope_parameters`, which also holds `rope_theta`) spellings."""
    params = hf_config.get("rope_parameters") or {}
    if not isinstance(params, dict):
        raise ConversionError(f"{source}: field 'rope_parameters' must be a mapping, got {params!r}")
    theta = hf_config.get("rope_theta", params.get("rope_theta", 10000.0))
    scaling = hf_config.get("rope_scaling") or params
    kind = scaling.get("rope_type", scaling.get("type", "default")) if isinstance(scaling, dict) else None
    if kind in ("default", None):
        return float(theta), "None", 1.0
    if kind == "linear":
        return float(theta), "linear", {"factor": float(scaling["factor"])}
    if kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        missing = [k for k in keys if k not in scaling]
        if missing:
            raise ConversionError(f"{source}: llama3 RoPE scaling lacks {missing}")
        factor = {k: float(scaling[k]) for k in keys}
        factor["original_max_position_embeddings"] = int(scaling["original_max_position_embeddings"])
        return float(theta), "LLAMA3", factor
    raise ConversionError(
        f"{source}: RoPE scaling rope_type {kind!r} is not supported (supported: default, linear, llama3)"
    )


def config_from_hf(hf_config: Dict, source: str, dtype: str = "float32") -> LlamaConfig:
    """Map an HF `config.json` dict (model_type llama or qwen2) to LlamaConfig; transformers 4 and 5 spellings."""

    def need(key):
        if key not in hf_config:
            raise ConversionError(f"{source}: field '{key}' is missing (is this a Llama/Qwen2 config.json?)")
        return hf_config[key]

    family = hf_config.get("model_type", "llama")
    if family not in _FAMILIES:
        raise ConversionError(
            f"{source}: field 'model_type' is {family!r}; supported: {', '.join(_FAMILIES)} (Llama-2/3.x, Qwen2/2.5)"
        )
    flags = ("attention_bias", "mlp_bias") if family == "llama" else ("mlp_bias",)
    for flag in flags:  # HF Llama's attention_bias also puts a bias on o_proj, which MindFormers' cells lack
        if hf_config.get(flag):
            raise ConversionError(f"{source}: field '{flag}' is true; these cells have biases on q/k/v only")
    if family == "qwen2" and hf_config.get("use_sliding_window"):
        raise ConversionError(
            f"{source}: field 'use_sliding_window' is true; sliding-window attention is unsupported"
        )
    if float(hf_config.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ConversionError(f"{source}: field 'partial_rotary_factor' != 1 (partial RoPE) is unsupported")
    theta, extend_method, scaling_factor = _rope_from_hf(hf_config, source)
    hidden, heads = need("hidden_size"), need("num_attention_heads")
    head_dim = hf_config.get("head_dim")
    kv = hf_config.get("num_key_value_heads")
    pad = hf_config.get("pad_token_id")
    bos, eos = hf_config.get("bos_token_id", 1), hf_config.get("eos_token_id", 2)
    if isinstance(eos, list):
        eos = eos[0]
    try:
        return LlamaConfig(
            seq_length=int(hf_config.get("max_position_embeddings", 4096)),
            hidden_size=int(hidden),
            num_layers=int(need("num_hidden_layers")),
            num_heads=int(heads),
            n_kv_heads=None if kv in (None, heads) else int(kv),
            head_dim=None if head_dim is None else int(head_dim),
            vocab_size=int(need("vocab_size")),
            intermediate_size=int(need("intermediate_size")),
            rms_norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)),
            theta=theta,
            extend_method=extend_method,
            scaling_factor=scaling_factor,
            qkv_has_bias=family == "qwen2",
            tie_word_embeddings=bool(hf_config.get("tie_word_embeddings", False)),  # HF default: untied
            bos_token_id=int(bos if bos is not None else 1),
            eos_token_id=int(eos if eos is not None else 2),
            pad_token_id=int(pad if pad is not None else 0),
            compute_dtype=dtype,
            param_init_type=dtype,
        )
    except ConfigError as exc:
        raise ConversionError(f"{source}: {exc}") from None


def _rope_to_hf(config: LlamaConfig) -> Optional[Dict]:
    """LlamaConfig's RoPE variant as HF's `rope_scaling` mapping (None for plain RoPE)."""
    if config.extend_method == "LLAMA3":
        return {"rope_type": "llama3", **config.scaling_factor}
    if config.extend_method == "linear":
        return {"rope_type": "linear", "factor": config.scaling_factor["factor"]}
    if config.extend_method == "PI":
        return {"rope_type": "linear", "factor": float(config.scaling_factor)}
    return None


def config_to_hf(config: LlamaConfig, dtype: str) -> Dict:
    """LlamaConfig -> HF `config.json` dict, written with both the transformers 4 (`rope_theta`, `rope_scaling`)
    and 5 (`rope_parameters`) spellings. `qkv_has_bias` makes it a Qwen2 (the Llama family has no q/k/v-only bias)."""
    qwen2 = config.qkv_has_bias
    scaling = _rope_to_hf(config)
    out = {
        "architectures": ["Qwen2ForCausalLM" if qwen2 else "LlamaForCausalLM"],
        "model_type": "qwen2" if qwen2 else "llama",
        "hidden_size": config.hidden_size,
        "intermediate_size": config.ffn_hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.seq_length,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.theta,
        "rope_scaling": scaling,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.theta, **(scaling or {})},
        "hidden_act": "silu",
        "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "torch_dtype": dtype,
    }
    if qwen2:
        out["use_sliding_window"] = False
    else:
        out.update(attention_bias=False, mlp_bias=False)
    return out


# ------------------------------------------------------------------------------------------- conversions


def _read_hf_config(hf_dir: str, dtype: str) -> Tuple[LlamaConfig, Dict]:
    if dtype not in _NP_DTYPES:
        raise ConversionError(f"--dtype {dtype}: CPU checkpoints are float32 or float16")
    cfg_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise ConversionError(f"{hf_dir}: config.json not found (give a Hugging Face model directory)")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            hf_config = json.load(f)
    except ValueError as exc:
        raise ConversionError(f"{cfg_path}: invalid JSON ({exc})") from None
    return config_from_hf(hf_config, cfg_path, dtype), hf_config


def hf_to_ms_lazy(hf_dir: str, dtype: str = "float32") -> Tuple[LlamaConfig, Dict[str, _LazyTensor]]:
    """An HF Llama/Qwen2 directory -> (LlamaConfig, {MindFormers name: lazy tensor cast to `dtype`}).

    Names and shapes are checked against the config from the safetensors headers alone; no weight is read.
    Ordered as MindFormers' parameter table (embedding, layers, norm, lm_head unless tied).
    """
    from mindrlhf.models.llama.model import llama_param_shapes

    config, hf_config = _read_hf_config(hf_dir, dtype)
    params: Dict[str, _LazyTensor] = {}
    for name, tensor in open_hf_weights(hf_dir).items():
        ms_name = hf_to_ms_name(name)
        if ms_name is not None:
            params[ms_name] = tensor.astype(_NP_DTYPES[dtype])
    if config.tie_word_embeddings and params.pop("lm_head.weight", None) is not None:
        logger.info("%s: tie_word_embeddings is true; the stored lm_head.weight is not used", hf_dir)
    expected = llama_param_shapes(config)
    missing = [n for n in expected if n not in params]
    wrong = [
        f"{n} {list(params[n].shape)} != {list(s)}"
        for n, s in expected.items()
        if n in params and params[n].shape != s
    ]
    if missing or wrong:
        raise ConversionError(
            f"{hf_dir}: weights do not match config.json: missing {missing[:5]}, shapes {wrong[:5]}"
        )
    return config, {n: params[n] for n in expected}


def hf_to_ms(hf_dir: str, dtype: str = "float32") -> Tuple[LlamaConfig, Dict[str, np.ndarray]]:
    """Read an HF Llama directory -> (LlamaConfig, {MindFormers name: ndarray in `dtype`}), shapes checked.

    Holds the whole model in memory; `convert_hf_dir` streams instead (see `hf_to_ms_lazy`).
    """
    config, lazy = hf_to_ms_lazy(hf_dir, dtype)
    return config, {n: t.load() for n, t in lazy.items()}


def ms_to_hf(ckpt_path: str, yaml_path: str, hf_out: str) -> str:
    """Write an HF Llama/Qwen2 directory (config.json + model.safetensors) from a MindFormers-named checkpoint
    (a tied model's safetensors hold no lm_head.weight, as transformers saves them)."""
    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.models.llama.model import llama_param_shapes
    from mindrlhf.utils.checkpoint import (
        check_compatible,
        count_training_state,
        log_skipped_training_state,
        read_checkpoint,
    )

    config = load_run_config(yaml_path).model_config
    ckpt = read_checkpoint(ckpt_path)
    shapes = llama_param_shapes(config)
    # Only the Llama weights are exported (a reward checkpoint's v_head, `__meta__.*` and a training
    # checkpoint's optimizer entries are left out); every one of them must be there with its shape.
    check_compatible(shapes, {n: tuple(t.shape) for n, t in ckpt.items() if n in shapes}, ckpt_path, True)
    log_skipped_training_state(count_training_state(ckpt, shapes), ckpt_path)
    arrays = {n: ckpt[n].asnumpy() for n in shapes}
    del ckpt
    dtype = {np.dtype(np.float16): "float16"}.get(next(iter(arrays.values())).dtype, "float32")
    with atomic_dir(hf_out) as tmp:
        _write_safetensors(
            {ms_to_hf_name(n): a for n, a in arrays.items()}, os.path.join(tmp, "model.safetensors"), dtype
        )
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config_to_hf(config, dtype), f, indent=2)
    return hf_out


def convert_hf_dir(
    hf_dir: str, output: str, yaml_out: Optional[str] = None, dtype: str = "float32"
) -> LlamaConfig:
    """HF directory -> MindSpore checkpoint at `output` (+ MindFormers run YAML at `yaml_out`), streamed.

    Tensors are read, cast and written one at a time (`write_checkpoint_streaming`), so the peak memory is about
    one tensor above the interpreter, whatever the model size (measured in docs/benchmarks.md).
    """
    from mindrlhf.configs.run_config import write_run_yaml

    config, params = hf_to_ms_lazy(hf_dir, dtype)
    write_checkpoint_streaming(params, output, dtype)
    if yaml_out:
        write_run_yaml(config, yaml_out, checkpoint=os.path.abspath(output))
    return config


if __name__ == "__main__":  # `python -m mindrlhf.tools.convert_hf`: the command is mindrlhf.cli.convert_hf
    from mindrlhf.cli.convert_hf import main

    sys.exit(main())
