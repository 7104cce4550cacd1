"""Matrix multiplication: a handwritten blocked GEMM in Numba, and the dispatcher the ops call.

`gemm` (2-D) and `bmm` (batched 3-D) are the handwritten kernel; `matmul` is the one
function the autograd ops call, and `uses_numba_gemm` is its rule for choosing between
that kernel and NumPy's BLAS (the measurements behind the rule are in its docstring).

How the kernel is fast without BLAS (read `multiply_tile` with this in mind):

* Register blocking. The naive loop `C[i, j] += A[i, k] * B[k, j]` loads and stores
  C[i, j] once per multiply-add and is limited by memory traffic. Here one task owns
  MR = 4 rows of C and unrolls KU = 4 steps of k: each vector of B loaded is used by 4
  rows, and each store to C carries 4 multiply-adds. That is 16 fused multiply-adds for
  8 loads and 4 stores, enough to keep the FMA units busy.
* A flat C tile. The 4 rows being accumulated live in one small buffer, row r at offset
  r * NC with NC a compile-time constant. LLVM can then prove the 4 rows never overlap
  each other or B, and vectorizes the inner `j` loop into 512-bit FMAs. (With 4 separate
  row views it needs a runtime overlap check per pair of pointers, exceeds its budget
  for those, and silently leaves the loop scalar: 5x slower.)
* Packed panels. B is copied once into column panels of width NC, each a contiguous
  (K, NC) block, so the rows the inner loop streams through are adjacent in memory.
  B is zero-padded to K % KU == 0 and N % NC == 0, and A to M % MR == 0, so the kernel
  has no remainder loops but one: the last K % KU steps of k, done one at a time, which
  spares copying an A of K = 65. Padded rows and columns are computed and dropped.
  Exception: up to EDGE_COLUMNS columns left after the last full panel are computed as
  dot products instead (see `_edge_split`): the lm_head's N = 65 would otherwise cost
  as much as N = 128.
  A is read one scalar at a time, so when its rows are contiguous and need no padding
  it is used in place. When they are strided (dY^T in the weight gradient dW = dY^T @ x)
  each task of the kernel first copies its 16 rows into a contiguous buffer (see
  `_bmm_kernel`): read in place they cost a distant cache line per step of k and panel.
* Alignment. The tile and the panels start on 64-byte boundaries (see _aligned.py).
* Parallelism over (batch, block of 4 rows): tasks write disjoint rows of the output.

On one core this kernel reaches 160-180 GFLOP/s in float32 on the linear-layer shapes,
against 125 for OpenBLAS; see `uses_numba_gemm` for two cores.
"""

import os

import numpy as np
from numba import njit, prange

from ._aligned import aligned_empty, aligned_host_empty
from ._checks import check_float_array, check_same_dtype
from ._threads import threads_for
from ._vecmath import row_dot

MR = 4  # rows of C one task computes together (each loaded piece of B is used MR times)
KU = 4  # steps of k unrolled (each store to the C tile carries KU multiply-adds)
NC = 64  # width of one column panel: the C tile is MR x NC, 1 KiB in float32
BLOCKS_PER_TASK = 4  # blocks of MR rows per parallel task (amortizes the task's tile allocation)
TASK_ROWS = BLOCKS_PER_TASK * MR  # rows of a per task: 16, one cache line of a float32 dY row

# Single-thread costs (float32, reference machine), for `threads_for`.
MULTIPLY_ADD_NS = 0.012  # per multiply-add of the GEMM (~170 GFLOP/s on one core)
COPY_NS = 0.3  # per element of the packing copy (0.1 from contiguous rows, 0.3-1.6 from a transposed view)


