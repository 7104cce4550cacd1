"""Scaled dot-product attention, forward and backward, fused per (batch, head).

The formulas are those of `attention_forward` / `attention_backward` in reference.py
(derived in ops/fused.py, ScaledDotProductAttentionOp.backward):

    forward:   scores = q @ k^T * scale,  att = softmax(scores) (causal rule of
               reference.causal_visible),  y = att @ v
    backward:  dv = att^T @ dy,  datt = dy @ v^T,  dscores = att * (datt - rowsum(datt * att)),
               dq = dscores @ k * scale,  dk = dscores^T @ q * scale

Where scale is applied: the forward multiplies each tile of q @ k^T by it as it
stores the scores; the fused backward folds it into dscores once (dscores * scale,
then dq = dscores @ k and dk = dscores^T @ q), which is the same product.
att is returned by the forward and cached for the backward (recomputing it costs a
matmul and a softmax).

Why fused: the products are done by the GEMM micro-kernel of gemm.py (`tile_product`)
on blocks of MR query rows (MR = 4 with AVX-512 and on other CPUs, 6 with AVX2: the
tile of tuning/target.py), with the softmax applied in between while the block's
scores are in cache; with a causal mask the blocks stop at the last visible key, so
the masked half of the scores, of att @ v, and of the four backward products is
never computed.

Which path runs:
* forward: the fused kernel, except for tiny problems (under SMALL_ATTENTION_WORK
  multiply-adds, e.g. decoding one token with a KV cache), where np.matmul around the
  softmax kernel is cheaper than packing;
* backward: the fused kernel when hs is a multiple of the tile width NC (64 with
  AVX-512, 16 with AVX2); otherwise the tile's padding wastes work and the same
  formulas run as `matmul` products around `softmax_backward`
  (`_attention_backward_composed`; measurements in `attention_backward`).

Parallel tasks: the forward has one per block of MR query rows of one (batch, head);
the backward one per (batch, head), because dk and dv sum over all of the head's queries.
"""

import numpy as np
from numba import njit, prange

from ._checks import check_attention_backward, check_attention_forward
from ._vecmath import fast_exp, row_dot, row_max, row_sum
from .gemm import MR, NC, matmul, pack_panels, pack_rows, round_up, tile_product
from .softmax import softmax_backward, softmax_forward
from .tuning.aligned import aligned_empty
from .tuning.threads import threads_for

# Single-thread cost per element of one (Tq, Tk, hs) block, summed over heads (float32,
# reference machine), for `threads_for`.
FORWARD_NS = 0.1
BACKWARD_NS = 0.13


