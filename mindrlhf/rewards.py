"""Rewards you can program: Python functions that score decoded responses (issue 16.3), and two built-ins.

A reward function is any callable

    func(prompts: list[str], responses: list[str], **columns) -> list[float | None]     (one entry per response)

where `columns` are the prompt's extra dataset string columns as lists of the same length (e.g. `answer=[...]`).
A function receives the columns its signature names (all of them if it takes `**kwargs`); a keyword parameter
without a default is a column the dataset must have (`required_columns`). `None` means "not applicable to this
sample" (TRL's convention, e.g. a math reward on a code prompt).

Configs name functions as "package.module:function" (`reward_funcs` in YAML or on the command line, with
`reward_weights`); `load_reward_funcs` resolves them and `compute_rewards` calls them once per batch.

Built-ins (both read the dataset's `answer` column; pick by what "equal" should mean for your task):
    mindrlhf.rewards:accuracy        1.0 if the response's answer is *math-equivalent* to `answer`: numbers are
                                     compared as numbers, so "02", "2.0" and "2 apples" all match "2" (the
                                     convention of TRL's math_verify-based accuracy_reward)
    mindrlhf.rewards:exact_match     1.0 if the response *string* equals `answer` after stripping surrounding
                                     whitespace: "02" does not match "2" (digit strings, codes, labels);
                                     make_exact_match(normalize) for your own normalisation (e.g. str.lower)
    mindrlhf.rewards:format_reward   1.0 if the whole response is one number (the arithmetic demo's format)
    make_format_reward(pattern)      a format reward for your own regex; expose it from your module:
                                         # my_rewards.py
                                         from mindrlhf.rewards import make_format_reward
                                         think_format = make_format_reward(r"<think>.*?</think>.*", "think_format")
                                     and use `reward_funcs: ["my_rewards:think_format"]`.

Errors a user can cause (a spec that does not resolve, a function that raises or returns the wrong length or a
non-number) raise one `ConfigError` naming the function and the first offending sample.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import numbers
import re
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from mindrlhf.configs.loader import ConfigError

logger = logging.getLogger(__name__)

RewardFunc = Callable[..., Sequence[Optional[float]]]

_FIELD = "reward_funcs"
_SHOW = 120  # characters of a prompt / response quoted in an error message


# ----------------------------------------------------------------------------------------------------------------
# Resolving and inspecting reward functions
# ----------------------------------------------------------------------------------------------------------------


def load_reward_funcs(specs: Sequence[str]) -> List[RewardFunc]:
    """Resolve each "package.module:function" spec to its callable, in order.

    The module is imported with `importlib.import_module`, so it must be importable (installed, or on
    PYTHONPATH / in the working directory). Raises ConfigError naming the spec when it is malformed, its module
    cannot be imported, the attribute is missing or not callable, or it cannot take (prompts, responses).
    """
    funcs = []
    for spec in specs:
        module_name, sep, attr = str(spec).partition(":")
        if not sep or not module_name or not attr or ":" in attr:
            raise ConfigError(
                f"reward function {spec!r} must look like 'package.module:function' "
                "(e.g. 'mindrlhf.rewards:accuracy')",
                field=_FIELD,
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ConfigError(
                f"reward function {spec!r}: cannot import module {module_name!r} ({type(err).__name__}: {err}); "
                "is it installed or on PYTHONPATH?",
                field=_FIELD,
            ) from err
        func = getattr(module, attr, None)
        if func is None:
            raise ConfigError(
                f"reward function {spec!r}: module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                f"attribute {attr!r}",
                field=_FIELD,
            )
        if not callable(func):
            raise ConfigError(
                f"reward function {spec!r} is a {type(func).__name__}, not a function", field=_FIELD
            )
        try:
            inspect.signature(func).bind([], [], **{c: [] for c in required_columns(func)})
        except TypeError as err:
            raise ConfigError(
                f"reward function {spec!r} cannot be called as func(prompts, responses, **columns): {err}",
                field=_FIELD,
            ) from err
        funcs.append(func)
    return funcs


def required_columns(func: RewardFunc) -> List[str]:
    """Dataset columns `func` needs: its parameters after (prompts, responses) that have no default.

    `def f(prompts, responses, answer, hint="")` needs ["answer"]; `**kwargs` needs nothing. The trainer checks
    the dataset has these columns before compiling anything.
    """
    params = list(inspect.signature(func).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    rest = params[2:] if len(params) >= 2 and all(p.kind in positional for p in params[:2]) else params
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in rest if p.kind in keyword and p.default is inspect.Parameter.empty]


def reward_func_names(funcs: Sequence[RewardFunc]) -> List[str]:
    """Metric names of the functions: `__name__` (as TRL), with "_2", "_3", ... appended to repeats."""
    names, seen = [], {}
    for func in funcs:
        name = getattr(func, "__name__", type(func).__name__)
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return names


def _columns_for(func: RewardFunc, columns: Mapping[str, Sequence[str]]) -> Dict[str, Sequence[str]]:
    params = inspect.signature(func).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(columns)
    names = {p.name for p in params}
    return {k: v for k, v in columns.items() if k in names}


# ----------------------------------------------------------------------------------------------------------------
# Calling them
# ----------------------------------------------------------------------------------------------------------------


def compute_rewards(
    funcs: Sequence[RewardFunc],
    weights: Optional[Sequence[float]],
    prompts: Sequence[str],
    responses: Sequence[str],
    columns: Optional[Mapping[str, Sequence[str]]] = None,
) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Call every reward function on the batch and combine: total = sum_k w_k r_k. Returns (total [B] float64,
    per_function {name: [B] float64}), names from `reward_func_names`.

    None follows TRL's GRPOTrainer: a None becomes NaN in per_function (so per-function metrics take nanmean)
    and contributes 0 to the total (`nansum` over functions); a sample for which every function returned None
    gets total 0 and a warning. weights None means 1 for every function.
    Raises ConfigError naming the function (and the first offending sample index, prompt and response) when a
    function raises, returns a non-sequence or the wrong number of values, or a value that is not a finite
    number or None (bool counts as a number: True = 1.0).
    """
    prompts, responses = list(prompts), list(responses)
    columns = dict(columns or {})
    batch = len(responses)
    if len(prompts) != batch or any(len(v) != batch for v in columns.values()):
        lengths = {"prompts": len(prompts), **{k: len(v) for k, v in columns.items()}}
        raise ValueError(
            f"compute_rewards needs {batch} entries everywhere (one per response), got {lengths}"
        )
    weights = [1.0] * len(funcs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(funcs):
        raise ConfigError(
            f"{len(weights)} reward_weights for {len(funcs)} reward_funcs", field="reward_weights"
        )
    names = reward_func_names(funcs)
    per_function = {}
    for func, name in zip(funcs, names):
        per_function[name] = _call_one(func, name, prompts, responses, _columns_for(func, columns))
    stacked = np.stack([per_function[n] for n in names], axis=1) if names else np.full((batch, 0), np.nan)
    total = np.nansum(stacked * np.asarray(weights, dtype=np.float64), axis=1)
    all_none = np.all(np.isnan(stacked), axis=1) if names else np.zeros(batch, bool)
    if all_none.any():
        i = int(np.flatnonzero(all_none)[0])
        logger.warning(
            "every reward function returned None for %d of %d samples (total reward 0), first: sample %d %s",
            int(all_none.sum()),
            batch,
            i,
            _sample_text(prompts, responses, i),
        )
    return total, per_function


def _call_one(func, name, prompts, responses, columns) -> np.ndarray:
    try:
        values = func(prompts, responses, **columns)
    except Exception as err:  # noqa: BLE001 - any failure of user code becomes one user error naming it
        raise ConfigError(
            _raised_message(func, name, err, prompts, responses, columns), field=_FIELD
        ) from err
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(
            f"reward function {name!r} returned a {type(values).__name__}, expected a list of one float (or "
            f"None) per response ({len(responses)} responses)",
            field=_FIELD,
        )
    if len(values) != len(responses):
        raise ConfigError(
            f"reward function {name!r} returned {len(values)} values for {len(responses)} responses "
            "(it must return one float or None per response)",
            field=_FIELD,
        )
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if value is None:
            out[i] = np.nan
            continue
        if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise ConfigError(
                f"reward function {name!r} returned {value!r} ({type(value).__name__}) for sample {i} "
                f"{_sample_text(prompts, responses, i)}; expected a finite float, or None for 'not applicable'",
                field=_FIELD,
            )
        out[i] = float(value)
    return out


def _raised_message(func, name, err, prompts, responses, columns) -> str:
    """Find the first sample that makes `func` raise on its own, to name it in the error."""
    where = "on the batch (each sample alone works)"
    for i in range(len(responses)):
        try:
            func(prompts[i : i + 1], responses[i : i + 1], **{k: v[i : i + 1] for k, v in columns.items()})
        except Exception:  # noqa: BLE001
            where = f"first on sample {i} {_sample_text(prompts, responses, i)}"
            break
    return f"reward function {name!r} raised {type(err).__name__}: {err} {where}"


def _sample_text(prompts, responses, i) -> str:
    def cut(s):
        s = str(s)
        return repr(s if len(s) <= _SHOW else s[:_SHOW] + "...")

    return f"(prompt {cut(prompts[i])}, response {cut(responses[i])})"


# ----------------------------------------------------------------------------------------------------------------
# Built-in reward functions
# ----------------------------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


def normalize_answer(text: str) -> str:
    """Strip the ends and collapse every run of whitespace to one space: ' 12  apples\\n' -> '12 apples'."""
    return " ".join(str(text).split())


def extract_number(text: str) -> Optional[float]:
    """The first number-like token of `text` ("-3", "+4", "19", "2.50", ".5") as a float, or None."""
    match = _NUMBER.search(str(text))
    return float(match.group()) if match else None


def accuracy(prompts: List[str], responses: List[str], answer: List[str]) -> List[Optional[float]]:
    """Math-equivalence accuracy against the dataset's `answer` column: 1.0 right, 0.0 wrong, None not applicable.

    The convention of TRL's `accuracy_reward` (which verifies with math_verify: the same *value* counts, however
    it is written), reduced to plain numbers and text: "02" and "2.0" match "2". When the answer is a string
    whose exact spelling matters (a reversed digit string, a code, a label), use `exact_match`.

    - An answer that is a number ("19", "-3", "2.5" after `normalize_answer`) is compared numerically with the
      first number-like token of the response, so "19", " 19\\n" and "19 apples" match "19" while "119", "1 9"
      and "191" do not; "19.0" matches "19".
    - Any other answer is compared with the whole response after `normalize_answer` (case-sensitive).
    - An empty or missing answer gives None (TRL's accuracy_reward returns None when the gold answer cannot be
      parsed), so the sample does not count for this function.
    """
    rewards: List[Optional[float]] = []
    for response, gold in zip(responses, answer):
        gold = normalize_answer(gold) if gold is not None else ""
        if not gold:
            rewards.append(None)
        elif _NUMBER.fullmatch(gold):
            rewards.append(1.0 if extract_number(response) == float(gold) else 0.0)
        else:
            rewards.append(1.0 if normalize_answer(response) == gold else 0.0)
    return rewards


def make_exact_match(
    normalize: Optional[Callable[[str], str]] = None, name: str = "exact_match"
) -> RewardFunc:
    """A reward function scoring 1.0 when `normalize(response.strip()) == normalize(answer.strip())`, else 0.0.

    `normalize` (default: none) maps a stripped string to its comparison form, e.g. `str.lower` or
    `normalize_answer` (collapse inner whitespace). An empty answer (after stripping) or a missing one (None)
    gives None, "not applicable", as in `accuracy`. `name` becomes the function's metric name. Expose your
    variant from a module to use it by name: `exact_lower = make_exact_match(str.lower, "exact_lower")`.
    """
    norm = normalize if normalize is not None else (lambda text: text)

    def exact_match(prompts: List[str], responses: List[str], answer: List[str]) -> List[Optional[float]]:
        rewards: List[Optional[float]] = []
        for response, gold in zip(responses, answer):
            gold = "" if gold is None else str(gold).strip()
            if not gold:
                rewards.append(None)
            else:
                rewards.append(1.0 if norm(str(response).strip()) == norm(gold) else 0.0)
        return rewards

    exact_match.__name__ = exact_match.__qualname__ = name
    exact_match.__doc__ = (
        "String exact match against the `answer` column after stripping surrounding whitespace"
        + (f" and normalising with {getattr(normalize, '__name__', normalize)!r}" if normalize else "")
        + ": 1.0 equal, 0.0 not, None for an empty answer."
    )
    return exact_match


exact_match = make_exact_match()
"""`mindrlhf.rewards:exact_match`: "19" matches "19" and " 19\\n"; "02" does not match "2"; "19 apples" does not
match "19" (use `accuracy` for that)."""


DEFAULT_FORMAT_PATTERN = r"\s*[-+]?\d+(?:\.\d+)?\s*"
"""`format_reward`'s pattern: the whole response is one number (surrounding whitespace allowed)."""


def make_format_reward(pattern: str, name: str = "format_reward", flags: int = re.DOTALL) -> RewardFunc:
    """A reward function scoring 1.0 when the *whole* response matches `pattern` (`re.fullmatch`), else 0.0.

    `flags` default to re.DOTALL so `.` spans lines. `name` becomes the function's metric name. Raises
    re.error at once for a bad pattern.
    """
    compiled = re.compile(pattern, flags)

    def format_reward(prompts: List[str], responses: List[str]) -> List[float]:
        return [1.0 if compiled.fullmatch(str(r)) else 0.0 for r in responses]

    format_reward.__name__ = format_reward.__qualname__ = name
    format_reward.__doc__ = f"1.0 if the whole response matches {pattern!r}, else 0.0."
    return format_reward


format_reward = make_format_reward(DEFAULT_FORMAT_PATTERN)
