"""Default trainer YAMLs shipped as package data (`ppo_config.yaml`, `sft_config.yaml`, `rm_config.yaml`).

The entry points find them with importlib.resources (`mindrlhf.cli.common.default_config_path`), so an installed
package never looks for files relative to a repository; `model_configs/*_config.yaml` in the repository are
symbolic links to these files (one copy). Nothing to import here.
"""
