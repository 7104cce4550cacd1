"""Cross-entropy loss from logits, forward and backward, with an ignore_index.

Forward, for row i with logits x_i (length V) and target t_i:
    lse_i = log sum_j exp(x_ij)      (computed as m + log sum_j exp(x_ij - m), m = max_j x_ij)
    nll_i = lse_i - x_{i, t_i}
    loss  = mean of nll_i over the rows with t_i != ignore_index
Subtracting the row max keeps every exp() <= 1, so logits of +-1e4 neither overflow nor
give NaN. lse is returned so the backward need not recompute it. When every row is
ignored the mean has no terms and the loss is NaN, as in PyTorch.

Backward: d nll_i / d x_ij = softmax(x_i)_j - [j == t_i], softmax(x_i)_j = exp(x_ij - lse_i), so
    dlogits_ij = dloss / n_valid * (exp(x_ij - lse_i) - [j == t_i])   for valid rows,
    dlogits_ij = 0                                                    for ignored rows.
(With no valid rows there is nothing to propagate and dlogits is all zeros.)
"""

import numpy as np
from numba import njit, prange

from ._checks import as_index_array, as_scalar, check_float_array, check_same_dtype, check_shape
from ._threads import threads_for
from ._vecmath import fast_exp, row_max, row_sum


ROWS_PER_TASK = 64  # rows per parallel task in the forward; the task's scratch row is reused across them

# Single-thread cost per element (float32, reference machine), for `threads_for`.
FORWARD_NS = 1.0
BACKWARD_NS = 0.5


@njit(parallel=True, cache=True)
def _cross_entropy_forward_kernel(logits, targets, ignore_index, lse, nll):
    """Fill lse (N,) and nll (N,) (0 on ignored rows) from C-contiguous logits (N, V)."""
    N, V = logits.shape
    n_tasks = (N + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for task in prange(n_tasks):
        e = np.empty(V, dtype=logits.dtype)  # scratch: exp(x - m) of one row, stored so the sum vectorizes
        for i in range(task * ROWS_PER_TASK, min((task + 1) * ROWS_PER_TASK, N)):
            row = logits[i]
            m = row_max(row)
            for j in range(V):
                e[j] = fast_exp(row[j] - m)
            lse[i] = m + np.log(row_sum(e))
            t = targets[i]
            nll[i] = lse[i] - row[t] if t != ignore_index else logits.dtype.type(0)


@njit(parallel=True, cache=True)
def _cross_entropy_backward_kernel(logits, targets, lse, scale, ignore_index, dlogits):
    """Fill dlogits (N, V) = scale * (softmax - onehot) on valid rows, 0 on ignored rows."""
    N, V = logits.shape
    zero = logits.dtype.type(0)
    for i in prange(N):
        t = targets[i]
        row = logits[i]
        out = dlogits[i]
        if t == ignore_index:
            for j in range(V):
                out[j] = zero
        else:
            shift = lse[i]  # a local, so the vectorized loop need not reload it after each store
            for j in range(V):
                out[j] = scale * fast_exp(row[j] - shift)
            out[t] -= scale


def _check_forward(logits, targets, ignore_index):
    check_float_array("logits", logits, ndim=2)
    N, V = logits.shape
    if V == 0:
        raise ValueError(f"logits must have at least one class, got shape {logits.shape}.")
    if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index must be an integer, got {type(ignore_index).__name__}.")
    targets = as_index_array("targets", targets, 0, V, allowed=ignore_index)
    check_shape("targets", targets, (N,))
    return targets, int(ignore_index)


def cross_entropy_forward(logits, targets, ignore_index=-100):
    """Mean cross-entropy of logits (N, V) against targets (N,) ints: returns (loss, lse).

    loss is a 0-d array of logits' dtype (NaN when every row is ignored); lse (N,) is the
    per-row log-sum-exp, cached for the backward.
    """
    targets, ignore_index = _check_forward(logits, targets, ignore_index)
    N = logits.shape[0]
    lse = np.empty(N, dtype=logits.dtype)  # (N,)
    nll = np.empty(N, dtype=logits.dtype)  # (N,)
    with threads_for(logits.size * FORWARD_NS / 1000):
        _cross_entropy_forward_kernel(np.ascontiguousarray(logits), targets, ignore_index, lse, nll)
    n_valid = np.count_nonzero(targets != ignore_index)
    # The mean over N = B * T rows (thousands) is summed in float64, then rounded once.
    loss = nll.sum(dtype=np.float64) / n_valid if n_valid > 0 else np.nan
    return np.asarray(loss, dtype=logits.dtype), lse


def cross_entropy_forward_ref(logits, targets, ignore_index=-100):
    """Reference for `cross_entropy_forward` in plain NumPy."""
    targets, ignore_index = _check_forward(logits, targets, ignore_index)
    m = logits.max(axis=1, keepdims=True)  # (N, 1)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]  # (N,)
    valid = targets != ignore_index  # (N,)
    rows = np.nonzero(valid)[0]
    nll = lse[rows] - logits[rows, targets[rows]]  # (n_valid,)
    loss = nll.mean(dtype=np.float64) if rows.size > 0 else np.nan
    return np.asarray(loss, dtype=logits.dtype), lse


def _check_backward(logits, targets, lse, dloss, ignore_index):
    targets, ignore_index = _check_forward(logits, targets, ignore_index)
    check_float_array("lse", lse)
    check_same_dtype("lse", lse, "logits", logits)
    check_shape("lse", lse, (logits.shape[0],))
    n_valid = np.count_nonzero(targets != ignore_index)
    # float64 division, then one rounding to the logits' dtype.
    scale = as_scalar("dloss", dloss, np.dtype(np.float64)) / max(n_valid, 1)
    return targets, ignore_index, logits.dtype.type(scale)


def cross_entropy_backward(logits, targets, lse, dloss, ignore_index=-100):
    """Gradient of the mean cross-entropy: dlogits (N, V) = dloss * (softmax - onehot) / n_valid.

    Ignored rows get 0. lse is the one `cross_entropy_forward` returned; dloss is the
    upstream gradient of the scalar loss (a number or 0-d array).
    """
    targets, ignore_index, scale = _check_backward(logits, targets, lse, dloss, ignore_index)
    dlogits = np.empty(logits.shape, dtype=logits.dtype)  # (N, V)
    with threads_for(logits.size * BACKWARD_NS / 1000):
        _cross_entropy_backward_kernel(np.ascontiguousarray(logits), targets, np.ascontiguousarray(lse), scale,
                                       ignore_index, dlogits)
    return dlogits


def cross_entropy_backward_ref(logits, targets, lse, dloss, ignore_index=-100):
    """Reference for `cross_entropy_backward` in plain NumPy."""
    targets, ignore_index, scale = _check_backward(logits, targets, lse, dloss, ignore_index)
    probs = np.exp(logits - lse[:, None])  # (N, V)
    rows = np.nonzero(targets != ignore_index)[0]
    probs[rows, targets[rows]] -= 1
    probs[targets == ignore_index] = 0
    return scale * probs
