"""Input checks shared by the kernel wrappers.

A Numba kernel fed the wrong dtype either compiles a new, unintended specialization or
fails with a long typing traceback; fed an out-of-range index it reads or writes memory
it does not own. So every public wrapper checks its inputs here first and raises one
clear sentence naming the input and what was expected.
"""

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_float_array(name, x, ndim=None, min_ndim=None):
    """Raise unless `x` is an ndarray of float32/float64 with the given number of dims."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}.")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}.")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}.")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims, got shape {x.shape}.")


def check_same_dtype(name, x, ref_name, ref):
    """Raise unless `x` has the dtype of `ref` (kernels never mix precisions)."""
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} must have the same dtype as {ref_name} ({ref.dtype}), got {x.dtype}.")


def check_shape(name, x, shape):
    """Raise unless `x.shape == shape`."""
    if x.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {x.shape}.")


def as_index_array(name, idx, low, high, allowed=None):
    """Return `idx` as an int64 array after checking low <= idx < high (or idx == allowed).

    The kernels index rows with these values without bounds checks, so an index out of
    range must be caught here rather than read past the end of an array.
    """
    if not isinstance(idx, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of integers, got {type(idx).__name__}.")
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {idx.dtype}.")
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    bad = (idx < low) | (idx >= high)
    if allowed is not None:
        bad &= idx != allowed
    if bad.any():
        value = idx[bad].flat[0]
        extra = "" if allowed is None else f" or equal to {allowed}"
        raise ValueError(f"{name} must lie in [{low}, {high}){extra}, got {value}.")
    return idx


def as_scalar(name, value, dtype):
    """Return `value` (a Python or NumPy real number, or a 0-d array) as a `dtype` scalar."""
    if isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise ValueError(f"{name} must be a scalar or a 0-d array, got shape {value.shape}.")
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}.")
    return dtype.type(value)
