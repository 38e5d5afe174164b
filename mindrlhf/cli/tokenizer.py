"""`mindrlhf-tokenizer` (also `python -m mindrlhf.data.tokenizer`): train a SentencePiece model, or encode text.

    mindrlhf-tokenizer train --input corpus.txt --model_prefix out/tokenizer --vocab_size 1000
    mindrlhf-tokenizer encode --model out/tokenizer.model "how do i bake a cake ?"

Ids follow Llama (unk=0, bos=1, eos=2); see mindrlhf/data/tokenizer.py. Exit 2 with one message on a bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from mindrlhf.cli import common
from mindrlhf.data.tokenizer import LlamaTokenizer, train_sentencepiece

PROG = "python -m mindrlhf.data.tokenizer"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a SentencePiece model from text files (one sentence per line)")
    tr.add_argument("--input", nargs="+", required=True, help="UTF-8 text file(s), one sentence per line")
    tr.add_argument("--model_prefix", required=True, help="writes <prefix>.model and <prefix>.vocab")
    tr.add_argument("--vocab_size", type=int, default=1000)
    tr.add_argument("--model_type", default="bpe", choices=["bpe", "unigram"])
    tr.add_argument("--no_byte_fallback", action="store_true", help="unknown characters become unk (id 0)")
    enc = sub.add_parser("encode", help="print the ids and pieces of some text")
    enc.add_argument(
        "--model", required=True, help="tokenizer.model, tokenizer.json, or a directory holding one"
    )
    enc.add_argument("text", nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return common.run_tool(PROG, lambda: _train(args) if args.command == "train" else _encode(args))


def _train(args: argparse.Namespace) -> int:
    path = train_sentencepiece(
        args.model_prefix,
        vocab_size=args.vocab_size,
        input_files=args.input,
        model_type=args.model_type,
        byte_fallback=not args.no_byte_fallback,
    )
    tok = LlamaTokenizer(path)
    print(f"wrote {path}: {tok.vocab_size} pieces, unk={tok.unk_id} bos={tok.bos_id} eos={tok.eos_id}")
    return 0


def _encode(args: argparse.Namespace) -> int:
    from mindrlhf.data import load_tokenizer

    tok = load_tokenizer(args.model)  # tokenizer.model, tokenizer.json or a directory holding one
    for text in args.text:
        ids = tok.encode(text)
        print(ids)
        sp = getattr(tok, "sp", None)  # SentencePiece shows its pieces; a tokenizer.json each id's text
        print([sp.id_to_piece(i) if sp is not None else tok.decode([i]) for i in ids])
    return 0


if __name__ == "__main__":
    sys.exit(main())
