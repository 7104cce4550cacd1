"""Checks of settings, each failing with one sentence that names the setting.

A value of the wrong type is a TypeError, a value out of range a ValueError;
the sentence is the same. `bool` is refused wherever a number is expected: it
is an `int` subclass, but `batch_size=True` is a bug, not a request for one row.
"""

import math

import numpy as np


def check_int(name, value, minimum):
    """`value` must be an integer >= `minimum`."""
    message = f"{name} must be an integer >= {minimum}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(message)
    if value < minimum:
        raise ValueError(message)


def check_number(name, value, minimum=0, below=math.inf):
    """`value` must be a finite real number in [minimum, below)."""
    expected = f"a finite number >= {minimum}" if below == math.inf else f"a number in [{minimum}, {below})"
    message = f"{name} must be {expected}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(message)
    if not (minimum <= value < below and math.isfinite(value)):
        raise ValueError(message)
