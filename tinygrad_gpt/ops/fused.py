"""The fused operations of a neural network: softmax, log-softmax, cross-entropy,
layer norm, embedding, dropout and causal self-attention.

"Fused" means each is one node in the graph with one handwritten backward,
instead of a chain of elementary ops. That saves memory (fewer intermediate
arrays are kept) and time, and each backward below is derived in full in its
comment, so it can be checked with pencil and paper. The arithmetic runs in
`kernels`: kernels/reference.py has it in plain NumPy, and kernels.use("reference")
runs these ops on it.
"""

import math

import numpy as np

from .. import kernels
from ..tensor import Function
from .reduce import normalize_dim


def _move_to_last(x, dim):
    """View x with axis `dim` moved last, so kernels can work on rows."""
    return np.moveaxis(x, dim, -1)


class SoftmaxOp(Function):
    def forward(self, x, dim=-1):
        self.dim = dim = normalize_dim(dim, x.ndim, "softmax")
        # The output is cached: the backward needs only y, not x.
        self.y = np.moveaxis(kernels.softmax_forward(_move_to_last(x, dim)), -1, dim)  # (..., n, ...) like x
        return self.y

    def backward(self, grad):
        # Forward: y_i = e^{x_i} / S, S = sum_j e^{x_j}, along `dim`.
        # Quotient rule: dy_i/dx_k = (delta_ik e^{x_i} S - e^{x_i} e^{x_k}) / S^2
        #                          = y_i delta_ik - y_i y_k = y_i (delta_ik - y_k).
        # Chain rule, summing over the outputs i of the row:
        #   dx_k = sum_i dy_i y_i (delta_ik - y_k) = y_k dy_k - y_k sum_i dy_i y_i
        #        = y_k (dy_k - sum_i dy_i y_i).
        # Two terms: the direct one y_k dy_k, and y_k times the row's y-weighted mean of dy
        # (every x_k moves the normaliser S, and through it every output).
        y, dy = _move_to_last(self.y, self.dim), _move_to_last(grad, self.dim)  # (..., n) views
        dx = kernels.softmax_backward(y, dy)  # (..., n)
        return np.moveaxis(dx, -1, self.dim)  # like x


class LogSoftmaxOp(Function):
    def forward(self, x, dim=-1):
        self.dim = dim = normalize_dim(dim, x.ndim, "log_softmax")
        x_max = x.max(axis=dim, keepdims=True)  # (..., 1, ...) subtracted so exp cannot overflow
        shifted = x - x_max  # like x
        lse = np.log(np.exp(shifted).sum(axis=dim, keepdims=True))  # (..., 1, ...)
        self.y = shifted - lse  # like x: log softmax; exp(y) is the softmax the backward needs
        return self.y

    def backward(self, grad):
        # Forward: y_i = x_i - L, L = log sum_j e^{x_j}.
        # dL/dx_k = e^{x_k} / sum_j e^{x_j} = softmax_k, so dy_i/dx_k = delta_ik - softmax_k, and
        #   dx_k = sum_i dy_i (delta_ik - softmax_k) = dy_k - softmax_k sum_i dy_i.
        softmax = np.exp(self.y)  # like x
        return grad - softmax * grad.sum(axis=self.dim, keepdims=True)  # like x


class CrossEntropyOp(Function):
    """Mean negative log-likelihood of `targets` under softmax(logits), fused.

    logits (N, V), targets (N,) integer class indices; rows whose target equals
    `ignore_index` contribute nothing and are not counted in the mean.
    """

    def forward(self, logits, targets, ignore_index=-100):
        targets = np.asarray(targets)
        if logits.ndim != 2 or targets.shape != logits.shape[:1]:
            raise ValueError(
                f"cross_entropy: expected logits (N, V) and targets (N,), got "
                f"{logits.shape} and {targets.shape}"
            )
        if targets.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: targets must be integers, got dtype {targets.dtype}")
        valid = targets != ignore_index
        if np.any((targets[valid] < 0) | (targets[valid] >= logits.shape[1])):
            raise IndexError(
                f"cross_entropy: a target is outside [0, {logits.shape[1]}) "
                f"and is not ignore_index={ignore_index}"
            )
        self.logits, self.targets = logits, targets.astype(np.int64)
        self.ignore_index = ignore_index
        loss, self.lse = kernels.cross_entropy_forward(logits, self.targets, ignore_index)  # (), (N,)
        return np.asarray(loss, dtype=logits.dtype)  # ()

    def backward(self, grad):
        # Forward: loss = (1/n) sum over the n counted rows of nll_r,
        #   nll_r = -log softmax(z_r)_t = lse_r - z_{r,t},   lse_r = log sum_v e^{z_{r,v}}, t = target of row r.
        # d lse_r / d z_{r,v} = e^{z_{r,v}} / sum_u e^{z_{r,u}} = softmax(z_r)_v, and
        # d z_{r,t} / d z_{r,v} = [v == t], so
        #   d nll_r / d z_{r,v} = softmax(z_r)_v - [v == t]        (probabilities minus the one-hot)
        #   dz_{r,v} = grad * (1/n) (softmax(z_r)_v - [v == t])   on counted rows; 0 on ignored rows,
        # which appear in no term of the loss. grad is the upstream gradient of the scalar loss.
        # We cached the per-row log-sum-exp (N,) instead of the softmax (N, V): the
        # kernel recomputes softmax = exp(z - lse) in one pass, saving N*V memory.
        return kernels.cross_entropy_backward(
            self.logits, self.targets, self.lse, float(grad), self.ignore_index
        )  # (N, V)


