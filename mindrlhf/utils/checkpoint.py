"""The one checkpoint loader and saver (MindSpore `.ckpt`, or `.safetensors` by extension).

Loading is strict by default and checks every name and shape *before* touching the model: MindSpore's own
`load_param_into_net` never raises on missing or extra names and overwrites parameters before it finds a shape
mismatch. Saving goes through `mindrlhf.utils.io` (temporary file beside the target, fsync, rename), so a killed save never
leaves a truncated file under the final name (MindSpore's own save deletes the old target first).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from mindrlhf.errors import MindRLHFError
from mindrlhf.utils.integrity import ChecksumError, remove_checksum, verify_checksum, write_checksum
from mindrlhf.utils.io import commit_file, temp_path_beside

logger = logging.getLogger(__name__)

_SHOW = 5  # names listed per category in an error
META_PREFIX = "__meta__."  # entries saved with `extra=`; never compared with the model's parameters


class CheckpointError(MindRLHFError):
    """A checkpoint that does not fit the model (or cannot be read). The message lists what is wrong."""


# What a MindFormers/MindSpore *training* checkpoint holds besides the weights: optimizer slots named
# `<slot>.<parameter>` (AdamWeightDecay: adam_m/adam_v; Adam/FusedAdam variants: moment1/moment2; gradient
# accumulation: accu_grads) and the scalars of TrainOneStep, the loss-scale cell and the callbacks.
TRAINING_STATE_PREFIXES = ("adam_m.", "adam_v.", "moment1.", "moment2.", "accu_grads.")
TRAINING_STATE_NAMES = frozenset(
    {
        "global_step",
        "scale_sense",
        "loss_scale",
        "epoch_num",
        "step_num",
        "learning_rate",
        "current_iterator_step",
        "last_overflow_iterator_step",
        "beta1_power",
        "beta2_power",
    }
)


def training_state_kind(name: str) -> Optional[str]:
    """`adam_m.model.norm_out.weight` -> "adam_m.*", `global_step` -> "global_step", a weight -> None."""
    for prefix in TRAINING_STATE_PREFIXES:
        if name.startswith(prefix):
            return prefix + "*"
    return name if name in TRAINING_STATE_NAMES else None


def count_training_state(names: Iterable[str], model_names: Iterable[str]) -> Dict[str, int]:
    """Counts per kind of the known optimizer/training entries in `names` that are not model parameters."""
    own = set(model_names)
    counts: Dict[str, int] = {}
    for name in names:
        kind = None if name in own else training_state_kind(name)
        if kind is not None:
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def log_skipped_training_state(counts: Mapping[str, int], source: str) -> None:
    """One info line naming what a training checkpoint held besides the weights (nothing when empty)."""
    if counts:
        listed = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        logger.info(
            "%s: training checkpoint; loaded the model weights and ignored %d optimizer/training entries (%s)",
            source,
            sum(counts.values()),
            listed,
        )


def _format(kind: str, items: List[str]) -> str:
    if not items:
        return ""
    more = f", ... (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"\n  {len(items)} {kind}: {', '.join(items[:_SHOW])}{more}"


def _format_of(path: str) -> str:
    return "safetensors" if path.endswith(".safetensors") else "ckpt"


# A MindFormers model name such as `llama2_7b` or `llama2_70b` in `checkpoint_name_or_path` (MindFormers downloads
# those weights by name): letters/digits with underscores, no extension, no folder.
_MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)+")
_WHAT_TO_PASS = (
    "set the run YAML's load_checkpoint (or model.model_config.checkpoint_name_or_path) to the path of a .ckpt or "
    ".safetensors file, or convert Hugging Face weights first with `python -m mindrlhf.tools.convert_hf "
    "--hf-dir <dir> --output <file>.ckpt --yaml-out <file>.yaml`"
)


def _not_a_file_hint(path: str) -> str:
    """Why a missing checkpoint path is probably not a path at all (a MindFormers model name or template)."""
    if "{path}" in path:
        return "; '{path}' is the placeholder of MindFormers' example YAMLs: replace it with the real folder"
    name = os.path.basename(path)
    if _MODEL_NAME.fullmatch(name) and not os.path.exists(path):
        return (
            f"; '{name}' is a MindFormers model name (MindFormers downloads those weights by name), not a "
            f"file, and mindrlhf does not download weights: {_WHAT_TO_PASS}"
        )
    return ""


def read_checkpoint(path: str) -> Dict[str, Tensor]:
    """Read a checkpoint into `{name: Tensor}`; a missing or unreadable file raises one CheckpointError.

    A file with a `.sha256` sidecar (every checkpoint `save_checkpoint` writes) is checked against it first
    (a CheckpointError naming the file on a mismatch); foreign files load unchecked.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found" + _not_a_file_hint(path))
    try:
        verify_checksum(path)
    except ChecksumError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        params = ms.load_checkpoint(path, format=_format_of(path))
    except Exception as exc:  # MindSpore raises ValueError/RuntimeError with long internal messages
        raise CheckpointError(
            f"{path}: cannot read as a MindSpore {_format_of(path)} checkpoint ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); is it truncated or another format?"
        ) from None
    return dict(params)


