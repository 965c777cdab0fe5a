"""The two boundary checks every setting meets (nrknet.utils.checks)."""

import math

import pytest

from nrknet.errors import ConfigError
from nrknet.utils.checks import choice, number


def test_choice_returns_a_known_value_and_lists_the_options_otherwise():
    assert choice("mixing", "sum", ("conv1x1", "sum")) == "sum"
    with pytest.raises(ConfigError) as caught:
        choice("mixing", "attention", ("conv1x1", "sum"))
    assert str(caught.value) == "mixing='attention' is not known; expected one of conv1x1, sum"


@pytest.mark.parametrize(
    ("value", "options"), [(1, (True, False)), (0, (True, False)), (True, (1, 2))]
)
def test_choice_keeps_booleans_apart_from_the_numbers_they_equal(value, options):
    with pytest.raises(ConfigError, match="is not known"):
        choice("flag", value, options)
    assert choice("flag", False, (True, False)) is False


@pytest.mark.parametrize(
    ("value", "bounds", "message"),
    [
        (0, {"minimum": 1, "integer": True}, "width must be an integer >= 1, got 0"),
        (2.0, {"integer": True}, "width must be an integer, got 2.0"),
        (True, {}, "width must be a number, got True"),
        ("8", {}, "width must be a number, got '8'"),
        (math.nan, {"minimum": 0}, "width must be a finite number, got nan"),
        (math.inf, {}, "width must be a finite number, got inf"),
        (0.7, {"minimum": 0, "maximum": 0.5}, "width must be a number >= 0 and <= 0.5, got 0.7"),
        (-1, {"maximum": 4}, None),
    ],
)
def test_number_refuses_what_is_not_a_finite_number_in_range(value, bounds, message):
    if message is None:
        assert number("width", value, **bounds) == value
        return
    with pytest.raises(ConfigError) as caught:
        number("width", value, **bounds)
    assert str(caught.value) == message


def test_number_above_is_a_strict_bound():
    assert number("lr", 0.5, above=0) == 0.5
    with pytest.raises(ConfigError, match=r"^lr must be a number > 0, got 0$"):
        number("lr", 0, above=0)
