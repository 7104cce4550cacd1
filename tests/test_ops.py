"""Every registered op: gradient check, forward against NumPy, float32 against float64.

Each entry of CASES draws inputs with hypothesis and returns
`(inputs, fn, ref)`: float64 arrays, the function of Tensors under test, and
the same function written in plain NumPy. Keys are op names from
`Function.registry`, with a `[variant]` suffix when one op has several cases.
`test_every_op_has_a_gradcheck_case` fails when an op is added without one.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_gpt as tg
from tinygrad_gpt import functional as F
from tinygrad_gpt.kernels import reference
from tinygrad_gpt.ops import DropoutOp, NarrowOp
from tinygrad_gpt.ops.lora import LoRALinearOp
from tinygrad_gpt.tensor import Function, Tensor

# ---- drawing inputs -----------------------------------------------------------


def draw_shape(data, min_dims=1, max_dims=4, min_size=1, max_size=5):
    ndim = data.draw(st.integers(min_dims, max_dims), label="ndim")
    return tuple(data.draw(st.lists(st.integers(min_size, max_size), min_size=ndim, max_size=ndim), label="shape"))


def draw_array(data, shape, kind="normal"):
    """A float64 array of `shape`; half the time a non-contiguous (transposed) view."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = rng.standard_normal(shape)
    if kind == "positive":  # for log, sqrt, pow: keep away from 0
        x = 0.5 + np.abs(x)
    elif kind == "nonzero":  # for division and relu's kink: |x| >= 0.1
        x = x + np.where(x >= 0, 0.1, -0.1)
    elif kind == "spread":  # for layer norm: rows with a standard deviation of order 1
        # A row of nearly equal values has a tiny variance, and rstd = 1/std multiplies
        # float32's rounding of the centred row; a ramp of step 3 keeps std >~ 1 so the
        # float32-vs-float64 comparison sees only rounding (the float64 gradcheck takes any row).
        x = x + 3.0 * np.arange(shape[-1])
    if len(shape) >= 2 and data.draw(st.booleans(), label="transposed"):
        x = np.ascontiguousarray(x.T).T  # same values, Fortran order: not C-contiguous
    return x


def draw_broadcast_pair(data):
    """Two shapes that broadcast: the second drops leading dims and sets some to 1."""
    shape = draw_shape(data)
    n_drop = data.draw(st.integers(0, len(shape) - 1), label="n_drop")
    other = [1 if data.draw(st.booleans(), label="one") else n for n in shape[n_drop:]]
    pair = (shape, tuple(other))
    return pair if data.draw(st.booleans(), label="swap") else pair[::-1]


def draw_dims(data, ndim):
    """None, one dim (maybe negative), or a tuple of distinct dims."""
    choice = data.draw(st.sampled_from(["none", "one", "tuple"]), label="dims")
    if choice == "none":
        return None
    if choice == "one":
        return data.draw(st.integers(-ndim, ndim - 1), label="dim")
    dims = data.draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(dims)


def np_dims(dim, ndim):
    return tuple(range(ndim)) if dim is None else dim


# ---- the cases ----------------------------------------------------------------

CASES = {}


def case(name):
    def register(fn):
        CASES[name] = fn
        return fn

    return register


def binary_case(op_name, tensor_fn, numpy_fn, b_kind="normal"):
    @case(op_name)
    def draw(data):
        a_shape, b_shape = draw_broadcast_pair(data)
        return (draw_array(data, a_shape), draw_array(data, b_shape, b_kind)), tensor_fn, numpy_fn


binary_case("AddOp", lambda a, b: a + b, lambda a, b: a + b)
binary_case("SubOp", lambda a, b: a - b, lambda a, b: a - b)
binary_case("MulOp", lambda a, b: a * b, lambda a, b: a * b)
binary_case("DivOp", lambda a, b: a / b, lambda a, b: a / b, b_kind="nonzero")


def unary_case(op_name, tensor_fn, numpy_fn, kind="normal"):
    @case(op_name)
    def draw(data):
        return (draw_array(data, draw_shape(data), kind),), tensor_fn, numpy_fn


unary_case("NegOp", lambda x: -x, lambda x: -x)
unary_case("ExpOp", lambda x: x.exp(), np.exp)
unary_case("LogOp", lambda x: x.log(), np.log, kind="positive")
unary_case("SqrtOp", lambda x: x.sqrt(), np.sqrt, kind="positive")
unary_case("TanhOp", lambda x: x.tanh(), np.tanh)
unary_case("ReLUOp", lambda x: x.relu(), lambda x: np.maximum(x, 0), kind="nonzero")

