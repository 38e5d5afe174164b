"""Evaluation of the CPU demo on held-out requests: SFT, SFT -> RM -> PPO and (when trained) SFT -> DPO.

Held-out requests (data/heldout.jsonl, `mindrlhf.demo.split_pairs`) are of two kinds: every request on an object
no training prompt mentions with any verb ("new_object"), and new (verb, object) combinations of an object and a
verb both seen in training with other partners ("new_combination"). No held-out prompt, target answer or
held-out object occurs in any training file (tests/test_data_demo_corpus.py checks); the words do.

Refusal and helpfulness are judged by content (`mindrlhf.demo.is_refusal` / `is_helpful`): a refusal
must be a complete refusal of this request, a helpful answer must carry out this prompt's own verb and object,
so the reward-hacking texts seen in the prototype (spliced refusals, answers about the wrong object) do not count.
Rates are reported pooled, per kind of held-out request and per request; the RM's pairwise accuracy is reported
pooled and per kind of negative (compliance, over_refusal, spliced, off_topic).
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


def eval_rows(heldout: List[dict], n_prompts: int) -> List[dict]:
    """About `n_prompts` harmful and `n_prompts` benign rows, spread evenly over the distinct requests: every
    held-out request gets the same number of surface forms (at least 2), so per-request rates are comparable."""
    by_request: Dict[tuple, List[dict]] = {}
    for r in heldout:
        by_request.setdefault((r["verb"], r["object"]), []).append(r)
    out = []
    for harmful in (True, False):
        requests = sorted(k for k, v in by_request.items() if bool(v[0]["harmful"]) == harmful)
        per = max(2, round(n_prompts / max(1, len(requests))))
        for key in requests:
            out.extend(by_request[key][:per])
    return out


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
    """refusal (harmful rows refused), helpful (benign rows carried out), over_refusal (benign rows refused)."""
    from mindrlhf.demo import is_helpful, is_refusal

    harmful = [(r, t) for r, t in zip(rows, texts) if r["harmful"]]
    benign = [(r, t) for r, t in zip(rows, texts) if not r["harmful"]]
    return {
        "refusal": float(np.mean([is_refusal(r, t) for r, t in harmful])) if harmful else float("nan"),
        "helpful": float(np.mean([is_helpful(r, t) for r, t in benign])) if benign else float("nan"),
        "over_refusal": float(np.mean([is_refusal(r, t) for r, t in benign])) if benign else float("nan"),
    }


def per_request(rows: List[dict], texts: List[str], new_objects: Sequence[str]) -> List[dict]:
    """One record per distinct held-out request: verb, object, harmful, split, n, refusal and helpful rates."""
    from mindrlhf.demo import is_helpful, is_refusal

    out: Dict[tuple, dict] = {}
    for r, t in zip(rows, texts):
        rec = out.setdefault(
            (r["verb"], r["object"]),
            {
                "verb": r["verb"],
                "object": r["object"],
                "harmful": bool(r["harmful"]),
                "split": "new_object" if r["object"] in new_objects else "new_combination",
                "n": 0,
                "refusal": 0.0,
                "helpful": 0.0,
            },
        )
        rec["n"] += 1
        rec["refusal"] += is_refusal(r, t)
        rec["helpful"] += is_helpful(r, t)
    for rec in out.values():
        rec["refusal"] /= rec["n"]
        rec["helpful"] /= rec["n"]
    return list(out.values())


def rm_accuracy(rm_yaml: str, tokenizer, rows: List[dict], seq_len: int, batch: int = 64) -> Dict[str, float]:
    """Pairwise accuracy of the reward model on held-out (prompt, pos_resp, neg_resp) triples: pooled ("all")
    and per kind of negative (`mindrlhf.demo.negative_kind`), since trivial negatives inflate the pooled one."""
    from mindspore import Tensor

    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.data.tokenizer import pad_sequences
    from mindrlhf.demo import NEGATIVE_KINDS, negative_kind
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
    kinds = [negative_kind(r["neg_type"]) for r in rows]
    acc = {"all": float(np.mean(correct))}
    for kind in NEGATIVE_KINDS:
        hits = [c for c, k in zip(correct, kinds) if k == kind]
        acc[kind] = float(np.mean(hits)) if hits else float("nan")
        acc[f"n_{kind}"] = len(hits)
    return acc


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


def evaluate_demo(
    out_dir, data_dir, sft_dir, rm_dir, ppo_dir, tokenizer_path, n_prompts, prompt_len, dpo_dir=None
) -> Dict:
    """Rates of SFT, PPO (and DPO when `dpo_dir` is given) on one held-out set, RM accuracy, the refusal curve
    over PPO checkpoints, plots, report.md; returns the summary (PPO's keys at the top, DPO's under "dpo")."""
    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.data.tokenizer import LlamaTokenizer
    from mindrlhf.models.roles import build_from_run_config
    from mindrlhf.utils.checkpoint import load_checkpoint
    from mindrlhf.utils.metrics import read_metrics

    tokenizer = LlamaTokenizer(tokenizer_path)
    heldout = _read_jsonl(os.path.join(data_dir, "heldout.jsonl"))
    with open(os.path.join(data_dir, "corpus_info.json"), encoding="utf-8") as f:
        new_objects = json.load(f)["heldout_objects"]
    rows = eval_rows(heldout, n_prompts)

    sft_run = load_run_config(os.path.join(sft_dir, "model.yaml"))
    model = build_from_run_config(sft_run, "causal_lm")
    model.set_train(False)

    def judge(rows_, sample):
        texts = generate_texts(model, tokenizer, [r["prompt"] for r in rows_], prompt_len, sample)
        return rates(rows_, texts), texts

    def evaluate_policy() -> Dict:
        # The policy PPO trains is the sampling policy, so sampled responses (temperature 1, fixed seed) are the
        # headline numbers; greedy decoding is reported beside them.
        sampled, texts = judge(rows, sample=True)
        greedy, greedy_texts = judge(rows, sample=False)
        by_split = {
            split: rates(
                [r for r in rows if (r["object"] in new_objects) == (split == "new_object")],
                [t for r, t in zip(rows, texts) if (r["object"] in new_objects) == (split == "new_object")],
            )
            for split in ("new_object", "new_combination")
        }
        return {
            "sampled": sampled,
            "greedy": greedy,
            "by_split": by_split,
            "per_request": per_request(rows, texts, new_objects),
            "greedy_texts": greedy_texts,
        }

    policies = {"sft": evaluate_policy()}
    # The refusal curve: the SFT model, every intermediate PPO actor on a quarter of the prompts, the final actor
    # (same model object, so the compiled generation graphs are reused; loading copies into the parameters).
    ckpt_root = os.path.join(ppo_dir, "checkpoints")
    steps = sorted((d for d in os.listdir(ckpt_root) if d.startswith("step_")), key=lambda d: int(d[5:]))
    sub = eval_rows(heldout, max(8, n_prompts // 4))
    curve = [{"iteration": 0, **policies["sft"]["sampled"]}]
    for step in steps[:-1]:
        load_checkpoint(model, os.path.join(ckpt_root, step, "actor.ckpt"))
        curve.append({"iteration": int(step.split("_")[1]), **judge(sub, sample=True)[0]})
    load_checkpoint(model, os.path.join(ckpt_root, steps[-1], "actor.ckpt"))
    policies["ppo"] = evaluate_policy()
    curve.append({"iteration": int(steps[-1].split("_")[1]), **policies["ppo"]["sampled"]})
    if dpo_dir:
        load_checkpoint(model, os.path.join(dpo_dir, "model.ckpt"))
        policies["dpo"] = evaluate_policy()

    metrics = read_metrics(os.path.join(ppo_dir, "metrics.jsonl"))
    rm_rows = heldout[:: max(1, len(heldout) // (8 * n_prompts))]  # 512 pairs in --quick, 2048 by default
    rm_acc = rm_accuracy(
        os.path.join(rm_dir, "model.yaml"), tokenizer, rm_rows, sft_run.model_config.seq_length
    )
    plots = _plots(out_dir, metrics, curve)
    summary = {
        "rm_accuracy": rm_acc["all"],
        "rm_accuracy_by_kind": rm_acc,
        **_before_after(policies["sft"], policies["ppo"]),
        "final_kl": float(metrics[-1]["objective/kl"]),
        "first_score_mean": float(
            np.mean([m["env/score_mean"] for m in metrics[: max(1, len(metrics) // 5)]])
        ),
        "last_score_mean": float(
            np.mean([m["env/score_mean"] for m in metrics[-max(1, len(metrics) // 5) :]])
        ),
        "eval_prompts": {
            "harmful": sum(r["harmful"] for r in rows),
            "benign": sum(not r["harmful"] for r in rows),
            "harmful_requests": len({(r["verb"], r["object"]) for r in rows if r["harmful"]}),
            "benign_requests": len({(r["verb"], r["object"]) for r in rows if not r["harmful"]}),
            "new_objects": list(new_objects),
        },
        "by_split": {name: p["by_split"] for name, p in policies.items()},
        "per_request": _merge_requests(policies),
        "refusal_curve": curve,
        "plots": [os.path.basename(p) for p in plots],
    }
    if "dpo" in policies:
        summary["dpo"] = _before_after(policies["sft"], policies["dpo"])
        dpo_metrics = read_metrics(os.path.join(dpo_dir, "metrics.jsonl"))
        evals = [m for m in dpo_metrics if "eval/rewards/accuracies" in m]
        if evals:
            summary["dpo"]["eval_rewards_accuracies"] = float(evals[-1]["eval/rewards/accuracies"])
    _report(out_dir, summary, rows, {k: v["greedy_texts"] for k, v in policies.items()})
    return summary


def _before_after(before: Dict, after: Dict) -> Dict:
    """summary.json's keys for one policy against the SFT model: sampled rates, and greedy ones under "greedy"."""
    out = {}
    for key, name in (
        ("refusal", "refusal_rate"),
        ("helpful", "helpful_rate"),
        ("over_refusal", "over_refusal"),
    ):
        out[f"{name}_before"] = before["sampled"][key]
        out[f"{name}_after"] = after["sampled"][key]
    out["greedy"] = {
        f"{name}_{when}": p["greedy"][key]
        for key, name in (("refusal", "refusal_rate"), ("helpful", "helpful_rate"))
        for when, p in (("before", before), ("after", after))
    }
    return out


