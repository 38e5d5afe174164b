"""Llama-architecture cells (Llama-2, Llama-3.x, Qwen2/2.5 by config) with MindFormers' parameter names."""

from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.models.llama.model import KVCache, LlamaForCausalLM, LlamaModel, llama_param_shapes

__all__ = ["KVCache", "LlamaConfig", "LlamaForCausalLM", "LlamaModel", "llama_param_shapes"]
