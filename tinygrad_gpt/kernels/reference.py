"""The reference kernels: every kernel of the package in plain NumPy, formula first.

This is the readable half of `kernels`. Each function states its formula, then
computes it with whole-array NumPy operations, a shape at the end of every line
that makes an array. `fast.py` has a Numba kernel of the same name and signature
for each, and the tests hold the two together (tests/test_kernels.py).

Run the whole model on these functions with `tinygrad_gpt.kernels.use("reference")`
or TINYGPT_KERNELS=reference in the environment: the model is then pure NumPy,
every line can be stepped through in a debugger, and Numba is never imported.

Names follow the model: N rows (N = B * T tokens), C channels, V classes,
B batch, nh heads, Tq query and Tk key positions, hs head size. Every function
takes and returns NumPy arrays of float32 or float64, the result in the input's
dtype, and checks its inputs first (_checks.py: one clear sentence for bad input).
"""

import math

import numpy as np

from ._checks import (
    check_adamw_step,
    check_attention_backward,
    check_attention_forward,
    check_cross_entropy_forward,
    check_embedding_backward,
    check_gelu_backward,
    check_gelu_forward,
    check_layernorm_backward,
    check_layernorm_forward,
    check_matmul,
    check_softmax_backward,
    check_softmax_forward,
    cross_entropy_scale,
)

# ----------------------------------------------------------------------------- matmul


def matmul(a, b):
    """a @ b with np.matmul's rules: (..., M, K) @ (..., K, N) -> (..., M, N).

        y_mn = sum_k a_mk b_kn
    """
    check_matmul(a, b)
    return np.matmul(a, b)  # (..., M, N)


# ----------------------------------------------------------------------------- softmax


def causal_visible(Tq, Tk):
    """(Tq, Tk) booleans: query i sees key j iff j <= i + (Tk - Tq).

    The queries are the last Tq of Tk positions (Tq == Tk: the square mask; Tq < Tk:
    new queries attending to a longer cached past).
    """
    return np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq)  # (Tq, Tk)


def softmax_forward(x, causal=False):
    """Softmax over the last dim, optionally causal (x is then (..., Tq, Tk)).

        y_j = exp(x_j - m) / sum_k exp(x_k - m),   m = max_k x_k

    Subtracting m changes nothing mathematically and keeps every exp <= 1. Masked
    entries are -inf, so their probability is exactly 0. A row whose every entry is
    -inf has no finite score to normalise and is defined as all zeros.
    """
    check_softmax_forward(x, causal)
    if x.size == 0:
        return np.zeros(x.shape, dtype=x.dtype)
    if causal:
        x = np.where(causal_visible(*x.shape[-2:]), x, x.dtype.type(-np.inf))  # (..., Tq, Tk)
    m = x.max(axis=-1, keepdims=True)  # (..., 1)
    m = np.where(m == -np.inf, 0, m)  # (..., 1) all -inf rows: exp(-inf - 0) = 0, not NaN
    e = np.exp(x - m)  # (..., Tk)
    s = e.sum(axis=-1, keepdims=True)  # (..., 1)
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0)  # (..., Tk)


def softmax_backward(y, dy):
    """Gradient of softmax from its output y:

        dy_i/dx_k = y_i (delta_ik - y_k)   =>   dx_k = y_k (dy_k - sum_i dy_i y_i)

    Masked entries have y_k = 0 and so get dx_k = 0.
    """
    check_softmax_backward(y, dy)
    weighted_mean = (dy * y).sum(axis=-1, keepdims=True)  # (..., 1)
    return y * (dy - weighted_mean)  # (..., Tk)


# ----------------------------------------------------------------------------- layer norm


def layernorm_forward(x, weight, bias, eps):
    """Layer norm of the rows of x (N, C): returns (y (N, C), mean (N,), rstd (N,)).

        mean = sum_j x_j / C,   var = sum_j (x_j - mean)^2 / C   (biased, as PyTorch)
        rstd = 1 / sqrt(var + eps),   xhat = (x - mean) * rstd,   y = xhat * weight + bias

    The variance is taken from the centred row (not mean(x^2) - mean^2, which cancels
    when |mean| >> std). mean and rstd are returned for the backward. bias may be None.
    """
    eps = check_layernorm_forward(x, weight, bias, eps)
    mean = x.mean(axis=1)  # (N,)
    centred = x - mean[:, None]  # (N, C)
    rstd = 1 / np.sqrt((centred * centred).mean(axis=1) + eps)  # (N,)
    y = centred * rstd[:, None] * weight  # (N, C)
    if bias is not None:
        y = y + bias  # (N, C)
    return y, mean, rstd


