"""Matrix multiplication: a handwritten blocked GEMM in Numba, and the dispatcher the ops call.

`gemm` (2-D) and `bmm` (batched 3-D) are the handwritten kernel; `matmul` is the one
function the autograd ops call. Its rule for choosing between that kernel and NumPy's
BLAS, `uses_numba_gemm`, is in tuning/dispatch.py with the measurements behind it.

How the kernel is fast without BLAS (read `tile_product` with this in mind):

* Register blocking. The naive loop `C[i, j] += A[i, k] * B[k, j]` loads and stores
  C[i, j] once per multiply-add and is limited by memory traffic. Here the micro-kernel
  computes a tile of MR rows by NC columns of C over the whole range of k, and the tile
  lives in registers (see tuning/stack.py). With AVX-512, MR x NC = 4 x 64, 16 vectors of 16
  float32: one step of k loads 4 numbers of A and 4 vectors of B and does 16 vector
  FMAs, with no store at all; each loaded vector of B is used by 4 rows and each number
  of A by 64 columns. With AVX2 the tile is 6 x 16 (12 vectors of 8), see tuning/target.py.
* Packed panels. B is copied into column panels of width NC, each a contiguous
  (K, NC) block, so each step of k reads one stretch of NC floats; in a plain (K, N)
  array the rows would be N * itemsize bytes apart, for N a power of two all in the same
  few sets of the L1 cache. The last panel is zero-padded; its padded columns are
  computed and dropped. Up to NC / 4 columns left after the last full panel (the
  lm_head's N = V = 65) are dot products instead, see `_edge_columns`; and when N is
  small and M is not (an attention head's N = 32 would be padded to 64), `bmm` computes
  the transposed product b^T @ a^T, writing its tiles straight into the transposed output.
* A is read in place, whatever its strides: MR numbers per step of k, while the panel
  of B stays in cache as the task sweeps the rows of A. Rows past the end of A (the
  last block of rows when M % MR != 0) re-read A's last row and their results are
  dropped, so A is never copied or padded.
* Parallel tasks, each packing the panels of B it multiplies inside the one parallel
  call: one per panel of B for a single product (its rows split further when there
  are too few panels for the threads, each group packing the panel again), one per
  matrix for a batch of 4 or more. Tasks write disjoint tiles of the output.
  `_task_shape` has the choice and its exception.

On one core the micro-kernel reaches about 230 GFLOP/s in float32 on AVX-512 (the
reference machine), against about 125 for one thread of OpenBLAS, whose kernels there
are AVX2 ones; compiled for AVX2 (`bench_kernels.py --emulate-avx2`) about 125 as well.
`bench_kernels.py` measures every product of a training step. The narrow AVX2 tile
needs LLVM's SLP vectorizer: its j loop of 16 is unrolled completely before the loop
vectorizer sees it, and without SLP the code stays scalar (3-12 GFLOP/s, measured; see
kernels/__init__.py, which turns SLP on for AVX2 targets).
"""

import math

import numba
import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from ._checks import check_matmul, check_matmul_pair
from ._vecmath import row_dot
from .tuning.aligned import aligned_empty, aligned_host_empty
from .tuning.dispatch import uses_numba_gemm
from .tuning.stack import stack_empty
from .tuning.target import TILE_SHAPES, vector_isa
from .tuning.threads import threads_for

ISA = vector_isa()  # "avx512", "avx2" or "other", see tuning/target.py
MR, NC = TILE_SHAPES[ISA]  # rows and columns of a tile of C (each loaded vector of B is used MR times)
TILE = MR * NC
BLOCKS_PER_TASK = 4  # blocks of MR rows per parallel task when b is packed before the tasks start

# Single-thread costs (float32, reference machine), for `threads_for`.
MULTIPLY_ADD_NS = 0.01  # per multiply-add of the GEMM, tile overheads included (~200 GFLOP/s)
COPY_NS = 0.4  # per element of the packing copy (0.1 from contiguous rows, 0.4 from a transposed view)
# The GEMM's tasks are equal tiles, so two threads halve its time. They pay once t / 2
# plus the cost of handing work to the second thread is below t: about 1 us while that
# thread still spins after its last call (0.1 ms, see __init__.py), as it does between
# the kernels of a training step, and 45 us once it sleeps (see tuning/threads.py). Measured,
# baby lm_head products (6.4 M multiply-adds, ~70 us on one thread): 0.72-0.91x
# np.matmul's speed on one thread, 1.24-1.64x on two.
GEMM_PARALLEL_MIN_US = 30.0


