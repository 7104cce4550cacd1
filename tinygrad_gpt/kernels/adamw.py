"""One AdamW update, in place, with PyTorch's semantics (decoupled weight decay).

For step t = 1, 2, ... and gradient g:
    param *= 1 - lr * weight_decay                 (decay, applied to the weights directly)
    m = beta1 * m + (1 - beta1) * g                (running mean of gradients)
    v = beta2 * v + (1 - beta2) * g^2              (running mean of squared gradients)
    m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)   (undo the bias toward 0 of early steps)
    param -= lr * m_hat / (sqrt(v_hat) + eps)
The bias corrections are computed once per step in float64 and rounded once to the
parameter's dtype; the elementwise update runs in the parameter's dtype.
"""

import numpy as np
from numba import njit, prange

from ._checks import check_adamw_step
from .tuning.threads import threads_for

# Single-thread cost per element (float32, reference machine), for `threads_for` of the parameter.
STEP_NS = 0.22


@njit(parallel=True, cache=True)
def _adamw_kernel(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, decay, corr1, corr2):
    """In-place AdamW on flat arrays; decay = 1 - lr * wd, corr_i = 1 / (1 - beta_i^t)."""
    one = param.dtype.type(1)
    for i in prange(param.shape[0]):
        g = grad[i]
        m = beta1 * exp_avg[i] + (one - beta1) * g
        v = beta2 * exp_avg_sq[i] + (one - beta2) * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] = param[i] * decay - lr * (m * corr1) / (np.sqrt(v * corr2) + eps)


def adamw_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step, in place on param, exp_avg and exp_avg_sq (C-contiguous, same shape and dtype).

    grad may have any strides. step is the 1-based count of steps taken, this one included.
    Returns None.
    """
    lr, beta1, beta2, eps, decay, corr1, corr2 = check_adamw_step(
        param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step)
    flat_grad = np.ascontiguousarray(grad).reshape(-1)
    # reshape(-1) of a C-contiguous array is a view, so the kernel writes into the caller's arrays.
    with threads_for(param.size * STEP_NS / 1000):
        _adamw_kernel(param.reshape(-1), flat_grad, exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
                      lr, beta1, beta2, eps, decay, corr1, corr2)


