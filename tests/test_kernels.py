"""Tests for tinygrad_gpt.kernels: every kernel against its plain-NumPy reference.

Each fast kernel (kernels/fast.py) is compared with its namesake in kernels/reference.py in float32 and float64, on shapes
drawn by hypothesis and on the edge cases that break naive kernels (logits of +-1e4,
fully masked rows, T=1, a vocabulary of 1, a batch of 1, non-contiguous inputs). The
backward references are themselves checked against central finite differences, so
"kernel == reference" means "kernel == the right derivative".

The file also runs with NUMBA_DISABLE_JIT=1 (the kernels then run as plain Python,
prange as range), where it switches to smaller shapes to stay fast.

Tolerances. `assert_close` compares with rtol = atol / max|expected| = RTOL[dtype]:
* float64, 1e-12: an output of these kernels goes through at most a few hundred
  roundings of 1.1e-16 each (a sum over a row of <= 256 terms), under 3e-14 even in
  the worst case.
* float32, 1e-5: the kernels add rows in a different order from NumPy (16 vector
  lanes, against NumPy's pairwise sums), and float32 sums of n terms differ by up to
  n * 6e-8 of the largest terms in the worst case (1.5e-5 for n = 256, about 1e-6 in
  practice for random data).
* The absolute part is relative to the largest expected entry because entries made
  by cancellation (a gradient summing to zero, a small entry of a product) carry an
  error proportional to the terms that cancelled, not to themselves.
"""

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from tinygrad_gpt.kernels import attention, gemm
from tinygrad_gpt.kernels import fast as K
from tinygrad_gpt.kernels import reference as R
from tinygrad_gpt.kernels.tuning import dispatch, target
from tinygrad_gpt.kernels._vecmath import fast_exp
from tinygrad_gpt.kernels.gelu import normal_cdf

JIT_OFF = os.environ.get("NUMBA_DISABLE_JIT") == "1"  # kernels run as plain Python: keep shapes small
EXAMPLES = 6 if JIT_OFF else 15
MAX_T = 6 if JIT_OFF else 40  # longest sequence drawn by hypothesis
MAX_C = 12 if JIT_OFF else 96  # widest row drawn by hypothesis
DTYPES = [np.float32, np.float64]
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def assert_close(actual, expected, scale=None):
    """actual equals expected to the dtype's tolerance (see the module docstring), same dtype and shape."""
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    tol = RTOL[expected.dtype]
    if scale is None:
        finite = np.abs(expected[np.isfinite(expected)])
        scale = finite.max() if finite.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def rand(rng, shape, dtype, scale=1.0):
    return np.asarray(rng.standard_normal(shape) * scale, dtype=dtype)  # an array even for shape ()


def numerical_grad(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to every element of float64 x (changed in place, restored)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def assert_matches_numerical(analytic, numerical):
    # Central differences with eps = 1e-6 in float64 are accurate to about
    # eps^2 * |f'''| + 1e-16 / eps, i.e. 1e-9 on these O(1) functions.
    np.testing.assert_allclose(analytic, numerical, rtol=1e-6, atol=1e-7)


def transposed_copy(x):
    """The same values as x in a non-contiguous array (a transposed view of a copy)."""
    return np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2) if x.ndim >= 2 else x[::-1].copy()[::-1]


# ----------------------------------------------------------------------------- fast_exp


@njit
def _apply_fast_exp(x, out):
    for i in range(x.shape[0]):
        out[i] = fast_exp(x[i])


@njit
def _apply_normal_cdf(x, out):
    for i in range(x.shape[0]):
        out[i] = normal_cdf(x[i])


@pytest.mark.parametrize("dtype, low, high, max_rel", [
    # float32: measured worst 6.0e-8 (1 ulp); float64: measured worst 4.4e-16 (2 ulp).
    (np.float32, -87.0, 88.0, 1.2e-7),
    (np.float64, -708.0, 709.0, 9e-16),
])
def test_fast_exp_is_accurate_to_a_few_ulp(dtype, low, high, max_rel):
    x = np.linspace(low, high, 2_001 if JIT_OFF else 200_001).astype(dtype)
    out = np.empty_like(x)
    _apply_fast_exp(x, out)
    exact = np.exp(x.astype(np.float64))
    assert np.max(np.abs(out / exact - 1)) < max_rel


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_exp_limits(dtype):
    x = np.array([-np.inf, -1e4, 0.0, 1e4, np.inf], dtype=dtype)
    out = np.empty_like(x)
    _apply_fast_exp(x, out)
    np.testing.assert_array_equal(out, [0.0, 0.0, 1.0, np.inf, np.inf])


def test_normal_cdf_float32_has_small_relative_error_including_the_tail():
    x = np.linspace(-8, 8, 1_601 if JIT_OFF else 160_001).astype(np.float32)
    out = np.empty_like(x)
    _apply_normal_cdf(x, out)
    exact = np.array([0.5 * math.erfc(-float(v) / math.sqrt(2)) for v in x])
    # Documented bound 5e-7 (1 + x^2): the erfc fit is good to 1.2e-7, float32 Horner
    # steps add a few ulp, and exp's argument -x^2/2 is rounded to float32 (measured
    # worst ratio 4.2e-7).
    assert np.max(np.abs(out / exact - 1) / (1 + x.astype(np.float64) ** 2)) < 5e-7


# ----------------------------------------------------------------------------- softmax


