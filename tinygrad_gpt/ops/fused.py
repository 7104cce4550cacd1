"""The fused operations of a neural network: softmax, log-softmax, cross-entropy,
layer norm, embedding, dropout and causal self-attention.

"Fused" means each is one node in the graph with one handwritten backward,
instead of a chain of elementary ops. That saves memory (fewer intermediate
arrays are kept) and time, and the backward formulas are short enough to check
by hand. The heavy loops run in `kernels`, which has a plain NumPy reference
of each kernel beside it.
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
        self.y = np.moveaxis(kernels.softmax_forward(_move_to_last(x, dim)), -1, dim)
        return self.y

    def backward(self, grad):
        # y_i = e^{x_i} / sum_j e^{x_j}  =>  dy_i/dx_k = y_i (delta_ik - y_k), so
        #   dx_k = sum_i dy_i y_i (delta_ik - y_k) = y_k (dy_k - sum_i dy_i y_i).
        # Two terms: the direct one y_k dy_k, and y_k times the row's weighted mean of dy.
        dx = kernels.softmax_backward(_move_to_last(self.y, self.dim), _move_to_last(grad, self.dim))
        return np.moveaxis(dx, -1, self.dim)


class LogSoftmaxOp(Function):
    def forward(self, x, dim=-1):
        self.dim = dim = normalize_dim(dim, x.ndim, "log_softmax")
        x_max = x.max(axis=dim, keepdims=True)  # subtracted so exp cannot overflow
        shifted = x - x_max
        lse = np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
        self.y = shifted - lse  # log softmax; exp(y) is the softmax the backward needs
        return self.y

    def backward(self, grad):
        # y_i = x_i - log sum_j e^{x_j}  =>  dy_i/dx_k = delta_ik - softmax_k, so
        #   dx_k = dy_k - softmax_k * sum_i dy_i.
        softmax = np.exp(self.y)
        return grad - softmax * grad.sum(axis=self.dim, keepdims=True)


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
        loss, self.lse = kernels.cross_entropy_forward(logits, self.targets, ignore_index)
        return np.asarray(loss, dtype=logits.dtype)

    def backward(self, grad):
        # loss = -(1/n) sum_rows log softmax(z)_t = (1/n) sum_rows (lse - z_t), so
        #   dloss/dz_v = (1/n) (softmax(z)_v - [v == t]) on each counted row, 0 on ignored rows.
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
        weight = affine[0] if has_weight else np.ones(C, dtype=x.dtype)
        bias = affine[-1] if has_bias else None
        for name, p in (("weight", weight), ("bias", bias)):
            if p is not None and p.shape != (C,):
                raise ValueError(f"layer_norm: {name} has shape {p.shape}, expected ({C},)")
        self.x = x.reshape(-1, C)  # (N, C)
        self.weight = weight
        # Cache the per-row mean and 1/std (N,) rather than the normalized x (N, C).
        y, self.mean, self.rstd = kernels.layernorm_forward(self.x, weight, bias, eps)
        return y.reshape(x.shape)

    def backward(self, grad):
        # xhat = (x - mean) * rstd,  y = weight * xhat + bias. With g = dy * weight:
        #   dbias   = sum over rows of dy
        #   dweight = sum over rows of dy * xhat
        #   dx      = rstd * (g - mean(g) - xhat * mean(g * xhat))
        # The three terms of dx: the direct path through xhat, the path through the
        # mean (every x moves it), and the path through the variance.
        dy = grad.reshape(self.x.shape)  # (N, C)
        dx, dweight, dbias = kernels.layernorm_backward(dy, self.x, self.weight, self.mean, self.rstd)
        grads = (dx.reshape(self.x_shape),)
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
        # y[n] = weight[idx[n]]  =>  row v of dweight is the sum of dy[n] over n with idx[n] = v
        # (a scatter-add: a token that appears twice gets both gradients).
        C = grad.shape[-1]
        return kernels.embedding_backward(self.idx.reshape(-1), grad.reshape(-1, C), self.V)


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
        keep = rng.random(x.shape) >= p
        self.mask = keep * x.dtype.type(1 / (1 - p))  # the backward reuses this mask
        return x * self.mask

    def backward(self, grad):
        # y = x * mask  =>  dy/dx = mask: dropped elements get no gradient.
        return grad * self.mask


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
        y, self.att = kernels.attention_forward(q, k, v, self.scale, is_causal)
        return y  # (B, nh, Tq, hs)

    def backward(self, grad):
        # s = q k^T * scale,  a = softmax(s) (masked),  y = a v. Backwards through each:
        #   dv = a^T dy                          (B, nh, Tk, hs)
        #   da = dy v^T                          (B, nh, Tq, Tk)
        #   ds = a * (da - rowsum(da * a))       the softmax backward
        #   dq = ds k * scale,  dk = ds^T q * scale
        # Masked entries have a = 0, so they pass no gradient.
        return kernels.attention_backward(grad, self.q, self.k, self.v, self.att, self.scale)
