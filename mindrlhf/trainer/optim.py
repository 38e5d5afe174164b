"""AdamW whose moments are float32 whatever the weight dtype (MindFormers' `FP32StateAdamWeightDecay`).

`mindspore.nn.AdamWeightDecay` clones its moments from the weights, so fp16/bf16 weights (`param_init_type` in a
MindFormers YAML) get fp16/bf16 moments: v = g^2 underflows to 0 in fp16 for |g| < ~2.4e-4 (the smallest fp16
subnormal is ~6e-8), the step m / (sqrt(v) + eps) then explodes, and m and v take 4 B/param instead of the 8 B/param
the memory planner (`mindrlhf/tools/plan_memory.py`) counts for them. Like MindFormers' optimizer it keeps no fp32
master copy of 16-bit weights (nor does the planner count one). `make_optimizer` (train_step.py)
builds this class only when some weight is not float32; all-float32 runs keep MindSpore's fused kernel
(bit-identical runs and resumes).
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.common.initializer import initializer

_fp32_adamw = ops.MultitypeFuncGraph("fp32_state_adamw")


@_fp32_adamw.register(
    "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Bool", "Bool"
)
def _update(beta1, beta2, eps, lr, weight_decay, param, m, v, gradient, decay_flag, optim_filter):
    """One AdamW step for one weight `param` (any float dtype) with float32 moments `m`, `v` (same shape).

    In float32: m' = b1 m + (1 - b1) g; v' = b2 v + (1 - b2) g^2; u = m' / (eps + sqrt(v')) (+ wd * w when the
    weight's group decays); w' = w - lr * u; m', v' are stored as float32 and w' is cast back to `param`'s dtype.
    The same operations, in the same order, as MindSpore's non-fused `nn.AdamWeightDecay` step; returns w' (what
    `broadcast_params` sends under the parallel optimizer).
    """
    if optim_filter:
        w = ops.cast(param, ms.float32)
        g = ops.cast(gradient, ms.float32)
        next_m = beta1 * m + (1.0 - beta1) * g
        next_v = beta2 * v + (1.0 - beta2) * ops.square(g)
        update = next_m / (eps + ops.sqrt(next_v))
        if decay_flag:
            update = weight_decay * w + update
        next_w = w - ops.reshape(lr * update, w.shape)
        next_w = ops.cast(next_w, param.dtype)
        next_w = ops.depend(next_w, ops.assign(param, next_w))
        next_w = ops.depend(next_w, ops.assign(m, next_m))
        return ops.depend(next_w, ops.assign(v, next_v))
    return ops.cast(gradient, param.dtype)


def fp32_states(params, prefix: str) -> ParameterTuple:
    """Zero float32 Parameters `<prefix>.<weight name>` shaped like `params` (the names `nn.AdamWeightDecay`
    gives its moments, so checkpoints and `utils/resume.py` see the same slots). Each copies its weight's
    `param_info` (parallel layout, optimizer-shard flags), as `Parameter.clone` and MindFormers' `clone_state` do.
    """
    states = []
    for p in params:
        state = Parameter(initializer("zeros", p.shape, ms.float32), name=f"{prefix}.{p.name}")
        state.param_info = p.param_info.clone()
        state.is_init = False
        state.name = f"{prefix}.{p.name}"
        states.append(state)
    return ParameterTuple(states)


class FP32StateAdamWeightDecay(nn.Optimizer):
    """AdamW (Loshchilov & Hutter 2019, decoupled weight decay) with float32 moments `adam_m.*` / `adam_v.*`.

    Per weight w `[any shape]`, gradient g, step t, learning rate lr_t (`learning_rate` may be an
    `LrTable`) and the group's weight decay wd, computed in float32 with w cast up and the result cast back:
        m_t = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
        w_t = w_{t-1} - lr_t (m_t / (sqrt(v_t) + eps) + wd w_{t-1})
    Like MindSpore's `nn.AdamWeightDecay` (whose docstring gives this formula; its non-fused `_update_run_op`
    computes it in float32) and MindFormers' `FP32StateAdamWeightDecay` (a subclass of it that only forces float32
    moments), there is NO bias correction (no 1 - b^t terms). There is no float32 master copy of the weights:
    a 16-bit weight is rounded to its dtype after every step, as in MindFormers.

    Args: as `nn.AdamWeightDecay` (params: Parameters or groups with "params" and "weight_decay").
    Inputs: gradients, a tuple of Tensors shaped like the weights (any float dtype).
    """

    _support_parallel_optimizer = True

    def __init__(self, params, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0):
        super().__init__(learning_rate, params, weight_decay)
        for name, value in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 < float(value) < 1.0:
                raise ValueError(f"FP32StateAdamWeightDecay: {name} must be in (0, 1), got {value!r}")
        if not float(eps) > 0.0:
            raise ValueError(f"FP32StateAdamWeightDecay: eps must be > 0, got {eps!r}")
        self.beta1 = Tensor([float(beta1)], ms.float32)
        self.beta2 = Tensor([float(beta2)], ms.float32)
        self.eps = Tensor([float(eps)], ms.float32)
        self.moments1 = fp32_states(self._parameters, "adam_m")
        self.moments2 = fp32_states(self._parameters, "adam_v")

    @ms.jit
    def construct(self, gradients):
        weight_decay = self.get_weight_decay()
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        params, m, v, flags, keep = (
            self._parameters, self.moments1, self.moments2, self.decay_flags, self.optim_filter
        )  # fmt: skip
        if self.is_group_lr:
            fn = ops.partial(_fp32_adamw, self.beta1, self.beta2, self.eps)
            result = self.hyper_map(fn, lr, weight_decay, params, m, v, gradients, flags, keep)
        elif self.is_group:
            fn = ops.partial(_fp32_adamw, self.beta1, self.beta2, self.eps, lr)
            result = self.hyper_map(fn, weight_decay, params, m, v, gradients, flags, keep)
        else:
            fn = ops.partial(_fp32_adamw, self.beta1, self.beta2, self.eps, lr, weight_decay)
            result = self.hyper_map(fn, params, m, v, gradients, flags, keep)
        if self.use_parallel:
            self.broadcast_params(result)
        return result
