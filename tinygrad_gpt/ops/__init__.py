"""Every differentiable operation, and the Tensor methods that call them.

The ops are `Function` subclasses, grouped by family:

* `elementwise.py`: add, sub, mul, div, neg, pow, exp, log, sqrt, tanh, relu, gelu, masked_fill
* `reduce.py`:      sum, mean, max
* `shape.py`:       reshape, transpose, permute, indexing, narrow, cat, stack
* `matmul.py`:      matmul, linear
* `nn.py`:          softmax, log_softmax, cross_entropy, layer_norm, embedding, dropout,
                    scaled_dot_product_attention

Defining a subclass registers it in `Function.registry`; the test suite walks
that registry and fails for any op without a gradient check.

Below, the operator methods are attached to `Tensor` (`a + b`, `x.sum()`,
`x[1:3]`, ...), so `tensor.py` stays the engine alone and the layering stays
one-way: this file imports the engine, never the reverse.
"""

import numbers

import numpy as np

from ..tensor import Tensor
from .elementwise import Add, Div, Exp, GELU, Log, MaskedFill, Mul, Neg, Pow, ReLU, Sqrt, Sub, Tanh
from .matmul import Linear, MatMul
from .lora import LoRALinear  # noqa: F401  (registers the op; nn.LoRALinear applies it)
from .nn import (
    CrossEntropy,
    Dropout,
    Embedding,
    LayerNorm,
    LogSoftmax,
    ScaledDotProductAttention,
    Softmax,
)
from .reduce import Max, Mean, Sum, normalize_dim
from .shape import Cat, Index, Narrow, Permute, Reshape, Stack, Transpose


def as_tensor(value, like):
    """Turn a Python number or array into a constant Tensor; numbers take `like`'s dtype."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, numbers.Number):
        return Tensor(np.asarray(value, dtype=like.dtype))
    if isinstance(value, np.ndarray):
        return Tensor(value)
    raise TypeError(f"cannot combine a Tensor with a {type(value).__name__}")


def _shape_args(shape):
    """Accept both x.reshape(2, 3) and x.reshape((2, 3)), as PyTorch does."""
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def _pow(x, exponent):
    if not isinstance(exponent, numbers.Number):
        raise TypeError(
            f"pow: the exponent must be a Python number, got {type(exponent).__name__}; "
            f"tensor exponents are not supported"
        )
    return Pow.apply(x, exponent=exponent)


def _getitem(x, index):
    # Integer tensors used as indices are unwrapped to their arrays.
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return Index.apply(x, index=index)


def _split(x, split_size, dim=0):
    """Chunks of `split_size` along `dim` (the last may be smaller), each a narrow view."""
    size = x.shape[dim]
    if split_size <= 0:
        raise ValueError(f"split: split_size must be positive, got {split_size}")
    return tuple(
        Narrow.apply(x, dim=dim, start=start, length=min(split_size, size - start))
        for start in range(0, size, split_size)
    )


def _squeeze(x, dim):
    dim = normalize_dim(dim, x.ndim, "squeeze")
    if x.shape[dim] != 1:
        return x
    return Reshape.apply(x, shape=x.shape[:dim] + x.shape[dim + 1 :])


def _unsqueeze(x, dim):
    dim = normalize_dim(dim, x.ndim + 1, "unsqueeze")
    return Reshape.apply(x, shape=x.shape[:dim] + (1,) + x.shape[dim:])


Tensor.__add__ = lambda a, b: Add.apply(a, as_tensor(b, a))
Tensor.__radd__ = lambda a, b: Add.apply(as_tensor(b, a), a)
Tensor.__sub__ = lambda a, b: Sub.apply(a, as_tensor(b, a))
Tensor.__rsub__ = lambda a, b: Sub.apply(as_tensor(b, a), a)
Tensor.__mul__ = lambda a, b: Mul.apply(a, as_tensor(b, a))
Tensor.__rmul__ = lambda a, b: Mul.apply(as_tensor(b, a), a)
Tensor.__truediv__ = lambda a, b: Div.apply(a, as_tensor(b, a))
Tensor.__rtruediv__ = lambda a, b: Div.apply(as_tensor(b, a), a)
Tensor.__matmul__ = lambda a, b: MatMul.apply(a, as_tensor(b, a))
Tensor.__rmatmul__ = lambda a, b: MatMul.apply(as_tensor(b, a), a)
Tensor.__pow__ = _pow
Tensor.__neg__ = lambda x: Neg.apply(x)
Tensor.__getitem__ = _getitem

Tensor.exp = lambda x: Exp.apply(x)
Tensor.log = lambda x: Log.apply(x)
Tensor.sqrt = lambda x: Sqrt.apply(x)
Tensor.tanh = lambda x: Tanh.apply(x)
Tensor.relu = lambda x: ReLU.apply(x)

Tensor.sum = lambda x, dim=None, keepdim=False: Sum.apply(x, dim=dim, keepdim=keepdim)
Tensor.mean = lambda x, dim=None, keepdim=False: Mean.apply(x, dim=dim, keepdim=keepdim)
# Unlike torch.max(dim), this returns the values only (like torch.amax), not (values, indices).
Tensor.max = lambda x, dim=None, keepdim=False: Max.apply(x, dim=dim, keepdim=keepdim)

Tensor.reshape = lambda x, *shape: Reshape.apply(x, shape=_shape_args(shape))
# NumPy arrays have no strides-only view that always works, so view is reshape here.
Tensor.view = Tensor.reshape
Tensor.flatten = lambda x: Reshape.apply(x, shape=(-1,))
Tensor.squeeze = _squeeze
Tensor.unsqueeze = _unsqueeze
Tensor.transpose = lambda x, dim0, dim1: Transpose.apply(x, dim0=dim0, dim1=dim1)
Tensor.permute = lambda x, *dims: Permute.apply(x, dims=_shape_args(dims))
Tensor.narrow = lambda x, dim, start, length: Narrow.apply(x, dim=dim, start=start, length=length)
Tensor.split = _split
Tensor.masked_fill = lambda x, mask, value: MaskedFill.apply(
    x, mask=mask.data if isinstance(mask, Tensor) else mask, value=value
)
Tensor.softmax = lambda x, dim=-1: Softmax.apply(x, dim=dim)
Tensor.log_softmax = lambda x, dim=-1: LogSoftmax.apply(x, dim=dim)

__all__ = [
    "Add", "Sub", "Mul", "Div", "Neg", "Pow", "Exp", "Log", "Sqrt", "Tanh", "ReLU", "GELU",
    "MaskedFill", "Sum", "Mean", "Max", "Reshape", "Transpose", "Permute", "Index", "Narrow",
    "Cat", "Stack", "MatMul", "Linear", "Softmax", "LogSoftmax", "CrossEntropy", "LayerNorm",
    "Embedding", "Dropout", "ScaledDotProductAttention", "as_tensor",
]
