"""The CPU alignment demo's corpus and judge (examples/rlhf_demo). Not part of the library: nothing in mindrlhf
outside this package imports it (tests/test_structure.py checks), it only uses the library.

    grammar.py  objects, verbs, templates, answer styles, refusal sentences
    judge.py    is_refusal / is_helpful / classify: judge a response by its content
    corpus.py   build_demo_corpus / write_demo_corpus and the CLI: `python -m mindrlhf.demo --output_dir DIR`
"""

from mindrlhf.demo.corpus import (
    build_demo_corpus,
    main,
    split_pairs,
    tokenizer_corpus,
    write_demo_corpus,
)
from mindrlhf.demo.grammar import (
    ANSWER_STYLES,
    DEMO_VOCAB_SIZE,
    OBJECTS,
    PREFIXES,
    TEMPLATES,
    VERB_BY_NAME,
    VERBS,
    PromptMeta,
    all_pairs,
)
from mindrlhf.demo.judge import answers, classify, is_helpful, is_refusal, normalize, parse_prompt, refusals

__all__ = [
    "ANSWER_STYLES",
    "DEMO_VOCAB_SIZE",
    "OBJECTS",
    "PREFIXES",
    "TEMPLATES",
    "VERBS",
    "VERB_BY_NAME",
    "PromptMeta",
    "all_pairs",
    "answers",
    "build_demo_corpus",
    "classify",
    "is_helpful",
    "is_refusal",
    "main",
    "normalize",
    "parse_prompt",
    "refusals",
    "split_pairs",
    "tokenizer_corpus",
    "write_demo_corpus",
]
