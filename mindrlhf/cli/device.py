"""Which device a command runs on: --device_target, else the run YAML's `context.device_target`, else CPU.

Refused up front (one ConfigError saying what to pass) when this MindSpore build cannot run there, instead of
MindSpore failing later with its own traceback.
"""

from __future__ import annotations

from typing import Optional

from mindrlhf.errors import MindRLHFError


def yaml_device_target(model_yaml: str) -> Optional[str]:
    """The run YAML's `context.device_target`, or None (also when the YAML is bad: validation reports that)."""
    from mindrlhf.configs.loader import load_yaml

    try:
        context = load_yaml(model_yaml).get("context")
    except MindRLHFError:
        return None
    target = context.get("device_target") if isinstance(context, dict) else None
    return None if target is None else str(target)


def choose_device_target(flag: Optional[str], model_yaml: str) -> str:
    """--device_target, else the run YAML's `context.device_target`, else CPU; refused (one ConfigError saying
    what to pass) when this MindSpore build cannot run on it, before MindSpore fails with its own traceback."""
    from mindrlhf.configs.loader import ConfigError
    from mindrlhf.parallel.runtime import normalize_device_target

    from_yaml = None if flag else yaml_device_target(model_yaml)
    try:
        target = normalize_device_target(flag or from_yaml or "CPU")
    except ConfigError as exc:
        where = "--device_target" if flag else f"{model_yaml}: field 'context.device_target'"
        raise ConfigError(f"{where}: {str(exc).split(': ', 1)[-1]}") from None
    if target != "CPU" and not _mindspore_has(target):
        usable = ["CPU"] + [t for t in ("GPU", "Ascend") if t != target and _mindspore_has(t)]
        runs_on = "runs only on CPU" if len(usable) == 1 else f"runs on {', '.join(usable)}"
        if flag:
            raise ConfigError(
                f"--device_target {flag}: this MindSpore build cannot run on {target} (it {runs_on}); "
                f"pass --device_target CPU or install MindSpore for {target}"
            )
        raise ConfigError(
            f"asks for {target} (context.device_target: {from_yaml}) but this MindSpore build {runs_on}; "
            "pass --device_target CPU to run it here",
            model_yaml,
        )
    return target


def _mindspore_has(target: str) -> bool:
    import mindspore as ms

    return bool(ms.hal.is_available(target))