# fastmath={"contract"} lets LLVM fuse each a * b + c into one FMA instruction. An FMA
# rounds once where the separate multiply and add round twice, so results are at least as
# accurate as the unfused loop; no reassociation of sums is allowed.
@njit(cache=True, fastmath={"contract"})
def multiply_tile(A, panel, i0, k0, k1, tile):
    """tile[r * NC + j] += sum over k in [k0, k1) of A[i0 + r, k] * panel[k, j], for r < MR, j < NC.

    The micro-kernel every product in this package is built on. A is a 2-D array with
    rows i0 .. i0 + MR - 1; panel is a C-contiguous (K, NC) block of columns of the right
    operand; k1 - k0 is a multiple of KU. (The callers zero-pad to guarantee all three.)
    """
    for k in range(k0, k1, KU):
        # The 4 x 4 block of A used by this step, held in registers.
        a00 = A[i0, k]
        a01 = A[i0, k + 1]
        a02 = A[i0, k + 2]
        a03 = A[i0, k + 3]
        a10 = A[i0 + 1, k]
        a11 = A[i0 + 1, k + 1]
        a12 = A[i0 + 1, k + 2]
        a13 = A[i0 + 1, k + 3]
        a20 = A[i0 + 2, k]
        a21 = A[i0 + 2, k + 1]
        a22 = A[i0 + 2, k + 2]
        a23 = A[i0 + 2, k + 3]
        a30 = A[i0 + 3, k]
        a31 = A[i0 + 3, k + 1]
        a32 = A[i0 + 3, k + 2]
        a33 = A[i0 + 3, k + 3]
        # The 4 rows of the panel used by this step.
        b0 = panel[k]
        b1 = panel[k + 1]
        b2 = panel[k + 2]
        b3 = panel[k + 3]
        for j in range(NC):
            tile[j] += a00 * b0[j] + a01 * b1[j] + a02 * b2[j] + a03 * b3[j]
            tile[NC + j] += a10 * b0[j] + a11 * b1[j] + a12 * b2[j] + a13 * b3[j]
            tile[2 * NC + j] += a20 * b0[j] + a21 * b1[j] + a22 * b2[j] + a23 * b3[j]
            tile[3 * NC + j] += a30 * b0[j] + a31 * b1[j] + a32 * b2[j] + a33 * b3[j]


@njit(cache=True, fastmath={"contract"})
def _row_block_product(A, i0, K4, panels, tile, out, row0):
    """out[row0 + r, :] = rows i0 .. i0 + MR - 1 of A @ the panels, for the r < MR rows inside out.

    A (., Ka) is read one scalar at a time; panels (n_panels, Kp, NC) is b packed, Kp >= Ka;
    K4 = Ka rounded down to a multiple of KU. tile is the task's MR * NC scratch.
    """
    Ka = A.shape[1]
    M, N = out.shape
    for q in range(panels.shape[0]):
        tile[:] = 0
        multiply_tile(A, panels[q], i0, 0, K4, tile)
        for k in range(K4, Ka):  # the last Ka % KU steps of k, one at a time
            for r in range(MR):
                ark = A[i0 + r, k]
                for j in range(NC):
                    tile[r * NC + j] += ark * panels[q, k, j]
        for r in range(min(MR, M - row0)):  # copy the part inside the unpadded output
            for j in range(min(NC, N - q * NC)):
                out[row0 + r, q * NC + j] = tile[r * NC + j]


@njit(parallel=True, cache=True, fastmath={"contract"})
def _bmm_kernel(a, a_t, b_panels, b_edge, out):
    """out[p] = a[p] @ b[p], with a (P, Ma, Ka) or its transpose a_t (P, Ka, Ma), b's first
    columns packed as b_panels (P, n_panels, Kp, NC) and its last few columns as rows of
    b_edge (P, n_edge, K).

    Ka is K, or K padded to a multiple of KU (Kp >= Ka); the last Ka % KU steps of k are
    done one at a time, so that an a of K = 65 (the lm_head's dY) needs no padded copy.

    When a_t is empty (shape[0] == 0), a is read in place and must be padded in rows
    (Ma % MR == 0). Otherwise a_t is C-contiguous and a is ignored but for its shape: this
    is the weight gradient dW = dY^T @ x, whose left operand a = dY^T has strided rows.
    Read in place, each step of k of a costs a cache line K * itemsize or more bytes from
    the last, for every column panel. Instead a task first copies its BLOCKS_PER_TASK * MR
    = 16 rows into a contiguous (Ka, 16) buffer, zero below row Ma: at each k that is one
    run of 16 adjacent values of a_t (a cache line of float32) to one line of the buffer,
    and the micro-kernel then streams through the buffer's lines in order.
    It also spares the padded copy of a.

    out (P, M, N) is the unpadded result (M <= Ma, N <= n_panels * NC + n_edge). The
    padding is zero, so padded terms add nothing; padded rows and columns are computed
    and dropped. The n_edge columns after the panels (0 when b is all panels) are dot
    products of a row of a with a row of b_edge, see `_edge_split`.
    A task computes BLOCKS_PER_TASK blocks of MR rows of one matrix.
    """
    P, Ma, Ka = a.shape
    copy_a = a_t.shape[0] > 0
    K4 = Ka - Ka % KU  # steps of k the micro-kernel takes KU at a time
    n_panels = b_panels.shape[1]
    n_edge, K = b_edge.shape[1], b_edge.shape[2]
    M = out.shape[1]
    row_blocks = (Ma + MR - 1) // MR
    tasks_per_matrix = (row_blocks + BLOCKS_PER_TASK - 1) // BLOCKS_PER_TASK
    for task in prange(P * tasks_per_matrix):
        p = task // tasks_per_matrix
        first = task % tasks_per_matrix * BLOCKS_PER_TASK
        last = min(first + BLOCKS_PER_TASK, row_blocks)
        tile = aligned_empty(MR * NC, a.dtype)  # C[i0 + r, q * NC + j] lives at tile[r * NC + j]
        # (Ka, TASK_ROWS): copy[k, t] = a[p, first * MR + t, k], zero below row Ma; empty without copy_a.
        copy = aligned_empty(Ka * TASK_ROWS if copy_a else 0, a.dtype).reshape((-1, TASK_ROWS))
        if copy_a:
            i_first = first * MR
            rows = min(TASK_ROWS, Ma - i_first)  # rows of the task that exist in a
            copy[:, rows:] = 0
            for k in range(Ka):
                src = a_t[p, k, i_first:i_first + rows]
                dst = copy[k]
                for t in range(rows):
                    dst[t] = src[t]
        for block in range(first, last):
            i0 = block * MR
            if copy_a:
                _row_block_product(copy.T, i0 - first * MR, K4, b_panels[p], tile, out[p], i0)
            else:
                _row_block_product(a[p], i0, K4, b_panels[p], tile, out[p], i0)
            for i in range(i0, min(i0 + MR, M)):
                for c in range(n_edge):
                    out[p, i, n_panels * NC + c] = row_dot(a[p, i, :K], b_edge[p, c])


