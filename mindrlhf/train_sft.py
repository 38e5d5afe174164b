"""Kept for `python -m mindrlhf.train_sft` and `msrun ... mindrlhf/train_sft.py`: the command is `mindrlhf.cli.sft`."""

import sys

if __name__ == "__main__":
    from mindrlhf.cli.sft import main

    sys.exit(main())
