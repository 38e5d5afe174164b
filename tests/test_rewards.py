"""Programmable rewards (mindrlhf.rewards): resolving specs, calling functions, TRL's None rule, user errors,
and the built-in accuracy and format rewards."""

import logging
import textwrap

import numpy as np
import pytest

from mindrlhf import rewards
from mindrlhf.configs.loader import ConfigError


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    """An importable module `user_rewards_h16` with good and bad reward functions."""
    (tmp_path / "user_rewards_h16.py").write_text(
        textwrap.dedent(
            """
            def length(prompts, responses):
                return [float(len(r)) for r in responses]

            def needs_answer(prompts, responses, answer, hint=""):
                return [1.0 if r == a else 0.0 for r, a in zip(responses, answer)]

            def takes_all(prompts, responses, **columns):
                return [float(len(columns))] * len(responses)

            def explodes_on_boom(prompts, responses):
                return [1.0 / (r != "boom") for r in responses]

            def too_short(prompts, responses):
                return [1.0]

            def returns_text(prompts, responses):
                return [1.0 if r != "x" else "1.0" for r in responses]

            def returns_nan(prompts, responses):
                return [float("nan")] * len(responses)

            def returns_scalar(prompts, responses):
                return 1.0

            def one_arg(responses):
                return [0.0] * len(responses)

            NOT_A_FUNCTION = 3
            """
        )
    )
    (tmp_path / "broken_dep_h16.py").write_text("import no_such_package_h16\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_rewards_h16"


# -------------------------------------------------------------------------------------------------- load_reward_funcs


def test_load_builtins_and_user_functions(user_module):
    funcs = rewards.load_reward_funcs(
        ["mindrlhf.rewards:accuracy", "mindrlhf.rewards:format_reward", f"{user_module}:length"]
    )
    assert funcs[0] is rewards.accuracy and funcs[1] is rewards.format_reward
    assert funcs[2](["p"], ["abc"]) == [3.0]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("mindrlhf.rewards.accuracy", "must look like 'package.module:function'"),
        ("a:b:c", "must look like"),
        (":accuracy", "must look like"),
        ("no_such_module_h16:f", "cannot import module 'no_such_module_h16'"),
        ("broken_dep_h16:f", "No module named 'no_such_package_h16'"),
        ("user_rewards_h16:missing", "has no attribute 'missing'"),
        ("user_rewards_h16:NOT_A_FUNCTION", "is a int, not a function"),
        ("user_rewards_h16:one_arg", "cannot be called as func(prompts, responses, **columns)"),
    ],
)
def test_load_errors_name_the_spec(user_module, spec, message):
    with pytest.raises(ConfigError) as info:
        rewards.load_reward_funcs(["mindrlhf.rewards:accuracy", spec])
    text = str(info.value)
    assert "reward_funcs" in text and repr(spec) in text and message in text


def test_required_columns(user_module):
    mod = __import__(user_module)
    assert rewards.required_columns(rewards.accuracy) == ["answer"]
    assert rewards.required_columns(rewards.format_reward) == []
    assert rewards.required_columns(mod.needs_answer) == ["answer"]  # `hint` has a default
    assert rewards.required_columns(mod.takes_all) == []

    def keyword_only(prompts, responses, *, answer, level):
        return [0.0] * len(responses)

    assert rewards.required_columns(keyword_only) == ["answer", "level"]


# ---------------------------------------------------------------------------------------------------- compute_rewards


def test_weighted_sum_and_none_as_trl():
    def first(prompts, responses):
        return [1.0, None, 0.0]

    def second(prompts, responses):
        return [0.5, 0.5, None]

    total, per = rewards.compute_rewards([first, second], [2.0, -1.0], ["a", "b", "c"], ["x", "y", "z"], {})
    # sample 0: 2*1 - 0.5; sample 1: None contributes 0, -0.5; sample 2: 2*0 + 0
    np.testing.assert_array_equal(total, [1.5, -0.5, 0.0])
    np.testing.assert_array_equal(per["first"], [1.0, np.nan, 0.0])
    np.testing.assert_array_equal(per["second"], [0.5, 0.5, np.nan])
    total, _ = rewards.compute_rewards([first, second], None, ["a", "b", "c"], ["x", "y", "z"])
    np.testing.assert_array_equal(total, [1.5, 0.5, 0.0])  # weights default to 1


def test_all_none_sample_gets_zero_and_a_warning(caplog):
    def never(prompts, responses):
        return [None, 1.0]

    with caplog.at_level(logging.WARNING, logger="mindrlhf.rewards"):
        total, _ = rewards.compute_rewards([never], [3.0], ["p0", "p1"], ["r0", "r1"])
    np.testing.assert_array_equal(total, [0.0, 3.0])
    assert "every reward function returned None for 1 of 2 samples" in caplog.text and "'r0'" in caplog.text


def test_columns_go_to_functions_that_name_them(user_module):
    mod = __import__(user_module)
    cols = {"answer": ["x", "q"], "source": ["s1", "s2"]}
    total, per = rewards.compute_rewards(
        [mod.needs_answer, mod.takes_all, rewards.format_reward],
        [1.0, 1.0, 1.0],
        ["p", "p"],
        ["x", "7"],
        cols,
    )
    np.testing.assert_array_equal(per["needs_answer"], [1.0, 0.0])
    np.testing.assert_array_equal(per["takes_all"], [2.0, 2.0])  # **columns receives both columns
    np.testing.assert_array_equal(per["format_reward"], [0.0, 1.0])
    np.testing.assert_array_equal(total, [3.0, 3.0])