def check_compatible(
    model_params: Mapping[str, Tuple[int, ...]],
    ckpt_params: Mapping[str, Tuple[int, ...]],
    source: str,
    strict: bool,
) -> Tuple[List[str], List[str]]:
    """Compare name->shape tables; raise CheckpointError listing problems. Returns (missing, unexpected).

    Known optimizer/training entries of a MindFormers training checkpoint (`adam_m.*`, `adam_v.*`,
    `global_step`, `scale_sense`, ... see `training_state_kind`) are neither unexpected nor returned, unless the
    model itself has a parameter of that name; every model weight must still be present with its shape.
    """
    missing = [n for n in model_params if n not in ckpt_params]
    unexpected = [n for n in ckpt_params if n not in model_params and training_state_kind(n) is None]
    mismatched = [
        f"{n} (checkpoint {list(ckpt_params[n])} vs model {list(model_params[n])})"
        for n in model_params
        if n in ckpt_params and tuple(ckpt_params[n]) != tuple(model_params[n])
    ]
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointError(
            f"{source}: checkpoint does not match the model"
            + _format("missing from the checkpoint", missing if strict else [])
            + _format("unexpected in the checkpoint", unexpected if strict else [])
            + _format("with a different shape", mismatched)
            + "\n  Check that the YAML's model_config (hidden_size, num_layers, num_heads, n_kv_heads, vocab_size,"
            " intermediate_size/multiple_of) describes the model this checkpoint was saved from."
        )
    return missing, unexpected


TIED_HEAD, EMBEDDING = "lm_head.weight", "model.tok_embeddings.embedding_weight"


def drop_tied_head(params: Mapping[str, Any], tie_word_embeddings: bool, source: str) -> Mapping[str, Any]:
    """`params` without a stored `lm_head.weight` that merely repeats the embedding of a tied model.

    A model with `tie_word_embeddings: true` has no head weight of its own (it *is* the embedding), yet some
    exports store the head anyway (a MindFormers checkpoint saved with the head listed, an HF file with both).
    An identical copy is dropped with one info line; a different one means the checkpoint's head is not tied,
    which raises CheckpointError naming the field to change. Untied models and checkpoints without a head pass
    through unchanged.
    """
    if not tie_word_embeddings or TIED_HEAD not in params:
        return params
    head, embedding = params[TIED_HEAD], params.get(EMBEDDING)
    as_array = lambda v: v.asnumpy() if hasattr(v, "asnumpy") else np.asarray(v)  # noqa: E731
    if embedding is None or not np.array_equal(as_array(head), as_array(embedding)):
        raise CheckpointError(
            f"{source}: the checkpoint stores an lm_head.weight that differs from {EMBEDDING}, but the model "
            "config sets tie_word_embeddings: true (one matrix for both); set tie_word_embeddings: false in the "
            "YAML's model_config to load this untied head"
        )
    logger.info("%s: lm_head.weight equals the embedding of this tied model; the copy is not loaded", source)
    return {name: value for name, value in params.items() if name != TIED_HEAD}