_erf = np.vectorize(math.erf)
unary_case(
    "GELUOp[none]",
    lambda x: F.gelu(x),
    lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
)
unary_case(
    "GELUOp[tanh]",
    lambda x: F.gelu(x, approximate="tanh"),
    lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
)


@case("PowOp")
def _(data):
    p = data.draw(st.sampled_from([0, 1, 2, 3, 0.5, -1, 1.5, -2.5]), label="exponent")
    x = draw_array(data, draw_shape(data), "positive")
    return (x,), lambda x: x**p, lambda x: x**p


@case("MaskedFillOp")
def _(data):
    shape, mask_shape = draw_broadcast_pair(data)
    shape = np.broadcast_shapes(shape, mask_shape)
    mask = np.random.default_rng(data.draw(st.integers(0, 99))).random(mask_shape) < 0.5
    return (
        (draw_array(data, shape),),
        lambda x: x.masked_fill(mask, -3.0),
        lambda x: np.where(mask, -3.0, x),
    )


def reduce_case(op_name, method, numpy_fn):
    @case(op_name)
    def draw(data):
        shape = draw_shape(data)
        dim, keepdim = draw_dims(data, len(shape)), data.draw(st.booleans(), label="keepdim")
        return (
            (draw_array(data, shape),),
            lambda x: getattr(x, method)(dim=dim, keepdim=keepdim),
            lambda x: numpy_fn(x, axis=np_dims(dim, x.ndim), keepdims=keepdim),
        )


reduce_case("SumOp", "sum", np.sum)
reduce_case("MeanOp", "mean", np.mean)
reduce_case("MaxOp", "max", np.max)  # normal draws have no ties, so max is differentiable


@case("ReshapeOp")
def _(data):
    shape = draw_shape(data)
    target = tuple(data.draw(st.permutations(shape), label="target")) + (1,)
    return (draw_array(data, shape),), lambda x: x.reshape(target), lambda x: x.reshape(target)


@case("TransposeOp")
def _(data):
    shape = draw_shape(data, min_dims=2)
    d0, d1 = (data.draw(st.integers(-len(shape), len(shape) - 1)) for _ in range(2))
    return (draw_array(data, shape),), lambda x: x.transpose(d0, d1), lambda x: np.swapaxes(x, d0, d1)


def maybe_negative(data, dims, ndim):
    """Each dim as given or as its negative alias (d - ndim): ops must treat both alike."""
    return tuple(d - ndim if data.draw(st.booleans(), label="negative") else d for d in dims)


@case("PermuteOp")
def _(data):
    shape = draw_shape(data)
    dims = maybe_negative(data, data.draw(st.permutations(range(len(shape)))), len(shape))
    return (draw_array(data, shape),), lambda x: x.permute(*dims), lambda x: np.transpose(x, dims)


@case("IndexOp[slices]")
def _(data):
    shape = draw_shape(data)
    index = tuple(
        slice(data.draw(st.integers(0, n - 1)), None, data.draw(st.integers(1, 2))) for n in shape
    )
    return (draw_array(data, shape),), lambda x: x[index], lambda x: x[index]


@case("IndexOp[mask and mixed]")
def _(data):
    shape = draw_shape(data, min_dims=2)
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    if data.draw(st.booleans(), label="mask"):
        index = rng.random(shape[:1]) < 0.6  # a boolean mask over the first dim
    else:  # a negative-step slice, then an integer array with repeats
        index = (slice(None, None, -2), rng.integers(0, shape[1], 4))
    return (draw_array(data, shape),), lambda x: x[index], lambda x: x[index]


@case("IndexOp[gather]")
def _(data):
    shape = draw_shape(data)
    # Integer arrays with repeats: the backward must add, not overwrite.
    rows = np.asarray(data.draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=6)))
    return (draw_array(data, shape),), lambda x: x[rows], lambda x: x[rows]


@case("NarrowOp")
def _(data):
    shape = draw_shape(data)
    dim = data.draw(st.integers(0, len(shape) - 1))
    (given_dim,) = maybe_negative(data, (dim,), len(shape))
    start = data.draw(st.integers(0, shape[dim] - 1))
    length = data.draw(st.integers(0, shape[dim] - start))
    window = (slice(None),) * dim + (slice(start, start + length),)
    return (
        (draw_array(data, shape),),
        lambda x: NarrowOp.apply(x, dim=given_dim, start=start, length=length),
        lambda x: x[window],
    )


