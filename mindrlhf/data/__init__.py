"""mindrlhf.data: tokenizers (SentencePiece, Hugging Face tokenizer.json), CValues JSONL -> MindRecord, dataset
schemas and readers, the demo corpus.

Importing this package does not import MindSpore; the writer and reader import it when they run. Names are
imported lazily (as in `mindrlhf/__init__.py`) so that `python -m mindrlhf.data.tokenizer` runs its module once,
without runpy's "found in sys.modules" RuntimeWarning.
"""

import importlib

_EXPORTS = {
    "ConversionSummary": "mindrlhf.data.convert",
    "convert_jsonl": "mindrlhf.data.convert",
    "layout_rows": "mindrlhf.data.layout",
    "HFTokenizer": "mindrlhf.data.hf_tokenizer",
    "load_tokenizer": "mindrlhf.data.hf_tokenizer",
    "MindRecordBatches": "mindrlhf.data.reader",
    "load_meta": "mindrlhf.data.reader",
    "read_dataset": "mindrlhf.data.reader",
    "verify_files": "mindrlhf.data.reader",
    "PPO": "mindrlhf.data.schemas",
    "RM": "mindrlhf.data.schemas",
    "SCHEMAS": "mindrlhf.data.schemas",
    "SFT": "mindrlhf.data.schemas",
    "DataError": "mindrlhf.data.schemas",
    "DatasetSchema": "mindrlhf.data.schemas",
    "FieldSpec": "mindrlhf.data.schemas",
    "get_schema": "mindrlhf.data.schemas",
    "LlamaTokenizer": "mindrlhf.data.tokenizer",
    "TokenizerBase": "mindrlhf.data.tokenizer",
    "pad_sequences": "mindrlhf.data.tokenizer",
    "train_sentencepiece": "mindrlhf.data.tokenizer",
    "AtomicMindRecordWriter": "mindrlhf.data.writer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mindrlhf.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
