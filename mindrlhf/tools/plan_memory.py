"""Say before launch what a PPO / GRPO run needs per device: each role's weights, gradients, optimizer states,
activations (without, with selective and with full recomputation), KV cache and logits, and the peak against
the device size. Pure arithmetic on the run YAMLs and the PPO config; nothing is built, MindSpore is not used.

    python -m mindrlhf.tools.plan_memory --sft_model_path SFT.yaml [--reward_model_path RM.yaml] \
        [--config ppo_config.yaml] [--device_memory_gb 64] [--key value ...]      (also: mindrlhf-plan-memory)

Roles: the actor (SFT YAML, trains), the critic (gae only; RM YAML, else the SFT backbone; trains), the reference
(SFT YAML; only when beta > 0 or init_kl_coef > 0) and the reward model (RM YAML; only when one is given).

Assumptions, per device (B = bytes of the dtype; dp, mp, pp from the SFT YAML's `parallel_config`):
- Weights at `param_init_type`; gradients of a trained role at the same dtype (MindSpore's gradient of a
  Parameter has its dtype). Optimizer: AdamW m and v in fp32, 8 B/param whatever the weight dtype
  (`trainer/optim.FP32StateAdamWeightDecay`, as MindFormers' optimizer of that name); no fp32 master copy of
  16-bit weights (neither keeps one: the update is computed in fp32 and rounded back to the weight dtype; for
  mixed precision with a master copy, Micikevicius et al. 2018, set param_init_type float32 and a 16-bit
  compute_dtype). The compute-dtype cast of fp32 weights is transient.
- Division as MindFormers lays a Llama out: transformer layers split mp ways (heads, FFN width) and into pp
  stages (the plan is for the fullest stage: its layers plus the embedding or the head); the embedding and
  lm_head are replicated unless `vocab_emb_dp: false` (then split mp ways); optimizer states
  are divided by dp with `parallel.enable_parallel_optimizer`.
- Critic-free runs (num_generations G > 1) are counted as B rows of P + N tokens. On one device or with data
  parallel only, the trainer computes each group's prompt once (`models/llama/grouped.py`: B/G x P + B x N tokens
  in the reference forward and the actor step), so there the plan overstates those activations; sharded models
  (mp or pp > 1) take the plain forward, as counted.
- Rows per device: rollout_batch_size (generation, scoring) and mini_batch_size (training); divided by dp in
  semi/auto/hybrid parallel with `full_batch: true` (every rank reads the global batch and keeps its share), as
  many as each rank reads otherwise. With pp > 1 a training step holds min(pp, micro_batch_num) micro-batches
  of rows / micro_batch_num in the first stage (1F1B).
- Activations kept for the backward pass, per layer and token, following Korthikanti et al. 2022 ("Reducing
  Activation Recomputation in Large Transformer Models", sec. 4), counted for a Llama layer (RMSNorm, GQA,
  SwiGLU, no dropout) at compute_dtype: the two norm inputs and outputs 4H, q, k, v and the attention output
  (2*nh + 2*nkv)*hd, the SwiGLU gate, SiLU, up and product 4F, the softmax output nh*T at softmax_compute_type.
  Tensor parallelism divides all but the 4H by mp (sequence parallelism divides those too). Selective
  recomputation (`recompute_config.select_recompute`) drops the nh*T attention term; full recomputation
  (`recompute`) keeps each layer's input H and rebuilds one layer at a time during the backward pass.
- Forward-only graphs (generation's prefill, scoring) hold one layer's intermediates at a time.
- KV cache (kept on the actor between iterations): 2 * layers * rows * nkv * hd * (P + N - 1) at compute_dtype,
  split mp ways (heads) and pp ways (layers).
- Logits: the LM head runs on the N response positions only, [B, N, V] at compute_dtype plus its fp32 copy (the
  log-softmax reads it); the actor's training step adds the fp32 gradient. Value roles: [B, T] fp32.
- Peak = what stays between phases (weights, optimizer states, KV cache) + the largest phase (generate, score,
  train actor, train critic; gradients live in their train step) + `runtime_overhead` (0 unless given: what the
  framework itself takes on the device; on CPU it is measured, see bench/bench_memory_plan.py).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
RECOMPUTE_MODES = ("none", "selective", "full")


def _truthy(value: Any) -> bool:
    """MindFormers' recompute fields are a bool, a per-stage list of bools/ints or a list of op names."""
    if isinstance(value, (list, tuple)):
        return any(_truthy(v) for v in value)
    return bool(value)


