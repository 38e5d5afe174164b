"""Read a mindrlhf MindRecord dataset as batches of numpy int32 arrays, after checking it.

    batches = read_dataset("ppo.mindrecord", "ppo", batch_size=8, seed=0)
    for batch in batches:            # one epoch: dicts {field: int32 [B, L]} as in `schemas`
        ...
    for batch in batches.iter_epoch(epoch=3, start_batch=17):   # exact resume
        ...

Before anything is iterated, the `.meta.json` sidecar is checked against the files (sizes and sha256: MindRecord
has no checksums of its own, and a corrupted payload can crash the process) and the MindRecord header schema
is checked against the kind's schema (missing field, wrong dtype, wrong shape -> DataError naming the field).

Order: epoch e visits rows in `RandomState(seed + e).permutation(num_rows)` (or file order without shuffle);
shard k of n takes every n-th row of that order starting at k, after trimming the order to a multiple of n so
every shard has the same number of batches (data-parallel ranks must step together). Batch b of epoch e is
thus a pure function of (seed, e, b), which is what makes `iter_epoch(e, start_batch=b)` an exact resume.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from mindrlhf.data.schemas import DataError, get_schema
from mindrlhf.data.writer import META_FORMAT, META_SUFFIX, sha256_file

logger = logging.getLogger(__name__)

VERIFY = ("checksum", "size", "none")


def load_meta(path: str) -> Dict[str, Any]:
    """The sidecar `<path>.meta.json` as a dict; DataError if it is missing or not ours."""
    meta_path = path + META_SUFFIX
    if not os.path.isfile(meta_path):
        raise DataError(
            f"metadata sidecar {os.path.basename(meta_path)} is missing (the write was interrupted, or the file was "
            "not made by examples/rlhf_train_tutorial/rlhf_data.py). Rebuild the dataset, or pass verify='none' "
            "to read it unchecked",
            path,
        )
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable metadata ({exc}); rebuild the dataset", meta_path) from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise DataError(f"not a {META_FORMAT} metadata file; rebuild the dataset", meta_path, "format")
    return meta


def verify_files(path: str, meta: Dict[str, Any], level: str = "checksum") -> None:
    """Check that the data file and its `.db` are the ones the sidecar describes (size, and sha256 when
    `level == "checksum"`)."""
    base = os.path.basename(path)
    files = meta.get("files") or {}
    for name in (base, base + ".db"):
        p = os.path.join(os.path.dirname(path), name)
        if name not in files:
            raise DataError(
                f"the metadata describes {', '.join(files) or 'no files'}, not {name}: a MindRecord pair cannot be "
                "renamed (the file stores its own name); rebuild it under the new name",
                path + META_SUFFIX,
                "files",
            )
        if not os.path.isfile(p):
            raise DataError(f"{name} is missing: a MindRecord dataset is the file and its .db; copy both", p)
        size = os.path.getsize(p)
        if size != files[name].get("bytes"):
            raise DataError(
                f"has {size} bytes but was written with {files[name].get('bytes')} (truncated or replaced); rebuild it",
                p,
            )
        if level == "checksum" and sha256_file(p) != files[name].get("sha256"):
            raise DataError("sha256 differs from the one recorded at write time (corrupted); rebuild it", p)


class MindRecordBatches:
    """Deterministic, shardable, resumable batches over one checked MindRecord dataset (see module doc)."""

    def __init__(
        self,
        path: str,
        kind: str,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        shard_id: Optional[int] = None,
        num_shards: Optional[int] = None,
        drop_remainder: bool = True,
        epoch: int = 0,
        start_batch: int = 0,
        verify: str = "checksum",
        num_parallel_workers: int = 1,
    ):
        self.path = os.path.abspath(path)
        self.schema = get_schema(kind)
        self.kind = kind
        if verify not in VERIFY:
            raise DataError(f"verify must be one of {', '.join(VERIFY)}, got {verify!r}", field="verify")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise DataError(f"must be a positive integer, got {batch_size!r}", field="batch_size")
        if (shard_id is None) != (num_shards is None):
            raise DataError("give both shard_id and num_shards, or neither", field="shard_id")
        if num_shards is not None and not (num_shards >= 1 and 0 <= shard_id < num_shards):
            raise DataError(
                f"need 0 <= shard_id < num_shards, got {shard_id} of {num_shards}", field="shard_id"
            )
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.shard_id = 0 if shard_id is None else int(shard_id)
        self.num_shards = 1 if num_shards is None else int(num_shards)
        self.drop_remainder = bool(drop_remainder)
        self.num_parallel_workers = int(num_parallel_workers)
        if not os.path.isfile(self.path):
            raise DataError("dataset file not found", self.path)
        self.meta: Optional[Dict[str, Any]] = None
        lengths = None
        if verify != "none":
            self.meta = load_meta(self.path)
            if self.meta.get("kind") != kind:
                raise DataError(
                    f"is a {self.meta.get('kind')!r} dataset, not {kind!r}; give the {kind} file or the right kind",
                    self.path,
                    "kind",
                )
            verify_files(self.path, self.meta, verify)
            lengths = self.meta.get("lengths")
        elif not os.path.isfile(self.path + ".db"):
            raise DataError(
                "the .db index next to it is missing: a MindRecord dataset is the file and its .db", self.path
            )
        self.lengths, self.num_rows = self._check_header(lengths)
        if self.meta is not None and self.meta.get("num_rows") != self.num_rows:
            raise DataError(
                f"has {self.num_rows} rows but the metadata says {self.meta.get('num_rows')}; rebuild it",
                self.path,
            )
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)
        if not 0 <= self.start_batch <= len(self):
            raise DataError(
                f"must be in [0, {len(self)}] (batches per epoch), got {start_batch}", field="start_batch"
            )

    def _check_header(self, lengths):
        from mindspore.mindrecord import FileReader

        try:
            reader = FileReader(self.path, num_consumer=1)
        except Exception as exc:  # MindSpore's RuntimeError carries a long C++ report: keep its first line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"MindSpore cannot open it as MindRecord ({first}); rebuild it", self.path
            ) from None
        try:
            header = reader.schema()
            num_rows = int(reader.len())
        finally:
            reader.close()
        found = self.schema.check_header(header, self.path, lengths)
        strings = self.schema.header_string_columns(header)
        expected = None if self.meta is None else self.meta.get("string_columns")
        if expected is not None and sorted(expected) != list(strings):
            raise DataError(
                f"has string columns {list(strings)} but the metadata lists {sorted(expected)} (the .meta.json "
                "belongs to another file?); rebuild it",
                self.path,
                "string_columns",
            )
        self.string_columns = strings
        return found, num_rows

    # ------------------------------------------------------------------ order
    def __len__(self) -> int:
        """Batches per epoch for this shard."""
        rows = self.num_rows // self.num_shards
        return rows // self.batch_size if self.drop_remainder else -(-rows // self.batch_size)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Row indices this shard visits in `epoch`, in order (trimmed to whole batches if drop_remainder)."""
        order = (
            np.random.RandomState((self.seed + int(epoch)) % 2**32).permutation(self.num_rows)
            if self.shuffle
            else np.arange(self.num_rows)
        )
        per_shard = self.num_rows // self.num_shards
        mine = order[: per_shard * self.num_shards][self.shard_id :: self.num_shards]
        if self.drop_remainder:
            mine = mine[: (per_shard // self.batch_size) * self.batch_size]
        return mine

    def iter_epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Dict[str, np.ndarray]]:
        """Batches `start_batch, start_batch + 1, ...` of `epoch`: dicts `{field: int32 [B, L]}`, plus
        `{column: str [B]}` for the extra string columns of a "prompt" dataset."""
        import mindspore.dataset as ds

        indices = self.epoch_indices(epoch)[int(start_batch) * self.batch_size :]
        if len(indices) == 0:
            return
        data = ds.MindDataset(
            self.path,
            columns_list=list(self.schema.names) + list(self.string_columns),
            sampler=ds.SubsetSampler([int(i) for i in indices]),
            num_parallel_workers=self.num_parallel_workers,
        )
        data = data.batch(self.batch_size, drop_remainder=False)
        for batch in data.create_dict_iterator(output_numpy=True, num_epochs=1):
            out = {name: np.asarray(batch[name], dtype=np.int32) for name in self.schema.names}
            out.update({name: np.asarray(batch[name], dtype=str) for name in self.string_columns})
            yield out

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        return self.iter_epoch(self.epoch, self.start_batch)

    def read_all(self) -> Dict[str, np.ndarray]:
        """Every row of this shard in file order, `{field: int32 [N, L]}` (for small eval sets and tests)."""
        out: Dict[str, List[np.ndarray]] = {name: [] for name in (*self.schema.names, *self.string_columns)}
        saved = (self.shuffle, self.drop_remainder)
        self.shuffle, self.drop_remainder = False, False
        try:
            for batch in self.iter_epoch(0):
                for name in out:
                    out[name].append(batch[name])
        finally:
            self.shuffle, self.drop_remainder = saved
        return {name: np.concatenate(v) if v else np.zeros((0,), np.int32) for name, v in out.items()}


def read_dataset(
    path: str,
    kind: str,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    shard_id: Optional[int] = None,
    num_shards: Optional[int] = None,
    drop_remainder: bool = True,
    epoch: int = 0,
    start_batch: int = 0,
    verify: str = "checksum",
) -> MindRecordBatches:
    """Open and check a `kind` ("ppo", "rm", "sft", "prompt") dataset; iterate the result for batches of one epoch.

    See `MindRecordBatches` and the module doc for order, sharding and resume. `verify`: "checksum" (sizes
    and sha256 of both files against the sidecar; default), "size", or "none" (no sidecar needed; the header
    schema is still checked).
    """
    return MindRecordBatches(
        path,
        kind,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        shard_id=shard_id,
        num_shards=num_shards,
        drop_remainder=drop_remainder,
        epoch=epoch,
        start_batch=start_batch,
        verify=verify,
    )
