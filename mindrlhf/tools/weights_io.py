"""Weight files for `convert_hf`: lazy safetensors reading (one tensor in memory at a time) and a streaming
MindSpore checkpoint / safetensors writer, so a conversion peaks near one tensor rather than the whole model."""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Dict

import numpy as np

from mindrlhf.errors import MindRLHFError
from mindrlhf.utils.io import atomic_write

logger = logging.getLogger(__name__)

_NP_DTYPES = {"float32": np.float32, "float16": np.float16}


class ConversionError(MindRLHFError):
    """The input directory or checkpoint cannot be converted; the message says which file and why."""


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


class _LazyTensor:
    """One tensor of a .safetensors file, read only when `load()` is called (at most one held at a time).

    `load()` returns `target` dtype; BF16, which numpy cannot represent, is widened to float32 bit-exactly from
    its raw 16-bit words first. Shape and dtype come from the file header, so shapes are checked before any
    data is read.
    """

    def __init__(self, path: str, key: str, entry: Dict, data_start: int, target=None):
        self.path, self.key, self.entry, self.data_start, self.target = path, key, entry, data_start, target
        self.shape = tuple(int(d) for d in entry["shape"])
        if entry.get("dtype") not in (*_ST_DTYPES, "BF16"):
            raise ConversionError(
                f"{path}: tensor {key!r} has dtype {entry.get('dtype')}; expected F32/F16/BF16"
            )

    def astype(self, target) -> _LazyTensor:
        return _LazyTensor(self.path, self.key, self.entry, self.data_start, target)

    def load(self) -> np.ndarray:
        try:
            if self.entry["dtype"] == "BF16":
                begin, end = self.entry["data_offsets"]
                with open(self.path, "rb") as f:
                    f.seek(self.data_start + begin)
                    words = np.frombuffer(f.read(end - begin), dtype="<u2").astype(np.uint32) << 16
                array = words.view(np.float32).reshape(self.shape)
            else:
                from safetensors import safe_open

                with safe_open(self.path, framework="numpy") as st:
                    array = st.get_tensor(self.key)
        except (OSError, ValueError, KeyError) as exc:
            raise ConversionError(f"{self.path}: cannot read tensor {self.key!r} ({exc})") from None
        return array if self.target is None else array.astype(self.target, copy=False)


def _open_safetensors(path: str) -> Dict[str, _LazyTensor]:
    """The tensors of one .safetensors file, as lazy handles (only the JSON header is read here)."""
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: cannot read safetensors ({exc})") from None
    if not isinstance(header, dict):
        raise ConversionError(f"{path}: cannot read safetensors (the header is not a JSON object)")
    return {k: _LazyTensor(path, k, v, 8 + header_len) for k, v in header.items() if k != "__metadata__"}


def _read_safetensors(path: str) -> Dict[str, np.ndarray]:
    """All tensors of one .safetensors file as numpy; BF16 widened to float32 exactly."""
    return {k: t.load() for k, t in _open_safetensors(path).items()}


def open_hf_weights(hf_dir: str) -> Dict[str, _LazyTensor]:
    """Lazy handles on the weights of an HF directory: `model.safetensors` or the shards of its index."""
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    single = os.path.join(hf_dir, "model.safetensors")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (ValueError, KeyError) as exc:
            raise ConversionError(f"{index}: not a valid safetensors index ({exc})") from None
        weights: Dict[str, _LazyTensor] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(hf_dir, shard)
            if not os.path.isfile(shard_path):
                raise ConversionError(f"{index}: lists shard {shard!r}, which is not in {hf_dir}")
            weights.update(_open_safetensors(shard_path))
        missing = [k for k in weight_map if k not in weights]
        if missing:
            raise ConversionError(f"{index}: tensors listed but not found in their shards: {missing[:5]}")
        return weights
    if os.path.isfile(single):
        return _open_safetensors(single)
    raise ConversionError(
        f"{hf_dir}: no model.safetensors or model.safetensors.index.json (PyTorch .bin files are not read; "
        "re-save with save_pretrained(..., safe_serialization=True))"
    )


def read_hf_weights(hf_dir: str) -> Dict[str, np.ndarray]:
    """Weights of an HF directory, all in memory (see `open_hf_weights` for the lazy form)."""
    return {k: t.load() for k, t in open_hf_weights(hf_dir).items()}


def _write_safetensors(tensors: Dict[str, np.ndarray], path: str, dtype: str) -> None:
    from safetensors.numpy import save_file

    if dtype == "bfloat16":
        raise ConversionError("writing bfloat16 safetensors is not supported; use --dtype float32 or float16")
    save_file({k: np.ascontiguousarray(v.astype(_NP_DTYPES[dtype])) for k, v in tensors.items()}, path)


# ------------------------------------------------------------------------------- streaming checkpoint writer

_MS_TENSOR_TYPE = {np.dtype(np.float32): "Float32", np.dtype(np.float16): "Float16"}
_ST_NAME = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}
_MS_SLICE_KB = 512 * 1024  # MindSpore's SLICE_SIZE: a tensor over 512 MB is written as several entries


def _write_ckpt_entries(f, name: str, array: np.ndarray) -> None:
    """Append one tensor to a MindSpore .ckpt as `save_checkpoint` does: a serialised `Checkpoint` message per
    slice (protobuf concatenation appends to the repeated `value` field, so the file stays one valid message)."""
    from mindspore.train.checkpoint_pb2 import Checkpoint

    kb = array.nbytes / 1024
    pieces = np.array_split(array, math.ceil(kb / _MS_SLICE_KB)) if kb > _MS_SLICE_KB else [array]
    for piece in pieces:
        message = Checkpoint()
        value = message.value.add()
        value.tag = name
        value.tensor.dims.extend(array.shape)
        value.tensor.tensor_type = _MS_TENSOR_TYPE[array.dtype]
        value.tensor.tensor_content = piece.tobytes()
        f.write(message.SerializeToString())


def write_checkpoint_streaming(tensors: Dict[str, _LazyTensor], path: str, dtype: str) -> str:
    """Write `{MindFormers name: lazy tensor}` to `path` (.ckpt or .safetensors) one tensor at a time.

    Peak memory is one tensor (read + cast), not the model: `ms.save_checkpoint` takes a fully materialised
    list. The .ckpt bytes are those MindSpore's own `save_checkpoint` writes for the same tensors (same proto,
    same 512 MB slicing); the .safetensors gets its header first (every shape is known from the input headers),
    then each tensor's bytes. Written under a hidden temporary name in the target folder and renamed at the end.
    """
    np_dtype = np.dtype(_NP_DTYPES[dtype])
    with atomic_write(path, binary=True) as f:
        if path.endswith(".safetensors"):
            header, offset = {"__metadata__": {"format": "ms"}}, 0
            for name, t in tensors.items():
                size = int(np.prod(t.shape, dtype=np.int64)) * np_dtype.itemsize
                header[name] = {
                    "dtype": _ST_NAME[np_dtype],
                    "shape": list(t.shape),
                    "data_offsets": [offset, offset + size],
                }
                offset += size
            blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
            blob += b" " * (-len(blob) % 8)  # safetensors aligns the data section to 8 bytes
            f.write(len(blob).to_bytes(8, "little") + blob)
            for t in tensors.values():
                f.write(np.ascontiguousarray(t.load(), dtype=np_dtype).tobytes())
        else:
            for name, t in tensors.items():
                _write_ckpt_entries(f, name, np.ascontiguousarray(t.load(), dtype=np_dtype))
    logger.info("wrote %s (%d tensors, streamed)", path, len(tensors))
    return path
