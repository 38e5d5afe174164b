"""Every dataset mindrlhf writes or reads, in one place: field names, dtypes, shapes and meaning.

The converter (`mindrlhf.data.convert`, behind `examples/rlhf_train_tutorial/rlhf_data.py`) writes these
fields and the reader (`mindrlhf.data.reader`) checks a file against them before it yields a batch.

Layout shared by all kinds (T = seq_length, P = max_prompt_length, prompt and response are tokenised
separately and concatenated, so the prompt tokens inside a full sequence are exactly the prompt's tokens)::

    full sequence  = [BOS] + prompt + response + [EOS], right-padded with pad_token_id to T
    prompt_ids     = [BOS] + prompt, left-padded with pad_token_id to P (generation continues at the right)

Masks are stored, never derived from `ids == pad_token_id` (pad 0 is also Llama's unk id):

- `*_mask` / `attention_mask`: 1 on every real token (BOS .. EOS), 0 on padding.
- `loss_mask`: aligned to INPUT positions: `loss_mask[t] = 1` means token `ids[t]` is a trained target,
  predicted from position t-1. It is 1 on the response tokens and the final EOS (so the model learns to stop),
  0 on BOS, the prompt and padding. A trainer computing next-token loss uses
  `logits[:, :-1]` against `ids[:, 1:]` weighted by `loss_mask[:, 1:]`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from mindrlhf.configs.loader import ConfigError

# Lengths a field's shape can refer to.
PROMPT_LEN = "max_prompt_length"
SEQ_LEN = "seq_length"


class DataError(ConfigError):
    """A user-fixable problem in a data file (JSONL input, MindRecord output or its metadata).

    The message names the file (and line when there is one), the field, and what would fix it.
    """


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One MindRecord column: a 1-D array of `dtype` whose length is the named length (`seq_length`, ...)."""

    name: str
    length: str  # PROMPT_LEN or SEQ_LEN
    doc: str
    dtype: str = "int32"


@dataclasses.dataclass(frozen=True)
class DatasetSchema:
    """The columns of one dataset kind and the JSONL fields it is built from."""

    kind: str
    doc: str
    fields: Tuple[FieldSpec, ...]
    json_fields: Tuple[str, ...]  # CValues fields the converter needs (strings, non-empty)
    # Extra JSONL string fields stored verbatim as MindRecord "string" columns (the "prompt" kind: e.g. the
    # reference `answer` a reward function compares with). Chosen per dataset: see `with_string_columns`.
    string_columns: Tuple[str, ...] = ()
    takes_string_columns: bool = False

    def with_string_columns(self, names: Sequence[str]) -> DatasetSchema:
        """This schema plus string columns `names` (only for kinds that take them, i.e. "prompt")."""
        names = tuple(names)
        if names and not self.takes_string_columns:
            raise DataError(
                f"a {self.kind!r} dataset has no extra string columns (got {', '.join(names)}); "
                "use --mode prompt for prompt-only datasets with extra columns",
                field="columns",
            )
        taken = set(self.names) | set(self.json_fields)
        for name in names:
            if not name or name in taken or names.count(name) > 1:
                raise DataError(
                    f"{name!r} cannot be an extra column (empty, repeated, or one of {', '.join(sorted(taken))})",
                    field="columns",
                )
        return dataclasses.replace(self, string_columns=names)

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def shapes(self, lengths: Mapping[str, int]) -> Dict[str, Tuple[int]]:
        """`{field: (length,)}` for concrete lengths, e.g. `{"max_prompt_length": 32, "seq_length": 64}`."""
        return {f.name: (int(lengths[f.length]),) for f in self.fields}

    def mindrecord_schema(self, lengths: Mapping[str, int]) -> Dict[str, Dict[str, Any]]:
        """The dict `FileWriter.add_schema` takes; shapes are fixed so the header alone can be checked."""
        schema = {f.name: {"type": f.dtype, "shape": [int(lengths[f.length])]} for f in self.fields}
        schema.update({name: {"type": "string"} for name in self.string_columns})
        return schema

    def header_string_columns(self, header: Mapping[str, Mapping[str, Any]]) -> Tuple[str, ...]:
        """The extra string columns of a MindRecord header (sorted; none for kinds that take none)."""
        if not self.takes_string_columns:
            return ()
        return tuple(
            sorted(n for n, col in header.items() if n not in self.names and col.get("type") == "string")
        )

    def check_header(
        self,
        header: Mapping[str, Mapping[str, Any]],
        source: str,
        lengths: Optional[Mapping[str, int]] = None,
    ) -> Dict[str, int]:
        """Check a MindRecord header schema (`FileReader.schema()`) against this kind; return its lengths.

        Raises DataError naming `source` and the first bad field: missing, wrong dtype, not a fixed 1-D
        shape, lengths that disagree between fields, or that differ from `lengths` (from the metadata).
        Extra columns are allowed and ignored.
        """
        found: Dict[str, int] = {}
        fix = f"rebuild it with examples/rlhf_train_tutorial/rlhf_data.py --mode {self.kind}"
        for spec in self.fields:
            if spec.name not in header:
                have = ", ".join(sorted(header)) or "none"
                raise DataError(
                    f"missing from the file (it has: {have}); is this a '{self.kind}' dataset? {fix}",
                    source,
                    spec.name,
                )
            col = header[spec.name]
            if col.get("type") != spec.dtype:
                raise DataError(
                    f"has type {col.get('type')!r}, expected {spec.dtype!r}; {fix}", source, spec.name
                )
            shape = list(col.get("shape") or [])
            if len(shape) != 1 or int(shape[0]) <= 0:
                raise DataError(
                    f"has shape {shape}, expected a fixed 1-D shape [{spec.length}]; {fix}", source, spec.name
                )
            n = int(shape[0])
            if spec.length in found and found[spec.length] != n:
                raise DataError(
                    f"has length {n} but other fields have {spec.length}={found[spec.length]}; {fix}",
                    source,
                    spec.name,
                )
            found[spec.length] = n
            if lengths is not None and spec.length in lengths and int(lengths[spec.length]) != n:
                raise DataError(
                    f"has length {n} but the metadata says {spec.length}={lengths[spec.length]} "
                    f"(the .meta.json belongs to another file?); {fix}",
                    source,
                    spec.name,
                )
        return found


