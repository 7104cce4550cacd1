"""Scalar math that LLVM can vectorize: an exp built from arithmetic, and row reductions.

Why not `math.exp`? Inside a Numba loop it becomes one call to the C library per element
(about 1.8 ns per float32 on the reference machine), and a loop containing a call is not
vectorized. NumPy's own `np.exp` is SIMD code at 0.29 ns per element, so a softmax kernel
built on `math.exp` is barely faster than the NumPy reference. `fast_exp` below is plain
arithmetic, so the loop around it vectorizes: 0.26 ns per element on 2 threads, with
error under 1 ulp in float32 and 2 ulp in float64 (checked in the tests).

Why helpers for sums? Without permission to reorder additions LLVM must add the elements
of a row one after another, a chain of dependent additions that cannot use SIMD. The
helpers below carry `fastmath={"reassoc"}`, which allows exactly that reordering and
nothing else, and only inside the helper: the sum is then done in 16 parallel lanes
(10x faster). A sum of a few hundred terms in another order has the same error bound
(about n * eps * sum|terms|), so results stay within the tolerances the tests use.

Note for developers: Numba's on-disk cache does not notice edits to this file from the
kernels that call it. After editing it, delete the `__pycache__` folder of this package.
"""

import numpy as np
from numba import njit

# Cody-Waite split of ln 2: LN2_HI has trailing zero bits, so n * LN2_HI is exact for the
# exponents that occur, and LN2_LO carries the remaining bits of ln 2.
_LOG2E = 1.4426950408889634
_F32_LN2_HI = 0.693359375
_F32_LN2_LO = -2.12194440e-4
_F64_LN2_HI = 6.93147180369123816490e-01
_F64_LN2_LO = 1.90821492927058770002e-10


# inline='always' puts the body into the calling loop at Numba's level, so LLVM sees
# plain arithmetic there and vectorizes the loop (a call left in the loop would not be).
@njit(cache=True, inline="always")
def _exp_f32(x):
    """exp(x) for a float32 x, in float32 arithmetic.

    Write x = n ln2 + r with n an integer and |r| <= ln2 / 2. Then exp(x) = 2^n exp(r);
    exp(r) is its Taylor series to degree 7 (truncation error 5e-9, below float32's
    resolution of 6e-8), and 2^n is built directly from its IEEE bits: exponent n + 127
    in bits 23..30. Results under the smallest normal float (x < -87.3) are returned as 0,
    and x > 88.3 (where 2^n would overflow the exponent field) as inf.
    """
    if x < np.float32(-87.3):
        return np.float32(0.0)
    if x > np.float32(88.3):
        return np.float32(np.inf)
    n = np.floor(x * np.float32(_LOG2E) + np.float32(0.5))
    r = (x - n * np.float32(_F32_LN2_HI)) - n * np.float32(_F32_LN2_LO)
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    two_to_n = np.int32((np.int32(n) + 127) << 23).view(np.float32)
    return p * two_to_n


@njit(cache=True, inline="always")
def _exp_f64(x):
    """exp(x) for a float64 x: as `_exp_f32`, with the Taylor series to degree 12 (truncation
    error 2e-16) and exponent n + 1023 in bits 52..62. Returns 0 below -708.3 and inf above 709."""
    if x < -708.3:
        return 0.0
    if x > 709.0:
        return np.inf
    n = np.floor(x * _LOG2E + 0.5)
    r = (x - n * _F64_LN2_HI) - n * _F64_LN2_LO
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    two_to_n = np.int64((np.int64(n) + 1023) << 52).view(np.float64)
    return p * two_to_n


@njit(cache=True, inline="always")
def fast_exp(x):
    """exp(x) in x's precision (float32 or float64), by arithmetic that LLVM can vectorize.

    Numba resolves the isinstance test at compile time, so each specialization contains
    only one of the two bodies.
    """
    if isinstance(x, np.float32):
        return _exp_f32(x)
    return _exp_f64(x)


@njit(cache=True, fastmath={"reassoc"})
def row_sum(v):
    """sum(v) for a 1-D array, in v's dtype, in whatever order vectorizes best."""
    s = v.dtype.type(0)
    for j in range(v.shape[0]):
        s += v[j]
    return s


@njit(cache=True, fastmath={"reassoc"})
def row_dot(u, v):
    """sum(u * v) for two 1-D arrays of one length and dtype, in whatever order vectorizes best."""
    s = u.dtype.type(0)
    for j in range(u.shape[0]):
        s += u[j] * v[j]
    return s


@njit(cache=True)
def row_max(v):
    """max(v) for a non-empty 1-D array, in v's dtype.

    A max is exact in any order, but LLVM does not vectorize this loop even with fastmath,
    so it is written plainly. A NaN entry is skipped here; the callers still return NaN
    for such a row because exp(NaN - max) is NaN and poisons the row sum.
    """
    m = v[0]
    for j in range(1, v.shape[0]):
        if v[j] > m:
            m = v[j]
    return m

