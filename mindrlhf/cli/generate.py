"""`mindrlhf-generate` (also `python -m mindrlhf.tools.generate`): try a model on one or more prompts.

    python -m mindrlhf.tools.generate --config run.yaml --tokenizer tokenizer.model --prompt "how do i bake a cake ?"
    python -m mindrlhf.tools.generate --config run.yaml --prompt_ids 1,5,9 --max_new_tokens 32 --do_sample --seed 0

The weights are `--checkpoint`, else the checkpoint the YAML names (`load_checkpoint` or
`model_config.checkpoint_name_or_path`); with neither, the model is random (said in a warning). `--prompt` and
`--prompt_ids` may be repeated: the prompts are left-padded into one batch. Prints each response (text with a
tokenizer, ids always) and its mean log-probability.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional, Sequence

import numpy as np

from mindrlhf.cli import common
from mindrlhf.errors import MindRLHFError

logger = logging.getLogger("mindrlhf.cli.generate")

PROG = "python -m mindrlhf.tools.generate"


def _parse_ids(text: str) -> List[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated token ids like 1,5,9, got {text!r}"
        ) from None
    if not ids:
        raise argparse.ArgumentTypeError("--prompt_ids is empty")
    return ids


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="MindFormers run YAML describing the model")
    p.add_argument("--checkpoint", help="weights (.ckpt/.safetensors); default: the YAML's checkpoint")
    p.add_argument(
        "--tokenizer", help="SentencePiece tokenizer.model (or its directory); needed for --prompt"
    )
    p.add_argument("--prompt", action="append", default=[], help="prompt text (repeatable)")
    p.add_argument(
        "--prompt_ids", action="append", default=[], type=_parse_ids, help="token ids 1,5,9 (repeatable)"
    )
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--do_sample", action="store_true", help="sample (default: greedy)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--eos_token_id", type=int, default=None, help="default: the config's eos_token_id")
    p.add_argument("--no_eos", action="store_true", help="never stop early")
    return p


def _load_tokenizer(path: str, pad_token_id: int):
    """SentencePiece tokenizer.model or a Hugging Face tokenizer.json / directory (`load_tokenizer` picks)."""
    from mindrlhf.data import load_tokenizer

    return load_tokenizer(path, pad_token_id=pad_token_id)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.prompt and not args.prompt_ids:
        parser.error("give at least one --prompt (with --tokenizer) or --prompt_ids")
    if args.prompt and not args.tokenizer:
        parser.error("--prompt needs --tokenizer (or pass token ids with --prompt_ids)")
    for ok, message in (
        (args.max_new_tokens >= 1, f"--max_new_tokens must be >= 1, got {args.max_new_tokens}"),
        (args.temperature > 0, f"--temperature must be > 0, got {args.temperature}"),
        (args.top_k >= 0, f"--top_k must be >= 0 (0 = no top-k), got {args.top_k}"),
        (0.0 < args.top_p <= 1.0, f"--top_p must be in (0, 1], got {args.top_p}"),
    ):
        if not ok:
            parser.error(message)
    return common.run_tool(PROG, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from mindrlhf.configs.run_config import load_run_config

    # everything a user can get wrong, checked before MindSpore is loaded
    run = load_run_config(args.config)
    config = run.model_config
    tokenizer = _load_tokenizer(args.tokenizer, config.pad_token_id) if args.tokenizer else None
    if tokenizer is not None and tokenizer.vocab_size != config.vocab_size:
        logger.warning(
            "the tokenizer has %d pieces but the model's vocabulary is %d: are they a pair?",
            tokenizer.vocab_size,
            config.vocab_size,
        )
    prompts = [list(ids) for ids in args.prompt_ids]
    if args.prompt:
        prompts += tokenizer.encode_batch(args.prompt, add_bos=True)
    bad = [i for p in prompts for i in p if not 0 <= i < config.vocab_size]
    if bad:
        raise MindRLHFError(
            f"token ids {bad[:5]} are outside the model's vocabulary [0, {config.vocab_size})"
        )
    if args.eos_token_id is not None and not 0 <= args.eos_token_id < config.vocab_size:
        raise MindRLHFError(
            f"--eos_token_id {args.eos_token_id} is outside the model's vocabulary [0, {config.vocab_size})"
        )
    model = _build_model(config, args.checkpoint or run.checkpoint_path)
    out = _generate(model, config, prompts, args)
    for b, prompt in enumerate(prompts):
        response = out.response_ids[b][out.response_mask[b] > 0]
        mean_lp = float(out.logprobs[b][out.response_mask[b] > 0].mean()) if response.size else float("nan")
        print(f"[{b}] prompt ids:   {prompt}")
        print(f"[{b}] response ids: {response.tolist()}  (mean logprob {mean_lp:.3f})")
        if tokenizer is not None:
            print(f"[{b}] response:     {_detokenize(tokenizer, response.tolist())!r}")
    return 0


def _detokenize(tokenizer, ids: List[int]) -> str:
    """Text of `ids`; ids the tokenizer does not have (a model vocabulary larger than the tokenizer's) show as <id>."""
    text, run = [], []
    for i in ids + [None]:
        if i is not None and i < tokenizer.vocab_size:
            run.append(i)
            continue
        if run:
            text.append(tokenizer.decode(run))
            run = []
        if i is not None:
            text.append(f"<{i}>")
    return "".join(text)


def _build_model(config, checkpoint: Optional[str]):
    from mindrlhf.models.llama import LlamaForCausalLM
    from mindrlhf.utils.checkpoint import load_checkpoint

    model = LlamaForCausalLM(config)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    else:
        logger.warning("no checkpoint given or named in the YAML: the model has random weights")
    return model


def _generate(model, config, prompts: List[List[int]], args):
    from mindrlhf.generation import generate

    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), config.pad_token_id, np.int32)
    mask = np.zeros((len(prompts), width), np.int32)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :], mask[b, width - len(p) :] = p, 1
    eos = None if args.no_eos else (config.eos_token_id if args.eos_token_id is None else args.eos_token_id)
    return generate(
        model,
        ids,
        mask,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        eos_token_id=eos,
        pad_token_id=config.pad_token_id,
        seed=args.seed,
    )


if __name__ == "__main__":
    sys.exit(main())
