"""The backward engine: accumulation, reuse, deep graphs, no_grad, freeing, errors."""

import gc
import weakref

import numpy as np
import pytest

import tinygrad_gpt as tg
from tinygrad_gpt import Tensor, gradcheck, no_grad, unbroadcast
from tinygrad_gpt.gradcheck import GradcheckError


def test_gradients_accumulate_across_backward_calls():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * (2 * x.data))


def test_a_tensor_used_twice_receives_the_sum_of_its_gradients():
    x = Tensor([3.0], requires_grad=True)
    y = x * x + x * 4.0  # dy/dx = 2x + 4 = 10
    y.backward(np.ones(1, dtype=np.float32))
    np.testing.assert_array_equal(x.grad, [10.0])


def test_diamond_graph():
    # a feeds b and c; d = b * c. dd/da = c * 2 + b * 3 with b = 2a, c = 3a.
    a = Tensor(np.array([1.5]), requires_grad=True)
    b, c = a * 2.0, a * 3.0
    (b * c).sum().backward()
    np.testing.assert_allclose(a.grad, [12 * 1.5])


def test_deep_graph_backpropagates_without_recursion_error():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    # 10,000 float64 multiplications each round once (~1e-16): ~1e-12 relative drift at most.
    np.testing.assert_allclose(x.grad, [1.0001**10_000], rtol=1e-9)


def test_no_grad_builds_no_graph():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with no_grad():
        y = (x * 2.0).sum()
    assert not y.requires_grad and y._ctx is None
    assert (x * 2.0).requires_grad  # and grad mode comes back after the block


def test_detach_cuts_the_graph():
    x = Tensor([2.0], requires_grad=True)
    y = (x * x).detach() * x  # only the last factor is differentiated: dy/dx = x^2
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [4.0])


def test_graph_is_freed_after_backward():
    x = Tensor(np.ones((100, 100)), requires_grad=True)
    hidden = x.exp()
    saved = weakref.ref(hidden._ctx)
    loss = (hidden * 2.0).sum()
    del hidden
    loss.backward()
    gc.collect()
    assert saved() is None, "the graph's Function objects are still alive after backward"
    with pytest.raises(RuntimeError, match="already freed"):
        loss.backward()


def test_graph_is_freed_when_the_output_is_dropped():
    x = Tensor(np.ones(10), requires_grad=True)
    y = x.exp().sum()
    ctx = weakref.ref(y._ctx)
    del y
    gc.collect()
    assert ctx() is None


def test_leaf_grad_is_not_shared_between_leaves():
    # AddOp's backward hands the same array to both inputs; the leaves must own copies.
    a, b = Tensor([1.0], requires_grad=True), Tensor([2.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad += 5
    assert b.grad[0] == 1.0


def test_non_scalar_backward_needs_a_gradient():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"one element, got shape \(2, 3\)"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), expected \(2, 3\)"):
        (x * 2.0).backward(np.ones(3))


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="int64"):
        Tensor(np.arange(3), requires_grad=True)


def test_pow_with_a_tensor_exponent_is_refused():
    x = Tensor([2.0], requires_grad=True)
    with pytest.raises(TypeError, match="pow: the exponent must be a Python number"):
        x ** Tensor([2.0])


def test_shape_mismatch_names_the_op_and_shapes():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        Tensor(np.ones((2, 3))) + Tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) do not match"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match="reshape: cannot reshape"):
        Tensor(np.ones((2, 3))).reshape(4, 2)


def test_mixed_dtypes_are_refused_not_upcast():
    with pytest.raises(TypeError, match="mul: dtypes float32 and float64 differ"):
        Tensor(np.ones(2, np.float32)) * Tensor(np.ones(2, np.float64))


