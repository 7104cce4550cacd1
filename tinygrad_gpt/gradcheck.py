"""Check a hand-written backward against finite differences.

For a function f of some tensors, we build the scalar L = sum(f(x) * R) with
a fixed random R (so every output element counts, each with its own weight),
get dL/dx from `backward()`, and compare every element with the central
difference

    dL/dx_i  ~  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps),

whose error is O(eps^2). In float64 with eps = 1e-6 the truncation error is
~1e-12 and the rounding error ~1e-16 / 1e-6 = 1e-10, far inside the default
tolerances, so a wrong derivative cannot hide and a right one does not fail.
"""

import numpy as np

from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0):
    """True if `fn`'s backward matches central differences for every input element.

    `fn(*inputs)` returns a Tensor; `inputs` are Tensors, and those with
    `requires_grad=True` are checked, each of which must be float64 (float32
    rounding would swamp the finite differences). Raises `GradcheckError`
    naming the input, the worst element, and the analytic and numeric values.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; use float64 tensors")

    out = fn(*inputs)
    if not out.requires_grad:
        raise ValueError("gradcheck: fn's output does not depend on any input with requires_grad=True")
    weights = np.random.default_rng(seed).standard_normal(out.shape)  # R, fixed per call

    def scalar_loss():
        with no_grad():
            return float((fn(*inputs).data * weights).sum())

    for i in checked:
        inputs[i].grad = None
    out.backward(weights.astype(out.dtype))

    for i in checked:
        x = inputs[i]
        analytic = np.zeros(x.shape) if x.grad is None else x.grad
        numeric = np.zeros(x.shape)
        for index in np.ndindex(*x.shape):
            original = x.data[index]
            try:
                x.data[index] = original + eps
                loss_plus = scalar_loss()
                x.data[index] = original - eps
                loss_minus = scalar_loss()
            finally:  # the caller's tensor comes back unchanged, even if fn raises
                x.data[index] = original
            numeric[index] = (loss_plus - loss_minus) / (2 * eps)
        excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if excess.size and excess.max() > 0:
            worst = np.unravel_index(np.argmax(excess), x.shape)
            raise GradcheckError(
                f"gradcheck failed for input {i} (shape {x.shape}) at element {tuple(map(int, worst))}: "
                f"analytic {analytic[worst]:.10g}, numeric {numeric[worst]:.10g}, "
                f"difference {abs(analytic[worst] - numeric[worst]):.3g} > "
                f"atol {atol} + rtol {rtol} * |numeric|"
            )
    return True
