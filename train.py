"""PPO training, kept as the tutorial's `python train.py ...`: the command is `mindrlhf.cli.train` (`mindrlhf-train`)."""

import sys

from mindrlhf.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
