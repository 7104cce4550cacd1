"""Input checks of every kernel, shared by its fast version and its plain-NumPy reference.

A Numba kernel fed the wrong dtype either compiles a new, unintended specialization or
fails with a long typing traceback; fed an out-of-range index it reads or writes memory
it does not own. So every public wrapper checks its inputs here first and raises one
clear sentence naming the input and what was expected.
"""

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_float_array(name, x, ndim=None, min_ndim=None):
    """Raise unless `x` is an ndarray of float32/float64 with the given number of dims."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}.")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}.")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}.")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims, got shape {x.shape}.")


def check_same_dtype(name, x, ref_name, ref):
    """Raise unless `x` has the dtype of `ref` (kernels never mix precisions)."""
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} must have the same dtype as {ref_name} ({ref.dtype}), got {x.dtype}.")


def check_shape(name, x, shape):
    """Raise unless `x.shape == shape`."""
    if x.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {x.shape}.")


def as_index_array(name, idx, low, high, allowed=None):
    """Return `idx` as an int64 array after checking low <= idx < high (or idx == allowed).

    The kernels index rows with these values without bounds checks, so an index out of
    range must be caught here rather than read past the end of an array.
    """
    if not isinstance(idx, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of integers, got {type(idx).__name__}.")
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {idx.dtype}.")
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    bad = (idx < low) | (idx >= high)
    if allowed is not None:
        bad &= idx != allowed
    if bad.any():
        value = idx[bad].flat[0]
        extra = "" if allowed is None else f" or equal to {allowed}"
        raise ValueError(f"{name} must lie in [{low}, {high}){extra}, got {value}.")
    return idx


def as_scalar(name, value, dtype):
    """Return `value` (a Python or NumPy real number, or a 0-d array) as a `dtype` scalar."""
    if isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise ValueError(f"{name} must be a scalar or a 0-d array, got shape {value.shape}.")
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}.")
    return dtype.type(value)


# ---- the checks of each kernel, shared by its fast version and its reference ----


def check_softmax_forward(x, causal):
    check_float_array("x", x, min_ndim=1)
    if causal:
        if x.ndim < 2:
            raise ValueError(f"x must have at least 2 dims (..., Tq, Tk) when causal=True, got shape {x.shape}.")
        if x.shape[-2] > x.shape[-1]:
            raise ValueError(f"x must have Tq <= Tk when causal=True, got shape {x.shape}.")


def check_softmax_backward(y, dy):
    check_float_array("y", y, min_ndim=1)
    check_float_array("dy", dy)
    check_same_dtype("dy", dy, "y", y)
    check_shape("dy", dy, y.shape)


def check_layernorm_forward(x, weight, bias, eps):
    """Returns eps as a scalar of x's dtype."""
    check_float_array("x", x, ndim=2)
    check_float_array("weight", weight, ndim=1)
    check_same_dtype("weight", weight, "x", x)
    check_shape("weight", weight, (x.shape[1],))
    if bias is not None:
        check_float_array("bias", bias, ndim=1)
        check_same_dtype("bias", bias, "x", x)
        check_shape("bias", bias, (x.shape[1],))
    eps = as_scalar("eps", eps, x.dtype)
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}.")
    if x.shape[1] == 0:
        raise ValueError(f"x must have at least one column to normalise, got shape {x.shape}.")
    return eps


def check_layernorm_backward(dy, x, weight, mean, rstd):
    check_float_array("x", x, ndim=2)
    N, C = x.shape
    for name, arr, shape in (("dy", dy, (N, C)), ("weight", weight, (C,)), ("mean", mean, (N,)), ("rstd", rstd, (N,))):
        check_float_array(name, arr)
        check_same_dtype(name, arr, "x", x)
        check_shape(name, arr, shape)


def check_gelu_forward(x, approximate):
    """Returns True for the tanh form, False for the exact erf form."""
    check_float_array("x", x)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}.")
    return approximate == "tanh"


def check_gelu_backward(x, dy, approximate):
    """Returns True for the tanh form, False for the exact erf form."""
    check_float_array("dy", dy)
    tanh_form = check_gelu_forward(x, approximate)
    check_same_dtype("dy", dy, "x", x)
    check_shape("dy", dy, x.shape)
    return tanh_form


def check_cross_entropy_logits(logits, ignore_index):
    """Returns ignore_index as an int."""
    check_float_array("logits", logits, ndim=2)
    if logits.shape[1] == 0:
        raise ValueError(f"logits must have at least one class, got shape {logits.shape}.")
    if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index must be an integer, got {type(ignore_index).__name__}.")
    return int(ignore_index)


def check_cross_entropy_forward(logits, targets, ignore_index):
    """Returns (targets as int64, ignore_index as int)."""
    ignore_index = check_cross_entropy_logits(logits, ignore_index)
    N, V = logits.shape
    targets = as_index_array("targets", targets, 0, V, allowed=ignore_index)
    check_shape("targets", targets, (N,))
    return targets, ignore_index


