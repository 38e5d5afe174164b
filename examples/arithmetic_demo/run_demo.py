"""The verifiable-reward demo: a 0.4 M-parameter Llama learns 2-digit addition by SFT, then GRPO with an exact-match
reward raises its accuracy on problems it never saw in any stage.

    python examples/arithmetic_demo/run_demo.py [--output_dir output/arithmetic_demo] [--seed 0] [--quick]
        [--estimators grpo,dr_grpo,rloo,gae] [--reward_func mindrlhf.rewards:exact_match] [--skip_rl]

Stages (logs in OUT/logs/; the RL stage is the same train.py command a user would run):
    1. task       (here)  all 10,000 problems a+b, a,b < 100; strict split: ~1,000 held-out closed under swapping
                          the operands | 2,000 RL prompts | ~7,000 SFT; leak-checked on the files the stages read
    2. tokenizer  (here)  a character-level SentencePiece model: unk/pad, bos, eos, 0-9, + - = (16 pieces)
    3. datasets   (here)  sft.mindrecord (mindrlhf.data.convert_jsonl, kind sft) and, for RL,
                          rl_prompts.mindrecord (rlhf_data.py --mode prompt: prompt_ids + the `answer` column)
    4. sft        (here)  mindrlhf's SFTTrainer from random weights, stopped once SAMPLED accuracy on a 200-problem
                          probe reaches 25 %, so the RL stage starts from a weak policy (arith_sft.py)
    5. before     (here)  held-out accuracy, sampled (T=1) and greedy, with mindrlhf.generate
    6. rl         train.py --config grpo_arith.yaml --reward_funcs mindrlhf.rewards:exact_match, once per
                          estimator (string match: the reversed sum "02" must not match the number 2, as the
                          math-equivalent mindrlhf.rewards:accuracy would count it)
    7. after      (here)  held-out accuracy of every saved checkpoint (the curve) and of the last one

Writes OUT/summary.json, OUT/report.md and OUT/arithmetic_curve.png; the last line printed is summary.json's path.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import arith_task as task  # noqa: E402

logger = logging.getLogger("arithmetic_demo")

# The RL budget of the default demo and of --quick (the test). Everything else is in the YAMLs beside this file.
FULL = {"rl_iterations": 400, "save_interval": 50}
QUICK = {"rl_iterations": 200, "save_interval": 50}
PROBE_SIZE = 200  # SFT problems whose sampled accuracy stops SFT
RESULT_FILE = "result.json"  # OUT/sft/ and OUT/rl_<estimator>/: written when that stage ends (resumable runs)
ESTIMATORS = ("grpo", "dr_grpo", "rloo", "gae")
# Per-estimator overrides on top of grpo_arith.yaml: Dr. GRPO with the loss normaliser of its paper (sum over
# tokens / (B * max_new_tokens)); PPO (gae) as usual, with a critic and whitened advantages. Same budget for all:
# 256 responses (32 prompts x 8) per iteration, one optimiser step each.
ESTIMATOR_OVERRIDES: Dict[str, List[str]] = {
    "grpo": [],
    "dr_grpo": ["--loss_agg", "seq_mean_token_sum_norm"],
    "rloo": [],
    "gae": ["--whiten_advantages", "true"],
}


def run_stage(name: str, cmd: List[str], logs: str) -> float:
    """Run one subprocess stage (this folder added to PYTHONPATH), its output to logs/<name>.log; on failure show
    the log's tail and stop."""
    start = time.time()
    log_path = os.path.join(logs, f"{name}.log")
    logger.info(
        "%s: %s", name, " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd[1:])
    )
    with open(log_path, "w", encoding="utf-8") as log:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
        )
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    seconds = time.time() - start
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            sys.stderr.write("".join(f.readlines()[-25:]))
        raise SystemExit(
            f"[arithmetic demo] stage {name} failed (exit {proc.returncode}); full log: {log_path}"
        )
    logger.info("%s done in %.0f s", name, seconds)
    return seconds


