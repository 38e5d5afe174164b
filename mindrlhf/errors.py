"""The one base class for problems a user can fix (a bad file, config field, rank table, launch environment).

    MindRLHFError
      ConfigError           mindrlhf.configs.loader       a YAML file or `--key value` override
        DataError           mindrlhf.data.schemas         a JSONL input, a MindRecord or its metadata
      CheckpointError       mindrlhf.utils.checkpoint     a checkpoint that cannot be read or does not fit
      DistributedEnvError   mindrlhf.parallel.config      RANK_ID / RANK_SIZE / msrun variables
      RankTableError        mindrlhf.parallel.rank_table  an HCCL rank table
      ConversionError       mindrlhf.tools.convert_hf     a Hugging Face directory or checkpoint to convert

It deliberately does not derive from ValueError: entry points (`mindrlhf.cli`) catch only MindRLHFError and print
its message (exit code 2), so a ValueError/TypeError/KeyError raised by a bug still surfaces with its traceback
instead of being reported as "a problem with your inputs". Each subclass stays importable from its old module.
This module imports nothing, so every layer may import it.
"""


class MindRLHFError(Exception):
    """A user-fixable input problem. The message names the file (line, field) and says what would fix it."""
