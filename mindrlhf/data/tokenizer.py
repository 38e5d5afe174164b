"""Llama tokenizer over SentencePiece, and training a small SentencePiece model for demos and tests.

Hugging Face `tokenizer.json` tokenizers (Llama-3, Qwen2) are in `mindrlhf.data.hf_tokenizer`, which also has
`load_tokenizer`, the one loader that picks the class for a path. Both classes share `TokenizerBase`.

Ids follow Llama: unk=0, bos=1, eos=2. The SentencePiece model has no pad piece; the pad id is given
separately (`pad_token_id`, 0 in the Llama2 configs, i.e. the unk id). Nothing here derives a mask from
`ids == pad_id`: padding helpers return the attention mask with the ids.

CLI (`mindrlhf.cli.tokenizer`, also `mindrlhf-tokenizer`)::

    python -m mindrlhf.data.tokenizer train --input corpus.txt --model_prefix out/tokenizer --vocab_size 1000
    python -m mindrlhf.data.tokenizer encode --model out/tokenizer.model "how do i bake a cake ?"
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import sys
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from mindrlhf.data.schemas import DataError
from mindrlhf.utils.io import atomic_write

logger = logging.getLogger(__name__)

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
TOKENIZER_FILE = "tokenizer.model"
HF_TOKENIZER_FILE = "tokenizer.json"

PathLike = Union[str, "os.PathLike[str]"]


def _sentencepiece():
    try:
        import sentencepiece as spm
    except ImportError:  # pragma: no cover - an install problem, not a code path
        raise ImportError("sentencepiece is not installed: pip install sentencepiece") from None
    return spm


def resolve_tokenizer_path(name_or_path: PathLike) -> str:
    """A `tokenizer.model` file, or a directory holding one; anything else is a DataError saying what to give."""
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        candidate = os.path.join(path, TOKENIZER_FILE)
        if not os.path.isfile(candidate):
            hf = os.path.isfile(os.path.join(path, HF_TOKENIZER_FILE))
            raise DataError(
                f"directory has no {TOKENIZER_FILE}"
                + (
                    f"; its {HF_TOKENIZER_FILE} is a Hugging Face tokenizer: load it with "
                    "mindrlhf.data.load_tokenizer"
                    if hf
                    else f" (SentencePiece) or {HF_TOKENIZER_FILE} (Hugging Face); give a directory holding "
                    "one, or the file itself"
                ),
                path,
            )
        return candidate
    if os.path.isfile(path):
        return path
    raise DataError(
        "no such file or directory. Give a SentencePiece tokenizer.model (e.g. Llama2's, or one trained with "
        "`python -m mindrlhf.data.tokenizer train`) or a Hugging Face tokenizer directory (tokenizer.json, "
        "tokenizer_config.json); tokenizer names cannot be downloaded here",
        path,
    )


class TokenizerBase:
    """What every mindrlhf tokenizer offers on top of `encode_batch` / `decode` (see LlamaTokenizer, HFTokenizer).

    Attributes the subclasses set: `vocab_size`, `bos_id` (None when the model has no BOS), `eos_id`, `pad_id`,
    `unk_id` (None when there is none, as in byte-level BPE), `add_bos` (whether sequences start with BOS),
    `model_file`, `sha256`, `chat_template` (Jinja source or None).
    """

    kind = "?"
    add_bos = True
    chat_template: Optional[str] = None

    def _head(self, add_bos: bool) -> List[int]:
        """`[BOS]` when asked for and the tokenizer's convention has one (`self.add_bos`), else `[]`."""
        return [self.bos_id] if add_bos and self.add_bos and self.bos_id is not None else []

    def decode_batch(
        self, ids: np.ndarray, mask: Optional[np.ndarray] = None, stop_at_eos: bool = True
    ) -> List[str]:
        """Decode `ids [B, T]`, keeping positions where `mask [B, T]` is 1 and cutting at the first EOS."""
        ids = np.asarray(ids)
        texts = []
        for b in range(ids.shape[0]):
            row = ids[b] if mask is None else ids[b][np.asarray(mask[b]) == 1]
            row = [int(i) for i in row]
            if stop_at_eos and self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            texts.append(self.decode(row))
        return texts

    def batch_encode_prompts(
        self, texts: Sequence[str], max_length: int, add_bos: bool = True, truncate: bool = False
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Encode prompts for generation: `([BOS] + tokens)` left-padded to `max_length` (no BOS when the
        tokenizer has none, e.g. Qwen2).

        Returns `input_ids [B, max_length]` and `attention_mask [B, max_length]`, both int32. A prompt longer
        than `max_length` raises ValueError naming its index, unless `truncate` keeps its last tokens
        (the BOS is kept in front).
        """
        seqs = self.encode_batch(texts, add_bos=add_bos)
        nb = len(self._head(add_bos))
        for i, seq in enumerate(seqs):
            if len(seq) > max_length:
                if not truncate:
                    raise ValueError(
                        f"prompt {i} has {len(seq)} tokens (BOS included), more than max_length={max_length}; "
                        "raise max_length or pass truncate=True"
                    )
                seqs[i] = seq[:nb] + seq[len(seq) - max_length + nb :]
        return pad_sequences(seqs, max_length, self.pad_id, side="left")

    def encode_chat_prompts(self, prompts: Sequence[str]) -> List[List[int]]:
        """Token ids of each prompt inside the chat template, without the leading BOS (the layout adds it)."""
        raise DataError(
            f"a {self.kind} tokenizer has no chat template; give the model's Hugging Face tokenizer directory "
            "(tokenizer.json + tokenizer_config.json with a chat_template), or the tokenizer.json file "
            "itself, or drop --chat_template",
            self.model_file,
            "chat_template",
        )

    def describe(self) -> dict:
        """What the dataset metadata records about this tokenizer (`.meta.json` "tokenizer")."""
        return {
            "kind": self.kind,
            "path": os.path.abspath(self.model_file),
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "unk_id": self.unk_id,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "add_bos": self.add_bos,
        }


class LlamaTokenizer(TokenizerBase):
    """SentencePiece tokenizer with Llama's special ids (unk=0, bos=1, eos=2) and a separate pad id."""

    kind = "sentencepiece"

    def __init__(self, model_file: PathLike, pad_token_id: int = 0, num_threads: int = 2):
        spm = _sentencepiece()
        self.model_file = resolve_tokenizer_path(model_file)
        with open(self.model_file, "rb") as f:
            blob = f.read()
        self.sha256 = hashlib.sha256(blob).hexdigest()
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(blob)
        except Exception as exc:  # sentencepiece raises a bare RuntimeError/OSError on a bad proto
            raise DataError(f"not a SentencePiece model ({exc})", self.model_file) from None
        self.vocab_size = int(self.sp.get_piece_size())
        self.unk_id, self.bos_id, self.eos_id = (
            int(self.sp.unk_id()),
            int(self.sp.bos_id()),
            int(self.sp.eos_id()),
        )
        if self.bos_id < 0 or self.eos_id < 0:
            raise DataError(
                f"model has no BOS/EOS pieces (bos={self.bos_id}, eos={self.eos_id}); Llama needs both",
                self.model_file,
            )
        if not 0 <= int(pad_token_id) < self.vocab_size:
            raise DataError(
                f"pad_token_id {pad_token_id} is outside the vocabulary [0, {self.vocab_size})",
                field="pad_token_id",
            )
        self.pad_id = int(pad_token_id)
        self.num_threads = int(num_threads)

    @classmethod
    def from_pretrained(cls, name_or_path: PathLike, pad_token_id: int = 0) -> LlamaTokenizer:
        """Load from a `tokenizer.model` file or a directory containing one."""
        return cls(name_or_path, pad_token_id=pad_token_id)

    def __repr__(self) -> str:
        return (
            f"LlamaTokenizer({self.model_file!r}, vocab_size={self.vocab_size}, unk={self.unk_id}, "
            f"bos={self.bos_id}, eos={self.eos_id}, pad={self.pad_id})"
        )

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> List[int]:
        """Token ids of `text` (SentencePiece adds its dummy-prefix space), optionally with BOS/EOS."""
        ids = self.sp.encode(text, out_type=int)
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def encode_batch(
        self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False
    ) -> List[List[int]]:
        """`encode` over a list, in SentencePiece's C++ threads (much faster than a Python loop)."""
        if not texts:
            return []
        out = self.sp.encode(list(texts), out_type=int, num_threads=self.num_threads)
        if add_bos or add_eos:
            head = [self.bos_id] if add_bos else []
            tail = [self.eos_id] if add_eos else []
            out = [head + ids + tail for ids in out]
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; BOS/EOS (control pieces) are dropped. Pad/unk ids are not: pass only the real tokens,
        e.g. `ids[mask == 1]`, or use `decode_batch` with the mask."""
        return self.sp.decode([int(i) for i in ids])


def pad_sequences(seqs: Sequence[Sequence[int]], length: int, pad_id: int, side: str = "right"):
    """Pad token lists to `length`; returns `ids [B, length]` and `mask [B, length]` (1 = real token), int32."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    ids = np.full((len(seqs), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(seqs), length), dtype=np.int32)
    for i, seq in enumerate(seqs):
        n = len(seq)
        if n > length:
            raise ValueError(f"sequence {i} has {n} tokens, more than length={length}")
        if n == 0:
            continue
        sl = slice(length - n, length) if side == "left" else slice(0, n)
        ids[i, sl] = seq
        mask[i, sl] = 1
    return ids, mask


def train_sentencepiece(
    model_prefix: PathLike,
    vocab_size: int = 1000,
    input_files: Optional[Sequence[PathLike]] = None,
    sentences: Optional[Iterable[str]] = None,
    model_type: str = "bpe",
    byte_fallback: bool = True,
    character_coverage: float = 1.0,
    user_defined_symbols: Sequence[str] = (),
    write_vocab: bool = True,
) -> str:
    """Train a Llama-style SentencePiece model from text files or an iterable of lines; return `<prefix>.model`.

    Options mirror Llama2's tokenizer (BPE, byte fallback, split digits, identity normalisation, dummy prefix)
    with unk=0, bos=1, eos=2 and no pad piece. Training is deterministic: one thread, no sampling, and the
    model is serialised in memory so the file's bytes do not depend on paths. `vocab_size` is an upper
    bound: a small corpus gives fewer pieces (`hard_vocab_limit=False`); with byte fallback 256 byte pieces
    are part of it. Takes well under a second on the demo corpus.
    """
    spm = _sentencepiece()
    if (input_files is None) == (sentences is None):
        raise ValueError("give exactly one of input_files or sentences")
    if input_files is not None:
        if isinstance(input_files, (str, os.PathLike)):
            input_files = [input_files]
        for path in input_files:
            if not os.path.isfile(path):
                raise DataError("text file not found", os.fspath(path))

        def _lines():
            for path in input_files:
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        line = line.rstrip("\n")
                        if line.strip():
                            yield line

        sentences = _lines()
    out = io.BytesIO()
    try:
        _train(
            spm,
            sentences,
            out,
            vocab_size,
            model_type,
            byte_fallback,
            character_coverage,
            user_defined_symbols,
        )
    except RuntimeError as exc:  # SentencePiece reports a user's vocab_size as an INTERNAL RuntimeError
        raise _vocab_size_error(str(exc), vocab_size, input_files) from None
    blob = out.getvalue()
    model_path = os.fspath(model_prefix) + ".model"
    with atomic_write(model_path, binary=True) as f:
        f.write(blob)
    if write_vocab:
        sp = spm.SentencePieceProcessor()
        sp.LoadFromSerializedProto(blob)
        text = "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i)}\n" for i in range(sp.get_piece_size()))
        with atomic_write(os.fspath(model_prefix) + ".vocab") as f:
            f.write(text)
    logger.info("trained SentencePiece model %s (%d pieces requested)", model_path, vocab_size)
    return model_path