def prepare_task(data: str, seed: int) -> Dict[str, Any]:
    """Stages 1-2: the split, its JSONL files (leak-checked as written), the tokenizer."""
    from mindrlhf.data.tokenizer import LlamaTokenizer

    split = task.make_split(seed)
    files = {
        "sft": task.write_jsonl(os.path.join(data, "sft.jsonl"), split.sft, "sft"),
        "rl": task.write_jsonl(os.path.join(data, "rl_prompts.jsonl"), split.rl, "prompt"),
        "held_out": task.write_jsonl(os.path.join(data, "held_out.jsonl"), split.held_out, "prompt"),
    }
    for kind in (
        "sft",
        "rl",
    ):  # what the training stages actually read holds no held-out problem, in either order
        task.check_prompts_in_file(files[kind], split.held_out)
    tokenizer = LlamaTokenizer(task.train_tokenizer(os.path.join(data, "tokenizer.model")))
    task.check_tokenizer(tokenizer)
    return {"split": split, "files": files, "tokenizer": tokenizer}


def build_datasets(data: str, files: Dict[str, str], tokenizer, with_rl: bool, logs: str) -> Dict[str, str]:
    """Stage 3: the SFT MindRecord in-process; the RL prompt MindRecord with the data tool's prompt mode."""
    from mindrlhf.data.convert import convert_jsonl

    sft = os.path.join(data, "sft.mindrecord")
    convert_jsonl(
        files["sft"], sft, tokenizer, kind="sft", max_prompt_length=task.PROMPT_TOKENS,
        seq_length=task.PROMPT_TOKENS + task.MAX_ANSWER_TOKENS, overwrite=True,
    )  # fmt: skip
    out = {"sft": sft}
    if with_rl:
        out["rl"] = os.path.join(data, "rl_prompts.mindrecord")
        run_stage("data_rl", [
            sys.executable, os.path.join(ROOT, "examples", "rlhf_train_tutorial", "rlhf_data.py"),
            "--tokenizer_name_or_path", tokenizer.model_file, "--file_path", files["rl"], "--output_path", out["rl"],
            "--max_prompt_length", str(task.PROMPT_TOKENS), "--seq_length", str(task.PROMPT_TOKENS + 6),
            "--pad_token_id", str(tokenizer.pad_id), "--mode", "prompt", "--columns", "answer", "--overwrite", "--quiet",
        ], logs)  # fmt: skip
    return out


def run_rl(estimator: str, sft_yaml: str, prompts: str, tokenizer, out: str, seed: int, sizes: Dict[str, int],
           reward_func: str, logs: str) -> float:  # fmt: skip
    """Stage 6 for one estimator: train.py with grpo_arith.yaml, the exact-match reward and the digit tokenizer
    (this folder on PYTHONPATH, so a --reward_func module of your own placed here imports)."""
    return run_stage(f"rl_{estimator}", [
        sys.executable, os.path.join(ROOT, "train.py"), "--sft_model_path", sft_yaml, "--dataset_dir", prompts,
        "--save_dir", out, "--config", os.path.join(HERE, "grpo_arith.yaml"), "--device_target", "CPU",
        "--tokenizer", tokenizer.model_file, "--reward_funcs", reward_func,
        "--advantage_estimator", estimator, "--num_iterations", str(sizes["rl_iterations"]),
        "--save_interval", str(sizes["save_interval"]), "--seed", str(seed), *ESTIMATOR_OVERRIDES[estimator],
    ], logs)  # fmt: skip


def checkpoints(rl_dir: str) -> List[tuple]:
    """`[(iteration, actor.ckpt path)]` of a finished RL run, in order."""
    found = []
    for path in glob.glob(os.path.join(rl_dir, "checkpoints", "step_*", "actor.ckpt")):
        match = re.search(r"step_0*(\d+)", path)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        raise SystemExit(
            f"[arithmetic demo] {rl_dir}/checkpoints has no step_*/actor.ckpt: did the RL stage save?"
        )
    return sorted(found)


