"""Matrix multiplication, 2-D and batched, with NumPy's broadcasting of batch dims."""

import numpy as np

from .. import kernels
from ..tensor import Function, unbroadcast


class MatMulOp(Function):
    """a @ b with np.matmul's rules: (..., M, K) @ (..., K, N) -> (..., M, N).

    A 1-D `a` is a row vector (1, K) and a 1-D `b` a column vector (K, 1);
    the added axis is dropped from the result, as in NumPy and PyTorch.
    """

    def forward(self, a, b):
        if a.dtype != b.dtype:
            raise TypeError(f"matmul: dtypes {a.dtype} and {b.dtype} differ; convert one first")
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: needs tensors with at least 1 dim, got {a.shape} @ {b.shape}")
        self.a_shape, self.b_shape = a.shape, b.shape
        a2 = a[None, :] if a.ndim == 1 else a  # (..., M, K)
        b2 = b[:, None] if b.ndim == 1 else b  # (..., K, N)
        if a2.shape[-1] != b2.shape[-2]:
            raise ValueError(
                f"matmul: shapes {a.shape} and {b.shape} do not match "
                f"(inner dims {a2.shape[-1]} and {b2.shape[-2]})"
            )
        try:
            np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        except ValueError:
            raise ValueError(
                f"matmul: batch dims of {a.shape} and {b.shape} cannot be broadcast together"
            ) from None
        self.a, self.b = a2, b2
        y = kernels.matmul(a2, b2)  # (..., M, N)
        self.y_shape = y.shape
        if a.ndim == 1:
            y = y[..., 0, :]
        if b.ndim == 1:
            y = y[..., 0]
        return y

    def backward(self, grad):
        # y = a @ b, y_mn = sum_k a_mk b_kn  =>
        #   dL/da_mk = sum_n dL/dy_mn b_kn   i.e.  da = dy @ b^T   (..., M, K)
        #   dL/db_kn = sum_m a_mk dL/dy_mn   i.e.  db = a^T @ dy   (..., K, N)
        # then broadcast batch dims are summed away by unbroadcast.
        grad = grad.reshape(self.y_shape)  # (..., M, N), restoring 1-D operands' axes
        da = db = None
        if self.needs_input_grad[0]:
            da = kernels.matmul(grad, np.swapaxes(self.b, -1, -2))  # (..., M, K)
            da = unbroadcast(da, self.a.shape).reshape(self.a_shape)
        if self.needs_input_grad[1]:
            db = kernels.matmul(np.swapaxes(self.a, -1, -2), grad)  # (..., K, N)
            db = unbroadcast(db, self.b.shape).reshape(self.b_shape)
        return da, db


class LinearOp(Function):
    """y = x @ weight^T + bias, the fully connected layer as one op.

    x (..., in), weight (out, in) as in PyTorch, bias (out,) or absent. Fusing
    it saves the transpose node and the broadcast of the bias, and lets the
    leading dims fold into one: every product is a plain 2-D GEMM.
    """

    def forward(self, x, weight, *bias):
        for name, array in (("weight", weight), ("bias", bias[0] if bias else x)):
            if array.dtype != x.dtype:
                raise TypeError(f"linear: input is {x.dtype} but {name} is {array.dtype}; convert one first")
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"linear: input has {x.shape[-1]} features but weight {weight.shape} expects "
                f"{weight.shape[1]}"
            )
        if bias and bias[0].shape != weight.shape[:1]:
            raise ValueError(f"linear: bias {bias[0].shape} does not match weight {weight.shape}")
        self.x_shape = x.shape
        self.x = x.reshape(-1, x.shape[-1])  # (N, in)
        self.weight, self.has_bias = weight, bool(bias)
        y = kernels.matmul(self.x, weight.T)  # (N, out)
        if bias:
            y += bias[0]
        return y.reshape(x.shape[:-1] + (weight.shape[0],))  # (..., out)

    def backward(self, grad):
        # y_no = sum_i x_ni w_oi + b_o  =>
        #   dx = dy @ w        (N, in)
        #   dw = dy^T @ x      (out, in)
        #   db = sum_n dy_n    (out,)
        dy = grad.reshape(-1, grad.shape[-1])  # (N, out)
        dx = kernels.matmul(dy, self.weight).reshape(self.x_shape) if self.needs_input_grad[0] else None
        dw = kernels.matmul(dy.T, self.x) if self.needs_input_grad[1] else None
        return (dx, dw, dy.sum(axis=0)) if self.has_bias else (dx, dw)