PPO = DatasetSchema(
    kind="ppo",
    doc="PPO prompts plus the aligned answer for the pretrain (ptx) loss.",
    fields=(
        FieldSpec("prompt_ids", PROMPT_LEN, "[BOS] + prompt, left-padded with pad_token_id"),
        FieldSpec("prompt_mask", PROMPT_LEN, "1 on the real prompt tokens of prompt_ids (BOS included)"),
        FieldSpec(
            "pretrain_ids", SEQ_LEN, "[BOS] + prompt + pos_resp + [EOS], right-padded with pad_token_id"
        ),
        FieldSpec("pretrain_mask", SEQ_LEN, "attention mask of pretrain_ids: 1 on BOS..EOS"),
        FieldSpec("loss_mask", SEQ_LEN, "1 where pretrain_ids[t] is a response token or the final EOS"),
    ),
    json_fields=("prompt", "pos_resp"),
)

RM = DatasetSchema(
    kind="rm",
    doc="Reward-model comparisons: the chosen (pos_resp) and rejected (neg_resp) answer to one prompt.",
    fields=(
        FieldSpec("chosen_ids", SEQ_LEN, "[BOS] + prompt + pos_resp + [EOS], right-padded"),
        FieldSpec(
            "chosen_mask", SEQ_LEN, "attention mask of chosen_ids: 1 on BOS..EOS; the score is read at EOS"
        ),
        FieldSpec("rejected_ids", SEQ_LEN, "[BOS] + prompt + neg_resp + [EOS], right-padded"),
        FieldSpec("rejected_mask", SEQ_LEN, "attention mask of rejected_ids: 1 on BOS..EOS"),
    ),
    json_fields=("prompt", "pos_resp", "neg_resp"),
)

SFT = DatasetSchema(
    kind="sft",
    doc="Supervised fine-tuning: prompt + the response to imitate (pos_resp), loss on the response.",
    fields=(
        FieldSpec("input_ids", SEQ_LEN, "[BOS] + prompt + pos_resp + [EOS], right-padded"),
        FieldSpec("attention_mask", SEQ_LEN, "1 on BOS..EOS"),
        FieldSpec("loss_mask", SEQ_LEN, "1 where input_ids[t] is a response token or the final EOS"),
    ),
    json_fields=("prompt", "pos_resp"),
)

PROMPT = DatasetSchema(
    kind="prompt",
    doc="Prompt-only RL data (GRPO/RLOO): the prompt plus extra string columns (e.g. a reference `answer`) that "
    "reward functions receive.",
    fields=(
        FieldSpec("prompt_ids", PROMPT_LEN, "[BOS] + prompt, left-padded with pad_token_id"),
        FieldSpec("prompt_mask", PROMPT_LEN, "1 on the real prompt tokens of prompt_ids (BOS included)"),
    ),
    json_fields=("prompt",),
    takes_string_columns=True,
)

SCHEMAS: Dict[str, DatasetSchema] = {s.kind: s for s in (PPO, RM, SFT, PROMPT)}


def get_schema(kind: str) -> DatasetSchema:
    """The schema of dataset kind `kind` ("ppo", "rm", "sft" or "prompt")."""
    if kind not in SCHEMAS:
        raise DataError(f"unknown dataset kind {kind!r}; choose one of {', '.join(SCHEMAS)}", field="kind")
    return SCHEMAS[kind]
