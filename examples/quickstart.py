"""Quickstart: build the tiny Llama2 from its MindFormers YAML, save it, load it back, check the logits agree.

    python examples/quickstart.py [--config model_configs/llama2_config/llama2_tiny.yaml] [--output_dir output/quickstart]

Until the end-to-end RLHF demo lands this is the project's main job: it exercises the config loader, the
Llama2 cells, the atomic checkpoint saver, the strict loader and the YAML writer on CPU.
"""

import argparse
import json
import logging
import os
import sys
import time

import mindspore as ms
import numpy as np
from mindspore import Tensor

import mindrlhf
from mindrlhf.configs.run_config import write_run_yaml


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument(
        "--config", default=os.path.join(root, "model_configs/llama2_config/llama2_tiny.yaml")
    )
    parser.add_argument("--output_dir", default=os.path.join(root, "output/quickstart"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.time()
    ms.set_seed(args.seed)
    try:
        config = mindrlhf.load_run_config(args.config).model_config
    except mindrlhf.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = mindrlhf.LlamaForCausalLM(config)
    n_params = sum(int(np.prod(p.shape)) for p in model.trainable_params())
    print(
        f"built {config.num_layers}-layer Llama2 (hidden {config.hidden_size}, heads {config.num_heads}/"
        f"{config.num_kv_heads} kv, ffn {config.ffn_hidden_size}, vocab {config.vocab_size}): {n_params:,} parameters"
    )

    ckpt = os.path.join(args.output_dir, "tiny_llama2.ckpt")
    mindrlhf.save_checkpoint(model, ckpt)
    yaml_path = write_run_yaml(
        config, os.path.join(args.output_dir, "tiny_llama2.yaml"), checkpoint=os.path.abspath(ckpt)
    )
    print(f"saved {ckpt} and {yaml_path}")

    run = mindrlhf.load_run_config(yaml_path)
    reloaded = mindrlhf.LlamaForCausalLM(run.model_config)
    mindrlhf.load_checkpoint(reloaded, run.checkpoint_path)

    rng = np.random.RandomState(args.seed)
    ids = rng.randint(3, config.vocab_size, size=(2, 16)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :5] = 0  # second row left-padded
    a = model(Tensor(ids), Tensor(mask)).asnumpy()
    b = reloaded(Tensor(ids), Tensor(mask)).asnumpy()
    real = mask.astype(bool)
    stats = {
        "logits_shape": list(a.shape),
        "logits_mean": float(a[real].mean()),
        "logits_std": float(a[real].std()),
        "reload_max_abs_diff": float(np.abs(a - b)[real].max()),
        "seconds": round(time.time() - start, 2),
    }
    print(json.dumps(stats))
    return 0 if stats["reload_max_abs_diff"] == 0.0 else 1


if __name__ == "__main__":
    sys.exit(main())
