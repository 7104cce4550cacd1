"""Elementwise operations: arithmetic, exp/log/sqrt/tanh, ReLU and GELU.

Every backward here is the chain rule for a function applied element by
element: d(loss)/d(x) = d(loss)/d(y) * dy/dx, all arrays the same shape.
Binary ops broadcast like NumPy; the gradient of a broadcast input is summed
back to its shape by `unbroadcast`, in one place, not in each op.
"""

import numpy as np

from .. import kernels
from ..tensor import Function, unbroadcast


def require_float(op_name, *arrays):
    """Arithmetic is for float32/float64 tensors: on integers NumPy would truncate
    (int * 0.5 -> 0) or switch to float64 (int / 2), silently either way."""
    for x in arrays:
        if x.dtype.kind != "f":
            raise TypeError(f"{op_name}: needs float32 or float64 tensors, got dtype {x.dtype}")


def check_binary(op_name, a, b):
    """Refuse integer or mismatched dtypes and unbroadcastable shapes with a clear sentence."""
    require_float(op_name, a, b)
    if a.dtype != b.dtype:
        raise TypeError(
            f"{op_name}: dtypes {a.dtype} and {b.dtype} differ; convert one first "
            f"(an op never changes a tensor's dtype silently)"
        )
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"{op_name}: shapes {a.shape} and {b.shape} cannot be broadcast together"
        ) from None


class AddOp(Function):
    def forward(self, a, b):
        check_binary("add", a, b)
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, grad):
        # y = a + b  =>  dy/da = 1, dy/db = 1: the gradient passes through unchanged.
        return unbroadcast(grad, self.a_shape), unbroadcast(grad, self.b_shape)


class SubOp(Function):
    def forward(self, a, b):
        check_binary("sub", a, b)
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, grad):
        # y = a - b  =>  dy/da = 1, dy/db = -1.
        return unbroadcast(grad, self.a_shape), unbroadcast(-grad, self.b_shape)


class MulOp(Function):
    def forward(self, a, b):
        check_binary("mul", a, b)
        self.a, self.b = a, b  # each factor is the other's derivative
        return a * b

    def backward(self, grad):
        # y = a * b  =>  dy/da = b, dy/db = a.
        da = unbroadcast(grad * self.b, self.a.shape) if self.needs_input_grad[0] else None
        db = unbroadcast(grad * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return da, db


class DivOp(Function):
    def forward(self, a, b):
        check_binary("div", a, b)
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        # y = a / b  =>  dy/da = 1/b, dy/db = -a/b^2.
        da = unbroadcast(grad / self.b, self.a.shape) if self.needs_input_grad[0] else None
        db = (
            unbroadcast(-grad * self.a / (self.b * self.b), self.b.shape)
            if self.needs_input_grad[1]
            else None
        )
        return da, db


class NegOp(Function):
    def forward(self, x):
        require_float("neg", x)
        return -x

    def backward(self, grad):
        # y = -x  =>  dy/dx = -1.
        return -grad


class PowOp(Function):
    """x ** p for a Python number p (a tensor exponent is not supported)."""

    def forward(self, x, exponent):
        require_float("pow", x)
        self.x, self.p = x, exponent
        return x ** x.dtype.type(exponent)

    def backward(self, grad):
        # y = x^p  =>  dy/dx = p * x^(p-1).
        if self.p == 0:  # y = 1 is constant; avoid 0 * x^-1 = NaN at x = 0
            return np.zeros_like(grad)
        p = self.x.dtype.type(self.p)
        return grad * p * self.x ** (p - 1)


class ExpOp(Function):
    def forward(self, x):
        require_float("exp", x)
        self.y = np.exp(x)  # the derivative of exp is exp itself: keep the output
        return self.y

    def backward(self, grad):
        # y = e^x  =>  dy/dx = e^x = y.
        return grad * self.y


class LogOp(Function):
    def forward(self, x):
        require_float("log", x)
        self.x = x
        return np.log(x)

    def backward(self, grad):
        # y = ln x  =>  dy/dx = 1/x.
        return grad / self.x


class SqrtOp(Function):
    def forward(self, x):
        require_float("sqrt", x)
        self.y = np.sqrt(x)
        return self.y

    def backward(self, grad):
        # y = sqrt(x)  =>  dy/dx = 1 / (2 sqrt(x)) = 1 / (2y).
        return grad / (2 * self.y)


class TanhOp(Function):
    def forward(self, x):
        require_float("tanh", x)
        self.y = np.tanh(x)
        return self.y

    def backward(self, grad):
        # y = tanh x  =>  dy/dx = 1 - tanh^2 x = 1 - y^2.
        return grad * (1 - self.y * self.y)


class ReLUOp(Function):
    def forward(self, x):
        require_float("relu", x)
        self.positive = x > 0  # a boolean mask is all the backward needs
        return np.where(self.positive, x, x.dtype.type(0))

    def backward(self, grad):
        # y = max(x, 0)  =>  dy/dx = 1 where x > 0, else 0 (we take 0 at x = 0, as PyTorch).
        return np.where(self.positive, grad, grad.dtype.type(0))


class GELUOp(Function):
    """GELU(x) = x * Phi(x), Phi the standard normal CDF, in PyTorch's two forms.

    approximate="none" is the exact erf form; approximate="tanh" the approximation
    GPT-2 uses. The arithmetic is `kernels.gelu_forward` / `gelu_backward`
    (kernels/reference.py has both forms in NumPy).
    """

    def forward(self, x, approximate="none"):
        require_float("gelu", x)
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.x, self.approximate = x, approximate  # the input is all the backward needs
        return kernels.gelu_forward(x, approximate)  # like x

    def backward(self, grad):
        # "none": y = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2.
        #   Product rule: dy/dx = Phi(x) + x Phi'(x), and Phi' is the normal density
        #   phi(x) = exp(-x^2 / 2) / sqrt(2 pi) (d erf(z)/dz = 2 exp(-z^2) / sqrt pi, z = x / sqrt 2,
        #   dz/dx = 1 / sqrt 2, so Phi' = (1/2)(2 / sqrt pi) exp(-x^2 / 2) / sqrt 2). So
        #     dy/dx = Phi(x) + x phi(x).
        # "tanh": y = x h(x), h = (1 + tanh u) / 2, u = sqrt(2/pi) (x + 0.044715 x^3).
        #   Product rule: dy/dx = h + x dh/dx, with d tanh(u)/du = 1 - tanh^2 u and
        #   du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2), so
        #     dy/dx = (1 + tanh u) / 2 + x (1 - tanh^2 u) / 2 * du/dx.
        #   (The fast kernel writes h = sigmoid(2u), the same function: then
        #   dh/dx = 2 h (1 - h) du/dx.)
        # Both: dx = grad * dy/dx, elementwise.
        return kernels.gelu_backward(self.x, grad, self.approximate)  # like x


class MaskedFillOp(Function):
    """x.masked_fill(mask, value): `value` where the boolean mask is True, else x."""

    def forward(self, x, mask, value):
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"masked_fill: mask must be boolean, got dtype {mask.dtype}")
        if np.broadcast_shapes(mask.shape, x.shape) != x.shape:
            raise ValueError(
                f"masked_fill: mask of shape {mask.shape} does not broadcast to {x.shape}"
            )
        self.mask = mask
        return np.where(mask, x.dtype.type(value), x)

    def backward(self, grad):
        # y = value where mask else x  =>  dy/dx = 0 where mask, 1 elsewhere.
        return np.where(self.mask, grad.dtype.type(0), grad)
