"""Backward of an embedding lookup: scatter-add the output gradient into the table rows.

Forward (done by indexing, no kernel needed): out[n] = weight[idx[n]].
Backward: every row of the table receives the sum of the gradients of the positions
that looked it up:   dweight[v] = sum over n with idx[n] == v of dout[n].
A token that appears many times in a batch gets many contributions, so this is a
scatter-*add*, not a scatter (`dweight[idx] = dout` would keep only one of them).

Determinism: splitting the *rows* n across threads would let two threads add into the
same dweight[v] at once (a race, and a result that depends on timing). Instead each task
owns a block of *columns* and walks all n in order, so every dweight[v, c] is summed by
one thread in the order n = 0, 1, 2, ...: the same order as `np.add.at` in the reference,
which makes the two agree bit for bit.
"""

import numpy as np
from numba import njit, prange

from ._checks import check_embedding_backward
from .tuning.threads import threads_for

COLS_PER_TASK = 16  # width of the column block one task owns (one 512-bit vector of float32)

# Single-thread cost per element (float32, reference machine), for `threads_for` of dout.
BACKWARD_NS = 0.5


@njit(parallel=True, cache=True)
def _embedding_backward_kernel(idx, dout, dweight):
    """dweight (V, C), zero on entry, += dout (N, C) rows scattered to rows idx (N,)."""
    N, C = dout.shape
    n_blocks = (C + COLS_PER_TASK - 1) // COLS_PER_TASK
    for block in prange(n_blocks):
        c0 = block * COLS_PER_TASK
        c1 = min(c0 + COLS_PER_TASK, C)
        for n in range(N):
            row = idx[n]
            for c in range(c0, c1):
                dweight[row, c] += dout[n, c]


def embedding_backward(idx, dout, num_embeddings):
    """Gradient of an embedding table: dweight (num_embeddings, C), the scatter-add of dout rows into rows idx.

    idx is an integer array of any shape (e.g. (N,) or (B, T)); dout has shape idx.shape + (C,).
    The result is deterministic (bit-identical across runs and to the reference).
    """
    idx, dout = check_embedding_backward(idx, dout, num_embeddings)
    dweight = np.zeros((int(num_embeddings), dout.shape[1]), dtype=dout.dtype)  # (V, C)
    with threads_for(dout.size * BACKWARD_NS / 1000):
        _embedding_backward_kernel(idx, np.ascontiguousarray(dout), dweight)
    return dweight


