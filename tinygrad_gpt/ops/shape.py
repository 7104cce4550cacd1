"""Operations that move elements without changing them: reshape, transpose,
permute, indexing, narrow (the piece of `split`), cat and stack.

Each backward puts every element of the output gradient back where its
element came from in the input, so these gradients involve no arithmetic,
only the inverse movement (with a sum where one input element was used more
than once, as integer-array indexing can do).
"""

import numpy as np

from ..tensor import Function
from .reduce import normalize_dim


class ReshapeOp(Function):
    def forward(self, x, shape):
        self.input_shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape a tensor of shape {x.shape} ({x.size} elements) "
                f"into shape {tuple(shape)}"
            ) from None

    def backward(self, grad):
        # y = x viewed with another shape: the same elements, so reshape back.
        return grad.reshape(self.input_shape)


class TransposeOp(Function):
    def forward(self, x, dim0, dim1):
        self.dim0, self.dim1 = normalize_dim(dim0, x.ndim, "transpose"), normalize_dim(dim1, x.ndim, "transpose")
        return np.swapaxes(x, self.dim0, self.dim1)  # x's shape with dim0 and dim1 swapped (a view)

    def backward(self, grad):
        # Swapping two axes is its own inverse.
        return np.swapaxes(grad, self.dim0, self.dim1)  # x's shape


class PermuteOp(Function):
    def forward(self, x, dims):
        if len(dims) != x.ndim or sorted(normalize_dim(d, x.ndim, "permute") for d in dims) != list(range(x.ndim)):
            raise ValueError(f"permute: dims {tuple(dims)} are not a permutation of {x.ndim} axes")
        self.dims = tuple(d % x.ndim for d in dims)  # non-negative, so argsort inverts it
        return np.transpose(x, self.dims)  # x's dims in the order dims (a view)

    def backward(self, grad):
        # Output axis i is input axis dims[i]; the inverse permutation undoes it.
        return np.transpose(grad, np.argsort(self.dims))  # x's shape


def _is_basic_index(index):
    """True when indexing selects a view (ints, slices, None, ...): no element repeats."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(
        isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis for p in parts
    )


class IndexOp(Function):
    """x[index] with slices, ints, integer arrays or boolean masks (NumPy semantics)."""

    def forward(self, x, index):
        self.input_shape, self.dtype, self.index = x.shape, x.dtype, index
        try:
            return np.asarray(x[index])  # the indexed shape
        except IndexError as error:
            raise IndexError(f"index: {error} (tensor shape {x.shape})") from None

    def backward(self, grad):
        # y = x[index]  =>  each y element adds its gradient to the x element it came
        # from. Integer arrays may pick an element twice, so that case scatter-adds.
        dx = np.zeros(self.input_shape, dtype=self.dtype)  # (input_shape)
        if _is_basic_index(self.index):
            dx[self.index] = grad
        else:
            np.add.at(dx, self.index, grad)
        return dx


class NarrowOp(Function):
    """x.narrow(dim, start, length): the slice start:start+length along dim."""

    def forward(self, x, dim, start, length):
        dim = normalize_dim(dim, x.ndim, "narrow")
        if not (0 <= start and 0 <= length and start + length <= x.shape[dim]):
            raise ValueError(
                f"narrow: start {start} + length {length} exceeds size {x.shape[dim]} of dim {dim}"
            )
        self.input_shape, self.dtype = x.shape, x.dtype
        self.window = (slice(None),) * dim + (slice(start, start + length),)
        return x[self.window]

    def backward(self, grad):
        # The slice's gradient goes back to its window; the rest of x gets zero.
        dx = np.zeros(self.input_shape, dtype=self.dtype)  # (input_shape)
        dx[self.window] = grad
        return dx


def _check_same(op_name, arrays):
    if not arrays:
        raise ValueError(f"{op_name}: needs at least one tensor")
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) > 1:
        raise TypeError(f"{op_name}: tensors have different dtypes {sorted(map(str, dtypes))}")


class CatOp(Function):
    def forward(self, *arrays, dim=0):
        _check_same("cat", arrays)
        dim = normalize_dim(dim, arrays[0].ndim, "cat")
        try:
            out = np.concatenate(arrays, axis=dim)  # the inputs' shape, sizes along dim summed
        except (ValueError, np.exceptions.AxisError):
            shapes = [a.shape for a in arrays]
            raise ValueError(f"cat: shapes {shapes} do not match outside dim {dim}") from None
        self.dim = dim % out.ndim
        self.boundaries = np.cumsum([a.shape[self.dim] for a in arrays])[:-1]
        return out

    def backward(self, grad):
        # y = [x_1, x_2, ...] along dim: each x_i's gradient is its own piece of grad.
        return tuple(np.split(grad, self.boundaries, axis=self.dim))  # one piece per input, each of its shape


class StackOp(Function):
    def forward(self, *arrays, dim=0):
        _check_same("stack", arrays)
        if len({a.shape for a in arrays}) > 1:
            raise ValueError(f"stack: all shapes must be equal, got {[a.shape for a in arrays]}")
        self.dim = normalize_dim(dim, arrays[0].ndim + 1, "stack")
        out = np.stack(arrays, axis=self.dim)  # the inputs' shape with a new dim of len(arrays)
        return out

    def backward(self, grad):
        # y[..., i, ...] = x_i: x_i's gradient is slice i of grad along the new dim.
        return tuple(np.take(grad, i, axis=self.dim) for i in range(grad.shape[self.dim]))  # one per input, each of its shape
