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

import numba
import numpy as np
from numba import njit, prange

from ._checks import check_cross_entropy_logits, check_shape, cross_entropy_scale
from ._vecmath import fast_exp, row_max, row_sum
from .tuning.threads import PARALLEL_MIN_US


ROWS_PER_TASK = 64  # rows per parallel task; the task's scratch row is reused across them

# Single-thread cost per element (float32, reference machine), to choose between the
# serial and the parallel kernel (see tuning/threads.py for why small calls stay on one thread).
FORWARD_NS = 0.3
BACKWARD_NS = 0.2

# Why serial *and* parallel kernels? A GPT's vocabulary here is V = 65, so the logits of a
# batch are only 50k-130k numbers and the kernels take 15-40 us. At that size the fixed
# costs of a call matter as much as the arithmetic: waking the worker threads (45 us),
# even switching to one thread with numba.set_num_threads (2-3 us with the context
# manager), and the NumPy calls of the input checks (4-7 us). So small inputs go to a
# plain @njit kernel, the targets are checked inside Numba, and the forward returns the
# summed loss directly. (One Python function cannot be compiled both ways: Numba's cache
# keys on the function's code, not on parallel=True, so the two variants would collide.)


@njit(cache=True)
def _count_valid_targets(targets, V, ignore_index):
    """Number of targets != ignore_index, or -(i + 1) for the first i outside [0, V) that is not ignored."""
    n_valid = 0
    for i in range(targets.shape[0]):
        t = targets[i]
        if t != ignore_index:
            if t < 0 or t >= V:
                return -(i + 1)
            n_valid += 1
    return n_valid


# fastmath={"contract"} lets LLVM fuse each multiply and add of fast_exp's polynomial into
# one FMA instruction (one rounding instead of two, so no less accurate): the exp loops
# run 1.6x faster. No other fast-math liberty is taken.
@njit(cache=True, fastmath={"contract"})
def _forward_rows(logits, targets, ignore_index, lse, start, stop):
    """Fill lse[start:stop] from C-contiguous logits (N, V); return the sum of nll over those valid rows (float64).

    The shift s in lse = s + log sum_j exp(x_j - s) need not be the row max: any s with
    every x_j - s below 88 (float32's exp overflows above) gives the same lse to rounding,
    and s = a logit of the row makes the largest term >= 1 so nothing important
    underflows. The max is a serial loop LLVM does not vectorize, as long as the exp pass
    at V = 65, so the kernel first tries s = x_0 and computes the max only for a row
    whose sum overflowed (a spread of more than ~88 between x_0 and the max) or is NaN
    (x_0 = -inf gives -inf - -inf = NaN). Retried rows then behave as in the reference:
    a NaN or +inf logit gives lse = NaN, a -inf logit is a probability of 0.
    """
    V = logits.shape[1]
    e = np.empty(V, dtype=logits.dtype)  # scratch: exp(x - s) of one row, stored so the sum vectorizes
    sums = np.empty(stop - start, dtype=logits.dtype)  # (rows,) sum_j exp(x_ij - s_i)
    inf = logits.dtype.type(np.inf)
    for i in range(start, stop):
        # logits[i, j] rather than a row view `row = logits[i]`: in a serial kernel the
        # view made these loops 40% slower (measured; LLVM vectorizes the 2-D form better).
        s = logits[i, 0]
        for j in range(V):
            e[j] = fast_exp(logits[i, j] - s)
        z = row_sum(e)
        if not z < inf:  # inf (x_0 far below the max) or NaN (x_0 = -inf, or a NaN): redo with the max
            s = row_max(logits[i])
            for j in range(V):
                e[j] = fast_exp(logits[i, j] - s)
            z = row_sum(e)
        lse[i] = s  # the shift for now; the log is added below
        sums[i - start] = z
    # The logs in a loop of their own: each is a C-library call, and out of the exp loop
    # they overlap better (measured 15% faster at V = 65).
    total = 0.0
    for i in range(start, stop):
        lse[i] += np.log(sums[i - start])
        t = targets[i]
        if t != ignore_index:
            total += lse[i] - logits[i, t]
    return total


@njit(cache=True)
def _forward_serial(logits, targets, ignore_index, lse):
    """All rows on the calling thread; returns the sum of nll over valid rows."""
    return _forward_rows(logits, targets, ignore_index, lse, 0, logits.shape[0])


