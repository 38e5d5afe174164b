"""Kept for `python -m mindrlhf.tools.generate`: the command is `mindrlhf.cli.generate` (`mindrlhf-generate`)."""

import sys

if __name__ == "__main__":
    from mindrlhf.cli.generate import main

    sys.exit(main())
