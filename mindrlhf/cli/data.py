"""Build the RLHF datasets from CValues-Comparison JSONL: PPO (default), reward-model comparisons, or SFT.

    mindrlhf-data --tokenizer_name_or_path path/to/tokenizer.model|hf_tokenizer_dir \\
        --file_path train.jsonl --output_path ppo.mindrecord --max_prompt_length 2048 --seq_length 4096 \\
        [--pad_token_id 0] [--mode ppo|rm|sft|prompt [--columns answer]] [--chat_template] \\
        [--on_error stop|skip] [--overwrite]
    (also: python examples/rlhf_train_tutorial/rlhf_data.py ..., python -m mindrlhf.cli.data ...)

Writes `<output_path>`, `<output_path>.db` and `<output_path>.meta.json`, all or nothing. The layout of every
field and the bad-input policy are in examples/rlhf_train_tutorial/README.md (and mindrlhf/data/schemas.py,
mindrlhf/data/convert.py). Exit code 0 on success, 2 on a user error (one message naming file:line and field),
130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from mindrlhf.cli import common
from mindrlhf.data.convert import ON_ERROR, convert_jsonl
from mindrlhf.data.schemas import SCHEMAS


def get_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tokenizer_name_or_path",
        required=True,
        help="SentencePiece tokenizer.model (Llama2's, or one trained with `python -m mindrlhf.data.tokenizer "
        "train`), a Hugging Face tokenizer.json (Llama-3, Qwen2; special tokens from the tokenizer_config.json "
        "beside it), or a directory holding either",
    )
    parser.add_argument("--file_path", required=True, help="CValues-format JSONL input")
    parser.add_argument(
        "--output_path", required=True, help="MindRecord file to write (plus .db and .meta.json)"
    )
    parser.add_argument(
        "--max_prompt_length",
        type=int,
        default=2048,
        help="length of prompt_ids: [BOS] + prompt, left-padded",
    )
    parser.add_argument(
        "--seq_length",
        type=int,
        default=4096,
        help="length of [BOS] + prompt + response + [EOS], right-padded",
    )
    parser.add_argument(
        "--pad_token_id",
        type=int,
        default=None,
        help="id used for padding (default: the tokenizer's pad_token from tokenizer_config.json; 0 for a "
        "SentencePiece model, as in Llama2 configs)",
    )
    parser.add_argument(
        "--mode",
        choices=sorted(SCHEMAS),
        default="ppo",
        help="ppo: prompts + pretrain (ptx) data; rm: chosen/rejected comparisons; sft: prompt + pos_resp; "
        'prompt: prompt-only JSONL ({"prompt", "answer", ...}) for GRPO, extra fields kept as strings',
    )
    parser.add_argument(
        "--columns",
        nargs="+",
        default=None,
        help="(--mode prompt) extra string fields to keep, e.g. answer (default: every string field of line 1)",
    )
    parser.add_argument(
        "--chat_template",
        action="store_true",
        help="render each prompt as the user turn of the tokenizer's chat template (tokenizer_config.json), "
        "ending with the assistant header, as an instruct model was trained; an error if it has none",
    )
    parser.add_argument(
        "--on_error",
        choices=ON_ERROR,
        default="stop",
        help="structural problems (bad UTF-8 or JSON, missing or non-string field): stop at file:line, or "
        "skip and count them",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output dataset")
    parser.add_argument("--chunk_size", type=int, default=2048, help="lines tokenised and written per batch")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # run the same cleanup as Ctrl-C


def main(argv=None) -> int:
    args = get_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return common.run_tool("mindrlhf-data", lambda: _convert(args))
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130


def _convert(args: argparse.Namespace) -> int:
    summary = convert_jsonl(
        args.file_path,
        args.output_path,
        args.tokenizer_name_or_path,
        kind=args.mode,
        max_prompt_length=args.max_prompt_length,
        seq_length=args.seq_length,
        pad_token_id=args.pad_token_id,
        on_error=args.on_error,
        overwrite=args.overwrite,
        chunk_size=args.chunk_size,
        progress=not args.quiet and sys.stderr.isatty(),
        columns=args.columns,
        chat_template=args.chat_template,
    )
    print(f"Total number of samples: {summary.rows}")  # the summary with skip counts is logged to stderr
    print(f"Transformation finished! Output file refer: {args.output_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