def test_repeated_names_are_suffixed():
    a = rewards.make_format_reward(r"\d+")
    b = rewards.make_format_reward(r"[a-z]+")
    _, per = rewards.compute_rewards([a, b], None, ["p"], ["12"])
    assert list(per) == ["format_reward", "format_reward_2"]
    np.testing.assert_array_equal([per["format_reward"][0], per["format_reward_2"][0]], [1.0, 0.0])


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "explodes_on_boom",
            "raised ZeroDivisionError: float division by zero first on sample 2 (prompt 'p2', response 'boom')",
        ),
        ("too_short", "returned 1 values for 3 responses"),
        ("returns_text", "returned '1.0' (str) for sample 1 (prompt 'p1', response 'x')"),
        ("returns_nan", "returned nan (float) for sample 0"),
        ("returns_scalar", "returned a float, expected a list"),
    ],
)
def test_bad_functions_stop_with_one_clear_error(user_module, name, message):
    func = getattr(__import__(user_module), name)
    with pytest.raises(ConfigError) as info:
        rewards.compute_rewards([rewards.format_reward, func], None, ["p0", "p1", "p2"], ["ok", "x", "boom"])
    text = str(info.value)
    assert f"reward function {name!r}" in text and message in text, text


def test_weights_must_match_functions():
    with pytest.raises(ConfigError, match="reward_weights.*2 reward_weights for 1 reward_funcs"):
        rewards.compute_rewards([rewards.format_reward], [1.0, 2.0], ["p"], ["1"])


# ------------------------------------------------------------------------------------------------------------ built-ins


def test_accuracy_numeric_answers():
    responses = ["19", " 19\n", "19 apples", "119", "1 9", "19.0", "-3", "3", "", "the answer is 7"]
    answers = ["19", "19", "19", "19", "19", " 19 ", "-3", "-3", "19", "7"]
    assert rewards.accuracy([""] * 10, responses, answers) == [
        1.0,
        1.0,
        1.0,
        0.0,
        0.0,
        1.0,
        1.0,
        0.0,
        0.0,
        1.0,
    ]


def test_accuracy_text_answers_and_missing_answer():
    responses = ["Paris", "  Paris \n", "paris", "Paris France", "Paris", "Paris"]
    answers = ["Paris", "Paris", "Paris", "Paris  France", "", None]
    assert rewards.accuracy([""] * 6, responses, answers) == [1.0, 1.0, 0.0, 1.0, None, None]


def test_format_reward_default_and_custom():
    assert rewards.format_reward([""] * 5, ["19", " -3\n", "19 apples", "2.5", ""]) == [
        1.0,
        1.0,
        0.0,
        1.0,
        0.0,
    ]
    think = rewards.make_format_reward(r"<think>.*?</think>\s*\d+", name="think_format")
    assert think.__name__ == "think_format"
    assert think(["", ""], ["<think>a\nb</think> 4", "4 <think></think>"]) == [1.0, 0.0]
    with pytest.raises(Exception, match="unterminated|missing"):
        rewards.make_format_reward("(")


def test_accuracy_and_exact_match_differ_on_how_a_number_is_written():
    # the arithmetic demo's case: sum 20 reversed is "02"; the wrong response "2" equals it as a number only
    responses = ["2", "02", "91+3", "91"]
    answers = ["02", "02", "91", "91"]
    assert rewards.accuracy([""] * 4, responses, answers) == [1.0, 1.0, 1.0, 1.0]
    assert rewards.exact_match([""] * 4, responses, answers) == [0.0, 1.0, 0.0, 1.0]


def test_exact_match_strips_ends_only_and_skips_missing_answers():
    responses = ["19", " 19\n", "19 apples", "19.0", "1 9", "Paris", "paris", "x", "x"]
    answers = ["19", "19 ", "19", "19", "19", "\tParis", "Paris", "", None]
    assert rewards.exact_match([""] * 9, responses, answers) == [
        1.0,
        1.0,
        0.0,
        0.0,
        0.0,
        1.0,
        0.0,
        None,
        None,
    ]
    assert rewards.exact_match.__name__ == "exact_match"
    assert rewards.load_reward_funcs(["mindrlhf.rewards:exact_match"]) == [rewards.exact_match]
    assert rewards.required_columns(rewards.exact_match) == ["answer"]


def test_exact_match_normalize_hook():
    lower = rewards.make_exact_match(str.lower, name="exact_lower")
    assert lower.__name__ == "exact_lower"
    assert lower(["", "", ""], ["Paris", " PARIS ", "Paris France"], ["paris", "Paris", "paris france"]) == [
        1.0,
        1.0,
        1.0,
    ]
    spaces = rewards.make_exact_match(rewards.normalize_answer)
    assert spaces(["", ""], ["Paris   France", "ParisFrance"], ["Paris France", "Paris France"]) == [1.0, 0.0]
    # the hook sees the stripped strings: a normaliser that keeps only digits
    digits = rewards.make_exact_match(lambda s: "".join(c for c in s if c.isdigit()))
    assert digits([""] * 2, ["1 9", "91"], ["19", "19"]) == [1.0, 0.0]
