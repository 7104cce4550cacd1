"""Reductions: sum, mean and max over some dimensions.

A reduction maps many inputs to one output, so its backward does the reverse:
it copies (broadcasts) the output gradient back over the reduced dimensions.
"""

import numpy as np

from ..tensor import Function


def normalize_dims(dim, ndim, op_name):
    """`dim` (None, an int or a tuple, negatives allowed) as a sorted tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not -ndim <= d < max(ndim, 1):
            raise ValueError(f"{op_name}: dim {d} is out of range for a tensor with {ndim} dims")
        out.append(d % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{op_name}: dim {dim} repeats a dimension")
    return tuple(sorted(out))


def normalize_dim(dim, ndim, op_name):
    """One dim (negatives allowed) as an index in [0, ndim), or a clear error naming the op."""
    if not isinstance(dim, (int, np.integer)) or not -ndim <= dim < ndim:
        raise ValueError(f"{op_name}: dim {dim} is out of range for a tensor with {ndim} dims")
    return int(dim) % ndim


def expand_reduced(grad, input_shape, dims, keepdim):
    """Reshape a reduced gradient so it broadcasts against the input (size-1 reduced axes)."""
    if not keepdim:
        kept_shape = tuple(1 if i in dims else n for i, n in enumerate(input_shape))
        grad = grad.reshape(kept_shape)
    return grad


class SumOp(Function):
    def forward(self, x, dim=None, keepdim=False):
        self.dims = normalize_dims(dim, x.ndim, "sum")
        self.input_shape, self.keepdim = x.shape, keepdim
        return np.asarray(x.sum(axis=self.dims, keepdims=keepdim))  # input_shape with dims reduced

    def backward(self, grad):
        # y = sum_i x_i  =>  dy/dx_i = 1: every input gets the output's gradient.
        grad = expand_reduced(grad, self.input_shape, self.dims, self.keepdim)
        return np.broadcast_to(grad, self.input_shape).copy()  # (input_shape)


class MeanOp(Function):
    def forward(self, x, dim=None, keepdim=False):
        self.dims = normalize_dims(dim, x.ndim, "mean")
        self.input_shape, self.keepdim = x.shape, keepdim
        self.count = int(np.prod([x.shape[d] for d in self.dims]))
        return np.asarray(x.mean(axis=self.dims, keepdims=keepdim))  # input_shape with dims reduced

    def backward(self, grad):
        # y = (1/n) sum_i x_i  =>  dy/dx_i = 1/n.
        grad = expand_reduced(grad, self.input_shape, self.dims, self.keepdim)
        scale = grad.dtype.type(1.0 / self.count)
        return np.broadcast_to(grad * scale, self.input_shape).copy()  # (input_shape)


class MaxOp(Function):
    """The maximum over `dim`. Ties share the gradient equally (a subgradient)."""

    def forward(self, x, dim=None, keepdim=False):
        self.dims = normalize_dims(dim, x.ndim, "max")
        if x.size == 0:
            raise ValueError(f"max: cannot reduce an empty tensor of shape {x.shape}")
        self.input_shape, self.keepdim = x.shape, keepdim
        y = x.max(axis=self.dims, keepdims=True)  # input_shape with dims kept as 1
        # Where x attains the max, weighted 1/(number of ties) so the weights sum to 1.
        is_max = (x == y).astype(x.dtype)  # (input_shape)
        self.weights = is_max / is_max.sum(axis=self.dims, keepdims=True)  # (input_shape)
        return np.asarray(y if keepdim else y.squeeze(axis=self.dims))  # input_shape with dims reduced

    def backward(self, grad):
        # y = max_i x_i  =>  dy/dx_i = 1 for the arg-max (split over ties), 0 elsewhere.
        grad = expand_reduced(grad, self.input_shape, self.dims, self.keepdim)
        return grad * self.weights  # (input_shape)