# fastmath={"contract"} lets LLVM fuse each a * b + c into one FMA instruction. An FMA
# rounds once where the separate multiply and add round twice, so results are at least as
# accurate as the unfused loop; no reassociation of sums is allowed.
@njit(cache=True, fastmath={"contract"})
def tile_product(A, i0, k0, k1, panel, tile):
    """tile[r, j] = sum over k in [k0, k1) of A[i0 + r, k] * panel[k, j], for r < MR, j < NC.

    The micro-kernel every product in this package is built on. A is any 2-D array with
    at least one row (rows i0 + r past its end read its last row instead); panel is a
    C-contiguous (K, NC) block of columns of the right operand; tile is any (MR, NC)
    array, overwritten.

    The loops over r and j have constant trip counts, so LLVM unrolls them, vectorizes j,
    and keeps `acc` (on the stack, see tuning/stack.py) in 16 vector registers for the whole
    loop over k.
    """
    acc = stack_empty(TILE, A.dtype)  # acc[r * NC + j] accumulates tile[r, j]
    for t in range(TILE):
        acc[t] = 0
    last = A.shape[0] - 1
    for k in range(k0, k1):
        for r in range(MR):
            a_rk = A[min(i0 + r, last), k]
            for j in range(NC):
                acc[r * NC + j] += a_rk * panel[k, j]
    for r in range(MR):
        for j in range(NC):
            tile[r, j] = acc[r * NC + j]