def test_dtype_defaults_and_is_preserved():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.ones(2)).dtype == np.float64
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (2.0 * x + 1) / 3.0 - x**2
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize(
    "grad_shape, shape",
    [((4, 3), (3,)), ((4, 3), (1, 3)), ((2, 4, 3), (4, 1)), ((5,), ()), ((2, 3), (2, 3))],
)
def test_unbroadcast_sums_the_broadcast_copies(grad_shape, shape):
    grad = np.random.default_rng(0).standard_normal(grad_shape)
    reduced = unbroadcast(grad, shape)
    assert reduced.shape == shape
    # Element by element: each input element gets the sum over the grad elements it
    # was copied to (trailing dims aligned; a size-1 dim maps every position to 0).
    expected = np.zeros(shape)
    for index in np.ndindex(*grad_shape):
        source = tuple(0 if n == 1 else i for i, n in zip(index[len(index) - len(shape) :], shape))
        expected[source] += grad[index]
    np.testing.assert_allclose(reduced, expected, rtol=1e-12)


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(tg.Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, grad):
            return grad * self.x  # should be 2x

    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(2,\)\) at element \(1,\)"):
        gradcheck(lambda x: WrongSquare.apply(x), [x])
    del tg.Function.registry["WrongSquare"]  # keep the op registry to the library's ops


def test_gradcheck_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda x: x * 2.0, [Tensor([1.0], requires_grad=True)])


def test_split_chunks_and_their_gradients():
    x = Tensor(np.arange(7.0), requires_grad=True)
    parts = x.split(3)
    assert [p.shape for p in parts] == [(3,), (3,), (1,)]
    (parts[0] * 1.0 + parts[1] * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [1, 1, 1, 2, 2, 2, 0])


def test_integer_tensors_refuse_arithmetic_instead_of_truncating():
    ints = Tensor(np.array([1, 2, 3]))
    with pytest.raises(TypeError, match="mul: needs float32 or float64 tensors, got dtype int64"):
        ints * 0.5
    with pytest.raises(TypeError, match="div: needs float32 or float64"):
        ints / 2
    with pytest.raises(TypeError, match="pow: needs float32 or float64"):
        ints**0.5
    assert ints[1:].data.tolist() == [2, 3]  # indexing an integer tensor is fine


def test_linear_refuses_a_bias_of_another_dtype():
    x, w = Tensor(np.ones((2, 3), np.float32)), Tensor(np.ones((4, 3), np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="linear: input is float32 but bias is float64"):
        tg.functional.linear(x, w, Tensor(np.ones(4), requires_grad=True))


@pytest.mark.parametrize("call, match", [
    (lambda x: x.transpose(0, 5), "transpose: dim 5 is out of range for a tensor with 3 dims"),
    (lambda x: x.softmax(3), "softmax: dim 3 is out of range"),
    (lambda x: x.log_softmax(-4), "log_softmax: dim -4 is out of range"),
    (lambda x: x.narrow(4, 0, 1), "narrow: dim 4 is out of range"),
    (lambda x: x.squeeze(5), "squeeze: dim 5 is out of range"),
    (lambda x: tg.stack([x, x], dim=5), "stack: dim 5 is out of range for a tensor with 4 dims"),
    (lambda x: x.permute(0, 1, 1), r"permute: dims \(0, 1, 1\) are not a permutation of 3 axes"),
])
def test_a_bad_dim_names_the_op(call, match):
    with pytest.raises(ValueError, match=match):
        call(Tensor(np.ones((2, 3, 4))))


def test_gradcheck_restores_the_input_when_fn_raises():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    calls = []

    def fn(x):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return x * 2.0

    with pytest.raises(RuntimeError, match="boom"):
        gradcheck(fn, [x])
    np.testing.assert_array_equal(x.data, [1.0, 2.0])


def test_gradcheck_says_when_the_output_ignores_its_inputs():
    with pytest.raises(ValueError, match="does not depend on any input"):
        gradcheck(lambda x: Tensor(np.ones(2)), [Tensor(np.ones(2), requires_grad=True)])
