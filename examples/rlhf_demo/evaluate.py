"""Evaluation of the CPU demo on held-out prompts (verb/object combinations never seen in training).

Refusal and helpfulness are judged by content (`mindrlhf.demo.is_refusal` / `is_helpful`): a refusal
must be a complete refusal of this request, a helpful answer must carry out this prompt's own verb and object,
so the reward-hacking texts seen in the prototype (spliced refusals, answers about the wrong object) do not count.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Sequence

import numpy as np

logger = logging.getLogger(__name__)
MAX_NEW_TOKENS = 40
EVAL_SEED = 20261125


def _read_jsonl(path: str) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _pick(rows: List[dict], harmful: bool, n: int) -> List[dict]:
    chosen = [r for r in rows if bool(r["harmful"]) == harmful]
    step = max(1, len(chosen) // n)
    return chosen[::step][:n]


def generate_texts(
    model, tokenizer, prompts: Sequence[str], prompt_len: int, sample: bool, batch: int = 64
) -> List[str]:
    """Responses (EOS-terminated) to `prompts`, decoded: sampled at temperature 1 (seeded) or greedy."""
    from mindrlhf.generation import generate

    out: List[str] = []
    for i in range(0, len(prompts), batch):
        chunk = list(prompts[i : i + batch])
        pad = batch - len(chunk)
        ids, mask = tokenizer.batch_encode_prompts(chunk + [chunk[-1]] * pad, prompt_len, truncate=True)
        result = generate(
            model,
            ids,
            mask,
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=tokenizer.eos_id,
            pad_token_id=tokenizer.pad_id,
            do_sample=sample,
            temperature=1.0,
            seed=EVAL_SEED + i,
        )
        texts = tokenizer.decode_batch(result.response_ids, result.response_mask.astype(np.int32))
        out.extend(texts[: len(chunk)])
    return out


def rates(rows: List[dict], texts: List[str]) -> Dict[str, float]:
    from mindrlhf.demo import is_helpful, is_refusal

    harmful = [(r, t) for r, t in zip(rows, texts) if r["harmful"]]
    benign = [(r, t) for r, t in zip(rows, texts) if not r["harmful"]]
    return {
        "refusal": float(np.mean([is_refusal(r, t) for r, t in harmful])) if harmful else float("nan"),
        "helpful": float(np.mean([is_helpful(r, t) for r, t in benign])) if benign else float("nan"),
        "over_refusal": float(np.mean([is_refusal(r, t) for r, t in benign])) if benign else float("nan"),
    }


def rm_accuracy(rm_yaml: str, tokenizer, rows: List[dict], seq_len: int, batch: int = 64) -> float:
    """Pairwise accuracy of the reward model on held-out (prompt, pos_resp, neg_resp) triples."""
    from mindspore import Tensor

    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.data.tokenizer import pad_sequences
    from mindrlhf.models.roles import build_from_run_config

    model = build_from_run_config(load_run_config(rm_yaml), "value")
    model.set_train(False)

    def scores(texts_prompt, texts_resp):
        seqs = [
            p + r
            for p, r in zip(
                tokenizer.encode_batch(texts_prompt, add_bos=True),
                tokenizer.encode_batch(texts_resp, add_eos=True),
            )
        ]
        seqs = [s[:seq_len] for s in seqs]
        ids, mask = pad_sequences(seqs, seq_len, tokenizer.pad_id, side="right")
        return model.score(Tensor(ids), Tensor(mask)).asnumpy()

    correct = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        prompts = [r["prompt"] for r in chunk]
        pos = scores(prompts, [r["pos_resp"] for r in chunk])
        neg = scores(prompts, [r["neg_resp"] for r in chunk])
        correct.extend((pos > neg).tolist())
    return float(np.mean(correct))


def _plots(out_dir: str, metrics: List[dict], curve: List[dict]) -> List[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib not installed (pip install -e '.[extras]'): no plots")
        return []
    steps = [m["step"] for m in metrics]
    figs = [
        ("ppo_reward.png", "mean reward-model score", [m["env/score_mean"] for m in metrics], steps),
        (
            "ppo_kl.png",
            "KL(actor || reference), nats / sequence",
            [m["objective/kl"] for m in metrics],
            steps,
        ),
        ("ppo_refusal_rate.png", "held-out refusal rate (harmful) / helpful rate (benign)", None, None),
    ]
    written = []
    for name, title, ys, xs in figs:
        fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=100)
        if ys is None:
            ax.plot(
                [c["iteration"] for c in curve],
                [c["refusal"] for c in curve],
                marker="o",
                label="refusal (harmful)",
            )
            ax.plot(
                [c["iteration"] for c in curve],
                [c["helpful"] for c in curve],
                marker="s",
                label="helpful (benign)",
            )
            ax.set_ylim(-0.02, 1.02)
            ax.legend(loc="lower right")
        else:
            ax.plot(xs, ys)
        ax.set_xlabel("PPO iteration")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def evaluate_demo(out_dir, data_dir, sft_dir, rm_dir, ppo_dir, tokenizer_path, n_prompts, prompt_len) -> Dict:
    """Before/after rates, RM accuracy, refusal curve over PPO checkpoints, plots, report.md; returns the summary."""
    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.data.tokenizer import LlamaTokenizer
    from mindrlhf.models.roles import build_from_run_config
    from mindrlhf.utils.checkpoint import load_checkpoint
    from mindrlhf.utils.metrics import read_metrics

    tokenizer = LlamaTokenizer(tokenizer_path)
    heldout = _read_jsonl(os.path.join(data_dir, "heldout.jsonl"))
    rows = _pick(heldout, True, n_prompts) + _pick(heldout, False, n_prompts)

    sft_run = load_run_config(os.path.join(sft_dir, "model.yaml"))
    model = build_from_run_config(sft_run, "causal_lm")
    model.set_train(False)

    def judge(rows_, sample):
        texts = generate_texts(model, tokenizer, [r["prompt"] for r in rows_], prompt_len, sample)
        return rates(rows_, texts), texts

    # The policy PPO trains is the sampling policy, so sampled responses (temperature 1, fixed seed) are the
    # headline numbers; greedy decoding is reported beside them.
    before, before_texts = judge(rows, sample=True)
    before_greedy, before_greedy_texts = judge(rows, sample=False)
    # The refusal curve: every saved PPO actor on a quarter of the prompts (same model object, so the compiled
    # generation graphs are reused; loading copies into the parameters in place).
    ckpt_root = os.path.join(ppo_dir, "checkpoints")
    steps = sorted(d for d in os.listdir(ckpt_root) if d.startswith("step_"))
    sub = _pick(heldout, True, max(8, n_prompts // 4)) + _pick(heldout, False, max(8, n_prompts // 4))
    curve = [{"iteration": 0, **judge(sub, sample=True)[0]}]
    for step in steps:
        load_checkpoint(model, os.path.join(ckpt_root, step, "actor.ckpt"))
        curve.append({"iteration": int(step.split("_")[1]), **judge(sub, sample=True)[0]})
    after, after_texts = judge(rows, sample=True)  # the final actor is loaded last
    after_greedy, after_greedy_texts = judge(rows, sample=False)

    metrics = read_metrics(os.path.join(ppo_dir, "metrics.jsonl"))
    rm_acc = rm_accuracy(
        os.path.join(rm_dir, "model.yaml"),
        tokenizer,
        heldout[:: max(1, len(heldout) // 512)],
        sft_run.model_config.seq_length,
    )
    plots = _plots(out_dir, metrics, curve)
    summary = {
        "rm_accuracy": rm_acc,
        "refusal_rate_before": before["refusal"],
        "refusal_rate_after": after["refusal"],
        "helpful_rate_before": before["helpful"],
        "helpful_rate_after": after["helpful"],
        "over_refusal_before": before["over_refusal"],
        "over_refusal_after": after["over_refusal"],
        "final_kl": float(metrics[-1]["objective/kl"]),
        "first_score_mean": float(
            np.mean([m["env/score_mean"] for m in metrics[: max(1, len(metrics) // 5)]])
        ),
        "last_score_mean": float(
            np.mean([m["env/score_mean"] for m in metrics[-max(1, len(metrics) // 5) :]])
        ),
        "greedy": {
            "refusal_rate_before": before_greedy["refusal"],
            "refusal_rate_after": after_greedy["refusal"],
            "helpful_rate_before": before_greedy["helpful"],
            "helpful_rate_after": after_greedy["helpful"],
        },
        "eval_prompts": {
            "harmful": sum(r["harmful"] for r in rows),
            "benign": sum(not r["harmful"] for r in rows),
        },
        "refusal_curve": curve,
        "plots": [os.path.basename(p) for p in plots],
    }
    _report(out_dir, summary, rows, before_greedy_texts, after_greedy_texts)
    return summary


def _report(out_dir, summary, rows, before_texts, after_texts) -> None:
    lines = [
        "# MindRLHF CPU demo report",
        "",
        "Held-out prompts: verb/object combinations never seen in training "
        f"({summary['eval_prompts']['harmful']} harmful, {summary['eval_prompts']['benign']} benign). Sampled at "
        "temperature 1 (the policy PPO trains) unless marked greedy.",
        "",
        "| metric | SFT (before) | PPO (after) |",
        "| --- | --- | --- |",
        f"| refusal rate, harmful prompts | {summary['refusal_rate_before']:.3f} | {summary['refusal_rate_after']:.3f} |",
        f"| helpful rate, benign prompts | {summary['helpful_rate_before']:.3f} | {summary['helpful_rate_after']:.3f} |",
        f"| unnecessary refusals, benign prompts | {summary['over_refusal_before']:.3f} | {summary['over_refusal_after']:.3f} |",
        f"| refusal rate, harmful, greedy | {summary['greedy']['refusal_rate_before']:.3f} | {summary['greedy']['refusal_rate_after']:.3f} |",
        f"| helpful rate, benign, greedy | {summary['greedy']['helpful_rate_before']:.3f} | {summary['greedy']['helpful_rate_after']:.3f} |",
        "",
        f"Reward model pairwise accuracy on held-out pairs: {summary['rm_accuracy']:.3f}. "
        f"Final KL to the reference: {summary['final_kl']:.3f} nats per sequence.",
        "",
        "Greedy answers:",
        "",
        "| prompt | original answer (SFT) | after RLHF (PPO) |",
        "| --- | --- | --- |",
    ]
    shown, seen = [], set()
    for harmful, count in ((True, 4), (False, 2)):  # distinct requests, not four phrasings of one
        picked = [
            i for i, r in enumerate(rows) if r["harmful"] == harmful and (r["verb"], r["object"]) not in seen
        ]
        for i in picked:
            if (
                len([j for j in shown if rows[j]["harmful"] == harmful]) < count
                and (rows[i]["verb"], rows[i]["object"]) not in seen
            ):
                shown.append(i)
                seen.add((rows[i]["verb"], rows[i]["object"]))
    for i in shown:
        cells = [rows[i]["prompt"], before_texts[i], after_texts[i]]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += ["", *[f"![{p}]({p})" for p in summary["plots"]], ""]
    from mindrlhf.utils.io import atomic_write

    with atomic_write(os.path.join(out_dir, "report.md")) as f:
        f.write("\n".join(lines))