def load_param_dict(
    model: nn.Cell, params: Mapping[str, Any], source: str = "<params>", strict: bool = True
) -> List[str]:
    """Load `{name: Tensor|Parameter|ndarray}` into `model` after checking names and shapes; returns unused names.

    strict=True: missing, unexpected and shape-mismatched names are all errors (one message lists them).
    strict=False: only the names present in both are loaded (shape mismatches are still errors).
    A tied model's stored copy of its head is handled by `drop_tied_head`. Values are cast to each parameter's dtype. A training checkpoint's optimizer/training entries are skipped
    with one info line (see `check_compatible`).
    """
    params = drop_tied_head(
        params, getattr(getattr(model, "config", None), "tie_word_embeddings", False), source
    )
    model_params = {name: p for name, p in model.parameters_and_names() if not name.startswith("kv_cache.")}
    ckpt_shapes = {n: tuple(v.shape) for n, v in params.items() if not n.startswith(META_PREFIX)}
    check_compatible({n: tuple(p.shape) for n, p in model_params.items()}, ckpt_shapes, source, strict)
    log_skipped_training_state(count_training_state(ckpt_shapes, model_params), source)
    for name, param in model_params.items():
        if name not in params:
            continue
        assign_parameter(param, params[name])
    return [n for n in params if n not in model_params]


def assign_parameter(param: Parameter, value: Any) -> None:
    """Copy `value` into `param` in place.

    In place matters twice: graphs compiled before the load keep reading the parameter's own memory (a
    `set_data` after a graph ran is not seen by that graph), and two models loaded from one checkpoint dict
    must not end up sharing one tensor (the actor would drag the reference along as it trains).
    """
    array = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    tensor = Tensor(np.array(array, copy=True), param.dtype)
    if param.has_init:
        param.set_data(tensor)
    else:
        ops.assign(param, tensor)


def load_checkpoint(model: nn.Cell, path: str, strict: bool = True) -> List[str]:
    """Load a `.ckpt`/`.safetensors` into `model` (strict by default); returns checkpoint names not used."""
    logger.info("loading checkpoint %s", path)
    return load_param_dict(model, read_checkpoint(path), source=path, strict=strict)


def _to_save_list(obj: Union[nn.Cell, Mapping[str, Any], Iterable]) -> List[Dict[str, Any]]:
    if isinstance(obj, nn.Cell):
        items = [(n, p) for n, p in obj.parameters_and_names() if not n.startswith("kv_cache.")]
    elif isinstance(obj, Mapping):
        items = list(obj.items())
    else:
        items = list(obj)
    out = []
    for name, value in items:
        if isinstance(value, Parameter):
            value = Tensor(value.asnumpy(), value.dtype) if value.has_init is False else value.init_data()
        elif isinstance(value, np.ndarray):
            value = Tensor(value)
        out.append({"name": name, "data": value})
    return out


def save_checkpoint(
    obj: Union[nn.Cell, Mapping[str, Any]], path: str, extra: Optional[Dict[str, Any]] = None
) -> str:
    """Atomically save a model's parameters (or a `{name: tensor}` mapping) to `path`.

    `extra` holds scalars/tensors stored beside the weights as `__meta__.<key>` (MindSpore's `append_dict`);
    loading ignores them when comparing with the model and returns their names. The file is
    written as a hidden temporary in the same directory, fsynced, then renamed over `path` (folder fsynced);
    then its SHA-256 goes to `path.sha256` (`mindrlhf.utils.integrity`). The old sidecar is removed before the
    rename, so a crash in between leaves a file without a sum (loaded unchecked), never one with a wrong sum.
    """
    fmt = _format_of(path)
    # MindSpore writes to a path itself (appending the suffix when absent): give it a temporary beside `path`,
    # then let the shared helper fsync and rename it.
    tmp = temp_path_beside(path, suffix=".safetensors" if fmt == "safetensors" else ".ckpt")
    try:
        meta = {META_PREFIX + k: v for k, v in (extra or {}).items()} or None
        ms.save_checkpoint(_to_save_list(obj), tmp, append_dict=meta, format=fmt)
        remove_checksum(path)
        commit_file(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    write_checksum(path)
    logger.info("saved checkpoint %s", path)
    return path
