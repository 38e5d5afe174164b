"""The one config loader: YAML files, typed dataclasses, `--key value` overrides, errors that name the field.

Every config in mindrlhf (model, PPO, parallel, ...) is a dataclass filled by `dataclass_from_dict`, which checks
each value against the field's type annotation and raises `ConfigError` naming the file and the dotted field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import typing
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import yaml

from mindrlhf.errors import MindRLHFError


class ConfigError(MindRLHFError):
    """A user-fixable problem in a config file or override. The message names the file and the field."""

    def __init__(self, message: str, source: Optional[str] = None, field: Optional[str] = None):
        where = []
        if source:
            where.append(str(source))
        if field:
            where.append(f"field '{field}'")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.source = source
        self.field = field
        self.problems: List[str] = [str(self)]  # several when `combined` (one per wrong field)

    @classmethod
    def combined(cls, errors: List[ConfigError]) -> ConfigError:
        """One error carrying every problem of `errors` (entry points list them one per line)."""
        problems = [p for e in errors for p in e.problems]
        if len(problems) == 1:
            return errors[0]
        exc = cls(f"{len(problems)} problems:\n  - " + "\n  - ".join(problems))
        exc.problems = problems
        exc.source, exc.field = (
            errors[0].source,
            errors[0].field,
        )  # the first problem's, for callers that look
        return exc


_collector = threading.local()


@contextlib.contextmanager
def collecting_problems() -> Iterator[List[ConfigError]]:
    """Inside the block, `report_problem` appends to the yielded list instead of raising (one YAML, all its
    problems: a config's `__post_init__` checks keep going after the first wrong field)."""
    outer = getattr(_collector, "errors", None)
    _collector.errors = []
    try:
        yield _collector.errors
    finally:
        _collector.errors = outer


def report_problem(error: ConfigError) -> None:
    """Raise `error`, or record it when inside `collecting_problems()`."""
    errors = getattr(_collector, "errors", None)
    if errors is None:
        raise error
    errors.append(error)


def load_yaml(path: str) -> Dict[str, Any]:
    """Read a YAML mapping from `path`; a missing file, a syntax error or a non-mapping gets one clear ConfigError."""
    if not os.path.isfile(path):
        raise ConfigError("file not found (give the path of a YAML config file)", source=path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"invalid YAML{line}: {getattr(exc, 'problem', exc)}", source=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc})", source=path) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}", source=path)
    return data


def get_section(
    data: Dict[str, Any], dotted: str, source: Optional[str] = None, required: bool = True
) -> Any:
    """`get_section(d, "model.model_config")` -> d["model"]["model_config"], with a clear error when missing."""
    node: Any = data
    walked = []
    for key in dotted.split("."):
        walked.append(key)
        if not isinstance(node, dict) or key not in node:
            if required:
                raise ConfigError("missing section (MindFormers run YAMLs have it)", source, ".".join(walked))
            return None
        node = node[key]
    return node


_FLOAT_LIKE = (int, float)


def _check_value(value: Any, tp: Any, source: Optional[str], field: str) -> Any:
    """Check/coerce one value against a type annotation; return the (possibly coerced) value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        # MindFormers writes "None" as a string for unset optional fields.
        if isinstance(value, str) and value.strip().lower() in ("none", "null", "") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, source, field)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if tp is Any:
        return value
    if origin in (list, List, tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}", source, field)
        inner = args[0] if args else Any
        items = [_check_value(v, inner, source, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin in (tuple, Tuple) else items
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", source, field)
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"expected true/false, got {value!r}", source, field)
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"expected an integer, got {value!r}", source, field)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"expected an integer, got {value!r}", source, field)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"expected a number, got {value!r}", source, field)
        if isinstance(value, _FLOAT_LIKE):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads `1e-5` (no dot) as a string; accept it as the number it obviously is.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"expected a number, got {value!r}", source, field)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"expected a string, got {value!r}", source, field)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", source, field)
        return dataclass_from_dict(tp, value, source=source, prefix=field)
    return value


def dataclass_from_dict(
    cls: Any,
    data: Dict[str, Any],
    source: Optional[str] = None,
    prefix: str = "",
    allow_unknown: bool = True,
) -> Any:
    """Build dataclass `cls` from `data`, checking every known field's type.

    Unknown keys are ignored when `allow_unknown` (MindFormers YAMLs carry many we do not use), otherwise they
    are an error (our own configs, where an unknown key is a typo). Missing fields without a default are an error.
    Every problem is reported at once (one ConfigError whose `problems` lists them): a mistyped field keeps its
    default so the dataclass's own `__post_init__` checks still run, and those checks record each failure
    (`report_problem`) instead of stopping at the first; the file is attached to each.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    errors: List[ConfigError] = []  # every problem of this mapping, reported together
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            if not allow_unknown:
                known = ", ".join(sorted(fields))
                errors.append(ConfigError(f"unknown field (known fields: {known})", source, name))
            continue
        try:
            kwargs[key] = _check_value(value, hints[key], source, name)
        except ConfigError as exc:  # the field keeps its default, so the checks below still run
            errors.append(exc)
    for key, f in fields.items():
        if key not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            name = f"{prefix}.{key}" if prefix else key
            errors.append(ConfigError("required field is missing", source, name))
    if any(
        k not in kwargs and f.default is f.default_factory is dataclasses.MISSING for k, f in fields.items()
    ):
        raise ConfigError.combined(errors)  # cannot build the object to run its own checks
    with collecting_problems() as checks:
        try:
            obj = cls(**kwargs)
        except ConfigError as exc:
            checks.append(exc)
        except (ArithmeticError, TypeError, ValueError):
            if not (errors or checks):  # not a consequence of a field already reported: a bug
                raise
    errors.extend(_with_source(exc, source, prefix) for exc in checks)
    if errors:
        raise ConfigError.combined(errors)
    return obj


def _with_source(exc: ConfigError, source: Optional[str], prefix: str) -> ConfigError:
    """A `__post_init__` error (raised without a file) with the file and the dotted field attached."""
    if exc.source is not None or source is None or len(exc.problems) > 1:
        return exc
    field = f"{prefix}.{exc.field}" if prefix and exc.field else exc.field
    return ConfigError(str(exc).split(": ", 1)[-1] if exc.field else str(exc), source, field)


def parse_overrides(argv: Iterable[str]) -> Dict[str, str]:
    """Turn `["--a.b", "1", "--c=x"]` into `{"a.b": "1", "c": "x"}`; values stay strings until typed."""
    out: Dict[str, str] = {}
    items = list(argv)
    i = 0
    while i < len(items):
        tok = items[i]
        if not tok.startswith("--") or len(tok) <= 2:
            raise ConfigError(f"override {tok!r} is not of the form --key value or --key=value")
        key = tok[2:]
        if "=" in key:
            key, val = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise ConfigError(f"override --{key} has no value")
            val = items[i + 1]
            i += 2
        out[key.replace("-", "_")] = val
    return out


def apply_overrides(data: Dict[str, Any], overrides: Dict[str, str]) -> Dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); values are parsed as YAML scalars (`1e-5`, `true`, `[1, 2]`)."""
    import copy

    out = copy.deepcopy(data)
    for dotted, raw in overrides.items():
        try:
            value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        except yaml.YAMLError:
            value = raw
        node = out
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set '{dotted}': '{key}' is not a section", field=dotted)
        node[keys[-1]] = value
    return out
