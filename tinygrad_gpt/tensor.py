"""The autograd engine: `Tensor`, `Function`, and reverse-mode backpropagation.

A `Tensor` wraps a NumPy array. When a `Function` runs on tensors that require
gradients, its output remembers the function that made it (`_ctx`); the
functions and tensors form a directed acyclic graph. `Tensor.backward()` walks
that graph from the output back to the leaves in reverse topological order and
asks every function for the gradient of its inputs given the gradient of its
output: the chain rule, one node at a time.

This file is only the engine. The operations themselves (`AddOp`, `MatMulOp`,
`SoftmaxOp`, ...) live in `ops/`, the layer above, which also attaches the
operator methods (`+`, `@`, `.sum()`, ...) to `Tensor` so that this file reads
on its own.
"""

import contextlib

import numpy as np

DEFAULT_DTYPE = np.float32
FLOAT_DTYPES = (np.float32, np.float64)

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Run a block without building a graph (inference, evaluation, optimizer steps).

    Inside the block every result has `requires_grad=False` and keeps no
    reference to its inputs, so nothing is held in memory for a backward pass.
    """
    global _grad_enabled
    previous = _grad_enabled
    _grad_enabled = False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    """True unless we are inside a `no_grad()` block."""
    return _grad_enabled


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting.

    If `a` of shape `shape` was broadcast to `grad.shape` in the forward pass,
    every copy of an element of `a` received its own gradient; the gradient of
    the element is the sum over its copies. Broadcasting (1) prepends axes and
    (2) stretches axes of size 1, so we (1) sum away the leading axes and
    (2) sum the stretched axes keeping them as size 1.
    """
    if grad.shape == shape:
        return grad
    n_leading = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(n_leading))) if n_leading > 0 else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


class Function:
    """One differentiable operation: a `forward` on arrays and its `backward`.

    A subclass writes:

    * `forward(self, *arrays, **options) -> np.ndarray`, computing the output
      from the input arrays and saving on `self` what the backward will need;
    * `backward(self, grad_output) -> tuple`, returning one gradient per input
      array (or `None` for an input that needs none), each of that input's shape.

    The instance itself is the context of one application: it holds the
    inputs (`parents`) and whatever forward saved. Every subclass is recorded
    in `Function.registry`, so the tests can enumerate every op and check that
    each has a gradient check.
    """

    registry = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Function.registry[cls.__name__] = cls

    def __init__(self, *parents):
        self.parents = parents
        # needs_input_grad[i] lets a backward skip work for inputs without grad.
        self.needs_input_grad = tuple(t.requires_grad for t in parents)

    @classmethod
    def apply(cls, *inputs, **options):
        """Run the op on Tensors; record it in the graph if a gradient is needed."""
        ctx = cls(*inputs)
        out = Tensor(ctx.forward(*(t.data for t in inputs), **options))
        if _grad_enabled and any(ctx.needs_input_grad):
            out.requires_grad = True
            out._ctx = ctx
        return out

    def forward(self, *arrays, **options):
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def release(self):
        """Drop the inputs and saved arrays once backward has used them."""
        self.__dict__.clear()
        self.parents = None


class Tensor:
    """An n-dimensional array that can record the operations applied to it.

    `Tensor(data, requires_grad=False, dtype=None)`: `data` is anything
    `np.asarray` accepts. Floating data defaults to float32 (Python floats and
    lists become float32); a NumPy float64 array stays float64; integer data
    stays integer (it can index, but cannot require a gradient).

    `.data` is the `np.ndarray`; `.grad` is `None` or an `np.ndarray` of the
    same shape and dtype, filled by `backward()`. Gradients **accumulate**:
    each `backward()` adds into `.grad`, as in PyTorch, so call `zero_grad()`
    (on the optimizer or module) between steps.
    """

    __array_priority__ = 1000  # so `ndarray * Tensor` calls Tensor.__rmul__

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is not None:
            data = np.asarray(data, dtype=dtype)
        elif isinstance(data, np.ndarray):
            pass
        else:
            data = np.asarray(data)
            if data.dtype.kind == "f":
                data = data.astype(DEFAULT_DTYPE)  # Python floats are float64; we default to float32
        self.data = data
        self.grad = None
        self._ctx = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    def requires_grad_(self, flag=True):
        """Set `requires_grad` in place; only floating tensors can require gradients."""
        if flag and self.data.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"only float32/float64 tensors can require gradients, got dtype {self.data.dtype}"
            )
        self.requires_grad = flag
        return self

    # ---- array facts -------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self):
        return self.data.size

    def numpy(self):
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def detach(self):
        """A new leaf sharing this tensor's data, cut off from the graph."""
        return Tensor(self.data)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(self.data, separator=", ", precision=4, threshold=20)
        return f"Tensor({body}, dtype={self.dtype}{grad})"

    # ---- backpropagation ---------------------------------------------------
    def backward(self, grad=None):
        """Backpropagate from this tensor, adding d(self)/d(leaf) into each leaf's `.grad`.

        With no argument, `self` must hold one element and the seed gradient
        is 1. Otherwise `grad` is d(loss)/d(self), of self's shape. The graph
        is freed afterwards (saved arrays released), so a second backward
        through it raises an error, as in PyTorch.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a tensor with one element, "
                    f"got shape {self.shape}; pass grad= of that shape"
                )
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(
                    f"backward(grad): grad has shape {grad.shape}, expected {self.shape}"
                )

        grads = {id(self): grad}  # gradient w.r.t. each interior node, keyed by id
        for node in _topological_order(self):
            g = grads.pop(id(node), None)
            if g is None:  # every path to this node had a None gradient
                continue
            ctx = node._ctx
            if ctx is None:  # a leaf: accumulate into .grad (a copy: g may be shared)
                if node.grad is None:
                    node.grad = g.copy()
                else:
                    node.grad += g
                continue
            if ctx.parents is None:
                raise RuntimeError(
                    "backward() through a graph that was already freed; "
                    "compute the forward again before a second backward"
                )
            input_grads = ctx.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, pg in zip(ctx.parents, input_grads):
                if pg is None or not parent.requires_grad:
                    continue
                if pg.shape != parent.shape or pg.dtype != parent.dtype:
                    raise RuntimeError(
                        f"{type(ctx).__name__}.backward returned a gradient of shape "
                        f"{pg.shape} {pg.dtype} for an input of shape {parent.shape} {parent.dtype}"
                    )
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            ctx.release()


def _topological_order(root):
    """The nodes that need a gradient, each before every node it was computed from.

    Iterative depth-first search (no recursion, so a graph 10,000 ops deep is
    fine): a node is appended after all its inputs, and the list is reversed.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None and node._ctx.parents is not None:
            for parent in node._ctx.parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return reversed(order)