def recompute_mode(raw: Optional[Mapping[str, Any]]) -> str:
    """'full', 'selective' or 'none' from a run YAML's `recompute_config` (`recompute`, `select_recompute`)."""
    section = (raw or {}).get("recompute_config") or {}
    if not isinstance(section, Mapping):
        return "none"
    if _truthy(section.get("recompute", False)):
        return "full"
    return "selective" if _truthy(section.get("select_recompute", False)) else "none"


def parameter_counts(model, value_head: bool = False) -> Dict[str, int]:
    """Parameters of `LlamaForCausalLM(model)` (or of the value model) by part: layers, embedding, head, norm.

    `model` is a `LlamaConfig`. The same table as `llama_param_shapes` / `value_param_shapes`.
    """
    h, hd, f = model.hidden_size, model.head_dim, model.ffn_hidden_size
    q, kv = model.num_heads * hd, model.num_kv_heads * hd
    per_layer = 2 * h + h * (q + 2 * kv) + q * h + 3 * h * f + ((q + 2 * kv) if model.qkv_has_bias else 0)
    if value_head:
        head = h
    else:
        head = 0 if model.tie_word_embeddings else model.vocab_size * h
    return {
        "layers": model.num_layers * per_layer,
        "embedding": model.vocab_size * h,
        "head": head,
        "norm": h,
    }


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one device's share is cut: see the module docstring."""

    dp: int = 1
    mp: int = 1
    pp: int = 1
    micro_batch_num: int = 1
    vocab_emb_dp: bool = True
    seq_parallel: bool = False
    optimizer_shard: bool = False
    batch_split: int = 1  # rows each device keeps = rows read / batch_split

    @classmethod
    def from_parallel(cls, parallel) -> Layout:
        """From a `ParallelConfig` (None or `use_parallel: false`: one device, nothing split)."""
        from mindrlhf.parallel.config import SHARDING_MODES

        if parallel is None or not parallel.use_parallel:
            return cls()
        dims, sharding = parallel.parallel_config, parallel.mode in SHARDING_MODES
        return cls(
            dp=parallel.dp, mp=parallel.mp if sharding else 1, pp=parallel.pp if sharding else 1,
            micro_batch_num=dims.micro_batch_num, vocab_emb_dp=dims.vocab_emb_dp,
            seq_parallel=dims.use_seq_parallel and sharding,
            optimizer_shard=sharding and parallel.parallel.enable_parallel_optimizer,
            batch_split=parallel.dp if sharding and parallel.parallel.full_batch else 1,
        )  # fmt: skip

    def describe(self) -> str:
        opt = ", optimizer sharded over dp" if self.optimizer_shard else ""
        vocab = "" if self.vocab_emb_dp else ", vocab split over mp"
        return f"dp {self.dp} x mp {self.mp} x pp {self.pp}{opt}{vocab}"


def layer_activation_bytes(model, rows: int, seq: int, layout: Layout, mode: str) -> int:
    """Activations one Llama layer keeps for its backward pass, for `rows` sequences of `seq` tokens (Korthikanti
    et al. 2022 counted for Llama, see the module docstring). mode 'full' returns the layer input only."""
    c, s = DTYPE_BYTES[model.compute_dtype], DTYPE_BYTES[model.softmax_compute_type]
    h, hd, t = model.hidden_size, model.head_dim, layout.mp
    replicated = h * (1 if mode == "full" else 4)
    if layout.seq_parallel:
        replicated /= t
    if mode == "full":
        return int(rows * seq * c * replicated)
    sharded = (2 * model.num_heads + 2 * model.num_kv_heads) * hd + 4 * model.ffn_hidden_size
    per_token = c * (replicated + sharded / t)
    if mode == "none":
        per_token += s * model.num_heads * seq / t
    return int(rows * seq * per_token)


@dataclasses.dataclass
class RoleMemory:
    """One role's bytes per device. `activations` maps each recompute mode to a training step's activations
    (trained roles) or to one forward's working set (frozen roles, the same for every mode)."""

    name: str
    trains: bool
    params: int
    weights: int
    gradients: int
    optimizer: int
    activations: Dict[str, int]
    kv_cache: int = 0
    logits: int = 0
    phase: str = "score"  # where its activations and logits live (frozen roles: score)


