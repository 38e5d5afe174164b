"""`mindrlhf-convert-hf` (also `python -m mindrlhf.tools.convert_hf`): Hugging Face Llama-2/3.x or Qwen2/2.5 <->
MindSpore checkpoint.

    mindrlhf-convert-hf --hf-dir DIR --output OUT.ckpt --yaml-out OUT.yaml [--dtype float32]
    mindrlhf-convert-hf --reverse --ckpt IN.ckpt --yaml IN.yaml --hf-out DIR

The mapping (a pure renaming to MindFormers' names) is in mindrlhf/tools/convert_hf.py. Exit 2 with one message
when the input cannot be converted.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mindrlhf.cli import common
from mindrlhf.tools.convert_hf import convert_hf_dir, ms_to_hf

PROG = "python -m mindrlhf.tools.convert_hf"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hf-dir", help="Hugging Face Llama or Qwen2 directory (config.json + safetensors)")
    parser.add_argument("--output", help="output MindSpore checkpoint (.ckpt or .safetensors)")
    parser.add_argument("--yaml-out", help="also write a MindFormers run YAML pointing at the checkpoint")
    parser.add_argument("--dtype", default="float32", choices=["float16", "float32"], help="checkpoint dtype")
    parser.add_argument(
        "--reverse", action="store_true", help="MindSpore checkpoint -> Hugging Face directory"
    )
    parser.add_argument("--ckpt", help="(--reverse) input checkpoint")
    parser.add_argument("--yaml", help="(--reverse) run YAML describing the checkpoint")
    parser.add_argument("--hf-out", help="(--reverse) output Hugging Face directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return common.run_tool(PROG, lambda: _run(parser, args))


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.reverse:
        if not (args.ckpt and args.yaml and args.hf_out):
            parser.error("--reverse needs --ckpt, --yaml and --hf-out")
        ms_to_hf(args.ckpt, args.yaml, args.hf_out)
        print(f"wrote {args.hf_out}")
        return 0
    if not (args.hf_dir and args.output):
        parser.error("needs --hf-dir and --output (or --reverse --ckpt --yaml --hf-out)")
    config = convert_hf_dir(args.hf_dir, args.output, args.yaml_out, args.dtype)
    print(f"wrote {args.output} ({config.num_layers} layers, hidden {config.hidden_size})")
    if args.yaml_out:
        print(f"wrote {args.yaml_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
