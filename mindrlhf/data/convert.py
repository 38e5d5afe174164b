"""CValues-Comparison JSONL -> MindRecord for PPO, reward-model and SFT training; prompt-only JSONL for GRPO.

Input lines are `{"prompt", "pos_resp", "neg_resp", "pos_type", "neg_type"}`; each kind uses the fields listed in
its schema (`mindrlhf.data.schemas`): ppo and sft need prompt and pos_resp, rm also neg_resp. Other keys
(pos_type, neg_type, metadata) are ignored. The "prompt" kind reads `{"prompt": ..., "answer": ..., ...}`: the
prompt is tokenised, and extra string fields (`columns`, by default every string field of the first line) are
stored verbatim as MindRecord string columns, for reward functions that compare with a reference.

Bad input (`on_error="stop"` is the default; "skip" turns the stops into skip-and-count):

| case                                         | policy                                      | reason key         |
| -------------------------------------------- | ------------------------------------------- | ------------------ |
| invalid UTF-8 (or a lone surrogate escape)   | stop at file:line (skip with on_error=skip) | invalid_utf8       |
| malformed JSON                               | stop at file:line (skip with on_error=skip) | malformed_json     |
| a line that is not a JSON object             | stop at file:line (skip with on_error=skip) | not_an_object      |
| a required field missing                     | stop at file:line (skip with on_error=skip) | missing_field      |
| a required field not a string (null, number) | stop at file:line (skip with on_error=skip) | non_string         |
| prompt: an extra column empty / whitespace   | stop at file:line (skip with on_error=skip) | empty_column       |
| empty / whitespace-only prompt               | skip and count                              | empty_prompt       |
| empty / whitespace-only response             | skip and count                              | empty_response     |
| rm: pos_resp identical to neg_resp           | skip and count                              | identical_pair     |
| [BOS] + prompt longer than max_prompt_length | skip and count (never truncated)            | prompt_too_long    |
| [BOS]+prompt+response+[EOS] > seq_length     | skip and count (never truncated)            | sequence_too_long  |
| blank line                                   | ignored, counted                            | blank_line         |
| no row left to write                         | stop                                        |                    |

Structural problems stop by default because they mean a broken or wrong file; content problems are normal in
a large corpus, so they are skipped and counted, and the first few file:line of each are logged. Nothing is
written under the output name unless the whole conversion succeeds (see `mindrlhf.data.writer`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from mindrlhf.data.hf_tokenizer import Tokenizer, load_tokenizer
from mindrlhf.data.layout import layout_rows
from mindrlhf.data.schemas import PROMPT_LEN, SEQ_LEN, DataError, DatasetSchema, get_schema
from mindrlhf.data.tokenizer import TokenizerBase
from mindrlhf.data.writer import AtomicMindRecordWriter

__all__ = ["ConversionSummary", "convert_jsonl", "discover_string_columns", "layout_rows"]

logger = logging.getLogger(__name__)

STRUCTURAL = (
    "invalid_utf8",
    "malformed_json",
    "not_an_object",
    "missing_field",
    "non_string",
    "empty_column",
)
CONTENT = ("empty_prompt", "empty_response", "identical_pair", "prompt_too_long", "sequence_too_long")
ON_ERROR = ("stop", "skip")
_EXAMPLES = 5  # file:line examples kept per skip reason


@dataclasses.dataclass
class ConversionSummary:
    """What a conversion read, wrote and skipped (skipped: reason -> count, examples: reason -> file:line)."""

    input_path: str
    output_path: str
    kind: str
    lines: int = 0
    rows: int = 0
    rows_with_unk: int = 0
    skipped: Dict[str, int] = dataclasses.field(default_factory=dict)
    examples: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else float("inf")

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < _EXAMPLES:
            ex.append(where)

    def format(self) -> str:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"{self.input_path}: {self.lines} lines -> {self.rows} {self.kind} rows in {self.output_path} "
            f"({self.seconds:.2f} s, {self.lines_per_second:.0f} lines/s); skipped: {skipped}; "
            f"rows containing the unk id: {self.rows_with_unk}"
        )

    def to_json(self) -> Dict[str, object]:
        out = dataclasses.asdict(self)
        out["lines_per_second"] = round(self.lines_per_second, 1)
        return out


class _Stop(Exception):
    """Internal: a structural problem on one line."""

    def __init__(self, reason: str, message: str, field: Optional[str] = None):
        super().__init__(message)
        self.reason, self.message, self.field = reason, message, field


def _parse_line(
    raw: bytes, fields: Sequence[str], kind: str
) -> Tuple[Optional[Dict[str, str]], Optional[str]]:
    """-> (record, None), (None, content_skip_reason), or raises _Stop for a structural problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Stop("invalid_utf8", f"invalid UTF-8 at byte {exc.start} of the line ({exc.reason})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Stop("malformed_json", f"malformed JSON at column {exc.colno}: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise _Stop(
            "not_an_object", f"expected a JSON object with {', '.join(fields)}, got {type(obj).__name__}"
        )
    record = {}
    for name in fields:
        if name not in obj:
            raise _Stop("missing_field", f"required field is missing (the line has: {', '.join(obj)})", name)
        value = obj[name]
        if not isinstance(value, str):
            shown = json.dumps(value, ensure_ascii=False)[:40]
            raise _Stop("non_string", f"expected a string, got {type(value).__name__} {shown}", name)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Stop(
                "invalid_utf8", "contains a lone surrogate escape (\\udXXX), not valid text", name
            ) from None
        record[name] = value
    if kind == "prompt":  # an empty reference answer would silently score every response wrong
        for name in fields[1:]:
            if not record[name].strip():
                raise _Stop("empty_column", "is empty; a reward function would compare with nothing", name)
    if not record["prompt"].strip():
        return None, "empty_prompt"
    for name in fields[1:]:
        if not record[name].strip():
            return None, "empty_response"
    if kind == "rm" and record["pos_resp"] == record["neg_resp"]:
        return None, "identical_pair"
    return record, None


def _count_lines(path: str) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def discover_string_columns(path: str) -> Tuple[str, ...]:
    """The string fields of the first JSON object line of `path`, except "prompt" (the default `columns`)."""
    with open(path, "rb") as f:
        for raw in f:
            try:
                obj = json.loads(raw.decode("utf-8-sig"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                return ()  # the reading pass reports the line properly
            if isinstance(obj, dict):
                return tuple(k for k, v in obj.items() if k != "prompt" and isinstance(v, str))
            return ()
    return ()


def _read_records(
    path: str, schema: DatasetSchema, on_error: str, summary: ConversionSummary
) -> Iterator[Tuple[int, Dict[str, str]]]:
    """Yield `(line_no, record)` for usable lines, counting or stopping on the rest (see the module table)."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            summary.lines = line_no
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte order mark
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                summary.skip("blank_line", f"{path}:{line_no}")
                continue
            try:
                record, reason = _parse_line(raw, schema.json_fields + schema.string_columns, schema.kind)
            except _Stop as stop:
                if on_error == "stop":
                    raise DataError(
                        f"{stop.message}. Fix the line, or pass --on_error skip to skip and count such lines",
                        f"{path}:{line_no}",
                        stop.field,
                    ) from None
                summary.skip(stop.reason, f"{path}:{line_no}")
                continue
            if reason is not None:
                summary.skip(reason, f"{path}:{line_no}")
                continue
            yield line_no, record


def _chunks(it: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in it:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def convert_jsonl(
    file_path: str,
    output_path: str,
    tokenizer: Union[Tokenizer, str],
    kind: str = "ppo",
    max_prompt_length: int = 2048,
    seq_length: int = 4096,
    pad_token_id: Optional[int] = None,
    on_error: str = "stop",
    overwrite: bool = False,
    chunk_size: int = 2048,
    progress: bool = False,
    columns: Optional[Sequence[str]] = None,
    chat_template: bool = False,
) -> ConversionSummary:
    """Convert a CValues-format JSONL file into a `kind` MindRecord dataset (layout in `schemas`).

    `tokenizer` is a tokenizer object or a path `load_tokenizer` takes (SentencePiece `tokenizer.model`, Hugging
    Face `tokenizer.json`, or a directory). `pad_token_id` defaults to the tokenizer's. `chat_template` renders
    each prompt as the user turn of the tokenizer's chat template (the rows' prompt is then the templated text,
    with one BOS in front when the model uses BOS); a tokenizer without a template is a DataError. Work is done `chunk_size` lines at a time (batch tokenisation in C++
    threads, one `write_raw_data` per chunk). Raises DataError (naming file:line and field) on a stop;
    the output then does not exist. Returns the summary; its skip counts also go into the `.meta.json`.

    `columns` (kind "prompt" only): the extra JSONL string fields stored as string columns; None takes every
    string field of the first line but "prompt". Each line must then have them, as non-empty strings.
    """
    schema = get_schema(kind)
    if on_error not in ON_ERROR:
        raise DataError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}", field="on_error")
    for name, value, low in (("max_prompt_length", max_prompt_length, 2), ("seq_length", seq_length, 3)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise DataError(f"must be an integer >= {low}, got {value!r}", field=name)
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise DataError(f"must be a positive integer, got {chunk_size!r}", field="chunk_size")
    if not os.path.isfile(file_path):
        what = "is a directory, not a JSONL file" if os.path.isdir(file_path) else "input file not found"
        raise DataError(what, file_path, "file_path")
    if schema.takes_string_columns:
        schema = schema.with_string_columns(
            discover_string_columns(file_path) if columns is None else columns
        )
        logger.info("%s: extra string columns %s", file_path, list(schema.string_columns) or "none")
    elif columns:
        schema.with_string_columns(columns)  # raises: this kind takes no extra columns
    tok = tokenizer if isinstance(tokenizer, TokenizerBase) else load_tokenizer(tokenizer, pad_token_id)
    if pad_token_id is not None and int(pad_token_id) != tok.pad_id:
        tok = load_tokenizer(tok.model_file, int(pad_token_id))
    if chat_template:  # a tokenizer without a (working) template fails here, before any output exists
        tok.encode_chat_prompts(["check that a template exists before any work"])
    lengths = {PROMPT_LEN: int(max_prompt_length), SEQ_LEN: int(seq_length)}
    summary = ConversionSummary(os.path.abspath(file_path), os.path.abspath(output_path), kind)
    total = _count_lines(file_path)
    writer = AtomicMindRecordWriter(output_path, schema, lengths, overwrite=overwrite, expected_rows=total)
    import mindspore.mindrecord  # noqa: F401  (its ~1.5 s import is paid here, not counted as throughput)

    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="line", desc=f"rlhf_data {kind}")
    try:
        with writer as w:
            seen = 0
            for chunk in _chunks(_read_records(file_path, schema, on_error, summary), chunk_size):
                records = [rec for _, rec in chunk]
                prompts = [r["prompt"] for r in records]
                p_tok = tok.encode_chat_prompts(prompts) if chat_template else tok.encode_batch(prompts)
                r_tok = tok.encode_batch([r["pos_resp"] for r in records]) if kind != "prompt" else None
                n_tok = tok.encode_batch([r["neg_resp"] for r in records]) if kind == "rm" else None
                cols, reasons = layout_rows(
                    kind,
                    p_tok,
                    r_tok if r_tok is not None else [()] * len(records),
                    n_tok,
                    bos_id=tok.bos_id if tok.add_bos else None,
                    eos_id=tok.eos_id,
                    pad_id=tok.pad_id,
                    max_prompt_length=lengths[PROMPT_LEN],
                    seq_length=lengths[SEQ_LEN],
                )
                rows = []
                for i, (line_no, record) in enumerate(chunk):
                    if reasons[i] is not None:
                        summary.skip(reasons[i], f"{file_path}:{line_no}")
                        continue
                    rows.append({name: col[i] for name, col in cols.items()})
                    rows[-1].update({name: record[name] for name in schema.string_columns})
                    if (
                        tok.unk_id in p_tok[i]
                        or (r_tok is not None and tok.unk_id in r_tok[i])
                        or (n_tok is not None and tok.unk_id in n_tok[i])
                    ):
                        summary.rows_with_unk += 1
                w.write(rows)
                summary.rows += len(rows)
                if bar is not None:
                    bar.update(summary.lines - seen)
                    seen = summary.lines
            if summary.rows == 0:
                skipped = (
                    ", ".join(f"{k}={v}" for k, v in sorted(summary.skipped.items())) or "the file is empty"
                )
                raise DataError(
                    f"no usable rows (skipped: {skipped}); nothing was written. Check the file and the "
                    "max_prompt_length / seq_length limits",
                    file_path,
                )
            summary.seconds = time.perf_counter() - start
            w.commit(
                {
                    "pad_token_id": tok.pad_id,
                    "tokenizer": dict(tok.describe(), chat_template_applied=bool(chat_template)),
                    "source": {"path": os.path.abspath(file_path), "lines": summary.lines},
                    "conversion": {
                        k: v for k, v in summary.to_json().items() if k in ("skipped", "rows_with_unk")
                    },
                }
            )
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - start
    for reason, count in sorted(summary.skipped.items()):
        if reason != "blank_line":
            logger.warning(
                "skipped %d line(s) (%s), e.g. %s", count, reason, ", ".join(summary.examples[reason])
            )
    if summary.rows_with_unk:
        logger.warning(
            "%d rows contain the unk id %d (characters the tokenizer cannot represent)",
            summary.rows_with_unk,
            tok.unk_id,
        )
    logger.info(summary.format())
    return summary