@njit(cache=True)
def round_up(n, multiple):
    """The smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


COPY_ROWS = 32  # rows of x one task of the packing copy moves


@njit(parallel=True, cache=True)
def _pack_kernel(x, out):
    """out[p, q, i, j] = x[p, i, q * width + j], or 0 outside x, for x (P, R, C) of any strides.

    out (P, n_panels, Rp, width) covers x; width = out.shape[3]. With one panel of width
    >= C this is a zero-padded copy; with width NC it cuts x into the column panels the
    micro-kernel reads. Each task moves 32 rows of one panel, so the copy runs in
    parallel and, for a transposed x, reads each source cache line while it is in L1
    (NumPy's own copy of a transposed 768 x 512 matrix takes 1.5 ns per element).
    """
    P, R, C = x.shape
    n_panels = out.shape[1]
    Rp = out.shape[2]
    width = out.shape[3]
    zero = out.dtype.type(0)
    row_blocks = (Rp + COPY_ROWS - 1) // COPY_ROWS
    for task in prange(P * n_panels * row_blocks):
        p = task // (n_panels * row_blocks)
        q = task // row_blocks % n_panels
        i0 = task % row_blocks * COPY_ROWS
        base = q * width  # column of x where panel q starts
        cols = min(width, C - base)  # columns of the panel that exist in x
        for i in range(i0, min(i0 + COPY_ROWS, Rp)):
            # Row views taken once per row: with them the copy loop vectorizes when x's rows
            # are contiguous (0.09 ns per element on one core, against 0.35 indexing out[p, q, i, j]).
            dst = out[p, q, i]
            if i < R:
                src = x[p, i, base:base + cols]
                for j in range(cols):
                    dst[j] = src[j]
                dst[cols:] = zero
            else:
                dst[:] = zero


def pack_rows(x, row_multiple, col_multiple):
    """x (P, R, C) zero-padded to (P, Rp, Cp), Rp and Cp rounded up to the multiples.

    The left operand of the micro-kernel, which reads it one scalar at a time, so its
    strides do not matter: when no padding is needed x is returned as it is, even a
    transposed view (copying a large transposed matrix costs about a third of the
    product itself on the reference machine).
    """
    P, R, C = x.shape
    shape = (P, round_up(R, row_multiple), round_up(C, col_multiple))
    if x.shape == shape:
        return x
    out = aligned_host_empty((P, 1) + shape[1:], x.dtype)  # (P, 1, Rp, Cp)
    with threads_for(out.size * COPY_NS / 1000):
        _pack_kernel(x, out)
    return out[:, 0]


def pack_panels(x, row_multiple):
    """x (P, R, C) cut into zero-padded column panels: (P, n_panels, Rp, NC), Rp rounded up to row_multiple.

    The right operand of the micro-kernel: each panel is a C-contiguous block, so the rows
    the micro-kernel streams through lie next to each other in memory (in a plain (R, C)
    array they would be C * itemsize bytes apart, and for C a power of two they would all
    compete for the same few sets of the L1 cache).
    """
    P, R, C = x.shape
    out = aligned_host_empty((P, round_up(C, NC) // NC, round_up(R, row_multiple), NC), x.dtype)
    with threads_for(out.size * COPY_NS / 1000):
        _pack_kernel(x, out)
    return out


def _check_pair(a, b, a_ndim, b_ndim):
    """Check float arrays of one dtype whose contraction dims agree (ndim None: any >= 1)."""
    check_float_array("a", a, ndim=a_ndim, min_ndim=1)
    check_float_array("b", b, ndim=b_ndim, min_ndim=1)
    check_same_dtype("b", b, "a", a)
    k_a = a.shape[-1]
    k_b = b.shape[-2] if b.ndim >= 2 else b.shape[0]
    if k_a != k_b:
        raise ValueError(f"a's last dim ({k_a}) must equal b's contraction dim ({k_b}); got shapes {a.shape} and {b.shape}.")


EDGE_COLUMNS = 16  # at most this many columns after the last full panel are done as dot products
EDGE_COST = 4  # a dot-product column costs about as much as this many panel columns (measured)


def _edge_split(a, N):
    """Number of b's last columns that `_bmm_kernel` computes as dot products instead of a padded panel.

    A panel of NC = 64 columns costs the same however few of them are real, so the
    lm_head's N = V = 65 would cost as much as N = 128. A few leftover columns are
    cheaper as dot products of a row of a with a column of b (vectorized along k, about
    EDGE_COST times slower per column than the micro-kernel). That needs a's rows
    contiguous, so a transposed a always takes the padded panel.
    """
    edge = N % NC
    if edge > EDGE_COLUMNS or a.strides[-1] != a.itemsize:
        return 0
    return edge


def _padded_work(M, N):
    """Multiply-adds per step of k that the kernel does for an (M, N) output, padding included."""
    edge = N % NC if N % NC <= EDGE_COLUMNS else 0
    return round_up(M, MR) * ((N - edge) + EDGE_COST * edge)


def bmm(a, b):
    """Batched product with the handwritten Numba GEMM: a (P, M, K) @ b (P, K, N) -> (P, M, N).

    When N is small and M is not (the lm_head's N = V = 65 columns would be padded to
    128), it computes the transposed product b^T @ a^T, whose padding is smaller, and
    transposes the result back.
    """
    _check_pair(a, b, 3, 3)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must have the same batch size, got shapes {a.shape} and {b.shape}.")
    P, M, K = a.shape
    N = b.shape[2]
    if _padded_work(N, M) < _padded_work(M, N):
        return np.ascontiguousarray(np.swapaxes(_bmm_padded(np.swapaxes(b, 1, 2), np.swapaxes(a, 1, 2)), 1, 2))
    return _bmm_padded(a, b)


def _bmm_padded(a, b):
    """a (P, M, K) @ b (P, K, N) by `_bmm_kernel`, after packing the operands."""
    P, M, K = a.shape
    N = b.shape[2]
    out = np.empty((P, M, N), dtype=a.dtype)  # (P, M, N)
    if a.strides[2] != a.itemsize:  # rows of a strided (a transposed view): `_bmm_kernel` copies them itself
        a_rows, a_t = a, np.ascontiguousarray(np.swapaxes(a, 1, 2))  # (P, K, M), a view for a = dY^T
    else:
        a_rows, a_t = pack_rows(a, MR, 1), np.empty((0, 0, 0), a.dtype)  # padded in rows only: `_bmm_kernel` does the K % KU tail
    n0 = N - _edge_split(a_rows, N)  # columns done by panels
    b_panels = pack_panels(b[:, :, :n0], KU)  # (P, n0 / NC, Kp, NC)
    b_edge = np.ascontiguousarray(np.swapaxes(b[:, :, n0:], 1, 2))  # (P, N - n0, K): a few columns, as rows
    with threads_for(P * M * N * K * MULTIPLY_ADD_NS / 1000):
        _bmm_kernel(a_rows, a_t, b_panels, b_edge, out)
    return out


def bmm_ref(a, b):
    """Reference for `bmm`: NumPy's stacked matmul."""
    _check_pair(a, b, 3, 3)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must have the same batch size, got shapes {a.shape} and {b.shape}.")
    return np.matmul(a, b)


def gemm(a, b):
    """2-D product with the handwritten Numba GEMM: a (M, K) @ b (K, N) -> (M, N)."""
    _check_pair(a, b, 2, 2)
    return bmm(a[None], b[None])[0]


def gemm_ref(a, b):
    """Reference for `gemm`: NumPy's matmul."""
    _check_pair(a, b, 2, 2)
    return np.matmul(a, b)


# OpenBLAS runs a product on one thread when M * N * K is at most this (65536 times its
# GEMM_MULTITHREAD_THRESHOLD of 4); above it, it wakes its worker threads (measured: a
# 64 x 64 x 64 product leaves no thread spinning, a 64 x 128 x 64 product does).
BLAS_SINGLE_THREAD_WORK = 65536 * 4


def uses_numba_gemm(a_shape, b_shape):
    """The dispatch rule of `matmul`: True when the handwritten Numba GEMM runs, False for NumPy's BLAS.

    Rule: NumPy's BLAS for every product, unless the environment variable
    TINYGPT_MATMUL=numba asks for the Numba GEMM on products with M * N * K > 2^18
    (per matrix of a batch; smaller ones always go to BLAS, which runs them on the
    calling thread).

    Why, measured on the reference machine (a 2-vCPU virtual machine, OpenBLAS 0.3.31,
    float32, OMP_WAIT_POLICY=PASSIVE as set by this package):

    * A whole training step (zero_grad, forward, backward, AdamW) on a quiet machine:
      44-50 ms with BLAS against 50-56 ms with the Numba GEMM for the baby GPT (4 layers,
      C=128, B=12, T=64); 12.2 against 14.1 ms at 2 layers, C=64, B=32, T=32; 813 against
      864 ms at 6 layers, C=384, B=8, T=256 (benchmarks/bench_train.py's configs).
    * Product by product, alone on a quiet machine, BLAS is faster: 1.5-1.8x at the baby
      shape (products of 0.1-0.5 ms, where packing and waking threads show), 1.0-1.1x on
      the bigger shape's x @ W^T and dY @ W and 1.2-2.4x on its dW = dY^T @ x (whose
      transposed left operand this kernel then read with a long stride; it now copies it
      into contiguous rows, measured 1.1-1.5x faster on those products). Unpinned, the
      batched attention products also favour np.matmul (the Numba bmm reaches 0.5-0.95x).
    * When another process keeps one of the two cores busy, OpenBLAS falls apart (a baby
      block took 154 ms against 12.6 ms with the Numba GEMM; single products 10-750 ms
      instead of 0.1-4 ms) while the Numba kernels slow down about twice. That is what
      TINYGPT_MATMUL=numba is for: training on a shared, busy machine.
    """
    if os.environ.get("TINYGPT_MATMUL") != "numba" or len(a_shape) < 2 or len(b_shape) < 2:
        return False
    M, K = a_shape[-2:]
    N = b_shape[-1]
    return M * N * K > BLAS_SINGLE_THREAD_WORK


def _check_matmul(a, b):
    _check_pair(a, b, None, None)
    try:
        return np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"a and b must have broadcastable batch dims, got shapes {a.shape} and {b.shape}.") from None


def matmul(a, b):
    """a @ b with np.matmul's semantics (1-D, 2-D, batched, broadcast batch dims), dtype kept.

    The one product the autograd ops call. It runs the handwritten Numba GEMM (`bmm`)
    or NumPy's BLAS according to `uses_numba_gemm`, whose docstring gives the measured
    reasons; either way the result equals np.matmul(a, b) up to rounding.
    """
    batch = _check_matmul(a, b)
    if not uses_numba_gemm(a.shape, b.shape):
        return np.matmul(a, b)
    M = a.shape[-2]
    N = b.shape[-1]
    return bmm(_stacked(a, batch), _stacked(b, batch)).reshape(batch + (M, N))


def _stacked(x, batch):
    """x (..., R, C) broadcast to batch + (R, C) and flattened to (P, R, C): a view when possible."""
    if x.shape[:-2] != batch:
        x = np.broadcast_to(x, batch + x.shape[-2:])
    return x.reshape((-1,) + x.shape[-2:])


def matmul_ref(a, b):
    """Reference for `matmul`: np.matmul."""
    _check_matmul(a, b)
    return np.matmul(a, b)
