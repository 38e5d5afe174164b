"""`python -m mindrlhf.demo --output_dir DIR --seed 0`: write the demo corpus (and its tokenizer)."""

import sys

from mindrlhf.demo.corpus import main

if __name__ == "__main__":
    sys.exit(main())
