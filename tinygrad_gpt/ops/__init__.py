"""Every differentiable operation, and the Tensor methods that call them.

The ops are `Function` subclasses, grouped by family:

* `elementwise.py`: add, sub, mul, div, neg, pow, exp, log, sqrt, tanh, relu, gelu, masked_fill
* `reduce.py`:      sum, mean, max
* `shape.py`:       reshape, transpose, permute, indexing, narrow, cat, stack
* `matmul.py`:      matmul, linear
* `fused.py`:       the fused neural-network ops, each one graph node with one
                    handwritten backward: softmax, log_softmax, cross_entropy,
                    layer_norm, embedding, dropout, scaled_dot_product_attention

Naming: every op class ends in `Op` (`AddOp`, `MatMulOp`, `LayerNormOp`,
`ScaledDotProductAttentionOp`, ...), so it never shares a name with the layer of
nn.py that uses it (`nn.LayerNorm` is the Module with the parameters,
`ops.LayerNormOp` the Function with the backward). Code outside ops/ rarely needs
the classes: `functional` (F.layer_norm, ...) and the Tensor methods pick them.

Defining a subclass registers it in `Function.registry`; the test suite walks
that registry and fails for any op without a gradient check.

The heavy arithmetic of the ops runs in `kernels` (kernels.use("reference") puts
every op on plain NumPy). Below, the operator methods are attached to `Tensor`
(`a + b`, `x.sum()`, `x[1:3]`, ...), so `tensor.py` stays the engine alone and the
layering stays one-way: this file imports the engine, never the reverse.
"""

import numbers

import numpy as np

from ..tensor import Tensor
from .elementwise import AddOp, DivOp, ExpOp, GELUOp, LogOp, MaskedFillOp, MulOp, NegOp, PowOp, ReLUOp, SqrtOp, SubOp, TanhOp
from .matmul import LinearOp, MatMulOp
from .lora import LoRALinearOp  # noqa: F401  (registers the op; nn.LoRALinear applies it)
from .fused import (
    CrossEntropyOp,
    DropoutOp,
    EmbeddingOp,
    LayerNormOp,
    LogSoftmaxOp,
    ScaledDotProductAttentionOp,
    SoftmaxOp,
)
from .reduce import MaxOp, MeanOp, SumOp, normalize_dim
from .shape import CatOp, IndexOp, NarrowOp, PermuteOp, ReshapeOp, StackOp, TransposeOp


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
    return PowOp.apply(x, exponent=exponent)


def _getitem(x, index):
    # Integer tensors used as indices are unwrapped to their arrays.
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return IndexOp.apply(x, index=index)


def _split(x, split_size, dim=0):
    """Chunks of `split_size` along `dim` (the last may be smaller), each a narrow view."""
    size = x.shape[dim]
    if split_size <= 0:
        raise ValueError(f"split: split_size must be positive, got {split_size}")
    return tuple(
        NarrowOp.apply(x, dim=dim, start=start, length=min(split_size, size - start))
        for start in range(0, size, split_size)
    )


def _squeeze(x, dim):
    dim = normalize_dim(dim, x.ndim, "squeeze")
    if x.shape[dim] != 1:
        return x
    return ReshapeOp.apply(x, shape=x.shape[:dim] + x.shape[dim + 1 :])


def _unsqueeze(x, dim):
    dim = normalize_dim(dim, x.ndim + 1, "unsqueeze")
    return ReshapeOp.apply(x, shape=x.shape[:dim] + (1,) + x.shape[dim:])


Tensor.__add__ = lambda a, b: AddOp.apply(a, as_tensor(b, a))
Tensor.__radd__ = lambda a, b: AddOp.apply(as_tensor(b, a), a)
Tensor.__sub__ = lambda a, b: SubOp.apply(a, as_tensor(b, a))
Tensor.__rsub__ = lambda a, b: SubOp.apply(as_tensor(b, a), a)
Tensor.__mul__ = lambda a, b: MulOp.apply(a, as_tensor(b, a))
Tensor.__rmul__ = lambda a, b: MulOp.apply(as_tensor(b, a), a)
Tensor.__truediv__ = lambda a, b: DivOp.apply(a, as_tensor(b, a))
Tensor.__rtruediv__ = lambda a, b: DivOp.apply(as_tensor(b, a), a)
Tensor.__matmul__ = lambda a, b: MatMulOp.apply(a, as_tensor(b, a))
Tensor.__rmatmul__ = lambda a, b: MatMulOp.apply(as_tensor(b, a), a)
Tensor.__pow__ = _pow
Tensor.__neg__ = lambda x: NegOp.apply(x)
Tensor.__getitem__ = _getitem

Tensor.exp = lambda x: ExpOp.apply(x)
Tensor.log = lambda x: LogOp.apply(x)
Tensor.sqrt = lambda x: SqrtOp.apply(x)
Tensor.tanh = lambda x: TanhOp.apply(x)
Tensor.relu = lambda x: ReLUOp.apply(x)

Tensor.sum = lambda x, dim=None, keepdim=False: SumOp.apply(x, dim=dim, keepdim=keepdim)
Tensor.mean = lambda x, dim=None, keepdim=False: MeanOp.apply(x, dim=dim, keepdim=keepdim)
# Unlike torch.max(dim), this returns the values only (like torch.amax), not (values, indices).
Tensor.max = lambda x, dim=None, keepdim=False: MaxOp.apply(x, dim=dim, keepdim=keepdim)

Tensor.reshape = lambda x, *shape: ReshapeOp.apply(x, shape=_shape_args(shape))
# NumPy arrays have no strides-only view that always works, so view is reshape here.
Tensor.view = Tensor.reshape
Tensor.flatten = lambda x: ReshapeOp.apply(x, shape=(-1,))
Tensor.squeeze = _squeeze
Tensor.unsqueeze = _unsqueeze
Tensor.transpose = lambda x, dim0, dim1: TransposeOp.apply(x, dim0=dim0, dim1=dim1)
Tensor.permute = lambda x, *dims: PermuteOp.apply(x, dims=_shape_args(dims))
Tensor.narrow = lambda x, dim, start, length: NarrowOp.apply(x, dim=dim, start=start, length=length)
Tensor.split = _split
Tensor.masked_fill = lambda x, mask, value: MaskedFillOp.apply(
    x, mask=mask.data if isinstance(mask, Tensor) else mask, value=value
)
Tensor.softmax = lambda x, dim=-1: SoftmaxOp.apply(x, dim=dim)
Tensor.log_softmax = lambda x, dim=-1: LogSoftmaxOp.apply(x, dim=dim)

__all__ = [
    "AddOp", "SubOp", "MulOp", "DivOp", "NegOp", "PowOp", "ExpOp", "LogOp", "SqrtOp", "TanhOp", "ReLUOp", "GELUOp",
    "MaskedFillOp", "SumOp", "MeanOp", "MaxOp", "ReshapeOp", "TransposeOp", "PermuteOp", "IndexOp", "NarrowOp",
    "CatOp", "StackOp", "MatMulOp", "LinearOp", "SoftmaxOp", "LogSoftmaxOp", "CrossEntropyOp", "LayerNormOp",
    "EmbeddingOp", "DropoutOp", "ScaledDotProductAttentionOp", "as_tensor",
]
