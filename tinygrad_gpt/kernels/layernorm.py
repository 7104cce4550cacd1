"""Layer normalisation over the last dim of a (N, C) array, forward and backward.

Forward, for one row x of length C (biased variance, as PyTorch):
    mean = sum(x) / C,  var = sum((x - mean)^2) / C,  rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd,  y = xhat * weight + bias
The variance is computed from the centred row (two passes), not as mean(x^2) - mean^2,
which cancels catastrophically when |mean| >> std. mean and rstd are returned so the
backward does not recompute them.

Backward, with g = dy * weight (the gradient reaching xhat):
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
three terms: the direct path through xhat, the path through the mean (every x_j moves
the mean), and the path through rstd (every x_j moves the variance). And
    dweight = sum over rows of dy * xhat,   dbias = sum over rows of dy.
"""

import numpy as np
from numba import njit, prange

from ._checks import check_layernorm_backward, check_layernorm_forward
from ._vecmath import row_dot, row_sum
from .tuning.threads import threads_for

# Rows per parallel task in the backward. dweight and dbias are sums over all N = B * T
# rows; each task sums its block of rows into its own partial row, and the partial rows
# are added at the end. This blocked sum is also more accurate than one running float32
# sum over thousands of rows (error ~ (ROWS_PER_TASK + N / ROWS_PER_TASK) * eps, not N * eps).
ROWS_PER_TASK = 32

# Single-thread cost per element (float32, reference machine), for `threads_for`.
FORWARD_NS = 0.25
BACKWARD_NS = 0.5


@njit(parallel=True, cache=True)
def _layernorm_forward_kernel(x, weight, bias, eps, y, mean, rstd):
    """Fill y (N, C), mean (N,), rstd (N,) from C-contiguous x (N, C); eps is in x's dtype."""
    N, C = x.shape
    n_cols = x.dtype.type(C)
    one = x.dtype.type(1)
    for n in prange(N):
        xr = x[n]
        yr = y[n]
        mu = row_sum(xr) / n_cols
        for j in range(C):
            yr[j] = xr[j] - mu  # centred row, reused below
        rs = one / np.sqrt(row_dot(yr, yr) / n_cols + eps)
        for j in range(C):
            yr[j] = yr[j] * rs * weight[j] + bias[j]
        mean[n] = mu
        rstd[n] = rs


@njit(parallel=True, cache=True)
def _layernorm_backward_kernel(dy, x, weight, mean, rstd, dx, partial_dweight, partial_dbias):
    """Fill dx (N, C) from C-contiguous dy, x (N, C), and per-task partial sums of dweight, dbias.

    Task t handles rows [t * ROWS_PER_TASK, (t + 1) * ROWS_PER_TASK) and adds its rows'
    contributions to row t of partial_dweight and partial_dbias (T, C), zero on entry.
    Tasks never write to the same memory, so the result does not depend on scheduling.
    """
    N, C = x.shape
    n_cols = x.dtype.type(C)
    for task in prange(partial_dweight.shape[0]):
        g = np.empty(C, dtype=x.dtype)  # scratch row: g = dy * weight
        part_w = partial_dweight[task]
        part_b = partial_dbias[task]
        for n in range(task * ROWS_PER_TASK, min((task + 1) * ROWS_PER_TASK, N)):
            dxr = dx[n]  # holds xhat until the last loop overwrites it with dx
            for j in range(C):
                g[j] = dy[n, j] * weight[j]
                dxr[j] = (x[n, j] - mean[n]) * rstd[n]
            for j in range(C):
                part_w[j] += dy[n, j] * dxr[j]
                part_b[j] += dy[n, j]
            g_mean = row_sum(g) / n_cols
            gx_mean = row_dot(g, dxr) / n_cols
            for j in range(C):
                dxr[j] = rstd[n] * (g[j] - g_mean - dxr[j] * gx_mean)


def layernorm_forward(x, weight, bias, eps):
    """Layer norm of the rows of x (N, C): returns (y (N, C), mean (N,), rstd (N,)), all in x's dtype.

    bias may be None (no shift).
    """
    eps = check_layernorm_forward(x, weight, bias, eps)
    N, C = x.shape
    bias = np.zeros(C, dtype=x.dtype) if bias is None else np.ascontiguousarray(bias)  # (C,)
    y = np.empty((N, C), dtype=x.dtype)  # (N, C)
    mean = np.empty(N, dtype=x.dtype)  # (N,)
    rstd = np.empty(N, dtype=x.dtype)  # (N,)
    with threads_for(x.size * FORWARD_NS / 1000):
        _layernorm_forward_kernel(np.ascontiguousarray(x), np.ascontiguousarray(weight), bias, eps, y, mean, rstd)
    return y, mean, rstd


def layernorm_backward(dy, x, weight, mean, rstd):
    """Gradients of layer norm: returns (dx (N, C), dweight (C,), dbias (C,)) in x's dtype.

    mean and rstd are the ones `layernorm_forward` returned. dbias is always returned;
    the caller ignores it when the layer has no bias.
    """
    check_layernorm_backward(dy, x, weight, mean, rstd)
    N, C = x.shape
    n_tasks = -(-N // ROWS_PER_TASK)
    dx = np.empty((N, C), dtype=x.dtype)  # (N, C)
    partial_dweight = np.zeros((n_tasks, C), dtype=x.dtype)  # (tasks, C)
    partial_dbias = np.zeros((n_tasks, C), dtype=x.dtype)  # (tasks, C)
    c = np.ascontiguousarray
    with threads_for(x.size * BACKWARD_NS / 1000):
        _layernorm_backward_kernel(c(dy), c(x), c(weight), c(mean), c(rstd), dx, partial_dweight, partial_dbias)
    return dx, partial_dweight.sum(axis=0), partial_dbias.sum(axis=0)


