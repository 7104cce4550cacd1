"""Optimizers (SGD, AdamW), gradient clipping, and the warmup + cosine schedule.

Optimizers change parameters in place and build no graph. Their state
(momentum buffers, step count) round-trips through `state_dict()` /
`load_state_dict()` as plain arrays, so a resumed run continues exactly.
"""

import math

import numpy as np

from . import kernels


def _param_groups(params, defaults):
    """PyTorch's convention: a list of tensors, or a list of dicts with "params" and overrides."""
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    groups = params if isinstance(params[0], dict) else [{"params": params}]
    out = []
    for group in groups:
        merged = {**defaults, **group, "params": list(group["params"])}
        for p in merged["params"]:
            if not p.requires_grad:
                raise ValueError("optimizer got a tensor that does not require grad")
        out.append(merged)
    return out


class Optimizer:
    def __init__(self, params, defaults):
        self.param_groups = _param_groups(params, defaults)

    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self):
        """Forget the accumulated gradients (set to None, as PyTorch's default)."""
        for p in self._params():
            p.grad = None


class SGD(Optimizer):
    """p -= lr * (g + weight_decay * p), with optional momentum buffers (PyTorch's form)."""

    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.momentum_buffers = [None] * len(self._params())

    def step(self):
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    g = p.grad + group["weight_decay"] * p.data if group["weight_decay"] else p.grad
                    if group["momentum"]:
                        buf = self.momentum_buffers[i]
                        # buf = momentum * buf + g  (the first step starts the buffer at g)
                        self.momentum_buffers[i] = buf = g.copy() if buf is None else buf * group["momentum"] + g
                        g = buf
                    p.data -= p.dtype.type(group["lr"]) * g
                i += 1


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's AdamW.

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  bias-corrected m_hat, v_hat;
    p -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p).
    Decay is "decoupled": it shrinks p directly instead of being added to g,
    so it is not rescaled by the adaptive denominator. Pass param groups to
    decay only some parameters (`configure_optimizer` does nanoGPT's split).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        if lr < 0:
            raise ValueError(f"AdamW: lr must be >= 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"AdamW: betas must be in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"AdamW: eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.exp_avg = [np.zeros_like(p.data) for p in self._params()]
        self.exp_avg_sq = [np.zeros_like(p.data) for p in self._params()]
        self.step_count = 0

    def step(self):
        self.step_count += 1
        i = 0
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is not None:
                    kernels.adamw_step(
                        p.data, p.grad, self.exp_avg[i], self.exp_avg_sq[i], group["lr"],
                        beta1, beta2, group["eps"], group["weight_decay"], self.step_count,
                    )
                i += 1

    def state_dict(self):
        """Arrays named exp_avg.i / exp_avg_sq.i (i = parameter order) and the step count."""
        state = {"step": np.asarray(self.step_count)}
        for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq)):
            state[f"exp_avg.{i}"], state[f"exp_avg_sq.{i}"] = m.copy(), v.copy()
        return state

    def load_state_dict(self, state):
        params = self._params()
        expected = {"step"} | {f"{k}.{i}" for i in range(len(params)) for k in ("exp_avg", "exp_avg_sq")}
        if set(state) != expected:
            raise ValueError(
                f"AdamW.load_state_dict: state has {len(state)} entries, expected {len(expected)} "
                f"for {len(params)} parameters"
            )
        for i, p in enumerate(params):
            for name, buffers in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                array = state[f"{name}.{i}"]
                if array.shape != p.shape:
                    raise ValueError(
                        f"AdamW.load_state_dict: {name}.{i} has shape {array.shape}, parameter has {p.shape}"
                    )
                buffers[i] = np.array(array, dtype=p.dtype)
        self.step_count = int(state["step"])

    def set_lr(self, lr):
        for group in self.param_groups:
            group["lr"] = lr


def configure_optimizer(model, lr, betas, weight_decay, eps=1e-8):
    """AdamW that decays only the 2-D weights (matmuls, embeddings), as nanoGPT does.

    Biases and LayerNorm weights (1-D) are left undecayed: shrinking a gain or
    an offset toward 0 is not a useful prior.
    """
    params = model.parameters()
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return AdamW(groups, lr=lr, betas=betas, eps=eps)


def clip_grad_norm_(parameters, max_norm):
    """Scale all gradients down together so their global L2 norm is at most max_norm.

    Returns the norm before clipping (useful to log). Computed in float64 so a
    large model's sum of squares does not lose precision, and without BLAS (np.dot
    would wake OpenBLAS's threads, which then spin against the kernels that follow).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    total = math.sqrt(sum(float(np.square(g, dtype=np.float64).sum()) for g in grads))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= g.dtype.type(scale)
    return total


def cosine_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """nanoGPT's schedule: linear warmup, cosine decay to min_lr, then constant.

    Warmup goes from lr/warmup_iters at it = 0 up to lr; between warmup_iters
    and lr_decay_iters the rate follows half a cosine from lr down to min_lr.
    """
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    progress = (it - warmup_iters) / max(lr_decay_iters - warmup_iters, 1)  # 0 -> 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return min_lr + coeff * (learning_rate - min_lr)