def _merge_requests(policies: Dict[str, Dict]) -> List[dict]:
    """Per request: its identity and each policy's sampled {refusal, helpful} rates."""
    merged = []
    for i, rec in enumerate(policies["sft"]["per_request"]):
        row = {k: rec[k] for k in ("verb", "object", "harmful", "split", "n")}
        for name, p in policies.items():
            other = p["per_request"][i]
            assert (other["verb"], other["object"]) == (rec["verb"], rec["object"])
            row[name] = {"refusal": other["refusal"], "helpful": other["helpful"]}
        merged.append(row)
    return merged


def _report(out_dir, summary, rows, greedy_texts: Dict[str, List[str]]) -> None:
    names = list(greedy_texts)  # sft, ppo[, dpo]
    label = {"sft": "SFT (before)", "ppo": "PPO", "dpo": "DPO"}
    after = {"ppo": summary, "dpo": summary.get("dpo")}
    ep = summary["eval_prompts"]

    def row(title, key, greedy=False):
        get = (lambda d, w: d["greedy"][f"{key}_{w}"]) if greedy else (lambda d, w: d[f"{key}_{w}"])
        cells = [get(summary, "before")] + [get(after[n], "after") for n in names[1:]]
        return f"| {title} | " + " | ".join(f"{c:.3f}" for c in cells) + " |"

    lines = [
        "# MindRLHF CPU demo report",
        "",
        f"Held-out requests: {ep['harmful_requests']} harmful and {ep['benign_requests']} benign, none of them in any "
        f"training file ({ep['harmful']} harmful and {ep['benign']} benign prompts); objects never seen in training "
        f"with any verb: {', '.join(ep['new_objects'])}. Sampled at temperature 1 (the policy PPO trains) unless "
        "marked greedy.",
        "",
        "| metric | " + " | ".join(label[n] for n in names) + " |",
        "| --- |" + " --- |" * len(names),
        row("refusal rate, harmful prompts", "refusal_rate"),
        row("helpful rate, benign prompts", "helpful_rate"),
        row("unnecessary refusals, benign prompts", "over_refusal"),
        row("refusal rate, harmful, greedy", "refusal_rate", greedy=True),
        row("helpful rate, benign, greedy", "helpful_rate", greedy=True),
        "",
        "By kind of held-out request (sampled; refusal on harmful / helpful on benign):",
        "",
        "| held-out kind | " + " | ".join(label[n] for n in names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for split in ("new_object", "new_combination"):
        cells = [summary["by_split"][n][split] for n in names]
        lines.append(
            f"| {split} | " + " | ".join(f"{c['refusal']:.3f} / {c['helpful']:.3f}" for c in cells) + " |"
        )
    rm = summary["rm_accuracy_by_kind"]
    lines += [
        "",
        f"Reward model pairwise accuracy on held-out pairs: {rm['all']:.3f}; by kind of negative: "
        + ", ".join(
            f"{k} {rm[k]:.3f} (n={rm['n_' + k]})"
            for k in ("compliance", "over_refusal", "spliced", "off_topic")
        )
        + f". Final KL to the reference (PPO): {summary['final_kl']:.3f} nats per sequence.",
        "",
        "Per request (sampled): the refusal rate of a harmful request, the helpful rate of a benign one.",
        "",
        "| request | harmful | held-out kind | n | " + " | ".join(label[n] for n in names) + " |",
        "| --- | --- | --- | --- |" + " --- |" * len(names),
    ]
    for rec in summary["per_request"]:
        key = "refusal" if rec["harmful"] else "helpful"
        cells = [f"{rec[n][key]:.2f}" for n in names]
        lines.append(
            f"| {rec['verb']} {rec['object']} | {'yes' if rec['harmful'] else 'no'} | {rec['split']} | {rec['n']} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "Greedy answers:",
        "",
        "| prompt | " + " | ".join(label[n] for n in names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    shown, seen = [], set()
    for harmful, count in ((True, 4), (False, 3)):  # distinct requests, not four phrasings of one
        for i, r in enumerate(rows):
            if r["harmful"] == harmful and (r["verb"], r["object"]) not in seen:
                if len([j for j in shown if rows[j]["harmful"] == harmful]) < count:
                    shown.append(i)
                    seen.add((r["verb"], r["object"]))
    for i in shown:
        cells = [rows[i]["prompt"]] + [greedy_texts[n][i] for n in names]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += ["", *[f"![{p}]({p})" for p in summary["plots"]], ""]
    from mindrlhf.utils.io import atomic_write

    with atomic_write(os.path.join(out_dir, "report.md")) as f:
        f.write("\n".join(lines))
