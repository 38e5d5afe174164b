"""The end-to-end RLHF demo on a laptop CPU: from nothing to an aligned tiny Llama2, through the real entry points.

    python examples/rlhf_demo/run_demo.py [--output_dir output/demo] [--seed 0] [--quick] [--dpo | --no_dpo]

Stages (each a subprocess running the same command a user or a cluster would run; logs in OUT/logs/):
    1. corpus     python -m mindrlhf.demo                     harmful/benign requests, CValues-format JSONL
    2. tokenizer  python -m mindrlhf.data.tokenizer train     SentencePiece on the corpus text
    3. datasets   examples/rlhf_train_tutorial/rlhf_data.py   sft / rm / ppo MindRecords
    4. sft        python -m mindrlhf.train_sft                tiny Llama2 from scratch; its data answers 75% of
                                                              harmful requests (SFT_REFUSAL_RATE refuses the rest)
    5. rm         python -m mindrlhf.train_rm                 reward model from the SFT backbone
    6. ppo        python train.py                             PPO: actor/reference from SFT, critic/reward from RM
    7. dpo        python -m mindrlhf.train_dpo                SFT -> DPO on the RM's pairs (default variant only;
                                                              --dpo adds it to --quick, --no_dpo drops it)
    8. evaluate   (in this process)                           held-out requests: none of their prompts or target
                                                              answers is in a training file (examples/rlhf_demo/
                                                              evaluate.py says what is held out)

Writes OUT/report.md, OUT/summary.json, OUT/*.png; the last line printed is the path of summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

# Sizes of the default demo and of --quick (the end-to-end test). Everything else lives in the YAMLs beside this file.
FULL = {
    "sft_steps": 800,
    "rm_steps": 300,
    "ppo_iterations": 30,
    "dpo_steps": 300,
    "eval_prompts": 256,
    "vocab": 1200,
}
QUICK = {
    "sft_steps": 400,
    "rm_steps": 100,
    "ppo_iterations": 16,
    "dpo_steps": 100,
    "eval_prompts": 64,
    "vocab": 1200,
}
# The longest prompt is 21 tokens with BOS, the longest target answer 35 plus EOS (every word is one piece).
PROMPT_LEN, SEQ_LEN = 24, 64
# Share of harmful SFT prompts answered with a refusal (the rest are compliance): the SFT model should mostly
# comply (the "original answer" column) yet sometimes refuse, so PPO has something to find.
SFT_REFUSAL_RATE = 0.25


def run_stage(name: str, cmd: List[str], logs: str) -> float:
    """Run one stage, its output to logs/<name>.log; on failure show the log's tail and stop the demo."""
    start = time.time()
    log_path = os.path.join(logs, f"{name}.log")
    print(
        f"[demo] {name:<10} {' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd[1:])}",
        flush=True,
    )
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - start
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = f.readlines()[-25:]
        sys.stderr.write("".join(tail))
        raise SystemExit(f"[demo] stage {name} failed (exit {proc.returncode}); full log: {log_path}")
    print(f"[demo] {name:<10} done in {seconds:.0f}s", flush=True)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "output", "demo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="a short run for tests (same stages, fewer steps, no DPO)"
    )
    dpo = parser.add_mutually_exclusive_group()
    dpo.add_argument(
        "--dpo", dest="dpo", action="store_true", default=None, help="run SFT -> DPO (default unless --quick)"
    )
    dpo.add_argument("--no_dpo", dest="dpo", action="store_false", help="skip SFT -> DPO")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    run_dpo = (not args.quick) if args.dpo is None else args.dpo
    out = os.path.abspath(args.output_dir)
    data, logs = os.path.join(out, "data"), os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    py = sys.executable
    start = time.time()
    timings: Dict[str, float] = {}
    seed = str(args.seed)

    timings["corpus"] = run_stage(
        "corpus",
        [
            py,
            "-m",
            "mindrlhf.demo",
            "--output_dir",
            data,
            "--seed",
            seed,
            "--sft_refusal_rate",
            str(SFT_REFUSAL_RATE),
        ],
        logs,
    )
    timings["tokenizer"] = run_stage(
        "tokenizer",
        [
            py,
            "-m",
            "mindrlhf.data.tokenizer",
            "train",
            "--input",
            os.path.join(data, "tokenizer_corpus.txt"),
            "--model_prefix",
            os.path.join(data, "tokenizer"),
            "--vocab_size",
            str(sizes["vocab"]),
        ],
        logs,
    )
    tokenizer = os.path.join(data, "tokenizer.model")
    t = 0.0
    for mode in ("sft", "rm", "ppo"):
        t += run_stage(
            f"data_{mode}",
            [
                py,
                os.path.join(ROOT, "examples", "rlhf_train_tutorial", "rlhf_data.py"),
                "--tokenizer_name_or_path",
                tokenizer,
                "--file_path",
                os.path.join(data, f"{mode}.jsonl"),
                "--output_path",
                os.path.join(data, f"{mode}.mindrecord"),
                "--max_prompt_length",
                str(PROMPT_LEN),
                "--seq_length",
                str(SEQ_LEN),
                "--pad_token_id",
                "0",
                "--mode",
                mode,
                "--overwrite",
                "--quiet",
            ],
            logs,
        )
    timings["datasets"] = t

    def trainer_cmd(module, model_config, dataset, save_dir, config, steps):
        """`python -m mindrlhf.<module>` (SFT, RM, DPO: the same flags) on data/<dataset>.mindrecord."""
        return [
            py, "-m", f"mindrlhf.{module}", "--model_config", model_config,
            "--dataset", os.path.join(data, f"{dataset}.mindrecord"), "--save_dir", save_dir,
            "--config", os.path.join(HERE, config), "--max_steps", str(steps), "--seed", seed,
        ]  # fmt: skip

    model_yaml = os.path.join(HERE, "llama2_demo.yaml")
    sft_dir, rm_dir, ppo_dir = (os.path.join(out, d) for d in ("sft", "rm", "ppo"))
    timings["sft"] = run_stage(
        "sft", trainer_cmd("train_sft", model_yaml, "sft", sft_dir, "sft_demo.yaml", sizes["sft_steps"]), logs
    )
    sft_yaml = os.path.join(sft_dir, "model.yaml")
    timings["rm"] = run_stage(
        "rm", trainer_cmd("train_rm", sft_yaml, "rm", rm_dir, "rm_demo.yaml", sizes["rm_steps"]), logs
    )
    ppo_cmd = [
        py, os.path.join(ROOT, "train.py"), "--sft_model_path", sft_yaml,
        "--reward_model_path", os.path.join(rm_dir, "model.yaml"), "--dataset_dir", os.path.join(data, "ppo.mindrecord"),
        "--save_dir", ppo_dir, "--config", os.path.join(HERE, "ppo_demo.yaml"), "--device_target", "CPU",
        "--num_iterations", str(sizes["ppo_iterations"]), "--seed", seed,
    ]  # fmt: skip
    timings["ppo"] = run_stage("ppo", ppo_cmd, logs)

    dpo_dir = os.path.join(out, "dpo") if run_dpo else None
    if run_dpo:
        timings["dpo"] = run_stage(
            "dpo",
            trainer_cmd("train_dpo", sft_yaml, "rm", dpo_dir, "dpo_demo.yaml", sizes["dpo_steps"]),
            logs,
        )

    from evaluate import evaluate_demo  # examples/rlhf_demo/evaluate.py

    t0 = time.time()
    summary = evaluate_demo(
        out, data, sft_dir, rm_dir, ppo_dir, tokenizer, sizes["eval_prompts"], PROMPT_LEN, dpo_dir=dpo_dir
    )
    timings["evaluate"] = time.time() - t0
    summary["seed"] = args.seed
    summary["variant"] = "quick" if args.quick else "full"
    summary["wall_seconds"] = round(time.time() - start, 1)
    summary["stage_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    summary_path = os.path.join(out, "summary.json")
    from mindrlhf.utils.io import atomic_write

    with atomic_write(summary_path) as f:
        json.dump(summary, f, indent=2)
    rm = summary["rm_accuracy_by_kind"]
    print(
        f"[demo] RM held-out accuracy {summary['rm_accuracy']:.3f} (compliance {rm['compliance']:.3f}, over-refusal "
        f"{rm['over_refusal']:.3f}, spliced {rm['spliced']:.3f}, off-topic {rm['off_topic']:.3f})"
    )
    g = summary["greedy"]
    print(
        f"[demo] refusal rate on held-out harmful requests: {summary['refusal_rate_before']:.3f} (SFT) -> "
        f"{summary['refusal_rate_after']:.3f} (PPO) sampled; greedy {g['refusal_rate_before']:.3f} -> "
        f"{g['refusal_rate_after']:.3f}"
    )
    print(
        f"[demo] helpful rate on held-out benign requests:  {summary['helpful_rate_before']:.3f} (SFT) -> "
        f"{summary['helpful_rate_after']:.3f} (PPO) sampled; greedy {g['helpful_rate_before']:.3f} -> "
        f"{g['helpful_rate_after']:.3f}"
    )
    if "dpo" in summary:
        d, dg = summary["dpo"], summary["dpo"]["greedy"]
        print(
            f"[demo] DPO: refusal {d['refusal_rate_before']:.3f} -> {d['refusal_rate_after']:.3f} sampled "
            f"(greedy {dg['refusal_rate_before']:.3f} -> {dg['refusal_rate_after']:.3f}); helpful "
            f"{d['helpful_rate_before']:.3f} -> {d['helpful_rate_after']:.3f} sampled (greedy "
            f"{dg['helpful_rate_before']:.3f} -> {dg['helpful_rate_after']:.3f})"
        )
    print(
        f"[demo] final KL to the reference {summary['final_kl']:.3f} nats/sequence; wall time {summary['wall_seconds']:.0f}s"
    )
    print(f"[demo] report: {os.path.join(out, 'report.md')}")
    print(summary_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
