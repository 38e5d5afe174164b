"""The tutorial's data command, kept runnable as `python examples/rlhf_train_tutorial/rlhf_data.py ...`;
it is `mindrlhf.cli.data` (`mindrlhf-data`), where its flags are documented."""

import os
import sys

try:
    import mindrlhf  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from mindrlhf.cli.data import main

if __name__ == "__main__":
    sys.exit(main())