def layernorm_backward(dy, x, weight, mean, rstd):
    """Gradients of layer norm: returns (dx (N, C), dweight (C,), dbias (C,)).

    With g = dy * weight, the gradient reaching xhat (the derivation is in
    ops/fused.py, LayerNormOp.backward):

        dx      = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dweight = sum over rows of dy * xhat,   dbias = sum over rows of dy
    """
    check_layernorm_backward(dy, x, weight, mean, rstd)
    xhat = (x - mean[:, None]) * rstd[:, None]  # (N, C)
    g = dy * weight  # (N, C)
    g_mean = g.mean(axis=1, keepdims=True)  # (N, 1) the path through the mean
    gx_mean = (g * xhat).mean(axis=1, keepdims=True)  # (N, 1) the path through the variance
    dx = rstd[:, None] * (g - g_mean - xhat * gx_mean)  # (N, C)
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)  # (N, C), (C,), (C,)


# ----------------------------------------------------------------------------- GELU

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
CUBIC = 0.044715  # the cubic coefficient of GPT-2's tanh approximation

# NumPy has no erf. Python's math.erf, element by element, is exact to double precision,
# which is what a reference needs (and slow: a Python call per element).
_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu_forward(x, approximate="none"):
    """GELU of x (any shape), PyTorch's two forms:

        "none":  y = x Phi(x),   Phi(x) = (1 + erf(x / sqrt 2)) / 2, the normal CDF
        "tanh":  y = x (1 + tanh(u)) / 2,   u = sqrt(2/pi) (x + 0.044715 x^3)
    """
    if check_gelu_forward(x, approximate):
        u = SQRT_2_OVER_PI * (x + CUBIC * x * x * x)  # (...)
        return 0.5 * x * (1 + np.tanh(u))  # (...)
    cdf = 0.5 * (1 + _erf(x * INV_SQRT_2))  # (...) float64
    return (x * cdf).astype(x.dtype)  # (...)


def gelu_backward(x, dy, approximate="none"):
    """Gradient of GELU, dx = dy * gelu'(x), x the forward input (derivations in ops/elementwise.py):

        "none":  gelu'(x) = Phi(x) + x phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
        "tanh":  gelu'(x) = (1 + tanh u) / 2 + x (1 - tanh^2 u) / 2 * du/dx,
                 du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    """
    if check_gelu_backward(x, dy, approximate):
        u = SQRT_2_OVER_PI * (x + CUBIC * x * x * x)  # (...)
        th = np.tanh(u)  # (...)
        du = SQRT_2_OVER_PI * (1 + 3 * CUBIC * x * x)  # (...)
        return dy * (0.5 * (1 + th) + 0.5 * x * (1 - th * th) * du)  # (...)
    cdf = 0.5 * (1 + _erf(x * INV_SQRT_2))  # (...) float64
    pdf = INV_SQRT_2PI * np.exp(-0.5 * x * x)  # (...)
    return (dy * (cdf + x * pdf)).astype(x.dtype)  # (...)


# ----------------------------------------------------------------------------- cross-entropy


def cross_entropy_forward(logits, targets, ignore_index=-100):
    """Mean cross-entropy of logits (N, V) against integer targets (N,): returns (loss, lse).

        lse_i = log sum_j exp(x_ij) = m_i + log sum_j exp(x_ij - m_i),   m_i = max_j x_ij
        loss  = mean over rows with t_i != ignore_index of (lse_i - x_{i, t_i})

    loss is a 0-d array (NaN when every row is ignored, as in PyTorch); lse (N,) is
    kept for the backward.
    """
    targets, ignore_index = check_cross_entropy_forward(logits, targets, ignore_index)
    m = logits.max(axis=1, keepdims=True)  # (N, 1)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]  # (N,)
    rows = np.nonzero(targets != ignore_index)[0]  # (n_valid,)
    nll = lse[rows] - logits[rows, targets[rows]]  # (n_valid,)
    loss = nll.mean(dtype=np.float64) if rows.size > 0 else np.nan  # summed in float64, rounded once
    return np.asarray(loss, dtype=logits.dtype), lse