def evaluate_rl(evaluator, model, rl_dir: str, held_out, seed: int) -> Dict[str, Any]:
    """Stage 7: held-out sampled accuracy of every checkpoint (the curve) and sampled + greedy of the last."""
    from mindrlhf.utils.checkpoint import load_checkpoint

    curve = []
    ckpts = checkpoints(rl_dir)
    for iteration, path in ckpts:
        load_checkpoint(model, path)
        curve.append(
            {"iteration": iteration, "sampled": evaluator.accuracy(held_out, True, seed)["accuracy"]}
        )
        logger.info("iteration %d: held-out sampled accuracy %.3f", iteration, curve[-1]["sampled"])
    after = evaluator.both(held_out, seed=seed)  # the last checkpoint is loaded
    metrics_path = os.path.join(rl_dir, "metrics.jsonl")
    rewards = []
    if os.path.isfile(metrics_path):
        from mindrlhf.utils.metrics import read_metrics

        rewards = [
            {"iteration": m["step"], "reward": m["env/reward_mean"]}
            for m in read_metrics(metrics_path)
            if "env/reward_mean" in m
        ]
    return {"accuracy_after": {"sampled": after["sampled"], "greedy": after["greedy"]},
            "eos_rate_after": after["eos_rate"], "curve": curve, "reward_curve": rewards}  # fmt: skip