@njit(parallel=True, cache=True)
def _forward_parallel(logits, targets, ignore_index, lse):
    """Tasks of ROWS_PER_TASK rows on Numba's threads; returns the sum of nll over valid rows."""
    N = logits.shape[0]
    total = 0.0
    for task in prange((N + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        total += _forward_rows(logits, targets, ignore_index, lse, task * ROWS_PER_TASK,
                               min((task + 1) * ROWS_PER_TASK, N))
    return total


@njit(cache=True, fastmath={"contract"})  # FMA, as in `_forward_rows`
def _backward_rows(logits, targets, lse, scale, ignore_index, dlogits, start, stop):
    """Fill dlogits[start:stop] = scale * (softmax - onehot) on valid rows, 0 on ignored rows."""
    V = logits.shape[1]
    for i in range(start, stop):
        # 2-D indexing rather than row views, as in `_forward_rows`; the one-hot term and
        # the ignored rows are a second, cheap pass so this loop has no branch.
        shift = lse[i]  # a local, so the vectorized loop need not reload it after each store
        for j in range(V):
            dlogits[i, j] = scale * fast_exp(logits[i, j] - shift)
    for i in range(start, stop):
        t = targets[i]
        if t == ignore_index:
            dlogits[i, :] = 0
        else:
            dlogits[i, t] -= scale


@njit(cache=True)
def _backward_serial(logits, targets, lse, scale, ignore_index, dlogits):
    """All rows on the calling thread."""
    _backward_rows(logits, targets, lse, scale, ignore_index, dlogits, 0, logits.shape[0])


@njit(parallel=True, cache=True)
def _backward_parallel(logits, targets, lse, scale, ignore_index, dlogits):
    """Tasks of ROWS_PER_TASK rows on Numba's threads."""
    N = logits.shape[0]
    for task in prange((N + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _backward_rows(logits, targets, lse, scale, ignore_index, dlogits, task * ROWS_PER_TASK,
                       min((task + 1) * ROWS_PER_TASK, N))


def _serial(size, ns_per_element):
    """True when a call of `size` elements is estimated under PARALLEL_MIN_US on one thread."""
    return size * ns_per_element / 1000 < PARALLEL_MIN_US or numba.get_num_threads() == 1


def _checked_targets(logits, targets, ignore_index):
    """The kernels' checks, as `check_cross_entropy_forward` but with the range check in Numba: returns (targets, ignore_index, n_valid)."""
    ignore_index = check_cross_entropy_logits(logits, ignore_index)
    N, V = logits.shape
    if not isinstance(targets, np.ndarray):
        raise TypeError(f"targets must be a NumPy array of integers, got {type(targets).__name__}.")
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"targets must have an integer dtype, got {targets.dtype}.")
    check_shape("targets", targets, (N,))
    targets = np.ascontiguousarray(targets, dtype=np.int64)  # no copy for the usual int64 targets
    n_valid = _count_valid_targets(targets, V, ignore_index)
    if n_valid < 0:
        raise ValueError(f"targets must lie in [0, {V}) or equal to {ignore_index}, got {targets[-n_valid - 1]}.")
    return targets, ignore_index, n_valid


def cross_entropy_forward(logits, targets, ignore_index=-100):
    """Mean cross-entropy of logits (N, V) against targets (N,) ints: returns (loss, lse).

    loss is a 0-d array of logits' dtype (NaN when every row is ignored); lse (N,) is the
    per-row log-sum-exp, cached for the backward.
    """
    targets, ignore_index, n_valid = _checked_targets(logits, targets, ignore_index)
    lse = np.empty(logits.shape[0], dtype=logits.dtype)  # (N,)
    kernel = _forward_serial if _serial(logits.size, FORWARD_NS) else _forward_parallel
    # The nll of the N = B * T rows (thousands) are summed in float64, then rounded once.
    total = kernel(np.ascontiguousarray(logits), targets, ignore_index, lse)
    loss = total / n_valid if n_valid > 0 else np.nan
    return np.asarray(loss, dtype=logits.dtype), lse


def cross_entropy_backward(logits, targets, lse, dloss, ignore_index=-100):
    """Gradient of the mean cross-entropy: dlogits (N, V) = dloss * (softmax - onehot) / n_valid.

    Ignored rows get 0. lse is the one `cross_entropy_forward` returned; dloss is the
    upstream gradient of the scalar loss (a number or 0-d array).
    """
    targets, ignore_index, n_valid = _checked_targets(logits, targets, ignore_index)
    scale = cross_entropy_scale(logits, lse, dloss, n_valid)
    dlogits = np.empty(logits.shape, dtype=logits.dtype)  # (N, V)
    kernel = _backward_serial if _serial(logits.size, BACKWARD_NS) else _backward_parallel
    kernel(np.ascontiguousarray(logits), targets, np.ascontiguousarray(lse), scale, ignore_index, dlogits)
    return dlogits