class LayerNormOp(Function):
    """Normalize the last dim to mean 0 and variance 1, then scale and shift.

    Inputs are x (..., C) and then, if given, weight (C,) and bias (C,).
    """

    def forward(self, x, *affine, has_weight=True, has_bias=True, eps=1e-5):
        C = x.shape[-1]
        self.x_shape, self.has_weight, self.has_bias = x.shape, has_weight, has_bias
        weight = affine[0] if has_weight else np.ones(C, dtype=x.dtype)  # (C,)
        bias = affine[-1] if has_bias else None
        for name, p in (("weight", weight), ("bias", bias)):
            if p is not None and p.shape != (C,):
                raise ValueError(f"layer_norm: {name} has shape {p.shape}, expected ({C},)")
        self.x = x.reshape(-1, C)  # (N, C)
        self.weight = weight
        # Cache the per-row mean and 1/std (N,) rather than the normalized x (N, C).
        y, self.mean, self.rstd = kernels.layernorm_forward(self.x, weight, bias, eps)  # (N, C), (N,), (N,)
        return y.reshape(x.shape)  # (..., C)

    def backward(self, grad):
        # Forward, per row of C entries: mu = (1/C) sum_j x_j,  var = (1/C) sum_j (x_j - mu)^2,
        #   r = (var + eps)^(-1/2),  xhat_j = (x_j - mu) r,  y_j = w_j xhat_j + b_j.
        # Parameters: dy_j/db_j = 1 and dy_j/dw_j = xhat_j, summed over the rows:
        #   dbias = sum_rows dy,   dweight = sum_rows dy * xhat.
        # Input: let g_j = dy_j w_j = dL/dxhat_j. xhat_j depends on x_k three ways,
        #   directly (x_j), through mu, and through r (via var):
        #   dmu/dx_k = 1/C
        #   dvar/dx_k = (2/C) sum_j (x_j - mu)(delta_jk - 1/C) = (2/C)(x_k - mu)   (sum_j (x_j - mu) = 0)
        #   dr/dx_k = -(1/2) (var + eps)^(-3/2) dvar/dx_k = -(r^3 / C)(x_k - mu) = -(r^2 / C) xhat_k
        #   dxhat_j/dx_k = (delta_jk - 1/C) r + (x_j - mu) dr/dx_k = r (delta_jk - 1/C - xhat_j xhat_k / C)
        # So dx_k = sum_j g_j dxhat_j/dx_k = r (g_k - mean(g) - xhat_k mean(g * xhat)),
        # three terms: the direct path, the path through the mean, the path through the variance.
        dy = grad.reshape(self.x.shape)  # (N, C)
        dx, dweight, dbias = kernels.layernorm_backward(dy, self.x, self.weight, self.mean, self.rstd)  # (N, C), (C,), (C,)
        grads = (dx.reshape(self.x_shape),)  # ((..., C),)
        if self.has_weight:
            grads += (dweight,)
        if self.has_bias:
            grads += (dbias,)
        return grads


