"""Arrays whose data starts on a 64-byte boundary (one cache line, one 512-bit vector).

A 512-bit load or store that straddles two cache lines costs about twice as much. The
GEMM micro-kernel (gemm.py) loads a 64-byte row of a panel of B for every step of k,
so the panels start on a cache line (measured with an earlier version of the kernel,
which also kept its tile in memory: 0.60 ms aligned against 0.75 ms for
(768 x 128) @ (128 x 512) on one thread, at the 16- or 32-byte offsets that NumPy's and
Numba's allocators happen to return). The fused kernels' scratch rows use it too.
"""

import math

import numpy as np
from numba import njit

ALIGN = 64  # bytes


def aligned_host_empty(shape, dtype):
    """np.empty(shape, dtype), C-contiguous, with its data starting on a 64-byte boundary.

    (np.empty rather than np.zeros on purpose: zeros of a large size come from fresh
    pages of the OS, and first writing them costs a page fault per 4 KiB, 1-3 ms for the
    12 MB operands of the bigger GPT shape. Callers write every element.)
    """
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    buf = np.empty(n + ALIGN // dtype.itemsize, dtype=dtype)  # room to slide forward
    offset = (-buf.ctypes.data) % ALIGN // dtype.itemsize
    return buf[offset:offset + n].reshape(shape)


@njit(cache=True)
def aligned_empty(n, dtype):
    """An uninitialised 1-D array of n elements with its data on a 64-byte boundary (for use inside kernels)."""
    buf = np.empty(n + ALIGN, dtype)  # ALIGN extra elements are at least ALIGN bytes
    offset = (-buf.ctypes.data) % ALIGN // buf.itemsize
    return buf[offset:offset + n]