@dataclasses.dataclass
class MemoryPlan:
    """Per-device memory of a run: roles, phases, peak, and whether it fits `device_bytes`."""

    roles: List[RoleMemory]
    layout: Layout
    recompute: str
    phases: Dict[str, int]
    device_bytes: int
    runtime_overhead: int = 0

    @property
    def resident(self) -> int:
        """Weights + optimizer states + KV cache: held through every phase."""
        return sum(r.weights + r.optimizer + r.kv_cache for r in self.roles)

    @property
    def largest_phase(self) -> str:
        return max(self.phases, key=self.phases.get)

    @property
    def peak(self) -> int:
        return self.resident + self.phases[self.largest_phase] + self.runtime_overhead

    @property
    def fits(self) -> bool:
        return self.peak <= self.device_bytes

    def table(self) -> str:
        """The plan as a fixed-width text table (GiB per device)."""
        g = lambda n: f"{n / GIB:.2f}"  # noqa: E731
        head = ("role", "params", "weights", "grads", "optimizer", "act none", "act select", "act full",
                "KV cache", "logits")  # fmt: skip
        rows = [head]
        for r in self.roles:
            a = r.activations
            rows.append((r.name + ("" if r.trains else " (frozen)"), f"{r.params / 1e6:.1f}M", g(r.weights),
                         g(r.gradients), g(r.optimizer), g(a["none"]), g(a["selective"]), g(a["full"]),
                         g(r.kv_cache), g(r.logits)))  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                 for row in rows]  # fmt: skip
        lines.insert(1, "-" * len(lines[0]))
        phases = ", ".join(f"{name} {g(v)}" for name, v in self.phases.items())
        verdict = "fits" if self.fits else f"does NOT fit (short by {g(self.peak - self.device_bytes)} GiB)"
        lines += [
            f"GiB per device; layout {self.layout.describe()}; activations counted with recompute: {self.recompute}",
            f"held between phases (weights, optimizer states, KV cache): {g(self.resident)}",
            f"phases (activations, logits, gradients): {phases}",
        ]
        if self.runtime_overhead:
            lines.append(f"runtime overhead (measured, not modelled): {g(self.runtime_overhead)}")
        lines.append(
            f"peak {g(self.peak)} GiB ({self.largest_phase}) of {g(self.device_bytes)} GiB per device: {verdict}"
        )
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "roles": [dataclasses.asdict(r) for r in self.roles], "layout": dataclasses.asdict(self.layout),
            "recompute": self.recompute, "phases": dict(self.phases), "resident": self.resident,
            "runtime_overhead": self.runtime_overhead, "peak": self.peak, "device_bytes": self.device_bytes,
            "fits": self.fits,
        }  # fmt: skip