def cross_entropy_backward(logits, targets, lse, dloss, ignore_index=-100):
    """Gradient of the mean cross-entropy (derivation in ops/fused.py, CrossEntropyOp.backward):

        dlogits_ij = dloss / n_valid * (softmax(x_i)_j - [j == t_i])   on valid rows,  0 on ignored rows
        softmax(x_i)_j = exp(x_ij - lse_i)
    """
    targets, ignore_index = check_cross_entropy_forward(logits, targets, ignore_index)
    valid = targets != ignore_index  # (N,)
    scale = cross_entropy_scale(logits, lse, dloss, np.count_nonzero(valid))
    probs = np.exp(logits - lse[:, None])  # (N, V)
    rows = np.nonzero(valid)[0]  # (n_valid,)
    probs[rows, targets[rows]] -= 1  # minus the one-hot of the target
    probs[~valid] = 0
    return scale * probs  # (N, V)


# ----------------------------------------------------------------------------- embedding


def embedding_backward(idx, dout, num_embeddings):
    """Gradient of an embedding table (num_embeddings, C) from the lookup out[n] = weight[idx[n]]:

        dweight[v] = sum over n with idx[n] == v of dout[n]

    A scatter-*add*: a token that appears twice gets both gradients. idx has any shape,
    dout is idx.shape + (C,).
    """
    idx, dout = check_embedding_backward(idx, dout, num_embeddings)  # (N,), (N, C)
    dweight = np.zeros((int(num_embeddings), dout.shape[1]), dtype=dout.dtype)  # (V, C)
    np.add.at(dweight, idx, dout)  # unbuffered: repeated indices all add
    return dweight


# ----------------------------------------------------------------------------- attention


def attention_forward(q, k, v, scale, causal):
    """Attention of q (B, nh, Tq, hs) over k, v (B, nh, Tk, hs): returns (y, att).

        scores = q @ k^T * scale          (B, nh, Tq, Tk)
        att    = softmax(scores), causal rule of `causal_visible` when causal
        y      = att @ v                  (B, nh, Tq, hs)

    att is returned for the backward, which needs it.
    """
    scale = check_attention_forward(q, k, v, scale, causal)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale  # (B, nh, Tq, Tk)
    att = softmax_forward(scores, causal)  # (B, nh, Tq, Tk)
    return np.matmul(att, v), att  # (B, nh, Tq, hs), (B, nh, Tq, Tk)


def attention_backward(dy, q, k, v, att, scale):
    """Gradients of attention, given dy (B, nh, Tq, hs): returns (dq, dk, dv).

    The four products of the backward, with the softmax backward between them
    (derivation in ops/fused.py, ScaledDotProductAttentionOp.backward):

        dv      = att^T @ dy                           (B, nh, Tk, hs)
        datt    = dy @ v^T                             (B, nh, Tq, Tk)
        dscores = att * (datt - rowsum(datt * att))    (B, nh, Tq, Tk)
        dq      = dscores @ k * scale                  (B, nh, Tq, hs)
        dk      = dscores^T @ q * scale                (B, nh, Tk, hs)

    scale enters once per path, where scores = q k^T * scale was formed. Masked
    entries have att = 0, so they pass no gradient and no causal flag is needed.
    """
    scale = check_attention_backward(dy, q, k, v, att, scale)
    dv = np.matmul(np.swapaxes(att, -1, -2), dy)  # (B, nh, Tk, hs)
    datt = np.matmul(dy, np.swapaxes(v, -1, -2))  # (B, nh, Tq, Tk)
    dscores = softmax_backward(att, datt)  # (B, nh, Tq, Tk)
    dq = np.matmul(dscores, k) * scale  # (B, nh, Tq, hs)
    dk = np.matmul(np.swapaxes(dscores, -1, -2), q) * scale  # (B, nh, Tk, hs)
    return dq, dk, dv


# ----------------------------------------------------------------------------- AdamW


def adamw_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step (PyTorch's: decoupled weight decay), in place on param, exp_avg, exp_avg_sq.

    For step t = 1, 2, ... and gradient g:
        param *= 1 - lr * weight_decay           decay, applied to the weights directly
        m = beta1 m + (1 - beta1) g              running mean of gradients
        v = beta2 v + (1 - beta2) g^2            running mean of squared gradients
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)   undo the pull toward 0 of early steps
        param -= lr * m_hat / (sqrt(v_hat) + eps)
    The bias corrections are computed in float64 and rounded once to the parameter's
    dtype. Returns None.
    """
    lr, beta1, beta2, eps, decay, corr1, corr2 = check_adamw_step(
        param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step)
    one = param.dtype.type(1)
    exp_avg *= beta1
    exp_avg += (one - beta1) * grad
    exp_avg_sq *= beta2
    exp_avg_sq += (one - beta2) * grad * grad
    param *= decay
    param -= lr * (exp_avg * corr1) / (np.sqrt(exp_avg_sq * corr2) + eps)