class EmbeddingOp(Function):
    """weight[idx]: look up one row of the (V, C) table per integer index."""

    def forward(self, weight, idx):
        idx = np.asarray(idx)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"embedding: indices must be integers, got dtype {idx.dtype}")
        V = weight.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= V):
            raise IndexError(
                f"embedding: index {int(idx.min()) if idx.min() < 0 else int(idx.max())} "
                f"is out of range for a table of {V} rows"
            )
        self.idx, self.V = idx, V
        return weight[idx]  # (*idx.shape, C)

    def backward(self, grad):
        # Forward: y[n] = weight[idx[n]], so dy[n, c] / dweight[v, c] = [idx[n] == v], and
        #   dweight[v] = sum over n with idx[n] = v of dy[n]
        # (a scatter-add: a token that appears twice gets both gradients).
        C = grad.shape[-1]
        return kernels.embedding_backward(self.idx.reshape(-1), grad.reshape(-1, C), self.V)  # (V, C)


class DropoutOp(Function):
    """Zero each element with probability p and scale the rest by 1/(1-p).

    The scaling ("inverted dropout") keeps the expected value unchanged, so
    evaluation needs no rescaling: in eval mode dropout is the identity and
    this op is not applied at all.
    """

    def forward(self, x, p, rng):
        if not 0 <= p < 1:
            raise ValueError(f"dropout: p must be in [0, 1), got {p}")
        # Draw in float64 whatever x's dtype, so a seed gives the same mask in both.
        keep = rng.random(x.shape) >= p  # like x, booleans
        self.mask = keep * x.dtype.type(1 / (1 - p))  # like x; the backward reuses this mask
        return x * self.mask  # like x

    def backward(self, grad):
        # Forward: y = x * mask (mask 0 or 1/(1-p))  =>  dy/dx = mask: dropped elements get no gradient.
        return grad * self.mask  # like x


class ScaledDotProductAttentionOp(Function):
    """softmax(q @ k^T * scale, causal mask) @ v, forward and backward fused.

    q (B, nh, Tq, hs), k and v (B, nh, Tk, hs). With `is_causal`, query i
    sees keys j <= i + (Tk - Tq): the queries are the last Tq positions of the
    sequence, which is what a KV cache needs.
    """

    def forward(self, q, k, v, is_causal=False, scale=None):
        if q.ndim != 4 or k.shape != v.shape or q.shape[:2] + q.shape[3:] != k.shape[:2] + k.shape[3:]:
            raise ValueError(
                f"scaled_dot_product_attention: expected q (B, nh, Tq, hs) and k, v "
                f"(B, nh, Tk, hs), got {q.shape}, {k.shape}, {v.shape}"
            )
        if is_causal and q.shape[2] > k.shape[2]:
            raise ValueError(
                f"scaled_dot_product_attention: causal attention needs Tq <= Tk, got "
                f"{q.shape[2]} > {k.shape[2]}"
            )
        self.scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        self.q, self.k, self.v = q, k, v
        # Cache the attention weights (B, nh, Tq, Tk): recomputing them costs a matmul.
        y, self.att = kernels.attention_forward(q, k, v, self.scale, is_causal)  # (B, nh, Tq, hs), (B, nh, Tq, Tk)
        return y

    def backward(self, grad):
        # Forward, per (batch, head): s = q k^T * scale (Tq, Tk),  a = softmax(s) over keys
        # (masked entries -inf, so a = 0 there),  y = a v (Tq, hs). Backwards, one step at a time:
        # 1. y = a v, a product:  y_id = sum_j a_ij v_jd, so
        #      dv_jd = sum_i a_ij dy_id       dv = a^T dy              (B, nh, Tk, hs)
        #      da_ij = sum_d dy_id v_jd       da = dy v^T              (B, nh, Tq, Tk)
        # 2. a = softmax(s) row by row, the backward of SoftmaxOp:
        #      ds_ij = a_ij (da_ij - sum_l da_il a_il)                 (B, nh, Tq, Tk)
        #    Masked entries have a_ij = 0, so ds_ij = 0: they pass no gradient.
        # 3. s = q k^T * scale, a product times a constant:  s_ij = scale sum_d q_id k_jd, so
        #      dq_id = scale sum_j ds_ij k_jd    dq = ds k * scale      (B, nh, Tq, hs)
        #      dk_jd = scale sum_i ds_ij q_id    dk = ds^T q * scale    (B, nh, Tk, hs)
        # The scale enters only in step 3, once on each of dq and dk (the fast kernel folds
        # it into ds instead, the same product). The att cached by the forward saves
        # recomputing step 1's a (a product and a softmax).
        return kernels.attention_backward(grad, self.q, self.k, self.v, self.att, self.scale)  # like q, k, v