@case("CatOp")
def _(data):
    shape = draw_shape(data)
    dim = data.draw(st.integers(0, len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    inputs = tuple(draw_array(data, shape[:dim] + (n,) + shape[dim + 1 :]) for n in sizes)
    return inputs, lambda *xs: F.cat(xs, dim=dim), lambda *xs: np.concatenate(xs, axis=dim)


@case("StackOp")
def _(data):
    shape = draw_shape(data, max_dims=3)
    dim = data.draw(st.integers(0, len(shape)))
    inputs = tuple(draw_array(data, shape) for _ in range(data.draw(st.integers(1, 3))))
    return inputs, lambda *xs: F.stack(xs, dim=dim), lambda *xs: np.stack(xs, axis=dim)


@case("MatMulOp")
def _(data):
    M, K, N = (data.draw(st.integers(1, 5)) for _ in range(3))
    a_batch, b_batch = draw_broadcast_pair(data) if data.draw(st.booleans()) else ((), ())
    a = draw_array(data, tuple(a_batch)[:2] + (M, K))
    b = draw_array(data, tuple(b_batch)[:2] + (K, N))
    return (a, b), lambda a, b: a @ b, np.matmul


@case("MatMulOp[vector]")
def _(data):
    K, N = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    shapes = data.draw(st.sampled_from([((K,), (K, N)), ((N, K), (K,)), ((K,), (K,))]))
    return tuple(draw_array(data, s) for s in shapes), lambda a, b: a @ b, np.matmul


@case("LinearOp")
def _(data):
    shape = draw_shape(data, max_dims=3)
    n_out = data.draw(st.integers(1, 5))
    x, w, b = draw_array(data, shape), draw_array(data, (n_out, shape[-1])), draw_array(data, (n_out,))
    return (x, w, b), F.linear, lambda x, w, b: x @ w.T + b


@case("LinearOp[no bias]")
def _(data):
    shape = draw_shape(data, max_dims=3)
    x, w = draw_array(data, shape), draw_array(data, (data.draw(st.integers(1, 5)), shape[-1]))
    return (x, w), F.linear, lambda x, w: x @ w.T


@case("LoRALinearOp")
def _(data):
    shape = draw_shape(data, max_dims=3)
    n_in, n_out, rank = shape[-1], data.draw(st.integers(1, 5)), data.draw(st.integers(1, 3))
    scale = data.draw(st.sampled_from([0.5, 2.0]), label="scale")
    x, w = draw_array(data, shape), draw_array(data, (n_out, n_in))
    a, b = draw_array(data, (rank, n_in)), draw_array(data, (n_out, rank))  # B nonzero, so dA is not trivially 0
    inputs = (x, w, a, b) + ((draw_array(data, (n_out,)),) if data.draw(st.booleans(), label="bias") else ())

    def fn(x, w, a, b, *bias):
        return LoRALinearOp.apply(x, w, a, b, *bias, scale=scale)

    def ref(x, w, a, b, *bias):
        return x @ w.T + scale * (x @ a.T) @ b.T + (bias[0] if bias else 0)

    return inputs, fn, ref


def _softmax_np(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@case("SoftmaxOp")
def _(data):
    shape = draw_shape(data)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    return (draw_array(data, shape),), lambda x: x.softmax(dim), lambda x: _softmax_np(x, dim)


@case("LogSoftmaxOp")
def _(data):
    shape = draw_shape(data)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    return (
        (draw_array(data, shape),),
        lambda x: x.log_softmax(dim),
        lambda x: np.log(_softmax_np(x, dim)),
    )


@case("CrossEntropyOp")
def _(data):
    N, V = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    targets = np.asarray(data.draw(st.lists(st.integers(0, V - 1), min_size=N, max_size=N)))
    ignored = np.asarray(data.draw(st.lists(st.booleans(), min_size=N, max_size=N)))
    ignored[0] = False  # at least one counted row, else the mean is NaN
    targets = np.where(ignored, -100, targets)

    def ref(logits):
        rows = np.flatnonzero(targets != -100)
        return -np.log(_softmax_np(logits, -1))[rows, targets[rows]].mean()

    return (draw_array(data, (N, V)),), lambda z: F.cross_entropy(z, targets), ref


def _layer_norm_np(x, w=None, b=None):
    xhat = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    return xhat * (1 if w is None else w) + (0 if b is None else b)


@case("LayerNormOp")
def _(data):
    shape = draw_shape(data)
    C = shape[-1]
    inputs = (draw_array(data, shape, "spread"), draw_array(data, (C,)), draw_array(data, (C,)))
    return inputs, lambda x, w, b: F.layer_norm(x, C, w, b), _layer_norm_np


@case("LayerNormOp[no bias]")
def _(data):
    shape = draw_shape(data)
    C = shape[-1]
    inputs = (draw_array(data, shape, "spread"), draw_array(data, (C,)))
    return inputs, lambda x, w: F.layer_norm(x, C, w), _layer_norm_np


@case("LayerNormOp[no affine]")
def _(data):
    shape = draw_shape(data)
    return (draw_array(data, shape, "spread"),), lambda x: F.layer_norm(x, shape[-1]), _layer_norm_np


@case("EmbeddingOp")
def _(data):
    V, C = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    idx_shape = draw_shape(data, max_dims=3)
    idx = np.random.default_rng(data.draw(st.integers(0, 99))).integers(0, V, idx_shape)
    return (draw_array(data, (V, C)),), lambda w: F.embedding(idx, w), lambda w: w[idx]


@case("DropoutOp")
def _(data):
    shape = draw_shape(data)
    p, seed = data.draw(st.sampled_from([0.1, 0.5, 0.9])), data.draw(st.integers(0, 99))

    # A fresh generator with the same seed on every call draws the same mask,
    # so the finite differences see one fixed function.
    def fn(x):
        return DropoutOp.apply(x, p=p, rng=np.random.default_rng(seed))

    def ref(x):
        keep = np.random.default_rng(seed).random(x.shape) >= p
        return x * keep / (1 - p)

    return (draw_array(data, shape),), fn, ref


def _attention_reference(q, k, v, causal):
    """The one attention reference: kernels/reference.py, which reference mode also runs."""
    return reference.attention_forward(q, k, v, 1 / math.sqrt(q.shape[-1]), causal)[0]  # (B, nh, Tq, hs)


def attention_case(name, causal, composed=False):
    @case(name)
    def draw(data):
        B, nh, hs = (data.draw(st.integers(1, 3)) for _ in range(3))
        Tk = data.draw(st.integers(1, 5))
        Tq = data.draw(st.integers(1, Tk)) if causal else data.draw(st.integers(1, 5))
        q = draw_array(data, (B, nh, Tq, hs))
        k, v = draw_array(data, (B, nh, Tk, hs)), draw_array(data, (B, nh, Tk, hs))
        # An attn_mask (all True here, so the result is unchanged) takes the composed
        # path of elementary ops instead of the fused op; both must match the reference.
        mask = np.ones((Tq, Tk), dtype=bool) if composed else None
        return (
            (q, k, v),
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal),
            lambda q, k, v: _attention_reference(q, k, v, causal),
        )


attention_case("ScaledDotProductAttentionOp", causal=False)
attention_case("ScaledDotProductAttentionOp[causal]", causal=True)
attention_case("ScaledDotProductAttentionOp[composed, causal]", causal=True, composed=True)


# ---- the tests ----------------------------------------------------------------


def test_every_op_has_a_gradcheck_case():
    ops = {name for name, cls in Function.registry.items() if cls.__module__.startswith("tinygrad_gpt.")}
    covered = {name.split("[")[0] for name in CASES}
    assert ops - covered == set(), f"ops without a gradcheck case: {sorted(ops - covered)}"
    assert covered - ops == set(), f"cases for ops not in the registry: {sorted(covered - ops)}"


def _tensors(arrays, dtype):
    return [Tensor(np.asarray(a, dtype=dtype), requires_grad=True) for a in arrays]


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradcheck_float64(name, data):
    inputs, fn, _ = CASES[name](data)
    assert tg.gradcheck(fn, [Tensor(a, requires_grad=True) for a in inputs])


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_forward_matches_numpy(name, data):
    inputs, fn, ref = CASES[name](data)
    out = fn(*[Tensor(a) for a in inputs])
    # float64 on both sides; only summation order differs (BLAS, kernels): 1e-10 is ample.
    np.testing.assert_allclose(out.data, ref(*inputs), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_float32_agrees_with_float64_and_keeps_dtype(name, data):
    inputs, fn, _ = CASES[name](data)
    results = {}
    for dtype in (np.float32, np.float64):
        tensors = _tensors(inputs, dtype)
        out = fn(*tensors)
        seed = np.random.default_rng(0).standard_normal(out.shape)
        out.backward(seed.astype(dtype))
        assert out.dtype == dtype, f"{name} turned {dtype.__name__} into {out.dtype}"
        for t in tensors:
            assert t.grad is None or t.grad.dtype == dtype
        results[dtype] = (out.data, [t.grad for t in tensors])
    (out32, grads32), (out64, grads64) = results[np.float32], results[np.float64]
    # float32 keeps ~7 significant digits; these ops chain at most a few roundings
    # over sums of <= ~100 terms of O(1) values (worst: 1/x and log near 0.5, x^-2.5),
    # so 1e-4 relative plus 1e-5 absolute (for values that cancel to ~0) holds with margin.
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    for g32, g64 in zip(grads32, grads64):
        if g64 is not None:
            np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)
