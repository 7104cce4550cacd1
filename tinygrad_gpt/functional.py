"""PyTorch-style functions over Tensors (`torch.nn.functional`'s names and arguments).

Each function is thin: it checks its arguments and picks the op from `ops`.
Where PyTorch has an argument we do not support, it is left out rather than
accepted and ignored.
"""

import numpy as np

from . import rng
from .ops import (
    GELUOp,
    CatOp,
    CrossEntropyOp,
    DropoutOp,
    EmbeddingOp,
    LayerNormOp,
    LinearOp,
    LogSoftmaxOp,
    ReLUOp,
    ScaledDotProductAttentionOp,
    SoftmaxOp,
    StackOp,
)
from .tensor import Tensor


def _array(x):
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def relu(x):
    return ReLUOp.apply(x)


def gelu(x, approximate="none"):
    """GELU; approximate="tanh" is GPT-2's approximation, "none" the exact erf form."""
    return GELUOp.apply(x, approximate=approximate)


def softmax(x, dim=-1):
    return SoftmaxOp.apply(x, dim=dim)


def log_softmax(x, dim=-1):
    return LogSoftmaxOp.apply(x, dim=dim)


def cross_entropy(input, target, ignore_index=-100):
    """Mean cross-entropy of logits `input` (N, C) against class indices `target` (N,).

    Targets equal to `ignore_index` are skipped and not counted in the mean.
    """
    return CrossEntropyOp.apply(input, targets=_array(target), ignore_index=ignore_index)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer norm over the last dim (`normalized_shape` must be that one dim)."""
    normalized_shape = (
        (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    )
    if normalized_shape != x.shape[-1:]:
        raise ValueError(
            f"layer_norm: normalized_shape {normalized_shape} must be the last dim of x {x.shape}"
        )
    affine = tuple(p for p in (weight, bias) if p is not None)
    return LayerNormOp.apply(
        x, *affine, has_weight=weight is not None, has_bias=bias is not None, eps=eps
    )


def linear(x, weight, bias=None):
    """x @ weight^T + bias, weight (out_features, in_features) as in PyTorch."""
    return LinearOp.apply(x, weight) if bias is None else LinearOp.apply(x, weight, bias)


def embedding(input, weight):
    """Rows of `weight` (V, C) picked by the integer indices `input` (any shape)."""
    return EmbeddingOp.apply(weight, idx=_array(input))


def dropout(x, p=0.5, training=True, generator=None):
    """Inverted dropout; the identity when not training or when p is 0."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    return DropoutOp.apply(x, p=p, rng=generator or rng.get_generator())


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """softmax(q @ k^T * scale + mask) @ v for q (B, nh, Tq, hs), k and v (B, nh, Tk, hs).

    With no mask and no dropout this is one fused op (ScaledDotProductAttentionOp).
    A boolean `attn_mask` (True = may attend, as in PyTorch) or `dropout_p > 0`
    takes `attention_composed`, built from elementary ops.
    """
    if attn_mask is None and dropout_p == 0:
        return ScaledDotProductAttentionOp.apply(q, k, v, is_causal=is_causal, scale=scale)
    return attention_composed(q, k, v, attn_mask, dropout_p, is_causal, scale)


def attention_composed(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """Attention built from elementary ops, each with its own backward: the path for a mask or dropout.

    The tests hold it and the fused op to the one attention reference,
    `kernels.reference.attention_forward` (tests/test_ops.py).
    """
    Tq, Tk, hs = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / np.sqrt(hs) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, nh, Tq, Tk)
    allowed = np.ones((Tq, Tk), dtype=bool)  # (Tq, Tk)
    if is_causal:
        allowed = np.tril(allowed, k=Tk - Tq)  # (Tq, Tk) query i sees keys j <= i + (Tk - Tq)
    if attn_mask is not None:
        allowed = allowed & _array(attn_mask)  # (Tq, Tk)
    scores = scores.masked_fill(~allowed, -np.inf)  # (B, nh, Tq, Tk)
    att = softmax(scores, dim=-1)  # (B, nh, Tq, Tk)
    att = dropout(att, dropout_p) if dropout_p > 0 else att  # (B, nh, Tq, Tk)
    return att @ v  # (B, nh, Tq, hs)


def cat(tensors, dim=0):
    """Concatenate tensors along an existing dim."""
    return CatOp.apply(*tensors, dim=dim)


def stack(tensors, dim=0):
    """Stack equal-shaped tensors along a new dim."""
    return StackOp.apply(*tensors, dim=dim)
