"""Typed configs and the one YAML loader."""

from mindrlhf.configs.loader import (
    ConfigError,
    apply_overrides,
    dataclass_from_dict,
    get_section,
    load_yaml,
    parse_overrides,
)

__all__ = [
    "ConfigError",
    "apply_overrides",
    "dataclass_from_dict",
    "get_section",
    "load_yaml",
    "parse_overrides",
]
