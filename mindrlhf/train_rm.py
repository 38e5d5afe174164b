"""Kept for `python -m mindrlhf.train_rm`: the command is `mindrlhf.cli.rm` (`mindrlhf-rm`)."""

import sys

if __name__ == "__main__":
    from mindrlhf.cli.rm import main

    sys.exit(main())
