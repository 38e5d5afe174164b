"""mindrlhf.generation: batched KV-cache decoding with in-graph sampling and exact rollout log-probabilities."""

from mindrlhf.generation.decoding import GenerationOutput, clear_generation_cache, generate
from mindrlhf.generation.sampling import SamplingSpec, TokenSampler

__all__ = ["GenerationOutput", "SamplingSpec", "TokenSampler", "clear_generation_cache", "generate"]