def _role(name, model, value_head, trains, layout: Layout, train_rows, score_rows, seq) -> RoleMemory:
    """Weights, gradients, optimizer states and activations of one role on the fullest device."""
    counts = parameter_counts(model, value_head)
    shard = layout.mp if not layout.vocab_emb_dp else 1
    embedding, head = counts["embedding"] / shard, counts["head"] / (1 if value_head else shard)
    edges = embedding + head if layout.pp == 1 else max(embedding, head)
    params = int(counts["layers"] / (layout.mp * layout.pp) + edges + counts["norm"])
    p = DTYPE_BYTES[model.param_init_type]
    weights = params * p
    gradients = optimizer = 0
    layers = model.num_layers // layout.pp
    if trains:
        gradients = weights
        optimizer = int(params * 8 / (layout.dp if layout.optimizer_shard else 1))  # fp32 m and v
        m = layout.micro_batch_num if layout.pp > 1 else 1  # micro-batches only feed a pipeline
        micro = max(train_rows // m, 1)
        in_flight = micro * min(layout.pp, m)
        acts = {m: layers * layer_activation_bytes(model, in_flight, seq, layout, m) for m in RECOMPUTE_MODES}
        acts["full"] += layer_activation_bytes(
            model, micro, seq, layout, "none"
        )  # one layer rebuilt at a time
    else:
        one = layer_activation_bytes(model, score_rows, seq, layout, "none")
        acts = dict.fromkeys(RECOMPUTE_MODES, one)
    return RoleMemory(name, trains, params, weights, gradients, optimizer, acts)


def plan_memory(
    sft,
    ppo,
    reward=None,
    layout: Optional[Layout] = None,
    recompute: str = "none",
    device_memory_gb: float = 64.0,
    runtime_overhead: int = 0,
) -> MemoryPlan:
    """The per-device plan for `ppo` (a `PPOConfig`) with the actor/reference of `sft` and the reward model (and
    gae critic) of `reward` (`LlamaConfig`s; reward None: no reward model, the critic from the SFT backbone).

    `recompute` ('none', 'selective', 'full') picks the activation column that counts toward the peak;
    `runtime_overhead` (bytes) is added to the peak as its own line.
    """
    if recompute not in RECOMPUTE_MODES:
        raise ValueError(f"recompute must be one of {RECOMPUTE_MODES}, got {recompute!r}")
    layout = layout or Layout()
    split = layout.batch_split
    rows, mb = max(ppo.rollout_batch_size // split, 1), max(ppo.mini_batch_size // split, 1)
    p, n = ppo.max_prompt_length, ppo.max_new_tokens
    seq = p + n
    v_split = 1 if layout.vocab_emb_dp else layout.mp

    def logits(model, r, extra=0):
        return int(r * n * model.vocab_size * (DTYPE_BYTES[model.compute_dtype] + 4 + extra) / v_split)

    actor = _role("actor", sft, False, True, layout, mb, rows, seq)
    c = DTYPE_BYTES[sft.compute_dtype]
    kv = (
        2
        * (sft.num_layers // layout.pp)
        * rows
        * (sft.num_kv_heads / layout.mp)
        * sft.head_dim
        * (seq - 1)
        * c
    )
    actor.kv_cache, actor.logits, actor.phase = int(kv), logits(sft, mb, 4), "train actor"
    roles = [actor]
    if not ppo.critic_free:
        critic = _role("critic", reward or sft, True, True, layout, mb, rows, seq)
        critic.logits, critic.phase = mb * seq * 4, "train critic"
        roles.append(critic)
    if ppo.needs_reference:
        reference = _role("reference", sft, False, False, layout, mb, rows, seq)
        reference.logits = logits(sft, rows)
        roles.append(reference)
    if reward is not None:
        rm = _role("reward", reward, True, False, layout, mb, rows, seq)
        rm.logits = rows * seq * 4
        roles.append(rm)
    # Scoring runs the frozen roles and the critic's forward in one graph: the largest working set + all outputs.
    frozen = [r for r in roles if not r.trains]
    working = [r.activations["none"] for r in frozen]
    outputs = sum(r.logits for r in frozen)
    if not ppo.critic_free:  # the critic's values over the rollout, forward only
        working.append(layer_activation_bytes(reward or sft, rows, seq, layout, "none"))
        outputs += rows * seq * 4
    score = max(working or [0]) + outputs
    phases = {
        "generate": layer_activation_bytes(sft, rows, p, layout, "none")
        + int(rows * sft.vocab_size * (c + 4)),
        "score": score,
    }
    for r in roles:
        if r.trains:
            phases[r.phase] = r.gradients + r.activations[recompute] + r.logits
    return MemoryPlan(roles, layout, recompute, phases, int(device_memory_gb * GIB), int(runtime_overhead))


def plan_from_runs(
    sft_run, ppo, reward_run=None, parallel=None, world_size=None, recompute=None, **kwargs
) -> MemoryPlan:
    """`plan_memory` from loaded run YAMLs (`RunConfig`): the layout and recompute settings are the SFT YAML's
    (`world_size=1`: one process, which ignores `parallel_config` as train.py does; `recompute` overrides)."""
    if parallel is None:
        from mindrlhf.parallel.config import ParallelConfig

        parallel = ParallelConfig.from_run_dict(sft_run.raw, sft_run.path)
    return plan_memory(
        sft_run.model_config,
        ppo,
        None if reward_run is None else reward_run.model_config,
        layout=Layout() if world_size == 1 else Layout.from_parallel(parallel),
        recompute=recompute or recompute_mode(sft_run.raw),
        **kwargs,
    )


def device_memory_gb(device_target: str) -> float:
    """The memory to plan against: 64 GiB (an Ascend 910B) on an accelerator, the machine's RAM on CPU."""
    if str(device_target).upper() != "CPU":
        return 64.0
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


if __name__ == "__main__":
    import sys

    from mindrlhf.cli.plan_memory import main

    sys.exit(main())
