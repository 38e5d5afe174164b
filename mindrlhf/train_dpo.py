"""Kept for `python -m mindrlhf.train_dpo`, like train_sft.py: the command is `mindrlhf.cli.dpo`."""

import sys

if __name__ == "__main__":
    from mindrlhf.cli.dpo import main

    sys.exit(main())
