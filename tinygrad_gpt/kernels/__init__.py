"""Kernels: the arithmetic under the autograd ops, on NumPy arrays.

Every op in `ops/` does its heavy work by calling a function of this package,
`kernels.softmax_forward(x)`, `kernels.matmul(a, b)`, ... (the names are in
KERNELS). Those names come in two interchangeable sets, with the same signatures
and the same results up to rounding:

* reference (reference.py): plain NumPy, formula first, a shape on every line. The
  textbook version: read it to learn what each op computes.
* fast (fast.py, the default): Numba-compiled kernels, fused and multithreaded,
  one module per kernel (layernorm.py, softmax.py, ...). The machinery that makes
  them fast (threads, CPU target, allocator) is apart, in tuning/.

Choose the set with

    import tinygrad_gpt
    tinygrad_gpt.kernels.use("reference")   # or "fast"

or with TINYGPT_KERNELS=reference in the environment, read at the first kernel call.
In the reference set the model is pure NumPy, steppable in a debugger, and Numba is
not imported at all. Kernels know nothing of Tensors: they take and return float32
or float64 arrays, the result in the input's dtype, and reject bad input with one
clear sentence (_checks.py).
"""

import importlib
import os

KERNELS = (
    "matmul",
    "softmax_forward", "softmax_backward",
    "layernorm_forward", "layernorm_backward",
    "gelu_forward", "gelu_backward",
    "cross_entropy_forward", "cross_entropy_backward",
    "embedding_backward",
    "attention_forward", "attention_backward",
    "adamw_step",
)
MODES = ("fast", "reference")
ENV_VARIABLE = "TINYGPT_KERNELS"

_active = None  # the mode in use, set by `use`; None until the first kernel call


def use(mode):
    """Run every op on the kernel set `mode`, "fast" (Numba) or "reference" (plain NumPy), from now on.

    It binds this package's kernel names to the chosen module's functions, so it
    applies to every later call, in ops already built into a graph too.
    """
    global _active
    if mode not in MODES:
        raise ValueError(f"kernels.use: mode must be one of {MODES}, got {mode!r}.")
    module = importlib.import_module(f".{mode}", __name__)
    globals().update({name: getattr(module, name) for name in KERNELS})
    _active = mode


def active():
    """The kernel set in use, "fast" or "reference" (choosing it from the environment if no call has yet)."""
    if _active is None:
        _use_from_environment()
    return _active


def _use_from_environment():
    mode = os.environ.get(ENV_VARIABLE, "fast")
    if mode not in MODES:
        raise ValueError(f"{ENV_VARIABLE} must be one of {MODES}, got {mode!r}.")
    use(mode)


def __getattr__(name):
    # Called only for names not yet bound: the first kernel call loads the set.
    if name in KERNELS:
        _use_from_environment()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["KERNELS", "MODES", "use", "active", *KERNELS]