@njit(parallel=True, cache=True, fastmath={"contract"})
def _bmm_kernel(a, b, b_panels, b_edge, out, blocks_per_task, panels_per_task):
    """out[p] = a[p] @ b[p], for a (P, M, K) and b (P, K, N) of any strides.

    b_panels (P, n_panels, K, NC) is b packed into panels beforehand, or empty (shape[0]
    == 0): then each task packs the panels of b[p] it multiplies (see `_task_shape`).
    The first N - n_edge columns of out come from panels of b; the last n_edge (0 or a
    few, see `_edge_columns`) are dot products of rows of a with the rows of b_edge
    (P, n_edge, K), b's last columns transposed.
    out (P, M, N) may be any view (a transposed one when `bmm` computes the transposed
    product). A task computes blocks_per_task blocks of MR rows of one matrix against
    panels_per_task panels; tiles that stick out of out (the last rows, the padded
    columns of the last panel) go through a scratch tile and only their inside is copied.
    """
    P, M, K = a.shape
    n_edge = b_edge.shape[1]
    N = out.shape[2] - n_edge  # columns done by panels
    n_panels = (N + NC - 1) // NC
    packs_own = b_panels.shape[0] == 0
    row_blocks = (M + MR - 1) // MR
    row_groups = (row_blocks + blocks_per_task - 1) // blocks_per_task
    panel_groups = max(1, (n_panels + panels_per_task - 1) // panels_per_task)  # 1 when all columns are edge
    for task in prange(P * row_groups * panel_groups):
        p = task // (row_groups * panel_groups)
        first = task // panel_groups % row_groups * blocks_per_task  # first row block of the task
        last = min(first + blocks_per_task, row_blocks)
        group = task % panel_groups
        q_first = group * panels_per_task  # the task's panels: q_first .. q_end - 1
        q_end = min(q_first + panels_per_task, n_panels)
        if packs_own:  # the task's panels of b[p], packed here: (q_end - q_first, K, NC)
            panels = aligned_empty((q_end - q_first) * K * NC, a.dtype).reshape((q_end - q_first, K, NC))
            for q in range(q_first, q_end):
                _copy_block(b[p], 0, q * NC, panels[q - q_first])
        else:
            panels = b_panels[p, q_first:q_end]
        edge = np.empty((MR, NC), a.dtype)  # (MR, NC) scratch for tiles at the edge of out
        for q in range(q_first, q_end):
            j0 = q * NC
            cols = min(NC, N - j0)
            for block in range(first, last):
                i0 = block * MR
                rows = min(MR, M - i0)
                if rows == MR and cols == NC:
                    tile_product(a[p], i0, 0, K, panels[q - q_first], out[p, i0:i0 + MR, j0:j0 + NC])
                else:
                    tile_product(a[p], i0, 0, K, panels[q - q_first], edge)
                    out[p, i0:i0 + rows, j0:j0 + cols] = edge[:rows, :cols]
        if group == 0:
            for i in range(first * MR, min(last * MR, M)):
                for c in range(n_edge):
                    out[p, i, N + c] = row_dot(a[p, i], b_edge[p, c])


# register_jitable: compiled into the kernels that call it, and a plain Python function
# for the wrappers (a call through a Numba dispatcher from Python costs ~0.4 us).
@register_jitable
def round_up(n, multiple):
    """The smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


COPY_ROWS = 32  # rows of x one task of the packing copy moves


@njit(cache=True)
def _copy_block(x, i0, base, dst):
    """dst[i, j] = x[i0 + i, base + j], or 0 where that is outside x; x (R, C) of any strides, dst (rows, width).

    The copy reads x in memory order: row by row when x's rows are contiguous (the inner
    loop then vectorizes, 0.09 ns per element on one core), column by column when its
    columns are (a transposed view, where reading along a row would touch one cache line
    per element).
    """
    R, C = x.shape
    rows = max(0, min(dst.shape[0], R - i0))  # rows of dst that exist in x
    cols = max(0, min(dst.shape[1], C - base))  # columns of dst that exist in x
    dst[rows:, :] = 0
    dst[:rows, cols:] = 0
    if x.strides[1] <= x.strides[0]:
        for i in range(rows):
            src = x[i0 + i, base:base + cols]
            row = dst[i]
            for j in range(cols):
                row[j] = src[j]
    else:
        for j in range(cols):
            src = x[i0:i0 + rows, base + j]
            for i in range(rows):
                dst[i, j] = src[i]


@njit(parallel=True, cache=True)
def _pack_kernel(x, out):
    """out[p, q, i, j] = x[p, i, q * width + j], or 0 outside x, for x (P, R, C) of any strides.

    out (P, n_panels, Rp, width) covers x; width = out.shape[3]. With one panel of width
    >= C this is a zero-padded copy; with width NC it cuts x into the column panels the
    micro-kernel reads. Each task moves 32 rows of one panel, so large copies run in
    parallel (NumPy's own copy of a transposed 768 x 512 matrix takes 1.5 ns per element).
    """
    P = x.shape[0]
    n_panels, Rp, width = out.shape[1:]
    row_blocks = (Rp + COPY_ROWS - 1) // COPY_ROWS
    for task in prange(P * n_panels * row_blocks):
        p = task // (n_panels * row_blocks)
        q = task // row_blocks % n_panels
        i0 = task % row_blocks * COPY_ROWS
        _copy_block(x[p], i0, q * width, out[p, q, i0:i0 + COPY_ROWS])


def pack_rows(x, row_multiple):
    """x (P, R, C) with its rows zero-padded to (P, Rp, C), Rp rounded up to row_multiple.

    For the fused attention kernels, which work on whole blocks of MR query rows (the
    GEMM itself needs no padded copy of its left operand). When no padding is needed x
    is returned as it is, even a transposed view: the micro-kernel reads it one number at
    a time, so its strides do not matter.
    """
    P, R, C = x.shape
    shape = (P, round_up(R, row_multiple), C)
    if x.shape == shape:
        return x
    out = aligned_host_empty((P, 1) + shape[1:], x.dtype)  # (P, 1, Rp, C)
    with threads_for(out.size * COPY_NS / 1000):
        _pack_kernel(x, out)
    return out[:, 0]


def pack_panels(x):
    """x (P, R, C) cut into column panels of width NC, the last zero-padded: (P, n_panels, R, NC).

    The right operand of the micro-kernel: each panel is a C-contiguous block, so the rows
    the micro-kernel streams through lie next to each other in memory (in a plain (R, C)
    array they would be C * itemsize bytes apart, and for C a power of two they would all
    compete for the same few sets of the L1 cache).
    """
    P, R, C = x.shape
    out = aligned_host_empty((P, round_up(C, NC) // NC, R, NC), x.dtype)
    with threads_for(out.size * COPY_NS / 1000):
        _pack_kernel(x, out)
    return out


def _estimated_us(M, K, N):
    """Single-thread time estimate of an (M, K) @ (K, N) product: the tiles, padding included, and packing b."""
    return (round_up(M, MR) * round_up(N, NC) * K * MULTIPLY_ADD_NS + K * round_up(N, NC) * COPY_NS) / 1000


EDGE_COLUMNS = NC // 4  # at most this many columns after the last full panel are done as dot products


def _edge_columns(a, N):
    """How many of the last columns of a @ b (N columns) `_bmm_kernel` computes as dot products.

    A panel costs the same however few of its NC columns are real, so with NC = 64 the
    lm_head's N = V = 65 would cost as much as N = 128. Up to EDGE_COLUMNS leftover
    columns are cheaper as dot products of a row of a with a column of b, which needs
    a's rows contiguous (the dot product runs along them).
    """
    edge = N % NC
    if edge > EDGE_COLUMNS or a.strides[2] != a.itemsize:
        return 0
    return edge


TRANSPOSE_SAVING = 0.8  # compute b^T @ a^T when its estimated time is at most this fraction


OWN_PACKING_MIN_BATCH = 4  # from this many matrices, a task is a whole matrix and packs its own b
PREPACK_MIN_ROWS = 512  # above this many rows of a transposed a, b is packed before the tasks start


def _task_shape(a, n_panels, threads):
    """(prepack, blocks_per_task, panels_per_task): how `_bmm_kernel` splits a (P, M, K) @ b into tasks.

    Usually each task packs the panels of b it multiplies, inside the one parallel call:
    a task per matrix for a batch of OWN_PACKING_MIN_BATCH or more, else a task per
    panel of b (each panel packed once) with all rows of a, the rows split in two or
    more groups only when there are too few panels to share evenly among the threads.
    Measured (bench_kernels.py), this beats packing b in a call of its own first on
    every linear product of the two GPTs, by 5-45%, but one kind: with a transposed a
    of many rows (the bigger GPT's dY^T @ x, 1152 and 1536 rows) every panel's task
    re-reads all of a, MR numbers of each cache line it loads, and tasks over (group of
    row blocks, panel) of a b packed beforehand are faster (6.9 against 8.1 ms).
    """
    P, M, _ = a.shape
    row_blocks = round_up(M, MR) // MR
    if P >= OWN_PACKING_MIN_BATCH:
        return False, row_blocks, n_panels
    if M > PREPACK_MIN_ROWS and a.strides[2] != a.itemsize:
        return True, BLOCKS_PER_TASK, 1
    tasks = P * max(n_panels, 1)
    row_groups = threads // math.gcd(tasks, threads) if tasks < 4 * threads else 1  # tasks a multiple of threads
    return False, -(-row_blocks // row_groups), 1


def bmm(a, b):
    """Batched product with the handwritten Numba GEMM: a (P, M, K) @ b (P, K, N) -> (P, M, N).

    When the transposed product b^T @ a^T is estimated to be cheaper, by its padding (an
    attention head's N = 32 columns would be padded to 64) or by the operand it packs
    (a few rows of a against a wide weight b, as when generating text), it computes that
    instead, the kernel writing into the transposed view of the output (no copy).
    """
    check_matmul_pair(a, b, 3, 3)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must have the same batch size, got shapes {a.shape} and {b.shape}.")
    return _bmm_checked(a, b)


def _bmm_checked(a, b):
    """`bmm` for inputs already checked (by `bmm` or `matmul`): the work, without the checks."""
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=a.dtype)  # (P, M, N)
    if out.size == 0 or a.shape[2] == 0:  # nothing to compute, or sums of no terms
        out[...] = 0
        return out
    target = out
    n_edge = _edge_columns(a, b.shape[2])
    M, K, N = a.shape[1], a.shape[2], b.shape[2]
    if n_edge == 0 and _estimated_us(N, K, M) <= TRANSPOSE_SAVING * _estimated_us(M, K, N):
        a, b, target = np.swapaxes(b, 1, 2), np.swapaxes(a, 1, 2), np.swapaxes(out, 1, 2)  # (P, N, K), (P, K, M), (P, N, M)
    P, M, K = a.shape
    N = b.shape[2]
    if n_edge:
        b_edge = np.ascontiguousarray(np.swapaxes(b[:, :, N - n_edge:], 1, 2))  # (P, n_edge, K)
        b = b[:, :, :N - n_edge]  # (P, K, N - n_edge): the columns done by panels
    else:
        b_edge = np.empty((P, 0, K), a.dtype)
    n_panels = round_up(b.shape[2], NC) // NC
    with threads_for(P * _estimated_us(M, K, N), GEMM_PARALLEL_MIN_US):
        prepack, blocks_per_task, panels_per_task = _task_shape(a, n_panels, numba.get_num_threads())
        b_panels = pack_panels(b) if prepack else np.empty((0, 0, 0, 0), a.dtype)  # (P, n_panels, K, NC) or none
        _bmm_kernel(a, b, b_panels, b_edge, target, blocks_per_task, max(panels_per_task, 1))
    return out


def gemm(a, b):
    """2-D product with the handwritten Numba GEMM: a (M, K) @ b (K, N) -> (M, N)."""
    check_matmul_pair(a, b, 2, 2)
    return bmm(a[None], b[None])[0]


# Products of a few rows with a weight stored (N, K), as in decoding one token at a time.
# The GEMM would pack the whole weight into panels on every call, reading it twice and
# writing it once, for a product that is bound by reading it: measured on the reference
# machine (2 vCPUs, shared), GPT-2 small's products of one row take 2.3-3.1 ms instead of
# 8-10 ms (c_attn, c_fc, c_proj) and 18 ms instead of 124 ms (lm_head, N = 50257); with 8
# rows 7.7 against 12.6 ms (N = 3072, K = 768).
ROW_DOTS_MAX_ROWS = 8


@njit(cache=True, parallel=True)
def _row_dots_kernel(a, w, out):
    """out[m, n] = a[m, :] . w[n, :], a (M, K) and w (N, K) with contiguous rows.

    Each row of w is read once, from memory, and used for all M rows of a (in cache).
    """
    M, N = out.shape
    for n in prange(N):
        for m in range(M):
            out[m, n] = row_dot(a[m], w[n])


def matmul(a, b):
    """a @ b with np.matmul's semantics (1-D, 2-D, batched, broadcast batch dims), dtype kept.

    The one product the autograd ops call. It runs the handwritten Numba GEMM (`bmm`)
    or NumPy's BLAS according to `uses_numba_gemm`, whose docstring gives the measured
    reasons; either way the result equals np.matmul(a, b) up to rounding. Of the products
    given to the Numba GEMM, those of up to ROW_DOTS_MAX_ROWS rows with the transpose of a
    row-major weight (decoding) are dot products of rows instead, which need no packing.
    """
    batch = check_matmul(a, b)
    if not uses_numba_gemm(a.shape, b.shape):
        return np.matmul(a, b)
    if a.ndim == 2 and b.ndim == 2:  # the linear layers: no batch to stack
        if a.shape[0] <= ROW_DOTS_MAX_ROWS and b.T.flags.c_contiguous:  # x @ weight.T for a few rows x
            out = np.empty((a.shape[0], b.shape[1]), a.dtype)  # (M, N)
            _row_dots_kernel(np.ascontiguousarray(a), b.T, out)
            return out
        return _bmm_checked(a[None], b[None])[0]
    M = a.shape[-2]
    N = b.shape[-1]
    return _bmm_checked(_stacked(a, batch), _stacked(b, batch)).reshape(batch + (M, N))


def _stacked(x, batch):
    """x (..., R, C) broadcast to batch + (R, C) and flattened to (P, R, C): a view when possible."""
    if x.shape[:-2] != batch:
        x = np.broadcast_to(x, batch + x.shape[-2:])
    return x.reshape((math.prod(batch),) + x.shape[-2:])


