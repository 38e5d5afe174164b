"""Llama2 cells with MindFormers' parameter names."""

from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.models.llama.model import KVCache, LlamaForCausalLM, LlamaModel, llama_param_shapes

__all__ = ["KVCache", "LlamaConfig", "LlamaForCausalLM", "LlamaModel", "llama_param_shapes"]