@njit(cache=True)
def _forward_rows(q, k_panels, v_panels, scale, causal, i0, y, att):
    """Query rows i0 .. i0 + MR - 1 of one (batch, head): fill their rows of y (Tq, hs) and att (Tq, Tk).

    q (Tqp, hs) has its rows padded to a multiple of MR; k_panels (., hs, NC) holds k^T
    and v_panels (., Tk, NC) holds v, both cut into panels (see gemm.py).
    """
    Tq, hs = y.shape
    Tk = att.shape[1]
    Tkp = round_up(Tk, NC)  # keys, padded to whole panels
    offset = Tk - Tq
    zero = y.dtype.type(0)
    one = y.dtype.type(1)
    rows = min(MR, Tq - i0)  # query rows of this block that exist
    # Keys visible to the block's last row; with a causal mask later keys are skipped.
    n_block = min(Tk, i0 + rows + offset) if causal else Tk
    tile = np.empty((MR, NC), y.dtype)
    probs = aligned_empty(MR * Tkp, y.dtype).reshape(MR, Tkp)  # (MR, Tkp) this block's rows of att
    # scores = q @ k^T * scale, one panel of NC keys at a time
    for p in range((n_block + NC - 1) // NC):
        tile_product(q, i0, 0, q.shape[1], k_panels[p], tile)
        for r in range(MR):
            for j in range(NC):
                probs[r, p * NC + j] = tile[r, j] * scale
    # softmax over the visible keys of each row (as in softmax.py); the rest is exactly 0
    for r in range(MR):
        pr = probs[r]
        n = 0  # a padding row (r >= rows) becomes all zeros
        if r < rows:
            n = min(Tk, i0 + r + offset + 1) if causal else Tk
            m = row_max(pr[:n])
            for j in range(n):
                pr[j] = fast_exp(pr[j] - m)
            inv = one / row_sum(pr[:n])
            for j in range(n):
                pr[j] *= inv
        for j in range(n, Tkp):
            pr[j] = zero
    for r in range(rows):
        for j in range(Tk):
            att[i0 + r, j] = probs[r, j]
    # y = att @ v over the visible keys only
    for p in range(v_panels.shape[0]):
        tile_product(probs, 0, 0, n_block, v_panels[p], tile)
        for r in range(rows):
            for j in range(min(NC, hs - p * NC)):
                y[i0 + r, p * NC + j] = tile[r, j]


@njit(parallel=True, cache=True)
def _attention_forward_kernel(q, k_panels, v_panels, scale, causal, y, att):
    """Fill y (G, Tq, hs) and att (G, Tq, Tk): one task per block of MR query rows of one (batch, head)."""
    G = y.shape[0]
    row_blocks = q.shape[1] // MR
    for task in prange(G * row_blocks):
        g = task // row_blocks
        _forward_rows(q[g], k_panels[g], v_panels[g], scale, causal, task % row_blocks * MR, y[g], att[g])


@njit(cache=True)
def _backward_head(dy, att, v_panels, k_panels, q_panels, dy_panels, scale, dq, dk, dv):
    """The gradients of one (batch, head): fill dq (Tq, hs), dk and dv (Tk, hs).

    dy (Tqp, hs) is padded like q in the forward; att (Tq, Tk) is unpadded; v_panels
    holds v^T, k_panels k, q_panels q and dy_panels dy, cut into panels.

    Entries of att that are exactly 0 contribute exactly 0 to every gradient, so the
    products skip them in blocks: row i stops at n[i], one past its last nonzero entry,
    and key block j0 starts at the first row whose n passes j0. With a causal mask this
    skips the masked half; without one nothing is skipped.
    """
    Tq, hs = dq.shape
    Tk = dk.shape[0]
    Tqp = dy.shape[0]
    Tkp = round_up(Tk, NC)  # keys, padded to whole panels
    zero = dq.dtype.type(0)
    tile = np.empty((MR, NC), dq.dtype)
    att_p = aligned_empty(Tqp * Tkp, dq.dtype).reshape(Tqp, Tkp)  # (Tqp, Tkp) att, zero-padded
    ds = aligned_empty(Tqp * Tkp, dq.dtype).reshape(Tqp, Tkp)  # (Tqp, Tkp) datt, then dscores
    n = np.zeros(Tqp, dtype=np.int64)  # row i of att is zero from column n[i] on
    for i in range(Tqp):
        for j in range(Tkp):
            att_p[i, j] = att[i, j] if i < Tq and j < Tk else zero
        last = Tk if i < Tq else 0
        while last > 0 and att_p[i, last - 1] == zero:
            last -= 1
        n[i] = last
    # datt = dy @ v^T, then dscores = att * (datt - rowsum(datt * att)) * scale
    for i0 in range(0, Tqp, MR):
        n_block = n[i0:i0 + MR].max()  # keys seen by the block's rows
        for p in range((n_block + NC - 1) // NC):
            tile_product(dy, i0, 0, dy.shape[1], v_panels[p], tile)
            for r in range(MR):
                for j in range(NC):
                    ds[i0 + r, p * NC + j] = tile[r, j]
        for i in range(i0, i0 + MR):
            ni = n[i]
            s = row_dot(ds[i, :ni], att_p[i, :ni])
            for j in range(ni):
                ds[i, j] = att_p[i, j] * (ds[i, j] - s) * scale
            for j in range(ni, Tkp):
                ds[i, j] = zero
    # dq = dscores @ k: row block i0 needs keys up to its largest n
    for i0 in range(0, Tqp, MR):
        k_end = n[i0:i0 + MR].max()
        for p in range(k_panels.shape[0]):
            tile_product(ds, i0, 0, k_end, k_panels[p], tile)
            for r in range(min(MR, Tq - i0)):
                for j in range(min(NC, hs - p * NC)):
                    dq[i0 + r, p * NC + j] = tile[r, j]
    # dk = dscores^T @ q and dv = att^T @ dy: key block j0 needs the query rows from the
    # first one whose n passes j0 (the transposed views are read in place)
    first = 0
    for j0 in range(0, Tk, MR):
        while first < Tqp and n[first] <= j0:
            first += 1
        for p in range(q_panels.shape[0]):
            tile_product(ds.T, j0, first, Tq, q_panels[p], tile)
            for r in range(min(MR, Tk - j0)):
                for j in range(min(NC, hs - p * NC)):
                    dk[j0 + r, p * NC + j] = tile[r, j]
            tile_product(att_p.T, j0, first, Tq, dy_panels[p], tile)
            for r in range(min(MR, Tk - j0)):
                for j in range(min(NC, hs - p * NC)):
                    dv[j0 + r, p * NC + j] = tile[r, j]


@njit(parallel=True, cache=True)
def _attention_backward_kernel(dy, att, v_panels, k_panels, q_panels, dy_panels, scale, dq, dk, dv):
    """Fill dq (G, Tq, hs), dk and dv (G, Tk, hs): one task per (batch, head), since dk and dv
    sum over all query rows of the head."""
    for g in prange(dq.shape[0]):
        _backward_head(dy[g], att[g], v_panels[g], k_panels[g], q_panels[g], dy_panels[g], scale, dq[g], dk[g], dv[g])


SMALL_ATTENTION_WORK = 2**16  # multiply-adds of q @ k^T below which the fused kernel does not pay


def attention_forward(q, k, v, scale, causal):
    """Attention of q (B, nh, Tq, hs) over k, v (B, nh, Tk, hs): returns (y (B, nh, Tq, hs), att (B, nh, Tq, Tk)).

    att = softmax(q @ k^T * scale) with the causal rule of `softmax_forward` when causal.
    """
    scale = check_attention_forward(q, k, v, scale, causal)
    B, nh, Tq, hs = q.shape
    Tk = k.shape[2]
    G = B * nh
    if G * Tq * Tk * hs < SMALL_ATTENTION_WORK:
        # Decoding with a KV cache (one query row per head): packing costs more than it
        # saves. Measured at the baby GPT (B=1, nh=4, hs=32, Tk<=64), per call: fused
        # 45-60 us, these two np.matmul around the softmax kernel 10-15 us.
        att = softmax_forward(np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale), causal)  # (B, nh, Tq, Tk)
        return np.matmul(att, v), att  # (B, nh, Tq, hs)
    q3 = q.reshape(G, Tq, hs)  # (G, Tq, hs)
    k3 = k.reshape(G, Tk, hs)  # (G, Tk, hs)
    v3 = v.reshape(G, Tk, hs)  # (G, Tk, hs)
    y = np.empty((G, Tq, hs), dtype=q.dtype)  # (G, Tq, hs)
    att = np.empty((G, Tq, Tk), dtype=q.dtype)  # (G, Tq, Tk)
    q_rows, k_panels, v_panels = pack_rows(q3, MR), pack_panels(np.swapaxes(k3, 1, 2)), pack_panels(v3)
    with threads_for(G * Tq * Tk * hs * FORWARD_NS / 1000):
        _attention_forward_kernel(q_rows, k_panels, v_panels, scale, bool(causal), y, att)
    return y.reshape(B, nh, Tq, hs), att.reshape(B, nh, Tq, Tk)


def attention_backward(dy, q, k, v, att, scale):
    """Gradients of attention: returns (dq, dk, dv) shaped like q, k, v.

    att is the one `attention_forward` returned; its exact zeros (the causal mask) are
    skipped, so no causal flag is needed.

    Three of the four backward products have hs columns, which the micro-kernel pads to
    a multiple of NC (64 with AVX-512, 16 with AVX2). When hs is not such a multiple the
    fused kernel wastes that padding, and the textbook composition of `matmul` and
    `softmax_backward` is faster.
    Measured (float32, B * nh = 48): hs = 32, T = 64: fused 0.88-1.26 ms, composed
    0.56-0.58 ms, NumPy reference 0.66-0.69 ms; hs = 64, T = 256: fused 13.8-17.3 ms,
    composed 24.5-32.5 ms, reference 28 ms.
    """
    scale = check_attention_backward(dy, q, k, v, att, scale)
    B, nh, Tq, hs = q.shape
    if hs % NC != 0:
        return _attention_backward_composed(dy, q, k, v, att, scale)
    Tk = k.shape[2]
    G = B * nh
    q3 = q.reshape(G, Tq, hs)  # (G, Tq, hs)
    k3 = k.reshape(G, Tk, hs)  # (G, Tk, hs)
    v3 = v.reshape(G, Tk, hs)  # (G, Tk, hs)
    dy3 = dy.reshape(G, Tq, hs)  # (G, Tq, hs)
    dq = np.empty((G, Tq, hs), dtype=q.dtype)  # (G, Tq, hs)
    dk = np.empty((G, Tk, hs), dtype=q.dtype)  # (G, Tk, hs)
    dv = np.empty((G, Tk, hs), dtype=q.dtype)  # (G, Tk, hs)
    packed = (pack_rows(dy3, MR), att.reshape(G, Tq, Tk), pack_panels(np.swapaxes(v3, 1, 2)),
              pack_panels(k3), pack_panels(q3), pack_panels(dy3))
    with threads_for(G * Tq * Tk * hs * BACKWARD_NS / 1000):
        _attention_backward_kernel(*packed, scale, dq, dk, dv)
    return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)


def _attention_backward_composed(dy, q, k, v, att, scale):
    """The backward products by `matmul` and the softmax backward by its kernel (scale in q's dtype)."""
    dv = matmul(np.swapaxes(att, -1, -2), dy)  # (B, nh, Tk, hs)
    dscores = softmax_backward(att, matmul(dy, np.swapaxes(v, -1, -2)))  # (B, nh, Tq, Tk)
    dq = matmul(dscores, k) * scale  # (B, nh, Tq, hs)
    dk = matmul(np.swapaxes(dscores, -1, -2), q) * scale  # (B, nh, Tk, hs)
    return dq, dk, dv


