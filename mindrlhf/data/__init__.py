"""mindrlhf.data: tokenizer, CValues JSONL -> MindRecord, dataset schemas and readers, the demo corpus.

Importing this package does not import MindSpore; the writer and reader import it when they run.
"""

from mindrlhf.data.convert import ConversionSummary, convert_jsonl, layout_rows
from mindrlhf.data.reader import MindRecordBatches, load_meta, read_dataset, verify_files
from mindrlhf.data.schemas import PPO, RM, SCHEMAS, SFT, DataError, DatasetSchema, FieldSpec, get_schema
from mindrlhf.data.tokenizer import LlamaTokenizer, pad_sequences, train_sentencepiece
from mindrlhf.data.writer import AtomicMindRecordWriter

__all__ = [
    "PPO",
    "RM",
    "SCHEMAS",
    "SFT",
    "AtomicMindRecordWriter",
    "ConversionSummary",
    "DataError",
    "DatasetSchema",
    "FieldSpec",
    "LlamaTokenizer",
    "MindRecordBatches",
    "convert_jsonl",
    "get_schema",
    "layout_rows",
    "load_meta",
    "pad_sequences",
    "read_dataset",
    "train_sentencepiece",
    "verify_files",
]