@settings(deadline=None, max_examples=EXAMPLES)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    tq=st.integers(1, MAX_T),
    extra_keys=st.integers(0, 3),
    causal=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_softmax_matches_reference(batch, tq, extra_keys, causal, dtype, seed):
    rng = np.random.default_rng(seed)
    tk = tq + extra_keys
    x = rand(rng, tuple(batch) + (tq, tk), dtype, scale=3.0)
    y = K.softmax_forward(x, causal)
    assert_close(y, R.softmax_forward(x, causal))
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=10 * RTOL[y.dtype])
    if causal:
        visible = np.arange(tk)[None, :] <= np.arange(tq)[:, None] + (tk - tq)  # (Tq, Tk)
        assert np.all(y[..., ~visible] == 0)
    dy = rand(rng, x.shape, dtype)
    assert_close(K.softmax_backward(y, dy), R.softmax_backward(y, dy))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_is_stable_at_logits_of_1e4(dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    y = K.softmax_forward(x)
    assert np.all(np.isfinite(y))
    assert_close(y, np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]], dtype=dtype))
    assert_close(y, R.softmax_forward(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_of_fully_masked_rows_is_zero(dtype):
    x = np.array([[-np.inf, -np.inf], [0.0, -np.inf]], dtype=dtype)
    for fn in (K.softmax_forward, R.softmax_forward):
        y = fn(x)
        np.testing.assert_array_equal(y, [[0, 0], [1, 0]])
        assert y.dtype == dtype
    dx = K.softmax_backward(K.softmax_forward(x), np.ones_like(x))
    np.testing.assert_array_equal(dx, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_single_position_and_non_contiguous_input(dtype):
    rng = np.random.default_rng(0)
    one = rand(rng, (2, 3, 1, 1), dtype)
    np.testing.assert_array_equal(K.softmax_forward(one, causal=True), 1)
    x = transposed_copy(rand(rng, (2, 7, 7), dtype))
    assert not x.flags.c_contiguous
    for causal in (False, True):
        assert_close(K.softmax_forward(x, causal), R.softmax_forward(x, causal))
    dy = transposed_copy(rand(rng, (2, 7, 7), dtype))
    y = K.softmax_forward(x)
    assert_close(K.softmax_backward(y, dy), R.softmax_backward(y, dy))


def test_softmax_backward_reference_is_the_derivative():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4))
    w = rng.standard_normal(x.shape)
    for causal in (False, True):
        y = R.softmax_forward(x, causal)
        numerical = numerical_grad(lambda: np.sum(R.softmax_forward(x, causal) * w), x)
        assert_matches_numerical(R.softmax_backward(y, w), numerical)


# ----------------------------------------------------------------------------- layer norm


@settings(deadline=None, max_examples=EXAMPLES)
@given(
    n=st.integers(1, MAX_T),
    c=st.integers(1, MAX_C),
    with_bias=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_layernorm_matches_reference(n, c, with_bias, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, c), dtype, scale=2.0) + dtype(1.5)
    weight = rand(rng, (c,), dtype)
    bias = rand(rng, (c,), dtype) if with_bias else None
    got = K.layernorm_forward(x, weight, bias, 1e-5)
    want = R.layernorm_forward(x, weight, bias, 1e-5)
    for g, w in zip(got, want):
        assert_close(g, w)
    dy = rand(rng, (n, c), dtype)
    grads = K.layernorm_backward(dy, x, weight, got[1], got[2])
    grads_ref = R.layernorm_backward(dy, x, weight, got[1], got[2])
    for g, w in zip(grads, grads_ref):
        # dweight and dbias sum over n rows; their terms are as large as |dy| * max|xhat|
        assert_close(g, w, scale=max(np.abs(w).max(), np.abs(dy).max() * np.sqrt(n)))


def test_layernorm_variance_does_not_cancel_when_the_mean_dwarfs_the_spread():
    # With mean 300 and std 1, mean(x^2) - mean(x)^2 subtracts two float32 numbers near
    # 9e4 (spacing 0.008) and loses about 1% of the variance; the two-pass variance
    # sums squared deviations of order 1 and keeps it to float32 accuracy. What remains
    # is the float32 sum for the mean: 64 terms near 300 give an error near 64 * 300 *
    # 6e-8 = 1e-3 of the mean's spacing, i.e. ~1e-3 in y (in units of the std).
    rng = np.random.default_rng(2)
    x32 = (300 + rng.standard_normal((4, 64))).astype(np.float32)
    ones = np.ones(64, np.float32)
    y, _, rstd = K.layernorm_forward(x32, ones, None, 1e-5)
    y_true, _, rstd_true = R.layernorm_forward(x32.astype(np.float64), ones.astype(np.float64), None, 1e-5)
    np.testing.assert_allclose(y, y_true, atol=2e-3)
    np.testing.assert_allclose(rstd, rstd_true, rtol=2e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_single_column_and_non_contiguous_input(dtype):
    rng = np.random.default_rng(3)
    x1 = rand(rng, (3, 1), dtype)
    y, mean, rstd = K.layernorm_forward(x1, np.ones(1, dtype), np.zeros(1, dtype), 1e-5)
    np.testing.assert_array_equal(y, 0)  # a row of one value normalises to 0
    np.testing.assert_allclose(rstd, 1 / np.sqrt(1e-5), rtol=1e-6)
    x = transposed_copy(rand(rng, (5, 9), dtype))
    w, b = rand(rng, (9,), dtype), rand(rng, (9,), dtype)
    for g, r in zip(K.layernorm_forward(x, w, b, 1e-5), R.layernorm_forward(x, w, b, 1e-5)):
        assert_close(g, r)
    dy = transposed_copy(rand(rng, (5, 9), dtype))
    _, mean, rstd = K.layernorm_forward(x, w, b, 1e-5)
    for g, r in zip(K.layernorm_backward(dy, x, w, mean, rstd), R.layernorm_backward(dy, x, w, mean, rstd)):
        assert_close(g, r)


def test_layernorm_backward_reference_is_the_derivative():
    rng = np.random.default_rng(4)
    x, weight, bias = rng.standard_normal((3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    w = rng.standard_normal((3, 5))

    def loss():
        return np.sum(R.layernorm_forward(x, weight, bias, 1e-5)[0] * w)

    _, mean, rstd = R.layernorm_forward(x, weight, bias, 1e-5)
    dx, dweight, dbias = R.layernorm_backward(w, x, weight, mean, rstd)
    assert_matches_numerical(dx, numerical_grad(loss, x))
    assert_matches_numerical(dweight, numerical_grad(loss, weight))
    assert_matches_numerical(dbias, numerical_grad(loss, bias))


# ----------------------------------------------------------------------------- GELU


@settings(deadline=None, max_examples=EXAMPLES)
@given(
    shape=st.lists(st.integers(1, MAX_C), min_size=0, max_size=3),
    approximate=st.sampled_from(["none", "tanh"]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_gelu_matches_reference(shape, approximate, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, tuple(shape), dtype, scale=3.0)
    assert_close(K.gelu_forward(x, approximate), R.gelu_forward(x, approximate))
    dy = rand(rng, x.shape, dtype)
    assert_close(K.gelu_backward(x, dy, approximate), R.gelu_backward(x, dy, approximate))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_at_large_inputs_and_non_contiguous(approximate, dtype):
    x = np.array([-1e4, -40.0, 0.0, 40.0, 1e4], dtype=dtype)
    y = K.gelu_forward(x, approximate)
    np.testing.assert_array_equal(y, [0, 0, 0, 40, 1e4])
    np.testing.assert_array_equal(K.gelu_backward(x, np.ones_like(x), approximate), [0, 0, 0.5, 1, 1])
    rng = np.random.default_rng(5)
    xt = transposed_copy(rand(rng, (6, 8), dtype))
    assert_close(K.gelu_forward(xt, approximate), R.gelu_forward(xt, approximate))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_backward_reference_is_the_derivative(approximate):
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal(7) * 2, rng.standard_normal(7)
    numerical = numerical_grad(lambda: np.sum(R.gelu_forward(x, approximate) * w), x)
    assert_matches_numerical(R.gelu_backward(x, w, approximate), numerical)


# ----------------------------------------------------------------------------- cross-entropy


@settings(deadline=None, max_examples=EXAMPLES)
@given(
    n=st.integers(1, MAX_T),
    v=st.integers(1, MAX_C),
    ignore_some=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_cross_entropy_matches_reference(n, v, ignore_some, dtype, seed):
    rng = np.random.default_rng(seed)
    logits = rand(rng, (n, v), dtype, scale=3.0)
    targets = rng.integers(0, v, n)
    if ignore_some:
        targets[::2] = -100
    loss, lse = K.cross_entropy_forward(logits, targets, -100)
    loss_ref, lse_ref = R.cross_entropy_forward(logits, targets, -100)
    assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == dtype
    assert_close(lse, lse_ref)
    if np.isnan(loss_ref):
        assert np.isnan(loss)
    else:
        assert_close(loss, loss_ref, scale=np.abs(lse_ref).max() + np.abs(logits).max())
    d = K.cross_entropy_backward(logits, targets, lse, 0.7, -100)
    assert_close(d, R.cross_entropy_backward(logits, targets, lse, 0.7, -100), scale=0.7 / n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_is_stable_at_logits_of_1e4(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [-1e4, -1e4, -1e4]], dtype=dtype)
    targets = np.array([0, 0, 2])
    loss, lse = K.cross_entropy_forward(logits, targets, -100)
    # row 0: prob 1 on the target, nll 0; row 1: nll = 2e4; row 2: uniform, nll = log 3
    assert np.isfinite(loss) and np.all(np.isfinite(lse))
    np.testing.assert_allclose(loss, (0 + 2e4 + np.log(3)) / 3, rtol=RTOL[np.dtype(dtype)])
    d = K.cross_entropy_backward(logits, targets, lse, 1.0, -100)
    assert np.all(np.isfinite(d))
    assert_close(d, R.cross_entropy_backward(logits, targets, lse, 1.0, -100))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_vocab_of_one_batch_of_one_and_all_ignored(dtype):
    logits = np.array([[2.5], [-1.0]], dtype=dtype)
    loss, lse = K.cross_entropy_forward(logits, np.array([0, 0]), -100)
    assert loss == 0 and np.array_equal(lse, logits[:, 0])
    np.testing.assert_array_equal(K.cross_entropy_backward(logits, np.array([0, 0]), lse, 1.0, -100), 0)
    single = np.array([[1.0, 2.0, 3.0]], dtype=dtype)
    loss, _ = K.cross_entropy_forward(single, np.array([2]), -100)
    np.testing.assert_allclose(loss, np.log(np.exp([1.0, 2.0, 3.0]).sum()) - 3.0, rtol=RTOL[np.dtype(dtype)])
    loss, lse = K.cross_entropy_forward(single, np.array([-1]), -1)
    assert np.isnan(loss) and loss.dtype == dtype  # no rows to average, as in PyTorch
    np.testing.assert_array_equal(K.cross_entropy_backward(single, np.array([-1]), lse, 1.0, -1), 0)


def test_cross_entropy_parallel_kernels_match_the_reference(monkeypatch):
    # Small inputs run on the serial kernels; with the threshold at 0 every call takes the
    # parallel ones, here with a last task of fewer than ROWS_PER_TASK rows.
    from tinygrad_gpt.kernels import cross_entropy

    monkeypatch.setattr(cross_entropy, "PARALLEL_MIN_US", 0.0)
    rng = np.random.default_rng(11)
    n = 2 * cross_entropy.ROWS_PER_TASK + 5
    logits = rand(rng, (n, 7), np.float64, scale=3.0)
    targets = rng.integers(0, 7, n)
    targets[::3] = -100
    loss, lse = K.cross_entropy_forward(logits, targets)
    loss_ref, lse_ref = R.cross_entropy_forward(logits, targets)
    assert_close(lse, lse_ref)
    assert_close(loss, loss_ref, scale=np.abs(lse_ref).max() + np.abs(logits).max())
    assert_close(K.cross_entropy_backward(logits, targets, lse, 0.7), R.cross_entropy_backward(logits, targets, lse, 0.7),
                 scale=0.7 / n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_nan_and_infinite_logits_give_nan_like_the_reference(dtype):
    # The kernel shifts by the first logit and falls back to the max only on overflow, so
    # NaN and +-inf must still end as the reference's max-shifted formula does: NaN lse
    # for NaN or +inf, and a probability of 0 for -inf (also when it is the first logit).
    logits = np.array([[0.0, np.nan, 1.0], [np.inf, 0.0, 1.0], [0.0, np.inf, 1.0], [-np.inf, 0.0, 1.0]], dtype=dtype)
    # inf - inf in the reference (and in the kernel under NUMBA_DISABLE_JIT, as NumPy scalars) warns.
    with np.errstate(invalid="ignore"):
        _, lse = K.cross_entropy_forward(logits, np.array([0, 0, 0, 0]))
        _, lse_ref = R.cross_entropy_forward(logits, np.array([0, 0, 0, 0]))
    assert np.isnan(lse_ref[:3]).all() and np.isfinite(lse_ref[3])
    np.testing.assert_array_equal(np.isnan(lse), np.isnan(lse_ref))
    np.testing.assert_allclose(lse[~np.isnan(lse_ref)], lse_ref[~np.isnan(lse_ref)], rtol=RTOL[np.dtype(dtype)])


def test_cross_entropy_non_contiguous_logits_and_int32_targets():
    rng = np.random.default_rng(7)
    logits = transposed_copy(rand(rng, (6, 5), np.float32))
    targets = np.array([0, 1, 2, 3, 4, 0], dtype=np.int32)
    got, want = K.cross_entropy_forward(logits, targets), R.cross_entropy_forward(logits, targets)
    assert_close(got[0], want[0], scale=5.0)
    assert_close(got[1], want[1])


def test_cross_entropy_backward_reference_is_the_derivative():
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((4, 3))
    targets = np.array([0, -100, 2, 1])
    numerical = numerical_grad(lambda: float(R.cross_entropy_forward(logits, targets)[0]) * 0.7, logits)
    _, lse = R.cross_entropy_forward(logits, targets)
    assert_matches_numerical(R.cross_entropy_backward(logits, targets, lse, 0.7), numerical)


# ----------------------------------------------------------------------------- embedding


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_backward_sums_repeated_indices_and_equals_reference_bit_for_bit(dtype):
    rng = np.random.default_rng(9)
    idx = rng.integers(0, 5, size=(3, 4))  # (B, T), many repeats of 5 rows
    dout = rand(rng, (3, 4, 40), dtype)  # 40 columns: more than one column block
    dweight = K.embedding_backward(idx, dout, 7)
    assert dweight.shape == (7, 40) and dweight.dtype == dtype
    np.testing.assert_array_equal(dweight, R.embedding_backward(idx, dout, 7))
    np.testing.assert_array_equal(dweight, K.embedding_backward(idx, dout, 7))  # deterministic
    flat_idx, flat_dout = idx.reshape(-1), dout.reshape(-1, 40)
    for v in range(7):  # the definition: row v sums the positions that looked it up
        assert_close(dweight[v], flat_dout[flat_idx == v].sum(axis=0).astype(dtype), scale=np.abs(flat_dout).sum())
    np.testing.assert_array_equal(dweight[5:], 0)  # rows nobody looked up


def test_embedding_backward_non_contiguous_dout():
    rng = np.random.default_rng(10)
    idx = np.array([1, 1, 0])
    dout = transposed_copy(rand(rng, (3, 6), np.float32))
    np.testing.assert_array_equal(K.embedding_backward(idx, dout, 2), R.embedding_backward(idx, dout, 2))


# ----------------------------------------------------------------------------- AdamW


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_step_matches_reference_over_several_steps(dtype):
    rng = np.random.default_rng(11)
    param = rand(rng, (6, 5), dtype)
    state = [param, np.zeros_like(param), np.zeros_like(param)]
    state_ref = [a.copy() for a in state]
    hyper = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    for step in range(1, 5):
        grad = transposed_copy(rand(rng, (6, 5), dtype))  # grad may be non-contiguous
        assert K.adamw_step(state[0], grad, state[1], state[2], step=step, **hyper) is None
        R.adamw_step(state_ref[0], grad, state_ref[1], state_ref[2], step=step, **hyper)
        for a, b in zip(state, state_ref):
            assert_close(a, b)
    assert state[0] is param  # updated in place


def test_adamw_first_step_moves_each_weight_by_lr_against_its_gradient():
    # At step 1, m_hat = g and v_hat = g^2, so the Adam step is lr * g / (|g| + eps) ~ lr * sign(g).
    param = np.array([1.0, -2.0, 3.0])
    grad = np.array([0.5, -4.0, 1e-3])
    K.adamw_step(param, grad, np.zeros(3), np.zeros(3), 0.1, 0.9, 0.999, 1e-12, 0.0, 1)
    np.testing.assert_allclose(param, [0.9, -1.9, 2.9], rtol=1e-9)


# ----------------------------------------------------------------------------- matmul


MATMUL_SHAPES = [
    ((3, 5), (5, 4)),  # 2-D, BLAS path
    ((64, 64), (64, 65)),  # 2-D, Numba path (M * N * K = 266240 > 2^18), N padded
    ((2, 3, 8, 16), (3, 16, 64)),  # 4-D with a broadcast batch dim
    ((2, 1, 64, 66), (3, 66, 64)),  # broadcast, Numba path, K padded
    ((4, 9, 7), (4, 7, 5)),  # 3-D
    ((7,), (7, 3)),  # 1-D left operand
    ((4, 7), (7,)),  # 1-D right operand
]


@pytest.mark.parametrize("a_shape, b_shape", MATMUL_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_dispatcher_equals_np_matmul(a_shape, b_shape, dtype):
    rng = np.random.default_rng(12)
    a, b = rand(rng, a_shape, dtype), rand(rng, b_shape, dtype)
    assert_close(K.matmul(a, b), np.matmul(a, b))
    assert_close(R.matmul(a, b), np.matmul(a, b))
    if a.ndim >= 2 and b.ndim >= 2:
        at, bt = transposed_copy(a), transposed_copy(b)  # the ops pass transposed views
        assert_close(K.matmul(at, bt), np.matmul(a, b))


@pytest.mark.parametrize("rows", [1, 3, 8, 9])  # 9: past ROW_DOTS_MAX_ROWS, the GEMM again
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_few_rows_times_a_transposed_weight_equal_np_matmul(monkeypatch, rows, dtype):
    """Decoding's x @ weight.T: dot products of rows instead of the packed GEMM."""
    monkeypatch.setenv("TINYGPT_MATMUL", "numba")
    rng = np.random.default_rng(13)
    x, weight = rand(rng, (rows, 67), dtype), rand(rng, (130, 67), dtype)  # odd sizes: no vector-width luck
    assert_close(K.matmul(x, weight.T), np.matmul(x, weight.T))
    assert_close(K.matmul(x[:, ::-1], weight.T), np.matmul(x[:, ::-1], weight.T))  # x not contiguous


def test_matmul_dispatch_rule(monkeypatch):
    monkeypatch.delenv("TINYGPT_MATMUL", raising=False)
    monkeypatch.setenv("TINYGPT_CALIBRATE", "0")  # the fixed rule, not this machine's calibration
    monkeypatch.setattr(dispatch, "RULE_MEASURED", True)  # the rule on an AVX-512 or AVX2 CPU
    assert K.uses_numba_gemm((768, 128), (128, 384))  # the baby GPT's qkv projection
    assert K.uses_numba_gemm((64, 64), (64, 65))
    assert not K.uses_numba_gemm((64, 64), (64, 64))  # 2^18: OpenBLAS stays single-threaded
    assert K.uses_numba_gemm((48, 64, 32), (48, 32, 64))  # a batch of 2^22.6 multiply-adds
    assert K.uses_numba_gemm((12, 4, 64, 32), (1, 4, 32, 64))  # broadcast batch dims count
    assert not K.uses_numba_gemm((64, 32, 32), (64, 32, 32))  # a batch of 2^21
    assert not K.uses_numba_gemm((1, 128), (128, 384))  # decoding
    assert not K.uses_numba_gemm((5,), (5, 300))
    monkeypatch.setenv("TINYGPT_MATMUL", "blas")
    assert not K.uses_numba_gemm((768, 128), (128, 384))
    monkeypatch.setenv("TINYGPT_MATMUL", "numba")
    assert K.uses_numba_gemm((48, 64, 32), (48, 32, 64))
    assert not K.uses_numba_gemm((5,), (5, 300))
    monkeypatch.setattr(dispatch, "RULE_MEASURED", False)  # ARM and others: BLAS unless forced
    assert K.uses_numba_gemm((768, 128), (128, 384))
    monkeypatch.delenv("TINYGPT_MATMUL")
    assert not K.uses_numba_gemm((768, 128), (128, 384))
    assert not K.uses_numba_gemm((48, 64, 32), (48, 32, 64))


def test_target_detection_reads_the_features_numba_compiles_for(monkeypatch):
    for features, isa in [("+64bit,+avx,+avx2,+fma,-avx512f,-avx512bw", "avx2"),
                          ("+avx2,+fma,+avx512f,+avx512bw", "avx512"),
                          ("+avx,-avx2,+fma", "other"),  # AVX without AVX2
                          ("+neon,+fp-armv8", "other"),
                          ("", "other")]:  # what Numba uses when LLVM cannot tell
        assert target.vector_isa(features) == isa, features
    assert "avx" in target.compiled_features() or target.vector_isa() == "other"  # a real features string
    monkeypatch.setattr(target, "compiled_features", lambda: "+avx,+avx2,+fma,-avx512f")
    assert target.vector_isa() == "avx2"


@settings(deadline=None, max_examples=EXAMPLES)
@given(
    p=st.integers(1, 5),  # from OWN_PACKING_MIN_BATCH = 4 on, each task packs its own b
    m=st.integers(1, 9),
    k=st.integers(1, 10),
    n=st.integers(1, 70),
    transpose_a=st.booleans(),
    transpose_b=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_handwritten_gemm_and_bmm_match_numpy(p, m, k, n, transpose_a, transpose_b, dtype, seed):
    rng = np.random.default_rng(seed)
    a, b = rand(rng, (p, m, k), dtype), rand(rng, (p, k, n), dtype)
    if transpose_a:
        a = transposed_copy(a)
    if transpose_b:
        b = transposed_copy(b)
    assert_close(K.bmm(a, b), np.matmul(a, b))
    assert_close(K.gemm(a[0], b[0]), np.matmul(a[0], b[0]))


@pytest.mark.parametrize("m, k, n", [(9, 7, 65), (5, 130, 80), (6, 4, 10), (70, 3, 129), (70, 5, 24), (130, 9, 22),
                                     (60, 5, 22)])
@pytest.mark.parametrize("transpose_a", [False, True])
def test_gemm_edge_columns_after_the_last_panel(m, k, n, transpose_a):
    # Up to EDGE_COLUMNS columns after the last full panel are dot products (all of them
    # when n <= 16) if a's rows are contiguous; otherwise the last panel is zero-padded
    # ((70, 24), (130, 22)), or, when both a panel of n columns and one of m would be
    # mostly padding ((60, 22): one panel either way, 22 rows of it cheaper than 60), the
    # transposed product is computed into the transposed output, its last row block
    # partial. Batches of 2 and of 4 (tasks packing their own b).
    rng = np.random.default_rng(m * n)
    a, b = rand(rng, (m, k), np.float64), rand(rng, (k, n), np.float64)
    if transpose_a:
        a = transposed_copy(a)
    assert_close(K.gemm(a, b), np.matmul(a, b))
    for batch in (2, 4):
        a_batch, b_batch = np.stack([a * (i + 1) for i in range(batch)]), np.stack([b] * batch)
        assert_close(K.bmm(a_batch, b_batch), np.matmul(a_batch, b_batch))


@pytest.mark.parametrize("m, k, n", [(37, 13, 70), (65, 9, 128), (16, 4, 64), (33, 1, 5)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_with_strided_rows_of_a_across_tasks(m, k, n, dtype):
    # An a whose rows are strided (dY^T of the weight gradient) is read in place: m spans
    # several blocks of 4 rows and ends mid-block (the rows past the end re-read the last
    # row and are dropped). Also a batched transposed view and a column-sliced a (strided
    # rows that are not a plain transpose).
    rng = np.random.default_rng(m * k)
    a, b = rand(rng, (2, m, 2 * k), dtype), rand(rng, (2, k, n), dtype)
    for strided in (transposed_copy(a[:, :, :k]), a[:, :, ::2]):
        assert strided.strides[-1] != strided.itemsize
        assert_close(K.bmm(strided, b), np.matmul(strided, b))
        assert_close(K.gemm(strided[1], b[1]), np.matmul(strided[1], b[1]))


def test_gemm_task_shapes():
    # (prepack, blocks_per_task, panels_per_task) for a (P, M, K) @ b with n_panels panels
    # of b; a block is MR rows (4 with AVX-512, 6 with AVX2: 768 rows are 192 or 128 blocks).
    task_shape, blocks = gemm._task_shape, 768 // gemm.MR
    a = np.zeros((1, 768, 65), np.float32)  # the baby GPT's lm_head dY @ W
    assert task_shape(a, 2, 2) == (False, blocks, 1)  # a task per panel, all rows
    assert task_shape(a, 1, 2) == (False, blocks // 2, 1)  # one panel: rows in two groups
    assert task_shape(a, 3, 2) == (False, blocks // 2, 1)  # three panels: six tasks
    assert task_shape(a, 8, 2) == (False, blocks, 1)
    assert task_shape(a, 1, 1) == (False, blocks, 1)  # one thread: no split
    wide = np.zeros((1, 1536, 2048), np.float32)
    prepacked = (True, gemm.BLOCKS_PER_TASK, 1)
    assert task_shape(np.swapaxes(wide, 1, 2)[:, :1536], 6, 2) == prepacked  # transposed a, many rows: pack first
    assert task_shape(wide, 6, 2) == (False, 2 * blocks, 1)  # the same rows contiguous
    assert task_shape(np.zeros((4, 64, 32), np.float32), 1, 2) == (False, -(-64 // gemm.MR), 1)  # a task per matrix


def test_gemm_of_empty_and_unit_shapes():
    a = np.ones((3, 0), np.float32)
    np.testing.assert_array_equal(K.gemm(a, np.ones((0, 2), np.float32)), np.zeros((3, 2), np.float32))
    assert K.gemm(np.full((1, 1), 2.0), np.full((1, 1), 3.0))[0, 0] == 6.0
    for p, m, k, n in [(1, 0, 3, 5), (4, 0, 3, 5), (1, 5, 3, 0), (4, 5, 3, 0), (4, 0, 3, 0), (0, 2, 3, 4)]:
        a, b = np.ones((p, m, k)), np.ones((p, k, n))
        np.testing.assert_array_equal(K.bmm(a, b), np.matmul(a, b))


def test_matmul_forced_to_the_numba_gemm_handles_empty_shapes(monkeypatch):
    monkeypatch.setenv("TINYGPT_MATMUL", "numba")
    for a_shape, b_shape in [((3, 0), (0, 2)), ((0, 4), (4, 5)), ((2, 3, 0), (2, 0, 4)), ((2, 3, 4), (4, 0))]:
        a, b = np.ones(a_shape), np.ones(b_shape)
        np.testing.assert_array_equal(K.matmul(a, b), np.matmul(a, b))


@pytest.mark.parametrize("p, m, k, n, transpose_a, prepack_min_rows", [
    (1, 37, 20, 520, False, 512),  # 8 panels and 8 edge columns: a task per panel, all rows
    (3, 9, 20, 300, False, 512),  # 5 panels of each of 3 matrices: a task per panel
    (1, 37, 20, 192, False, 512),  # 3 panels: the rows split in two groups, each packing its panel
    (1, 37, 20, 65, False, 512),  # 1 panel and an edge column: rows split in two
    (1, 60, 8, 22, False, 512),  # the transposed product (22 columns), written into the transposed output
    (2, 37, 20, 200, True, 16),  # the transposed product again, its a = b^T strided: b packed first
    (1, 37, 20, 60, True, 16),  # a transposed a, one panel, b packed first
    (4, 37, 20, 200, False, 512),  # a task per matrix
])
def test_gemm_on_two_threads(monkeypatch, p, m, k, n, transpose_a, prepack_min_rows):
    # Test shapes are small enough to run on one thread, where tasks run one after the
    # other; with the line at 0 us they run on two, so a task writing outside its own
    # tiles would show. PREPACK_MIN_ROWS is lowered from 512 in some cases so that small
    # shapes take that path too.
    monkeypatch.setattr(gemm, "GEMM_PARALLEL_MIN_US", 0.0)
    monkeypatch.setattr(gemm, "PREPACK_MIN_ROWS", prepack_min_rows)
    rng = np.random.default_rng(m + n + p)
    a, b = rand(rng, (p, m, k), np.float64), rand(rng, (p, k, n), np.float64)
    if transpose_a:
        a = transposed_copy(a)
    assert_close(K.bmm(a, b), np.matmul(a, b))


# ----------------------------------------------------------------------------- attention


@settings(deadline=None, max_examples=EXAMPLES)
@given(
    b=st.integers(1, 2),
    nh=st.integers(1, 2),
    tq=st.integers(1, MAX_T),
    extra_keys=st.integers(0, 5),
    hs=st.integers(1, 9 if JIT_OFF else 70),
    causal=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_attention_matches_reference(b, nh, tq, extra_keys, hs, causal, dtype, seed):
    rng = np.random.default_rng(seed)
    tk = tq + extra_keys
    q = rand(rng, (b, nh, tq, hs), dtype)
    k, v = rand(rng, (b, nh, tk, hs), dtype), rand(rng, (b, nh, tk, hs), dtype)
    scale = 1 / math.sqrt(hs)
    y, att = K.attention_forward(q, k, v, scale, causal)
    y_ref, att_ref = R.attention_forward(q, k, v, scale, causal)
    assert_close(att, att_ref)
    assert_close(y, y_ref)
    dy = rand(rng, y.shape, dtype)
    for g, r in zip(K.attention_backward(dy, q, k, v, att, scale), R.attention_backward(dy, q, k, v, att, scale)):
        assert_close(g, r)


@pytest.mark.parametrize("tq, tk, causal, hs", [(1, 1, True, 64), (5, 5, True, 64), (3, 9, True, 64), (7, 6, False, 64),
                                               (70, 70, True, 64), (67, 133, False, 64), (130, 131, True, 64),
                                               (66, 70, True, 128)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_attention_backward_at_head_size_64(tq, tk, causal, hs, dtype):
    # attention_backward runs its fused kernel only when hs is a multiple of 64 (the
    # panel width); the hypothesis test above mostly draws other sizes. From 64 keys on,
    # the scores span several panels and the key blocks of dk and dv pass the first panel.
    if JIT_OFF and tq > 10:
        pytest.skip("long sequences are slow as plain Python")
    rng = np.random.default_rng(15)
    q, k, v = rand(rng, (1, 2, tq, hs), dtype), rand(rng, (1, 2, tk, hs), dtype), rand(rng, (1, 2, tk, hs), dtype)
    y, att = K.attention_forward(q, k, v, 0.125, causal)
    assert_close(y, R.attention_forward(q, k, v, 0.125, causal)[0])
    dy = rand(rng, y.shape, dtype)
    for g, r in zip(K.attention_backward(dy, q, k, v, att, 0.125), R.attention_backward(dy, q, k, v, att, 0.125)):
        assert_close(g, r)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_both_attention_forward_paths(causal, dtype):
    # attention_forward packs and runs its fused kernel from SMALL_ATTENTION_WORK
    # multiply-adds of q @ k^T up, and uses np.matmul around the softmax kernel below
    # (decoding); check each side of the line against the reference.
    rng = np.random.default_rng(16)
    for tq, tk, hs in [(1, 32, 32), (32, 32, 64)]:  # 1 * 32 * 32 * 2 heads < 2^16 <= 32 * 32 * 64
        q, k, v = rand(rng, (1, 2, tq, hs), dtype), rand(rng, (1, 2, tk, hs), dtype), rand(rng, (1, 2, tk, hs), dtype)
        fused = 2 * tq * tk * hs >= attention.SMALL_ATTENTION_WORK
        assert fused == (tq == 32)
        y, att = K.attention_forward(q, k, v, 0.125, causal)
        y_ref, att_ref = R.attention_forward(q, k, v, 0.125, causal)
        assert_close(att, att_ref)
        assert_close(y, y_ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_on_views_as_the_model_makes_them(dtype):
    # The model splits (B, T, 3C) into heads with a reshape and a transpose: non-contiguous q, k, v.
    rng = np.random.default_rng(13)
    B, T, nh, hs = 2, 5, 3, 4
    qkv = rand(rng, (B, T, 3, nh, hs), dtype)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, nh, T, hs) views
    assert not q.flags.c_contiguous
    y, att = K.attention_forward(q, k, v, 0.5, True)
    y_ref, att_ref = R.attention_forward(q, k, v, 0.5, True)
    assert_close(y, y_ref)
    np.testing.assert_array_equal(att[..., 0, 1:], 0)  # the first query sees only the first key
    dy = rand(rng, y.shape, dtype).transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)
    for g, r in zip(K.attention_backward(dy, q, k, v, att, 0.5), R.attention_backward(dy, q, k, v, att, 0.5)):
        assert_close(g, r)


def test_attention_backward_reference_is_the_derivative():
    rng = np.random.default_rng(14)
    q, k, v = rng.standard_normal((1, 2, 3, 2)), rng.standard_normal((1, 2, 4, 2)), rng.standard_normal((1, 2, 4, 2))
    w = rng.standard_normal((1, 2, 3, 2))

    def loss():
        return np.sum(R.attention_forward(q, k, v, 0.7, True)[0] * w)

    _, att = R.attention_forward(q, k, v, 0.7, True)
    dq, dk, dv = R.attention_backward(w, q, k, v, att, 0.7)
    assert_matches_numerical(dq, numerical_grad(loss, q))
    assert_matches_numerical(dk, numerical_grad(loss, k))
    assert_matches_numerical(dv, numerical_grad(loss, v))


# ----------------------------------------------------------------------------- bad input

_X = np.ones((2, 3), np.float32)
_I = np.zeros(2, np.int64)

BAD_INPUTS = [
    (lambda: K.softmax_forward([[1.0, 2.0]]), TypeError),  # not an array
    (lambda: K.softmax_forward(np.ones((2, 3), np.int64)), TypeError),  # integer dtype
    (lambda: K.softmax_forward(np.ones((4, 3), np.float32), causal=True), ValueError),  # Tq > Tk
    (lambda: K.softmax_backward(_X, np.ones((2, 3), np.float64)), TypeError),  # mixed dtypes
    (lambda: K.softmax_backward(_X, np.ones((3, 2), np.float32)), ValueError),  # shapes differ
    (lambda: K.layernorm_forward(_X, np.ones(4, np.float32), None, 1e-5), ValueError),  # weight size
    (lambda: K.layernorm_forward(_X, np.ones(3, np.float32), None, -1.0), ValueError),  # eps <= 0
    (lambda: K.gelu_forward(_X, "erf"), ValueError),  # unknown approximation
    (lambda: K.cross_entropy_forward(_X, np.array([0, 3]), -100), ValueError),  # target >= V
    (lambda: K.cross_entropy_forward(_X, np.array([0.0, 1.0]), -100), TypeError),  # float targets
    (lambda: K.cross_entropy_forward(_X, np.zeros(3, np.int64), -100), ValueError),  # wrong length
    (lambda: K.cross_entropy_backward(_X, _I, np.zeros(2, np.float32), "1", -100), TypeError),  # dloss
    (lambda: K.embedding_backward(np.array([0, 5]), _X, 5), ValueError),  # index >= num_embeddings
    (lambda: K.embedding_backward(_I, _X[:, None], 5), ValueError),  # dout not idx.shape + (C,)
    (lambda: K.adamw_step(_X.T.copy().T, _X, _X.copy(), _X.copy(), 1e-3, 0.9, 0.99, 1e-8, 0.0, 1), ValueError),
    (lambda: K.adamw_step(_X.copy(), _X, _X.copy(), _X.copy(), 1e-3, 0.9, 0.99, 1e-8, 0.0, 0), ValueError),  # step 0
    (lambda: K.adamw_step(_X.copy(), _X, _X.copy(), _X.copy(), 1e-3, 1.0, 0.99, 1e-8, 0.0, 1), ValueError),  # beta1
    (lambda: K.matmul(_X, _X), ValueError),  # contraction dims differ
    (lambda: K.matmul(np.ones((2, 2, 3)), np.ones((3, 3, 2))), ValueError),  # batch dims do not broadcast
    (lambda: K.bmm(np.ones((2, 2, 3)), np.ones((3, 3, 2))), ValueError),  # batch sizes differ
    (lambda: K.gemm(_X, np.ones((3, 2), np.float64)), TypeError),  # mixed dtypes
    (lambda: K.attention_forward(np.ones((1, 1, 3, 2)), np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), 1.0, True), ValueError),
    (lambda: K.attention_forward(np.ones((1, 3, 2)), np.ones((1, 3, 2)), np.ones((1, 3, 2)), 1.0, False), ValueError),
]


@pytest.mark.parametrize("call, error", BAD_INPUTS)
def test_bad_input_raises_one_clear_error(call, error):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert message.endswith(".") and "\n" not in message  # one sentence, not a traceback
