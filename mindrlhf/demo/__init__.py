"""The CPU alignment demo's corpus and judge (examples/rlhf_demo). Not part of the library: nothing in mindrlhf
outside this package imports it (tests/test_structure.py checks), it only uses the library.

    grammar.py  nouns, owners, verbs (harm: an access verb on an object of someone else), templates,
                answer styles, refusal sentences
    judge.py    is_refusal / is_helpful / classify: judge a response by its content
    corpus.py   build_demo_corpus / write_demo_corpus and the CLI: `python -m mindrlhf.demo --output_dir DIR`
"""

from mindrlhf.demo.corpus import (
    NEGATIVE_KINDS,
    build_demo_corpus,
    heldout_objects,
    main,
    negative_kind,
    split_pairs,
    tokenizer_corpus,
    write_demo_corpus,
)
from mindrlhf.demo.grammar import (
    ANSWER_STYLES,
    DEMO_VOCAB_SIZE,
    OBJECTS,
    OWNERS,
    PREFIXES,
    TEMPLATES,
    VERB_BY_NAME,
    VERBS,
    PromptMeta,
    all_pairs,
    is_harmful,
    noun_of,
    owner_of,
)
from mindrlhf.demo.judge import answers, classify, is_helpful, is_refusal, normalize, parse_prompt, refusals

__all__ = [
    "ANSWER_STYLES",
    "NEGATIVE_KINDS",
    "DEMO_VOCAB_SIZE",
    "OBJECTS",
    "OWNERS",
    "PREFIXES",
    "TEMPLATES",
    "VERBS",
    "VERB_BY_NAME",
    "PromptMeta",
    "all_pairs",
    "answers",
    "build_demo_corpus",
    "classify",
    "heldout_objects",
    "is_harmful",
    "is_helpful",
    "is_refusal",
    "main",
    "negative_kind",
    "noun_of",
    "owner_of",
    "normalize",
    "parse_prompt",
    "refusals",
    "split_pairs",
    "tokenizer_corpus",
    "write_demo_corpus",
]
