"""Softmax over the last dim, forward and backward, with an optional causal mask.

Forward, for one row x of length Tk:  y_j = exp(x_j - m) / sum_k exp(x_k - m), m = max_k x_k.
Subtracting the row max changes nothing mathematically (it cancels between numerator and
denominator) but keeps every exp() <= 1, so no overflow even for scores of 1e4.

Causal rule: with x of shape (..., Tq, Tk), Tq <= Tk, query row i may see key j only if
j <= i + (Tk - Tq). (Tq == Tk is the usual square mask; Tq < Tk is a block of new queries
attending to a longer cached past.) Masked entries get probability exactly 0, and the
kernel does not compute their exp at all.

Rows whose visible entries are all -inf (for example after masked_fill of a whole row)
have no finite score to normalise; exp(x - max) would be exp(-inf + inf) = NaN. We define
their softmax as all zeros instead, which is also what makes their gradient zero.

Backward: with s = sum_k dy_k y_k, dx_j = y_j (dy_j - s). (From dy_j/dx_k = y_j (delta_jk - y_k).)
Masked entries have y_j = 0 and so get dx_j = 0 without special handling.
"""

import numpy as np
from numba import njit, prange

from ._checks import check_softmax_backward, check_softmax_forward
from ._vecmath import fast_exp, row_dot, row_max, row_sum
from .tuning.threads import threads_for

# Single-thread cost per element (float32, reference machine), for `threads_for`.
FORWARD_NS = 0.9
BACKWARD_NS = 0.15


@njit(parallel=True, cache=True)
def _softmax_forward_kernel(x, y, Tq, causal):
    """y = softmax(x) row by row for C-contiguous x, y (R, Tk); with causal, row r is query r % Tq."""
    R, Tk = x.shape
    offset = Tk - Tq
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for r in prange(R):
        n = r % Tq + offset + 1 if causal else Tk  # keys 0..n-1 are visible
        xr = x[r, :n]
        yr = y[r]
        m = row_max(xr)
        if m == -np.inf:
            for j in range(Tk):  # every visible score is -inf: defined as all zeros
                yr[j] = zero
        else:
            for j in range(n):
                yr[j] = fast_exp(xr[j] - m)
            inv = one / row_sum(yr[:n])  # multiply by 1/sum: 1 division per row, not per entry
            for j in range(n):
                yr[j] *= inv
            for j in range(n, Tk):
                yr[j] = zero


@njit(parallel=True, cache=True)
def _softmax_backward_kernel(y, dy, dx):
    """dx = y * (dy - sum(dy * y)) row by row for C-contiguous (R, Tk) arrays."""
    R, Tk = y.shape
    for r in prange(R):
        s = row_dot(dy[r], y[r])
        for j in range(Tk):
            dx[r, j] = y[r, j] * (dy[r, j] - s)


def softmax_forward(x, causal=False):
    """Softmax over the last dim of x (float32/float64, any shape with ndim >= 1).

    With causal=True, x is (..., Tq, Tk) and entry (i, j) is masked unless
    j <= i + (Tk - Tq). Rows whose visible entries are all -inf give zeros.
    """
    check_softmax_forward(x, causal)
    if x.size == 0:
        return np.zeros(x.shape, dtype=x.dtype)
    Tk = x.shape[-1]
    Tq = x.shape[-2] if causal else 1
    x2 = np.ascontiguousarray(x).reshape(-1, Tk)  # (R, Tk)
    y = np.empty_like(x2)  # (R, Tk)
    with threads_for(x.size * FORWARD_NS / 1000):
        _softmax_forward_kernel(x2, y, Tq, bool(causal))
    return y.reshape(x.shape)


def softmax_backward(y, dy):
    """Gradient of softmax: dx = y * (dy - sum(dy * y, axis=-1, keepdims=True)); y is the forward output."""
    check_softmax_backward(y, dy)
    if y.size == 0:
        return np.zeros(y.shape, dtype=y.dtype)
    Tk = y.shape[-1]
    y2 = np.ascontiguousarray(y).reshape(-1, Tk)  # (R, Tk)
    dy2 = np.ascontiguousarray(dy).reshape(-1, Tk)  # (R, Tk)
    dx = np.empty_like(y2)  # (R, Tk)
    with threads_for(y.size * BACKWARD_NS / 1000):
        _softmax_backward_kernel(y2, dy2, dx)
    return dx.reshape(y.shape)