def _train(
    spm, sentences, out, vocab_size, model_type, byte_fallback, character_coverage, user_defined_symbols
):
    """Llama2's SentencePiece options (see `train_sentencepiece`); the model proto is written to `out`."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=out,
        vocab_size=int(vocab_size),
        model_type=model_type,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_id=-1,
        byte_fallback=byte_fallback,
        character_coverage=character_coverage,
        split_digits=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        user_defined_symbols=list(user_defined_symbols),
        hard_vocab_limit=False,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=1,  # more threads change the learned merges: keep training reproducible
        minloglevel=2,
    )


_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")
_TOO_LARGE = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


def _vocab_size_error(message: str, vocab_size: int, input_files) -> DataError:
    """SentencePiece's vocabulary-size failures as one DataError naming the size and the bound this text allows."""
    where = ", ".join(os.fspath(p) for p in input_files) if input_files else None
    small, large = _TOO_SMALL.search(message), _TOO_LARGE.search(message)
    if small:
        need = int(small.group(2))
        text = (
            f"vocab_size {vocab_size} is too small for this text: SentencePiece needs at least {need} pieces "
            f"(the special pieces, 256 byte pieces with byte fallback, and every distinct character); "
            f"pass --vocab_size {need} or more"
        )
    elif large:
        text = (
            f"vocab_size {vocab_size} is too large for this text: SentencePiece allows at most "
            f"{int(large.group(2))} pieces for it; pass a smaller --vocab_size or give more text"
        )
    else:
        first = message.strip().splitlines()[-1] if message.strip() else "unknown error"
        text = f"SentencePiece could not train a tokenizer with vocab_size {vocab_size}: {first}"
    return DataError(text, where, "vocab_size")


if __name__ == "__main__":  # `python -m mindrlhf.data.tokenizer`: the command is mindrlhf.cli.tokenizer
    from mindrlhf.cli.tokenizer import main

    sys.exit(main())
