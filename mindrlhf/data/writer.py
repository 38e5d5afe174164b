"""Write a MindRecord dataset atomically, with a metadata/checksum sidecar the reader verifies.

A MindRecord dataset is a pair, `<name>` and its SQLite index `<name>.db`, and the file records its own name:
a renamed copy still looks for the original. So the pair is written under its final basename inside a
temporary directory next to the output and moved into place only after `commit()`; any exception or
KeyboardInterrupt removes the temporary directory, so no half-written file ever sits under the output name.
The sidecar `<name>.meta.json` (kind, lengths, row count, sizes and sha256 of both files) is written last:
MindRecord has no checksums and a corrupted payload can crash the reading process, so `reader.py` checks the
sidecar before MindSpore opens the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional

from mindrlhf.data.schemas import DataError, DatasetSchema
from mindrlhf.utils.io import fsync_dir, fsync_file

logger = logging.getLogger(__name__)

META_SUFFIX = ".meta.json"
META_FORMAT = "mindrlhf-mindrecord-v1"
_MIN_PAGE, _MAX_PAGE = 1 << 15, 1 << 26  # MindRecord allows 32 KB .. 256 MB; stay well below the top
_STRING_BYTES = 4096  # room per string column when sizing pages (a reference answer, a short label)
_MIN_HEADER, _MAX_HEADER = 1 << 14, 1 << 27  # 16 KB .. 128 MB


def output_files(path: str) -> List[str]:
    """The files a dataset at `path` consists of: the data, its `.db` index and the metadata sidecar."""
    return [path, path + ".db", path + META_SUFFIX]


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def page_and_header_size(row_bytes: int, expected_rows: int) -> Dict[str, int]:
    """Page size ~32 rows (so a small dataset stays small; the default 32 MB pages made a 640 KB dataset
    50 MB) and a header big enough for the page table (~0.5 KB per page, measured: too small a header fails
    with "shard header is too big")."""
    page = min(_MAX_PAGE, max(_MIN_PAGE, _pow2_at_least(32 * row_bytes)))
    pages = 2 * (expected_rows * row_bytes // page + 1)  # raw + blob pages
    header = min(_MAX_HEADER, max(_MIN_HEADER, _pow2_at_least(16384 + 512 * pages)))
    return {"page_size": page, "header_size": header}


class AtomicMindRecordWriter:
    """`with AtomicMindRecordWriter(path, schema, lengths) as w: w.write(rows); w.commit(extra_meta)`.

    Rows are dicts of 1-D numpy arrays matching `schema.shapes(lengths)`. Leaving the block without `commit()`
    (or with an exception) discards everything. An existing dataset at `path` (any of its three files) is an
    error unless `overwrite`.
    """

    def __init__(
        self,
        path: str,
        schema: DatasetSchema,
        lengths: Mapping[str, int],
        overwrite: bool = False,
        expected_rows: int = 100_000,
    ):
        self.path = os.path.abspath(path)
        self.schema = schema
        self.lengths = {k: int(v) for k, v in lengths.items()}
        self.overwrite = overwrite
        self.expected_rows = max(1, int(expected_rows))
        self.rows = 0
        self._tmpdir: Optional[str] = None
        self._writer = None
        self._committed = False
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise DataError("output directory does not exist; create it first", directory, "output_path")
        if os.path.isdir(self.path):
            raise DataError(
                "is a directory; give a file name such as data.mindrecord", self.path, "output_path"
            )
        existing = [p for p in output_files(self.path) if os.path.exists(p)]
        if existing and not overwrite:
            raise DataError(
                f"output already exists ({', '.join(os.path.basename(p) for p in existing)}); "
                "pass --overwrite (overwrite=True) to replace it, or choose another output_path",
                self.path,
                "output_path",
            )

    def __enter__(self) -> AtomicMindRecordWriter:
        from mindspore.mindrecord import FileWriter

        directory, base = os.path.split(self.path)
        row_bytes = sum(4 * shape[0] for shape in self.schema.shapes(self.lengths).values())
        row_bytes += _STRING_BYTES * len(self.schema.string_columns)  # a page must hold a whole row
        sizes = page_and_header_size(row_bytes, self.expected_rows)
        self._tmpdir = tempfile.mkdtemp(prefix=f".{base}.partial-", dir=directory)
        try:
            self._writer = FileWriter(os.path.join(self._tmpdir, base), shard_num=1, overwrite=False)
            self._writer.set_page_size(sizes["page_size"])
            self._writer.set_header_size(sizes["header_size"])
            self._writer.add_schema(
                self.schema.mindrecord_schema(self.lengths), f"mindrlhf {self.schema.kind}"
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        logger.debug("writing %s in %s (%s)", base, self._tmpdir, sizes)
        return self

    def write(self, rows: List[Dict[str, Any]]) -> None:
        """Append rows; each must already match the schema (the converter builds them, MindRecord would
        otherwise drop a bad row with only a warning)."""
        if rows:
            self._writer.write_raw_data(rows)
            self.rows += len(rows)

    def commit(self, extra_meta: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Finish the file, write the sidecar, and move the three files into place; return the metadata."""
        if self.rows == 0:
            raise DataError("no rows to write; nothing was committed", self.path, "output_path")
        self._writer.commit()
        base = os.path.basename(self.path)
        tmp_data = os.path.join(self._tmpdir, base)
        files = {}
        for name in (base, base + ".db"):
            p = os.path.join(self._tmpdir, name)
            files[name] = {"bytes": os.path.getsize(p), "sha256": sha256_file(p)}
        meta: Dict[str, Any] = {
            "format": META_FORMAT,
            "kind": self.schema.kind,
            "num_rows": self.rows,
            "lengths": self.lengths,
            "fields": {
                **{
                    name: {"dtype": "int32", "shape": list(shape)}
                    for name, shape in self.schema.shapes(self.lengths).items()
                },
                **{name: {"dtype": "string"} for name in self.schema.string_columns},
            },
            "string_columns": list(self.schema.string_columns),
            "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        meta.update(extra_meta or {})
        with open(tmp_data + META_SUFFIX, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, ensure_ascii=False)
            f.write("\n")
        self._swap_in(tmp_data)
        self._committed = True
        return meta

    def _swap_in(self, tmp_data: str) -> None:
        """Move an old dataset aside into the temporary directory, move the new one in (sidecar last), and on
        any failure put things back as they were. The old dataset is deleted with the directory."""
        data, db, meta = output_files(self.path)
        moves = [(tmp_data + ".db", db), (tmp_data, data), (tmp_data + META_SUFFIX, meta)]  # sidecar last
        for new, _ in moves:  # the data must be on disk before a rename can publish it
            fsync_file(new)
        set_aside, moved_in = [], []
        try:
            for final in (
                meta,
                data,
                db,
            ):  # the old sidecar first: none may describe a pair it does not match
                if os.path.lexists(final):
                    backup = os.path.join(self._tmpdir, "old-" + os.path.basename(final))
                    os.replace(final, backup)
                    set_aside.append((backup, final))
            for new, final in moves:
                os.replace(new, final)
                moved_in.append(final)
            fsync_dir(os.path.dirname(os.path.abspath(data)))
        except BaseException:
            for final in moved_in:
                if os.path.lexists(final):
                    os.unlink(final)
            for backup, final in reversed(set_aside):
                os.replace(backup, final)
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._committed and exc_type is None and self._writer is not None:
            logger.warning("%s: writer closed without commit(); nothing was written", self.path)
        self._writer = None
        if self._tmpdir and os.path.isdir(self._tmpdir):
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._tmpdir = None