def cross_entropy_scale(logits, lse, dloss, n_valid):
    """Check lse and return dloss / n_valid, divided in float64 and rounded once to logits' dtype."""
    check_float_array("lse", lse)
    check_same_dtype("lse", lse, "logits", logits)
    check_shape("lse", lse, (logits.shape[0],))
    scale = as_scalar("dloss", dloss, np.dtype(np.float64)) / max(n_valid, 1)
    return logits.dtype.type(scale)


def check_embedding_backward(idx, dout, num_embeddings):
    """Returns (idx (N,) int64, dout (N, C)) flattened over idx's dims."""
    if not isinstance(num_embeddings, (int, np.integer)) or isinstance(num_embeddings, bool) or num_embeddings < 0:
        raise TypeError(f"num_embeddings must be a non-negative integer, got {num_embeddings!r}.")
    check_float_array("dout", dout, min_ndim=1)
    idx = as_index_array("idx", idx, 0, int(num_embeddings))
    if dout.shape[:-1] != idx.shape:
        raise ValueError(f"dout must have shape idx.shape + (C,) = {idx.shape} + (C,), got {dout.shape}.")
    return idx.reshape(-1), dout.reshape(-1, dout.shape[-1])  # (N,), (N, C)


def check_adamw_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """Returns (lr, beta1, beta2, eps, decay = 1 - lr * wd, corr1, corr2) in param's dtype, corr_i = 1 / (1 - beta_i^t)."""
    check_float_array("param", param)
    for name, arr in (("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        check_float_array(name, arr)
        check_same_dtype(name, arr, "param", param)
        check_shape(name, arr, param.shape)
    for name, arr in (("param", param), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if not arr.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous, because it is updated in place.")
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 1:
        raise ValueError(f"step must be an integer >= 1 (the 1-based step count), got {step!r}.")
    scalars = [as_scalar(name, value, np.dtype(np.float64)) for name, value in
               (("lr", lr), ("beta1", beta1), ("beta2", beta2), ("eps", eps), ("weight_decay", weight_decay))]
    lr, beta1, beta2, eps, weight_decay = scalars
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0 <= beta < 1:
            raise ValueError(f"{name} must lie in [0, 1), got {beta}.")
    # The bias corrections in float64, rounded once to the parameter's dtype.
    corr1 = 1 / (1 - beta1 ** int(step))
    corr2 = 1 / (1 - beta2 ** int(step))
    return [param.dtype.type(s) for s in (lr, beta1, beta2, eps, 1 - lr * weight_decay, corr1, corr2)]


def check_attention_forward(q, k, v, scale, causal):
    """Returns scale as a scalar of q's dtype."""
    check_float_array("q", q, ndim=4)
    check_float_array("k", k, ndim=4)
    check_same_dtype("k", k, "q", q)
    check_float_array("v", v)
    check_same_dtype("v", v, "q", q)
    B, nh, Tq, hs = q.shape
    Tk = k.shape[2]
    check_shape("k", k, (B, nh, Tk, hs))
    check_shape("v", v, (B, nh, Tk, hs))
    if causal and Tq > Tk:
        raise ValueError(f"q must not have more positions than k when causal=True, got Tq={Tq} > Tk={Tk}.")
    if Tk == 0 and Tq > 0:
        raise ValueError("k and v must have at least one position to attend to.")
    return as_scalar("scale", scale, q.dtype)


def check_attention_backward(dy, q, k, v, att, scale):
    """Returns scale as a scalar of q's dtype."""
    scale = check_attention_forward(q, k, v, scale, False)
    B, nh, Tq, hs = q.shape
    Tk = k.shape[2]
    for name, arr, shape in (("dy", dy, (B, nh, Tq, hs)), ("att", att, (B, nh, Tq, Tk))):
        check_float_array(name, arr)
        check_same_dtype(name, arr, "q", q)
        check_shape(name, arr, shape)
    return scale


def check_matmul_pair(a, b, a_ndim, b_ndim):
    """Check float arrays of one dtype whose contraction dims agree (ndim None: any >= 1)."""
    check_float_array("a", a, ndim=a_ndim, min_ndim=1)
    check_float_array("b", b, ndim=b_ndim, min_ndim=1)
    check_same_dtype("b", b, "a", a)
    k_a = a.shape[-1]
    k_b = b.shape[-2] if b.ndim >= 2 else b.shape[0]
    if k_a != k_b:
        raise ValueError(f"a's last dim ({k_a}) must equal b's contraction dim ({k_b}); got shapes {a.shape} and {b.shape}.")


def check_matmul(a, b):
    """Check the operands of `matmul`; return their broadcast batch dims."""
    check_matmul_pair(a, b, None, None)
    if a.ndim <= 2 and b.ndim <= 2:
        return ()
    try:
        return np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"a and b must have broadcastable batch dims, got shapes {a.shape} and {b.shape}.") from None