def plot(out: str, before: Dict[str, float], results: Dict[str, Dict[str, Any]]) -> Optional[str]:
    """OUT/arithmetic_curve.png: held-out sampled accuracy and the mean reward per iteration, per estimator."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib not installed (pip install -e '.[extras]'): no plot")
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for name, res in results.items():
        xs = [0] + [c["iteration"] for c in res["curve"]]
        ys = [100 * before["sampled"]] + [100 * c["sampled"] for c in res["curve"]]
        left.plot(xs, ys, marker="o", label=name)
        if res["reward_curve"]:
            right.plot([r["iteration"] for r in res["reward_curve"]], [r["reward"] for r in res["reward_curve"]],
                       label=name, linewidth=1)  # fmt: skip
    left.set(title="held-out accuracy (sampled, T=1)", xlabel="RL iteration", ylabel="%", ylim=(0, 100))
    right.set(title="mean exact-match reward of the rollouts", xlabel="RL iteration", ylim=(0, 1))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # the reward panel is empty without metrics.jsonl
            ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "arithmetic_curve.png")
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(out: str, summary: Dict[str, Any]) -> str:
    """OUT/report.md: what was trained, the before/after table, the curve, the leak check."""
    b, sft = summary["accuracy_before"], summary["sft"]
    lines = [
        "# Arithmetic demo: GRPO with an exact-match reward",
        "",
        f"Seed {summary['seed']}; wall time {summary['wall_seconds']:.0f} s on this machine. Problems a+b with a, b "
        "in 0..99, prompt `<bos> a1 a0 + b1 b0 =`, answer the sum's digits reversed then `<eos>`.",
        "",
        f"Split (strict, leak check {summary['leak_check']}): "
        + ", ".join(f"{n:,} {k}" for k, n in summary["split"].items())
        + ". The held-out set is closed under swapping the operands; neither order of a "
        "held-out problem is in the SFT or RL files.",
        "",
        f"SFT: {sft['steps']} steps ({sft['seconds']:.0f} s), stopped when sampled accuracy on a probe of "
        f"{PROBE_SIZE} SFT problems reached {100 * sft['stop_accuracy']:.0f} %.",
        "",
        "| model | held-out sampled (T=1) | held-out greedy |",
        "|---|---|---|",
        f"| after SFT | {100 * b['sampled']:.1f} % | {100 * b['greedy']:.1f} % |",
    ]
    for name, res in summary.get("estimators", {}).items():
        a = res["accuracy_after"]
        lines.append(
            f"| after {name} ({res['iterations']} it., {res['seconds']:.0f} s) | {100 * a['sampled']:.1f} % "
            f"({100 * (a['sampled'] - b['sampled']):+.1f}) | {100 * a['greedy']:.1f} % |"
        )
    if summary.get("estimators"):
        lines += ["", f"RL reward: `{summary['reward_func']}` (1 for the exact reversed sum before EOS, else 0).",
                  "", "Held-out sampled accuracy per saved checkpoint:", ""]  # fmt: skip
        for name, res in summary["estimators"].items():
            lines.append(
                f"- {name}: "
                + " / ".join(f"{c['iteration']}: {100 * c['sampled']:.1f}" for c in res["curve"])
            )
        lines += ["", "![curve](arithmetic_curve.png)"]
    else:
        lines += ["", "The RL stage was skipped (--skip_rl)."]
    path = os.path.join(out, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "output", "arithmetic_demo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer RL iterations (the end-to-end test)")
    parser.add_argument("--estimators", default="grpo", help=f"comma-separated, of {', '.join(ESTIMATORS)}")
    parser.add_argument(
        "--reward_func", default="mindrlhf.rewards:exact_match",
        help="reward function for the RL stage (module:function; this folder is on the RL stage's PYTHONPATH)",
    )  # fmt: skip
    parser.add_argument("--skip_rl", action="store_true", help="stop after SFT and its evaluation")
    args = parser.parse_args(argv)
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown or not estimators:
        parser.error(f"--estimators: unknown {unknown or 'none given'}; choose from {', '.join(ESTIMATORS)}")
    sizes = QUICK if args.quick else FULL
    out = os.path.abspath(args.output_dir)
    data, logs = os.path.join(out, "data"), os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    from mindrlhf.utils.logging import setup_logging

    setup_logging(log_file=os.path.join(logs, "demo.log"))
    start = time.time()
    timings: Dict[str, float] = {}

    t = time.time()
    prep = prepare_task(data, args.seed)
    split, tokenizer = prep["split"], prep["tokenizer"]
    datasets = build_datasets(data, prep["files"], tokenizer, not args.skip_rl, logs)
    timings["data"] = time.time() - t

    from arith_eval import Evaluator

    sft, before = train_or_reuse_sft(out, datasets["sft"], tokenizer, split, args.seed)
    timings["sft"] = sft["seconds"]
    model, evaluator = sft["model"], Evaluator(sft["model"], tokenizer, batch=PROBE_SIZE)
    logger.info("after SFT: held-out sampled %.3f, greedy %.3f", before["sampled"], before["greedy"])

    summary: Dict[str, Any] = {
        "seed": args.seed,
        "quick": args.quick,
        "split": split.sizes(),
        "leak_check": "passed",  # make_split and prepare_task raise LeakError otherwise
        "reward_func": args.reward_func,
        "sft": {k: sft[k] for k in ("steps", "seconds", "stop_accuracy", "reached", "probe", "reused")},
        "accuracy_before": {"sampled": before["sampled"], "greedy": before["greedy"]},
        "eos_rate_before": before["eos_rate"],
    }
    for name in [] if args.skip_rl else estimators:
        rl_dir = os.path.join(out, f"rl_{name}")
        if finished_run(rl_dir, sizes["rl_iterations"]):
            continue
        seconds = run_rl(name, sft["model_yaml"], datasets["rl"], tokenizer, rl_dir, args.seed, sizes,
                         args.reward_func, logs)  # fmt: skip
        t = time.time()
        result = {"iterations": sizes["rl_iterations"], "seconds": round(seconds, 1),
                  **evaluate_rl(evaluator, model, rl_dir, split.held_out, args.seed)}  # fmt: skip
        result["evaluate_seconds"] = round(time.time() - t, 1)
        result["load_average_1m"] = round(os.getloadavg()[0], 2)
        timings[f"rl_{name}"], timings[f"evaluate_{name}"] = seconds, result["evaluate_seconds"]
        # written as soon as the run is evaluated: a later crash or kill does not lose it
        _write_json(os.path.join(rl_dir, RESULT_FILE), result)
        a = result["accuracy_after"]
        logger.info("after %s: held-out sampled %.3f (%+.3f), greedy %.3f", name, a["sampled"],
                    a["sampled"] - before["sampled"], a["greedy"])  # fmt: skip
        _write_summary(out, summary, estimators, start, timings, final=False)
    return _write_summary(out, summary, estimators, start, timings, final=True)


def finished_run(rl_dir: str, iterations: int) -> bool:
    """True when `rl_dir/result.json` is a finished run of `iterations` iterations (then it is kept and skipped).
    Otherwise a leftover `rl_dir` (a run cut short, or one of another budget) is removed so the run starts again
    from the SFT model, and False is returned."""
    done = os.path.join(rl_dir, RESULT_FILE)
    if os.path.isfile(done):
        with open(done, encoding="utf-8") as f:
            ran = json.load(f).get("iterations")
        if ran == iterations:
            logger.info("%s: finished earlier (%s), skipped", os.path.basename(rl_dir), done)
            return True
        logger.warning("%s ran %s iterations, not %d: removed and run again", rl_dir, ran, iterations)
    elif os.path.isdir(rl_dir):
        logger.warning("%s has no %s (a run cut short): removed and run again", rl_dir, RESULT_FILE)
    if os.path.isdir(rl_dir):
        shutil.rmtree(rl_dir)
    return False


def train_or_reuse_sft(out: str, dataset: str, tokenizer, split, seed: int) -> tuple:
    """Stages 4-5, once per output folder: SFT and the held-out accuracy before RL, saved in OUT/sft/result.json;
    a later invocation with the same folder (another estimator, a resumed comparison) loads OUT/sft/model.yaml
    instead of training again, so every estimator of a seed starts from the same SFT model.

    Returns `(sft, before)`: sft has the run_sft keys plus "reused"; before is `Evaluator.both` of the held-out set.
    """
    from arith_eval import Evaluator
    from arith_sft import build_model, run_sft

    save_dir = os.path.join(out, "sft")
    done = os.path.join(save_dir, RESULT_FILE)
    if os.path.isfile(done) and os.path.isfile(os.path.join(save_dir, "model.yaml")):
        with open(done, encoding="utf-8") as f:
            saved = json.load(f)
        if saved.get("seed") != seed:
            raise SystemExit(
                f"[arithmetic demo] {done} is the SFT of seed {saved.get('seed')}, not --seed {seed}: use another "
                "--output_dir (one folder per seed) or delete it"
            )
        _, model = build_model(os.path.join(save_dir, "model.yaml"), seed)
        logger.info("SFT: reusing %s (%d steps, trained earlier)", save_dir, saved["sft"]["steps"])
        sft = {
            **saved["sft"],
            "model": model,
            "model_yaml": os.path.join(save_dir, "model.yaml"),
            "reused": True,
        }
        return sft, saved["before"]
    probe = list(split.sft[:PROBE_SIZE])
    sft = run_sft(
        os.path.join(HERE, "arith_llama.yaml"), os.path.join(HERE, "sft_arith.yaml"), dataset, save_dir,
        tokenizer, probe, seed=seed,
    )  # fmt: skip
    t = time.time()
    before = Evaluator(sft["model"], tokenizer, batch=PROBE_SIZE).both(split.held_out, seed=seed)
    keys = ("steps", "seconds", "stop_accuracy", "reached", "probe")
    _write_json(done, {"seed": seed, "sft": {k: sft[k] for k in keys}, "before": before,
                       "evaluate_seconds": round(time.time() - t, 1)})  # fmt: skip
    return {**sft, "reused": False}, before


def _write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (a kill mid-write leaves the old file or none, never half a file)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _write_summary(out: str, summary: Dict[str, Any], estimators: List[str], start: float,
                   timings: Dict[str, float], final: bool) -> int:  # fmt: skip
    """OUT/summary.json, report.md and the plot from every finished estimator in OUT (this invocation's and
    earlier ones'), in ESTIMATORS order; the main estimator is the first of --estimators that finished."""
    results = {}
    for name in ESTIMATORS:
        path = os.path.join(out, f"rl_{name}", RESULT_FILE)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                results[name] = json.load(f)
    before = summary["accuracy_before"]
    if results:
        main_name = next((e for e in estimators if e in results), next(iter(results)))
        summary["estimator"] = main_name
        summary["accuracy_after"] = results[main_name]["accuracy_after"]
        summary["gain_sampled"] = summary["accuracy_after"]["sampled"] - before["sampled"]
        summary["estimators"] = results
        plot(out, before, results)
    summary["wall_seconds"] = round(time.time() - start, 1)
    summary["stage_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    write_report(out, summary)
    path = os.path.join(out, "summary.json")
    _write_json(path, summary)
    if final:
        logger.info("report: %s; wall time %.0f s", os.path.join(out, "report.md"), summary["wall_seconds"])
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
