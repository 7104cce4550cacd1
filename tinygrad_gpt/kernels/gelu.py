"""GELU activation, forward and backward, in PyTorch's two flavours.

approximate="none" (exact):  y = x * Phi(x),   Phi(x) = 0.5 (1 + erf(x / sqrt 2))
    dy/dx = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    Phi is the normal CDF, see `normal_cdf` for how each precision computes it.

approximate="tanh":  y = 0.5 x (1 + tanh(u)),   u = sqrt(2/pi) (x + 0.044715 x^3)
    The kernel uses the identity 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + exp(-2u)),
    so y = x * s with s = sigmoid(2u). It needs one exp instead of a tanh (Numba's tanh
    is a C-library call at 14 ns per element; `fast_exp` vectorizes), and it is more
    accurate for negative x, where 1 + tanh(u) cancels. For |x| large, exp(-2u) goes to
    0 or inf and s to 1 or 0, with no NaN.
    dy/dx = s + x * s (1 - s) * 2 du/dx,   du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
"""

import math

import numpy as np
from numba import njit, prange

from ._checks import check_gelu_backward, check_gelu_forward
from ._vecmath import fast_exp
from .reference import CUBIC, INV_SQRT_2, INV_SQRT_2PI, SQRT_2_OVER_PI  # the formulas' constants, defined once
from .tuning.threads import threads_for


# Per-element costs for `threads_for`, in ns. Not the measured single-thread costs
# (0.23 fwd, 0.34 bwd with FMA, float32, reference machine) but set higher on purpose,
# so that the baby GPT's GELU calls run on two threads, which measured faster there
# (bwd at (768, 512): 112 us on two threads, 135 us on one).
FORWARD_NS = 0.35
BACKWARD_NS = 0.5


@njit(cache=True, inline="always")
def _normal_cdf_f32(x):
    """Phi(x) for a float32 x, by arithmetic that vectorizes (relative error < 5e-7 * (1 + x^2)).

    Phi(x) = erfc(z) / 2 for x < 0 and 1 - erfc(z) / 2 for x >= 0, with z = |x| / sqrt 2.
    erfc(z) for z >= 0 is the Chebyshev-fitted formula of Numerical Recipes (Press et
    al., 3rd ed., section 6.2.2): t = 1 / (1 + z / 2), erfc(z) = t exp(-z^2 + P(t)), with
    relative error below 1.2e-7 everywhere. Going through erfc keeps the *relative* error
    small in the far negative tail, where Phi(x) is tiny and 1 + erf would cancel.
    Measured in float32: 4e-7 for |x| <= 2, growing like x^2 beyond (6e-6 at |x| = 8)
    because the argument -z^2 of exp is itself rounded to float32 (|x| = 8 makes it 32,
    whose float32 spacing is 4e-6).
    (math.erf is a C-library call at 9 ns per element that stops the loop vectorizing;
    this is 0.4 ns per element on 2 threads.)
    """
    f = np.float32
    z = abs(x) * f(INV_SQRT_2)
    t = f(1.0) / (f(1.0) + f(0.5) * z)
    p = f(0.17087277)
    p = p * t + f(-0.82215223)
    p = p * t + f(1.48851587)
    p = p * t + f(-1.13520398)
    p = p * t + f(0.27886807)
    p = p * t + f(-0.18628806)
    p = p * t + f(0.09678418)
    p = p * t + f(0.37409196)
    p = p * t + f(1.00002368)
    p = p * t + f(-1.26551223)
    half_erfc = f(0.5) * t * fast_exp(-z * z + p)
    return half_erfc if x < f(0.0) else f(1.0) - half_erfc


@njit(cache=True, inline="always")
def _normal_cdf_f64(x):
    """Phi(x) for a float64 x from the C library's erf, exact to double precision."""
    return 0.5 * (1.0 + math.erf(x * INV_SQRT_2))


@njit(cache=True, inline="always")
def normal_cdf(x):
    """The standard normal CDF Phi(x) in x's precision.

    float32 uses the vectorizable erfc formula of `_normal_cdf_f32` (relative error under
    5e-7 * (1 + x^2), a few float32 ulp where it matters); float64, the precision of the
    gradient checks, uses math.erf.
    Numba resolves the isinstance test at compile time.
    """
    if isinstance(x, np.float32):
        return _normal_cdf_f32(x)
    return _normal_cdf_f64(x)


# fastmath={"contract"} lets LLVM fuse each multiply and add (the polynomials of fast_exp
# and normal_cdf) into one FMA instruction, one rounding instead of two, so results are no
# less accurate; no other fast-math liberty is taken.
@njit(parallel=True, cache=True, fastmath={"contract"})
def _gelu_forward_kernel(x, y, tanh_form):
    """y = gelu(x) elementwise for flat C-contiguous x, y."""
    t = x.dtype.type  # constants in x's precision, so float32 stays float32
    one, two = t(1.0), t(2.0)
    c, cubic = t(SQRT_2_OVER_PI), t(CUBIC)
    if tanh_form:
        for i in prange(x.shape[0]):
            u = c * (x[i] + cubic * x[i] * x[i] * x[i])
            y[i] = x[i] / (one + fast_exp(-two * u))
    else:
        for i in prange(x.shape[0]):
            y[i] = x[i] * normal_cdf(x[i])


@njit(parallel=True, cache=True, fastmath={"contract"})  # FMA, as in the forward
def _gelu_backward_kernel(x, dy, dx, tanh_form):
    """dx = dy * gelu'(x) elementwise for flat C-contiguous x, dy, dx."""
    t = x.dtype.type
    half, one, two, three = t(0.5), t(1.0), t(2.0), t(3.0)
    c, cubic, inv_sqrt2pi = t(SQRT_2_OVER_PI), t(CUBIC), t(INV_SQRT_2PI)
    if tanh_form:
        for i in prange(x.shape[0]):
            xi = x[i]
            u = c * (xi + cubic * xi * xi * xi)
            s = one / (one + fast_exp(-two * u))
            du = c * (one + three * cubic * xi * xi)
            dx[i] = dy[i] * (s + xi * s * (one - s) * two * du)
    else:
        for i in prange(x.shape[0]):
            xi = x[i]
            pdf = inv_sqrt2pi * fast_exp(-half * xi * xi)
            dx[i] = dy[i] * (normal_cdf(xi) + xi * pdf)


def gelu_forward(x, approximate="none"):
    """GELU of x (any shape, float32/float64); approximate is 'none' (erf) or 'tanh' as in PyTorch."""
    tanh_form = check_gelu_forward(x, approximate)
    flat = np.ascontiguousarray(x).reshape(-1)  # (n,)
    y = np.empty_like(flat)  # (n,)
    with threads_for(x.size * FORWARD_NS / 1000):
        _gelu_forward_kernel(flat, y, tanh_form)
    return y.reshape(x.shape)


def gelu_backward(x, dy, approximate="none"):
    """Gradient of GELU: dx = dy * gelu'(x), where x is the forward input."""
    tanh_form = check_gelu_backward(x, dy, approximate)
    flat_x = np.ascontiguousarray(x).reshape(-1)  # (n,)
    flat_dy = np.ascontiguousarray(dy).reshape(-1)  # (n,)
    dx = np.empty_like(flat_x)  # (n,)
    with threads_for(x.size * BACKWARD_NS / 1000):
        _gelu_backward_kernel(flat_x, flat_dy, dx, tanh_form)
    return dx.reshape(x.shape)
